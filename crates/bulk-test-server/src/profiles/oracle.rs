//! Oracle Health (Cerner Millennium): Group and Patient export, `_type` only comma-joined,
//! files answered with 307 to pre-signed URLs on another origin that refuse an
//! `Authorization` header, `Retry-After` in hours, every server error a 500, no `deleted`
//! array.
use super::behaviour::{Behaviour, DeletedArray, Levels};
use crate::config::{FileServing, ServerConfig};

pub(super) const DESCRIPTION: &str = "Oracle Health: Group and Patient export only, repeated \
    _type refused (comma-join), files answer 307 to pre-signed URLs on another origin that \
    refuse an Authorization header, Retry-After in hours, every server error a 500, no deleted array";

/// Oracle Health's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oracle {
    /// `Retry-After` while a job runs and on 429s (hours have been seen).
    pub retry_after_secs: u64,
}

impl Default for Oracle {
    fn default() -> Self {
        Oracle {
            retry_after_secs: 5 * 3600,
        }
    }
}

impl Oracle {
    pub(super) fn behaviour(&self) -> Behaviour {
        Behaviour {
            software: "Cerner Millennium",
            levels: Levels {
                system: false,
                patient: true,
                group: true,
            },
            retry_after_secs: Some(self.retry_after_secs),
            single_type_param: true,
            only_500: true,
            presigned_files: true,
            deleted: DeletedArray::Never,
            ..Behaviour::spec()
        }
    }
}

/// Files are fetched with the token from the FHIR server, which redirects to storage.
pub(super) fn apply(cfg: &mut ServerConfig) {
    cfg.files = FileServing::OtherOrigin;
    cfg.redirect_files = true;
    cfg.requires_access_token = true;
}
