//! HTTP: kick-off, status, files, SMART endpoints, fault injection and request records.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};

use crate::export::{self, BadRequest, FileKind, FileSpec, Job, Level, Plan, PlanInput};
use crate::faults::{Fault, FaultHandle, FaultTarget, FileInfo, RetryAfter};
use crate::store::{Mutation, StoreHandle, instant};
use crate::{FileServing, Origin, RequestRecord, ServerConfig};

const FHIR_JSON: &str = "application/fhir+json";
const NDJSON: &str = "application/fhir+ndjson";
/// Request bodies (Parameters, token forms) are small; anything bigger is refused.
const MAX_BODY: usize = 4 << 20;

pub(crate) struct State {
    pub cfg: ServerConfig,
    pub base_origin: String,
    pub file_origin: String,
    pub store: StoreHandle,
    pub faults: FaultHandle,
    pub requests: Arc<Mutex<Vec<RequestRecord>>>,
    pub smart: Option<crate::smart::SmartAuth>,
    pub jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl State {
    fn base_url(&self) -> String {
        format!("{}{}", self.base_origin, self.cfg.base_path)
    }
    fn token_url(&self) -> String {
        format!("{}/auth/token", self.base_url())
    }
    fn status_url(&self, job: &str) -> String {
        format!("{}/bulkstatus/{job}", self.base_url())
    }
    fn file_url(&self, job: &str, n: usize) -> String {
        if self.cfg.redirect_files {
            format!(
                "{}/redirect{}/{job}/{n}.ndjson",
                self.base_origin, self.cfg.file_path
            )
        } else {
            format!(
                "{}{}/{job}/{n}.ndjson",
                self.file_origin, self.cfg.file_path
            )
        }
    }
    fn real_file_url(&self, job: &str, n: &str) -> String {
        format!("{}{}/{job}/{n}", self.file_origin, self.cfg.file_path)
    }
    fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs.lock().ok()?.get(id).cloned()
    }
}

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

fn bad_request(e: BadRequest) -> Response {
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
fn fault_response(fault: &Fault) -> Option<Response> {
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

fn decode(seg: &str) -> String {
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// Entry point for every request on either listener: dispatches and records it.
pub(crate) async fn dispatch(state: Arc<State>, origin: Origin, req: Request) -> Response {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    let response = route(&state, origin, req).await;
    if let Ok(mut log) = state.requests.lock() {
        log.push(RequestRecord {
            method,
            origin,
            path_and_query,
            authorization,
            status: response.status().as_u16(),
        });
    }
    response
}

async fn route(state: &Arc<State>, origin: Origin, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let files_here = origin == Origin::Files || state.cfg.files == FileServing::SameOrigin;
    if files_here
        && let Some(rest) = path
            .strip_prefix(&state.cfg.file_path)
            .and_then(|r| r.strip_prefix('/'))
    {
        return file(state, rest, req).await;
    }
    if origin == Origin::Files {
        return outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!("No such file: {path}"),
        );
    }
    if state.cfg.redirect_files
        && let Some(rest) = path.strip_prefix(&format!("/redirect{}/", state.cfg.file_path))
    {
        return redirect(state, rest, req.headers());
    }
    let base = state.cfg.base_path.as_str();
    let Some(rest) = path.strip_prefix(base).and_then(|r| {
        if base.is_empty() {
            Some(r)
        } else {
            r.strip_prefix('/')
        }
    }) else {
        return outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!("Unknown path {path}"),
        );
    };
    let rest = rest.trim_start_matches('/');
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["$export"] => kickoff(state, Level::System, req).await,
        ["Patient", "$export"] => kickoff(state, Level::Patient, req).await,
        ["Group", id, "$export"] => {
            let id = id.to_string();
            kickoff(state, Level::Group(id), req).await
        }
        ["bulkstatus", id] => {
            let id = id.to_string();
            status(state, &id, req).await
        }
        ["metadata"] => capability(state),
        [".well-known", "smart-configuration"] => match &state.smart {
            Some(s) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                s.smart_configuration(&state.token_url()).to_string(),
            )
                .into_response(),
            None => outcome(
                StatusCode::NOT_FOUND,
                "error",
                "not-found",
                "This server does not use SMART authorization",
            ),
        },
        ["auth", "token"] => token(state, req).await,
        [ty, id] if ty.starts_with(|c: char| c.is_ascii_uppercase()) => {
            let (ty, id) = (ty.to_string(), id.to_string());
            read(state, &ty, &id, req)
        }
        _ => outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!("Unknown path {path}"),
        ),
    }
}

async fn token(state: &Arc<State>, req: Request) -> Response {
    let Some(smart) = state.smart.clone() else {
        return outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "This server does not use SMART authorization",
        );
    };
    if req.method() != Method::POST {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "error",
            "not-supported",
            "Use POST on the token endpoint",
        );
    }
    if let Some(f) = state.faults.take_for(&FaultTarget::Token)
        && let Some(r) = fault_response(&f)
    {
        return r;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return outcome(
                StatusCode::BAD_REQUEST,
                "error",
                "invalid",
                &format!("Cannot read the request body: {e}"),
            );
        }
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    smart.token(&state.token_url(), &parts.headers, &form)
}

fn capability(state: &Arc<State>) -> Response {
    let mut security = json!({ "service": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR" }] }] });
    if state.smart.is_some() {
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{ "url": "token", "valueUri": state.token_url() }]
        }]);
    }
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(state.store.load_time()),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "implementation": { "description": "Bulk Data test server", "url": state.base_url() },
        "rest": [{
            "mode": "server",
            "security": security,
            "resource": [
                { "type": "Patient", "operation": [{ "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export" }] },
                { "type": "Group", "operation": [{ "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export" }] }
            ],
            "operation": [{ "name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export" }]
        }]
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

fn header_values<'a>(
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

/// The answer that stops a FHIR API request before it is served: a missing or invalid
/// token (with SMART), or a fault injected for `target`.
fn refuse(state: &State, req: &Request, target: &FaultTarget) -> Option<Response> {
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

/// `GET [base]/[type]/[id]`: the current version of one resource (clients read a Group's
/// members this way).
fn read(state: &Arc<State>, ty: &str, id: &str, req: Request) -> Response {
    if *req.method() != Method::GET {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "error",
            "not-supported",
            "Only GET is supported on resources",
        );
    }
    if let Some(r) = refuse(state, &req, &FaultTarget::Read) {
        return r;
    }
    match state.store.get(ty, id) {
        Some(resource) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, FHIR_JSON)],
            resource.to_string(),
        )
            .into_response(),
        None => outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!("{ty}/{id} is not known"),
        ),
    }
}

async fn kickoff(state: &Arc<State>, level: Level, req: Request) -> Response {
    let post = match *req.method() {
        Method::GET => false,
        Method::POST => true,
        _ => {
            return outcome(
                StatusCode::METHOD_NOT_ALLOWED,
                "error",
                "not-supported",
                "Use GET or POST to start an export",
            );
        }
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
        let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "error",
                    "invalid",
                    &format!("Cannot read the request body: {e}"),
                );
            }
        };
        match parameters_body(&body) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        }
    } else {
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
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
            return outcome(
                StatusCode::NOT_FOUND,
                "error",
                "not-found",
                &format!("Group/{gid} not found"),
            );
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
    };
    // Planning may generate every resource (for `_typeFilter` on synthetic data): off the runtime.
    let (store, overlay, tx, rpf, dup, bad) = (
        input.store,
        input.overlay,
        input.transaction_time,
        input.resources_per_file,
        input.duplicates,
        input.bad_lines,
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

fn in_progress(state: &State, progress: &str) -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(progress) {
        h.insert("x-progress", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.cfg.retry_after_secs.to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    r
}

async fn status(state: &Arc<State>, id: &str, req: Request) -> Response {
    if let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(req.headers())
    {
        return r;
    }
    let method = req.method().clone();
    if method != Method::GET && method != Method::DELETE {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "error",
            "not-supported",
            "Use GET to poll or DELETE to cancel",
        );
    }
    if let Some(f) = state.faults.take_for(&FaultTarget::Status) {
        if f == Fault::DelayManifest && method == Method::GET && state.job(id).is_some() {
            return in_progress(state, "in progress (delayed)");
        }
        if let Some(r) = fault_response(&f) {
            return r;
        }
    }
    let Some(job) = state.job(id) else {
        return outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            &format!("No export job {id} (never started, or deleted)"),
        );
    };
    if method == Method::DELETE {
        job.cancelled.store(true, Ordering::Relaxed);
        if let Ok(mut jobs) = state.jobs.lock() {
            jobs.remove(id);
        }
        return outcome(
            StatusCode::ACCEPTED,
            "information",
            "informational",
            "Export job deleted",
        );
    }
    let Some(plan) = job.plan.get() else {
        let pm = job.progress.load(Ordering::Relaxed);
        return in_progress(state, &format!("planning {}%", pm / 10));
    };
    let plan = match plan {
        Ok(p) => p.clone(),
        Err(e) => {
            job.manifest_served.store(true, Ordering::Relaxed);
            return outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "fatal",
                "exception",
                &format!("Export failed: {e}"),
            );
        }
    };
    let polls = job.polls.fetch_add(1, Ordering::Relaxed);
    if polls < state.cfg.polls_before_complete {
        return in_progress(
            state,
            &format!(
                "in progress (poll {} of {})",
                polls + 1,
                state.cfg.polls_before_complete
            ),
        );
    }
    let page: usize = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    job.manifest_served.store(true, Ordering::Relaxed);
    let manifest = manifest(state, &job, &plan, page);
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        manifest.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(
        std::time::SystemTime::now() + Duration::from_secs(3600),
    )) {
        r.headers_mut().insert(header::EXPIRES, v);
    }
    r
}

fn manifest(state: &State, job: &Job, plan: &Plan, page: usize) -> Value {
    let entry = |f: &Arc<FileSpec>| json!({ "type": f.resource_type, "url": state.file_url(&job.id, f.number), "count": f.count });
    let outputs: Vec<&Arc<FileSpec>> = plan.of_kind(FileKind::Output).collect();
    let (slice, next) = if job.allow_partial {
        let size = state.cfg.manifest_page_size.max(1);
        let start = ((page - 1) * size).min(outputs.len());
        let end = (start + size).min(outputs.len());
        (&outputs[start..end], end < outputs.len())
    } else {
        (&outputs[..], false)
    };
    let last_page = !next;
    let mut m = json!({
        "transactionTime": instant(job.transaction_time),
        "request": job.request_url,
        "requiresAccessToken": state.cfg.requires_access_token,
        "output": slice.iter().map(|f| entry(f)).collect::<Vec<_>>(),
        "error": if last_page { plan.of_kind(FileKind::Error).map(entry).collect::<Vec<_>>() } else { Vec::new() },
    });
    let deleted: Vec<Value> = if last_page {
        plan.of_kind(FileKind::Deleted).map(entry).collect()
    } else {
        Vec::new()
    };
    if !deleted.is_empty() {
        m["deleted"] = Value::Array(deleted);
    }
    if next {
        m["link"] = json!([{ "relation": "next", "url": format!("{}?page={}", state.status_url(&job.id), page + 1) }]);
    }
    m
}

fn redirect(state: &Arc<State>, rest: &str, headers: &HeaderMap) -> Response {
    if state.cfg.requires_access_token
        && let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(headers)
    {
        return r;
    }
    let Some((job, file)) = rest.split_once('/') else {
        return outcome(StatusCode::NOT_FOUND, "error", "not-found", "No such file");
    };
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&state.real_file_url(job, file)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
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

async fn file(state: &Arc<State>, rest: &str, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "error",
            "not-supported",
            "Use GET to download files",
        );
    }
    if state.cfg.requires_access_token
        && let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(req.headers())
    {
        return r;
    }
    let not_found = || {
        outcome(
            StatusCode::NOT_FOUND,
            "error",
            "not-found",
            "No such file (unknown or deleted export)",
        )
    };
    let Some((job_id, name)) = rest.split_once('/') else {
        return not_found();
    };
    let Some(n) = name
        .strip_suffix(".ndjson")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return not_found();
    };
    let Some(job) = state.job(job_id) else {
        return not_found();
    };
    let Some(Ok(plan)) = job.plan.get() else {
        return not_found();
    };
    let Some(spec) = plan.files.get(n).cloned() else {
        return not_found();
    };

    let fault = state.faults.take_for_file(&FileInfo {
        index: spec.output_index,
        resource_type: &spec.resource_type,
    });
    if let Some(f) = &fault
        && let Some(r) = fault_response(f)
    {
        return r;
    }
    let headers = req.headers();
    let range_header = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
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
    let gzip = range.is_none() && range_header.is_none() && accepts_gzip(headers);
    let mut builder = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::ACCEPT_RANGES, "bytes")
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
    if gzip {
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

pub(crate) type BodyChunk = Result<Bytes, std::io::Error>;

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
        fn range_is_within_the_body(h in "\\PC{0,20}", len in 1u64..10_000) {
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

        #[test]
        fn parameters_bodies_never_panic(s in "\\PC{0,200}") {
            let _ = parameters_body(s.as_bytes());
        }
    }
}
