//! Google Cloud Healthcare API: output files written to a Cloud Storage bucket and listed as
//! `gs://` URLs, `Accept: application/fhir+json` required on kick-off, `_since` refused
//! without seconds and a timezone, status at `…/operations/<id>`.
use super::behaviour::{Behaviour, StatusPath};

pub(super) const DESCRIPTION: &str = "Google Cloud Healthcare: output written to a Cloud \
    Storage bucket and listed as gs:// URLs, kick-off needs Accept: application/fhir+json, \
    _since without seconds or timezone refused, status at .../operations/<id>";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "Cloud Healthcare API",
        status_path: StatusPath::Segment("operations"),
        output_in_store: true,
        strict_since: true,
        ..Behaviour::spec()
    }
}
