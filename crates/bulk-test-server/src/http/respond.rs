//! Responses shared by the handlers: OperationOutcomes, injected faults, refusals, and the
//! reading of request headers and bodies.
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::state::State;
use crate::export::BadRequest;
use crate::faults::{Fault, FaultTarget, RetryAfter};

pub(super) const FHIR_JSON: &str = "application/fhir+json";
/// Request bodies (Parameters, token forms) are small; anything bigger is refused.
const MAX_BODY: usize = 4 << 20;

/// An OperationOutcome response.
pub(crate) fn outcome(status: StatusCode, severity: &str, code: &str, text: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": severity, "code": code, "diagnostics": text }]
    });
    (
        status,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// 404 with an OperationOutcome saying what was not found.
pub(super) fn not_found(text: &str) -> Response {
    outcome(StatusCode::NOT_FOUND, "error", "not-found", text)
}

/// 405 with an OperationOutcome saying what to use instead.
pub(super) fn method_not_allowed(text: &str) -> Response {
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "error",
        "not-supported",
        text,
    )
}

pub(super) fn bad_request(e: BadRequest) -> Response {
    outcome(StatusCode::BAD_REQUEST, "error", e.code, &e.message)
}

fn retry_after_value(ra: RetryAfter) -> String {
    match ra {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::HttpDate(s) => {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(s))
        }
        RetryAfter::EpochTimestamp(s) => (Utc::now().timestamp() + s as i64).to_string(),
    }
}

/// The response for a fault that replaces the whole response, if it is one.
pub(super) fn fault_response(fault: &Fault) -> Option<Response> {
    Some(match fault {
        Fault::TooManyRequests(ra) => {
            let mut r = outcome(
                StatusCode::TOO_MANY_REQUESTS,
                "error",
                "throttled",
                "Too many requests; retry later",
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_value(*ra)) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Fault::Transient { status } => outcome(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "error",
            "transient",
            "The server is temporarily unable to handle the request",
        ),
        Fault::Fatal { status } => outcome(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "fatal",
            "exception",
            "Internal server error",
        ),
        Fault::Gone { status } => outcome(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::GONE),
            "error",
            "not-found",
            "The file is no longer available",
        ),
        _ => return None,
    })
}

pub(super) fn header_values<'a>(
    headers: &'a HeaderMap,
    name: header::HeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
}

/// The answer that stops a FHIR API request before it is served: a missing or invalid
/// token (with SMART), or a fault injected for `target`.
pub(super) fn refuse(state: &State, req: &Request, target: &FaultTarget) -> Option<Response> {
    if let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(req.headers())
    {
        return Some(r);
    }
    state
        .faults
        .take_for(target)
        .and_then(|f| fault_response(&f))
}

/// The whole request body, or the 400 to answer when it cannot be read.
pub(super) async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            &format!("Cannot read the request body: {e}"),
        )
    })
}
