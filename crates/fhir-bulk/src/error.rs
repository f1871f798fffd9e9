//! Typed errors with the context a person needs to act on them: URL, HTTP status, server text.
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Why a file could not be downloaded (one entry per failed file).
#[derive(Debug, Clone)]
pub struct FileFailure {
    pub url: Url,
    pub resource_type: String,
    pub message: String,
    /// The server no longer has the file (404/410): only a new export brings its data.
    pub gone: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("invalid export request: {0}")]
    InvalidRequest(String),

    #[error("invalid client configuration: {0}")]
    Config(String),

    #[error("{what} {url}: HTTP {status}{}", outcome_suffix(.outcome))]
    Http {
        what: &'static str,
        url: Url,
        status: u16,
        /// The OperationOutcome's diagnostics/details text, or a short body excerpt.
        outcome: Option<String>,
    },

    #[error("{what} {url}: {}", error_chain(.source))]
    Network {
        what: &'static str,
        url: Url,
        #[source]
        source: reqwest::Error,
    },

    #[error("{what} {url}: gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        what: &'static str,
        url: Url,
        attempts: u32,
        last: String,
    },

    #[error(
        "export job {url} is no longer known to the server (HTTP {status}); start a new export"
    )]
    JobGone { url: Url, status: u16 },

    #[error("export failed on the server ({url}, HTTP {status}): {message}")]
    ExportFailed {
        url: Url,
        status: u16,
        message: String,
    },

    #[error("kick-off {url} answered HTTP {status} without a Content-Location header")]
    MissingContentLocation { url: Url, status: u16 },

    #[error("{url}: not a FHIR resource: {message}")]
    InvalidResource { url: Url, message: String },

    #[error("invalid manifest from {url}: {message}")]
    InvalidManifest { url: Url, message: String },

    #[error("export {url} did not complete within {after:?}")]
    Timeout { url: Url, after: Duration },

    #[error(
        "file {url} is gone (HTTP {status}): the export's files have expired or were removed; start a new export"
    )]
    FileGone { url: Url, status: u16 },

    #[error("export file {url}: {message}")]
    CloudStorage { url: Url, message: String },

    #[error("redirect from {url} is invalid: {message}")]
    Redirect { url: Url, message: String },

    #[error("access token: {0}")]
    Auth(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("export state {path}: {message}")]
    State { path: PathBuf, message: String },

    #[error(
        "{} is in use: another export into it is running (it holds the lock {}); try again when it has finished",
        .dir.display(), .lock.display()
    )]
    DirLocked { dir: PathBuf, lock: PathBuf },

    #[error("{} of {total} files failed to download; first: {} ({})", .failures.len(), first_url(.failures), first_message(.failures))]
    DownloadsFailed {
        total: usize,
        failures: Vec<FileFailure>,
    },
}

impl BulkError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BulkError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when running the same export again (or resuming it) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BulkError::Network { .. }
                | BulkError::RetriesExhausted { .. }
                | BulkError::Timeout { .. }
        )
    }

    /// True when the export's job can no longer deliver its data: the server forgot the job,
    /// failed it, or dropped its files. Resuming it again fails the same way; a new export of
    /// the same request may succeed.
    pub fn needs_new_export(&self) -> bool {
        match self {
            BulkError::JobGone { .. }
            | BulkError::ExportFailed { .. }
            | BulkError::FileGone { .. } => true,
            BulkError::DownloadsFailed { failures, .. } => failures.iter().any(|f| f.gone),
            _ => false,
        }
    }

    /// True when the server refused the kick-off because of the parameter `name` (a refused
    /// kick-off whose text names it), as servers without `_since` or `_typeFilter` do.
    pub fn kick_off_refuses(&self, name: &str) -> bool {
        self.is_refused_kick_off()
            && matches!(self, BulkError::Http { outcome: Some(text), .. } if text.contains(name))
    }

    /// True when the kick-off was refused with 429 until the retries ran out: the server
    /// runs one export at a time (per client, per Group or server-wide) and another is
    /// running.
    pub fn kick_off_throttled(&self) -> bool {
        matches!(
            self,
            BulkError::RetriesExhausted { what: "kick-off", last, .. } if last.contains("HTTP 429")
        )
    }

    /// True when the server refused the kick-off request itself (400, 405, 422 or 501): the
    /// same request fails again, while one made another way (other parameters, another
    /// level) may be accepted.
    pub fn is_refused_kick_off(&self) -> bool {
        matches!(
            self,
            BulkError::Http {
                what: "kick-off",
                status: 400 | 405 | 422 | 501,
                ..
            }
        )
    }

    /// The error in a few words, for retry events and "last error" texts: a network failure
    /// without its URL (the event carries it), anything else as displayed.
    pub(crate) fn brief(&self) -> String {
        match self {
            BulkError::Network { source, .. } => error_chain(source),
            other => other.to_string(),
        }
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

fn outcome_suffix(outcome: &Option<String>) -> String {
    match outcome {
        Some(text) if !text.is_empty() => format!(": {text}"),
        _ => String::new(),
    }
}

fn first_url(failures: &[FileFailure]) -> String {
    failures
        .first()
        .map(|f| f.url.to_string())
        .unwrap_or_default()
}

fn first_message(failures: &[FileFailure]) -> String {
    failures
        .first()
        .map(|f| f.message.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(gone: bool) -> FileFailure {
        FileFailure {
            url: Url::parse("https://fhir.example/files/1").unwrap(),
            resource_type: "Patient".into(),
            message: "m".into(),
            gone,
        }
    }

    #[test]
    fn refused_parameters_and_throttled_kick_offs_are_recognised() {
        let url = Url::parse("https://fhir.example/Group/g/$export").unwrap();
        let http = |what, status, text: &str| BulkError::Http {
            what,
            url: url.clone(),
            status,
            outcome: Some(text.into()),
        };
        let since = "error not-supported: The _since parameter is not supported";
        assert!(http("kick-off", 400, since).kick_off_refuses("_since"));
        assert!(!http("kick-off", 400, since).kick_off_refuses("_typeFilter"));
        assert!(!http("kick-off", 500, since).kick_off_refuses("_since"));
        assert!(!http("status", 400, since).kick_off_refuses("_since"));
        let exhausted = |last: &str| BulkError::RetriesExhausted {
            what: "kick-off",
            url: url.clone(),
            attempts: 7,
            last: last.into(),
        };
        assert!(exhausted("kick-off https://x/$export: HTTP 429: busy").kick_off_throttled());
        assert!(!exhausted("kick-off https://x/$export: HTTP 503").kick_off_throttled());
    }

    #[test]
    fn only_a_job_that_can_no_longer_deliver_needs_a_new_export() {
        let url = Url::parse("https://fhir.example/status/1").unwrap();
        let downloads = |gone: &[bool]| BulkError::DownloadsFailed {
            total: 3,
            failures: gone.iter().map(|g| failure(*g)).collect(),
        };
        assert!(
            BulkError::JobGone {
                url: url.clone(),
                status: 404
            }
            .needs_new_export()
        );
        assert!(
            BulkError::FileGone {
                url: url.clone(),
                status: 410
            }
            .needs_new_export()
        );
        let failed = BulkError::ExportFailed {
            url: url.clone(),
            status: 500,
            message: "x".into(),
        };
        assert!(failed.needs_new_export());
        assert!(downloads(&[false, true]).needs_new_export());
        assert!(!downloads(&[false, false]).needs_new_export());
        assert!(
            !BulkError::Timeout {
                url,
                after: Duration::from_secs(1)
            }
            .needs_new_export()
        );
    }

    #[test]
    fn a_kick_off_the_server_refuses_is_told_from_other_failures() {
        let http = |what, status| BulkError::Http {
            what,
            url: Url::parse("https://fhir.example/Group/g/$export").unwrap(),
            status,
            outcome: None,
        };
        assert!(http("kick-off", 400).is_refused_kick_off());
        assert!(http("kick-off", 422).is_refused_kick_off());
        assert!(!http("kick-off", 429).is_refused_kick_off());
        assert!(!http("kick-off", 403).is_refused_kick_off());
        assert!(!http("read", 400).is_refused_kick_off());
    }
}
