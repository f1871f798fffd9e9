//! Streaming NDJSON of mixed resource types into per-type record batches.
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Read};
use std::sync::Arc;

use arrow_array::RecordBatch;

use crate::batch::{BatchBuilder, BatchLimits};
use crate::encode::{RawReject, RowEncoder, RowOutcome};
use crate::encoder::Encoder;
use crate::error::{EncodeError, LineRef, Reject, Warning};
use crate::json::Doc;

/// The longest line [`NdjsonBatches`] reads by default (as the bulk client's download limit).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

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
    /// Longer lines are rejected, and skipped without being held in memory.
    max_line: usize,
    observer: Option<Observer>,
}

/// Sees every resource that became a row: its type, its parsed JSON and its line number.
pub type Observer = Box<dyn FnMut(&str, Doc<'_>, u64) + Send>;

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
            max_line: DEFAULT_MAX_LINE_BYTES,
            observer: None,
        }
    }

    /// Rejects lines longer than `bytes` (without their line break) instead of
    /// [`DEFAULT_MAX_LINE_BYTES`].
    pub fn with_max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line = bytes;
        self
    }

    /// Rejects every resource that is not of `resource_type` (the file's type).
    pub fn expecting(mut self, resource_type: impl Into<String>) -> Self {
        self.expected = Some(resource_type.into());
        self
    }

    /// Shows `observer` every resource that becomes a row, as it is encoded (e.g. to compute
    /// views from the original JSON, which the encoding may not keep whole). Rejected lines
    /// are not shown.
    pub fn observing(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
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
        let io = |source| EncodeError::Io {
            file: self.file.to_string(),
            source,
        };
        let n = read_line(&mut self.reader, &mut self.buf, self.max_line).map_err(io)?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        let len = match line_len(&self.buf) {
            Some(len) => len,
            // Cut at the limit (all `read_line` may read): the rest is skipped, not held.
            None if n - 1 > self.max_line => {
                n + skip_line(&mut self.reader, &mut self.buf).map_err(io)?
            }
            // The last line, without a line break (a CR of one is not counted).
            None => self.buf.strip_suffix(b"\r").map_or(n, <[u8]>::len),
        };
        if len > self.max_line {
            self.buf.clear();
            self.reject(RawReject {
                resource_type: None,
                id: None,
                reason: format!(
                    "line is {len} bytes, over the limit of {} bytes",
                    self.max_line
                ),
            });
            return Ok(true);
        }
        let mut line = trim(&self.buf);
        // A byte order mark before a line's JSON is ignored, as RFC 8259 allows.
        if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
            line = trim(rest);
        }
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
                if let Some(observe) = &mut self.observer {
                    observe(&self.rt, self.enc.doc(src), self.line_no);
                }
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

/// Reads a line through its `\n` into `buf`, but no more than a line of `max` bytes and its
/// line break (`\r\n`); returns the bytes read (0 at the end of the input).
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(2);
    reader.take(limit).read_until(b'\n', buf)
}

/// The length of a complete line in `buf` without its line break (`None` when `buf` does not
/// end with a line break).
fn line_len(buf: &[u8]) -> Option<usize> {
    let line = buf.strip_suffix(b"\n")?;
    Some(line.strip_suffix(b"\r").unwrap_or(line).len())
}

/// Skips the rest of a line over the limit, using `scratch` in bounded pieces; returns the
/// bytes skipped before the line break.
fn skip_line(reader: &mut impl BufRead, scratch: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut skipped = 0;
    loop {
        scratch.clear();
        let n = reader.take(64 * 1024).read_until(b'\n', scratch)?;
        if n == 0 {
            return Ok(skipped);
        }
        if let Some(len) = line_len(scratch) {
            return Ok(skipped + len);
        }
        skipped += n;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::EncoderOptions;

    /// The ids encoded and the rejects (`line: reason`) of `input` read with `max_line`.
    fn read(input: &[u8], max_line: usize) -> (usize, Vec<String>) {
        let encoder = Encoder::new(EncoderOptions::default());
        let mut batches = NdjsonBatches::new(encoder, input, "f", BatchLimits::default())
            .with_max_line_bytes(max_line);
        let rows = batches.by_ref().map(|b| b.unwrap().1.num_rows()).sum();
        let rejects = batches
            .take_rejects()
            .iter()
            .map(|r| format!("{}: {}", r.line, r.reason))
            .collect();
        (rows, rejects)
    }

    #[test]
    fn a_line_over_the_limit_is_rejected_and_the_next_one_read() {
        let ok = br#"{"resourceType":"Patient","id":"a"}"#;
        let long = format!(
            r#"{{"resourceType":"Patient","id":"b","x":"{}"}}"#,
            "y".repeat(300)
        );
        for (end, newline) in [("", "\n"), ("\r", "\n"), ("", "")] {
            let input = [
                &ok[..],
                newline.as_bytes(),
                long.as_bytes(),
                end.as_bytes(),
                newline.as_bytes(),
                ok,
                newline.as_bytes(),
            ]
            .concat();
            let (rows, rejects) = read(&input, ok.len());
            let want = if newline.is_empty() { 0 } else { 2 };
            assert_eq!(rows, want, "{input:?}");
            if !newline.is_empty() {
                assert_eq!(
                    rejects,
                    [format!(
                        "2: line is {} bytes, over the limit of {} bytes",
                        long.len(),
                        ok.len()
                    )]
                );
            }
        }
        // At the limit, CR LF or not: read.
        let input = [&ok[..], b"\r\n", ok, b"\n", ok, b"\r"].concat();
        assert_eq!(read(&input, ok.len()), (3, vec![]));
        // Nothing but an over-long line, without a line break.
        let (rows, rejects) = read(long.as_bytes(), 100);
        assert_eq!((rows, rejects.len()), (0, 1), "{rejects:?}");
        assert!(
            rejects[0].starts_with("1: line is 342 bytes"),
            "{rejects:?}"
        );
    }

    #[test]
    fn a_byte_order_mark_before_a_line_is_ignored() {
        let input = "\u{feff}{\"resourceType\":\"Patient\",\"id\":\"a\"}\n \u{feff} {\"resourceType\":\"Patient\",\"id\":\"b\"}\r\n\u{feff}\n";
        assert_eq!(read(input.as_bytes(), 1024), (2, vec![]));
    }

    #[test]
    fn the_observer_sees_each_resource_that_became_a_row() {
        let input = b"{\"resourceType\":\"Patient\",\"id\":\"a\",\"gender\":\"female\"}\nnot json\n\n{\"resourceType\":\"Observation\",\"id\":\"o\"}\n{\"resourceType\":\"Nope\",\"id\":\"n\"}\n";
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let encoder = Encoder::new(EncoderOptions::default());
        let batches = NdjsonBatches::new(encoder, &input[..], "f", BatchLimits::default())
            .observing(Box::new(move |rt, doc, line| {
                let id = doc
                    .get(0, "id")
                    .and_then(|i| doc.str(i))
                    .unwrap_or_default();
                let gender = doc.get(0, "gender").and_then(|i| doc.str(i));
                if let Ok(mut seen) = sink.lock() {
                    seen.push(format!("{line} {rt}/{id} {gender:?}"));
                }
            }));
        let rows: usize = batches.map(|b| b.map_or(0, |(_, b)| b.num_rows())).sum();
        assert_eq!(rows, 2);
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(
            seen,
            ["1 Patient/a Some(\"female\")", "4 Observation/o None"]
        );
    }
}
