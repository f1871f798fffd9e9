//! Azure Health Data Services (the FHIR service): `_till` in place of `_until`, output files
//! written to Azure Blob storage and listed as blob URLs with `requiresAccessToken: false`
//! (the blob needs a storage credential, not the FHIR token), resources repeated across the
//! files of Patient and Group exports, and an identical kick-off answered with the job
//! already running unless `Cache-Control: no-cache`.
use super::behaviour::Behaviour;

pub(super) const DESCRIPTION: &str = "Azure Health Data Services: _till instead of _until \
    (_until refused), output written to Azure Blob storage and listed as blob URLs with \
    requiresAccessToken false, some resources listed in two files in Patient and Group \
    exports, the Group resource left out of its export, an identical kick-off returns the \
    running job unless Cache-Control: no-cache";

pub(super) fn behaviour() -> Behaviour {
    Behaviour {
        software: "Microsoft FHIR Server",
        until_param: "_till",
        refused_params: &["_until"],
        output_in_store: true,
        repeated_resources: Some(2),
        reuse_jobs: true,
        ..Behaviour::spec()
    }
}
