//! The lines of a file as they stream in: cut at newlines across network chunks, checked
//! (UTF-8 JSON object of the entry's type with an id), kept or set aside as rejects, with a
//! position a retry can rewind to.
use std::borrow::Cow;
use std::io::SeekFrom;
use std::path::PathBuf;

use serde::Deserialize;
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::files::{PlannedFile, RejectedLine};
use crate::atomic::AtomicFile;
use crate::error::BulkError;

/// Raw text kept for an over-long line in the rejects file.
const REJECT_PREFIX_BYTES: usize = 4096;

/// Byte and line position of a download, advanced only at line boundaries so a retry can
/// truncate the outputs to it and resume the body from `src_offset`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    pub src_offset: u64,
    pub out_len: u64,
    rejects_len: u64,
    line_no: u64,
    pub lines: u64,
    pub rejected: u64,
}

pub(super) struct LineSink<'a> {
    pub(super) file: &'a PlannedFile,
    require_id: bool,
    /// Parse each line; else keep every line, so line `n` of the output is line `n` of the
    /// source (see `ClientConfig::full_line_checks`).
    full_check: bool,
    max_line: usize,
    out: BufWriter<AtomicFile<File>>,
    out_path: PathBuf,
    rejects_path: PathBuf,
    rejects: Option<BufWriter<File>>,
    carry: Vec<u8>,
    /// Length so far of a line over the limit, whose first bytes are in `carry`.
    overlong: Option<u64>,
    /// Where the kept and rejected lines end.
    pub cur: Cursor,
}

/// How a sink treats lines.
pub(super) struct LineRules {
    pub require_id: bool,
    pub full_check: bool,
    pub max_line: usize,
}

impl<'a> LineSink<'a> {
    /// Writes `file`'s lines to `out` (through a buffer of `buffer` bytes) and its rejects to
    /// `rejects_path`, created at the first reject.
    pub fn new(
        file: &'a PlannedFile,
        rules: LineRules,
        out: AtomicFile<File>,
        buffer: usize,
        rejects_path: PathBuf,
    ) -> Self {
        LineSink {
            file,
            require_id: rules.require_id,
            full_check: rules.full_check,
            max_line: rules.max_line,
            out_path: out.temp_path().to_path_buf(),
            out: BufWriter::with_capacity(buffer, out),
            rejects_path,
            rejects: None,
            carry: Vec::new(),
            overlong: None,
            cur: Cursor::default(),
        }
    }

    /// The body ended: processes a last line without a newline.
    pub async fn end(&mut self) -> Result<(), BulkError> {
        if !self.carry.is_empty() || self.overlong.is_some() {
            self.finish_carried(0).await?;
        }
        Ok(())
    }

    /// Flushes both outputs; returns the output file, ready to commit, and the final position.
    pub async fn finish(mut self) -> Result<(AtomicFile<File>, Cursor), BulkError> {
        self.out
            .flush()
            .await
            .map_err(|e| BulkError::io(&self.out_path, e))?;
        if let Some(w) = &mut self.rejects {
            w.flush()
                .await
                .map_err(|e| BulkError::io(&self.rejects_path, e))?;
        }
        Ok((self.out.into_inner(), self.cur))
    }

    pub async fn feed(&mut self, mut data: &[u8]) -> Result<(), BulkError> {
        while let Some(i) = memchr::memchr(b'\n', data) {
            let (head, rest) = data.split_at(i);
            data = &rest[1..];
            if self.carry.is_empty() && self.overlong.is_none() {
                self.line(head, head.len() as u64 + 1).await?;
            } else {
                self.append(head);
                self.finish_carried(1).await?;
            }
        }
        self.append(data);
        Ok(())
    }

    fn append(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        if let Some(len) = &mut self.overlong {
            *len += part.len() as u64;
            let room = REJECT_PREFIX_BYTES.saturating_sub(self.carry.len());
            self.carry.extend_from_slice(&part[..room.min(part.len())]);
        } else if self.carry.len() + part.len() > self.max_line {
            self.overlong = Some((self.carry.len() + part.len()) as u64);
            self.carry.truncate(REJECT_PREFIX_BYTES);
            let room = REJECT_PREFIX_BYTES.saturating_sub(self.carry.len());
            self.carry.extend_from_slice(&part[..room.min(part.len())]);
        } else {
            self.carry.extend_from_slice(part);
        }
    }

    /// Processes the carried line; `newline` is 1 when it ended with `\n`, 0 at end of body.
    async fn finish_carried(&mut self, newline: u64) -> Result<(), BulkError> {
        let carry = std::mem::take(&mut self.carry);
        match self.overlong.take() {
            Some(len) => {
                self.cur.line_no += 1;
                let reason = format!(
                    "line is {len} bytes, over the limit of {} bytes",
                    self.max_line
                );
                self.reject(&carry, reason, true).await?;
                self.placeholder().await?;
                self.cur.src_offset += len + newline;
            }
            None => self.line(&carry, carry.len() as u64 + newline).await?,
        }
        self.carry = carry;
        self.carry.clear();
        Ok(())
    }

    async fn line(&mut self, raw: &[u8], src_len: u64) -> Result<(), BulkError> {
        self.cur.line_no += 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > self.max_line {
            let reason = format!(
                "line is {} bytes, over the limit of {} bytes",
                raw.len(),
                self.max_line
            );
            self.reject(&line[..REJECT_PREFIX_BYTES.min(line.len())], reason, true)
                .await?;
            self.placeholder().await?;
        } else if line.iter().all(u8::is_ascii_whitespace) {
            self.placeholder().await?;
        } else if !self.full_check {
            self.keep(line).await?;
        } else {
            match check_line(line, &self.file.resource_type, self.require_id) {
                Ok(()) => self.keep(line).await?,
                Err(reason) => self.reject(line, reason, false).await?,
            }
        }
        self.cur.src_offset += src_len;
        Ok(())
    }

    async fn keep(&mut self, line: &[u8]) -> Result<(), BulkError> {
        self.write_line(line).await?;
        self.cur.lines += 1;
        Ok(())
    }

    /// Without full checks, a line not kept leaves an empty line, so the consumer's line
    /// numbers stay those of the source.
    async fn placeholder(&mut self) -> Result<(), BulkError> {
        if self.full_check {
            return Ok(());
        }
        self.write_line(b"").await
    }

    async fn write_line(&mut self, line: &[u8]) -> Result<(), BulkError> {
        let path = &self.out_path;
        for part in [line, b"\n"] {
            self.out
                .write_all(part)
                .await
                .map_err(|e| BulkError::io(path, e))?;
        }
        self.cur.out_len += line.len() as u64 + 1;
        Ok(())
    }

    async fn reject(
        &mut self,
        raw: &[u8],
        reason: String,
        truncated: bool,
    ) -> Result<(), BulkError> {
        let record = RejectedLine {
            file: self.file.name.clone(),
            url: self.file.url.to_string(),
            line: self.cur.line_no,
            reason,
            raw: String::from_utf8_lossy(raw).into_owned(),
            raw_truncated: truncated,
        };
        let mut text =
            serde_json::to_vec(&record).map_err(|e| BulkError::io(&self.rejects_path, e.into()))?;
        text.push(b'\n');
        let path = self.rejects_path.clone();
        if self.rejects.is_none() {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| BulkError::io(parent, e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .await
                .map_err(|e| BulkError::io(&path, e))?;
            self.rejects = Some(BufWriter::new(f));
        }
        if let Some(w) = &mut self.rejects {
            w.write_all(&text)
                .await
                .map_err(|e| BulkError::io(&path, e))?;
        }
        self.cur.rejects_len += text.len() as u64;
        self.cur.rejected += 1;
        Ok(())
    }

    /// Flushes and cuts both outputs back to `to`, dropping anything of an unfinished line.
    pub async fn rewind(&mut self, to: Cursor) -> Result<(), BulkError> {
        let out_path = &self.out_path;
        self.out
            .flush()
            .await
            .map_err(|e| BulkError::io(out_path, e))?;
        let f = self.out.get_mut().get_mut();
        f.set_len(to.out_len)
            .await
            .map_err(|e| BulkError::io(out_path, e))?;
        f.seek(SeekFrom::Start(to.out_len))
            .await
            .map_err(|e| BulkError::io(out_path, e))?;
        if let Some(w) = &mut self.rejects {
            let path = &self.rejects_path;
            w.flush().await.map_err(|e| BulkError::io(path, e))?;
            let f = w.get_mut();
            f.set_len(to.rejects_len)
                .await
                .map_err(|e| BulkError::io(path, e))?;
            f.seek(SeekFrom::Start(to.rejects_len))
                .await
                .map_err(|e| BulkError::io(path, e))?;
        }
        self.carry.clear();
        self.overlong = None;
        self.cur = to;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "resourceType", borrow, default)]
    resource_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

/// One NDJSON line: valid UTF-8 JSON object of the manifest entry's type, with an `id`.
pub fn check_line(line: &[u8], expected_type: &str, require_id: bool) -> Result<(), String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    let probe: Probe = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    match probe.resource_type.as_deref() {
        None => return Err("resourceType is missing".into()),
        Some(t) if t != expected_type => {
            return Err(format!(
                "resourceType {t:?} does not match the manifest's type {expected_type:?}"
            ));
        }
        Some(_) => {}
    }
    if require_id {
        match probe.id.as_deref() {
            None => return Err("id is missing".into()),
            Some("") => return Err("id is empty".into()),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::FileKind;
    use proptest::prelude::*;
    use url::Url;

    #[test]
    fn line_checks() {
        assert_eq!(
            check_line(br#"{"resourceType":"Patient","id":"p1"}"#, "Patient", true),
            Ok(())
        );
        let err = |l: &[u8]| check_line(l, "Patient", true).unwrap_err();
        assert!(err(br#"{"resourceType":"Observation","id":"o"}"#).contains("does not match"));
        assert!(err(br#"{"resourceType":"Patient"}"#).contains("id is missing"));
        assert!(err(br#"{"resourceType":"Patient","id":""}"#).contains("id is empty"));
        assert!(err(br#"{"resourceType":"Patient","id":7}"#).contains("invalid JSON"));
        assert!(err(br#"{"id":"x"}"#).contains("resourceType is missing"));
        assert!(err(br#"{"resourceType":"Patient","id":"p1""#).contains("invalid JSON"));
        assert!(err(br#"{"resourceType":"Patient","id":"p1"} x"#).contains("invalid JSON"));
        assert!(err(br#"["Patient","p1"]"#).contains("not a JSON object"));
        assert!(err(b"{\"resourceType\":\"Patient\",\"id\":\"\xff\"}").contains("UTF-8"));
        assert_eq!(
            check_line(
                br#"{"resourceType":"OperationOutcome"}"#,
                "OperationOutcome",
                false
            ),
            Ok(())
        );
        assert_eq!(
            check_line(
                br#"{"resourceType":"Patient","id":"p\"1"}"#,
                "Patient",
                true
            ),
            Ok(())
        );
    }

    /// Feeds `body` to a sink in pieces split at `cuts`; returns (kept, rejects, lines, rejected, src_offset).
    async fn run_sink(
        body: &[u8],
        cuts: &[usize],
        full_check: bool,
    ) -> (Vec<u8>, Vec<u8>, u64, u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let file = PlannedFile {
            kind: FileKind::Output,
            resource_type: "Patient".into(),
            url: Url::parse("http://127.0.0.1/f").unwrap(),
            count: None,
            name: "Patient.1.ndjson".into(),
        };
        let rejects_path = dir.path().join("rejects");
        let out =
            AtomicFile::create_async(dir.path().join("Patient.1.ndjson"), dir.path().join("out"))
                .await
                .unwrap();
        let rules = LineRules {
            require_id: true,
            full_check,
            max_line: 64,
        };
        let mut sink = LineSink::new(&file, rules, out, 1024, rejects_path.clone());
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            sink.feed(&body[start..c]).await.unwrap();
            start = c;
        }
        sink.end().await.unwrap();
        let (out, cur) = sink.finish().await.unwrap();
        let rejects = std::fs::read(&rejects_path).unwrap_or_default();
        (
            std::fs::read(out.temp_path()).unwrap(),
            rejects,
            cur.lines,
            cur.rejected,
            cur.src_offset,
        )
    }

    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,10}".prop_map(|id| format!(r#"{{"resourceType":"Patient","id":"{id}"}}"#)),
            "[a-z0-9]{1,10}"
                .prop_map(|id| format!("{{\"resourceType\":\"Patient\",\"id\":\"{id}\"}}\r")),
            "[ -~]{0,20}",
            "x{60,200}",
            Just(String::new()),
        ]
    }

    proptest! {
        /// However the body is cut into network chunks, the same lines are kept and rejected,
        /// and the source offset accounts for every byte.
        #[test]
        fn chunking_does_not_change_the_outcome(
            lines in proptest::collection::vec(any_line(), 0..12),
            trailing_newline in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            full_check in any::<bool>(),
        ) {
            let mut body = lines.join("\n");
            if trailing_newline {
                body.push('\n');
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let whole = rt.block_on(run_sink(body.as_bytes(), &[], full_check));
            let split = rt.block_on(run_sink(body.as_bytes(), &cuts, full_check));
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.4, body.len() as u64);
            let kept = String::from_utf8(whole.0).unwrap();
            if full_check {
                for line in kept.lines() {
                    prop_assert!(check_line(line.as_bytes(), "Patient", true).is_ok());
                }
            } else {
                // Line for line: what is not kept (over the limit, blank) is an empty line.
                let source: Vec<&str> = body.lines().collect();
                let out: Vec<&str> = kept.lines().collect();
                prop_assert_eq!(out.len(), source.len());
                for (o, s) in out.iter().zip(&source) {
                    let s = s.strip_suffix('\r').unwrap_or(s);
                    let dropped = s.len() > 64 || s.trim().is_empty();
                    prop_assert_eq!(*o, if dropped { "" } else { s });
                }
            }
        }

        #[test]
        fn check_line_accepts_only_patients_with_an_id(
            line in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..100),
                "\\{\"resourceType\":\"(Patient|Other)\"(,\"id\":\"[a-z]{0,3}\")?\\}".prop_map(String::into_bytes),
            ],
        ) {
            let valid = serde_json::from_slice::<serde_json::Value>(&line).is_ok_and(|v| {
                v["resourceType"] == "Patient" && v["id"].as_str().is_some_and(|id| !id.is_empty())
            });
            prop_assert_eq!(check_line(&line, "Patient", true).is_ok(), valid);
        }
    }
}
