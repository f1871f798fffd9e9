//! HTTP: every request on either listener is routed to its handler and recorded.
mod fhir;
mod files;
mod kickoff;
mod respond;
mod state;
mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::Request;
use axum::http::header;
use axum::response::Response;

pub(crate) use state::State;
pub use state::{Origin, RequestRecord};

use crate::config::FileServing;
use crate::export::Level;
use crate::form;
use crate::profiles::FilePath;
use respond::not_found;

/// Entry point for every request on either listener: dispatches and records it.
pub(crate) async fn dispatch(state: Arc<State>, origin: Origin, req: Request) -> Response {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let mut response = route(&state, origin, req).await;
    state.in_flight.fetch_sub(1, Ordering::Relaxed);
    if state.behaviour.only_500 && response.status().is_server_error() {
        *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    }
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
        && state.behaviour.file_path == FilePath::Files
        && let Some(rest) = path
            .strip_prefix(&state.cfg.file_path)
            .and_then(|r| r.strip_prefix('/'))
    {
        if origin == Origin::Files
            && state.behaviour.presigned_files
            && req.headers().contains_key(header::AUTHORIZATION)
        {
            return files::presigned_with_authorization();
        }
        return files::file(state, rest, req).await;
    }
    if origin == Origin::Files {
        return not_found(&format!("No such file: {path}"));
    }
    if state.cfg.redirect_files
        && let Some(rest) = path.strip_prefix(&format!("/redirect{}/", state.cfg.file_path))
    {
        return files::redirect(state, rest, req.headers());
    }
    let base = state.cfg.base_path.as_str();
    let Some(rest) = path.strip_prefix(base).and_then(|r| {
        if base.is_empty() {
            Some(r)
        } else {
            r.strip_prefix('/')
        }
    }) else {
        return not_found(&format!("Unknown path {path}"));
    };
    let rest = rest.trim_start_matches('/');
    let segs: Vec<String> = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(form::path_segment)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query = form::pairs(req.uri().query().unwrap_or("").as_bytes());
    if let Some(id) = state.behaviour.status_path.job_id(&segs, &query) {
        return status::status(state, &id, req).await;
    }
    if state.behaviour.file_path == FilePath::ExportFileRequest && segs == ["$exportfilerequest"] {
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // `content<Type>-<n>.ndjson` names the job's file `<n>`.
        let n = param("filename")
            .and_then(|f| f.strip_suffix(".ndjson"))
            .and_then(|f| f.rsplit('-').next());
        let rest = format!("{}/{}.ndjson", param("_id").unwrap_or(""), n.unwrap_or(""));
        return files::file(state, &rest, req).await;
    }
    match segs.as_slice() {
        ["$export"] => kickoff::kickoff(state, Level::System, req).await,
        ["Patient", "$export"] => kickoff::kickoff(state, Level::Patient, req).await,
        ["Group", id, "$export"] => {
            let id = id.to_string();
            kickoff::kickoff(state, Level::Group(id), req).await
        }
        ["metadata"] => fhir::capability(state),
        [".well-known", "smart-configuration"] => fhir::smart_configuration(state),
        ["auth", "token"] => fhir::token(state, req).await,
        [ty, id] if ty.starts_with(|c: char| c.is_ascii_uppercase()) => {
            let (ty, id) = (ty.to_string(), id.to_string());
            fhir::read(state, &ty, &id, req)
        }
        _ => not_found(&format!("Unknown path {path}")),
    }
}
