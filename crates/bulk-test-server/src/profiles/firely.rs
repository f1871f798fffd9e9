//! Firely Server: status at `$exportstatus?_id=`, files through `$exportfilerequest` with
//! `Accept: application/fhir+ndjson` only, 410 Gone for a cancelled job, no `deleted` array.
use axum::http::StatusCode;

use super::behaviour::{Behaviour, DeletedArray, FileAccept, FilePath, StatusPath};

pub(super) const DESCRIPTION: &str = "Firely Server: status at $exportstatus?_id=, files at \
    $exportfilerequest/?_id=&filename= (Accept: application/fhir+ndjson only, else 406), 410 \
    Gone for a cancelled job, no deleted array";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "Firely Server",
        status_path: StatusPath::Query {
            operation: "$exportstatus",
            param: "_id",
        },
        file_path: FilePath::ExportFileRequest,
        file_accept: FileAccept::NdjsonOnly,
        cancelled_status: StatusCode::GONE,
        deleted: DeletedArray::Never,
        ..Behaviour::spec()
    }
}
