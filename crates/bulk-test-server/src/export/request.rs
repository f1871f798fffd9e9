//! Kick-off parameters, from the query string or a `Parameters` body, checked into an
//! [`ExportRequest`] (or a 400 with the reason).
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::resource::parse_instant;

use super::bad_request::{BadRequest, bad};
use super::elements::Elements;
use super::filter::{Filter, parse_filter};
use super::types::{NOT_EXPORTABLE, R4_TYPES};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    System,
    Patient,
    Group(String),
}

/// The `_outputFormat` of gzip-compressed NDJSON files (Aidbox).
pub(crate) const GZIP_NDJSON: &str = "application/fhir+ndjson+gzip";

/// A validated kick-off request.
#[derive(Clone, Debug)]
pub(crate) struct ExportRequest {
    pub level: Level,
    pub types: Option<Vec<String>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub elements: Option<Elements>,
    pub type_filters: HashMap<String, Vec<Filter>>,
    pub patients: Option<Vec<String>>,
    pub allow_partial: bool,
    /// Problems ignored under `Prefer: handling=lenient`, reported in `error[]`.
    pub warnings: Vec<String>,
    /// Requested types the server cannot export (lenient mode), reported in `error[]`.
    pub unknown_types: Vec<String>,
    /// `_outputFormat=application/fhir+ndjson+gzip`: files are gzip bytes (a profile that
    /// does not serve them refuses the kick-off).
    pub gzip_files: bool,
}

/// Kick-off input: parameter name and value, from the query string or a `Parameters` body.
pub(crate) fn parse_request(
    level: Level,
    params: &[(String, String)],
    lenient: bool,
    post: bool,
) -> Result<ExportRequest, BadRequest> {
    let mut req = ExportRequest {
        level,
        types: None,
        since: None,
        until: None,
        elements: None,
        type_filters: HashMap::new(),
        patients: None,
        allow_partial: false,
        warnings: Vec::new(),
        unknown_types: Vec::new(),
        gzip_files: false,
    };
    let mut elements = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "_outputFormat" if value == GZIP_NDJSON => req.gzip_files = true,
            "_outputFormat" => {
                if !matches!(
                    value.as_str(),
                    "application/fhir+ndjson" | "application/ndjson" | "ndjson"
                ) {
                    return Err(bad(
                        "not-supported",
                        format!(
                            "_outputFormat {value:?} is not supported; use application/fhir+ndjson"
                        ),
                    ));
                }
            }
            "_since" | "_until" => {
                let t = parse_instant(value).ok_or_else(|| {
                    bad(
                        "invalid",
                        format!(
                            "{name} {value:?} is not a FHIR instant (e.g. 2024-01-31T12:00:00.000Z)"
                        ),
                    )
                })?;
                if name == "_since" {
                    req.since = Some(t)
                } else {
                    req.until = Some(t)
                }
            }
            "_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !R4_TYPES.contains(&t) || NOT_EXPORTABLE.contains(&t) {
                        if lenient {
                            req.unknown_types.push(t.to_string());
                            continue;
                        }
                        return Err(bad(
                            "not-supported",
                            format!("_type {t:?} is not a resource type this server can export"),
                        ));
                    }
                    let types = req.types.get_or_insert_with(Vec::new);
                    if !types.iter().any(|x| x == t) {
                        types.push(t.to_string());
                    }
                }
                if req.types.is_none() {
                    // Only unknown types were asked for: export nothing rather than everything.
                    req.types = Some(Vec::new());
                }
            }
            "_elements" => elements.push(value.clone()),
            "_typeFilter" => {
                for raw in split_type_filters(value) {
                    let (ty, f) = parse_filter(&raw, lenient, &mut req.warnings)?;
                    req.type_filters.entry(ty).or_default().push(f);
                }
            }
            "patient" => {
                if !post {
                    return Err(bad(
                        "not-supported",
                        "the patient parameter is only supported in a POST kick-off",
                    ));
                }
                if req.level == Level::System {
                    return Err(bad(
                        "not-supported",
                        "the patient parameter is only supported at the Patient and Group level",
                    ));
                }
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                if id.contains('/') || id.is_empty() {
                    return Err(bad(
                        "invalid",
                        format!("patient reference {value:?} must look like Patient/id"),
                    ));
                }
                req.patients
                    .get_or_insert_with(Vec::new)
                    .push(id.to_string());
            }
            "includeAssociatedData" => {
                for v in value.split(',') {
                    if !matches!(
                        v,
                        "LatestProvenanceResources" | "RelevantProvenanceResources"
                    ) && !v.starts_with('_')
                    {
                        let msg = format!("includeAssociatedData value {v:?} is not supported");
                        if lenient {
                            req.warnings.push(format!("{msg}; it was ignored"));
                        } else {
                            return Err(bad("not-supported", msg));
                        }
                    }
                }
            }
            "allowPartialManifests" => match value.as_str() {
                "true" => req.allow_partial = true,
                "false" => req.allow_partial = false,
                _ => {
                    return Err(bad(
                        "invalid",
                        format!("allowPartialManifests must be true or false, not {value:?}"),
                    ));
                }
            },
            "organizeOutputBy" => {
                return Err(bad(
                    "not-supported",
                    "organizeOutputBy is not supported by this server",
                ));
            }
            other => {
                let msg = format!("unknown kick-off parameter {other:?}");
                if lenient {
                    req.warnings.push(format!("{msg}; it was ignored"));
                } else {
                    return Err(bad("not-supported", msg));
                }
            }
        }
    }
    if let (Some(s), Some(u)) = (req.since, req.until)
        && u < s
    {
        return Err(bad("invalid", "_until is earlier than _since"));
    }
    if !elements.is_empty() {
        req.elements = Some(Elements::parse(&elements, &mut req.warnings)?);
    }
    Ok(req)
}

/// `_typeFilter` values are comma-joined; a comma inside a query is percent-encoded, but a
/// raw comma between parameter values (`status=a,b`) must not split the filter, so a piece that
/// does not start with `Type?` continues the previous filter.
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_filter = piece
            .split_once('?')
            .is_some_and(|(t, _)| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphabetic()));
        match out.last_mut() {
            Some(last) if !starts_filter => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::instant;
    use proptest::prelude::*;

    #[test]
    fn type_filters_split_only_between_queries() {
        assert_eq!(
            split_type_filters("Observation?status=final,amended,Patient?gender=female"),
            vec![
                "Observation?status=final,amended".to_string(),
                "Patient?gender=female".to_string()
            ]
        );
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let name = prop::sample::select(vec![
            "_type",
            "_since",
            "_until",
            "_elements",
            "_typeFilter",
            "_outputFormat",
            "patient",
            "includeAssociatedData",
            "allowPartialManifests",
            "x",
        ]);
        prop::collection::vec((name.prop_map(str::to_string), "\\PC{0,40}"), 0..6)
    }

    proptest! {
        /// Any parameters give a request that holds only what the server can export, or a 400
        /// that says why.
        #[test]
        fn kickoff_parameters_are_checked(params in pairs(), lenient: bool, post: bool) {
            match parse_request(Level::Patient, &params, lenient, post) {
                Ok(req) => {
                    for t in req.types.iter().flatten() {
                        prop_assert!(R4_TYPES.contains(&t.as_str()) && !NOT_EXPORTABLE.contains(&t.as_str()), "{t}");
                    }
                    if let (Some(s), Some(u)) = (req.since, req.until) {
                        prop_assert!(s <= u);
                    }
                    prop_assert!(post || req.patients.is_none());
                    prop_assert!(lenient || req.unknown_types.is_empty());
                }
                Err(e) => {
                    prop_assert!(matches!(e.code, "invalid" | "not-supported"), "{}", e.code);
                    prop_assert!(!e.message.is_empty());
                }
            }
        }

        #[test]
        fn since_round_trips(ms in 0i64..4_000_000_000_000) {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            let params = vec![("_since".to_string(), instant(t))];
            let req = parse_request(Level::System, &params, false, false).unwrap();
            prop_assert_eq!(req.since, Some(t));
        }

        #[test]
        fn type_filter_splitting_keeps_every_filter(values in prop::collection::vec("[a-z]{1,8}(,[a-z]{1,8}){0,2}", 1..4)) {
            let filters: Vec<String> = values.iter().map(|v| format!("Observation?status={v}")).collect();
            prop_assert_eq!(split_type_filters(&filters.join(",")), filters);
        }
    }
}
