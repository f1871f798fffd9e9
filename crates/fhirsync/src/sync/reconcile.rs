//! Reconciliation: after a full export, rows whose id the export no longer has are removed;
//! for a Group's export, only rows of the group's patients.
use arrow::datatypes::SchemaRef;
use delta_sink::{IdSet, IdSetBuilder, ReconcileScope};

use super::members::Read;
use crate::compartment;
use crate::config::{SaveMode, SyncOptions};

/// Whether a sync reconciles: a full, unfiltered export merged into the tables (a Group's
/// only with `--reconcile`).
pub(super) fn reconciles(opts: &SyncOptions, full: bool) -> bool {
    full && opts.save_mode == SaveMode::Merge
        && opts.type_filters.is_empty()
        && (opts.group_id.is_none() || opts.reconcile)
        && opts.patients.is_empty()
}

/// Which stored rows of `resource_type` a reconciliation may remove: all of them, or with
/// `group_members` those of the group's patients (`None` when nothing ties the type's rows
/// to a patient, so none may go).
pub(super) fn reconcile_scope(
    resource_type: &str,
    schema: &SchemaRef,
    group_members: Option<&IdSet>,
) -> Option<ReconcileScope> {
    let Some(members) = group_members else {
        return Some(ReconcileScope::All);
    };
    if resource_type == "Patient" {
        return Some(ReconcileScope::Ids(members.clone()));
    }
    let columns = compartment::patient_link_columns(resource_type, schema);
    (!columns.is_empty()).then(|| ReconcileScope::References {
        columns,
        target_type: "Patient".to_string(),
        targets: members.clone(),
    })
}

/// The patient ids of Group `group_id`: its members as read from the server, plus
/// `exported_patients` (the ids of the group's export, when Patient was exported). Fails when
/// neither is available, rather than guess which rows belong to the group.
pub(super) fn group_members(
    group_id: &str,
    read: &Read,
    exported_patients: Option<IdSetBuilder>,
) -> anyhow::Result<IdSet> {
    let mut members = IdSetBuilder::new();
    match read {
        Read::Listed(ids) => {
            for id in ids {
                members.insert(id);
            }
        }
        Read::Unlisted => {
            tracing::warn!(
                group = group_id,
                "the Group does not list its members: reconciling within the exported Patient resources"
            );
        }
        Read::Failed(e) if exported_patients.is_some() => {
            tracing::warn!(group = group_id, error = %e,
                "could not read the Group; reconciling within the exported Patient resources");
        }
        Read::Failed(e) => {
            return Err(anyhow::anyhow!("{e}").context(format!(
                "--reconcile with --group-id needs the group's members: reading Group/{group_id} \
                 failed and Patient is not among the exported types"
            )));
        }
    }
    if let Some(ids) = exported_patients {
        members.merge(ids);
    }
    Ok(members.seal())
}
