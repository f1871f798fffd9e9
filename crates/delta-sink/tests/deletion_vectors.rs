//! Deletion vectors on real tables: when a merge may write them, how the table gets them,
//! and the files and settings that rule them out. Read back through delta-rs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use delta_sink::generator::RowSpec;
use delta_sink::{DeltaSink, ResourceTable, SinkConfig, StorageOptions};
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode as DeltaSaveMode};
use serde_json::Value;

const ENABLE: &str = "delta.enableDeletionVectors";

fn with_vectors() -> SinkConfig {
    SinkConfig {
        deletion_vectors: true,
        ..small_config()
    }
}

/// The `Observation` table under `dir` through a new sink with `config` (another run).
async fn reopen(dir: &Path, config: SinkConfig) -> ResourceTable {
    DeltaSink::new(dir.to_str().unwrap(), StorageOptions::new())
        .unwrap()
        .with_config(config)
        .table("Observation")
        .await
        .unwrap()
}

/// Ids `o0` to `o29`, version 1, in three files of ten (`o0`-`o9`, ...), one merge each;
/// returns the table's version.
async fn thirty_rows(table: &mut ResourceTable) -> u64 {
    let ids: Vec<String> = (0..30).map(|i| format!("o{i}")).collect();
    for ten in ids.chunks(10) {
        merge(table, &first_versions(ten), 1).await;
    }
    table.version().unwrap()
}

/// Version 2 of `ids`, later than their first.
fn updates(ids: &[&str]) -> Vec<RowSpec> {
    ids.iter().map(|id| RowSpec::new(*id, 2, us(2))).collect()
}

/// The stored rows are `o0`..`o29` once each, `updated` at version 2 (marker 2), the rest
/// at version 1.
async fn assert_rows(table: &ResourceTable, updated: &[&str]) {
    let rows = read_all(table).await;
    assert_eq!(rows.len(), 30);
    for i in 0..30 {
        let id = format!("o{i}");
        let (version, marker) = if updated.contains(&id.as_str()) {
            ("2", 2)
        } else {
            ("1", 1)
        };
        assert_eq!(only(&rows, &id).0.as_deref(), Some(version), "{id}");
        assert_eq!(only(&rows, &id).2, Some(marker), "{id}");
    }
}

/// The actions of commit `version`, one JSON object each.
fn log_entry(dir: &Path, version: u64) -> Vec<Value> {
    let path = dir.join(format!("Observation.parquet/_delta_log/{version:020}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The actions of one kind (`add`, `protocol`, `metaData`, ...) of a log entry.
fn of_kind<'a>(entry: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entry.iter().filter_map(|a| a.get(kind)).collect()
}

/// The table's `delta.enableDeletionVectors`, if set.
fn enable_property(table: &ResourceTable) -> Option<String> {
    let snapshot = table.delta_table().snapshot().unwrap();
    snapshot.metadata().configuration().get(ENABLE).cloned()
}

fn has_vector_files(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("Observation.parquet"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("deletion_vector_")
        })
}

/// Commits the table's files again with statistics that lack `numRecords`, as a writer
/// that does not record row counts leaves them.
async fn drop_row_counts(table: &mut ResourceTable) {
    let dt = table.delta_table();
    let snapshot = dt.snapshot().unwrap();
    let actions: Vec<Action> = snapshot
        .log_data()
        .iter()
        .map(|f| {
            #[allow(deprecated)]
            let mut add = f.add_action();
            let mut stats: Value = serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
            stats.as_object_mut().unwrap().remove("numRecords");
            add.stats = Some(stats.to_string());
            add.data_change = false;
            Action::Add(add)
        })
        .collect();
    let operation = DeltaOperation::Write {
        mode: DeltaSaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    CommitBuilder::default()
        .with_actions(actions)
        .build(Some(snapshot), dt.log_store(), operation)
        .await
        .unwrap();
    table.reload().await.unwrap();
}

#[tokio::test]
async fn files_without_a_row_count_are_rewritten_not_marked() {
    let (dir, _sink, mut t) = observations_with(with_vectors()).await;
    thirty_rows(&mut t).await;
    drop_row_counts(&mut t).await;
    let files = t.delta_table().snapshot().unwrap().log_data().num_files();
    assert_eq!(files, 3);
    assert!(
        t.delta_table()
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .all(|f| f.num_records().is_none())
    );

    // One row of each of three files: few enough to mark, but the files have no count.
    let updated = ["o0", "o10", "o20"];
    let out = merge(&mut t, &updates(&updated), 2).await;
    assert_eq!(out.updated, 3);
    assert_eq!(out.files_marked, 0, "{out:?}");
    assert!(out.files_rewritten > 0, "{out:?}");
    let entry = log_entry(dir.path(), t.version().unwrap());
    assert!(
        of_kind(&entry, "add")
            .iter()
            .all(|a| a.get("deletionVector").is_none_or(Value::is_null)),
        "{entry:?}"
    );
    assert!(!has_vector_files(dir.path()));
    assert_rows(&reopen(dir.path(), small_config()).await, &updated).await;
}

#[tokio::test]
async fn the_first_vector_turns_deletion_vectors_on_in_its_own_commit() {
    let (dir, _sink, mut t) = observations_with(small_config()).await;
    let v = thirty_rows(&mut t).await;

    // A run with the option: inserts alone write no vector, so nothing is turned on.
    let mut t = reopen(dir.path(), with_vectors()).await;
    let out = merge(&mut t, &[RowSpec::new("new", 1, us(1))], 3).await;
    assert_eq!((out.inserted, out.version), (1, Some(v + 1)));
    let entry = log_entry(dir.path(), v + 1);
    assert!(of_kind(&entry, "protocol").is_empty(), "{entry:?}");
    assert!(of_kind(&entry, "metaData").is_empty(), "{entry:?}");
    assert_eq!(enable_property(&t), None);

    // Updates: the first vectors, and with them (one commit) the protocol and the property.
    let out = merge(&mut t, &updates(&["o0", "o10"]), 2).await;
    assert!(out.files_marked > 0, "{out:?}");
    assert_eq!(out.version, Some(v + 2), "one commit");
    let entry = log_entry(dir.path(), v + 2);
    let protocol = of_kind(&entry, "protocol");
    assert_eq!(protocol.len(), 1, "{entry:?}");
    assert_eq!(protocol[0]["minReaderVersion"], 3);
    assert_eq!(protocol[0]["minWriterVersion"], 7);
    for features in ["readerFeatures", "writerFeatures"] {
        let listed = protocol[0][features].as_array().unwrap();
        assert!(listed.contains(&"deletionVectors".into()), "{features}");
    }
    let metadata = of_kind(&entry, "metaData");
    assert_eq!(metadata.len(), 1, "{entry:?}");
    assert_eq!(metadata[0]["configuration"][ENABLE], "true");
    let marked = of_kind(&entry, "add")
        .into_iter()
        .filter(|a| a["deletionVector"].is_object())
        .count();
    assert_eq!(marked as u64, out.files_marked);
    assert_eq!(enable_property(&t).as_deref(), Some("true"));

    // Later vectors leave the protocol and metadata alone.
    let out = merge(&mut t, &updates(&["o1"]), 2).await;
    assert_eq!((out.files_marked, out.version), (1, Some(v + 3)));
    let entry = log_entry(dir.path(), v + 3);
    assert!(of_kind(&entry, "protocol").is_empty() && of_kind(&entry, "metaData").is_empty());

    // A reader that opens the table afresh applies the vectors.
    let read = reopen(dir.path(), small_config()).await;
    let rows = read_all(&read).await;
    assert_eq!(only(&rows, "new").2, Some(3));
    let mut updated_rows = rows;
    updated_rows.remove("new");
    assert_eq!(updated_rows.len(), 30);
    assert_rows_in(&updated_rows, &["o0", "o10", "o1"]);
}

/// [`assert_rows`] on rows already read.
fn assert_rows_in(rows: &std::collections::BTreeMap<String, Vec<Row>>, updated: &[&str]) {
    for (id, versions) in rows {
        assert_eq!(versions.len(), 1, "{id}");
        let marker = if updated.contains(&id.as_str()) { 2 } else { 1 };
        assert_eq!(versions[0].2, Some(marker), "{id}");
    }
}

/// Everything logged at warn level or above while it lives on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Warnings {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Warnings {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn count(&self, text: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(text)
            .count()
    }
}

#[tokio::test]
async fn a_table_whose_owner_turned_vectors_off_is_merged_by_rewrites() {
    let (dir, _sink, mut t) = observations_with(small_config()).await;
    thirty_rows(&mut t).await;
    t.delta_table()
        .clone()
        .set_tbl_properties()
        .with_properties(HashMap::from([(ENABLE.to_string(), "false".to_string())]))
        .await
        .unwrap();
    let protocol_before = log_entry(dir.path(), 0)
        .into_iter()
        .find_map(|a| a.get("protocol").cloned())
        .unwrap();

    let warnings = Warnings::default();
    let _capture = warnings.capture();
    let message = "delta.enableDeletionVectors is false on Observation; merging by rewriting files";
    let mut updated = Vec::new();
    // Two runs with the option on, two merges each: rewrites, and one warning per run.
    for (run, ids) in [
        [["o0", "o10"], ["o1", "o11"]],
        [["o2", "o12"], ["o3", "o13"]],
    ]
    .iter()
    .enumerate()
    {
        let mut t = reopen(dir.path(), with_vectors()).await;
        for ids in ids {
            let out = merge(&mut t, &updates(ids), 2).await;
            assert_eq!(out.updated, 2);
            assert_eq!(out.files_marked, 0, "{out:?}");
            assert!(out.files_rewritten > 0, "{out:?}");
            updated.extend_from_slice(ids);
        }
        assert_eq!(warnings.count(message), run + 1, "once per run");
        assert_eq!(enable_property(&t).as_deref(), Some("false"));
    }
    // Without the option nothing is said.
    let mut t = reopen(dir.path(), small_config()).await;
    merge(&mut t, &updates(&["o4"]), 2).await;
    updated.push("o4");
    assert_eq!(warnings.count(message), 2);

    assert!(!has_vector_files(dir.path()));
    let version = t.version().unwrap();
    for v in 1..=version {
        assert!(of_kind(&log_entry(dir.path(), v), "protocol").is_empty());
    }
    assert_eq!(protocol_before["minReaderVersion"], 1);
    assert_rows(&t, &updated).await;
}
