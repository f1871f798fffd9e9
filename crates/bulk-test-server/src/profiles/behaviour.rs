//! What a profile changes, as data the handlers consult: paths, headers, checks and manifest
//! shape. [`Behaviour::spec`] is the IG; each profile overrides a few fields.
use std::time::Duration;

use axum::http::StatusCode;

use crate::export::Level;

/// Where the status URL lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusPath {
    /// `[base]/<segment>/<job>`.
    Segment(&'static str),
    /// `[base]/<operation>?<param>=<job>`.
    Query {
        operation: &'static str,
        param: &'static str,
    },
}

impl StatusPath {
    pub fn url(&self, base: &str, job: &str) -> String {
        match self {
            StatusPath::Segment(s) => format!("{base}/{s}/{job}"),
            StatusPath::Query { operation, param } => format!("{base}/{operation}?{param}={job}"),
        }
    }

    /// The job a request is for, when `segs` (the path below the base) is a status path.
    pub fn job_id(&self, segs: &[&str], query: &[(String, String)]) -> Option<String> {
        match (self, segs) {
            (StatusPath::Segment(s), [seg, id]) if seg == s => Some(id.to_string()),
            (StatusPath::Query { operation, param }, [op]) if op == operation => query
                .iter()
                .find(|(k, _)| k == param)
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }
}

/// Where output files are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FilePath {
    /// `<file origin><file_path>/<job>/<n>.ndjson` (see [`crate::ServerConfig::file_path`]).
    Files,
    /// `[base]/$exportfilerequest/?_id=<job>&filename=content<Type>-<n>.ndjson`.
    ExportFileRequest,
}

/// What a file download needs in its `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileAccept {
    /// Anything: the file is NDJSON.
    Any,
    /// NDJSON only with `Accept: application/fhir+ndjson`; otherwise a FHIR `Binary` in JSON
    /// with the file base64-encoded in `data`.
    BinaryUnlessNdjson,
    /// `Accept: application/fhir+ndjson` or 406.
    NdjsonOnly,
}

/// The manifest's `deleted` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeletedArray {
    /// Listed when there are deletions (a `_since` export), absent otherwise.
    WhenAny,
    /// Never present.
    Never,
    /// Always present and always empty.
    AlwaysEmpty,
}

/// Export levels a server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Levels {
    pub system: bool,
    pub patient: bool,
    pub group: bool,
}

impl Levels {
    pub const ALL: Levels = Levels {
        system: true,
        patient: true,
        group: true,
    };

    pub fn allows(&self, level: &Level) -> bool {
        match level {
            Level::System => self.system,
            Level::Patient => self.patient,
            Level::Group(_) => self.group,
        }
    }
}

/// The token endpoint answers a bare 400 to about one request in `one_in`, drawn from a
/// generator seeded with `seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenFailures {
    pub seed: u64,
    pub one_in: u32,
}

/// A profile's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Behaviour {
    /// `CapabilityStatement.software.name`, as the real server sends it.
    pub software: &'static str,
    pub status_path: StatusPath,
    pub file_path: FilePath,
    pub file_accept: FileAccept,
    pub levels: Levels,
    /// `Retry-After` on 202s and 429s; `None`: [`crate::ServerConfig::retry_after_secs`].
    pub retry_after_secs: Option<u64>,
    /// A completed job and its files are gone (404) this long after completion.
    pub retention: Option<Duration>,
    /// An identical kick-off returns the earlier job unless it says `Cache-Control: no-cache`.
    pub reuse_jobs: bool,
    pub deleted: DeletedArray,
    /// The manifest has an `error` array.
    pub error_array: bool,
    /// What the status URL answers once the job was cancelled with `DELETE`.
    pub cancelled_status: StatusCode,
    /// Kick-off parameters refused with 400.
    pub refused_params: &'static [&'static str],
    /// A repeated `_type` parameter is refused with 400 (a comma-joined one is fine).
    pub single_type_param: bool,
    /// A client may hold one job per Group until it deletes it; another kick-off gets 429.
    pub one_job_per_client_group: bool,
    /// Exported resources lack `meta.lastUpdated`.
    pub without_last_updated: bool,
    pub token_failures: Option<TokenFailures>,
    /// Every 5xx is sent as 500, whether or not a retry would help.
    pub only_500: bool,
    /// A kick-off without `_type` gets no answer until the server stops.
    pub hang_without_type: bool,
    /// The file origin refuses requests that carry an `Authorization` header (pre-signed
    /// URLs, which carry their own credentials).
    pub presigned_files: bool,
    /// `_outputFormat=application/fhir+ndjson+gzip` is accepted and its files are gzip bytes
    /// served without `Content-Encoding` (and without ranges).
    pub gzip_output_format: bool,
    /// A system-level manifest has a `request` field.
    pub system_manifest_request: bool,
    /// The manifest carries `"status": "completed"`.
    pub manifest_status: bool,
    /// Output files are written to the configured output store (a bucket) and listed by
    /// their URLs there; the server does not start without one.
    pub output_in_store: bool,
    /// The name of the kick-off parameter for "changed up to" (`_until` in the IG).
    pub until_param: &'static str,
    /// `_since` must carry seconds and a timezone.
    pub strict_since: bool,
    /// Exports start only with POST and a Parameters body; a GET kick-off gets 405.
    pub post_only: bool,
    /// A kick-off while another export is in progress gets 400 with a throttling outcome.
    pub one_export_at_a_time: bool,
    /// Patient- and Group-level exports list this many resources of each type a second
    /// time, unchanged, in another file.
    pub repeated_resources: Option<usize>,
}

impl Behaviour {
    pub fn spec() -> Behaviour {
        Behaviour {
            software: "Bulk Data test server",
            status_path: StatusPath::Segment("bulkstatus"),
            file_path: FilePath::Files,
            file_accept: FileAccept::Any,
            levels: Levels::ALL,
            retry_after_secs: None,
            retention: None,
            reuse_jobs: false,
            deleted: DeletedArray::WhenAny,
            error_array: true,
            cancelled_status: StatusCode::NOT_FOUND,
            refused_params: &[],
            single_type_param: false,
            one_job_per_client_group: false,
            without_last_updated: false,
            token_failures: None,
            only_500: false,
            hang_without_type: false,
            presigned_files: false,
            gzip_output_format: false,
            system_manifest_request: true,
            manifest_status: false,
            output_in_store: false,
            until_param: "_until",
            strict_since: false,
            post_only: false,
            one_export_at_a_time: false,
            repeated_resources: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paths_round_trip() {
        let seg = StatusPath::Segment("bulkstatus");
        assert_eq!(
            seg.url("http://h/fhir", "j1"),
            "http://h/fhir/bulkstatus/j1"
        );
        assert_eq!(seg.job_id(&["bulkstatus", "j1"], &[]), Some("j1".into()));
        assert_eq!(seg.job_id(&["other", "j1"], &[]), None);
        let q = StatusPath::Query {
            operation: "$export-poll-status",
            param: "_jobId",
        };
        assert_eq!(
            q.url("http://h/fhir", "j1"),
            "http://h/fhir/$export-poll-status?_jobId=j1"
        );
        let query = vec![("_jobId".to_string(), "j1".to_string())];
        assert_eq!(
            q.job_id(&["$export-poll-status"], &query),
            Some("j1".into())
        );
        assert_eq!(q.job_id(&["$export-poll-status"], &[]), None);
    }
}
