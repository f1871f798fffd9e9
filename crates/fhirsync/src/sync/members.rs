//! A Group's members, and the ones who joined it since the last sync.
//!
//! A `_since` export of a Group leaves out what the patients who joined the group since
//! `_since` had before then (the Bulk Data IG lets servers do so, and most do). So a Group sync
//! reads the Group's members before its export and compares them with the record of the
//! members whose data the tables hold; the new members' earlier data is then exported too
//! (`backfill`) and committed with the rest. (Read after the export, a member who joined while
//! a full export ran would be recorded without their data; read before, they are merely
//! found again by the next run.)
//!
//! The record is a file beside the state file, written once every table has committed, with
//! the cursor it belongs to. It is not kept in the Delta commits, where the list (thousands of
//! ids) would be copied into every table's log at every sync. A record that lags behind the
//! tables (its write failed after the commits) names fewer members than the tables hold, so
//! the next run exports some members' data again, which merges as unchanged; one newer than
//! the tables' cursor (tables restored from a backup) is not trusted. It never names a member
//! whose data the tables lack.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use delta_sink::DeltaSink;
use fhir_bulk::{BulkClient, BulkError};
use serde::{Deserialize, Serialize};

use crate::config::SyncOptions;
use crate::tables;

/// The record's file in the state directory.
const RECORD_FILE: &str = "group-members.json";

/// A Group's patients as read from the server.
pub(super) enum Read {
    /// The ids of the patients its `member[].entity` references.
    Listed(BTreeSet<String>),
    /// The Group does not list its members (`actual: false`, or no `member`).
    Unlisted,
    /// The Group could not be read.
    Failed(BulkError),
}

/// Reads Group `group_id`'s members with the export's client.
pub(super) async fn read(client: &BulkClient, group_id: &str) -> Read {
    let group = match client.read_group_members(group_id).await {
        Ok(g) => g,
        Err(e) => return Read::Failed(e),
    };
    if !group.listed {
        return Read::Unlisted;
    }
    let mut patients = BTreeSet::new();
    let mut others = group.without_reference;
    for r in &group.references {
        match delta_sink::reference_id(r, "Patient").filter(|id| fhir_bulk::is_fhir_id(id)) {
            Some(id) => {
                patients.insert(id.to_string());
            }
            None => others += 1,
        }
    }
    if others > 0 {
        tracing::warn!(
            group = group_id,
            members = others,
            "group members that are not Patient references are not counted among its patients"
        );
    }
    tracing::info!(
        group = group_id,
        patients = patients.len(),
        "group members read"
    );
    Read::Listed(patients)
}

/// What a Group sync does about its members' data.
#[derive(Default)]
pub(super) struct Joined {
    /// Members whose data from before `_since` the tables lack.
    pub new: Vec<String>,
    /// The members to record once every table has committed; `None` leaves the record as it is.
    pub record: Option<BTreeSet<String>>,
}

/// Where a Group sync stands with the group's members: after a `_since` export, the members
/// the tables have no data of; after a full one, none. Says once when the Group does not tell.
pub(super) async fn joined(
    read: Read,
    sink: &DeltaSink,
    opts: &SyncOptions,
    app_id: &str,
    since: Option<DateTime<Utc>>,
    state_dir: &Path,
) -> anyhow::Result<Joined> {
    let group = opts.group_id.as_deref().unwrap_or_default();
    let members = match read {
        Read::Listed(members) => in_scope(members, &opts.patients),
        Read::Unlisted => {
            if let Some(since) = since {
                tracing::warn!(
                    "Group/{group} does not list its members, so patients who joined it since {} \
                     cannot be detected and their data from before then is not exported; run a \
                     full refresh (--full-refresh) of the group now and then to bring it in",
                    instant(since)
                );
            }
            return Ok(Joined::default());
        }
        Read::Failed(e) => {
            if let Some(since) = since {
                tracing::warn!(
                    "could not read Group/{group} ({e}), so patients who joined it since {} are \
                     not detected in this run; the next run that reads the Group exports their \
                     earlier data",
                    instant(since)
                );
            }
            return Ok(Joined::default());
        }
    };
    let Some(since) = since else {
        return Ok(Joined {
            new: Vec::new(),
            record: Some(members),
        });
    };
    let known = known_members(sink, opts, app_id, since, &members, state_dir).await?;
    let new: Vec<String> = members.difference(&known).cloned().collect();
    if !new.is_empty() {
        tracing::info!(
            group,
            new_members = new.len(),
            "patients joined the group: exporting their earlier data too"
        );
    }
    Ok(Joined {
        new,
        record: Some(members),
    })
}

/// The members that `--patients` leaves in (all without it).
fn in_scope(members: BTreeSet<String>, patients: &[String]) -> BTreeSet<String> {
    if patients.is_empty() {
        return members;
    }
    let only: BTreeSet<&str> = patients
        .iter()
        .map(|p| p.strip_prefix("Patient/").unwrap_or(p))
        .collect();
    members
        .into_iter()
        .filter(|m| only.contains(m.as_str()))
        .collect()
}

/// The members whose data the tables hold: the record's when it belongs to this cursor; else
/// those with a row in the Patient table; else none (every member's earlier data is exported).
async fn known_members(
    sink: &DeltaSink,
    opts: &SyncOptions,
    app_id: &str,
    since: DateTime<Utc>,
    members: &BTreeSet<String>,
    state_dir: &Path,
) -> anyhow::Result<BTreeSet<String>> {
    let why = match Record::load(&record_path(state_dir)) {
        // The tables' cursor may be the `txn` version, in whole milliseconds.
        Some(r)
            if r.sync_id == app_id
                && r.transaction_time.timestamp_millis() <= since.timestamp_millis() =>
        {
            return Ok(r.patients.into_iter().collect());
        }
        Some(_) => "the record of the group's members belongs to another cursor",
        None => "no record of the group's members",
    };
    if opts.resource_types.iter().any(|t| t == "Patient") {
        let table = sink
            .table("Patient")
            .await
            .context("opening the Patient table")?;
        if table.exists() {
            tracing::info!("{why}: members with a row in the Patient table count as known");
            return tables::ids_among("Patient", &table, members).await;
        }
    }
    tracing::info!("{why} and no Patient table: every member's earlier data is exported");
    Ok(BTreeSet::new())
}

/// Records `members` as the members whose data the tables hold at `transaction_time`. A
/// failure is only logged: an older record costs an export of data the tables already have.
pub(super) fn store_record(
    state_dir: &Path,
    app_id: &str,
    transaction_time: DateTime<Utc>,
    members: BTreeSet<String>,
) {
    let record = Record {
        sync_id: app_id.to_string(),
        transaction_time,
        patients: members.into_iter().collect(),
    };
    let path = record_path(state_dir);
    let written = serde_json::to_vec(&record)
        .map_err(std::io::Error::other)
        .and_then(|json| fhir_bulk::write_file_atomically(&path, &json));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e,
            "could not record the group's members; the next run exports the data of some of them again");
    }
}

fn record_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECORD_FILE)
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The members whose data the tables hold, as of a sync's cursor.
#[derive(Serialize, Deserialize)]
struct Record {
    sync_id: String,
    transaction_time: DateTime<Utc>,
    /// Patient ids, sorted.
    patients: Vec<String>,
}

impl Record {
    /// The record at `path`; `None` when there is none or it cannot be read (then the members
    /// are found another way).
    fn load(path: &Path) -> Option<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the record of the group's members");
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "the record of the group's members is not valid");
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_restrict_the_members() {
        let members: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(in_scope(members.clone(), &[]), members);
        let only = in_scope(members, &["Patient/b".into(), "c".into(), "d".into()]);
        assert_eq!(only, ["b", "c"].map(String::from).into());
    }

    #[test]
    fn a_record_round_trips_and_a_bad_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let tt = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(Record::load(&record_path(dir.path())).is_none());
        store_record(dir.path(), "s", tt, ["p2", "p1"].map(String::from).into());
        let r = Record::load(&record_path(dir.path())).unwrap();
        assert_eq!((r.sync_id.as_str(), r.transaction_time), ("s", tt));
        assert_eq!(r.patients, ["p1", "p2"]);
        std::fs::write(record_path(dir.path()), b"{\"sync_id\": 1").unwrap();
        assert!(Record::load(&record_path(dir.path())).is_none());
    }
}
