//! Streaming NDJSON of mixed resource types into per-type record batches.
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::batch::{BatchBuilder, BatchLimits};
use crate::encode::{RawReject, RowEncoder, RowOutcome};
use crate::encoder::Encoder;
use crate::error::{EncodeError, LineRef, Reject, Warning};

/// Reads NDJSON lines (any mix of resource types) and yields `(resource_type, batch)` as soon
/// as a type's batch is full, then the remaining partial batches at the end of the input.
///
/// Memory stays bounded: the NDJSON bytes buffered across all types never exceed
/// `limits.max_bytes` (the largest pending batch is emitted first). Rejected lines and
/// warnings are collected; drain them with [`take_rejects`](Self::take_rejects) and
/// [`take_warnings`](Self::take_warnings) between batches on long inputs.
pub struct NdjsonBatches<R> {
    encoder: Encoder,
    reader: R,
    file: Arc<str>,
    line_no: u64,
    limits: BatchLimits,
    builders: BTreeMap<String, BatchBuilder>,
    enc: RowEncoder,
    buf: Vec<u8>,
    /// Resource type of the current line.
    rt: String,
    pending_bytes: usize,
    ready: VecDeque<(String, RecordBatch)>,
    rejects: Vec<Reject>,
    warnings: Vec<Warning>,
    rows: u64,
    finished: bool,
    /// Lines of another resource type are rejected (a file of one type, as in a manifest).
    expected: Option<String>,
}

impl<R: BufRead> NdjsonBatches<R> {
    /// `file` names the input in rejects and warnings.
    pub fn new(
        encoder: Encoder,
        reader: R,
        file: impl Into<Arc<str>>,
        limits: BatchLimits,
    ) -> Self {
        NdjsonBatches {
            encoder,
            reader,
            file: file.into(),
            line_no: 0,
            limits,
            builders: BTreeMap::new(),
            enc: RowEncoder::default(),
            buf: Vec::new(),
            rt: String::new(),
            pending_bytes: 0,
            ready: VecDeque::new(),
            rejects: Vec::new(),
            warnings: Vec::new(),
            rows: 0,
            finished: false,
            expected: None,
        }
    }

    /// Rejects every resource that is not of `resource_type` (the file's type).
    pub fn expecting(mut self, resource_type: impl Into<String>) -> Self {
        self.expected = Some(resource_type.into());
        self
    }

    /// Rejected lines so far (since the last call).
    pub fn take_rejects(&mut self) -> Vec<Reject> {
        std::mem::take(&mut self.rejects)
    }

    /// Warnings so far (since the last call).
    pub fn take_warnings(&mut self) -> Vec<Warning> {
        std::mem::take(&mut self.warnings)
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line_no
    }

    /// Resources encoded so far.
    pub fn rows_encoded(&self) -> u64 {
        self.rows
    }

    fn reject(&mut self, r: RawReject) {
        self.rejects.push(r.into_reject(&LineRef {
            file: self.file.clone(),
            line: self.line_no,
        }));
    }

    /// Reads and encodes one line; `Ok(false)` at the end of the input.
    fn step(&mut self) -> Result<bool, EncodeError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| EncodeError::Io {
                file: self.file.to_string(),
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        let line = trim(&self.buf);
        if line.is_empty() {
            return Ok(true);
        }
        let src = match self.enc.parse(line) {
            Ok(src) => src,
            Err(r) => {
                self.reject(r);
                return Ok(true);
            }
        };
        let h = self.enc.header(src);
        let Some(rt) = h.resource_type else {
            let id = h.id.map(str::to_string);
            self.reject(RawReject {
                resource_type: None,
                id,
                reason: "no resourceType".into(),
            });
            return Ok(true);
        };
        if let Some(expected) = &self.expected
            && rt != expected
        {
            let reason = format!("a {rt} resource in a file of {expected} resources");
            let (rt, id) = (rt.to_string(), h.id.map(str::to_string));
            self.reject(RawReject {
                resource_type: Some(rt),
                id,
                reason,
            });
            return Ok(true);
        }
        // Copied to a reused buffer: the type may live in the tape, which encoding borrows.
        self.rt.clear();
        self.rt.push_str(rt);
        if !self.builders.contains_key(&self.rt) {
            let id = h.id.map(str::to_string);
            match self.encoder.batch_builder(&self.rt, self.limits) {
                Ok(b) => {
                    self.builders.insert(self.rt.clone(), b);
                }
                Err(e) => {
                    let reason = match e {
                        EncodeError::UnsupportedResourceType(t) => {
                            format!("{t} resources are not supported by the Pathling encoding")
                        }
                        EncodeError::UnknownResourceType(t) => {
                            format!("unknown resourceType {t:?}")
                        }
                        other => other.to_string(),
                    };
                    self.reject(RawReject {
                        resource_type: Some(self.rt.clone()),
                        id,
                        reason,
                    });
                    return Ok(true);
                }
            }
        }
        let len = src.len();
        let Some(builder) = self.builders.get_mut(&self.rt) else {
            return Ok(true);
        };
        match builder.push_parsed(&mut self.enc, src) {
            RowOutcome::Row { warnings } => {
                self.rows += 1;
                self.pending_bytes += len;
                if !warnings.is_empty() {
                    let file = self.file.to_string();
                    self.warnings.extend(warnings.into_iter().map(|mut w| {
                        w.file.clone_from(&file);
                        w.line = self.line_no;
                        w
                    }));
                }
                if builder.is_full() {
                    let rt = std::mem::take(&mut self.rt);
                    let r = self.flush(&rt);
                    self.rt = rt;
                    r?;
                }
                while self.pending_bytes >= self.limits.max_bytes {
                    let Some(largest) = self
                        .builders
                        .iter()
                        .max_by_key(|(_, b)| b.bytes())
                        .map(|(t, _)| t.clone())
                    else {
                        break;
                    };
                    self.flush(&largest)?;
                }
            }
            RowOutcome::Reject(r) => self.reject(r),
        }
        Ok(true)
    }

    fn flush(&mut self, rt: &str) -> Result<(), EncodeError> {
        if let Some(b) = self.builders.get_mut(rt) {
            if b.is_empty() {
                return Ok(());
            }
            self.pending_bytes = self.pending_bytes.saturating_sub(b.bytes());
            let batch = b.finish()?;
            self.ready.push_back((rt.to_string(), batch));
        }
        Ok(())
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

impl<R: BufRead> Iterator for NdjsonBatches<R> {
    type Item = Result<(String, RecordBatch), EncodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(Ok(b));
            }
            if self.finished {
                return None;
            }
            match self.step() {
                Ok(true) => {}
                Ok(false) => {
                    self.finished = true;
                    let types: Vec<String> = self.builders.keys().cloned().collect();
                    for t in types {
                        if let Err(e) = self.flush(&t) {
                            return Some(Err(e));
                        }
                    }
                }
                Err(e) => {
                    // An unreadable input ends the stream after what was encoded so far.
                    self.finished = true;
                    let types: Vec<String> = self.builders.keys().cloned().collect();
                    for t in types {
                        let _ = self.flush(&t);
                    }
                    // Batches already complete are still delivered after the error.
                    return Some(Err(e));
                }
            }
        }
    }
}
