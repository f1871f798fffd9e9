//! Output columns of a view and their Arrow types (the spec's "Default Type Mappings", with the
//! `ansi/type` tag overriding where given).
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::error::ViewErrorKind;

/// Prefix of FHIR type URIs; `type` may be given as a URI or as the bare type code.
const FHIR_TYPE_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";

/// One output column of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The column's FHIR type code (`string`, `integer`, ...; a URI's prefix removed), if given.
    pub fhir_type: Option<String>,
    /// Whether a cell holds a list of values.
    pub collection: bool,
    /// The value of the column's `ansi/type` tag, if given.
    pub ansi_type: Option<String>,
    /// Arrow type of one value (the list's item type for a collection).
    pub(crate) item_type: DataType,
}

impl Column {
    /// The column's Arrow type: the item type, or a list of it for a collection.
    pub fn data_type(&self) -> DataType {
        if self.collection {
            DataType::List(Arc::new(Field::new_list_field(
                self.item_type.clone(),
                true,
            )))
        } else {
            self.item_type.clone()
        }
    }

    pub fn field(&self) -> Field {
        Field::new(&self.name, self.data_type(), true)
    }
}

/// The type code of a column's `type`: a FHIR StructureDefinition URI loses its prefix.
pub(crate) fn fhir_type_code(type_uri: &str) -> &str {
    type_uri.strip_prefix(FHIR_TYPE_PREFIX).unwrap_or(type_uri)
}

/// Arrow type of one value of a column. `ansi/type` wins; then the FHIR type; a column without
/// either holds text (the spec allows treating unspecified types as strings).
pub(crate) fn item_type(
    fhir_type: Option<&str>,
    ansi_type: Option<&str>,
) -> Result<DataType, ViewErrorKind> {
    if let Some(ansi) = ansi_type {
        return ansi_data_type(ansi);
    }
    Ok(match fhir_type {
        Some(t) => fhir_data_type(t),
        None => DataType::Utf8,
    })
}

/// Default mapping of FHIR types. Decimals and partial dates/times stay text in their FHIR
/// form, so no precision or scale is lost.
pub(crate) fn fhir_data_type(code: &str) -> DataType {
    match code {
        "boolean" => DataType::Boolean,
        "integer" | "positiveInt" | "unsignedInt" => DataType::Int32,
        "integer64" => DataType::Int64,
        "instant" => utc_timestamp(),
        "base64Binary" => DataType::Binary,
        _ => DataType::Utf8,
    }
}

/// ISO/IEC 9075 type names an `ansi/type` tag may give (case-insensitive; a length or
/// precision in parentheses is ignored).
fn ansi_data_type(ansi: &str) -> Result<DataType, ViewErrorKind> {
    let base = ansi
        .split('(')
        .next()
        .unwrap_or(ansi)
        .trim()
        .to_ascii_uppercase();
    let base: Vec<&str> = base.split_whitespace().collect();
    Ok(match base.join(" ").as_str() {
        "BOOLEAN" => DataType::Boolean,
        "SMALLINT" | "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" => DataType::Int64,
        "REAL" | "FLOAT" | "DOUBLE PRECISION" => DataType::Float64,
        "DATE" => DataType::Date32,
        "TIMESTAMP WITH TIME ZONE" | "TIMESTAMP" => utc_timestamp(),
        "BINARY" | "VARBINARY" | "BINARY VARYING" | "BLOB" => DataType::Binary,
        "CHARACTER VARYING" | "VARCHAR" | "CHARACTER" | "CHAR" | "TEXT" | "CLOB" => DataType::Utf8,
        _ => return Err(ViewErrorKind::UnsupportedAnsiType(ansi.to_owned())),
    })
}

fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub(crate) fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(Column::field).collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, fhir: Option<&str>, ansi: Option<&str>, collection: bool) -> Column {
        Column {
            name: name.into(),
            fhir_type: fhir.map(Into::into),
            collection,
            ansi_type: ansi.map(Into::into),
            item_type: item_type(fhir, ansi).expect("supported type"),
        }
    }

    #[test]
    fn fhir_types_map_to_the_default_arrow_types() {
        let cases = [
            ("boolean", DataType::Boolean),
            ("integer", DataType::Int32),
            ("positiveInt", DataType::Int32),
            ("unsignedInt", DataType::Int32),
            ("integer64", DataType::Int64),
            ("instant", utc_timestamp()),
            ("base64Binary", DataType::Binary),
            ("decimal", DataType::Utf8),
            ("date", DataType::Utf8),
            ("dateTime", DataType::Utf8),
            ("time", DataType::Utf8),
            ("string", DataType::Utf8),
            ("code", DataType::Utf8),
            ("uuid", DataType::Utf8),
            ("Observation.referenceRange", DataType::Utf8),
        ];
        for (code, expected) in cases {
            assert_eq!(fhir_data_type(code), expected, "{code}");
        }
    }

    #[test]
    fn ansi_tag_overrides_the_fhir_type() {
        assert_eq!(
            item_type(Some("string"), Some("DATE")),
            Ok(DataType::Date32)
        );
        assert_eq!(
            item_type(Some("integer"), Some("bigint")),
            Ok(DataType::Int64)
        );
        assert_eq!(
            item_type(None, Some("Character Varying(20)")),
            Ok(DataType::Utf8)
        );
        assert_eq!(
            item_type(Some("string"), Some("GEOMETRY")),
            Err(ViewErrorKind::UnsupportedAnsiType("GEOMETRY".into()))
        );
    }

    #[test]
    fn untyped_columns_hold_text_and_type_uris_lose_their_prefix() {
        assert_eq!(item_type(None, None), Ok(DataType::Utf8));
        assert_eq!(
            fhir_type_code("http://hl7.org/fhir/StructureDefinition/boolean"),
            "boolean"
        );
        assert_eq!(fhir_type_code("boolean"), "boolean");
    }

    #[test]
    fn collections_are_lists_of_the_item_type_and_all_fields_are_nullable() {
        let columns = [
            column("id", Some("id"), None, false),
            column("given", Some("string"), None, true),
            column("n", Some("integer"), None, true),
        ];
        let schema = arrow_schema(&columns);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "given", "n"]);
        assert!(schema.fields().iter().all(|f| f.is_nullable()));
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        match schema.field(2).data_type() {
            DataType::List(item) => {
                assert_eq!(item.data_type(), &DataType::Int32);
                assert!(item.is_nullable());
            }
            other => panic!("expected a list, got {other}"),
        }
    }
}
