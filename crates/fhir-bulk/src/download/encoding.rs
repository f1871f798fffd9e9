//! How a server sends a file's bytes when asked for gzip: with `Content-Encoding`, as gzip
//! bytes without it (Aidbox's `application/fhir+ndjson+gzip`), or uncompressed. Downloads
//! handle all three; this lets a diagnosis say which one a server does.
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, HeaderMap, HeaderValue};
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::transport::{Outgoing, Verdict, read_outcome};

/// What a `GET` of a file with `Accept-Encoding: gzip` was answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEncoding {
    /// Compressed in transit, with this `Content-Encoding` (`gzip`, `br`, ...).
    Transfer(String),
    /// Gzip bytes with no `Content-Encoding` saying so (inflated as they stream).
    GzipBytes,
    /// Uncompressed.
    Plain,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl BulkClient {
    /// Asks for the file at `url` with `Accept-Encoding: gzip` and looks at how it comes (the
    /// first bytes only). The FHIR token goes with it when `requires_access_token` and only
    /// to the FHIR origin, as for a download. Files in buckets are not for this.
    pub async fn file_encoding(
        &self,
        url: &Url,
        requires_access_token: bool,
    ) -> Result<FileEncoding, BulkError> {
        if self.inner.stores.locate(url).is_some() {
            return Err(BulkError::InvalidRequest(format!(
                "{url} is read from a bucket, not over HTTP"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+ndjson"));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let (at, resp) = self
            .send_once(&Outgoing {
                with_token: requires_access_token,
                raw_body: true,
                ..Outgoing::get("download", url, &headers)
            })
            .await?;
        let mut resp = match self.classify("download", &at, resp).await {
            Verdict::Pass(resp) => resp,
            Verdict::Retry { error, .. } | Verdict::Fail(error) => return Err(error),
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(BulkError::Http {
                what: "download",
                url: at,
                status: status.as_u16(),
                outcome: read_outcome(resp).await.0,
            });
        }
        let coding = resp
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty() && v != "identity");
        if let Some(coding) = coding {
            return Ok(FileEncoding::Transfer(coding));
        }
        let mut first = Vec::new();
        while first.len() < GZIP_MAGIC.len() {
            match resp.chunk().await {
                Ok(Some(bytes)) => first.extend_from_slice(&bytes),
                Ok(None) => break,
                Err(source) => {
                    return Err(BulkError::Network {
                        what: "download",
                        url: at,
                        source,
                    });
                }
            }
        }
        Ok(if first.starts_with(&GZIP_MAGIC) {
            FileEncoding::GzipBytes
        } else {
            FileEncoding::Plain
        })
    }
}
