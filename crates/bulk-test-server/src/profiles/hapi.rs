//! HAPI FHIR JPA server (Smile CDR builds on it): query-string status URL, files as `Binary`
//! unless NDJSON is asked for, jobs reused and purged, a fixed `Retry-After`, no `deleted` or
//! `error` arrays.
use std::time::Duration;

use super::behaviour::{Behaviour, DeletedArray, FileAccept, StatusPath};

pub(super) const DESCRIPTION: &str = "HAPI FHIR: status at $export-poll-status?_jobId=, files as \
    FHIR Binary unless Accept: application/fhir+ndjson, identical kick-offs reuse the earlier \
    job unless Cache-Control: no-cache, jobs purged after completion, Retry-After 120, no \
    deleted or error arrays, failed jobs 500";

/// HAPI's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hapi {
    /// `Retry-After` while a job runs (HAPI sends a fixed 120).
    pub retry_after_secs: u64,
    /// How long after completion a job and its files remain (HAPI's
    /// `BulkExportFileRetentionPeriodHours`, 2 hours by default); measured on the server's
    /// clock, see [`crate::TestServer::advance_clock`].
    pub retention: Duration,
    /// Identical kick-offs without `Cache-Control: no-cache` return the earlier job (HAPI's
    /// `EnableBulkExportJobReuse`).
    pub reuse_jobs: bool,
}

impl Default for Hapi {
    fn default() -> Self {
        Hapi {
            retry_after_secs: 120,
            retention: Duration::from_secs(2 * 3600),
            reuse_jobs: true,
        }
    }
}

impl Hapi {
    pub(super) fn behaviour(&self) -> Behaviour {
        Behaviour {
            software: "HAPI FHIR Server",
            status_path: StatusPath::Query {
                operation: "$export-poll-status",
                param: "_jobId",
            },
            file_accept: FileAccept::BinaryUnlessNdjson,
            retry_after_secs: Some(self.retry_after_secs),
            retention: Some(self.retention),
            reuse_jobs: self.reuse_jobs,
            deleted: DeletedArray::Never,
            error_array: false,
            ..Behaviour::spec()
        }
    }
}
