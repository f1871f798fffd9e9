//! The earlier data of a Group's new members: exports without `_since` restricted to them,
//! whose files go to the applier beside the `_since` export's, so that one commit per table
//! holds both (with the `_since` export's cursor) and the usual merge keeps one row per id.
//!
//! The new members are named with the IG's `patient` parameter in a Group-level POST kick-off,
//! a batch at a time. A server that refuses the parameter there is asked at the Patient level;
//! one that refuses it there too exports the whole group without `_since` (everyone's data
//! again, which merges as unchanged). Each export has a directory of its own under the state
//! directory, so an interrupted run resumes it like the `_since` export.
use std::path::{Path, PathBuf};

use fhir_bulk::{BulkClient, BulkError, ClientConfig, ExportLevel, ExportRequest, ExportSummary};
use tokio_util::sync::CancellationToken;

use super::apply::Applier;
use super::export;
use crate::config::SyncOptions;

/// How the new members' data is asked for, in the order tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `[base]/Group/[id]/$export` with `patient`.
    GroupPatients,
    /// `[base]/Patient/$export` with `patient`.
    PatientLevel,
    /// `[base]/Group/[id]/$export` without `_since`.
    WholeGroup,
}

/// Exports the data of `patients` (new members of the group) into `dir`, handing every file
/// to `applier`. Returns each export's client and summary, for what follows on the server.
pub(super) async fn export_new_members(
    applier: &mut Applier,
    config: &ClientConfig,
    opts: &SyncOptions,
    patients: &[String],
    dir: &Path,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<(BulkClient, ExportSummary)>> {
    let batches: Vec<&[String]> = patients.chunks(opts.patients_per_export.max(1)).collect();
    let mut exported = Vec::new();
    let mut form = Form::GroupPatients;
    let mut next = 0;
    while next < batches.len() {
        let batch = batches[next];
        let request = request(opts, form, batch);
        let batch_dir = batch_dir(dir, form, next);
        match export::export_into(
            applier,
            config.clone(),
            &request,
            &batch_dir,
            opts.timeout,
            cancel,
        )
        .await
        {
            Ok(done) => {
                exported.push(done);
                if form == Form::WholeGroup {
                    break;
                }
                next += 1;
            }
            Err(e) if form != Form::WholeGroup && refused(&e) => {
                form = match form {
                    Form::GroupPatients => {
                        tracing::warn!(error = %format!("{e:#}"),
                            "the server refused the patient parameter in a Group-level export: asking at the Patient level");
                        Form::PatientLevel
                    }
                    _ => {
                        tracing::warn!(error = %format!("{e:#}"), new_members = patients.len(),
                            "the server refused the patient parameter at the Patient level too: exporting the whole group without _since to bring in the new members' earlier data");
                        Form::WholeGroup
                    }
                };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(exported)
}

/// The export of `batch` in `form`: the sync's request without `_since`.
fn request(opts: &SyncOptions, form: Form, batch: &[String]) -> ExportRequest {
    let mut request = export::export_request(opts, None);
    match form {
        Form::GroupPatients => request.patients = batch.to_vec(),
        Form::PatientLevel => {
            request.level = ExportLevel::Patient;
            request.patients = batch.to_vec();
        }
        Form::WholeGroup => {}
    }
    request
}

fn batch_dir(dir: &Path, form: Form, batch: usize) -> PathBuf {
    match form {
        Form::WholeGroup => dir.join("group"),
        _ => dir.join(batch.to_string()),
    }
}

/// Whether the server refused the kick-off itself (rather than failing the export).
fn refused(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<BulkError>())
        .any(BulkError::is_refused_kick_off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_keeps_the_syncs_parameters_but_since() {
        let mut opts = SyncOptions::new("http://fhir.example/r4".parse().unwrap(), "/tmp/d");
        opts.group_id = Some("g".into());
        opts.type_filters = vec!["Observation?status=final".into()];
        let batch = ["p1".to_string(), "p2".to_string()];
        let group = request(&opts, Form::GroupPatients, &batch);
        assert_eq!(group.level, ExportLevel::Group("g".into()));
        assert_eq!(group.patients, batch);
        assert_eq!(group.since, None);
        assert_eq!(group.type_filters, opts.type_filters);
        assert_eq!(group.types, opts.resource_types);
        let patient = request(&opts, Form::PatientLevel, &batch);
        assert_eq!(patient.level, ExportLevel::Patient);
        assert_eq!(patient.patients, batch);
        let whole = request(&opts, Form::WholeGroup, &batch);
        assert_eq!(whole.level, ExportLevel::Group("g".into()));
        assert!(whole.patients.is_empty() && whole.since.is_none());
    }
}
