//! One file's download: attempts that stream the body into a [`LineSink`], resume with
//! `Range` after a failure where the server allows, and retry transient failures; then the
//! file is committed and its kind-specific contents read.
use std::path::Path;

use futures::StreamExt;
use http::header::{ACCEPT, ACCEPT_ENCODING, RANGE};
use http::{HeaderMap, HeaderValue};

use object_store::{GetOptions, GetRange};

use super::cloud::{StoreLocation, object_path};
use super::contents::{read_deletions, read_issues};
use super::files::{DownloadedFile, PlannedFile};
use super::gunzip::BodyDecoder;
use super::lines::{Cursor, LineRules, LineSink};
use crate::atomic::AtomicFile;
use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::{BulkEvent, FileKind, RetryReason};
use crate::retry::retry_delay;
use crate::transport::Outgoing;
use crate::transport::{Verdict, read_outcome};

const WRITE_BUFFER: usize = 1 << 20;
/// Byte-progress events are sent at most every this many bytes per file.
const PROGRESS_EVERY: u64 = 1 << 20;

enum Attempt {
    Done,
    Retry {
        reason: RetryReason,
        hint: Option<std::time::Duration>,
        error: BulkError,
    },
}

pub(super) async fn fetch(
    client: &BulkClient,
    dir: &Path,
    file: &PlannedFile,
    requires_token: bool,
) -> Result<DownloadedFile, BulkError> {
    let final_path = dir.join(&file.name);
    let part_path = dir.join(format!("{}.part", file.name));
    let rejects_path = dir.join("rejects").join(&file.name);
    let _ = tokio::fs::remove_file(&rejects_path).await;
    let out = AtomicFile::create_async(&final_path, &part_path)
        .await
        .map_err(|e| BulkError::io(&part_path, e))?;
    let config = &client.inner.config;
    let rules = LineRules {
        require_id: file.kind == FileKind::Output,
        full_check: config.full_line_checks || file.kind != FileKind::Output,
        max_line: config.max_line_bytes,
    };
    let mut sink = LineSink::new(file, rules, out, WRITE_BUFFER, rejects_path.clone());
    // A file in a bucket is read with the cloud's credentials, never with the FHIR token.
    let store = client.inner.stores.locate(&file.url);
    let with_token = store.is_none() && requires_token && client.same_origin(&file.url);
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
        let attempted = match &store {
            Some(at) => store_attempt(client, file, at, &mut sink, &mut use_range).await?,
            None => fetch_attempt(client, file, &mut sink, with_token, &mut use_range).await?,
        };
        match attempted {
            Attempt::Done => break,
            Attempt::Retry {
                reason,
                hint,
                error,
            } => {
                let committed = sink.cur;
                sink.rewind(committed).await?;
                if attempt > client.inner.config.retry.max_retries {
                    return Err(BulkError::RetriesExhausted {
                        what: "download",
                        url: file.url.clone(),
                        attempts: attempt,
                        last: error.brief(),
                    });
                }
                let delay = retry_delay(config, hint, attempt);
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
    let (out, cur) = sink.finish().await?;
    out.commit()
        .await
        .map_err(|e| BulkError::io(&final_path, e))?;
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
        .send_once(&Outgoing {
            with_token,
            ..Outgoing::get("download", url, &headers)
        })
        .await
    {
        Ok((_, resp)) => resp,
        Err(e @ BulkError::Network { .. }) => {
            return Ok(Attempt::Retry {
                reason: RetryReason::Network(e.brief()),
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
                sink.rewind(Cursor::default()).await?;
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
                let outcome = read_outcome(resp).await.0;
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
    // A 200 body starts at the file's first byte; a 206 continues a plain one.
    let from_start = status == 200;
    feed_body(
        client,
        url,
        sink,
        resp.bytes_stream(),
        from_start,
        use_range,
        |source| BulkError::Network {
            what: "download",
            url: url.clone(),
            source,
        },
    )
    .await
}

/// One attempt at a file in a bucket: the whole object, or from the cursor's byte offset.
async fn store_attempt(
    client: &BulkClient,
    file: &PlannedFile,
    at: &StoreLocation,
    sink: &mut LineSink<'_>,
    use_range: &mut bool,
) -> Result<Attempt, BulkError> {
    let stores = &client.inner.stores;
    let url = &file.url;
    let store = stores.store(url, at)?;
    let path = object_path(url, at)?;
    if sink.cur.src_offset > 0 && !*use_range {
        sink.rewind(Cursor::default()).await?;
    }
    let offset = sink.cur.src_offset;
    let options = GetOptions {
        range: (offset > 0).then_some(GetRange::Offset(offset)),
        ..GetOptions::default()
    };
    let object = match store.get_opts(&path, options).await {
        Ok(object) => object,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(BulkError::FileGone {
                url: url.clone(),
                status: 404,
            });
        }
        Err(
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }),
        ) => return Err(stores.error(url, at, &e)),
        Err(e) => {
            // Maybe a range the object no longer has: the next attempt reads it whole.
            if offset > 0 {
                *use_range = false;
            }
            let error = stores.error(url, at, &e);
            return Ok(Attempt::Retry {
                reason: RetryReason::Network(error.brief()),
                hint: None,
                error,
            });
        }
    };
    let body = object.into_stream();
    feed_body(client, url, sink, body, offset == 0, use_range, |e| {
        stores.error(url, at, &e)
    })
    .await
}

/// Streams a body into the sink with progress events, inflating a gzip body (see
/// [`BodyDecoder`]; `from_start`: the body starts at the file's first byte); a failure
/// mid-body is a retry.
async fn feed_body<E>(
    client: &BulkClient,
    url: &url::Url,
    sink: &mut LineSink<'_>,
    body: impl futures::Stream<Item = Result<bytes::Bytes, E>>,
    from_start: bool,
    use_range: &mut bool,
    error: impl Fn(E) -> BulkError,
) -> Result<Attempt, BulkError> {
    let mut body = std::pin::pin!(body);
    let mut decoder = BodyDecoder::new(from_start);
    let mut unreported: u64 = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                decoder.feed(sink, &bytes).await?;
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
                if decoder.is_gzip() {
                    // Offsets count inflated bytes: the next attempt starts over.
                    *use_range = false;
                }
                if unreported > 0 {
                    client.emit(BulkEvent::DownloadProgress {
                        url: url.clone(),
                        bytes: unreported,
                    });
                }
                let error = error(source);
                return Ok(Attempt::Retry {
                    reason: RetryReason::Network(error.brief()),
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
    decoder.end(sink).await?;
    sink.end().await?;
    Ok(Attempt::Done)
}

/// The first byte position of a `Content-Range: bytes a-b/n` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
