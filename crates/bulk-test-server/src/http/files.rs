//! Output files: `GET`/`HEAD` with gzip on request and `Range` (never both), injected faults
//! per file, and the redirecting file URLs.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use base64::Engine;

use super::respond::{
    FHIR_JSON, apply_token_fault, fault_response, header_values, method_not_allowed, not_found,
    outcome,
};
use super::state::State;
use crate::faults::{Fault, FileInfo};
use crate::profiles::FileAccept;

const NDJSON: &str = "application/fhir+ndjson";

pub(super) fn redirect(state: &Arc<State>, rest: &str, headers: &HeaderMap) -> Response {
    if state.cfg.requires_access_token
        && let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(headers)
    {
        return r;
    }
    let Some((job, file)) = rest.split_once('/') else {
        return not_found("No such file");
    };
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&state.real_file_url(job, file)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// What a pre-signed URL's store answers to a request that also carries an `Authorization`
/// header (an S3-style error: one authentication mechanism at a time).
pub(super) fn presigned_with_authorization() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>\
         <Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
         Signature query string parameter or the Authorization header should be specified\
         </Message></Error>",
    )
        .into_response()
}

/// The file as a FHIR `Binary` resource with the NDJSON base64-encoded in `data`, as servers
/// that keep export files as `Binary` answer without `Accept: application/fhir+ndjson`.
async fn binary(spec: Arc<crate::export::FileSpec>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        spec.render(&mut |b| {
            body.extend_from_slice(b);
            true
        });
        body
    })
    .await;
    let Ok(body) = rendered else {
        return outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fatal",
            "exception",
            "Cannot render the file",
        );
    };
    let resource = serde_json::json!({
        "resourceType": "Binary",
        "contentType": NDJSON,
        "data": base64::engine::general_purpose::STANDARD.encode(body),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        resource.to_string(),
    )
        .into_response()
}

/// `Range: bytes=a-b | a- | -n` against a body of `len` bytes: `Ok(None)` = no usable range
/// header (serve all), `Err(())` = unsatisfiable.
fn parse_range(h: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multipart ranges are not needed by download clients; serve the whole body.
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ())?;
            let end: u64 = if b.is_empty() {
                len.saturating_sub(1)
            } else {
                b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
            };
            (start, end)
        }
        (true, true) => return Ok(None),
    };
    if range.0 >= len || range.0 > range.1 {
        return Err(());
    }
    Ok(Some(range))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    header_values(headers, header::ACCEPT_ENCODING).any(|v| {
        let mut parts = v.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q0 = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
        (coding == "gzip" || coding == "x-gzip") && !q0
    })
}

pub(super) async fn file(state: &Arc<State>, rest: &str, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return method_not_allowed("Use GET to download files");
    }
    let not_found = || not_found("No such file (unknown or deleted export)");
    let Some((job_id, name)) = rest.split_once('/') else {
        return not_found();
    };
    let n = name
        .strip_suffix(".ndjson")
        .and_then(|n| n.parse::<usize>().ok());
    let stored_gzip = state.job(job_id).is_some_and(|j| j.gzip_files);
    let spec = n
        .zip(state.job(job_id))
        .and_then(|(n, job)| job.plan.get()?.as_ref().ok()?.files.get(n).cloned());
    // The file's fault is drawn before the token check, so that a fault on the tokens can
    // make the check fail.
    let fault = spec.as_ref().and_then(|spec| {
        state.faults.take_for_file(&FileInfo {
            index: spec.output_index,
            resource_type: &spec.resource_type,
        })
    });
    if state.cfg.requires_access_token && !state.behaviour.presigned_files {
        apply_token_fault(state, fault.as_ref());
        if let Some(smart) = &state.smart
            && let Err(r) = smart.check_bearer(req.headers())
        {
            return r;
        }
    }
    let (Some(n), Some(spec)) = (n, spec) else {
        return not_found();
    };
    match state.behaviour.file_accept {
        FileAccept::Any => {}
        _ if header_values(req.headers(), header::ACCEPT).any(|v| v.starts_with(NDJSON)) => {}
        FileAccept::NdjsonOnly => {
            return outcome(
                StatusCode::NOT_ACCEPTABLE,
                "error",
                "not-supported",
                "Export files are served only with Accept: application/fhir+ndjson",
            );
        }
        FileAccept::BinaryUnlessNdjson => return binary(spec).await,
    }
    if fault == Some(Fault::ExpireJob) {
        state.expire_job(job_id);
        return not_found();
    }
    if let Some(f) = &fault
        && let Some(r) = fault_response(f)
    {
        return r;
    }
    let headers = req.headers();
    // Stored gzip files are served whole: their bytes are not the lines'.
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|_| !stored_gzip);
    let needs_len = range_header.is_some()
        || head
        || matches!(fault, Some(Fault::Truncate { chunked: false, .. }));
    let len = match spec.len.get() {
        Some(l) => Some(*l),
        None if needs_len => {
            let s = spec.clone();
            match tokio::task::spawn_blocking(move || s.length()).await {
                Ok(l) => Some(l),
                Err(e) => {
                    return outcome(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "fatal",
                        "exception",
                        &format!("Cannot size the file: {e}"),
                    );
                }
            }
        }
        None => None,
    };
    let mut range = None;
    if let (Some(h), Some(len)) = (&range_header, len) {
        match parse_range(h, len) {
            Ok(r) => range = r,
            Err(()) => {
                let mut r = outcome(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "error",
                    "invalid",
                    &format!("Range {h:?} is outside the file ({len} bytes)"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        }
    }
    // Ranges address the identity body, so a range request is never compressed.
    let gzip = stored_gzip || (range.is_none() && range_header.is_none() && accepts_gzip(headers));
    let mut builder = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(
            header::CONTENT_TYPE,
            if stored_gzip {
                "application/gzip"
            } else {
                NDJSON
            },
        )
        .header(
            header::ACCEPT_RANGES,
            if stored_gzip { "none" } else { "bytes" },
        )
        .header(header::ETAG, format!("\"{job_id}-{n}\""))
        .header(header::VARY, "Accept-Encoding");
    let body_len = match (range, len) {
        (Some((a, b)), Some(total)) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{total}"));
            Some(b - a + 1)
        }
        (None, l) if !gzip => l,
        _ => None,
    };
    if gzip && !stored_gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
    }
    let chunked_fault = matches!(fault, Some(Fault::Truncate { chunked: true, .. }));
    if let Some(l) = body_len
        && !chunked_fault
    {
        builder = builder.header(header::CONTENT_LENGTH, l);
    }
    if head {
        return builder
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let stream = crate::body::stream(spec, range, gzip, fault);
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn range_forms() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=x-3", 100), Err(()));
        assert_eq!(parse_range("items=0-3", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
    }

    proptest! {
        #[test]
        fn range_is_within_the_body(
            h in prop_oneof!["bytes= ?[0-9]{0,5} ?- ?[0-9]{0,5}", "\\PC{0,20}"],
            len in 1u64..10_000,
        ) {
            if let Ok(Some((a, b))) = parse_range(&h, len) {
                prop_assert!(a <= b && b < len);
            }
        }

        #[test]
        fn explicit_ranges_are_honoured(len in 1u64..10_000, a in 0u64..10_000, n in 0u64..10_000) {
            let h = format!("bytes={a}-{}", a + n);
            match parse_range(&h, len) {
                Ok(Some((s, e))) => {
                    prop_assert_eq!(s, a);
                    prop_assert_eq!(e, (a + n).min(len - 1));
                }
                Err(()) => prop_assert!(a >= len),
                Ok(None) => prop_assert!(false, "valid header ignored"),
            }
        }
    }
}
