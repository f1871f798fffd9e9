//! Streaming FHIR R4 NDJSON to Arrow encoder in the Pathling Parquet encoding.
//!
//! ```no_run
//! use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, LineRef};
//! let encoder = Encoder::new(EncoderOptions::default());
//! let mut builder = encoder.batch_builder("Patient", BatchLimits::default())?;
//! let line = br#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
//! let warnings = builder.push_line(line, &LineRef::new("Patient.ndjson", 1)).expect("valid");
//! assert!(warnings.is_empty());
//! let batch = builder.finish()?;
//! assert_eq!(batch.num_rows(), 1);
//! # Ok::<(), fhir_encoder::EncodeError>(())
//! ```
//!
//! See `docs/encoding.md` for the encoding rules and how bad input is handled.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow_schema::SchemaRef;

mod builder;
mod encode;
mod error;
mod json;
mod model;
mod reader;
mod schema;
pub mod ucum;
mod values;

pub use builder::{BatchBuilder, BatchLimits};
pub use error::{EncodeError, LineRef, Reject, Warning};
pub use reader::NdjsonBatches;
pub use schema::UNSUPPORTED_TYPES;

use schema::ResourcePlan;

/// Encoding options, with Pathling's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderOptions {
    /// How many times a recursive type or backbone element may nest (e.g.
    /// `Questionnaire.item.item`); deeper levels are not encoded.
    pub max_nesting_level: usize,
    /// Encode extensions (`_fid` on every group, `_extension` map on the resource).
    pub enable_extensions: bool,
    /// Types kept for open-type choice elements such as `Extension.value[x]`.
    pub open_types: Vec<String>,
}

/// Pathling's default open types.
pub const DEFAULT_OPEN_TYPES: [&str; 12] = [
    "boolean",
    "code",
    "date",
    "dateTime",
    "decimal",
    "integer",
    "string",
    "Coding",
    "CodeableConcept",
    "Address",
    "Identifier",
    "Reference",
];

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            max_nesting_level: 3,
            enable_extensions: false,
            open_types: DEFAULT_OPEN_TYPES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Encodes FHIR R4 resources into Arrow in the Pathling Parquet encoding.
///
/// Cheap to clone and safe to share between threads: the per-type plans are built on first use
/// and shared.
#[derive(Clone, Debug)]
pub struct Encoder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: EncoderOptions,
    plans: RwLock<HashMap<String, Arc<ResourcePlan>>>,
}

impl Encoder {
    pub fn new(options: EncoderOptions) -> Encoder {
        Encoder {
            inner: Arc::new(Inner {
                options,
                plans: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Checks the options (open types must be FHIR R4 data types) and builds an encoder.
    pub fn try_new(options: EncoderOptions) -> Result<Encoder, EncodeError> {
        if let Some(bad) = options.open_types.iter().find(|t| !schema::is_data_type(t)) {
            return Err(EncodeError::InvalidOpenType(bad.clone()));
        }
        Ok(Encoder::new(options))
    }

    pub fn options(&self) -> &EncoderOptions {
        &self.inner.options
    }

    /// Resource types that can be encoded, sorted by name.
    pub fn supported_types(&self) -> Vec<&'static str> {
        schema::supported_types()
    }

    /// The Arrow schema of a resource type. Every schema has `id` (Utf8),
    /// `meta.versionId` (Utf8) and `meta.lastUpdated` (Timestamp µs UTC).
    pub fn schema(&self, resource_type: &str) -> Result<SchemaRef, EncodeError> {
        Ok(self.plan(resource_type)?.schema.clone())
    }

    /// A builder of batches of one resource type.
    pub fn batch_builder(
        &self,
        resource_type: &str,
        limits: BatchLimits,
    ) -> Result<BatchBuilder, EncodeError> {
        Ok(BatchBuilder::new(self.plan(resource_type)?, limits))
    }

    pub(crate) fn plan(&self, resource_type: &str) -> Result<Arc<ResourcePlan>, EncodeError> {
        if let Some(p) = self
            .inner
            .plans
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource_type)
        {
            return Ok(p.clone());
        }
        let plan = Arc::new(schema::resource_plan(resource_type, &self.inner.options)?);
        let mut plans = self.inner.plans.write().unwrap_or_else(|e| e.into_inner());
        Ok(plans
            .entry(resource_type.to_string())
            .or_insert(plan)
            .clone())
    }
}
