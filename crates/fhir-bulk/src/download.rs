//! Concurrent, streaming downloads of the manifest's files, with per-line integrity checks,
//! rejects kept aside, and per-file retries that resume with `Range` where the server allows.
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use http::header::{ACCEPT, ACCEPT_ENCODING, RANGE};
use http::{HeaderMap, HeaderValue, Method};
use serde::{Deserialize, Serialize};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use url::Url;

use crate::client::{BulkClient, Verdict};
use crate::error::{BulkError, FileFailure};
use crate::events::{BulkEvent, FileKind, RetryReason};
use crate::manifest::Manifest;
use crate::outcome::{Deletion, OutcomeIssue};

/// Raw text kept for an over-long line in the rejects file.
const REJECT_PREFIX_BYTES: usize = 4096;
const WRITE_BUFFER: usize = 1 << 20;
/// Byte-progress events are sent at most every this many bytes per file.
const PROGRESS_EVERY: u64 = 1 << 20;

/// A file of the manifest and where it goes, relative to the output directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub kind: FileKind,
    pub resource_type: String,
    pub url: Url,
    pub count: Option<u64>,
    /// `Type.n.ndjson`, `deleted/Type.n.ndjson` or `error/Type.n.ndjson` (n from 1, per type).
    pub name: String,
}

/// Lays out the manifest's files deterministically (the same manifest gives the same names).
pub fn plan(manifest: &Manifest) -> Vec<PlannedFile> {
    let mut planned = Vec::new();
    for (kind, files, dir) in [
        (FileKind::Output, &manifest.output, ""),
        (FileKind::Deleted, &manifest.deleted, "deleted/"),
        (FileKind::Error, &manifest.error, "error/"),
    ] {
        let mut seq: HashMap<&str, u32> = HashMap::new();
        for f in files {
            let n = seq.entry(&f.resource_type).or_default();
            *n += 1;
            planned.push(PlannedFile {
                kind,
                resource_type: f.resource_type.clone(),
                url: f.url.clone(),
                count: f.count,
                name: format!("{dir}{}.{n}.ndjson", f.resource_type),
            });
        }
    }
    planned
}

/// A file that finished downloading (or had finished in an earlier, resumed run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownloadedFile {
    pub kind: FileKind,
    pub resource_type: String,
    pub url: Url,
    /// Path relative to the output directory.
    pub name: String,
    pub path: PathBuf,
    /// Valid lines kept (resources for output files).
    pub lines: u64,
    /// Bytes of the kept file.
    pub bytes: u64,
    /// Lines set aside in `rejects_path`.
    pub rejected_lines: u64,
    pub rejects_path: Option<PathBuf>,
    /// The manifest's `count`, when given.
    pub expected_count: Option<u64>,
    /// Parsed deletions (deleted files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<Deletion>,
    /// OperationOutcome issues (error files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<OutcomeIssue>,
    /// True when taken over from an earlier run rather than downloaded now.
    #[serde(default)]
    pub resumed: bool,
}

impl DownloadedFile {
    /// `count` was given and differs from the lines received.
    pub fn count_mismatch(&self) -> bool {
        self.kind == FileKind::Output
            && self
                .expected_count
                .is_some_and(|c| c != self.lines + self.rejected_lines)
    }
}

/// A line set aside, as written (one JSON object per line) to `rejects/<file>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    pub file: String,
    pub url: String,
    pub line: u64,
    pub reason: String,
    pub raw: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_truncated: bool,
}

/// Options of one download run.
#[derive(Clone, Debug, Default)]
pub struct DownloadOptions {
    /// Files finished in an earlier run, by name: yielded as they are, not downloaded again.
    pub finished: BTreeMap<String, DownloadedFile>,
}

/// The files of a download as they finish, in completion order. Dropping it stops all
/// downloads (partial files stay as `*.part` and are redone by a resumed run).
pub struct Downloads {
    rx: mpsc::UnboundedReceiver<Result<DownloadedFile, FileFailure>>,
    driver: JoinHandle<()>,
    total: usize,
}

impl Downloads {
    /// Number of files this download yields (finished and failed together).
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Stream for Downloads {
    type Item = Result<DownloadedFile, FileFailure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl BulkClient {
    /// Downloads every file of `manifest` into `dir` (outputs, then deletions and errors),
    /// `max_concurrent_downloads` at a time. Must be called within a Tokio runtime.
    pub fn download(&self, manifest: &Manifest, dir: &Path, options: DownloadOptions) -> Downloads {
        let planned = plan(manifest);
        let total = planned.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let dir = dir.to_path_buf();
        let requires_token = manifest.requires_access_token;
        let driver = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(client.inner.config.max_concurrent_downloads));
            let mut tasks = JoinSet::new();
            for file in planned {
                if let Some(done) = options.finished.get(&file.name)
                    && done.url == file.url
                    && dir.join(&file.name).is_file()
                {
                    let mut done = done.clone();
                    done.resumed = true;
                    done.path = dir.join(&file.name);
                    let _ = tx.send(Ok(done));
                    continue;
                }
                let (client, dir, tx, permits) =
                    (client.clone(), dir.clone(), tx.clone(), permits.clone());
                tasks.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    let result = fetch(&client, &dir, &file, requires_token)
                        .await
                        .map_err(|e| {
                            let message = e.to_string();
                            client.emit(BulkEvent::DownloadError {
                                url: file.url.clone(),
                                resource_type: file.resource_type.clone(),
                                kind: file.kind,
                                message: message.clone(),
                            });
                            FileFailure {
                                url: file.url.clone(),
                                resource_type: file.resource_type.clone(),
                                message,
                            }
                        });
                    let _ = tx.send(result);
                });
            }
            drop(tx);
            while let Some(joined) = tasks.join_next().await {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a download task panicked");
                }
            }
        });
        Downloads { rx, driver, total }
    }
}

/// Byte and line position of a download, advanced only at line boundaries so a retry can
/// truncate the outputs to it and resume the body from `src_offset`.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    src_offset: u64,
    out_len: u64,
    rejects_len: u64,
    line_no: u64,
    lines: u64,
    rejected: u64,
}

struct LineSink<'a> {
    file: &'a PlannedFile,
    require_id: bool,
    /// Parse each line; else keep every line, so line `n` of the output is line `n` of the
    /// source (see `ClientConfig::full_line_checks`).
    full_check: bool,
    max_line: usize,
    out: BufWriter<File>,
    out_path: PathBuf,
    rejects_path: PathBuf,
    rejects: Option<BufWriter<File>>,
    carry: Vec<u8>,
    /// Length so far of a line over the limit, whose first bytes are in `carry`.
    overlong: Option<u64>,
    cur: Cursor,
}

impl LineSink<'_> {
    async fn feed(&mut self, mut data: &[u8]) -> Result<(), BulkError> {
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
    async fn rewind(&mut self, to: Cursor, out_path: &Path) -> Result<(), BulkError> {
        self.out
            .flush()
            .await
            .map_err(|e| BulkError::io(out_path, e))?;
        let f = self.out.get_mut();
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

enum Attempt {
    Done,
    Retry {
        reason: RetryReason,
        hint: Option<std::time::Duration>,
        error: BulkError,
    },
}

async fn fetch(
    client: &BulkClient,
    dir: &Path,
    file: &PlannedFile,
    requires_token: bool,
) -> Result<DownloadedFile, BulkError> {
    let final_path = dir.join(&file.name);
    let part_path = dir.join(format!("{}.part", file.name));
    let rejects_path = dir.join("rejects").join(&file.name);
    if let Some(parent) = final_path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| BulkError::io(parent, e))?;
    }
    let _ = tokio::fs::remove_file(&rejects_path).await;
    let out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&part_path)
        .await
        .map_err(|e| BulkError::io(&part_path, e))?;
    let mut sink = LineSink {
        file,
        require_id: file.kind == FileKind::Output,
        full_check: client.inner.config.full_line_checks || file.kind != FileKind::Output,
        max_line: client.inner.config.max_line_bytes,
        out: BufWriter::with_capacity(WRITE_BUFFER, out),
        out_path: part_path.clone(),
        rejects_path: rejects_path.clone(),
        rejects: None,
        carry: Vec::new(),
        overlong: None,
        cur: Cursor::default(),
    };
    let with_token = requires_token && client.same_origin(&file.url);
    let mut attempt: u32 = 0;
    let mut use_range = true;
    loop {
        attempt += 1;
        client.emit(BulkEvent::DownloadRequest {
            url: file.url.clone(),
            resource_type: file.resource_type.clone(),
            kind: file.kind,
            attempt,
        });
        match fetch_attempt(
            client,
            file,
            &mut sink,
            &part_path,
            with_token,
            &mut use_range,
        )
        .await?
        {
            Attempt::Done => break,
            Attempt::Retry {
                reason,
                hint,
                error,
            } => {
                let committed = sink.cur;
                sink.rewind(committed, &part_path).await?;
                if attempt > client.inner.config.retry.max_retries {
                    return Err(BulkError::RetriesExhausted {
                        what: "download",
                        url: file.url.clone(),
                        attempts: attempt,
                        last: network_text(&error),
                    });
                }
                let delay = client.retry_delay(hint, attempt);
                client.emit(BulkEvent::Retry {
                    what: "download",
                    url: file.url.clone(),
                    attempt,
                    reason,
                    delay,
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
    sink.out
        .flush()
        .await
        .map_err(|e| BulkError::io(&part_path, e))?;
    sink.out
        .get_mut()
        .sync_all()
        .await
        .map_err(|e| BulkError::io(&part_path, e))?;
    if let Some(w) = &mut sink.rejects {
        w.flush()
            .await
            .map_err(|e| BulkError::io(&rejects_path, e))?;
    }
    tokio::fs::rename(&part_path, &final_path)
        .await
        .map_err(|e| BulkError::io(&final_path, e))?;
    let cur = sink.cur;
    let mut done = DownloadedFile {
        kind: file.kind,
        resource_type: file.resource_type.clone(),
        url: file.url.clone(),
        name: file.name.clone(),
        path: final_path.clone(),
        lines: cur.lines,
        bytes: cur.out_len,
        rejected_lines: cur.rejected,
        rejects_path: (cur.rejected > 0).then_some(rejects_path),
        expected_count: file.count,
        deletions: Vec::new(),
        issues: Vec::new(),
        resumed: false,
    };
    if cur.rejected > 0 {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!(
                "{}: {} invalid lines set aside in {}",
                file.name,
                cur.rejected,
                display(done.rejects_path.as_deref())
            ),
        });
    }
    if done.count_mismatch() {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!(
                "{}: manifest count is {} but {} lines were received",
                file.name,
                file.count.unwrap_or(0),
                cur.lines + cur.rejected
            ),
        });
    }
    match file.kind {
        FileKind::Output => {}
        FileKind::Deleted => done.deletions = read_deletions(client, &done).await?,
        FileKind::Error => done.issues = read_issues(client, &done).await?,
    }
    client.emit(BulkEvent::DownloadComplete {
        url: file.url.clone(),
        resource_type: file.resource_type.clone(),
        kind: file.kind,
        path: final_path,
        lines: cur.lines,
        bytes: cur.out_len,
        rejected: cur.rejected,
    });
    Ok(done)
}

fn display(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string()).unwrap_or_default()
}

async fn fetch_attempt(
    client: &BulkClient,
    file: &PlannedFile,
    sink: &mut LineSink<'_>,
    part_path: &Path,
    with_token: bool,
    use_range: &mut bool,
) -> Result<Attempt, BulkError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+ndjson"));
    let offset = sink.cur.src_offset;
    let ranged = offset > 0 && *use_range;
    if !client.inner.config.gzip {
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    if ranged {
        let range = HeaderValue::from_str(&format!("bytes={offset}-"))
            .map_err(|e| BulkError::InvalidRequest(e.to_string()))?;
        headers.insert(RANGE, range);
        // Byte offsets count decoded bytes, so the resumed part must come unencoded.
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let url = &file.url;
    let resp = match client
        .send_once("download", Method::GET, url, &headers, None, with_token)
        .await
    {
        Ok((_, resp)) => resp,
        Err(e @ BulkError::Network { .. }) => {
            return Ok(Attempt::Retry {
                reason: RetryReason::Network(network_text(&e)),
                hint: None,
                error: e,
            });
        }
        Err(e) => return Err(e),
    };
    let status = resp.status().as_u16();
    let resp = match status {
        200 => {
            if offset > 0 {
                // The server ignored the range (or none was sent): start the file over.
                sink.rewind(Cursor::default(), part_path).await?;
            }
            resp
        }
        206 if ranged && content_range_start(resp.headers()) == Some(offset) => resp,
        206 | 416 => {
            // A range we cannot use: fetch the whole file again.
            *use_range = false;
            let error = BulkError::Http {
                what: "download",
                url: url.clone(),
                status,
                outcome: Some("unusable range response".into()),
            };
            return Ok(Attempt::Retry {
                reason: RetryReason::ServerError(status),
                hint: None,
                error,
            });
        }
        404 | 410 => {
            return Err(BulkError::FileGone {
                url: url.clone(),
                status,
            });
        }
        _ => match client.classify("download", url, resp).await {
            Verdict::Pass(resp) => {
                let outcome = crate::client::read_outcome(resp).await.0;
                return Err(BulkError::Http {
                    what: "download",
                    url: url.clone(),
                    status,
                    outcome,
                });
            }
            Verdict::Retry {
                reason,
                hint,
                error,
            } => {
                return Ok(Attempt::Retry {
                    reason,
                    hint,
                    error,
                });
            }
            Verdict::Fail(e) => return Err(e),
        },
    };
    let mut body = resp.bytes_stream();
    let mut unreported: u64 = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                sink.feed(&bytes).await?;
                unreported += bytes.len() as u64;
                if unreported >= PROGRESS_EVERY {
                    client.emit(BulkEvent::DownloadProgress {
                        url: url.clone(),
                        bytes: unreported,
                    });
                    unreported = 0;
                }
            }
            Err(source) => {
                if unreported > 0 {
                    client.emit(BulkEvent::DownloadProgress {
                        url: url.clone(),
                        bytes: unreported,
                    });
                }
                let error = BulkError::Network {
                    what: "download",
                    url: url.clone(),
                    source,
                };
                return Ok(Attempt::Retry {
                    reason: RetryReason::Network(network_text(&error)),
                    hint: None,
                    error,
                });
            }
        }
    }
    if unreported > 0 {
        client.emit(BulkEvent::DownloadProgress {
            url: url.clone(),
            bytes: unreported,
        });
    }
    if !sink.carry.is_empty() || sink.overlong.is_some() {
        sink.finish_carried(0).await?;
    }
    Ok(Attempt::Done)
}

fn network_text(e: &BulkError) -> String {
    match e {
        BulkError::Network { source, .. } => crate::client::error_chain(source),
        other => other.to_string(),
    }
}

/// The first byte position of a `Content-Range: bytes a-b/n` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

async fn read_lines(path: &Path) -> Result<tokio::io::Lines<BufReader<File>>, BulkError> {
    let f = File::open(path).await.map_err(|e| BulkError::io(path, e))?;
    Ok(BufReader::new(f).lines())
}

async fn read_deletions(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<Deletion>, BulkError> {
    let mut lines = read_lines(&file.path).await?;
    let mut all = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| BulkError::io(&file.path, e))?
    {
        let Ok(bundle) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let (found, problems) = crate::outcome::deletions(&bundle);
        all.extend(found);
        for p in problems {
            client.emit(BulkEvent::Warning {
                url: Some(file.url.clone()),
                message: format!("{}: {p}", file.name),
            });
        }
    }
    Ok(all)
}

async fn read_issues(
    client: &BulkClient,
    file: &DownloadedFile,
) -> Result<Vec<OutcomeIssue>, BulkError> {
    let mut lines = read_lines(&file.path).await?;
    let mut all = Vec::new();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| BulkError::io(&file.path, e))?
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        all.extend(crate::outcome::issues(&v));
    }
    // The server's own account of what it could not export: shown, capped to stay readable.
    for issue in all.iter().take(20) {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!("server reported: {issue}"),
        });
    }
    if all.len() > 20 {
        client.emit(BulkEvent::Warning {
            url: Some(file.url.clone()),
            message: format!(
                "... and {} more issues in {}",
                all.len() - 20,
                file.path.display()
            ),
        });
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn content_range() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(
            http::header::CONTENT_RANGE,
            HeaderValue::from_static("items 1-2/3"),
        );
        assert_eq!(content_range_start(&h), None);
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
        let out_path = dir.path().join("out");
        let rejects_path = dir.path().join("rejects");
        let mut sink = LineSink {
            file: &file,
            require_id: true,
            full_check,
            max_line: 64,
            out: BufWriter::new(File::create(&out_path).await.unwrap()),
            out_path: out_path.clone(),
            rejects_path: rejects_path.clone(),
            rejects: None,
            carry: Vec::new(),
            overlong: None,
            cur: Cursor::default(),
        };
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            sink.feed(&body[start..c]).await.unwrap();
            start = c;
        }
        if !sink.carry.is_empty() || sink.overlong.is_some() {
            sink.finish_carried(0).await.unwrap();
        }
        sink.out.flush().await.unwrap();
        if let Some(w) = &mut sink.rejects {
            w.flush().await.unwrap();
        }
        let cur = sink.cur;
        let rejects = std::fs::read(&rejects_path).unwrap_or_default();
        (
            std::fs::read(&out_path).unwrap(),
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
        fn check_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = check_line(&line, "Patient", true);
        }
    }
}
