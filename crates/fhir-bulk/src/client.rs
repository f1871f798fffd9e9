//! The HTTP side: configuration, kick-off, status polling, manifest paging, cancel, and the
//! shared request path (bearer token on the FHIR origin only, redirects followed by hand,
//! one token refresh on 401, retries with `Retry-After` or jittered backoff).
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::Rng;
use reqwest::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use crate::auth::SharedBearer;
use crate::error::BulkError;
use crate::events::{BulkEvent, EventHandler, RetryReason, emit};
use crate::manifest::Manifest;
use crate::request::{ExportRequest, KickOffRequest};
use crate::retry_after::parse_retry_after;

const FHIR_JSON: &str = "application/fhir+json";
const MAX_REDIRECTS: u32 = 10;
/// Error bodies are read only this far: enough for any OperationOutcome worth showing.
const MAX_ERROR_BODY: usize = 256 * 1024;

/// Status polling: `Retry-After` is honoured within `[min_delay, max_delay]` (the first
/// polls may go below `min_delay`, down to a tenth of it, when the server asks); without it
/// the delay starts at `initial_delay` and grows by half each poll up to `max_delay`.
#[derive(Clone, Debug)]
pub struct PollConfig {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub initial_delay: Duration,
    /// Give up waiting for the manifest after this long.
    pub timeout: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
            initial_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// Retries of transient failures (network errors, 429, 502/503/504, `transient` outcomes).
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Retries after the first attempt, per request or file.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
pub struct ClientConfig {
    /// The FHIR server's base URL (`[base]/$export` is the system-level endpoint).
    pub fhir_base_url: Url,
    /// Bearer tokens, sent to the FHIR server's origin only.
    pub bearer: Option<SharedBearer>,
    pub max_concurrent_downloads: usize,
    pub poll: PollConfig,
    pub retry: RetryConfig,
    pub connect_timeout: Duration,
    /// A response body that stays silent this long is treated as a network failure.
    pub read_timeout: Duration,
    /// NDJSON lines longer than this are rejected (bounds memory per download).
    pub max_line_bytes: usize,
    pub events: Option<EventHandler>,
    pub user_agent: String,
    /// Ask for gzip-compressed files (`Accept-Encoding: gzip`): far fewer bytes on real
    /// networks; turning it off saves CPU on both ends when the link is fast.
    pub gzip: bool,
    /// Parse every NDJSON output line as it arrives (a JSON object of the entry's type with
    /// an id) and set bad lines aside as rejects. A consumer that parses every line itself
    /// (the sync's encoder) turns this off so lines are not parsed twice: output files then
    /// keep the source's lines one for one (a line over `max_line_bytes`, still set aside,
    /// and a blank line become empty lines), so the consumer's line numbers are the
    /// server's.
    pub full_line_checks: bool,
}

impl ClientConfig {
    pub fn new(fhir_base_url: Url) -> Self {
        Self {
            fhir_base_url,
            bearer: None,
            max_concurrent_downloads: 4,
            poll: PollConfig::default(),
            retry: RetryConfig::default(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
            max_line_bytes: 64 * 1024 * 1024,
            events: None,
            user_agent: concat!("fhir-bulk/", env!("CARGO_PKG_VERSION")).to_string(),
            gzip: true,
            full_line_checks: true,
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("fhir_base_url", &self.fhir_base_url.as_str())
            .field("bearer", &self.bearer.as_ref().map(|_| ".."))
            .field("max_concurrent_downloads", &self.max_concurrent_downloads)
            .field("poll", &self.poll)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// A started export: what was asked and where to poll.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportJob {
    pub request: ExportRequest,
    pub kick_off_url: Url,
    pub status_url: Url,
    pub started_at: DateTime<Utc>,
}

/// One answer of the status endpoint.
#[derive(Clone, Debug)]
pub enum StatusPoll {
    InProgress {
        progress: Option<String>,
        retry_after: Option<Duration>,
    },
    Complete(Box<Manifest>),
}

/// A Bulk Data client. Cheap to clone.
#[derive(Clone)]
pub struct BulkClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) http: reqwest::Client,
}

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

impl BulkClient {
    pub fn new(config: ClientConfig) -> Result<Self, BulkError> {
        if !matches!(config.fhir_base_url.scheme(), "http" | "https")
            || config.fhir_base_url.cannot_be_a_base()
        {
            return Err(BulkError::Config(format!(
                "FHIR base URL {} must be an http(s) URL",
                config.fhir_base_url
            )));
        }
        if config.max_concurrent_downloads == 0 {
            return Err(BulkError::Config(
                "max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if config.poll.min_delay > config.poll.max_delay {
            return Err(BulkError::Config(
                "poll min_delay is above max_delay".into(),
            ));
        }
        if config.max_line_bytes < 1024 {
            return Err(BulkError::Config(
                "max_line_bytes must be at least 1024".into(),
            ));
        }
        let http = reqwest::Client::builder()
            // Redirects are followed by hand so the token never leaves the FHIR origin.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| BulkError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { config, http }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn emit(&self, event: BulkEvent) {
        emit(&self.inner.config.events, event)
    }

    /// Starts an export; retries 429 and transient server errors.
    pub async fn kick_off(&self, request: &ExportRequest) -> Result<ExportJob, BulkError> {
        let base = &self.inner.config.fhir_base_url;
        let (method, url, body) = match request.kick_off_request(base)? {
            KickOffRequest::Get(url) => (Method::GET, url, None),
            KickOffRequest::Post(url, body) => (Method::POST, url, Some(body)),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        headers.insert("prefer", HeaderValue::from_static("respond-async"));
        let (final_url, resp) = self
            .send_retrying("kick-off", method, &url, &headers, body.as_ref(), true)
            .await?;
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

    /// Reads one resource (`GET [base]/[type]/[id]`) with the same auth and retries as the
    /// export requests, e.g. a Group to learn its members.
    pub async fn read_resource(&self, resource_type: &str, id: &str) -> Result<Value, BulkError> {
        let base = &self.inner.config.fhir_base_url;
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|_| BulkError::Config(format!("{base} cannot be a base URL")))?
            .pop_if_empty()
            .push(resource_type)
            .push(id);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        let (_, resp) = self
            .send_retrying("read", Method::GET, &url, &headers, None, true)
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
        match value.get("resourceType").and_then(Value::as_str) {
            Some(t) if t == resource_type => Ok(value),
            other => Err(BulkError::InvalidResource {
                url,
                message: format!("expected a {resource_type}, got resourceType {other:?}"),
            }),
        }
    }

    /// One poll of the status endpoint. Transient failures are errors here; use
    /// [`BulkClient::wait_for_manifest`] for the retrying loop.
    pub async fn poll_status(&self, job: &ExportJob) -> Result<StatusPoll, BulkError> {
        let url = &job.status_url;
        let (final_url, resp) = self
            .send_once("status", Method::GET, url, &status_headers(), None, true)
            .await?;
        match self.classify("status", url, resp).await {
            Verdict::Pass(resp) => self.status_answer(url, &final_url, resp).await,
            Verdict::Retry { error, .. } | Verdict::Fail(error) => {
                Err(self.export_failed(url, error))
            }
        }
    }

    async fn status_answer(
        &self,
        url: &Url,
        final_url: &Url,
        resp: Response,
    ) -> Result<StatusPoll, BulkError> {
        let status = resp.status();
        match status.as_u16() {
            200 => {
                let body = resp.bytes().await.map_err(|source| BulkError::Network {
                    what: "manifest",
                    url: url.clone(),
                    source,
                })?;
                Ok(StatusPoll::Complete(Box::new(Manifest::parse(
                    &body, final_url,
                )?)))
            }
            202 => Ok(StatusPoll::InProgress {
                progress: resp
                    .headers()
                    .get("x-progress")
                    .and_then(|v| v.to_str().ok())
                    .map(|s| s.chars().take(100).collect()),
                retry_after: retry_after(resp.headers()),
            }),
            404 | 410 => Err(BulkError::JobGone {
                url: url.clone(),
                status: status.as_u16(),
            }),
            s => Err(BulkError::Http {
                what: "status",
                url: url.clone(),
                status: s,
                outcome: read_outcome(resp).await.0,
            }),
        }
    }

    /// Polls until the export completes, then follows and merges partial manifests.
    pub async fn wait_for_manifest(&self, job: &ExportJob) -> Result<Manifest, BulkError> {
        let deadline = Instant::now() + self.inner.config.poll.timeout;
        let result = self.wait_inner(job, deadline).await;
        match &result {
            Ok(m) => self.emit(BulkEvent::StatusComplete {
                status_url: job.status_url.clone(),
                output_files: m.output.len(),
                deleted_files: m.deleted.len(),
                error_files: m.error.len(),
                output_files_by_type: m.output.iter().fold(Default::default(), |mut n, f| {
                    *n.entry(f.resource_type.clone()).or_default() += 1;
                    n
                }),
            }),
            Err(e) => self.emit(BulkEvent::StatusError {
                status_url: job.status_url.clone(),
                message: e.to_string(),
            }),
        }
        result
    }

    async fn wait_inner(&self, job: &ExportJob, deadline: Instant) -> Result<Manifest, BulkError> {
        let mut manifest = self.poll_until_complete(&job.status_url, deadline).await?;
        let mut seen = HashSet::from([job.status_url.clone()]);
        while let Some(next) = manifest.next_link().cloned() {
            if !seen.insert(next.clone()) {
                return Err(BulkError::InvalidManifest {
                    url: next,
                    message: "manifest links form a loop".into(),
                });
            }
            let page = self.poll_until_complete(&next, deadline).await?;
            manifest.merge_page(page);
        }
        Ok(manifest)
    }

    async fn poll_until_complete(
        &self,
        url: &Url,
        deadline: Instant,
    ) -> Result<Manifest, BulkError> {
        let cfg = &self.inner.config;
        let job_url = url;
        let mut polls: u32 = 0;
        let mut failures: u32 = 0;
        loop {
            if Instant::now() >= deadline {
                return Err(BulkError::Timeout {
                    url: url.clone(),
                    after: cfg.poll.timeout,
                });
            }
            let (reason, hint, error) = match self
                .send_once("status", Method::GET, url, &status_headers(), None, true)
                .await
            {
                Err(e @ BulkError::Network { .. }) => (RetryReason::Network(short(&e)), None, e),
                Err(e) => return Err(e),
                Ok((final_url, resp)) => match self.classify("status", url, resp).await {
                    Verdict::Pass(resp) => match self.status_answer(url, &final_url, resp).await {
                        Ok(StatusPoll::Complete(m)) => return Ok(*m),
                        Ok(StatusPoll::InProgress {
                            progress,
                            retry_after,
                        }) => {
                            failures = 0;
                            let delay = match retry_after {
                                Some(d) => hinted_poll_delay(&cfg.poll, d, polls),
                                None => poll_backoff(&cfg.poll, polls),
                            };
                            polls = polls.saturating_add(1);
                            self.emit(BulkEvent::StatusProgress {
                                status_url: job_url.clone(),
                                progress,
                                next_poll_in: delay,
                            });
                            sleep_until_deadline(delay, deadline).await;
                            continue;
                        }
                        Err(e @ BulkError::Network { .. }) => {
                            (RetryReason::Network(short(&e)), None, e)
                        }
                        Err(e) => return Err(e),
                    },
                    // Polling too often is not a failure of the export: wait as asked.
                    Verdict::Retry {
                        reason: RetryReason::RateLimited,
                        hint,
                        ..
                    } => {
                        let delay = hint
                            .map(|d| d.clamp(cfg.poll.min_delay, cfg.poll.max_delay))
                            .unwrap_or_else(|| poll_backoff(&cfg.poll, polls));
                        polls = polls.saturating_add(1);
                        self.emit(BulkEvent::Retry {
                            what: "status",
                            url: url.clone(),
                            attempt: polls,
                            reason: RetryReason::RateLimited,
                            delay,
                        });
                        sleep_until_deadline(delay, deadline).await;
                        continue;
                    }
                    Verdict::Retry {
                        reason,
                        hint,
                        error,
                    } => (reason, hint, error),
                    Verdict::Fail(e) => return Err(self.export_failed(url, e)),
                },
            };
            failures += 1;
            if failures > cfg.retry.max_retries {
                return Err(BulkError::RetriesExhausted {
                    what: "status",
                    url: url.clone(),
                    attempts: failures,
                    last: short(&error),
                });
            }
            let delay = self.retry_delay(hint, failures);
            self.emit(BulkEvent::Retry {
                what: "status",
                url: url.clone(),
                attempt: failures,
                reason,
                delay,
            });
            sleep_until_deadline(delay, deadline).await;
        }
    }

    /// A fatal 5xx on the status endpoint means the export itself failed.
    fn export_failed(&self, url: &Url, e: BulkError) -> BulkError {
        match e {
            BulkError::Http {
                status, outcome, ..
            } if status >= 500 => BulkError::ExportFailed {
                url: url.clone(),
                status,
                message: outcome.unwrap_or_else(|| "no details given".into()),
            },
            other => other,
        }
    }

    /// Asks the server to cancel the job or delete its files (`DELETE` on the status URL).
    /// A job the server no longer knows counts as deleted.
    pub async fn cancel(&self, job: &ExportJob) -> Result<(), BulkError> {
        let url = &job.status_url;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        let (_, resp) = self
            .send_retrying("delete", Method::DELETE, url, &headers, None, true)
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

    /// Whether a bearer token may be sent to `url`: the FHIR server's own origin only.
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.inner.config.fhir_base_url.origin()
    }

    /// Sends one request, following redirects by hand (at most 10) and answering one 401 with a
    /// refreshed token. `with_token` allows the token; it is still only attached on the FHIR
    /// origin, hop by hop. Returns the final URL with the response.
    pub(crate) async fn send_once(
        &self,
        what: &'static str,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        json: Option<&Value>,
        with_token: bool,
    ) -> Result<(Url, Response), BulkError> {
        let bearer = self.inner.config.bearer.as_ref().filter(|_| with_token);
        let mut method = method;
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
            let mut rb = self
                .inner
                .http
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
        what: &'static str,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        json: Option<&Value>,
        with_token: bool,
    ) -> Result<(Url, Response), BulkError> {
        let mut attempt = 0;
        loop {
            let (reason, hint, error) = match self
                .send_once(what, method.clone(), url, headers, json, with_token)
                .await
            {
                Err(e @ BulkError::Network { .. }) => (RetryReason::Network(short(&e)), None, e),
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
                    last: short(&error),
                });
            }
            let delay = self.retry_delay(hint, attempt);
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
                let (outcome, transient) = read_outcome(resp).await;
                let error = BulkError::Http {
                    what,
                    url: url.clone(),
                    status,
                    outcome,
                };
                if transient || matches!(status, 502..=504) {
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

    /// The delay before retry number `attempt` (1-based): the server's `Retry-After` when
    /// given (clamped), else exponential backoff with jitter.
    pub(crate) fn retry_delay(&self, hint: Option<Duration>, attempt: u32) -> Duration {
        let cfg = &self.inner.config;
        match hint {
            Some(d) => d.clamp(
                cfg.poll.min_delay.min(cfg.retry.max_backoff),
                cfg.retry.max_backoff.max(cfg.poll.max_delay),
            ),
            None => backoff(cfg.retry.initial_backoff, cfg.retry.max_backoff, attempt),
        }
    }
}

fn status_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

/// `initial * 2^(attempt-1)`, capped, with "equal jitter" (half fixed, half random) so that
/// many clients do not retry in lockstep.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// A status `Retry-After` within `[floor, max_delay]`, where the floor rises from a tenth
/// of `min_delay` by half each poll up to `min_delay`: an export that is ready almost at once
/// (the server asking for 0 s) is fetched without a second's wait per poll, and a server
/// that keeps asking for 0 s is still not polled in a tight loop.
fn hinted_poll_delay(cfg: &PollConfig, hint: Duration, polls: u32) -> Duration {
    let floor = grown(cfg.min_delay / 10, polls).min(cfg.min_delay);
    hint.clamp(floor, cfg.max_delay.max(floor))
}

fn poll_backoff(cfg: &PollConfig, polls: u32) -> Duration {
    grown(cfg.initial_delay, polls).clamp(cfg.min_delay, cfg.max_delay)
}

/// `d` grown by half per poll.
fn grown(d: Duration, polls: u32) -> Duration {
    d.mul_f64(1.5f64.powi(polls.min(40) as i32))
}

async fn sleep_until_deadline(delay: Duration, deadline: Instant) {
    let wake = (Instant::now() + delay).min(deadline);
    tokio::time::sleep_until(wake).await;
}

pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

fn short(e: &BulkError) -> String {
    match e {
        BulkError::Network { source, .. } => error_chain(source),
        other => other.to_string(),
    }
}

/// An error with its sources, e.g. "error sending request: connection reset by peer".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

/// Reads an error body: the OperationOutcome's issue texts (and whether any is `transient`),
/// or an excerpt of whatever else the server sent.
pub(crate) async fn read_outcome(resp: Response) -> (Option<String>, bool) {
    let mut body = Vec::new();
    let mut resp = resp;
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            body.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    outcome_text(&body)
}

/// Text of an OperationOutcome (`severity code: diagnostics/details`), and whether an issue
/// has code `transient`. Non-FHIR bodies give a trimmed excerpt.
pub fn outcome_text(body: &[u8]) -> (Option<String>, bool) {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && v.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
    {
        let issues = crate::outcome::issues(&v);
        let transient = issues.iter().any(|i| i.code == "transient");
        let text = issues
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return (Some(text).filter(|t| !t.is_empty()), transient);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, false);
    }
    let mut excerpt: String = text.chars().take(300).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    (Some(excerpt.replace(['\n', '\r'], " ")), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        for attempt in 1..30 {
            let d = backoff(i, m, attempt);
            let full = i.saturating_mul(1 << (attempt - 1).min(20)).min(m);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn poll_backoff_is_clamped() {
        let cfg = PollConfig {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            initial_delay: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(poll_backoff(&cfg, 0), Duration::from_millis(50));
        assert_eq!(poll_backoff(&cfg, 100), Duration::from_secs(1));
    }

    #[test]
    fn short_retry_after_hints_are_honoured_only_for_the_first_polls() {
        let cfg = PollConfig::default();
        let zero = Duration::ZERO;
        assert_eq!(hinted_poll_delay(&cfg, zero, 0), Duration::from_millis(100));
        assert_eq!(hinted_poll_delay(&cfg, zero, 1), Duration::from_millis(150));
        let floors: Vec<Duration> = (0..20).map(|p| hinted_poll_delay(&cfg, zero, p)).collect();
        assert!(floors.windows(2).all(|w| w[0] <= w[1]), "{floors:?}");
        assert_eq!(floors[19], cfg.min_delay);
        // Longer hints are taken as given, up to max_delay.
        let five = Duration::from_secs(5);
        assert_eq!(hinted_poll_delay(&cfg, five, 0), five);
        assert_eq!(
            hinted_poll_delay(&cfg, Duration::from_secs(9999), 3),
            cfg.max_delay
        );
    }

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
}
