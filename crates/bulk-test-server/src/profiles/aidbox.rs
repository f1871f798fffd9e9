//! Aidbox (Health Samurai): one export at a time on the whole server, status at
//! `$export-status/<id>`, files on pre-signed URLs of another origin (no token wanted, a bearer
//! refused), gzip files for `_outputFormat=application/fhir+ndjson+gzip` (the bytes as stored,
//! without `Content-Encoding`), and a manifest with its own `status` field and, at system
//! level, no `request`; no `deleted` array.
use super::behaviour::{Behaviour, DeletedArray, StatusPath};
use crate::config::{FileServing, ServerConfig};

pub(super) const DESCRIPTION: &str = "Aidbox: one export at a time server-wide (429), status \
    at $export-status/<id>, files on pre-signed URLs of another origin that refuse a bearer \
    token, gzip files (no Content-Encoding) for _outputFormat=application/fhir+ndjson+gzip, \
    manifest without request at system level, no deleted array";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "Aidbox",
        status_path: StatusPath::Segment("$export-status"),
        presigned_files: true,
        gzip_output_format: true,
        system_manifest_request: false,
        manifest_status: true,
        deleted: DeletedArray::Never,
        ..Behaviour::spec()
    }
}

/// Files are on the storage origin and need no token; one job runs at a time.
pub(super) fn apply(cfg: &mut ServerConfig) {
    cfg.files = FileServing::OtherOrigin;
    cfg.redirect_files = false;
    cfg.requires_access_token = false;
    cfg.max_concurrent_jobs = 1;
}
