//! The FHIR and SMART endpoints besides exports: the CapabilityStatement, resource reads,
//! `.well-known/smart-configuration` and the token endpoint.
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::respond::{FHIR_JSON, fault_response, method_not_allowed, not_found, read_body, refuse};
use super::state::State;
use crate::faults::FaultTarget;
use crate::form;
use crate::resource::instant;

const NO_SMART: &str = "This server does not use SMART authorization";

/// `GET [base]/.well-known/smart-configuration`.
pub(super) fn smart_configuration(state: &State) -> Response {
    match &state.smart {
        Some(s) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            s.smart_configuration(&state.token_url()).to_string(),
        )
            .into_response(),
        None => not_found(NO_SMART),
    }
}

/// `POST [base]/auth/token`.
pub(super) async fn token(state: &Arc<State>, req: Request) -> Response {
    let Some(smart) = state.smart.clone() else {
        return not_found(NO_SMART);
    };
    if req.method() != Method::POST {
        return method_not_allowed("Use POST on the token endpoint");
    }
    if let Some(f) = state.faults.take_for(&FaultTarget::Token)
        && let Some(r) = fault_response(&f)
    {
        return r;
    }
    if state.token_fails() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    smart.token(&state.token_url(), &parts.headers, &form::pairs(&body))
}

/// `GET [base]/metadata`.
pub(super) fn capability(state: &Arc<State>) -> Response {
    let mut security = json!({ "service": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR" }] }] });
    if state.smart.is_some() {
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{ "url": "token", "valueUri": state.token_url() }]
        }]);
    }
    let levels = state.behaviour.levels;
    let export_op = |kind: &str| json!([{ "name": "export", "definition": format!("http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{kind}") }]);
    let mut resources = Vec::new();
    if levels.patient {
        resources.push(json!({ "type": "Patient", "operation": export_op("patient-export") }));
    }
    if levels.group {
        resources.push(json!({ "type": "Group", "operation": export_op("group-export") }));
    }
    let mut rest = json!({ "mode": "server", "security": security, "resource": resources });
    if levels.system {
        rest["operation"] = export_op("export");
    }
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(state.store.load_time()),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": { "name": state.behaviour.software },
        "implementation": { "description": "Bulk Data test server", "url": state.base_url() },
        "rest": [rest]
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, FHIR_JSON)],
        body.to_string(),
    )
        .into_response()
}

/// `GET [base]/[type]/[id]`: the current version of one resource (clients read a Group's
/// members this way).
pub(super) fn read(state: &Arc<State>, ty: &str, id: &str, req: Request) -> Response {
    if *req.method() != Method::GET {
        return method_not_allowed("Only GET is supported on resources");
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
        None => not_found(&format!("{ty}/{id} is not known")),
    }
}
