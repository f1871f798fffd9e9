//! Reading single resources, e.g. a Group to learn its members.
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::transport::{FHIR_JSON, Outgoing, read_outcome};

impl BulkClient {
    /// Reads one resource (`GET [base]/[type]/[id]`) with the same auth and retries as the
    /// export requests, e.g. a Group to learn its members.
    pub async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Value, BulkError> {
        let value = self.read_json(&[resource_type, id]).await?;
        match value.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == resource_type => Ok(value),
            other => Err(BulkError::InvalidResource {
                url: self.url_below_base(&[resource_type, id])?,
                message: format!("expected a {resource_type}, got resourceType {other:?}"),
            }),
        }
    }

    /// `GET [base]/<segments>` as JSON (the CapabilityStatement at `metadata`, the SMART
    /// configuration at `.well-known/smart-configuration`), with the export requests' auth
    /// and retries.
    pub async fn read_json(&self, segments: &[&str]) -> Result<Value, BulkError> {
        let url = self.url_below_base(segments)?;
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
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| BulkError::InvalidResource {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(value)
    }

    fn url_below_base(&self, segments: &[&str]) -> Result<Url, BulkError> {
        let base = &self.inner.config.fhir_base_url;
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| BulkError::Config(format!("{base} cannot be a base URL")))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}
