//! Waiting for the export: status polls (honouring `Retry-After` and `X-Progress`), retries of
//! transient failures, and the pages of a partial manifest followed and merged.
use std::collections::HashSet;
use std::time::Duration;

use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};
use reqwest::Response;
use tokio::time::Instant;
use url::Url;

use crate::client::BulkClient;
use crate::error::BulkError;
use crate::events::{BulkEvent, RetryReason};
use crate::job::ExportJob;
use crate::manifest::Manifest;
use crate::retry::{
    poll_delay, retry_after, retry_delay, sleep_until_deadline, throttled_poll_delay,
};
use crate::transport::Outgoing;
use crate::transport::{Verdict, read_outcome};

/// One answer of the status endpoint.
#[derive(Clone, Debug)]
pub enum StatusPoll {
    InProgress {
        progress: Option<String>,
        retry_after: Option<Duration>,
    },
    Complete(Box<Manifest>),
}

impl BulkClient {
    /// One poll of the status endpoint. Transient failures are errors here; use
    /// [`BulkClient::wait_for_manifest`] for the retrying loop.
    pub async fn poll_status(&self, job: &ExportJob) -> Result<StatusPoll, BulkError> {
        let url = &job.status_url;
        let (final_url, resp) = self
            .send_once(&Outgoing::get("status", url, &status_headers()))
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
                Ok(StatusPoll::Complete(Box::new(Manifest::parse_for(
                    &body,
                    final_url,
                    Some(&self.inner.config.fhir_base_url),
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
            manifest
                .merge_page(page)
                .map_err(|message| BulkError::InvalidManifest { url: next, message })?;
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
                .send_once(&Outgoing::get("status", url, &status_headers()))
                .await
            {
                Err(e @ BulkError::Network { .. }) => (RetryReason::Network(e.brief()), None, e),
                Err(e) => return Err(e),
                Ok((final_url, resp)) => match self.classify("status", url, resp).await {
                    Verdict::Pass(resp) => match self.status_answer(url, &final_url, resp).await {
                        Ok(StatusPoll::Complete(m)) => return Ok(*m),
                        Ok(StatusPoll::InProgress {
                            progress,
                            retry_after,
                        }) => {
                            failures = 0;
                            let delay = poll_delay(&cfg.poll, retry_after, polls);
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
                            (RetryReason::Network(e.brief()), None, e)
                        }
                        Err(e) => return Err(e),
                    },
                    // Polling too often is not a failure of the export: wait as asked.
                    Verdict::Retry {
                        reason: RetryReason::RateLimited,
                        hint,
                        ..
                    } => {
                        let delay = throttled_poll_delay(&cfg.poll, hint, polls);
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
                    last: error.brief(),
                });
            }
            let delay = retry_delay(cfg, hint, failures);
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
}

fn status_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    headers
}
