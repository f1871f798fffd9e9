//! The FHIR content the client itself interprets: OperationOutcome issues (error responses and
//! `error[]` files) and the deletion Bundles of `deleted[]` files.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::request::{is_fhir_id, is_type_name};

/// One OperationOutcome issue, reduced to what a person reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeIssue {
    pub severity: String,
    pub code: String,
    /// `diagnostics`, else `details.text`, else the first coding's display or code.
    pub message: String,
}

impl std::fmt::Display for OutcomeIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.severity, self.code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// The issues of an OperationOutcome (empty when `v` is not one).
pub fn issues(v: &Value) -> Vec<OutcomeIssue> {
    let Some(list) = v.get("issue").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .map(|i| {
            let s = |k: &str| {
                i.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let details = i.get("details");
            let message = i
                .get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| details.and_then(|d| d.get("text")).and_then(Value::as_str))
                .or_else(|| {
                    let coding = details?.get("coding")?.as_array()?.first()?;
                    coding
                        .get("display")
                        .or_else(|| coding.get("code"))?
                        .as_str()
                })
                .unwrap_or_default()
                .to_string();
            OutcomeIssue {
                severity: s("severity"),
                code: s("code"),
                message,
            }
        })
        .collect()
}

/// A resource the server reports as deleted since `_since`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deletion {
    pub resource_type: String,
    pub id: String,
}

/// Deletions in one line of a `deleted[]` file: a Bundle whose entries carry
/// `request.method = DELETE` and `request.url = Type/id` (relative or absolute).
/// Entries that cannot be understood are returned as messages.
pub fn deletions(bundle: &Value) -> (Vec<Deletion>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Some(entries) = bundle.get("entry").and_then(Value::as_array) else {
        return (found, problems);
    };
    for (i, entry) in entries.iter().enumerate() {
        let request = entry.get("request");
        let method = request
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str)
            .unwrap_or("DELETE");
        if !method.eq_ignore_ascii_case("DELETE") {
            continue;
        }
        let url = request.and_then(|r| r.get("url")).and_then(Value::as_str);
        match url.and_then(reference) {
            Some(d) => found.push(d),
            None => problems.push(format!(
                "entry[{i}]: request.url {url:?} is not a Type/id reference"
            )),
        }
    }
    (found, problems)
}

/// `Type/id` from `Type/id`, `[base]/Type/id` or `.../Type/id/_history/v`.
fn reference(url: &str) -> Option<Deletion> {
    let path = url.split(['?', '#']).next()?;
    let mut segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        segments.truncate(segments.len() - 2);
    }
    let (t, id) = match segments.as_slice() {
        [.., t, id] => (*t, *id),
        _ => return None,
    };
    (is_type_name(t) && is_fhir_id(id)).then(|| Deletion {
        resource_type: t.to_string(),
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deletion_bundles() {
        let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "DELETE", "url": "Patient/123"}},
            {"request": {"method": "DELETE", "url": "http://x/fhir/Observation/o-1"}},
            {"request": {"method": "DELETE", "url": "Encounter/e.2/_history/3"}},
            {"request": {"method": "PUT", "url": "Patient/9"}},
            {"request": {"method": "DELETE", "url": "nonsense"}},
        ]});
        let (found, problems) = deletions(&b);
        assert_eq!(
            found,
            vec![
                Deletion {
                    resource_type: "Patient".into(),
                    id: "123".into()
                },
                Deletion {
                    resource_type: "Observation".into(),
                    id: "o-1".into()
                },
                Deletion {
                    resource_type: "Encounter".into(),
                    id: "e.2".into()
                },
            ]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("entry[4]"));
    }

    #[test]
    fn issue_texts() {
        let oo = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "details": {"coding": [{"code": "MSG_X", "display": "Bad thing"}]}},
            {"severity": "warning", "code": "informational"}
        ]});
        let got = issues(&oo);
        assert_eq!(got[0].to_string(), "error processing: Bad thing");
        assert_eq!(got[1].to_string(), "warning informational");
    }
}
