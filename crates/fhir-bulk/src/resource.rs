//! Reading single resources (a Group to learn its members) and the server's JSON documents
//! (CapabilityStatement, SMART configuration).
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::transport::{FHIR_JSON, Outgoing, read_outcome};

/// The members of a Group as the server lists them (`GET [base]/Group/[id]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupMembers {
    /// Whether the Group lists its members: false for a descriptive group (`actual: false`)
    /// or one without `member` (defined by its characteristics, or one whose server leaves the
    /// list out), whose members a client cannot know.
    pub listed: bool,
    /// `member[].entity.reference` as written: relative (`Patient/1`), absolute or versioned.
    pub references: Vec<String>,
    /// Members without an `entity.reference` (an identifier or a display only).
    pub without_reference: usize,
    /// Members no longer in the group: `inactive: true`, or a `period` that has ended.
    pub inactive: usize,
}

/// The parts of a Group that say who its members are; the rest is not read.
#[derive(Deserialize)]
struct GroupBody {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    actual: Option<bool>,
    member: Option<Vec<MemberBody>>,
}

#[derive(Deserialize)]
struct MemberBody {
    entity: Option<ReferenceBody>,
    inactive: Option<bool>,
    period: Option<PeriodBody>,
}

#[derive(Deserialize)]
struct PeriodBody {
    end: Option<String>,
}

impl MemberBody {
    /// Whether the member has left the group by `now`: `inactive`, or a period whose end (a
    /// FHIR dateTime; a date alone means that whole day) is past.
    fn has_left(&self, now: DateTime<Utc>) -> bool {
        if self.inactive == Some(true) {
            return true;
        }
        let Some(end) = self.period.as_ref().and_then(|p| p.end.as_deref()) else {
            return false;
        };
        let end = DateTime::parse_from_rfc3339(end)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                let day = NaiveDate::parse_from_str(end, "%Y-%m-%d").ok()?;
                Some(day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc())
            });
        end.is_some_and(|end| end <= now)
    }
}

#[derive(Deserialize)]
struct ReferenceBody {
    reference: Option<String>,
}

impl BulkClient {
    /// Reads one resource (`GET [base]/[type]/[id]`) with the same auth and retries as the
    /// export requests.
    pub async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Value, BulkError> {
        let (url, value) = self.read_json_at(&[resource_type, id]).await?;
        let found = value.get("resourceType").and_then(Value::as_str);
        check_type(&url, resource_type, found)?;
        Ok(value)
    }

    /// `GET [base]/<segments>` as JSON (the CapabilityStatement at `metadata`, the SMART
    /// configuration at `.well-known/smart-configuration`), with the export requests' auth
    /// and retries.
    pub async fn read_json(&self, segments: &[&str]) -> Result<Value, BulkError> {
        Ok(self.read_json_at(segments).await?.1)
    }

    async fn read_json_at(&self, segments: &[&str]) -> Result<(Url, Value), BulkError> {
        let (url, body) = self.read_bytes(segments).await?;
        let value = serde_json::from_slice(&body).map_err(|e| BulkError::InvalidResource {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Ok((url, value))
    }

    /// Reads Group `id` for its members. Only `actual` and `member[].entity.reference` are
    /// parsed, so a group of many thousands of members costs little more than its bytes.
    pub async fn read_group_members(&self, id: &str) -> Result<GroupMembers, BulkError> {
        let (url, body) = self.read_bytes(&["Group", id]).await?;
        let group: GroupBody =
            serde_json::from_slice(&body).map_err(|e| BulkError::InvalidResource {
                url: url.clone(),
                message: e.to_string(),
            })?;
        check_type(&url, "Group", group.resource_type.as_deref())?;
        let Some(member) = group.member.filter(|_| group.actual != Some(false)) else {
            return Ok(GroupMembers::default());
        };
        let mut members = GroupMembers {
            listed: true,
            ..GroupMembers::default()
        };
        let now = Utc::now();
        for m in member {
            if m.has_left(now) {
                members.inactive += 1;
                continue;
            }
            match m.entity.and_then(|e| e.reference) {
                Some(r) => members.references.push(r),
                None => members.without_reference += 1,
            }
        }
        Ok(members)
    }

    /// `GET [base]/<segments>`: the final URL and the body of a 200.
    async fn read_bytes(&self, segments: &[&str]) -> Result<(Url, Bytes), BulkError> {
        let base = &self.inner.config.fhir_base_url;
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| BulkError::Config(format!("{base} cannot be a base URL")))?
            .pop_if_empty()
            .extend(segments);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        let (_, resp) = self
            .send_retrying(&Outgoing::get("read", &url, &headers))
            .await?;
        let status = resp.status();
        if status != StatusCode::OK {
            let outcome = read_outcome(resp).await.0;
            return Err(BulkError::Http {
                what: "read",
                url,
                status: status.as_u16(),
                outcome,
            });
        }
        let body = resp.bytes().await.map_err(|source| BulkError::Network {
            what: "read",
            url: url.clone(),
            source,
        })?;
        Ok((url, body))
    }
}

fn check_type(url: &Url, expected: &str, found: Option<&str>) -> Result<(), BulkError> {
    match found {
        Some(t) if t == expected => Ok(()),
        other => Err(BulkError::InvalidResource {
            url: url.clone(),
            message: format!("expected a {expected}, got resourceType {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_who_left_are_told_from_current_ones() {
        let now = DateTime::parse_from_rfc3339("2026-06-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let member = |json: &str| serde_json::from_str::<MemberBody>(json).unwrap();
        for (json, left) in [
            (r#"{"entity":{"reference":"Patient/1"}}"#, false),
            (r#"{"inactive":true}"#, true),
            (r#"{"inactive":false}"#, false),
            (r#"{"period":{"end":"2026-06-14"}}"#, true),
            (r#"{"period":{"end":"2026-06-15"}}"#, false),
            (r#"{"period":{"end":"2026-06-15T11:00:00Z"}}"#, true),
            (r#"{"period":{"end":"2026-06-15T13:00:00+00:00"}}"#, false),
            (r#"{"period":{"start":"2020-01-01"}}"#, false),
            (r#"{"period":{"end":"2026"}}"#, false),
        ] {
            assert_eq!(member(json).has_left(now), left, "{json}");
        }
    }
}
