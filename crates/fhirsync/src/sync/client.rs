//! The Bulk Data client's set-up: its settings for a sync, the token provider, and counting
//! its retries.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use fhir_bulk::{BulkEvent, ClientConfig, EventHandler, RetryReason};

use crate::config::{AuthOptions, SyncOptions};
use crate::run::SyncEvents;

/// The Bulk Data client's settings for a sync, and the token provider (kept for its refresh count).
pub struct SyncClient {
    pub config: ClientConfig,
    pub tokens: Option<smart_auth::TokenProvider>,
    /// Where the sync reports its encoding and commits (the client's own events go to
    /// `config.events`).
    pub sync_events: SyncEvents,
}

impl std::ops::Deref for SyncClient {
    type Target = ClientConfig;
    fn deref(&self) -> &ClientConfig {
        &self.config
    }
}

impl std::ops::DerefMut for SyncClient {
    fn deref_mut(&mut self) -> &mut ClientConfig {
        &mut self.config
    }
}

/// The Bulk Data client's settings for a sync.
pub async fn client_config(
    opts: &SyncOptions,
    _mode: crate::logging::LogMode,
) -> anyhow::Result<SyncClient> {
    let mut config = ClientConfig::new(opts.fhir_endpoint.clone());
    config.max_concurrent_downloads = opts.max_concurrent_downloads.max(1);
    config.gzip = opts.gzip;
    config.storage_options = opts.export_storage_options.clone();
    // The encoder parses and checks every line (and rejects what is not a resource of its
    // file's type with an id): the download need not parse them too.
    config.full_line_checks = false;
    if let Some(t) = opts.timeout {
        config.poll.timeout = t;
    }
    config.poll.max_retry_after = opts.max_retry_after;
    let tokens = authenticate(&mut config, &opts.auth)?;
    Ok(SyncClient {
        config,
        tokens,
        sync_events: SyncEvents::default(),
    })
}

/// With authentication enabled, gives `config` a token provider for its FHIR server and
/// returns it (for its refresh count); without, leaves `config` as it is.
pub fn authenticate(
    config: &mut ClientConfig,
    auth: &AuthOptions,
) -> anyhow::Result<Option<smart_auth::TokenProvider>> {
    if !auth.enabled {
        return Ok(None);
    }
    let provider = smart_auth::TokenProvider::for_endpoint(
        &config.fhir_base_url,
        auth.to_auth_config(),
        config.connect_timeout,
    )
    .context("configuring SMART Backend Services authentication")?;
    config.bearer = Some(Arc::new(provider.clone()));
    Ok(Some(provider))
}

/// Retries by reason (`429`, `5xx`, `network`, `401`), as counted by [`count_retries`].
pub(super) type RetryCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Wraps the client's event handler so retries are counted by reason (for `/metrics`).
pub(super) fn count_retries(inner: Option<EventHandler>, counts: RetryCounts) -> EventHandler {
    Arc::new(move |event: &BulkEvent| {
        if let BulkEvent::Retry { reason, .. } = event {
            let key = match reason {
                RetryReason::RateLimited => "429",
                RetryReason::ServerError(_) => "5xx",
                RetryReason::Network(_) => "network",
                RetryReason::Unauthorized => "401",
            };
            if let Ok(mut c) = counts.lock() {
                *c.entry(key.to_string()).or_default() += 1;
            }
        }
        if let Some(h) = &inner {
            h(event);
        }
    })
}
