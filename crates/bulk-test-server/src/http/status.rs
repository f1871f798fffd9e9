//! The status URL: 202 with `X-Progress` and `Retry-After` while a job runs, the manifest
//! (in pages when the client allows partial manifests) once it is done, `DELETE` to cancel.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::respond::{apply_token_fault, fault_response, method_not_allowed, not_found, outcome};
use super::state::State;
use crate::export::{FileKind, FileSpec, Job, Plan};
use crate::faults::{Fault, FaultTarget};
use crate::form;
use crate::profiles::DeletedArray;
use crate::resource::instant;

fn in_progress(state: &State, progress: &str) -> Response {
    let mut r = StatusCode::ACCEPTED.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(progress) {
        h.insert("x-progress", v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.retry_after().to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    r
}

pub(super) async fn status(state: &Arc<State>, id: &str, req: Request) -> Response {
    let fault = state.faults.take_for(&FaultTarget::Status);
    apply_token_fault(state, fault.as_ref());
    if let Some(smart) = &state.smart
        && let Err(r) = smart.check_bearer(req.headers())
    {
        return r;
    }
    let method = req.method().clone();
    if method != Method::GET && method != Method::DELETE {
        return method_not_allowed("Use GET to poll or DELETE to cancel");
    }
    if let Some(f) = fault {
        if f == Fault::DelayManifest && method == Method::GET && state.job(id).is_some() {
            return in_progress(state, "in progress (delayed)");
        }
        if f == Fault::ExpireJob {
            state.expire_job(id);
        }
        if let Some(r) = fault_response(&f) {
            return r;
        }
    }
    let Some(job) = state.job(id) else {
        let cancelled = state.cancelled.lock().is_ok_and(|c| c.contains(id));
        if cancelled {
            let code = state.behaviour.cancelled_status;
            return outcome(
                code,
                "error",
                "not-found",
                &format!("Export job {id} was cancelled"),
            );
        }
        return not_found(&format!("No export job {id} (never started, or deleted)"));
    };
    if method == Method::DELETE {
        job.cancelled.store(true, Ordering::Relaxed);
        if let Ok(mut jobs) = state.jobs.lock() {
            jobs.remove(id);
        }
        if let Ok(mut cancelled) = state.cancelled.lock() {
            cancelled.insert(id.to_string());
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
    let page: usize = form::pairs(req.uri().query().unwrap_or("").as_bytes())
        .into_iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let stored = match &state.outputs {
        Some(outputs) => {
            let uploaded = job
                .uploaded
                .get_or_init(|| outputs.upload(&job.id, &plan.files))
                .await;
            match uploaded {
                Ok(urls) => Some(urls.clone()),
                Err(e) => {
                    return outcome(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "fatal",
                        "exception",
                        &format!("Export failed: {e}"),
                    );
                }
            }
        }
        None => None,
    };
    job.manifest_served.store(true, Ordering::Relaxed);
    let manifest = manifest(state, &job, &plan, page, stored.as_deref());
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

/// `stored`: the files' URLs in the output store, by file number, when they were written there.
fn manifest(
    state: &State,
    job: &Job,
    plan: &Plan,
    page: usize,
    stored: Option<&[String]>,
) -> Value {
    let url = |f: &FileSpec| match stored.and_then(|urls| urls.get(f.number)) {
        Some(u) => u.clone(),
        None => state.file_url(&job.id, f.number, &f.resource_type),
    };
    let entry =
        |f: &Arc<FileSpec>| json!({ "type": f.resource_type, "url": url(f), "count": f.count });
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
        // Files in a bucket need the bucket's credentials, not the FHIR server's token.
        "requiresAccessToken": state.cfg.requires_access_token && stored.is_none(),
        "output": slice.iter().map(|f| entry(f)).collect::<Vec<_>>(),
    });
    if job.system_level
        && !state.behaviour.system_manifest_request
        && let Some(m) = m.as_object_mut()
    {
        m.remove("request");
    }
    if state.behaviour.manifest_status {
        m["status"] = json!("completed");
    }
    if state.behaviour.error_array {
        m["error"] = if last_page {
            plan.of_kind(FileKind::Error).map(entry).collect()
        } else {
            Value::Array(Vec::new())
        };
    }
    let deleted: Vec<Value> = if last_page {
        plan.of_kind(FileKind::Deleted).map(entry).collect()
    } else {
        Vec::new()
    };
    match state.behaviour.deleted {
        DeletedArray::WhenAny if !deleted.is_empty() => m["deleted"] = Value::Array(deleted),
        DeletedArray::AlwaysEmpty => m["deleted"] = json!([]),
        DeletedArray::WhenAny | DeletedArray::Never => {}
    }
    if next {
        let status_url = state.status_url(&job.id);
        let sep = if status_url.contains('?') { '&' } else { '?' };
        m["link"] =
            json!([{ "relation": "next", "url": format!("{status_url}{sep}page={}", page + 1) }]);
    }
    m
}
