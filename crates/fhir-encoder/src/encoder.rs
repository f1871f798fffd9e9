//! The encoder: options checked, and one encoding plan per resource type, built on first use.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow_schema::SchemaRef;

use crate::batch::{BatchBuilder, BatchLimits};
use crate::error::EncodeError;
use crate::options::EncoderOptions;
use crate::schema::{self, ResourcePlan};

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
