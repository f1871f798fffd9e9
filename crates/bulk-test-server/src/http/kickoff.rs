//! `$export` kick-off: the request checked (headers, parameters from the query or a
//! `Parameters` body), a job started unless too many are running, and planning begun off the
//! runtime.
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use super::respond::{
    FHIR_JSON, bad_request, header_values, method_not_allowed, not_found, outcome, read_body,
    refuse,
};
use super::state::State;
use crate::export::{self, BadRequest, Job, Level, PlanInput};
use crate::faults::FaultTarget;
use crate::form;
use crate::store::Mutation;

/// Parameters of a POST kick-off's `Parameters` body as (name, value) pairs.
fn parameters_body(body: &[u8]) -> Result<Vec<(String, String)>, BadRequest> {
    let err = |m: String| BadRequest {
        code: "invalid",
        message: m,
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| err(format!("The request body is not valid JSON: {e}")))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(err(
            "The request body must be a FHIR Parameters resource".into()
        ));
    }
    let mut out = Vec::new();
    for p in v
        .get("parameter")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| err("Every Parameters.parameter needs a name".into()))?;
        let obj = p
            .as_object()
            .ok_or_else(|| err("Parameters.parameter must be objects".into()))?;
        let value = obj
            .iter()
            .find(|(k, _)| k.starts_with("value"))
            .map(|(k, v)| (k.as_str(), v));
        let value = match value {
            Some(("valueReference", r)) => r
                .get("reference")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    err(format!(
                        "Parameter {name:?}: valueReference without reference"
                    ))
                })?
                .to_string(),
            Some((_, Value::String(s))) => s.clone(),
            Some((_, Value::Bool(b))) => b.to_string(),
            Some((_, Value::Number(n))) => n.to_string(),
            _ => return Err(err(format!("Parameter {name:?} has no supported value[x]"))),
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

pub(super) async fn kickoff(state: &Arc<State>, level: Level, req: Request) -> Response {
    let post = match *req.method() {
        Method::GET => false,
        Method::POST => true,
        _ => return method_not_allowed("Use GET or POST to start an export"),
    };
    if let Some(r) = refuse(state, &req, &FaultTarget::KickOff) {
        return r;
    }
    let headers = req.headers().clone();
    if !header_values(&headers, header::ACCEPT).any(|v| v.starts_with(FHIR_JSON)) {
        return outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            "The Accept header must be application/fhir+json",
        );
    }
    let prefer: Vec<String> =
        header_values(&headers, header::HeaderName::from_static("prefer")).collect();
    if !prefer.iter().any(|p| p == "respond-async") {
        return outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            "The Prefer header must include respond-async",
        );
    }
    let lenient = prefer.iter().any(|p| p == "handling=lenient");
    let request_url = format!(
        "{}{}",
        state.base_origin,
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
    );
    let params: Vec<(String, String)> = if post {
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        match parameters_body(&body) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        }
    } else {
        form::pairs(req.uri().query().unwrap_or("").as_bytes())
    };
    let request = match export::parse_request(level.clone(), &params, lenient, post) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let overlay = state.store.snapshot();
    if let Level::Group(gid) = &level {
        let exists = match overlay.get(&("Group".to_string(), gid.clone())) {
            Some(Mutation::Upsert { .. }) => true,
            Some(Mutation::Delete { .. }) => false,
            None => state.store.inner.base.group_members(gid).is_some(),
        };
        if !exists {
            return not_found(&format!("Group/{gid} not found"));
        }
    }
    let job = {
        let Ok(mut jobs) = state.jobs.lock() else {
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fatal",
                "exception",
                "job table unavailable",
            );
        };
        let active = jobs.values().filter(|j| j.in_progress()).count();
        if active >= state.cfg.max_concurrent_jobs {
            let mut r = outcome(
                StatusCode::TOO_MANY_REQUESTS,
                "error",
                "too-costly",
                &format!("{active} exports are already in progress; retry later or cancel one"),
            );
            if let Ok(v) = HeaderValue::from_str(&state.cfg.retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
        let tx = state.store.inner.clock.tick();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let job = Arc::new(Job::new(id.clone(), request_url, tx, request.allow_partial));
        jobs.insert(id, job.clone());
        job
    };
    let input = PlanInput {
        store: state.store.inner.clone(),
        overlay,
        req: &request,
        transaction_time: job.transaction_time,
        resources_per_file: state.cfg.resources_per_file,
        duplicates: state.faults.take_duplicate_ids(),
        bad_lines: state.faults.take_bad_lines(),
        unreadable: state.faults.take_unreadable(),
    };
    // Planning may generate every resource (for `_typeFilter` on synthetic data): off the runtime.
    let (store, overlay, tx, rpf, dup, bad, unreadable) = (
        input.store,
        input.overlay,
        input.transaction_time,
        input.resources_per_file,
        input.duplicates,
        input.bad_lines,
        input.unreadable,
    );
    let planned_job = job.clone();
    // An injected failure is recorded before the kick-off answers, so no poll can see the job
    // in progress first.
    if state.faults.take_fail_job() {
        let _ = planned_job.plan.set(Err(
            "the export failed on the server (injected fault)".into()
        ));
    }
    tokio::task::spawn_blocking(move || {
        if planned_job.plan.get().is_some() {
            return;
        }
        let input = PlanInput {
            store,
            overlay,
            req: &request,
            transaction_time: tx,
            resources_per_file: rpf,
            duplicates: dup,
            bad_lines: bad,
            unreadable,
        };
        let result = export::plan(input, &planned_job).map(|p| {
            for f in &p.files {
                f.quick_length();
            }
            Arc::new(p)
        });
        if let Err(e) = &result {
            tracing::warn!(job = %planned_job.id, error = %e, "export failed");
        }
        let _ = planned_job.plan.set(result);
    });
    let mut r = outcome(
        StatusCode::ACCEPTED,
        "information",
        "informational",
        "Export started",
    );
    if let Ok(v) = HeaderValue::from_str(&state.status_url(&job.id)) {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A body is a FHIR Parameters resource (or blank), or it is refused with a reason.
        #[test]
        fn parameters_bodies_are_parameters_or_refused(s in "\\PC{0,200}") {
            match parameters_body(s.as_bytes()) {
                Ok(pairs) => {
                    if s.bytes().all(|b| b.is_ascii_whitespace()) {
                        prop_assert!(pairs.is_empty());
                    } else {
                        let v: Value = serde_json::from_str(&s).unwrap();
                        prop_assert_eq!(v["resourceType"].as_str(), Some("Parameters"));
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e.code, "invalid");
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}
