//! Events for observers (progress bars, metrics), mirrored as `tracing` events whose `event`
//! field follows the SMART bulk-data-client `log.ndjson` vocabulary.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

/// What kind of manifest entry a file comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Output,
    Deleted,
    Error,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Output => "output",
            FileKind::Deleted => "deleted",
            FileKind::Error => "error",
        }
    }
}

/// Why a request is being retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// 429 Too Many Requests.
    RateLimited,
    /// 5xx (502/503/504, or an OperationOutcome with issue code `transient`).
    ServerError(u16),
    /// Connection failure, reset, timeout or truncated body.
    Network(String),
    /// 401 answered with a refreshed token.
    Unauthorized,
}

impl std::fmt::Display for RetryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryReason::RateLimited => f.write_str("HTTP 429"),
            RetryReason::ServerError(s) => write!(f, "HTTP {s}"),
            RetryReason::Network(m) => write!(f, "network: {m}"),
            RetryReason::Unauthorized => f.write_str("HTTP 401, token refreshed"),
        }
    }
}

#[derive(Clone, Debug)]
pub enum BulkEvent {
    KickOff {
        url: Url,
        status_url: Url,
    },
    StatusProgress {
        status_url: Url,
        progress: Option<String>,
        next_poll_in: Duration,
    },
    StatusComplete {
        status_url: Url,
        output_files: usize,
        deleted_files: usize,
        error_files: usize,
        /// Output files per resource type (all pages of a partial manifest).
        output_files_by_type: BTreeMap<String, usize>,
    },
    StatusError {
        status_url: Url,
        message: String,
    },
    DownloadRequest {
        url: Url,
        resource_type: String,
        kind: FileKind,
        attempt: u32,
    },
    /// Bytes received since the last progress event for this file (for byte counters).
    DownloadProgress {
        url: Url,
        bytes: u64,
    },
    DownloadComplete {
        url: Url,
        resource_type: String,
        kind: FileKind,
        path: PathBuf,
        lines: u64,
        bytes: u64,
        rejected: u64,
    },
    DownloadError {
        url: Url,
        resource_type: String,
        kind: FileKind,
        message: String,
    },
    Retry {
        what: &'static str,
        url: Url,
        attempt: u32,
        reason: RetryReason,
        delay: Duration,
    },
    /// Something worth a person's attention that does not stop the export.
    Warning {
        url: Option<Url>,
        message: String,
    },
    ExportComplete {
        files: usize,
        resources: u64,
        bytes: u64,
        rejected: u64,
        duration: Duration,
    },
}

/// Receives every event; must be cheap (it runs on the download tasks).
pub type EventHandler = Arc<dyn Fn(&BulkEvent) + Send + Sync>;

pub(crate) fn emit(handler: &Option<EventHandler>, event: BulkEvent) {
    trace(&event);
    if let Some(h) = handler {
        h(&event);
    }
}

fn trace(event: &BulkEvent) {
    match event {
        BulkEvent::KickOff { url, status_url } => {
            tracing::info!(event = "kickoff", url = %url, status_url = %status_url, "export started")
        }
        BulkEvent::StatusProgress {
            status_url,
            progress,
            next_poll_in,
        } => tracing::info!(
            event = "status_progress",
            status_url = %status_url,
            progress = progress.as_deref().unwrap_or(""),
            next_poll_ms = next_poll_in.as_millis() as u64,
            "export in progress"
        ),
        BulkEvent::StatusComplete {
            status_url,
            output_files,
            deleted_files,
            error_files,
            ..
        } => tracing::info!(
            event = "status_complete",
            status_url = %status_url,
            output_files,
            deleted_files,
            error_files,
            "export ready"
        ),
        BulkEvent::StatusError {
            status_url,
            message,
        } => {
            tracing::error!(event = "status_error", status_url = %status_url, message = %message, "export failed")
        }
        BulkEvent::DownloadRequest {
            url,
            resource_type,
            kind,
            attempt,
        } => tracing::debug!(
            event = "download_request",
            url = %url,
            resource_type = %resource_type,
            kind = kind.as_str(),
            attempt,
            "downloading"
        ),
        BulkEvent::DownloadProgress { .. } => {}
        BulkEvent::DownloadComplete {
            url,
            resource_type,
            kind,
            path,
            lines,
            bytes,
            rejected,
        } => tracing::info!(
            event = "download_complete",
            url = %url,
            resource_type = %resource_type,
            kind = kind.as_str(),
            path = %path.display(),
            lines,
            bytes,
            rejected,
            "file downloaded"
        ),
        BulkEvent::DownloadError {
            url,
            resource_type,
            kind,
            message,
        } => tracing::error!(
            event = "download_error",
            url = %url,
            resource_type = %resource_type,
            kind = kind.as_str(),
            message = %message,
            "file download failed"
        ),
        BulkEvent::Retry {
            what,
            url,
            attempt,
            reason,
            delay,
        } => tracing::warn!(
            event = "retry",
            what,
            url = %url,
            attempt,
            reason = %reason,
            delay_ms = delay.as_millis() as u64,
            "retrying"
        ),
        BulkEvent::Warning { url, message } => match url {
            Some(url) => tracing::warn!(event = "warning", url = %url, "{message}"),
            None => tracing::warn!(event = "warning", "{message}"),
        },
        BulkEvent::ExportComplete {
            files,
            resources,
            bytes,
            rejected,
            duration,
        } => tracing::info!(
            event = "export_complete",
            files,
            resources,
            bytes,
            rejected,
            duration_ms = duration.as_millis() as u64,
            "export complete"
        ),
    }
}
