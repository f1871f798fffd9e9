//! One FHIRPath value as a value of a column's Arrow type (the spec's type mapping: text
//! columns hold the FHIR string form, exactly as in the resource).
use arrow_schema::DataType;
use chrono::NaiveDate;

use crate::fhirpath::Item;

/// A value ready to append to an Arrow builder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Bool(bool),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Micros(i64),
}

/// `item` as a value of type `data_type` (a non-list type from the view's schema); the error
/// says why it does not fit.
pub(crate) fn convert(item: &Item<'_>, data_type: &DataType) -> Result<Value, String> {
    let text = || {
        item.as_text()
            .ok_or_else(|| format!("{} is not a primitive value", kind(item)))
    };
    Ok(match data_type {
        DataType::Boolean => Value::Bool(
            item.as_bool()
                .ok_or_else(|| format!("{} is not a boolean", shown(item)))?,
        ),
        DataType::Int32 => {
            let i = integer(item)?;
            Value::I32(i32::try_from(i).map_err(|_| format!("{i} does not fit a 32-bit integer"))?)
        }
        DataType::Int64 => Value::I64(integer(item)?),
        DataType::Float64 => {
            let t = text()?;
            let number = t.parse::<f64>().ok().filter(|f| f.is_finite());
            Value::F64(number.ok_or_else(|| format!("'{t}' is not a number"))?)
        }
        DataType::Utf8 => Value::Text(match item.as_text() {
            Some(t) => t.into_owned(),
            // A complex value (a column typed with a complex type) is kept as its JSON.
            None => item.as_json().to_string(),
        }),
        DataType::Binary => {
            let t = text()?;
            let mut bytes = Vec::new();
            fhir_encoder::decode_base64(&t, &mut bytes).map_err(|e| format!("'{t}': {e}"))?;
            Value::Bytes(bytes)
        }
        DataType::Date32 => {
            let t = text()?;
            let date = NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .map_err(|_| format!("'{t}' is not a full date (YYYY-MM-DD)"))?;
            let days = date.signed_duration_since(NaiveDate::default()).num_days();
            Value::Date(i32::try_from(days).map_err(|_| format!("'{t}' is out of range"))?)
        }
        DataType::Timestamp(..) => {
            let t = text()?;
            let instant = chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| format!("'{t}' is not an instant (YYYY-MM-DDThh:mm:ss[.f]+zz:zz)"))?;
            Value::Micros(instant.timestamp_micros())
        }
        other => return Err(format!("columns of type {other} are not supported")),
    })
}

fn integer(item: &Item<'_>) -> Result<i64, String> {
    if let Some(i) = item.as_i64() {
        return Ok(i);
    }
    // integer64 is a JSON string in FHIR.
    match (item.fhir_type(), item.as_text()) {
        (Some("integer64"), Some(t)) => t.parse().map_err(|_| format!("'{t}' is not an integer")),
        _ => Err(format!("{} is not an integer", shown(item))),
    }
}

fn kind(item: &Item<'_>) -> String {
    match item.fhir_type() {
        Some(t) => format!("a {t}"),
        None => "an object".to_owned(),
    }
}

fn shown(item: &Item<'_>) -> String {
    match item.as_text() {
        Some(t) => format!("'{t}'"),
        None => kind(item),
    }
}
