//! The bridge from NDJSON files to record batches: the encoder's streaming reader, with its
//! rejects and the bulk client's rejected download lines turned into one reject record.
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use arrow::array::RecordBatch;
use fhir_encoder::{BatchLimits, Encoder, NdjsonBatches, Reject};

/// A resource that could not be written, with where it came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EncodeReject {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// Encodes every line of `input` (NDJSON, resources of any types) in bounded batches, handing
/// each batch to `on_batch` and each rejected line to `on_reject`. With `expected_type`, a
/// resource of another type is rejected (a manifest announced this file as that type).
pub fn encode_ndjson(
    encoder: &Encoder,
    input: Box<dyn BufRead + Send>,
    label: &str,
    expected_type: Option<&str>,
    on_batch: &mut dyn FnMut(&str, RecordBatch) -> anyhow::Result<()>,
    on_reject: &mut dyn FnMut(EncodeReject) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let limits = BatchLimits {
        max_rows: 4096,
        max_bytes: 4 << 20,
    };
    let mut batches = NdjsonBatches::new(encoder.clone(), input, label, limits);
    if let Some(t) = expected_type {
        batches = batches.expecting(t);
    }
    let mut warnings = 0u64;
    loop {
        let next = batches.next();
        for r in batches.take_rejects() {
            on_reject(EncodeReject::from(r))?;
        }
        for w in batches.take_warnings() {
            warnings += 1;
            tracing::debug!(file = %w.file, line = w.line, resource_type = %w.resource_type, id = %w.id, path = %w.path, "{}", w.message);
        }
        let Some(item) = next else { break };
        let (resource_type, batch) = item.with_context(|| format!("encoding {label}"))?;
        on_batch(&resource_type, batch)?;
    }
    if warnings > 0 {
        tracing::warn!(file = %label, warnings, "elements stored as null because they could not be encoded (see debug log)");
    }
    Ok(())
}

impl From<Reject> for EncodeReject {
    fn from(r: Reject) -> Self {
        Self {
            resource_type: r.resource_type,
            id: r.id,
            file: r.file,
            line: r.line,
            reason: r.reason,
        }
    }
}

/// Reads the bulk client's rejected lines (`RejectedLine` JSON objects) of one downloaded file.
pub fn read_download_rejects(
    path: &Path,
    resource_type: Option<&str>,
) -> anyhow::Result<Vec<EncodeReject>> {
    let reader = crate::files::open_ndjson(path)?;
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: fhir_bulk::RejectedLine = serde_json::from_str(&line)
            .with_context(|| format!("{} holds a malformed reject record", path.display()))?;
        // The raw line may still name its id even though it was rejected.
        let id = serde_json::from_str::<serde_json::Value>(&r.raw)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
        out.push(EncodeReject {
            resource_type: resource_type.map(str::to_owned),
            id,
            file: r.file,
            line: r.line,
            reason: format!("download: {}", r.reason),
        });
    }
    Ok(out)
}
