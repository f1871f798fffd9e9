//! The request path every call goes through: the bearer token on the FHIR origin only,
//! redirects followed by hand, one token refresh on 401, retries of transient failures, and
//! the reading of error bodies.
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Method, StatusCode};
use reqwest::Response;
use serde_json::Value;
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::{BulkEvent, RetryReason};
use crate::retry::{retry_after, retry_delay};

pub(crate) const FHIR_JSON: &str = "application/fhir+json";
const MAX_REDIRECTS: u32 = 10;
/// Error bodies are read only this far: enough for any OperationOutcome worth showing.
const MAX_ERROR_BODY: usize = 256 * 1024;

/// How a response is to be treated by the retry loops.
pub(crate) enum Verdict {
    Pass(Response),
    Retry {
        reason: RetryReason,
        hint: Option<Duration>,
        error: BulkError,
    },
    Fail(BulkError),
}

/// One request to send: what it is for (in errors and events), method, URL, headers, an
/// optional JSON body, and whether the FHIR token may go with it.
pub(crate) struct Outgoing<'a> {
    pub what: &'static str,
    pub method: Method,
    pub url: &'a Url,
    pub headers: &'a HeaderMap,
    pub json: Option<&'a Value>,
    pub with_token: bool,
    /// Leave the body as sent (see [`crate::client::Inner::raw_http`]).
    pub raw_body: bool,
}

impl<'a> Outgoing<'a> {
    /// A `GET` with the FHIR token (on the FHIR origin).
    pub fn get(what: &'static str, url: &'a Url, headers: &'a HeaderMap) -> Self {
        Self {
            what,
            method: Method::GET,
            url,
            headers,
            json: None,
            with_token: true,
            raw_body: false,
        }
    }
}

impl BulkClient {
    /// Sends one request, following redirects by hand (at most 10) and answering one 401 with a
    /// refreshed token. `with_token` allows the token; it is still only attached on the FHIR
    /// origin, hop by hop. Returns the final URL with the response.
    pub(crate) async fn send_once(&self, out: &Outgoing<'_>) -> Result<(Url, Response), BulkError> {
        let &Outgoing {
            what,
            ref method,
            url,
            headers,
            json,
            with_token,
            raw_body,
        } = out;
        let http = if raw_body {
            &self.inner.raw_http
        } else {
            &self.inner.http
        };
        let bearer = self.inner.config.bearer.as_ref().filter(|_| with_token);
        let mut method = method.clone();
        let mut url = url.clone();
        let mut json = json;
        let mut refreshed = false;
        let mut hops = 0;
        loop {
            let token = match bearer {
                Some(b) if self.same_origin(&url) => Some(
                    b.token()
                        .await
                        .map_err(|e| BulkError::Auth(e.to_string()))?,
                ),
                _ => None,
            };
            let mut rb = http
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(t) = &token {
                rb = rb.header(AUTHORIZATION, t.clone());
            }
            if let Some(body) = json {
                let bytes = serde_json::to_vec(body)
                    .map_err(|e| BulkError::InvalidRequest(e.to_string()))?;
                rb = rb.header(CONTENT_TYPE, FHIR_JSON).body(bytes);
            }
            let resp = rb.send().await.map_err(|source| BulkError::Network {
                what,
                url: url.clone(),
                source,
            })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED
                && let (Some(b), Some(t)) = (bearer, &token)
                && !refreshed
            {
                refreshed = true;
                b.refresh(t)
                    .await
                    .map_err(|e| BulkError::Auth(e.to_string()))?;
                self.emit(BulkEvent::Retry {
                    what,
                    url: url.clone(),
                    attempt: 1,
                    reason: RetryReason::Unauthorized,
                    delay: Duration::ZERO,
                });
                continue;
            }
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let Some(location) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok())
                else {
                    return Ok((url, resp));
                };
                let next = url.join(location).map_err(|e| BulkError::Redirect {
                    url: url.clone(),
                    message: format!("Location {location:?} is not a URL: {e}"),
                })?;
                if !matches!(next.scheme(), "http" | "https") {
                    return Err(BulkError::Redirect {
                        url,
                        message: format!("Location {next} is not http(s)"),
                    });
                }
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(BulkError::Redirect {
                        url,
                        message: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                if status == StatusCode::SEE_OTHER
                    || (method == Method::POST && status.as_u16() < 303)
                {
                    method = Method::GET;
                    json = None;
                }
                url = next;
                continue;
            }
            return Ok((url, resp));
        }
    }

    /// [`Self::send_once`] with retries of transient failures. Returns any other response
    /// (including 4xx) for the caller to interpret; a non-transient 5xx is an error.
    pub(crate) async fn send_retrying(
        &self,
        out: &Outgoing<'_>,
    ) -> Result<(Url, Response), BulkError> {
        let (what, url) = (out.what, out.url);
        let mut attempt = 0;
        loop {
            let (reason, hint, error) = match self.send_once(out).await {
                Err(e @ BulkError::Network { .. }) => (RetryReason::Network(e.brief()), None, e),
                Err(e) => return Err(e),
                Ok((final_url, resp)) => match self.classify(what, url, resp).await {
                    Verdict::Pass(resp) => return Ok((final_url, resp)),
                    Verdict::Retry {
                        reason,
                        hint,
                        error,
                    } => (reason, hint, error),
                    Verdict::Fail(e) => return Err(e),
                },
            };
            attempt += 1;
            if attempt > self.inner.config.retry.max_retries {
                return Err(BulkError::RetriesExhausted {
                    what,
                    url: url.clone(),
                    attempts: attempt,
                    last: error.brief(),
                });
            }
            let delay = retry_delay(&self.inner.config, hint, attempt);
            self.emit(BulkEvent::Retry {
                what,
                url: url.clone(),
                attempt,
                reason,
                delay,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Sorts a response into pass / retry / fail. Reads the body only of error responses.
    pub(crate) async fn classify(&self, what: &'static str, url: &Url, resp: Response) -> Verdict {
        let status = resp.status().as_u16();
        let hint = retry_after(resp.headers());
        match status {
            429 | 408 => {
                let (outcome, _) = read_outcome(resp).await;
                let reason = if status == 429 {
                    RetryReason::RateLimited
                } else {
                    RetryReason::ServerError(status)
                };
                Verdict::Retry {
                    reason,
                    hint,
                    error: BulkError::Http {
                        what,
                        url: url.clone(),
                        status,
                        outcome,
                    },
                }
            }
            500..=599 => {
                let ErrorBody {
                    text: outcome,
                    transient,
                    lasting,
                } = read_error_body(resp).await;
                let error = BulkError::Http {
                    what,
                    url: url.clone(),
                    status,
                    outcome,
                };
                // A bare 500 is retried too: some servers (Oracle Health) send 500 for every
                // server error, passing ones included. One whose OperationOutcome names a
                // lasting problem (`not-supported`, `invalid`, ...) is not.
                let retry = transient || matches!(status, 502..=504) || (status == 500 && !lasting);
                if retry {
                    Verdict::Retry {
                        reason: RetryReason::ServerError(status),
                        hint,
                        error,
                    }
                } else {
                    Verdict::Fail(error)
                }
            }
            _ => Verdict::Pass(resp),
        }
    }
}

/// An error response's body, as far as the client interprets it.
pub(crate) struct ErrorBody {
    /// The OperationOutcome's issue texts, or an excerpt of whatever else the server sent.
    pub text: Option<String>,
    /// An issue has code `transient`.
    pub transient: bool,
    /// An issue is fatal, or an error that trying again will not cure (`not-supported`,
    /// `invalid`, `security`, ...).
    pub lasting: bool,
}

/// Reads an error body (its first [`MAX_ERROR_BODY`] bytes).
pub(crate) async fn read_error_body(resp: Response) -> ErrorBody {
    let mut body = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    error_body(&body)
}

/// Reads an error body: the OperationOutcome's issue texts (and whether any is `transient`),
/// or an excerpt of whatever else the server sent.
pub(crate) async fn read_outcome(resp: Response) -> (Option<String>, bool) {
    let body = read_error_body(resp).await;
    (body.text, body.transient)
}

/// Text of an OperationOutcome (`severity code: diagnostics/details`), and whether an issue
/// has code `transient`. Non-FHIR bodies give a trimmed excerpt.
pub fn outcome_text(body: &[u8]) -> (Option<String>, bool) {
    let body = error_body(body);
    (body.text, body.transient)
}

fn error_body(body: &[u8]) -> ErrorBody {
    // Issue codes that say the failure may pass.
    const PASSING: &[&str] = &[
        "transient",
        "exception",
        "timeout",
        "throttled",
        "incomplete",
    ];
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
    {
        let issues = crate::outcome::issues(&v);
        let transient = issues.iter().any(|i| i.code == "transient");
        let lasting = issues.iter().any(|i| match i.severity.as_str() {
            "fatal" => true,
            "error" => !i.code.is_empty() && !PASSING.contains(&i.code.as_str()),
            _ => false,
        });
        let text = issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return ErrorBody {
            text: Some(text).filter(|t| !t.is_empty()),
            transient,
            lasting,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let excerpt = (!text.is_empty()).then(|| {
        let mut excerpt: String = text.chars().take(300).collect();
        if excerpt.len() < text.len() {
            excerpt.push('…');
        }
        excerpt.replace(['\n', '\r'], " ")
    });
    ErrorBody {
        text: excerpt,
        transient: false,
        lasting: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_texts() {
        let oo = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient","diagnostics":"try later"},{"severity":"fatal","code":"exception","details":{"text":"disk full"}}]}"#;
        let (text, transient) = outcome_text(oo);
        assert_eq!(
            text.as_deref(),
            Some("error transient: try later; fatal exception: disk full")
        );
        assert!(transient);
        assert_eq!(
            outcome_text(b"  Bad gateway\n").0.as_deref(),
            Some("Bad gateway")
        );
        assert_eq!(outcome_text(b""), (None, false));
    }

    #[test]
    fn lasting_problems_are_told_from_passing_ones() {
        let oo = |severity: &str, code: &str| {
            format!(
                r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"{severity}","code":"{code}"}}]}}"#
            )
        };
        for (severity, code, lasting) in [
            ("error", "not-supported", true),
            ("fatal", "invalid", true),
            ("fatal", "exception", true),
            ("error", "exception", false),
            ("error", "transient", false),
            ("warning", "invalid", false),
        ] {
            let body = error_body(oo(severity, code).as_bytes());
            assert_eq!(body.lasting, lasting, "{severity} {code}");
        }
        assert!(!error_body(b"Internal Server Error").lasting);
    }
}
