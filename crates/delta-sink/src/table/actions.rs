//! The log entry of a commit: its actions, the Delta operation it records, and the
//! `fhirsync.*` metadata with the cursor's txn.

use chrono::SecondsFormat;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode as DeltaSaveMode};
use serde_json::Value;

use super::options::{Cursor, METADATA_PREFIX, SaveMode};
use super::outcome::WriteOutcome;

/// The actions of a commit: the adds, then the removes.
pub(crate) fn actions(adds: Vec<Add>, removes: Vec<Remove>) -> Vec<Action> {
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    actions.extend(removes.into_iter().map(Action::Remove));
    actions
}

/// Counts the files of a commit: `adds` (new and rewritten files, before the marked ones
/// are re-added), `removes` (every removed entry, marked files included) and `marked`.
pub(crate) fn count_files(out: &mut WriteOutcome, adds: &[Add], removes: usize, marked: usize) {
    out.files_added = adds.len() as u64;
    out.files_removed = (removes - marked) as u64;
    out.files_marked = marked as u64;
    out.bytes_added = adds
        .iter()
        .map(|a| u64::try_from(a.size).unwrap_or(0))
        .sum();
}

/// The operation a commit to an existing table records in its history. `filters`: the
/// write carries deletes or a reconciliation.
pub(crate) fn operation(mode: SaveMode, filters: bool, input_rows: u64) -> DeltaOperation {
    let write = |mode| DeltaOperation::Write {
        mode,
        partition_by: None,
        predicate: None,
    };
    match mode {
        SaveMode::Overwrite => write(DeltaSaveMode::Overwrite),
        SaveMode::Append if !filters => write(DeltaSaveMode::Append),
        _ if input_rows == 0 => DeltaOperation::Delete { predicate: None },
        _ => DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some("target.id = source.id".to_string()),
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        },
    }
}

/// The commit's `fhirsync.*` metadata: mode, counts, the cursor and the table version the
/// commit creates (`current` is the table's version before it).
pub(crate) fn metadata(
    mode: SaveMode,
    cursor: Option<&Cursor>,
    out: &WriteOutcome,
    current: Option<u64>,
) -> Vec<(String, Value)> {
    let mut meta: Vec<(String, Value)> = vec![
        ("fhirsync.mode".into(), Value::from(mode.to_string())),
        ("fhirsync.inserted".into(), Value::from(out.inserted)),
        ("fhirsync.updated".into(), Value::from(out.updated)),
        ("fhirsync.unchanged".into(), Value::from(out.unchanged)),
        ("fhirsync.deleted".into(), Value::from(out.deleted)),
        ("fhirsync.reconciled".into(), Value::from(out.reconciled)),
        ("fhirsync.duplicates".into(), Value::from(out.duplicates)),
        ("fhirsync.rejected".into(), Value::from(out.rejected)),
        (
            "fhirsync.filesRewritten".into(),
            Value::from(out.files_rewritten),
        ),
        ("fhirsync.filesMarked".into(), Value::from(out.files_marked)),
    ];
    if let Some(c) = cursor {
        meta.push(("fhirsync.appId".into(), Value::from(c.app_id.clone())));
        meta.push(("fhirsync.version".into(), Value::from(c.version)));
        meta.push((
            "fhirsync.transactionTime".into(),
            Value::from(
                c.transaction_time
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ));
        meta.push(("fhirsync.syncId".into(), Value::from(c.sync_id.clone())));
        for (k, v) in &c.extra {
            let key = if k.starts_with(METADATA_PREFIX) {
                k.clone()
            } else {
                format!("{METADATA_PREFIX}{k}")
            };
            meta.push((key, v.clone()));
        }
    }
    let next = current.map_or(0, |v| v + 1);
    meta.push(("fhirsync.tableVersion".into(), Value::from(next)));
    meta
}

/// The commit's properties: [`metadata`], the commit's own id (`fhirsync.commitId`, to find
/// it in the log when the store lost the answer to its write) and, with a cursor, its txn
/// (updated `now_ms`).
pub(crate) fn commit_properties(
    mode: SaveMode,
    cursor: Option<&Cursor>,
    out: &WriteOutcome,
    current: Option<u64>,
    now_ms: i64,
    commit_id: &str,
) -> CommitProperties {
    let mut props = CommitProperties::default();
    if let Some(c) = cursor {
        props = props.with_application_transaction(Transaction::new_with_last_update(
            c.app_id.clone(),
            c.version,
            Some(now_ms),
        ));
    }
    let mut meta = metadata(mode, cursor, out, current);
    meta.push((COMMIT_ID.into(), Value::from(commit_id)));
    props.with_metadata(meta)
}

/// The commitInfo entry naming a commit.
pub(crate) const COMMIT_ID: &str = "fhirsync.commitId";

/// Whether the log entry `entry` (a commit's JSON lines) is the commit `commit_id`.
pub(crate) fn is_commit(entry: &[u8], commit_id: &str) -> bool {
    entry
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .any(|action| {
            action
                .get("commitInfo")
                .and_then(|info| info.get(COMMIT_ID))
                .and_then(Value::as_str)
                == Some(commit_id)
        })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::table::outcome::WriteStatus;

    fn add(path: &str, size: i64) -> Add {
        Add {
            path: path.into(),
            size,
            ..Add::default()
        }
    }

    #[test]
    fn a_commit_is_found_by_its_id_in_its_log_entry() {
        let entry = br#"{"add":{"path":"a"}}
{"commitInfo":{"timestamp":1,"fhirsync.commitId":"c-1"}}
"#;
        assert!(is_commit(entry, "c-1"));
        assert!(!is_commit(entry, "c-2"));
        assert!(!is_commit(br#"{"commitInfo":{"timestamp":1}}"#, "c-1"));
        assert!(!is_commit(b"not json", "c-1"));
    }

    #[test]
    fn adds_come_before_removes() {
        let removes = vec![Remove {
            path: "old".into(),
            ..Remove::default()
        }];
        let actions = actions(vec![add("a", 1), add("b", 2)], removes);
        let paths: Vec<String> = actions
            .iter()
            .map(|a| match a {
                Action::Add(a) => format!("+{}", a.path),
                Action::Remove(r) => format!("-{}", r.path),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(paths, ["+a", "+b", "-old"]);
    }

    #[test]
    fn marked_files_are_counted_apart_from_removed_ones() {
        let mut out = WriteOutcome::empty(WriteStatus::Committed, None);
        count_files(&mut out, &[add("a", 10), add("b", 5)], 3, 1);
        assert_eq!(
            (
                out.files_added,
                out.files_removed,
                out.files_marked,
                out.bytes_added
            ),
            (2, 2, 1, 15)
        );
    }

    #[test]
    fn the_operation_says_what_the_commit_did() {
        let name = |mode, filters, rows| operation(mode, filters, rows).name().to_string();
        assert!(matches!(
            operation(SaveMode::Overwrite, true, 0),
            DeltaOperation::Write {
                mode: DeltaSaveMode::Overwrite,
                ..
            }
        ));
        assert!(matches!(
            operation(SaveMode::Append, false, 0),
            DeltaOperation::Write {
                mode: DeltaSaveMode::Append,
                ..
            }
        ));
        assert_eq!(name(SaveMode::Append, true, 5), "MERGE");
        assert_eq!(name(SaveMode::Append, true, 0), "DELETE");
        assert_eq!(name(SaveMode::Merge, false, 0), "DELETE");
        assert_eq!(name(SaveMode::Merge, false, 1), "MERGE");
        assert_eq!(name(SaveMode::Merge, true, 1), "MERGE");
    }

    #[test]
    fn metadata_carries_the_counts_the_cursor_and_the_next_version() {
        let mut out = WriteOutcome::empty(WriteStatus::Committed, None);
        (out.inserted, out.updated, out.files_marked) = (3, 2, 1);
        let at = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let mut cursor = Cursor::new("srv/Patient", at, "sync-1");
        cursor.extra = vec![
            ("requestUrl".into(), Value::from("u")),
            ("fhirsync.kept".into(), Value::from(1)),
        ];
        let meta: HashMap<String, Value> = metadata(SaveMode::Merge, Some(&cursor), &out, Some(4))
            .into_iter()
            .collect();
        let get = |k: &str| meta.get(k).cloned().unwrap_or_else(|| panic!("no {k}"));
        assert_eq!(get("fhirsync.mode"), "merge");
        assert_eq!(get("fhirsync.inserted"), 3);
        assert_eq!(get("fhirsync.updated"), 2);
        assert_eq!(get("fhirsync.filesMarked"), 1);
        assert_eq!(get("fhirsync.appId"), "srv/Patient");
        assert_eq!(get("fhirsync.version"), 1_700_000_000_123i64);
        assert_eq!(get("fhirsync.transactionTime"), "2023-11-14T22:13:20.123Z");
        assert_eq!(get("fhirsync.syncId"), "sync-1");
        assert_eq!(get("fhirsync.requestUrl"), "u");
        assert_eq!(get("fhirsync.kept"), 1);
        assert_eq!(get("fhirsync.tableVersion"), 5);
        assert_eq!(meta.len(), 17);

        let meta = metadata(SaveMode::ErrorIfExists, None, &out, None);
        assert_eq!(meta.len(), 11, "no cursor: counts and version only");
        assert!(meta.contains(&("fhirsync.mode".into(), Value::from("error"))));
        assert!(meta.contains(&("fhirsync.tableVersion".into(), Value::from(0))));
    }
}
