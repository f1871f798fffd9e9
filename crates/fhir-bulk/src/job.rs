//! Starting an export (kick-off) and ending it (cancel or delete on the status URL).
use chrono::{DateTime, Utc};
use http::header::{ACCEPT, CACHE_CONTROL};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::BulkEvent;
use crate::request::{ExportRequest, KickOffRequest};
use crate::transport::Outgoing;
use crate::transport::{FHIR_JSON, read_outcome};

/// A started export: what was asked and where to poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportJob {
    pub request: ExportRequest,
    pub kick_off_url: Url,
    pub status_url: Url,
    pub started_at: DateTime<Utc>,
}

impl BulkClient {
    /// Starts an export; retries 429 and transient server errors. A server that refuses a GET
    /// kick-off with 405 (some accept only POST) is asked again with a `Parameters` body.
    pub async fn kick_off(&self, request: &ExportRequest) -> Result<ExportJob, BulkError> {
        let base = &self.inner.config.fhir_base_url;
        let (method, url, body) = match request.kick_off_request(base)? {
            KickOffRequest::Get(url) => (Method::GET, url, None),
            KickOffRequest::Post(url, body) => (Method::POST, url, Some(body)),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        headers.insert("prefer", HeaderValue::from_static("respond-async"));
        // Servers that cache kick-offs (HAPI's job reuse, Azure's request hash) would
        // otherwise answer with an earlier job and its stale transactionTime.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let (mut final_url, mut resp) = self
            .send_retrying(&Outgoing {
                method: method.clone(),
                json: body.as_ref(),
                ..Outgoing::get("kick-off", &url, &headers)
            })
            .await?;
        let mut url = url;
        if method == Method::GET && resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            url = request.endpoint(base)?;
            let body = request.parameters_body();
            tracing::debug!(%url, "GET kick-off refused with 405; asking with POST");
            (final_url, resp) = self
                .send_retrying(&Outgoing {
                    method: Method::POST,
                    json: Some(&body),
                    ..Outgoing::get("kick-off", &url, &headers)
                })
                .await?;
        }
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            let outcome = read_outcome(resp).await.0;
            return Err(BulkError::Http {
                what: "kick-off",
                url,
                status: status.as_u16(),
                outcome,
            });
        }
        let location = resp
            .headers()
            .get("content-location")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BulkError::MissingContentLocation {
                url: url.clone(),
                status: status.as_u16(),
            })?;
        let status_url = final_url.join(location).map_err(|e| BulkError::Http {
            what: "kick-off",
            url: url.clone(),
            status: status.as_u16(),
            outcome: Some(format!("Content-Location {location:?} is not a URL: {e}")),
        })?;
        self.emit(BulkEvent::KickOff {
            url: url.clone(),
            status_url: status_url.clone(),
        });
        Ok(ExportJob {
            request: request.clone(),
            kick_off_url: url,
            status_url,
            started_at: Utc::now(),
        })
    }

    /// Asks the server to cancel the job or delete its files (`DELETE` on the status URL).
    /// A job the server no longer knows counts as deleted.
    pub async fn cancel(&self, job: &ExportJob) -> Result<(), BulkError> {
        let url = &job.status_url;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        let (_, resp) = self
            .send_retrying(&Outgoing {
                method: Method::DELETE,
                ..Outgoing::get("delete", url, &headers)
            })
            .await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            tracing::debug!(status_url = %url, status = status.as_u16(), "export job deleted");
            return Ok(());
        }
        Err(BulkError::Http {
            what: "delete",
            url: url.clone(),
            status: status.as_u16(),
            outcome: read_outcome(resp).await.0,
        })
    }
}
