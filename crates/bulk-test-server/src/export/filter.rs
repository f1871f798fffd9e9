//! `_typeFilter`: FHIR search queries per type, parsed at kick-off and evaluated against each
//! candidate resource (a subset of the search parameters real servers support).
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;

use super::bad_request::{BadRequest, bad};
use super::types::R4_TYPES;
use crate::resource::parse_instant;
use crate::resource::ref_id;

/// One search parameter of a `_typeFilter` query.
#[derive(Clone, Debug)]
struct FilterParam {
    name: String,
    modifier: Option<String>,
    values: Vec<String>,
}

/// One `_typeFilter` query (its parameters are ANDed; queries of one type are ORed).
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    params: Vec<FilterParam>,
}

/// A FHIR date/dateTime/instant as the half-open interval it denotes (`2020` = the whole year).
fn parse_interval(s: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    if let Some(t) = parse_instant(s) {
        return Some((t, t + Duration::milliseconds(1)));
    }
    let day = |y: i32, m: u32, d: u32| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    };
    let parts: Vec<&str> = s.split('-').collect();
    match parts.as_slice() {
        [y] if y.len() == 4 => {
            let y: i32 = y.parse().ok()?;
            Some((day(y, 1, 1)?, day(y + 1, 1, 1)?))
        }
        [y, m] if y.len() == 4 && m.len() == 2 => {
            let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
            let next = if m == 12 {
                day(y + 1, 1, 1)?
            } else {
                day(y, m + 1, 1)?
            };
            Some((day(y, m, 1)?, next))
        }
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            let start = day(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
            Some((start, start + Duration::days(1)))
        }
        _ => None,
    }
}

const SUPPORTED_FILTER_PARAMS: &[&str] = &[
    "_id",
    "_lastUpdated",
    "status",
    "code",
    "category",
    "gender",
    "clinical-status",
    "intent",
    "patient",
    "subject",
    "class",
];

pub(super) fn parse_filter(
    raw: &str,
    lenient: bool,
    warnings: &mut Vec<String>,
) -> Result<(String, Filter), BadRequest> {
    let (ty, query) = raw.split_once('?').ok_or_else(|| {
        bad(
            "invalid",
            format!("_typeFilter {raw:?} must look like Type?param=value"),
        )
    })?;
    if !R4_TYPES.contains(&ty) {
        return Err(bad(
            "invalid",
            format!("_typeFilter {raw:?} names an unknown resource type {ty:?}"),
        ));
    }
    let mut params = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let (name, modifier) = match k.split_once(':') {
            Some((n, m)) => (n.to_string(), Some(m.to_string())),
            None => (k.to_string(), None),
        };
        let modifier_ok = match modifier.as_deref() {
            None => true,
            Some("not") => matches!(name.as_str(), "status" | "gender" | "intent"),
            Some(_) => false,
        };
        if !SUPPORTED_FILTER_PARAMS.contains(&name.as_str()) || !modifier_ok {
            let msg = format!(
                "_typeFilter {raw:?}: search parameter {k:?} is not supported by this server"
            );
            if lenient {
                warnings.push(format!("{msg}; it was ignored"));
                continue;
            }
            return Err(bad("not-supported", msg));
        }
        if name == "_lastUpdated" {
            for v in v.split(',') {
                let (_, date) = split_prefix(v);
                if parse_interval(date).is_none() {
                    return Err(bad(
                        "invalid",
                        format!("_typeFilter {raw:?}: {v:?} is not a valid date"),
                    ));
                }
            }
        }
        params.push(FilterParam {
            name,
            modifier,
            values: v.split(',').map(str::to_string).collect(),
        });
    }
    Ok((ty.to_string(), Filter { params }))
}

fn split_prefix(v: &str) -> (&str, &str) {
    for p in ["gt", "ge", "lt", "le", "eq", "ne", "sa", "eb"] {
        if let Some(rest) = v.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return (p, rest);
        }
    }
    ("eq", v)
}

/// `system|code`, `code`, `|code`, `system|` against a Coding.
fn token_matches_coding(coding: &Value, token: &str) -> bool {
    let system = coding.get("system").and_then(Value::as_str);
    let code = coding.get("code").and_then(Value::as_str);
    match token.split_once('|') {
        None => code == Some(token),
        Some(("", c)) => system.is_none() && code == Some(c),
        Some((s, "")) => system == Some(s),
        Some((s, c)) => system == Some(s) && code == Some(c),
    }
}

/// A token against a code string, Coding, CodeableConcept or an array of them.
fn token_matches(v: &Value, token: &str) -> bool {
    match v {
        Value::String(s) => !token.contains('|') && s == token,
        Value::Array(a) => a.iter().any(|x| token_matches(x, token)),
        Value::Object(o) => {
            if let Some(Value::Array(codings)) = o.get("coding") {
                codings.iter().any(|c| token_matches_coding(c, token))
            } else {
                token_matches_coding(v, token)
            }
        }
        _ => false,
    }
}

fn reference_matches(v: Option<&Value>, target: &str) -> bool {
    let Some(r) = v.and_then(|r| r.get("reference")).and_then(Value::as_str) else {
        return false;
    };
    let target = target.strip_prefix("Patient/").unwrap_or(target);
    ref_id(r).map(|(_, id)| id == target).unwrap_or(false) || r == target
}

impl FilterParam {
    fn matches(&self, res: &Value, last_updated: DateTime<Utc>) -> bool {
        let any = |f: &dyn Fn(&str) -> bool| self.values.iter().any(|v| f(v));
        let field = |name: &str| res.get(name).unwrap_or(&Value::Null);
        let result = match self.name.as_str() {
            "_id" => any(&|v| res.get("id").and_then(Value::as_str) == Some(v)),
            "_lastUpdated" => {
                // Comma-separated values are ORed.
                any(&|v| {
                    let (prefix, date) = split_prefix(v);
                    let Some((lo, hi)) = parse_interval(date) else {
                        return false;
                    };
                    match prefix {
                        "gt" | "sa" => last_updated >= hi,
                        "ge" => last_updated >= lo,
                        "lt" | "eb" => last_updated < lo,
                        "le" => last_updated < hi,
                        "ne" => !(lo <= last_updated && last_updated < hi),
                        _ => lo <= last_updated && last_updated < hi,
                    }
                })
            }
            "status" | "gender" | "intent" => any(&|v| field(&self.name).as_str() == Some(v)),
            "clinical-status" => any(&|v| token_matches(field("clinicalStatus"), v)),
            "class" => any(&|v| token_matches(field("class"), v)),
            "category" => any(&|v| token_matches(field("category"), v)),
            "code" => {
                let target = ["code", "medicationCodeableConcept", "vaccineCode"]
                    .iter()
                    .find_map(|k| res.get(*k))
                    .unwrap_or(&Value::Null);
                any(&|v| token_matches(target, v))
            }
            "patient" | "subject" => any(&|v| {
                ["subject", "patient", "beneficiary"]
                    .iter()
                    .any(|k| reference_matches(res.get(*k), v))
                    || (res.get("resourceType").and_then(Value::as_str) == Some("Patient")
                        && res.get("id").and_then(Value::as_str)
                            == Some(v.strip_prefix("Patient/").unwrap_or(v)))
            }),
            _ => true,
        };
        if self.modifier.as_deref() == Some("not") {
            !result
        } else {
            result
        }
    }
}

impl Filter {
    pub(super) fn matches(&self, res: &Value, last_updated: DateTime<Utc>) -> bool {
        self.params.iter().all(|p| p.matches(res, last_updated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::instant;
    use proptest::prelude::*;

    #[test]
    fn intervals() {
        let (lo, hi) = parse_interval("2020-02").unwrap();
        assert_eq!(instant(lo), "2020-02-01T00:00:00.000Z");
        assert_eq!(instant(hi), "2020-03-01T00:00:00.000Z");
        assert!(parse_interval("2020-13").is_none());
        assert!(parse_interval("garbage").is_none());
    }

    proptest! {
        #[test]
        fn intervals_are_ordered(s in "[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?") {
            if let Some((lo, hi)) = parse_interval(&s) {
                prop_assert!(lo < hi);
            }
        }
    }
}
