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

/// The `Retry-After` value of a 429 (`None`: no header).
fn retry_after_value(ra: RetryAfter) -> Option<String> {
    Some(match ra {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::HttpDate(s) => {
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(s))
        }
        RetryAfter::EpochTimestamp(s) => (Utc::now().timestamp() + s as i64).to_string(),
        RetryAfter::EpochMillis(s) => (Utc::now().timestamp_millis() + 1000 * s as i64).to_string(),
        RetryAfter::FractionalMillis(ms) => format!("{}.{:03}", ms / 1000, ms % 1000),
        RetryAfter::Absent => return None,
        RetryAfter::Invalid => "soon".to_string(),
    })
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
            if let Some(Ok(v)) = retry_after_value(*ra).map(|v| HeaderValue::from_str(&v)) {
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
        Fault::PlainStatus { status } => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        _ => return None,
    })
}

/// Applies a fault that acts on the server's tokens rather than on the response (with SMART
/// auth on): the request's bearer check then refuses it.
pub(super) fn apply_token_fault(state: &State, fault: Option<&Fault>) {
    match (fault, &state.smart) {
        (Some(Fault::ExpireTokens), Some(smart)) => smart.expire_all_tokens(),
        (Some(Fault::RevokeTokens), Some(smart)) => smart.revoke_all_tokens(),
        _ => {}
    }
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
    let fault = state.faults.take_for(target);
    apply_token_fault(state, fault.as_ref());
    if let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(req.headers())
    {
        return Some(r);
    }
    fault.and_then(|f| fault_response(&f))
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
