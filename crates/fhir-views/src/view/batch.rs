//! Rows of a view into Arrow record batches. A row is converted whole before anything is
//! appended, so a row that does not fit its columns leaves the batch as it was.
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, RecordBatchOptions};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, FieldRef, SchemaRef};

use super::convert::{Value, convert};
use super::definition::ViewDefinition;
use super::engine::{Cell, Row};
use super::error::RowError;
use super::schema::Column;

/// Collects rows of one view into a [`RecordBatch`] of the view's schema.
pub struct RowBatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
}

impl RowBatchBuilder {
    pub fn new(view: &ViewDefinition) -> RowBatchBuilder {
        RowBatchBuilder {
            schema: view.arrow_schema(),
            columns: view.columns().iter().map(ColumnBuilder::new).collect(),
            rows: 0,
        }
    }

    /// Appends a row; a row with a value that does not fit its column is refused whole.
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), RowError> {
        if row.cells.len() != self.columns.len() {
            return Err(RowError::Width {
                expected: self.columns.len(),
                found: row.cells.len(),
            });
        }
        let converted = self
            .columns
            .iter()
            .zip(&row.cells)
            .map(|(c, cell)| {
                c.convert(cell).map_err(|message| RowError::Value {
                    resource_id: row.resource_id.map(str::to_owned),
                    column: c.name.clone(),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (c, values) in self.columns.iter().zip(&converted) {
            if let Converted::Many(items) = values {
                c.check_room(items.len())?;
            }
        }
        for (c, values) in self.columns.iter_mut().zip(converted) {
            c.append(values);
        }
        self.rows += 1;
        Ok(())
    }

    /// Rows pushed since the last [`RowBatchBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows pushed so far as one batch; the builder is then empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays = self
            .columns
            .iter_mut()
            .map(ColumnBuilder::finish)
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
    }
}

/// One cell, converted.
enum Converted {
    Null,
    One(Value),
    Many(Vec<Value>),
}

struct ColumnBuilder {
    name: String,
    item_type: DataType,
    values: Values,
    /// For a collection column: the list's item field, offsets and validity.
    list: Option<ListParts>,
}

struct ListParts {
    field: FieldRef,
    offsets: Vec<i32>,
    validity: NullBufferBuilder,
}

impl ColumnBuilder {
    fn new(column: &Column) -> ColumnBuilder {
        let list = match column.data_type() {
            DataType::List(field) => Some(ListParts {
                field,
                offsets: vec![0],
                validity: NullBufferBuilder::new(0),
            }),
            _ => None,
        };
        ColumnBuilder {
            name: column.name.clone(),
            item_type: column.item_type.clone(),
            values: Values::new(&column.item_type),
            list,
        }
    }

    fn convert(&self, cell: &Cell<'_>) -> Result<Converted, String> {
        let one = |item| convert(item, &self.item_type);
        Ok(match cell {
            Cell::Null => Converted::Null,
            Cell::One(item) if self.list.is_some() => Converted::Many(vec![one(item)?]),
            Cell::One(item) => Converted::One(one(item)?),
            Cell::Many(items) if self.list.is_some() => {
                Converted::Many(items.iter().map(one).collect::<Result<_, _>>()?)
            }
            Cell::Many(items) => match items.as_slice() {
                [] => Converted::Null,
                [item] => Converted::One(one(item)?),
                _ => {
                    return Err(format!(
                        "{} values in a column that is not a collection",
                        items.len()
                    ));
                }
            },
        })
    }

    /// List offsets are 32-bit: a batch holds at most `i32::MAX` items per column.
    fn check_room(&self, more: usize) -> Result<(), RowError> {
        let Some(list) = &self.list else {
            return Ok(());
        };
        let used = list.offsets.last().copied().unwrap_or(0) as usize;
        if used + more > i32::MAX as usize {
            return Err(RowError::BatchFull(i32::MAX as usize));
        }
        Ok(())
    }

    fn append(&mut self, cell: Converted) {
        match (&mut self.list, cell) {
            (None, Converted::Null) => self.values.append_null(),
            (None, Converted::One(v)) => self.values.append(v),
            (None, Converted::Many(_)) => unreachable!("convert gives lists only to list columns"),
            (Some(list), Converted::Null) => {
                list.offsets.push(list.offsets.last().copied().unwrap_or(0));
                list.validity.append_null();
            }
            (Some(list), Converted::One(v)) => {
                self.values.append(v);
                list.push(1);
            }
            (Some(list), Converted::Many(vs)) => {
                let n = vs.len();
                for v in vs {
                    self.values.append(v);
                }
                list.push(n);
            }
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let values = self.values.finish();
        let Some(list) = &mut self.list else {
            return Ok(values);
        };
        let offsets = std::mem::replace(&mut list.offsets, vec![0]);
        let array = ListArray::try_new(
            list.field.clone(),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            values,
            list.validity.finish(),
        )?;
        Ok(Arc::new(array))
    }
}

impl ListParts {
    /// Ends a non-null list of `n` items (room checked beforehand).
    fn push(&mut self, n: usize) {
        let last = self.offsets.last().copied().unwrap_or(0);
        self.offsets.push(last + n as i32);
        self.validity.append_non_null();
    }
}

/// The builder of one Arrow type (the column's, or its list's item type).
enum Values {
    Bool(BooleanBuilder),
    I32(Int32Builder),
    I64(Int64Builder),
    F64(Float64Builder),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
}

impl Values {
    fn new(data_type: &DataType) -> Values {
        match data_type {
            DataType::Boolean => Values::Bool(BooleanBuilder::new()),
            DataType::Int32 => Values::I32(Int32Builder::new()),
            DataType::Int64 => Values::I64(Int64Builder::new()),
            DataType::Float64 => Values::F64(Float64Builder::new()),
            DataType::Binary => Values::Bytes(BinaryBuilder::new()),
            DataType::Date32 => Values::Date(Date32Builder::new()),
            DataType::Timestamp(..) => {
                Values::Micros(TimestampMicrosecondBuilder::new().with_data_type(data_type.clone()))
            }
            // The schema maps every other type to text.
            _ => Values::Text(StringBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Values::Bool(b) => b.append_null(),
            Values::I32(b) => b.append_null(),
            Values::I64(b) => b.append_null(),
            Values::F64(b) => b.append_null(),
            Values::Text(b) => b.append_null(),
            Values::Bytes(b) => b.append_null(),
            Values::Date(b) => b.append_null(),
            Values::Micros(b) => b.append_null(),
        }
    }

    /// Appends a value converted for this builder's type (`convert` matches on the same type).
    fn append(&mut self, v: Value) {
        match (self, v) {
            (Values::Bool(b), Value::Bool(v)) => b.append_value(v),
            (Values::I32(b), Value::I32(v)) => b.append_value(v),
            (Values::I64(b), Value::I64(v)) => b.append_value(v),
            (Values::F64(b), Value::F64(v)) => b.append_value(v),
            (Values::Text(b), Value::Text(v)) => b.append_value(v),
            (Values::Bytes(b), Value::Bytes(v)) => b.append_value(v),
            (Values::Date(b), Value::Date(v)) => b.append_value(v),
            (Values::Micros(b), Value::Micros(v)) => b.append_value(v),
            (_, v) => unreachable!("value {v:?} converted for another column type"),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Values::Bool(b) => Arc::new(b.finish()),
            Values::I32(b) => Arc::new(b.finish()),
            Values::I64(b) => Arc::new(b.finish()),
            Values::F64(b) => Arc::new(b.finish()),
            Values::Text(b) => Arc::new(b.finish()),
            Values::Bytes(b) => Arc::new(b.finish()),
            Values::Date(b) => Arc::new(b.finish()),
            Values::Micros(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
    use fhir_encoder::json::{Doc, Tape};

    use super::*;
    use crate::fhirpath::Item;

    fn view() -> ViewDefinition {
        let column = |name: &str, ty: &str, collection: bool| serde_json::json!({"name": name, "path": "id", "type": ty, "collection": collection});
        ViewDefinition::from_json(&serde_json::json!({
            "resource": "Patient",
            "select": [{"column": [
                column("id", "id", false),
                column("active", "boolean", false),
                column("n", "integer", false),
                column("big", "integer64", false),
                column("at", "instant", false),
                column("data", "base64Binary", false),
                column("names", "string", true),
            ]}]
        }))
        .expect("a valid view")
    }

    const RESOURCE: &str = r#"{"id":"p1","active":true,"n":5,"big":"9007199254740993",
        "at":"2020-01-02T03:04:05.678+01:00","data":"aGk=","names":["a","b"],"bad":"abc"}"#;

    fn node<'a>(doc: Doc<'a>, key: &str) -> Item<'a> {
        Item::node(doc, doc.get(0, key).expect("key in the test resource"))
    }

    fn full_row<'a>(doc: Doc<'a>) -> Row<'a> {
        let big = match node(doc, "big") {
            Item::Node { doc, at, .. } => Item::Node {
                doc,
                at,
                fhir_type: Some("integer64"),
            },
            other => other,
        };
        let names = doc.get(0, "names").expect("names");
        Row {
            resource_id: Some("p1"),
            cells: vec![
                Cell::One(node(doc, "id")),
                Cell::One(node(doc, "active")),
                Cell::One(node(doc, "n")),
                Cell::One(big),
                Cell::One(node(doc, "at")),
                Cell::One(node(doc, "data")),
                Cell::Many(doc.items(names).map(|i| Item::node(doc, i)).collect()),
            ],
        }
    }

    #[test]
    fn values_take_their_columns_types_and_collections_become_lists() {
        let view = view();
        let mut tape = Tape::default();
        let doc = tape.parse(RESOURCE).expect("test JSON");
        let mut builder = RowBatchBuilder::new(&view);
        builder.push(&full_row(doc)).expect("fits");
        let empty_list = Row {
            resource_id: Some("p2"),
            cells: vec![
                Cell::One(Item::String(Cow::Borrowed("p2"))),
                Cell::One(Item::Bool(false)),
                Cell::One(Item::Integer(-7)),
                Cell::Null,
                Cell::Null,
                Cell::Null,
                Cell::Many(Vec::new()),
            ],
        };
        builder.push(&empty_list).expect("fits");
        let mut nulls = empty_list.clone();
        nulls.cells = vec![Cell::Null; 7];
        builder.push(&nulls).expect("fits");
        assert_eq!(builder.len(), 3);

        let batch = builder.finish().expect("a batch");
        assert_eq!(batch.schema(), view.arrow_schema());
        assert_eq!(batch.num_rows(), 3);
        let ids = batch.column(0).as_string::<i32>();
        assert_eq!(
            (ids.value(0), ids.value(1), ids.is_null(2)),
            ("p1", "p2", true)
        );
        let active = batch.column(1).as_boolean();
        assert!(active.value(0) && !active.value(1) && active.is_null(2));
        let n = batch.column(2).as_primitive::<Int32Type>();
        assert_eq!((n.value(0), n.value(1), n.is_null(2)), (5, -7, true));
        let big = batch.column(3).as_primitive::<Int64Type>();
        assert_eq!(big.value(0), 9_007_199_254_740_993);
        let at = batch.column(4).as_primitive::<TimestampMicrosecondType>();
        // 2020-01-02T02:04:05.678Z
        assert_eq!(at.value(0), 1_577_930_645_678_000);
        assert_eq!(batch.column(5).as_binary::<i32>().value(0), b"hi");
        let names = batch.column(6).as_list::<i32>();
        let first = names.value(0);
        let first = first.as_string::<i32>();
        assert_eq!((first.value(0), first.value(1)), ("a", "b"));
        assert!(names.is_valid(1) && names.value(1).is_empty());
        assert!(names.is_null(2));

        assert!(builder.is_empty());
        assert_eq!(builder.finish().expect("an empty batch").num_rows(), 0);
    }

    #[test]
    fn a_value_that_does_not_fit_refuses_the_whole_row() {
        let view = view();
        let mut tape = Tape::default();
        let doc = tape.parse(RESOURCE).expect("test JSON");
        let mut builder = RowBatchBuilder::new(&view);
        builder.push(&full_row(doc)).expect("fits");
        for (column, bad) in [
            (2, node(doc, "bad")),
            (2, Item::Integer(i64::from(i32::MAX) + 1)),
            (1, node(doc, "n")),
            (4, Item::String(Cow::Borrowed("2020-01-02"))),
            (5, Item::String(Cow::Borrowed("not base64!"))),
        ] {
            let mut row = full_row(doc);
            row.cells[column] = Cell::One(bad);
            match builder.push(&row) {
                Err(RowError::Value {
                    resource_id,
                    column: name,
                    ..
                }) => {
                    assert_eq!(resource_id.as_deref(), Some("p1"));
                    assert_eq!(name, view.columns()[column].name);
                }
                other => panic!("column {column}: expected a value error, got {other:?}"),
            }
        }
        let mut several = full_row(doc);
        several.cells[0] = Cell::Many(vec![node(doc, "id"), node(doc, "id")]);
        assert!(matches!(
            builder.push(&several),
            Err(RowError::Value { .. })
        ));
        let short = Row {
            resource_id: None,
            cells: vec![Cell::Null],
        };
        assert_eq!(
            builder.push(&short).err(),
            Some(RowError::Width {
                expected: 7,
                found: 1
            })
        );
        let batch = builder.finish().expect("a batch");
        assert_eq!(batch.num_rows(), 1);
        assert!(batch.columns().iter().all(|c| c.len() == 1));
        assert_eq!(batch.column(6).as_list::<i32>().value(0).len(), 2);
    }

    #[test]
    fn ansi_types_and_untyped_columns() {
        let view = ViewDefinition::from_json(&serde_json::json!({
            "resource": "Patient",
            "select": [{"column": [
                {"name": "born", "path": "birthDate", "type": "date",
                 "tag": [{"name": "ansi/type", "value": "DATE"}]},
                {"name": "score", "path": "id",
                 "tag": [{"name": "ansi/type", "value": "DOUBLE PRECISION"}]},
                {"name": "any", "path": "id"},
            ]}]
        }))
        .expect("a valid view");
        let mut builder = RowBatchBuilder::new(&view);
        let row = Row {
            resource_id: Some("p1"),
            cells: vec![
                Cell::One(Item::Date("1970-01-11".into())),
                Cell::One(Item::Decimal("1.50".into())),
                Cell::One(Item::Decimal("1.50".into())),
            ],
        };
        builder.push(&row).expect("fits");
        let mut partial = row.clone();
        partial.cells[0] = Cell::One(Item::Date("1970-01".into()));
        assert!(builder.push(&partial).is_err());
        let batch = builder.finish().expect("a batch");
        let born = batch
            .column(0)
            .as_primitive::<arrow_array::types::Date32Type>();
        assert_eq!(born.value(0), 10);
        let score = batch
            .column(1)
            .as_primitive::<arrow_array::types::Float64Type>();
        assert_eq!(score.value(0), 1.5);
        // Decimals keep their scale as text.
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "1.50");
    }
}
