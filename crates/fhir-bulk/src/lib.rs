//! FHIR Bulk Data Access (`$export`) client: kick-off, polling, streaming downloads, resume.
//!
//! ```no_run
//! # async fn run() -> Result<(), fhir_bulk::BulkError> {
//! use fhir_bulk::{BulkClient, ClientConfig, ExportOptions, ExportRequest};
//! let client = BulkClient::new(ClientConfig::new("https://fhir.example.org/r4/".parse().unwrap()))?;
//! let request = ExportRequest { types: vec!["Patient".into()], ..ExportRequest::system() };
//! let summary = client.export_to_dir(&request, "out".as_ref(), &ExportOptions::default()).await?;
//! println!("{} resources", summary.resources);
//! # Ok(()) }
//! ```
// Errors carry their URL and server text by value; they are on cold paths, so their size
// costs nothing measurable and boxing would only make them clumsier to match.
#![allow(clippy::result_large_err)]

mod atomic;
mod auth;
mod client;
mod config;
mod download;
mod error;
mod events;
mod export;
mod job;
mod lock;
mod manifest;
mod outcome;
mod request;
mod resource;
mod retry;
mod retry_after;
mod state;
mod status;
mod transport;

pub use atomic::{AtomicFile, write_file_atomically};
pub use auth::{AuthFailure, BearerSource, SharedBearer, StaticBearer};
pub use client::BulkClient;
pub use config::{
    ClientConfig, DEFAULT_MAX_RETRY_AFTER, DEFAULT_POLL_TIMEOUT, PollConfig, RetryConfig,
};
pub use download::{
    DownloadOptions, DownloadedFile, Downloads, FileEncoding, PlannedFile, RejectedLine,
    check_line, plan,
};
pub use error::{BulkError, FileFailure};
pub use events::{BulkEvent, EventHandler, FileKind, RetryReason};
pub use export::{EXPORT_LOCK_FILE, ExportOptions, ExportSummary, MANIFEST_FILE};
pub use job::ExportJob;
pub use lock::{FileLock, LockError};
pub use manifest::{Manifest, ManifestFile, ManifestLink};
pub use outcome::{Deletion, OutcomeIssue, deletions, issues};
pub use request::{ExportLevel, ExportRequest, KickOffRequest, UntilParameter, is_fhir_id};
pub use resource::GroupMembers;
pub use retry::{Backoff, Jitter};
pub use retry_after::parse_retry_after;
pub use state::{JobState, STATE_FILE};
pub use status::StatusPoll;
pub use transport::outcome_text;
