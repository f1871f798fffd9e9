//! The completion manifest (Bulk Data IG v1–v3): parsing with clear messages, validation,
//! and merging of partial manifests linked by `link[relation=next]`.
use std::collections::HashMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::error::BulkError;
use crate::request::is_type_name;

/// One file listed in `output`, `deleted` or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub url: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// A validated manifest. Partial manifests are merged into one before callers see them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The server's time for the export; the next incremental export's `_since`.
    pub transaction_time: DateTime<FixedOffset>,
    /// The kick-off URL as the server understood it (empty when the server left it out, as
    /// Aidbox does at system level).
    pub request: String,
    pub requires_access_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_organized_by: Option<String>,
    pub output: Vec<ManifestFile>,
    #[serde(default)]
    pub deleted: Vec<ManifestFile>,
    #[serde(default)]
    pub error: Vec<ManifestFile>,
    /// Links still to follow (empty once merged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link: Vec<ManifestLink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestLink {
    pub relation: String,
    pub url: Url,
}

impl Manifest {
    /// Parses and validates a manifest body fetched from `source`. Relative file URLs are
    /// resolved against `source` (the IG asks for absolute ones; some servers differ).
    pub fn parse(body: &[u8], source: &Url) -> Result<Manifest, BulkError> {
        Self::parse_for(body, source, None)
    }

    /// [`Manifest::parse`] for the FHIR server at `base`: a file URL that is a FHIR relative
    /// reference (`Binary/123`, as HAPI and Medplum list them) is resolved against `base`.
    pub fn parse_for(body: &[u8], source: &Url, base: Option<&Url>) -> Result<Manifest, BulkError> {
        let place = Place { source, base };
        let bad = |message: String| BulkError::InvalidManifest {
            url: source.clone(),
            message,
        };
        let value: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(obj) = &value else {
            return Err(bad("not a JSON object".into()));
        };
        if let Some(rt) = obj.get("resourceType").and_then(Value::as_str) {
            return Err(bad(format!("expected a manifest, got a {rt} resource")));
        }
        let transaction_time = match obj.get("transactionTime") {
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map_err(|e| bad(format!("transactionTime {s:?} is not a FHIR instant: {e}")))?,
            Some(other) => {
                return Err(bad(format!(
                    "transactionTime must be a string, got {other}"
                )));
            }
            None => return Err(bad("transactionTime is missing".into())),
        };
        let request = match obj.get("request") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => return Err(bad(format!("request must be a string, got {other}"))),
        };
        let requires_access_token = match obj.get("requiresAccessToken") {
            Some(Value::Bool(b)) => *b,
            // Servers that omit it are treated as wanting the token on their own origin.
            None | Some(Value::Null) => true,
            Some(other) => {
                return Err(bad(format!(
                    "requiresAccessToken must be a boolean, got {other}"
                )));
            }
        };
        let output_organized_by = match obj.get("outputOrganizedBy") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(bad(format!(
                    "outputOrganizedBy must be a string, got {other}"
                )));
            }
        };
        let output = match obj.get("output") {
            Some(_) => files(obj.get("output"), "output", &place).map_err(bad)?,
            None => return Err(bad("output is missing".into())),
        };
        let deleted = files(obj.get("deleted"), "deleted", &place).map_err(bad)?;
        let error = files(obj.get("error"), "error", &place).map_err(bad)?;
        let link = links(obj.get("link"), source).map_err(bad)?;
        let mut manifest = Manifest {
            transaction_time,
            request,
            requires_access_token,
            output_organized_by,
            output,
            deleted,
            error,
            link,
            extension: obj.get("extension").cloned(),
        };
        manifest.drop_repeated_files().map_err(bad)?;
        Ok(manifest)
    }

    /// The URL of the next partial manifest, if any.
    pub fn next_link(&self) -> Option<&Url> {
        self.link
            .iter()
            .find(|l| l.relation == "next")
            .map(|l| &l.url)
    }

    /// Appends a following partial manifest's files; `link` becomes the page's own links.
    /// Fails when the page lists a file of the earlier pages as another type.
    pub fn merge_page(&mut self, page: Manifest) -> Result<(), String> {
        self.output.extend(page.output);
        self.deleted.extend(page.deleted);
        self.error.extend(page.error);
        self.link = page.link;
        self.drop_repeated_files()
    }

    /// Keeps one entry of a URL listed again (each file is downloaded once); the same URL
    /// listed as two types is an error.
    fn drop_repeated_files(&mut self) -> Result<(), String> {
        for (field, files) in [
            ("output", &mut self.output),
            ("deleted", &mut self.deleted),
            ("error", &mut self.error),
        ] {
            let mut types: HashMap<Url, String> = HashMap::new();
            let mut kept = Vec::with_capacity(files.len());
            for (i, f) in std::mem::take(files).into_iter().enumerate() {
                match types.get(&f.url) {
                    None => {
                        types.insert(f.url.clone(), f.resource_type.clone());
                        kept.push(f);
                    }
                    Some(t) if *t == f.resource_type => {}
                    Some(t) => {
                        return Err(format!(
                            "{field}[{i}].url {} is listed as {t} and as {} files",
                            f.url, f.resource_type
                        ));
                    }
                }
            }
            *files = kept;
        }
        Ok(())
    }

    /// Total resources announced by `count` fields (when every output entry has one); a total
    /// beyond `u64::MAX` (counts are the server's word) is `u64::MAX`.
    pub fn announced_resources(&self) -> Option<u64> {
        self.output
            .iter()
            .try_fold(0u64, |total, f| Some(total.saturating_add(f.count?)))
    }
}

/// Where a manifest came from, for resolving relative URLs.
struct Place<'a> {
    source: &'a Url,
    base: Option<&'a Url>,
}

impl Place<'_> {
    fn join(&self, u: &str) -> Result<Url, url::ParseError> {
        match self.base {
            Some(base) if is_relative_reference(u) => {
                let mut base = base.clone();
                if !base.path().ends_with('/') {
                    base.set_path(&format!("{}/", base.path()));
                }
                base.join(u)
            }
            _ => self.source.join(u),
        }
    }
}

/// `Type/id` (optionally with more path), the form of a FHIR relative reference.
fn is_relative_reference(u: &str) -> bool {
    u.split_once('/')
        .is_some_and(|(ty, rest)| is_type_name(ty) && !rest.is_empty())
}

fn files(value: Option<&Value>, field: &str, place: &Place) -> Result<Vec<ManifestFile>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("{field} must be an array, got {}", kind(other))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{field}[{i}]");
            let Value::Object(o) = item else {
                return Err(format!("{at} must be an object, got {}", kind(item)));
            };
            let resource_type = match o.get("type") {
                Some(Value::String(t)) if is_type_name(t) => t.clone(),
                Some(Value::String(t)) => {
                    return Err(format!("{at}.type {t:?} is not a resource type"));
                }
                Some(other) => {
                    return Err(format!("{at}.type must be a string, got {}", kind(other)));
                }
                None => return Err(format!("{at}.type is missing")),
            };
            let url = match o.get("url") {
                Some(Value::String(u)) => place
                    .join(u)
                    .map_err(|e| format!("{at}.url {u:?} is not a URL: {e}"))?,
                Some(other) => {
                    return Err(format!("{at}.url must be a string, got {}", kind(other)));
                }
                None => return Err(format!("{at}.url is missing")),
            };
            if !matches!(
                url.scheme(),
                "http" | "https" | "s3" | "gs" | "az" | "abfs" | "abfss" | "adl" | "azure"
            ) {
                return Err(format!(
                    "{at}.url {url} is not an http(s) URL or a bucket URL (s3://, gs://, az://, abfss://)"
                ));
            }
            let count = match o.get("count") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
                    format!("{at}.count must be a non-negative integer, got {n}")
                })?),
                Some(other) => {
                    return Err(format!("{at}.count must be a number, got {}", kind(other)));
                }
            };
            Ok(ManifestFile {
                resource_type,
                url,
                count,
            })
        })
        .collect()
}

fn links(value: Option<&Value>, source: &Url) -> Result<Vec<ManifestLink>, String> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("link must be an array, got {}", kind(other))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let relation = item.get("relation").and_then(Value::as_str);
            let url = item.get("url").and_then(Value::as_str);
            match (relation, url) {
                (Some(relation), Some(u)) => Ok(ManifestLink {
                    relation: relation.to_string(),
                    url: source
                        .join(u)
                        .map_err(|e| format!("link[{i}].url {u:?} is not a URL: {e}"))?,
                }),
                _ => Err(format!("link[{i}] needs string relation and url")),
            }
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn src() -> Url {
        Url::parse("http://127.0.0.1:9/fhir/status/1").unwrap()
    }

    #[test]
    fn parses_a_v2_manifest() {
        let body = br#"{
            "transactionTime": "2024-05-01T10:00:00.123+02:00",
            "request": "http://127.0.0.1:9/fhir/$export?_type=Patient",
            "requiresAccessToken": true,
            "outputOrganizedBy": "Patient",
            "output": [{"type": "Patient", "url": "http://127.0.0.1:9/files/p1.ndjson", "count": 10},
                       {"type": "Observation", "url": "/files/o1.ndjson"}],
            "deleted": [{"type": "Bundle", "url": "http://127.0.0.1:9/files/del.ndjson"}],
            "error": [],
            "link": [{"relation": "next", "url": "page2"}],
            "extension": {"x": 1}
        }"#;
        let m = Manifest::parse(body, &src()).unwrap();
        assert_eq!(
            m.transaction_time.to_rfc3339(),
            "2024-05-01T10:00:00.123+02:00"
        );
        assert_eq!(m.output.len(), 2);
        assert_eq!(m.output[0].count, Some(10));
        assert_eq!(
            m.output[1].url.as_str(),
            "http://127.0.0.1:9/files/o1.ndjson"
        );
        assert_eq!(m.deleted[0].resource_type, "Bundle");
        assert_eq!(
            m.next_link().unwrap().as_str(),
            "http://127.0.0.1:9/fhir/status/page2"
        );
        assert_eq!(m.announced_resources(), None);
        let body = br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[
            {"type":"Patient","url":"a","count":18446744073709551615},{"type":"Patient","url":"b","count":2}]}"#;
        let huge = Manifest::parse(body, &src()).unwrap();
        assert_eq!(huge.announced_resources(), Some(u64::MAX));
        assert_eq!(m.output_organized_by.as_deref(), Some("Patient"));
    }

    #[test]
    fn clear_messages_for_bad_manifests() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not JSON"),
            (b"[]", "not a JSON object"),
            (br#"{"resourceType":"OperationOutcome"}"#, "got a OperationOutcome resource"),
            (br#"{"request":"x","output":[]}"#, "transactionTime is missing"),
            (br#"{"transactionTime":"yesterday","request":"x","output":[]}"#, "not a FHIR instant"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":1,"output":[]}"#, "request must be a string"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x"}"#, "output is missing"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":{}}"#, "output must be an array"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[{"url":"http://a/b"}]}"#, "output[0].type is missing"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[{"type":"Patient"}]}"#, "output[0].url is missing"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[{"type":"Patient","url":"ftp://a/b"}]}"#, "not an http(s) URL"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[{"type":"Patient","url":"http://a/b","count":-1}]}"#, "output[0].count must be a non-negative integer"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[],"error":[{"type":"OperationOutcome","url":7}]}"#, "error[0].url must be a string"),
            (br#"{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[],"requiresAccessToken":"yes"}"#, "requiresAccessToken must be a boolean"),
        ];
        for (body, want) in cases {
            let e = Manifest::parse(body, &src()).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(e.contains("http://127.0.0.1:9/fhir/status/1"), "{e}");
        }
    }

    #[test]
    fn merges_pages() {
        let page = |n: u32, next: bool| {
            let link = if next {
                format!(r#","link":[{{"relation":"next","url":"p{}"}}]"#, n + 1)
            } else {
                String::new()
            };
            let body = format!(
                r#"{{"transactionTime":"2024-01-01T00:00:00Z","request":"x","requiresAccessToken":false,"output":[{{"type":"Patient","url":"f{n}"}}],"error":[]{link}}}"#
            );
            Manifest::parse(body.as_bytes(), &src()).unwrap()
        };
        let mut m = page(1, true);
        m.merge_page(page(2, true)).unwrap();
        m.merge_page(page(3, false)).unwrap();
        assert_eq!(
            m.output
                .iter()
                .map(|f| f.url.path().to_string())
                .collect::<Vec<_>>(),
            ["/fhir/status/f1", "/fhir/status/f2", "/fhir/status/f3"]
        );
        assert!(m.next_link().is_none());
    }

    #[test]
    fn a_file_listed_again_is_kept_once_and_one_of_two_types_is_refused() {
        let body = |files: &str| {
            format!(
                r#"{{"transactionTime":"2024-01-01T00:00:00Z","request":"x","output":[{files}]}}"#
            )
        };
        let p = r#"{"type":"Patient","url":"f1"}"#;
        let o = r#"{"type":"Observation","url":"f2"}"#;
        let m = Manifest::parse(body(&format!("{p},{o},{p}")).as_bytes(), &src()).unwrap();
        assert_eq!(m.output.len(), 2);
        let e = Manifest::parse(
            body(&format!(r#"{p},{{"type":"Observation","url":"f1"}}"#)).as_bytes(),
            &src(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("output[1].url http://127.0.0.1:9/fhir/status/f1 is listed as Patient and as Observation files"), "{e}");
        // Across the pages of a partial manifest alike.
        let mut first = Manifest::parse(body(p).as_bytes(), &src()).unwrap();
        first
            .merge_page(Manifest::parse(body(&format!("{p},{o}")).as_bytes(), &src()).unwrap())
            .unwrap();
        assert_eq!(first.output.len(), 2);
        let other = Manifest::parse(
            body(r#"{"type":"Condition","url":"f2"}"#).as_bytes(),
            &src(),
        );
        assert!(first.merge_page(other.unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_naming_the_source(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            match Manifest::parse(&body, &src()) {
                // Only a JSON object with a transactionTime and a request can be a manifest.
                Ok(_) => {
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    prop_assert!(v["transactionTime"].is_string() && v["request"].is_string());
                }
                Err(BulkError::InvalidManifest { url, message }) => {
                    prop_assert_eq!(url, src());
                    prop_assert!(!message.is_empty());
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }

        #[test]
        fn round_trips_through_serde(count in proptest::option::of(0u64..1_000_000), n in 0usize..5) {
            let files: Vec<Value> = (0..n).map(|i| {
                let mut f = serde_json::json!({"type": "Observation", "url": format!("http://127.0.0.1:9/f/{i}.ndjson")});
                if let Some(c) = count { f["count"] = c.into(); }
                f
            }).collect();
            let body = serde_json::json!({"transactionTime": "2024-01-01T00:00:00Z", "request": "r", "requiresAccessToken": true, "output": files, "error": []});
            let m = Manifest::parse(body.to_string().as_bytes(), &src()).unwrap();
            prop_assert_eq!(m.output.len(), n);
            let again = Manifest::parse(&serde_json::to_vec(&m).unwrap(), &src()).unwrap();
            prop_assert_eq!(again, m);
        }
    }
}
