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
use crate::config::PatientParameter;
use crate::export::{self, BadRequest, Job, JobKey, Level, PlanInput};
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
        Method::GET if state.behaviour.post_only => {
            return method_not_allowed("Start an export with POST and a Parameters body");
        }
        Method::GET => false,
        Method::POST => true,
        _ => return method_not_allowed("Use GET or POST to start an export"),
    };
    if let Some(r) = refuse(state, &req, &FaultTarget::KickOff) {
        return r;
    }
    if !state.behaviour.levels.allows(&level) {
        let what = match &level {
            Level::System => "system",
            Level::Patient => "Patient",
            Level::Group(_) => "Group",
        };
        return outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "not-supported",
            &format!("This server does not support {what}-level export"),
        );
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
    if let Some(r) = refused_parameters(state, &level, &params) {
        return r;
    }
    let params = with_until_named(state, params);
    let request = match export::parse_request(level.clone(), &params, lenient, post) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if state.behaviour.hang_without_type && request.types.is_none() {
        // Never answers while the server runs, like a server that tries to export everything.
        let mut stopping = state.stopping.clone();
        let _ = stopping.wait_for(|stop| *stop).await;
        return outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "error",
            "transient",
            "The server is stopping",
        );
    }
    let key = JobKey {
        request: format!("{level:?} {params:?}"),
        client: client_of(state, &headers),
        group: match &level {
            Level::Group(g) => Some(g.clone()),
            _ => None,
        },
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
    state.purge_expired();
    let no_cache = header_values(&headers, header::CACHE_CONTROL).any(|v| v == "no-cache");
    let job = {
        let Ok(mut jobs) = state.jobs.lock() else {
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fatal",
                "exception",
                "job table unavailable",
            );
        };
        if state.behaviour.reuse_jobs
            && !no_cache
            && let Some(earlier) = jobs.values().find(|j| j.key == key)
        {
            return accepted(state, &earlier.id);
        }
        if state.behaviour.one_export_at_a_time && jobs.values().any(|j| j.in_progress()) {
            return outcome(
                StatusCode::BAD_REQUEST,
                "error",
                "throttled",
                "Another export job is in progress; only one may run at a time",
            );
        }
        if state.behaviour.one_job_per_client_group
            && key.group.is_some()
            && jobs
                .values()
                .any(|j| j.key.client == key.client && j.key.group == key.group)
        {
            return too_many(
                state,
                "Request not allowed: this client already has an export of this Group; \
                 delete it first",
            );
        }
        let active = jobs.values().filter(|j| j.in_progress()).count();
        if active >= state.cfg.max_concurrent_jobs {
            return too_many(
                state,
                &format!("{active} exports are already in progress; retry later or cancel one"),
            );
        }
        let tx = state.store.inner.clock.tick();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let job = Arc::new(Job::new(id.clone(), request_url, tx, &request, key));
        jobs.insert(id, job.clone());
        job
    };
    let injected = state.faults.take_duplicate_ids();
    let repeated = state
        .behaviour
        .repeated_resources
        .filter(|_| level != Level::System);
    let input = PlanInput {
        store: state.store.inner.clone(),
        overlay,
        req: &request,
        transaction_time: job.transaction_time,
        resources_per_file: state.cfg.resources_per_file,
        duplicates: injected.or(repeated),
        bad_lines: state.faults.take_bad_lines(),
        unreadable: state.faults.take_unreadable(),
        without_last_updated: state.behaviour.without_last_updated,
        identical_copies: injected.is_none() && repeated.is_some(),
    };
    // Planning may generate every resource (for `_typeFilter` on synthetic data): off the runtime.
    let (store, overlay, tx, rpf, dup, bad, unreadable, no_last_updated, identical) = (
        input.store,
        input.overlay,
        input.transaction_time,
        input.resources_per_file,
        input.duplicates,
        input.bad_lines,
        input.unreadable,
        input.without_last_updated,
        input.identical_copies,
    );
    let planned_job = job.clone();
    let clock_store = store.clone();
    // An injected failure is recorded before the kick-off answers, so no poll can see the job
    // in progress first.
    if state.faults.take_fail_job() {
        let _ = planned_job.plan.set(Err(
            "the export failed on the server (injected fault)".into()
        ));
        let _ = planned_job.completed_at.set(clock_store.clock.now());
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
            without_last_updated: no_last_updated,
            identical_copies: identical,
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
        let _ = planned_job.completed_at.set(clock_store.clock.now());
    });
    accepted(state, &job.id)
}

/// 202 with the job's status URL.
fn accepted(state: &State, job: &str) -> Response {
    let mut r = outcome(
        StatusCode::ACCEPTED,
        "information",
        "informational",
        "Export started",
    );
    if let Ok(v) = HeaderValue::from_str(&state.status_url(job)) {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    r
}

/// 429 with `Retry-After`.
fn too_many(state: &State, text: &str) -> Response {
    let mut r = outcome(StatusCode::TOO_MANY_REQUESTS, "error", "too-costly", text);
    if let Ok(v) = HeaderValue::from_str(&state.retry_after().to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The 400 for parameters the profile (or the `patient` setting) refuses, if any is given.
fn refused_parameters(
    state: &State,
    level: &Level,
    params: &[(String, String)],
) -> Option<Response> {
    let patient_here = match (state.cfg.patient_parameter, level) {
        (PatientParameter::PatientAndGroup, _) => true,
        (PatientParameter::PatientLevelOnly, Level::Patient) => true,
        (PatientParameter::PatientLevelOnly, _) | (PatientParameter::Refused, _) => false,
    };
    if !patient_here && params.iter().any(|(k, _)| k == "patient") {
        let at = match level {
            Level::Group(_) => "in a Group-level export",
            _ => "by this server",
        };
        return Some(outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "not-supported",
            &format!("The patient parameter is not supported {at}"),
        ));
    }
    let b = &state.behaviour;
    if let Some((name, _)) = params
        .iter()
        .find(|(k, _)| b.refused_params.contains(&k.as_str()))
    {
        return Some(outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "not-supported",
            &format!("The {name} parameter is not supported by this server"),
        ));
    }
    if !b.gzip_output_format
        && params
            .iter()
            .any(|(k, v)| k == "_outputFormat" && v == crate::export::GZIP_NDJSON)
    {
        return Some(outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "not-supported",
            "_outputFormat \"application/fhir+ndjson+gzip\" is not supported; use application/fhir+ndjson",
        ));
    }
    if b.strict_since
        && let Some((_, since)) = params.iter().find(|(k, _)| k == "_since")
        && !has_seconds_and_zone(since)
    {
        return Some(outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            &format!("_since {since:?} must have seconds and a timezone (2024-01-31T12:00:00Z)"),
        ));
    }
    if b.single_type_param && params.iter().filter(|(k, _)| k == "_type").count() > 1 {
        return Some(outcome(
            StatusCode::BAD_REQUEST,
            "error",
            "invalid",
            "_type may be given once; join several types with commas",
        ));
    }
    None
}

/// `YYYY-MM-DDThh:mm:ss[.f]` followed by `Z` or `±hh:mm`.
fn has_seconds_and_zone(v: &str) -> bool {
    let Some((_, time)) = v.split_once('T') else {
        return false;
    };
    let zone_at = time.find(['Z', '+', '-']);
    let (clock, zone) = match zone_at {
        Some(i) => time.split_at(i),
        None => return false,
    };
    clock.split(':').count() == 3 && (zone == "Z" || zone.len() == 6)
}

/// The kick-off parameters with the profile's name for `_until` read as `_until`.
fn with_until_named(state: &State, params: Vec<(String, String)>) -> Vec<(String, String)> {
    let name = state.behaviour.until_param;
    if name == "_until" {
        return params;
    }
    params
        .into_iter()
        .map(|(k, v)| {
            if k == name {
                ("_until".into(), v)
            } else {
                (k, v)
            }
        })
        .collect()
}

/// The client the request's bearer token was issued to (with SMART auth on).
fn client_of(state: &State, headers: &axum::http::HeaderMap) -> Option<String> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    state.smart.as_ref()?.token_client(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strict_instants_have_seconds_and_a_zone() {
        for ok in [
            "2024-01-31T12:00:00Z",
            "2024-01-31T12:00:00.123+01:00",
            "2024-01-31T12:00:00-05:00",
        ] {
            assert!(has_seconds_and_zone(ok), "{ok}");
        }
        for refused in [
            "2024-01-31",
            "2024-01-31T12:00",
            "2024-01-31T12:00:00",
            "2024-01-31T12:00Z",
            "2024-01-31T12:00:00+01",
        ] {
            assert!(!has_seconds_and_zone(refused), "{refused}");
        }
    }

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
