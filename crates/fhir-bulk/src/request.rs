//! What to export and how the kick-off request is built (GET with query parameters, or POST
//! with a FHIR `Parameters` body when `patient` is given).
use chrono::{DateTime, FixedOffset, SecondsFormat};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::error::BulkError;

/// The export level: `[base]/$export`, `[base]/Patient/$export` or `[base]/Group/[id]/$export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExportLevel {
    #[default]
    System,
    Patient,
    Group(String),
}

/// A Bulk Data kick-off request with every parameter of the IG (v1–v2, plus `organizeOutputBy`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ExportRequest {
    pub level: ExportLevel,
    /// `_outputFormat`; the server default (`application/fhir+ndjson`) when `None`.
    pub output_format: Option<String>,
    /// `_since`: only resources changed after this instant.
    pub since: Option<DateTime<FixedOffset>>,
    /// `_until`: only resources changed up to this instant.
    pub until: Option<DateTime<FixedOffset>>,
    /// The name `until` is sent under (`_till` for Azure).
    pub until_parameter: UntilParameter,
    /// `_type`: resource types to export (all when empty).
    pub types: Vec<String>,
    /// `_elements`: `Type.element` or `element` entries.
    pub elements: Vec<String>,
    /// `_typeFilter`: `Type?query` entries, each sent as its own parameter.
    pub type_filters: Vec<String>,
    /// `patient`: ids or `Patient/id` references; forces a POST kick-off.
    pub patients: Vec<String>,
    /// `includeAssociatedData` codes, e.g. `LatestProvenanceResources`.
    pub include_associated_data: Vec<String>,
    /// `allowPartialManifests`.
    pub allow_partial_manifests: bool,
    /// `organizeOutputBy`, e.g. `Patient`.
    pub organize_output_by: Option<String>,
    /// Use POST with a `Parameters` body even without `patient`.
    pub force_post: bool,
}

/// The name of the kick-off parameter for "changed up to": `_until` in the IG; Azure Health
/// Data Services takes `_till` and refuses `_until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum UntilParameter {
    #[default]
    #[serde(rename = "_until")]
    Until,
    #[serde(rename = "_till")]
    Till,
}

impl UntilParameter {
    pub const NAMES: &[&str] = &["_until", "_till"];

    pub fn name(self) -> &'static str {
        match self {
            Self::Until => "_until",
            Self::Till => "_till",
        }
    }

    /// `_until` or `_till`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "_until" => Some(Self::Until),
            "_till" => Some(Self::Till),
            _ => None,
        }
    }
}

/// How the kick-off goes on the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum KickOffRequest {
    Get(Url),
    Post(Url, Value),
}

impl ExportRequest {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn patient() -> Self {
        Self {
            level: ExportLevel::Patient,
            ..Self::default()
        }
    }

    pub fn group(id: impl Into<String>) -> Self {
        Self {
            level: ExportLevel::Group(id.into()),
            ..Self::default()
        }
    }

    /// Checks the parameters against the IG before anything is sent.
    pub fn validate(&self) -> Result<(), BulkError> {
        let bad = |m: String| Err(BulkError::InvalidRequest(m));
        if let ExportLevel::Group(id) = &self.level
            && !is_fhir_id(id)
        {
            return bad(format!(
                "group id {id:?} is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
            ));
        }
        for t in &self.types {
            if !is_type_name(t) {
                return bad(format!("_type: {t:?} is not a resource type name"));
            }
        }
        for e in &self.elements {
            if e.is_empty() || e.contains(',') || e.chars().any(char::is_whitespace) {
                return bad(format!("_elements: {e:?} is not an element name"));
            }
        }
        for f in &self.type_filters {
            match f.split_once('?') {
                Some((t, q)) if is_type_name(t) && !q.is_empty() => {}
                _ => return bad(format!("_typeFilter: {f:?} is not of the form Type?query")),
            }
        }
        if !self.patients.is_empty() && self.level == ExportLevel::System {
            return bad("patient applies to Patient and Group level exports only".into());
        }
        for p in &self.patients {
            let id = p.strip_prefix("Patient/").unwrap_or(p);
            if !is_fhir_id(id) {
                return bad(format!(
                    "patient: {p:?} is not a patient id or Patient/id reference"
                ));
            }
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return bad(format!(
                "_since ({since}) is after {} ({until})",
                self.until_parameter.name()
            ));
        }
        for (name, v) in [
            ("_outputFormat", &self.output_format),
            ("organizeOutputBy", &self.organize_output_by),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return bad(format!("{name} is empty"));
            }
        }
        Ok(())
    }

    /// The `$export` endpoint for this level under `base`.
    pub fn endpoint(&self, base: &Url) -> Result<Url, BulkError> {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| BulkError::Config(format!("{base} cannot be a FHIR base URL")))?;
            segments.pop_if_empty();
            match &self.level {
                ExportLevel::System => {}
                ExportLevel::Patient => {
                    segments.push("Patient");
                }
                ExportLevel::Group(id) => {
                    segments.push("Group").push(id);
                }
            }
            segments.push("$export");
        }
        Ok(url)
    }

    /// Builds the kick-off request (validated).
    pub fn kick_off_request(&self, base: &Url) -> Result<KickOffRequest, BulkError> {
        self.validate()?;
        let url = self.endpoint(base)?;
        if self.force_post || !self.patients.is_empty() {
            return Ok(KickOffRequest::Post(url, self.parameters_body()));
        }
        let mut url = url;
        {
            let mut q = url.query_pairs_mut();
            for (name, value) in self.query_pairs() {
                q.append_pair(name, &value);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(KickOffRequest::Get(url))
    }

    /// The parameters as (name, value) pairs; `_typeFilter` repeats rather than comma-joining,
    /// since a query may itself contain commas (`Observation?code=a,b`).
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(f) = &self.output_format {
            pairs.push(("_outputFormat", f.clone()));
        }
        if let Some(t) = self.since {
            pairs.push(("_since", instant(t)));
        }
        if let Some(t) = self.until {
            pairs.push((self.until_parameter.name(), instant(t)));
        }
        if !self.types.is_empty() {
            pairs.push(("_type", self.types.join(",")));
        }
        if !self.elements.is_empty() {
            pairs.push(("_elements", self.elements.join(",")));
        }
        for f in &self.type_filters {
            pairs.push(("_typeFilter", f.clone()));
        }
        if !self.include_associated_data.is_empty() {
            pairs.push((
                "includeAssociatedData",
                self.include_associated_data.join(","),
            ));
        }
        if self.allow_partial_manifests {
            pairs.push(("allowPartialManifests", "true".into()));
        }
        if let Some(o) = &self.organize_output_by {
            pairs.push(("organizeOutputBy", o.clone()));
        }
        pairs
    }

    /// The FHIR `Parameters` body of a POST kick-off.
    pub fn parameters_body(&self) -> Value {
        let mut params = Vec::new();
        if let Some(f) = &self.output_format {
            params.push(json!({"name": "_outputFormat", "valueString": f}));
        }
        if let Some(t) = self.since {
            params.push(json!({"name": "_since", "valueInstant": instant(t)}));
        }
        if let Some(t) = self.until {
            params.push(json!({"name": self.until_parameter.name(), "valueInstant": instant(t)}));
        }
        for t in &self.types {
            params.push(json!({"name": "_type", "valueString": t}));
        }
        for e in &self.elements {
            params.push(json!({"name": "_elements", "valueString": e}));
        }
        for f in &self.type_filters {
            params.push(json!({"name": "_typeFilter", "valueString": f}));
        }
        for p in &self.patients {
            let reference = if p.starts_with("Patient/") {
                p.clone()
            } else {
                format!("Patient/{p}")
            };
            params.push(json!({"name": "patient", "valueReference": {"reference": reference}}));
        }
        for c in &self.include_associated_data {
            params.push(json!({"name": "includeAssociatedData", "valueCode": c}));
        }
        if self.allow_partial_manifests {
            params.push(json!({"name": "allowPartialManifests", "valueBoolean": true}));
        }
        if let Some(o) = &self.organize_output_by {
            params.push(json!({"name": "organizeOutputBy", "valueString": o}));
        }
        json!({"resourceType": "Parameters", "parameter": params})
    }
}

/// A FHIR instant, keeping the caller's offset.
fn instant(t: DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn is_type_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && s.len() <= 64
}

/// Whether `s` is a FHIR id: 1-64 of `A-Z a-z 0-9 - .`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("https://fhir.example.org/r4/").unwrap()
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            ExportRequest::system().endpoint(&base()).unwrap().as_str(),
            "https://fhir.example.org/r4/$export"
        );
        let no_slash = Url::parse("https://fhir.example.org/r4").unwrap();
        assert_eq!(
            ExportRequest::patient()
                .endpoint(&no_slash)
                .unwrap()
                .as_str(),
            "https://fhir.example.org/r4/Patient/$export"
        );
        assert_eq!(
            ExportRequest::group("g-1.x")
                .endpoint(&base())
                .unwrap()
                .as_str(),
            "https://fhir.example.org/r4/Group/g-1.x/$export"
        );
    }

    #[test]
    fn get_query_has_every_parameter() {
        let req = ExportRequest {
            output_format: Some("application/fhir+ndjson".into()),
            since: Some(DateTime::parse_from_rfc3339("2024-01-02T03:04:05+02:00").unwrap()),
            until: Some(DateTime::parse_from_rfc3339("2024-02-01T00:00:00.5Z").unwrap()),
            types: vec!["Patient".into(), "Observation".into()],
            elements: vec!["id".into(), "Observation.code".into()],
            type_filters: vec![
                "Observation?code=a,b&status=final".into(),
                "Patient?active=true".into(),
            ],
            include_associated_data: vec!["LatestProvenanceResources".into()],
            allow_partial_manifests: true,
            organize_output_by: Some("Patient".into()),
            ..ExportRequest::patient()
        };
        let KickOffRequest::Get(url) = req.kick_off_request(&base()).unwrap() else {
            panic!("expected GET")
        };
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("_outputFormat".into(), "application/fhir+ndjson".into()),
                ("_since".into(), "2024-01-02T03:04:05+02:00".into()),
                ("_until".into(), "2024-02-01T00:00:00.500Z".into()),
                ("_type".into(), "Patient,Observation".into()),
                ("_elements".into(), "id,Observation.code".into()),
                (
                    "_typeFilter".into(),
                    "Observation?code=a,b&status=final".into()
                ),
                ("_typeFilter".into(), "Patient?active=true".into()),
                (
                    "includeAssociatedData".into(),
                    "LatestProvenanceResources".into()
                ),
                ("allowPartialManifests".into(), "true".into()),
                ("organizeOutputBy".into(), "Patient".into()),
            ]
        );
        // The filter's own `?`, `&`, `=` and `,` must be escaped so they stay inside the value.
        assert!(
            url.query()
                .unwrap()
                .contains("_typeFilter=Observation%3Fcode%3Da%2Cb%26status%3Dfinal"),
            "{url}"
        );
    }

    #[test]
    fn until_goes_under_the_name_the_server_takes() {
        let until = DateTime::parse_from_rfc3339("2024-02-01T00:00:00Z").unwrap();
        let till = ExportRequest {
            until: Some(until),
            until_parameter: UntilParameter::Till,
            ..ExportRequest::system()
        };
        assert_eq!(
            till.query_pairs(),
            vec![("_till", "2024-02-01T00:00:00Z".to_string())]
        );
        let post = ExportRequest {
            force_post: true,
            ..till.clone()
        };
        assert_eq!(
            post.parameters_body()["parameter"][0]["name"],
            json!("_till")
        );
        // A request kept by an older version (no name) reads as `_until`.
        let old: ExportRequest =
            serde_json::from_str(r#"{"until": "2024-02-01T00:00:00Z"}"#).unwrap();
        assert_eq!(old.until_parameter, UntilParameter::Until);
        assert_eq!(UntilParameter::parse("_till"), Some(UntilParameter::Till));
        assert_eq!(UntilParameter::parse("till"), None);
    }

    #[test]
    fn patient_forces_post_with_parameters() {
        let req = ExportRequest {
            patients: vec!["123".into(), "Patient/456".into()],
            type_filters: vec!["Observation?code=a,b".into()],
            ..ExportRequest::group("g1")
        };
        let KickOffRequest::Post(url, body) = req.kick_off_request(&base()).unwrap() else {
            panic!("expected POST")
        };
        assert_eq!(url.as_str(), "https://fhir.example.org/r4/Group/g1/$export");
        assert_eq!(body["resourceType"], "Parameters");
        let params = body["parameter"].as_array().unwrap();
        assert_eq!(
            params[0],
            json!({"name": "_typeFilter", "valueString": "Observation?code=a,b"})
        );
        assert_eq!(
            params[1],
            json!({"name": "patient", "valueReference": {"reference": "Patient/123"}})
        );
        assert_eq!(
            params[2],
            json!({"name": "patient", "valueReference": {"reference": "Patient/456"}})
        );
    }

    #[test]
    fn validation_messages() {
        let err = |r: ExportRequest| r.kick_off_request(&base()).unwrap_err().to_string();
        assert!(
            err(ExportRequest {
                patients: vec!["1".into()],
                ..ExportRequest::system()
            })
            .contains("Patient and Group level")
        );
        assert!(
            err(ExportRequest {
                types: vec!["patient".into()],
                ..ExportRequest::system()
            })
            .contains("_type")
        );
        assert!(
            err(ExportRequest {
                type_filters: vec!["code=1".into()],
                ..ExportRequest::system()
            })
            .contains("Type?query")
        );
        assert!(err(ExportRequest::group("a/b")).contains("group id"));
        let since = DateTime::parse_from_rfc3339("2024-02-01T00:00:00Z").unwrap();
        let until = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z").unwrap();
        assert!(
            err(ExportRequest {
                since: Some(since),
                until: Some(until),
                ..ExportRequest::system()
            })
            .contains("after _until")
        );
    }

    proptest! {
        /// Whatever a filter contains, it arrives at the server as exactly one `_typeFilter` value.
        #[test]
        fn type_filters_round_trip(queries in proptest::collection::vec("[ -~]{1,30}", 1..4)) {
            let filters: Vec<String> = queries.iter().map(|q| format!("Observation?{q}")).collect();
            let req = ExportRequest { type_filters: filters.clone(), ..ExportRequest::system() };
            let KickOffRequest::Get(url) = req.kick_off_request(&base()).unwrap() else { panic!() };
            let got: Vec<String> = url.query_pairs().filter(|(k, _)| k == "_typeFilter").map(|(_, v)| v.into_owned()).collect();
            prop_assert_eq!(got, filters);
        }
    }
}
