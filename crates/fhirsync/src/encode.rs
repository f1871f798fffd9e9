//! The bridge from NDJSON files to record batches: the encoder's streaming reader, with its
//! rejects and the bulk client's rejected download lines turned into one reject record.
use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use arrow::array::RecordBatch;
use fhir_encoder::{BatchLimits, EncodeError, Encoder, NdjsonBatches, Observer, Reject};

/// A resource that could not be written, with where it came from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct EncodeReject {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// What an input that cannot be read to its end (a gzip stream cut short, a failing disk) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// One reject at the line where reading stopped; the rows read before it stay (the
    /// user's own files: nothing better exists).
    Reject,
    /// An error (a copy of a server's file: the server has the lines that were not read).
    Fail,
}

/// Encodes every line of `input` (NDJSON, resources of any types) in bounded batches, handing
/// each batch to `on_batch` and each rejected line to `on_reject`. With `expected_type`, a
/// resource of another type is rejected (a manifest announced this file as that type). An
/// `observer` sees each resource that became a row (views are computed from it).
#[allow(clippy::too_many_arguments)]
pub fn encode_ndjson(
    encoder: &Encoder,
    input: Box<dyn BufRead + Send>,
    label: &str,
    expected_type: Option<&str>,
    unreadable: Unreadable,
    observer: Option<Observer>,
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
    if let Some(o) = observer {
        batches = batches.observing(o);
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
        match item {
            Ok((resource_type, batch)) => on_batch(&resource_type, batch)?,
            // A file that cannot be read to its end (a gzip stream cut short, a failing disk)
            // is one reject at the line where reading stopped; the rows read before it stay.
            Err(EncodeError::Io { source, .. }) if unreadable == Unreadable::Fail => {
                anyhow::bail!(
                    "{label} could not be read past line {} ({source})",
                    batches.lines_read()
                );
            }
            Err(EncodeError::Io { source, .. }) => {
                let line = batches.lines_read() + 1;
                tracing::warn!(file = %label, line, error = %source, "the file could not be read to its end");
                on_reject(EncodeReject {
                    resource_type: expected_type.map(str::to_owned),
                    id: None,
                    file: label.to_owned(),
                    line,
                    reason: format!(
                        "the file could not be read past this point ({source}); none of its lines from here on were read"
                    ),
                })?;
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("encoding {label}"))),
        }
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
        // The raw line (or the start of an over-long one) may still name its type and id.
        let header = fhir_encoder::scan_header(r.raw.as_bytes());
        out.push(EncodeReject {
            resource_type: header
                .resource_type
                .or_else(|| resource_type.map(str::to_owned)),
            id: header.id,
            file: r.file,
            line: r.line,
            reason: format!("download: {}", r.reason),
        });
    }
    Ok(out)
}
