//! A view's rows as the sync stages them: the view's columns, then hidden columns naming the
//! resource each row came from and its version, so that the next sync can replace exactly
//! the rows of the resources it changes (the table's keys are grouped by resource).
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, BooleanBuilder, RecordBatch, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use delta_sink::{KeyRows, KeySpec};
use fhir_encoder::json::Doc;
use fhir_views::{Cell, Row, RowBatchBuilder, ViewDefinition};

/// The id of the resource a row came from.
pub const RESOURCE_KEY: &str = "_resource_key";
/// `lastUpdated` and the version of the resource a row came from (the version made unique
/// per copy of the resource in an export; see [`version_key`]).
pub const RESOURCE_META: &str = "_resource_meta";
/// Stands for a resource with no rows in the view while it is staged; never stored.
pub const PLACEHOLDER: &str = "_placeholder";

/// The columns a view's table has besides the view's.
pub const HIDDEN_COLUMNS: [&str; 3] = [RESOURCE_KEY, RESOURCE_META, PLACEHOLDER];

/// How a view table's rows are matched: grouped by the resource they came from.
pub fn key_spec() -> KeySpec {
    KeySpec {
        id: RESOURCE_KEY.to_owned(),
        meta: RESOURCE_META.to_owned(),
        rows: KeyRows::Group {
            placeholder: PLACEHOLDER.to_owned(),
        },
    }
}

fn meta_fields() -> Fields {
    Fields::from(vec![
        Field::new(
            "lastUpdated",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("versionId", DataType::Utf8, true),
    ])
}

/// The view table's schema: the view's columns, then the hidden ones.
pub fn table_schema(view: &ViewDefinition) -> SchemaRef {
    let mut fields: Vec<Field> = view
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(RESOURCE_KEY, DataType::Utf8, true));
    fields.push(Field::new(
        RESOURCE_META,
        DataType::Struct(meta_fields()),
        true,
    ));
    fields.push(Field::new(PLACEHOLDER, DataType::Boolean, true));
    Arc::new(Schema::new(fields))
}

/// The version part of a row's recency, unique per copy of a resource: the resource's
/// `versionId` (numbers zero-padded, so that text order is numeric order; none sorts first),
/// then `copy`, which tells apart copies of one version in an export (their rows must not
/// be merged into one group) and orders later syncs after earlier ones.
pub fn version_key(version_id: Option<&str>, copy: &str) -> String {
    match version_id {
        None => format!("0|{copy}"),
        Some(v) if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => {
            format!("1{v:0>20}|{copy}")
        }
        Some(v) => format!("2{v}|{copy}"),
    }
}

/// Rows of one view for resources as they come, with the hidden columns, batch by batch.
pub struct ViewRows {
    view: Arc<ViewDefinition>,
    rows: RowBatchBuilder,
    keys: StringBuilder,
    last_updated: TimestampMicrosecondBuilder,
    versions: StringBuilder,
    meta_valid: BooleanBuilder,
    placeholders: BooleanBuilder,
    /// Resources whose rows could not be computed (see [`ViewRows::push`]).
    pub failed: u64,
}

impl ViewRows {
    pub fn new(view: Arc<ViewDefinition>) -> ViewRows {
        ViewRows {
            rows: RowBatchBuilder::new(&view),
            view,
            keys: StringBuilder::new(),
            last_updated: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            versions: StringBuilder::new(),
            meta_valid: BooleanBuilder::new(),
            placeholders: BooleanBuilder::new(),
            failed: 0,
        }
    }

    /// Rows staged since the last batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Stages the rows of `resource` (one copy of it, named by `copy`). A resource with no
    /// rows gets a placeholder, so that rows of its earlier versions go. Data the view cannot
    /// take (several values in a column that is not a collection, ...) is that resource's
    /// problem alone: it is logged, counted, and stands as a resource without rows.
    pub fn push(&mut self, resource: Doc<'_>, copy: &str) {
        if resource
            .get(0, "resourceType")
            .and_then(|t| resource.str(t))
            != Some(&self.view.resource)
        {
            return;
        }
        let id = resource.get(0, "id").and_then(|i| resource.str(i));
        let meta = resource.get(0, "meta");
        let field = |name: &str| {
            meta.and_then(|m| resource.get(m, name))
                .and_then(|v| resource.str(v))
        };
        let last_updated = field("lastUpdated")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros());
        let version = version_key(field("versionId"), copy);
        let rows = match self.view.rows(resource) {
            Ok(rows) => rows,
            Err(e) => {
                self.failed += 1;
                tracing::warn!(view = self.view.name.as_deref().unwrap_or(""), id = id.unwrap_or(""),
                    error = %e, "the resource's rows of the view could not be computed: it has none");
                Vec::new()
            }
        };
        let mut staged = 0;
        for row in &rows {
            // A row the view's columns cannot hold is the same kind of problem.
            if let Err(e) = self.rows.push(row) {
                self.failed += 1;
                tracing::warn!(view = self.view.name.as_deref().unwrap_or(""), id = id.unwrap_or(""),
                    error = %e, "a row of the view could not be stored: left out");
                continue;
            }
            staged += 1;
        }
        if staged == 0 {
            let cells = vec![Cell::Null; self.view.columns().len()];
            let row = Row {
                resource_id: id,
                cells,
            };
            if self.rows.push(&row).is_err() {
                return;
            }
            staged = 1;
            self.placeholders.append_value(true);
        } else {
            self.placeholders.append_n(staged, false);
        }
        for _ in 0..staged {
            self.keys.append_option(id);
            self.last_updated.append_option(last_updated);
            self.versions.append_value(&version);
            self.meta_valid.append_value(true);
        }
    }

    /// The rows staged so far as one batch of the view table's schema; starts anew.
    pub fn finish(&mut self) -> anyhow::Result<RecordBatch> {
        let rows = self.rows.finish().context("building the view's rows")?;
        let meta = StructArray::try_new(
            meta_fields(),
            vec![
                Arc::new(self.last_updated.finish()) as ArrayRef,
                Arc::new(self.versions.finish()),
            ],
            Some(self.meta_valid.finish().values().clone().into()),
        )?;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(self.keys.finish()));
        columns.push(Arc::new(meta));
        columns.push(Arc::new(self.placeholders.finish()));
        Ok(RecordBatch::try_new(table_schema(&self.view), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use fhir_encoder::json::Tape;

    #[test]
    fn version_keys_sort_as_versions_then_copies() {
        let k = |v: Option<&str>, c: &str| version_key(v, c);
        assert!(k(None, "9") < k(Some("1"), "0"));
        assert!(k(Some("9"), "1") < k(Some("10"), "0"));
        assert!(k(Some("3"), "a") < k(Some("3"), "b"));
        assert!(k(Some("3"), "b") < k(Some("W/\"3\""), "a"));
        assert_ne!(k(Some("3"), "a"), k(Some("3"), "b"));
    }

    #[test]
    fn rows_carry_their_resource_and_resources_without_rows_a_placeholder() {
        let view = ViewDefinition::from_json(&serde_json::json!({
            "name": "names", "resource": "Patient",
            "select": [{"forEach": "name", "column": [{"name": "family", "path": "family"}]}]
        }))
        .expect("valid");
        let mut rows = ViewRows::new(Arc::new(view));
        let mut tape = Tape::default();
        for line in [
            r#"{"resourceType":"Patient","id":"a","meta":{"versionId":"2","lastUpdated":"2024-01-02T03:04:05.5+01:00"},"name":[{"family":"X"},{"family":"Y"}]}"#,
            r#"{"resourceType":"Patient","id":"b"}"#,
            r#"{"resourceType":"Observation","id":"o"}"#,
        ] {
            rows.push(tape.parse(line).expect("JSON"), "c1");
        }
        let batch = rows.finish().expect("batch");
        assert_eq!(batch.num_rows(), 3);
        let col = |name: &str| batch.column_by_name(name).expect(name).clone();
        let keys = col(RESOURCE_KEY);
        let keys = keys.as_string::<i32>();
        assert_eq!(
            (keys.value(0), keys.value(1), keys.value(2)),
            ("a", "a", "b")
        );
        let placeholder = col(PLACEHOLDER);
        let placeholder = placeholder.as_boolean();
        assert!(!placeholder.value(0) && !placeholder.value(1) && placeholder.value(2));
        let meta = col(RESOURCE_META);
        let meta = meta.as_struct();
        let versions = meta.column(1).as_string::<i32>();
        assert_eq!(versions.value(0), version_key(Some("2"), "c1"));
        assert_eq!(versions.value(2), version_key(None, "c1"));
        let lu = meta
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(lu.value(0), 1_704_161_045_500_000);
        assert!(lu.is_null(2));
        assert_eq!(rows.finish().expect("empty batch").num_rows(), 0);
    }
}
