//! The client's settings: where the server is, how to poll, retry and download.
use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use crate::auth::SharedBearer;
use crate::events::EventHandler;
use smart_auth::{Backoff, Jitter};

/// Status polling: `Retry-After` is honoured within `[min_delay, max_retry_after]` (the
/// first polls may go below `min_delay`, down to a tenth of it, when the server asks); without
/// it the delay starts at `initial_delay` and grows by half each poll up to `max_delay`.
#[derive(Clone, Debug)]
pub struct PollConfig {
    pub min_delay: Duration,
    /// The longest wait between polls when the server gives no `Retry-After`.
    pub max_delay: Duration,
    /// The longest `Retry-After` honoured: servers have asked for hours (Oracle Health), which
    /// would leave a finished export unfetched for most of a day.
    pub max_retry_after: Duration,
    pub initial_delay: Duration,
    /// Give up waiting for the manifest after this long. Large exports on busy servers take
    /// days, so the default is a week.
    pub timeout: Duration,
}

/// The default of [`PollConfig::max_retry_after`].
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The default of [`PollConfig::timeout`].
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            initial_delay: Duration::from_secs(2),
            timeout: DEFAULT_POLL_TIMEOUT,
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

impl PollConfig {
    /// Status polls without `Retry-After`: from `initial_delay`, growing by half per poll, up
    /// to `max_delay` (and never below `min_delay`).
    pub fn backoff(&self) -> Backoff {
        Backoff::exponential(self.initial_delay, self.max_delay).with_factor(1.5)
    }
}

impl RetryConfig {
    /// Retries without `Retry-After`: doubling from `initial_backoff` up to `max_backoff`, half
    /// of each delay random so that many clients do not retry in lockstep.
    pub fn backoff(&self) -> Backoff {
        Backoff::exponential(self.initial_backoff, self.max_backoff).with_jitter(Jitter::Equal)
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
    /// Settings of the object stores that hold export files in buckets (`s3://`, `gs://`,
    /// Azure blob URLs, ...): object_store keys such as `AWS_REGION`,
    /// `AZURE_STORAGE_ACCOUNT_KEY` or `GOOGLE_SERVICE_ACCOUNT_KEY` (any case), over the
    /// same-named environment variables.
    pub storage_options: BTreeMap<String, String>,
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
            storage_options: BTreeMap::new(),
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
            .field(
                "storage_option_keys",
                &self.storage_options.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
