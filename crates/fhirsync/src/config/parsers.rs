//! Value parsers shared by flags and the config file, so that a value means the same wherever
//! it is given.
use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate};
use fhir_bulk::UntilParameter;
use url::Url;

use super::error::{ConfigError, invalid};

/// The longest duration an option takes (100 years of 365.25 days, as `humantime` counts them):
/// a longer one is a mistake, and waiting for it would overflow the clock.
const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// A duration as `humantime` text (`90s`, `2h`, `1h 30m`) or a bare number of seconds (kept for
/// scripts written when some flags took seconds), at most 100 years.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| e.to_string())?
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("{e} (expected e.g. `90s`, `2h`, `1h 30m`)"))?
    };
    at_most_100_years(d)
}

/// `d`, when it is at most 100 years.
pub(crate) fn at_most_100_years(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("{} s is more than 100 years", d.as_secs()));
    }
    Ok(d)
}

/// An instant: RFC 3339 with an offset (`2024-01-31T12:00:00Z`), as FHIR `_since` requires, or a
/// date (`2024-01-31`) meaning midnight UTC.
/// `_until` or `_till`: the name of the kick-off parameter for "changed up to".
pub fn parse_until_parameter(s: &str) -> Result<UntilParameter, String> {
    UntilParameter::parse(s.trim()).ok_or_else(|| {
        format!(
            "{s:?} is not a name for `until`: one of {}",
            UntilParameter::NAMES.join(", ")
        )
    })
}

pub fn parse_instant(s: &str) -> Result<DateTime<FixedOffset>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().fixed_offset())
        .ok_or_else(|| {
            format!(
                "{s:?} is neither an RFC 3339 instant (2024-01-31T12:00:00Z) nor a date meaning \
                 midnight UTC (2024-01-31)"
            )
        })
}

/// `KEY=VALUE`, as `--storage-option` takes it.
pub fn parse_key_val(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

/// An `http(s)` URL; `option` names the setting in the message.
pub fn parse_endpoint(s: &str, option: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s.trim()).map_err(|e| invalid(option, format!("{e}: {s:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            option,
            format!("expected an http(s) URL, got {s:?}"),
        ));
    }
    Ok(url)
}

/// Splits values given as `A B`, `A,B` or repeated flags into one list.
pub(crate) fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([',', ' ', '\t', '\n']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks resource type names (`Patient`, not `patient`) and drops repeats, keeping the order.
pub(crate) fn resource_type_list(types: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if types.is_empty() {
        return Err(invalid(
            "resource_types",
            "at least one resource type is needed",
        ));
    }
    for t in &types {
        let name_like = t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && t.chars().all(|c| c.is_ascii_alphanumeric());
        if !name_like {
            return Err(invalid(
                "resource_types",
                format!("{t:?} is not a FHIR resource type name (e.g. Patient)"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    Ok(types
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_rfc3339_or_a_date_at_midnight_utc() {
        assert_eq!(
            parse_instant("2024-01-31").unwrap().to_rfc3339(),
            "2024-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_instant(" 2024-01-31T12:00:00+02:00 ")
                .unwrap()
                .to_rfc3339(),
            "2024-01-31T12:00:00+02:00"
        );
        assert_eq!(
            parse_instant("2024-01-31T12:00:00.5Z")
                .unwrap()
                .to_rfc3339(),
            "2024-01-31T12:00:00.500+00:00"
        );
        for bad in [
            "yesterday",
            "2024-01-31T12:00:00",
            "2024-02-30",
            "",
            "31.01.2024",
        ] {
            let e = parse_instant(bad).unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains("date"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").unwrap_err().contains("90s"));
        assert!(parse_duration("-5").is_err());
        assert_eq!(
            parse_duration("100years"),
            Ok(Duration::from_secs(3_155_760_000))
        );
        for absurd in ["101years", "500000000000years", "18446744073709551615"] {
            let e = parse_duration(absurd).unwrap_err();
            assert!(e.contains("more than 100 years"), "{absurd}: {e}");
        }
    }

    #[test]
    fn lists_split_on_commas_and_white_space() {
        let given = [
            "Patient,Observation".to_owned(),
            "Encounter  Condition".to_owned(),
        ];
        assert_eq!(
            split_list(&given),
            ["Patient", "Observation", "Encounter", "Condition"]
        );
    }

    #[test]
    fn resource_types_are_checked_and_deduplicated() {
        let list = |s: &[&str]| resource_type_list(s.iter().map(|t| t.to_string()).collect());
        assert_eq!(
            list(&["Patient", "Observation", "Patient"]).unwrap(),
            ["Patient", "Observation"]
        );
        assert!(
            list(&["patient"])
                .unwrap_err()
                .to_string()
                .contains("not a FHIR")
        );
        assert!(list(&["Patient/1"]).is_err());
        assert!(list(&[]).unwrap_err().to_string().contains("at least one"));
    }

    #[test]
    fn key_values_and_endpoints() {
        assert_eq!(
            parse_key_val("AWS_REGION=eu=1"),
            Ok(("AWS_REGION".into(), "eu=1".into()))
        );
        assert!(parse_key_val("=x").is_err());
        assert!(parse_endpoint("https://x/fhir", "e").is_ok());
        assert!(
            parse_endpoint("ftp://x", "e")
                .unwrap_err()
                .to_string()
                .contains("http(s)")
        );
    }
}
