//! Record batches of one resource type: lines encoded row by row into the column builders,
//! cut when the batch reaches its limits.
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_array::builder::StringBuilder;

use crate::builder::{StructCols, init_fill};
use crate::encode::{RowEncoder, RowOutcome};
use crate::error::{EncodeError, LineRef, Reject, Warning};
use crate::schema::ResourcePlan;

/// When a batch is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// Maximum rows per batch.
    pub max_rows: usize,
    /// Maximum NDJSON bytes per batch. The Arrow batch is larger (every absent element of the
    /// schema takes a null slot): about 4x on the Synthea data.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_rows: 8192,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Builds record batches of one resource type from NDJSON lines.
///
/// Each pushed line is parsed completely before anything is appended, so a rejected line
/// leaves the batch untouched. The builder is reusable: [`finish`](Self::finish) returns the
/// batch so far and starts a new one.
pub struct BatchBuilder {
    plan: Arc<ResourcePlan>,
    limits: BatchLimits,
    root: StructCols,
    rows: usize,
    bytes: usize,
    enc: RowEncoder,
    /// The lines themselves, with `keep_json`.
    json: Option<StringBuilder>,
}

impl BatchBuilder {
    pub(crate) fn new(plan: Arc<ResourcePlan>, limits: BatchLimits) -> BatchBuilder {
        let json = plan.keep_json;
        let mut root = StructCols::new(&plan.root.fields);
        init_fill(&plan.root, &mut root);
        BatchBuilder {
            plan,
            limits,
            root,
            rows: 0,
            bytes: 0,
            enc: RowEncoder::default(),
            json: json.then(StringBuilder::new),
        }
    }

    pub fn resource_type(&self) -> &str {
        &self.plan.resource_type
    }

    pub fn schema(&self) -> arrow_schema::SchemaRef {
        self.plan.schema.clone()
    }

    /// Encodes one NDJSON line (a resource of this builder's type). Returns the warnings about
    /// elements that were stored as null or ignored, or the reason the line was rejected.
    pub fn push_line(&mut self, line: &[u8], source: &LineRef) -> Result<Vec<Warning>, Reject> {
        match self.enc.encode(&self.plan, &mut self.root, line) {
            RowOutcome::Row { mut warnings } => {
                self.rows += 1;
                self.bytes += line.len();
                if let Some(json) = &mut self.json {
                    // Parsed, so valid UTF-8.
                    json.append_value(String::from_utf8_lossy(line.trim_ascii()));
                }
                for w in &mut warnings {
                    w.file = source.file.to_string();
                    w.line = source.line;
                }
                Ok(warnings)
            }
            RowOutcome::Reject(r) => Err(r.into_reject(source)),
        }
    }

    /// Whether the batch reached its row or byte limit.
    pub fn is_full(&self) -> bool {
        self.rows >= self.limits.max_rows || self.bytes >= self.limits.max_bytes
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// NDJSON bytes in the current batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Returns the rows pushed since the last call as a batch (possibly empty).
    pub fn finish(&mut self) -> Result<RecordBatch, EncodeError> {
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        let s = self.root.finish()?;
        let (_, mut columns, _) = s.into_parts();
        if let Some(json) = &mut self.json {
            columns.push(Arc::new(json.finish()));
        }
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.plan.schema.clone(),
            columns,
            &opts,
        )?)
    }

    /// Encodes the line already parsed by `enc` (the mixed-type reader parses once to route).
    pub(crate) fn push_parsed(&mut self, enc: &mut RowEncoder, src: &str) -> RowOutcome {
        let outcome = enc.encode_parsed(&self.plan, &mut self.root, src);
        if let RowOutcome::Row { .. } = outcome {
            self.rows += 1;
            self.bytes += src.len();
            if let Some(json) = &mut self.json {
                json.append_value(src);
            }
        }
        outcome
    }
}
