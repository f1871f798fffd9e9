//! Helpers for FHIR resources as the server stores and serves them: instants, ids, the
//! patient a resource belongs to, Group members and `meta`.
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// FHIR instant with millisecond precision, as servers write `meta.lastUpdated`.
pub(crate) fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A FHIR instant (RFC 3339 with a zone) as UTC.
pub(crate) fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Reference fields that put a resource in a patient's compartment.
const PATIENT_REF_FIELDS: &[&str] = &["subject", "patient", "beneficiary", "individual"];

/// The patient id a reference string points to, for `Patient/x` and `urn:uuid:x` forms.
pub(crate) fn ref_id(reference: &str) -> Option<(&'static str, &str)> {
    if let Some(id) = reference.strip_prefix("Patient/") {
        return Some(("Patient", id.split('/').next().unwrap_or(id)));
    }
    if let Some(id) = reference.strip_prefix("urn:uuid:") {
        return Some(("", id));
    }
    // Absolute references: ".../Patient/x"
    if let Some(pos) = reference.rfind("/Patient/") {
        let id = &reference[pos + 9..];
        return Some(("Patient", id.split('/').next().unwrap_or(id)));
    }
    None
}

/// Candidate patient id of a resource (its own id for a Patient).
pub(crate) fn patient_candidate(v: &Value) -> Option<String> {
    if v.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return v.get("id").and_then(Value::as_str).map(str::to_string);
    }
    for f in PATIENT_REF_FIELDS {
        if let Some(r) = v
            .get(*f)
            .and_then(|s| s.get("reference"))
            .and_then(Value::as_str)
            && let Some((_, id)) = ref_id(r)
        {
            return Some(id.to_string());
        }
    }
    None
}

/// Patient ids of a Group's members.
pub(crate) fn group_members(group: &Value) -> Vec<String> {
    group
        .get("member")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("entity")?.get("reference")?.as_str())
                .filter_map(|r| ref_id(r).map(|(_, id)| id.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `meta.versionId` and `meta.lastUpdated` (keeping other meta elements).
pub(crate) fn set_meta(v: &mut Value, version: &str, last_updated: &str, overwrite: bool) {
    let Some(obj) = v.as_object_mut() else { return };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    if let Some(m) = meta.as_object_mut() {
        if overwrite || !m.contains_key("versionId") {
            m.insert("versionId".into(), Value::String(version.into()));
        }
        if overwrite || !m.contains_key("lastUpdated") {
            m.insert("lastUpdated".into(), Value::String(last_updated.into()));
        }
    }
}
