//! Real Delta tables on local disk, in a GCS emulator (and S3 and Azure storage when
//! configured), read back through DataFusion.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use delta_sink::generator::{RowSpec, observation_schema, random_ids};
use delta_sink::{
    CommitOptions, Cursor, DeltaSink, IdSet, OptimizeOptions, ReconcileScope, ResourceTable,
    SaveMode, SinkConfig, SinkError, StorageOptions, TableWriter, WriteOutcome, WriteStatus,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use common::*;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us(secs)).single().unwrap()
}

fn local_sink() -> (TempDir, DeltaSink) {
    local_sink_with(small_config())
}

async fn observations() -> (TempDir, DeltaSink, ResourceTable) {
    observations_with(small_config()).await
}

/// The stored ids, sorted.
fn ids_of(rows: &BTreeMap<String, Vec<Row>>) -> Vec<&str> {
    rows.keys().map(String::as_str).collect()
}

fn options(mode: SaveMode) -> CommitOptions {
    CommitOptions { mode, cursor: None }
}

/// A commit of `rows` in `mode` that must fail.
async fn failed_commit(table: &mut ResourceTable, rows: &[RowSpec], mode: SaveMode) -> SinkError {
    let w = writer_with(table, &[batch(rows, 9)]).await;
    table.commit(w, options(mode)).await.unwrap_err()
}

/// `n` ids `<prefix>0`, `<prefix>1`, ...
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// An `Observation` table (sink with `config`) of `files` files of ten random ids each,
/// one merge per file; and the ids.
async fn table_of_files(config: SinkConfig, files: usize) -> (TempDir, ResourceTable, Vec<String>) {
    let (dir, _sink, mut table) = observations_with(config).await;
    let ids = random_ids(files * 10);
    for chunk in ids.chunks(10) {
        merge(&mut table, &first_versions(chunk), 1).await;
    }
    (dir, table, ids)
}

/// A random version of `id`, last updated within `round * 10 + [0, spread)` seconds.
fn random_version(rng: &mut StdRng, id: &str, round: i64, spread: i64) -> RowSpec {
    RowSpec::new(
        id,
        rng.random_range(1..4),
        us(round * 10 + rng.random_range(0..spread)),
    )
}

/// The merge scenario, shared by the local and S3 tests.
async fn merge_scenario(sink: &DeltaSink) {
    let mut t = sink.table("Observation").await.unwrap();
    assert!(!t.exists());
    let initial: Vec<RowSpec> = (0..20)
        .map(|i| RowSpec::new(format!("o{i}"), 2, us(100)))
        .collect();
    let out = write(
        &mut t,
        &[batch(&initial[..10], 1), batch(&initial[10..], 1)],
        SaveMode::Merge,
        None,
    )
    .await;
    assert_eq!(out.status, WriteStatus::Committed);
    assert_eq!((out.inserted, out.updated, out.unchanged), (20, 0, 0));
    assert_eq!(out.version, Some(0));

    let changes = vec![
        RowSpec::new("o0", 3, us(200)),  // newer: update
        RowSpec::new("o1", 1, us(50)),   // older lastUpdated: stale
        RowSpec::new("o2", 1, us(100)),  // same lastUpdated, lower version: stale
        RowSpec::new("o3", 2, us(100)),  // identical version: unchanged
        RowSpec::new("o4", 10, us(100)), // same lastUpdated, version 10 > 2 numerically
        RowSpec::new("n1", 1, us(300)),  // new
        RowSpec {
            id: "o5".into(),
            version_id: Some("9".into()),
            last_updated: None,
        }, // null lastUpdated is oldest
    ];
    let out = merge(&mut t, &changes, 2).await;
    assert_eq!(
        (out.inserted, out.updated, out.unchanged),
        (1, 2, 4),
        "{out:?}"
    );
    assert_eq!(out.version, Some(1));
    let rows = read_all(&t).await;
    assert_eq!(rows.len(), 21);
    assert_eq!(
        only(&rows, "o0"),
        (Some("3".into()), Some(us(200)), Some(2))
    );
    assert_eq!(
        only(&rows, "o1"),
        (Some("2".into()), Some(us(100)), Some(1))
    );
    assert_eq!(
        only(&rows, "o2"),
        (Some("2".into()), Some(us(100)), Some(1))
    );
    assert_eq!(only(&rows, "o3").2, Some(1));
    assert_eq!(
        only(&rows, "o4"),
        (Some("10".into()), Some(us(100)), Some(2))
    );
    assert_eq!(only(&rows, "o5").2, Some(1));
    assert_eq!(only(&rows, "n1").2, Some(2));
    assert!(rows.values().all(|v| v.len() == 1));
}

#[tokio::test]
async fn merge_applies_only_newer_rows() {
    let (dir, sink) = local_sink();
    merge_scenario(&sink).await;
    // The table lives at <root>/<Type>.parquet.
    assert!(dir.path().join("Observation.parquet/_delta_log").is_dir());
}

#[tokio::test]
async fn merge_with_deletion_vectors_applies_only_newer_rows() {
    let (dir, sink) = local_sink_with(SinkConfig {
        deletion_vectors: true,
        ..small_config()
    });
    merge_scenario(&sink).await;
    let files: Vec<_> = std::fs::read_dir(dir.path().join("Observation.parquet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("deletion_vector_")),
        "{files:?}"
    );
    // A file with a vector says its statistics cover deleted rows too.
    let log = std::fs::read_to_string(
        dir.path()
            .join("Observation.parquet/_delta_log/00000000000000000001.json"),
    )
    .unwrap();
    let marked = log
        .lines()
        .filter(|l| l.contains(r#""add":"#) && l.contains(r#""deletionVector":{"#))
        .collect::<Vec<_>>();
    assert!(!marked.is_empty(), "{log}");
    assert!(
        marked
            .iter()
            .all(|l| l.contains(r#"\"tightBounds\":false"#)),
        "{log}"
    );
}

#[tokio::test]
async fn duplicate_ids_in_input_keep_the_newest_across_batches() {
    let (_dir, _sink, mut t) = observations().await;
    let b1 = batch(
        &[
            RowSpec::new("a", 1, us(10)),
            RowSpec::new("b", 5, us(50)),
            RowSpec::new("a", 3, us(30)),
        ],
        1,
    );
    let b2 = batch(
        &[
            RowSpec::new("a", 2, us(20)),
            RowSpec::new("b", 4, us(50)),
            RowSpec::new("c", 1, us(1)),
        ],
        2,
    );
    let out = write(&mut t, &[b1, b2], SaveMode::Merge, None).await;
    assert_eq!(out.inserted, 3);
    assert_eq!(out.duplicates, 3);
    let rows = read_all(&t).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(only(&rows, "a"), (Some("3".into()), Some(us(30)), Some(1)));
    assert_eq!(only(&rows, "b"), (Some("5".into()), Some(us(50)), Some(1)));

    // Against stored rows too: duplicates of an existing id, newest of them wins.
    let out = merge(
        &mut t,
        &[RowSpec::new("a", 7, us(70)), RowSpec::new("a", 6, us(60))],
        3,
    )
    .await;
    assert_eq!((out.updated, out.duplicates), (1, 1));
    assert_eq!(only(&read_all(&t).await, "a").0, Some("7".into()));
}

#[tokio::test]
async fn writers_filled_in_parallel_commit_as_one() {
    let (dir, _sink, mut t) = observations().await;
    let (mut w1, mut w2) = (
        t.writer(observation_schema()),
        t.writer(observation_schema()),
    );
    let b1 = batch(
        &[RowSpec::new("a", 1, us(10)), RowSpec::new("b", 2, us(20))],
        1,
    );
    let b2 = batch(
        &[RowSpec::new("a", 3, us(30)), RowSpec::new("c", 1, us(1))],
        2,
    );
    let (r1, r2) = tokio::join!(w1.push(&b1), w2.push(&b2));
    r1.unwrap();
    r2.unwrap();
    w1.absorb(w2).await.unwrap();
    assert_eq!(w1.staged_rows(), 4);
    let out = t.commit(w1, options(SaveMode::Merge)).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (3, 1), "{out:?}");
    let rows = read_all(&t).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        only(&rows, "a").0.as_deref(),
        Some("3"),
        "newest across writers"
    );
    assert_eq!(
        parquet_files(&dir.path().join("Observation.parquet")).len() as u64,
        t.stats().await.unwrap().files
    );

    // Writers of different schemas do not mix.
    let mut w = t.writer(observation_schema());
    let err = w.absorb(t.writer(id_only_schema())).await.unwrap_err();
    assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
}

/// A schema of just an `id` column.
fn id_only_schema() -> arrow::datatypes::SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Utf8, true),
    ]))
}

#[tokio::test]
async fn deletes_respect_transaction_time() {
    let (_dir, _sink, mut t) = observations().await;
    let rows: Vec<RowSpec> = vec![
        RowSpec::new("old", 1, us(10)),
        RowSpec::new("new", 1, us(500)),
        RowSpec {
            id: "nolu".into(),
            version_id: Some("1".into()),
            last_updated: None,
        },
        RowSpec::new("keep", 1, us(10)),
    ];
    merge(&mut t, &rows, 1).await;
    let out = t
        .delete_ids(["old", "new", "nolu", "absent"], at(100), None)
        .await
        .unwrap();
    assert_eq!(out.deleted, 2, "{out:?}");
    assert_eq!(ids_of(&read_all(&t).await), ["keep", "new"]);

    // Deletes and data in one commit: the deleted id's incoming row is dropped too.
    let incoming = [
        RowSpec::new("keep", 2, us(20)),
        RowSpec::new("x", 1, us(20)),
    ];
    let mut w = writer_with(&t, &[batch(&incoming, 2)]).await;
    w.delete(["keep", "x"], at(30));
    let before = t.version().unwrap();
    let out = t.commit(w, CommitOptions::default()).await.unwrap();
    assert_eq!(out.version, Some(before + 1), "one commit");
    assert_eq!(out.deleted, 1);
    assert_eq!(out.inserted, 0);
    assert_eq!(ids_of(&read_all(&t).await), ["new"]);
}

#[tokio::test]
async fn reconciliation_removes_ids_missing_from_the_export() {
    let (_dir, _sink, mut t) = observations().await;
    let ids = numbered("r", 30);
    merge(&mut t, &first_versions(&ids), 1).await;
    // Server now has r0..r19; candidates limit the scope to r0..r24 (Group members).
    let keep: IdSet = ids[..20].iter().collect();
    let candidates: IdSet = ids[..25].iter().collect();
    let removed = t
        .reconcile(keep.clone(), Some(candidates), None)
        .await
        .unwrap();
    assert_eq!(removed, 5);
    let stored = read_all(&t).await;
    assert_eq!(stored.len(), 25);
    assert!(stored.contains_key("r27") && !stored.contains_key("r22"));
    // Unrestricted: everything outside the set goes.
    assert_eq!(t.reconcile(keep, None, None).await.unwrap(), 5);
    assert_eq!(read_all(&t).await.len(), 20);
}

#[tokio::test]
async fn save_modes() {
    let (_dir, sink, mut t) = local_table("Patient", small_config()).await;
    let a = batch(
        &[RowSpec::new("a", 1, us(1)), RowSpec::new("b", 1, us(1))],
        1,
    );
    let c_rows = [RowSpec::new("c", 1, us(1))];
    let c = batch(&c_rows, 2);

    // error: creates when absent, fails when present.
    let out = write(
        &mut t,
        std::slice::from_ref(&a),
        SaveMode::ErrorIfExists,
        None,
    )
    .await;
    assert_eq!(out.inserted, 2);
    let err = failed_commit(&mut t, &c_rows, SaveMode::ErrorIfExists).await;
    assert!(matches!(err, SinkError::TableExists { .. }), "{err}");
    assert!(err.to_string().contains("Patient.parquet"), "{err}");

    // ignore: no-op on an existing table.
    let out = write(&mut t, std::slice::from_ref(&c), SaveMode::Ignore, None).await;
    assert_eq!(out.status, WriteStatus::IgnoredExisting);
    assert_eq!(read_all(&t).await.len(), 2);

    // append: adds rows as they are, even an id already stored.
    let dup_a = batch(&[RowSpec::new("a", 1, us(1))], 3);
    write(&mut t, &[c.clone(), dup_a], SaveMode::Append, None).await;
    let rows = read_all(&t).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows["a"].len(), 2);

    // overwrite: replaces everything.
    let out = write(&mut t, std::slice::from_ref(&c), SaveMode::Overwrite, None).await;
    assert!(out.files_removed >= 2);
    assert_eq!(ids_of(&read_all(&t).await), ["c"]);

    // ignore on a missing table creates it.
    let mut t2 = sink.table("Encounter").await.unwrap();
    let out = write(&mut t2, std::slice::from_ref(&a), SaveMode::Ignore, None).await;
    assert_eq!(out.status, WriteStatus::Committed);
    assert_eq!(read_all(&t2).await.len(), 2);

    assert_eq!(
        "error".parse::<SaveMode>().unwrap(),
        SaveMode::ErrorIfExists
    );
    assert!("upsert".parse::<SaveMode>().is_err());
}

#[tokio::test]
async fn cursor_is_committed_with_the_data_and_reruns_are_skipped() {
    let (_dir, sink, mut t) = observations().await;
    assert_eq!(t.committed_version("srv/Observation").await.unwrap(), None);
    let tt = at(1000);
    let cursor = Cursor::new("srv/Observation", tt, "sync-1");
    let out = write(
        &mut t,
        &[batch(&[RowSpec::new("a", 1, us(1))], 1)],
        SaveMode::Merge,
        Some(cursor.clone()),
    )
    .await;
    assert_eq!(out.status, WriteStatus::Committed);
    assert_eq!(
        t.committed_version("srv/Observation").await.unwrap(),
        Some(tt.timestamp_millis())
    );
    assert_eq!(t.committed_version("other").await.unwrap(), None);

    // Same export again: skipped, nothing committed.
    let version = t.version();
    let out = write(
        &mut t,
        &[batch(&[RowSpec::new("a", 9, us(9))], 2)],
        SaveMode::Merge,
        Some(cursor),
    )
    .await;
    assert_eq!(out.status, WriteStatus::AlreadyApplied);
    assert_eq!(t.version(), version);
    assert_eq!(only(&read_all(&t).await, "a").0, Some("1".into()));

    // A later export with no changes still advances the cursor.
    let mut later = Cursor::new("srv/Observation", at(2000), "sync-2");
    later
        .extra
        .push(("requestUrl".into(), serde_json::json!("http://x/$export")));
    let out = write(&mut t, &[], SaveMode::Merge, Some(later)).await;
    assert_eq!(out.status, WriteStatus::Committed);
    assert_eq!(
        t.committed_version("srv/Observation").await.unwrap(),
        Some(at(2000).timestamp_millis())
    );

    // A fresh handle rebuilds the state from the table alone.
    let t2 = sink.table("Observation").await.unwrap();
    let meta = t2.last_sync_metadata(10).await.unwrap().unwrap();
    assert_eq!(meta.sync_id.as_deref(), Some("sync-2"));
    assert_eq!(meta.transaction_time, Some(at(2000)));
    assert_eq!(meta.cursor_version, Some(at(2000).timestamp_millis()));
    assert_eq!(meta.app_id.as_deref(), Some("srv/Observation"));
    assert_eq!(meta.table_version, t2.version());
    assert_eq!(
        meta.entries.get("fhirsync.requestUrl"),
        Some(&serde_json::json!("http://x/$export"))
    );
    let stats = t2.stats().await.unwrap();
    assert_eq!(stats.rows, Some(1));
    assert_eq!(stats.files, 1);
    assert!(stats.size_bytes > 0);
    assert_eq!(stats.last_sync.unwrap().sync_id.as_deref(), Some("sync-2"));
}

#[tokio::test]
async fn schema_mismatch_is_a_clear_error() {
    let (_dir, _sink, t) = observations().await;
    let mut w = t.writer(id_only_schema());
    let err = w
        .push(&batch(&[RowSpec::new("a", 1, us(1))], 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("unexpected column") || err.to_string().contains("missing column"),
        "{err}"
    );
}

#[tokio::test]
async fn maintenance_optimize_vacuum_checkpoint() {
    let (dir, sink, mut t) = observations().await;
    for i in 0..5 {
        merge(&mut t, &first_versions(&numbered(&format!("m{i}-"), 10)), i).await;
    }
    let before = t.stats().await.unwrap();
    assert_eq!(before.files, 5);
    assert_eq!(before.rows, Some(50));
    let report = t.optimize(OptimizeOptions::default()).await.unwrap();
    assert_eq!(report.files_removed, 5);
    let after = t.stats().await.unwrap();
    assert_eq!(after.files, 1);
    assert_eq!(after.rows, Some(50));
    assert_eq!(read_all(&t).await.len(), 50);

    let table_dir = dir.path().join("Observation.parquet");
    assert_eq!(parquet_files(&table_dir).len(), 6);
    // The default 7-day retention is enforced: a zero retention is refused.
    assert!(t.vacuum(Duration::ZERO, true, false).await.is_err());
    assert_eq!(
        parquet_files(&table_dir).len(),
        6,
        "the refused vacuum deleted nothing"
    );
    let v = t.vacuum(Duration::ZERO, false, false).await.unwrap();
    assert_eq!(v.files_deleted, 5);
    assert_eq!(parquet_files(&table_dir).len(), 1);
    assert_eq!(read_all(&t).await.len(), 50);

    let version = t.checkpoint().await.unwrap();
    let cp = table_dir.join(format!("_delta_log/{version:020}.checkpoint.parquet"));
    assert!(cp.is_file(), "missing {}", cp.display());
    let reopened = sink.table("Observation").await.unwrap();
    assert_eq!(read_all(&reopened).await.len(), 50);
}

#[tokio::test]
async fn updates_rewrite_only_touched_files() {
    // Four commits: four files of ten rows each.
    let (_dir, mut t, ids) = table_of_files(small_config(), 4).await;
    let rows = vec![
        RowSpec::new(ids[3].clone(), 2, us(2)),
        RowSpec::new("brand-new", 1, us(2)),
    ];
    let out = merge(&mut t, &rows, 2).await;
    assert_eq!((out.inserted, out.updated), (1, 1));
    assert_eq!(out.files_rewritten, 1);
    assert_eq!(out.files_removed, 1);
    let stored = read_all(&t).await;
    assert_eq!(stored.len(), 41);
    assert_eq!(only(&stored, &ids[3]).2, Some(2));
    assert_eq!(t.stats().await.unwrap().rows, Some(41));
}

#[tokio::test]
async fn relative_paths_and_bad_locations() {
    assert!(DeltaSink::new("", StorageOptions::new()).is_err());
    assert!(DeltaSink::new("ftp://x/y", StorageOptions::new()).is_err());
    let sink = DeltaSink::new("some/relative/dir", StorageOptions::new()).unwrap();
    assert!(sink.root().as_str().starts_with("file:///"));
    assert!(
        sink.table_url("Patient")
            .unwrap()
            .as_str()
            .ends_with("some/relative/dir/Patient.parquet")
    );
    assert!(sink.table_url("../x").is_err());
    let s3 = DeltaSink::new("s3://bucket/prefix", StorageOptions::new()).unwrap();
    assert_eq!(
        s3.table_url("Patient").unwrap().as_str(),
        "s3://bucket/prefix/Patient.parquet"
    );
}

#[tokio::test]
async fn concurrent_writers_conflict_with_a_typed_error() {
    let (_dir, sink) = local_sink();
    conflict_scenario(&sink).await;
}

/// Two handles stage against the same version and commit with the same txn app id: exactly
/// one commit lands, the other is refused with a typed conflict.
async fn conflict_scenario(sink: &DeltaSink) {
    let mut t = sink.table("Observation").await.unwrap();
    merge(&mut t, &[RowSpec::new("a", 1, us(1))], 1).await;
    let mut t1 = sink.table("Observation").await.unwrap();
    let mut t2 = sink.table("Observation").await.unwrap();
    let w1 = writer_with(&t1, &[batch(&[RowSpec::new("a", 2, us(2))], 2)]).await;
    let w2 = writer_with(&t2, &[batch(&[RowSpec::new("a", 3, us(3))], 3)]).await;
    let c = |v: i64| CommitOptions {
        mode: SaveMode::Merge,
        cursor: Some(Cursor::new("app", at(v), "s")),
    };
    let (r1, r2) = tokio::join!(t1.commit(w1, c(10)), t2.commit(w2, c(20)));
    let (winner, cursor, err) = match (r1, r2) {
        (Ok(_), Err(e)) => ("2", at(10), e),
        (Err(e), Ok(_)) => ("3", at(20), e),
        (Ok(a), Ok(b)) => panic!(
            "both commits landed (versions {:?}, {:?})",
            a.version, b.version
        ),
        (Err(a), Err(b)) => panic!("both commits failed: {a}; {b}"),
    };
    assert!(err.is_conflict(), "unexpected error: {err}");
    let t = sink.table("Observation").await.unwrap();
    assert_eq!(t.version(), Some(1), "one commit on top of the first");
    assert_eq!(only(&read_all(&t).await, "a").0.as_deref(), Some(winner));
    assert_eq!(
        t.committed_version("app").await.unwrap(),
        Some(cursor.timestamp_millis())
    );
}

/// On an object store under `prefix`: the merge scenario with rewrites, then with deletion
/// vectors (written and read back through the store), a delete, and two writers racing.
async fn object_store_scenario(prefix: &str, storage: StorageOptions) {
    for deletion_vectors in [false, true] {
        let root = format!("{prefix}/{}", uuid::Uuid::new_v4());
        let sink = DeltaSink::new(&root, storage.clone())
            .unwrap()
            .with_config(SinkConfig {
                deletion_vectors,
                ..small_config()
            });
        merge_scenario(&sink).await;
        let mut t = sink.table("Observation").await.unwrap();
        let out = t
            .delete_ids(["o0"], at(10_000), Some(Cursor::new("os", at(10_000), "x")))
            .await
            .unwrap();
        assert_eq!(out.deleted, 1);
        assert_eq!(out.files_marked > 0, deletion_vectors);
        assert_eq!(
            t.committed_version("os").await.unwrap(),
            Some(at(10_000).timestamp_millis())
        );
        assert_eq!(t.stats().await.unwrap().rows, Some(20));
        assert_eq!(read_all(&t).await.len(), 20);
    }
    let root = format!("{prefix}/{}", uuid::Uuid::new_v4());
    let sink = DeltaSink::new(&root, storage)
        .unwrap()
        .with_config(small_config());
    conflict_scenario(&sink).await;
}

/// On S3-compatible storage (moto) when `FHIRSYNC_TEST_S3_ENDPOINT` is set.
#[tokio::test]
async fn s3_merge_scenario() {
    let Ok(endpoint) = std::env::var("FHIRSYNC_TEST_S3_ENDPOINT") else {
        if std::env::var_os("CI").is_some() {
            panic!("FHIRSYNC_TEST_S3_ENDPOINT must be set in CI");
        }
        println!("skipped: FHIRSYNC_TEST_S3_ENDPOINT not set");
        return;
    };
    let storage = StorageOptions::new()
        .with("AWS_ENDPOINT_URL", endpoint)
        .with("AWS_ALLOW_HTTP", "true");
    object_store_scenario("s3://fhirsync-test", storage).await;
}

/// On Azure Blob storage (Azurite) when `FHIRSYNC_TEST_AZURITE_URL` is set, through both URL
/// forms: `az://container/...` and `abfss://container@account.dfs.core.windows.net/...`.
#[tokio::test]
async fn azure_merge_scenario() {
    let Some(storage) = azurite_storage() else {
        return;
    };
    object_store_scenario("az://fhirsync-test", storage.clone()).await;
    object_store_scenario(
        "abfss://fhirsync-test@devstoreaccount1.dfs.core.windows.net/abfss",
        storage,
    )
    .await;
}

/// On Google Cloud Storage: the in-repo emulator, started here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_merge_scenario() {
    let emulator = gcs_emulator::GcsEmulator::start().await.unwrap();
    emulator.create_bucket("fhirsync-test");
    let storage = emulator
        .client_settings()
        .into_iter()
        .fold(StorageOptions::new(), |s, (k, v)| s.with(k, v));
    object_store_scenario("gs://fhirsync-test", storage).await;
    assert!(
        emulator
            .names("fhirsync-test")
            .iter()
            .any(|n| n.ends_with("/Observation.parquet/_delta_log/00000000000000000000.json")),
        "the tables are in the bucket"
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn zorder_optimize_keeps_every_row() {
    let (_dir, mut t, ids) = table_of_files(small_config(), 3).await;
    let report = t
        .optimize(OptimizeOptions {
            zorder_by_id: true,
            target_file_size: None,
        })
        .await
        .unwrap();
    assert_eq!(report.files_removed, 3);
    let stored = read_all(&t).await;
    assert_eq!(stored.len(), 30);
    assert!(ids.iter().all(|id| stored.contains_key(id)));
    // Merges keep working on the optimized layout.
    let out = merge(&mut t, &[RowSpec::new(ids[0].clone(), 2, us(2))], 2).await;
    assert_eq!(out.updated, 1);
}

#[tokio::test]
async fn rows_without_id_are_rejected_without_losing_their_neighbours() {
    let (_dir, _sink, mut t) = observations().await;
    let b = batch(&first_versions(&["a", "x", "b"]), 1);
    // Null out the middle id.
    let mut cols = b.columns().to_vec();
    cols[0] = Arc::new(arrow::array::StringArray::from(vec![
        Some("a"),
        None,
        Some("b"),
    ]));
    let b = RecordBatch::try_new(b.schema(), cols).unwrap();
    let out = write(&mut t, &[b], SaveMode::Merge, None).await;
    assert_eq!((out.inserted, out.rejected), (2, 1));
    assert_eq!(ids_of(&read_all(&t).await), ["a", "b"]);
}

#[tokio::test]
async fn input_schema_must_match_the_table() {
    let (_dir, _sink, mut t) = observations().await;
    merge(&mut t, &[RowSpec::new("a", 1, us(1))], 1).await;
    // Same columns minus `_fid`: a different encoding of the type.
    let full = batch(&[RowSpec::new("b", 1, us(1))], 2);
    let narrow = full
        .project(&(0..full.num_columns() - 1).collect::<Vec<_>>())
        .unwrap();
    let mut w = t.writer(narrow.schema());
    w.push(&narrow).await.unwrap();
    let err = t.commit(w, CommitOptions::default()).await.unwrap_err();
    assert!(matches!(err, SinkError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("_fid"), "{err}");
    assert_eq!(read_all(&t).await.len(), 1);
}

#[tokio::test]
async fn an_export_without_rows_still_creates_the_table_and_records_the_cursor() {
    let (_dir, _sink, mut t) = local_table("Device", small_config()).await;
    let out = write(
        &mut t,
        &[],
        SaveMode::Merge,
        Some(Cursor::new("srv/Device", at(5), "s1")),
    )
    .await;
    assert_eq!(out.status, WriteStatus::Committed);
    assert_eq!(out.version, Some(0));
    assert_eq!(
        t.committed_version("srv/Device").await.unwrap(),
        Some(at(5).timestamp_millis())
    );
    assert_eq!(t.stats().await.unwrap().rows, Some(0));
    assert_eq!(
        t.arrow_schema().unwrap().unwrap().fields().len(),
        observation_schema().fields().len()
    );
}

#[tokio::test]
async fn merges_fold_small_files_together() {
    let config = SinkConfig {
        compact_small_files: 4,
        ..small_config()
    };
    let (_dir, mut t, ids) = table_of_files(config, 3).await;
    assert_eq!(t.stats().await.unwrap().files, 3);
    // The fourth small file (from this merge's inserts) reaches the threshold next time.
    let out = merge(&mut t, &[RowSpec::new("n1", 1, us(1))], 2).await;
    assert_eq!(out.files_compacted, 0);
    let rows = [
        RowSpec::new(ids[0].clone(), 2, us(2)),
        RowSpec::new("n2", 1, us(1)),
    ];
    let out = merge(&mut t, &rows, 3).await;
    assert_eq!(
        (
            out.inserted,
            out.updated,
            out.files_rewritten,
            out.files_compacted
        ),
        (1, 1, 1, 3),
        "{out:?}"
    );
    let stats = t.stats().await.unwrap();
    assert_eq!(stats.files, 2, "one packed rewrite + the insert file");
    assert_eq!(stats.rows, Some(32));
    let stored = read_all(&t).await;
    assert_eq!(stored.len(), 32);
    assert_eq!(only(&stored, &ids[0]).2, Some(3));
    assert!(stored.values().all(|v| v.len() == 1));
}

/// A generator for a seeded test; the seed is printed to replay a failure.
fn seeded(seed: u64) -> StdRng {
    println!("seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// `n` random UUIDs drawn from `rng`, so that a seed replays them too.
fn seeded_ids(rng: &mut StdRng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            uuid::Builder::from_random_bytes(rng.random())
                .into_uuid()
                .to_string()
        })
        .collect()
}

/// A writer holding `incoming`, deleting `deleted` as of `deleted_at` and (when given)
/// reconciling against `keep`.
async fn change_writer(
    table: &ResourceTable,
    incoming: &[RecordBatch],
    deleted: &[String],
    deleted_at: DateTime<Utc>,
    keep: Option<&IdSet>,
) -> TableWriter {
    let mut w = writer_with(table, incoming).await;
    w.delete(deleted, deleted_at);
    if let Some(keep) = keep {
        w.reconcile(keep.clone(), None);
    }
    w
}

/// Matching in many id buckets gives exactly what one pass gives: same rows, same counts.
#[tokio::test]
async fn bucketed_matching_equals_a_single_pass() {
    for seed in 0..4u64 {
        let mut rng = seeded(seed);
        let ids = seeded_ids(&mut rng, 120);
        // Stored: 100 ids, a few twice; incoming: updates, stale rows, duplicates, new ids.
        let stored: Vec<RowSpec> = ids[..100]
            .iter()
            .chain(&ids[..5])
            .map(|id| random_version(&mut rng, id, 0, 4))
            .collect();
        let incoming: Vec<RowSpec> = (0..80)
            .map(|_| {
                let i = rng.random_range(0..ids.len());
                random_version(&mut rng, &ids[i], 0, 4)
            })
            .collect();
        let deleted: Vec<String> = (0..10)
            .map(|_| ids[rng.random_range(0..ids.len())].clone())
            .collect();
        let keep: IdSet = ids[..90].iter().collect();
        let batches: Vec<RecordBatch> = incoming.chunks(30).map(|c| batch(c, 2)).collect();

        let mut results = Vec::new();
        for bucket_rows in [1_000_000, 7, 1] {
            let (_dir, _sink, mut t) = observations_with(SinkConfig {
                index_bucket_rows: bucket_rows,
                ..small_config()
            })
            .await;
            let first = merge(&mut t, &stored, 1).await;
            let w = change_writer(&t, &batches, &deleted, at(2), Some(&keep)).await;
            let second = t.commit(w, CommitOptions::default()).await.unwrap();
            let counts = |o: &WriteOutcome| {
                (
                    o.inserted,
                    o.updated,
                    o.unchanged,
                    o.deleted,
                    o.reconciled,
                    o.duplicates,
                )
            };
            results.push((counts(&first), counts(&second), read_all(&t).await));
        }
        assert_eq!(results[0], results[1], "seed {seed}: 7-row buckets differ");
        assert_eq!(results[0], results[2], "seed {seed}: 1-row buckets differ");
        // The scenario exercises every path.
        let (_, c, rows) = &results[0];
        assert!(
            c.0 > 0 && c.1 > 0 && c.2 > 0 && c.3 > 0 && c.4 > 0,
            "seed {seed}: {c:?}"
        );
        assert!(rows.values().all(|v| v.len() == 1));
    }
}

/// With deletion vectors, merges mark rows instead of rewriting files, and the table reads
/// back exactly as with rewrites, through rounds of updates, deletes and reconciliation
/// (vectors extended, files rewritten once mostly deleted), and after maintenance.
#[tokio::test]
async fn deletion_vectors_give_the_same_rows_as_rewrites() {
    for seed in 0..3u64 {
        let mut rng = seeded(seed);
        let ids = seeded_ids(&mut rng, 150);
        let stored: Vec<RowSpec> = ids[..100]
            .iter()
            .map(|id| random_version(&mut rng, id, 0, 12))
            .collect();
        let rounds: Vec<(Vec<RowSpec>, Vec<String>, IdSet)> = (1..4)
            .map(|round| {
                let incoming = (0..40)
                    .map(|_| {
                        let i = rng.random_range(0..ids.len());
                        random_version(&mut rng, &ids[i], round, 12)
                    })
                    .collect();
                let deleted = (0..6)
                    .map(|_| ids[rng.random_range(0..ids.len())].clone())
                    .collect();
                let keep: IdSet = ids.iter().filter(|_| rng.random_bool(0.95)).collect();
                (incoming, deleted, keep)
            })
            .collect();

        let mut results = Vec::new();
        let mut marked = 0;
        for vectors in [false, true] {
            let (dir, sink, mut t) = observations_with(SinkConfig {
                new_file_rows: 25,
                deletion_vectors: vectors,
                ..small_config()
            })
            .await;
            let mut seen = vec![merge(&mut t, &stored, 0).await.inserted];
            for (round, (incoming, deleted, keep)) in rounds.iter().enumerate() {
                let incoming = [batch(incoming, round as i32 + 1)];
                let deleted_at = at(round as i64 * 10 + 11);
                let keep = (round == 2).then_some(keep);
                let w = change_writer(&t, &incoming, deleted, deleted_at, keep).await;
                let out = t.commit(w, CommitOptions::default()).await.unwrap();
                marked += out.files_marked;
                seen.extend([
                    out.inserted,
                    out.updated,
                    out.unchanged,
                    out.deleted,
                    out.reconciled,
                ]);
                let rows = read_all(&t).await;
                assert!(rows.values().all(|v| v.len() == 1), "seed {seed}");
                let stats = t.stats().await.unwrap();
                assert_eq!(
                    stats.rows,
                    Some(rows.len() as u64),
                    "seed {seed}: row count"
                );
                seen.push(rows.len() as u64);
                results.push(rows);
            }
            if vectors {
                let protocol = t.delta_table().snapshot().unwrap().protocol().clone();
                assert!(protocol.min_reader_version() >= 3, "{protocol:?}");
            }
            // A checkpoint keeps the vectors (a fresh handle reads from it); compaction
            // applies them; vacuum keeps the ones still in use.
            let before = read_all(&t).await;
            let version = t.checkpoint().await.unwrap();
            assert_eq!(Some(version), t.version());
            let fresh = sink.table("Observation").await.unwrap();
            assert_eq!(
                read_all(&fresh).await,
                before,
                "seed {seed}: after checkpoint"
            );
            let files_before = t.stats().await.unwrap().files;
            let optimized = t.optimize(OptimizeOptions::default()).await.unwrap();
            assert_eq!(Some(optimized.version), t.version(), "seed {seed}");
            assert_eq!(
                t.stats().await.unwrap().files,
                files_before - optimized.files_removed + optimized.files_added,
                "seed {seed}: {optimized:?}"
            );
            t.vacuum(Duration::ZERO, false, false).await.unwrap();
            let referenced = t.stats().await.unwrap().files;
            let table_dir = dir.path().join("Observation.parquet");
            assert_eq!(
                parquet_files(&table_dir).len() as u64,
                referenced,
                "seed {seed}: vacuum leaves exactly the table's files"
            );
            assert_eq!(
                read_all(&t).await,
                before,
                "seed {seed}: maintenance changed rows"
            );
            results.push(BTreeMap::from([(format!("{seen:?}"), Vec::new())]));
        }
        let half = results.len() / 2;
        assert_eq!(results[..half], results[half..], "seed {seed}");
        assert!(marked > 0, "seed {seed}: no file got a deletion vector");
    }
}

/// Replaces the `subject` column with references (`None`: null subject).
fn with_subjects(b: RecordBatch, subjects: &[Option<&str>]) -> RecordBatch {
    use arrow::array::{StringArray, StructArray};
    let idx = b.schema().index_of("subject").unwrap();
    let arrow::datatypes::DataType::Struct(fields) = b.schema().field(idx).data_type().clone()
    else {
        panic!("subject is a struct")
    };
    let refs = StringArray::from(subjects.to_vec());
    let display = StringArray::from(vec![None::<&str>; subjects.len()]);
    let nulls =
        arrow::buffer::NullBuffer::from(subjects.iter().map(Option::is_some).collect::<Vec<_>>());
    let subject = StructArray::new(fields, vec![Arc::new(refs), Arc::new(display)], Some(nulls));
    let mut cols = b.columns().to_vec();
    cols[idx] = Arc::new(subject);
    RecordBatch::try_new(b.schema(), cols).unwrap()
}

#[tokio::test]
async fn reconciliation_within_a_group_touches_only_its_patients_rows() {
    let (_dir, _sink, mut t) = observations().await;
    let b = with_subjects(
        batch(&first_versions(&numbered("o", 6)), 1),
        &[
            Some("Patient/m1"),
            Some("Patient/m1"),
            Some("Patient/m2"),
            Some("Patient/x"),
            Some("https://fhir.example/Patient/m1/_history/4"),
            None,
        ],
    );
    write(&mut t, &[b], SaveMode::Merge, None).await;
    // The group's export now has only o1 (and a new row of m2).
    let new_row = with_subjects(
        batch(&[RowSpec::new("o9", 1, us(2))], 2),
        &[Some("Patient/m2")],
    );
    let mut w = writer_with(&t, &[new_row]).await;
    let keep: IdSet = ["o1", "o9"].into_iter().collect();
    w.reconcile_within(
        keep,
        ReconcileScope::References {
            columns: vec!["subject".into(), "performer".into()],
            target_type: "Patient".into(),
            targets: ["m1", "m2"].into_iter().collect(),
        },
    );
    let out = t.commit(w, CommitOptions::default()).await.unwrap();
    assert_eq!((out.inserted, out.reconciled), (1, 3), "{out:?}");
    assert_eq!(ids_of(&read_all(&t).await), ["o1", "o3", "o5", "o9"]);
}

/// The Parquet files in a table directory, committed or not.
fn parquet_files(table_dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(table_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

/// New rows are written once, as Snappy files (as Spark and Pathling write); files that
/// are rewritten get zstd for the columns holding values and Snappy for the empty ones (no
/// per-column zstd contexts for the many empty leaves of a FHIR schema).
#[tokio::test]
async fn new_files_are_snappy_and_rewrites_zstd_only_where_columns_hold_values() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let (dir, _sink, mut t) = observations().await;
    let rows = first_versions(&numbered("z", 10));
    // `subject` null in every row; a new file after the first batch (7 rows).
    let b1 = with_subjects(batch(&rows[..7], 1), &[None; 7]);
    let b2 = with_subjects(batch(&rows[7..], 1), &[None; 3]);
    write(&mut t, &[b1, b2], SaveMode::Merge, None).await;
    // The codec of `column` in every data file of the table directory, by file name.
    let codecs = |column: &str| -> BTreeMap<String, Compression> {
        parquet_files(&dir.path().join("Observation.parquet"))
            .into_iter()
            .map(|p| {
                let reader = SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
                let codec = reader
                    .metadata()
                    .row_group(0)
                    .columns()
                    .iter()
                    .find(|c| c.column_path().string() == column)
                    .unwrap_or_else(|| panic!("no column {column}"))
                    .compression();
                (p.file_name().unwrap().to_string_lossy().into_owned(), codec)
            })
            .collect()
    };
    let first = codecs("id");
    assert!(first.len() > 1, "10 rows in 7-row files: {first:?}");
    assert!(
        first.values().all(|c| *c == Compression::SNAPPY),
        "{first:?}"
    );

    // A newer z0 rewrites the file that held it.
    let update = with_subjects(batch(&[RowSpec::new("z0", 2, us(2))], 2), &[None]);
    let out = write(&mut t, &[update], SaveMode::Merge, None).await;
    assert_eq!((out.updated, out.files_rewritten), (1, 1), "{out:?}");
    let ids = codecs("id");
    let rewritten: Vec<&String> = ids
        .iter()
        .filter(|(_, c)| matches!(c, Compression::ZSTD(_)))
        .map(|(f, _)| f)
        .collect();
    assert_eq!(rewritten.len(), 1, "{ids:?}");
    let updated = codecs("meta.lastUpdated");
    assert!(matches!(updated[rewritten[0]], Compression::ZSTD(_)));
    assert_eq!(
        codecs("subject.reference")[rewritten[0]],
        Compression::SNAPPY
    );
    assert_eq!(read_all(&t).await.len(), 10);
}

/// Rows are written into the table directory before the commit; files the commit does not
/// take (all rows lost, or rewritten without the losers) and files of writes that never
/// commit are deleted, so the directory holds only the table's files.
#[tokio::test]
async fn files_a_commit_does_not_take_are_deleted() {
    let (dir, _sink, mut t) = observations().await;
    let data_files = || parquet_files(&dir.path().join("Observation.parquet")).len() as u64;
    let ids = numbered("d", 7);
    let v1 = first_versions(&ids);
    let v2: Vec<RowSpec> = ids.iter().map(|id| RowSpec::new(id, 2, us(2))).collect();
    // Three new files: every row of the first loses, the second wins whole, the third
    // has a winner (d9) and a stale copy of d0.
    let third = [RowSpec::new("d9", 1, us(1)), RowSpec::new("d0", 1, us(1))];
    let out = write(
        &mut t,
        &[batch(&v1, 1), batch(&v2, 2), batch(&third, 3)],
        SaveMode::Merge,
        None,
    )
    .await;
    assert_eq!((out.inserted, out.duplicates), (8, 8), "{out:?}");
    let stats = t.stats().await.unwrap();
    assert_eq!((stats.rows, stats.files), (Some(8), 2), "{stats:?}");
    assert_eq!(data_files(), 2);
    let stored = read_all(&t).await;
    assert_eq!(only(&stored, "d0").0.as_deref(), Some("2"));

    // Writes that do not commit leave nothing behind.
    let rows = [RowSpec::new("x", 1, us(5))];
    let out = write(&mut t, &[batch(&rows, 4)], SaveMode::Ignore, None).await;
    assert_eq!(out.status, WriteStatus::IgnoredExisting);
    let err = failed_commit(&mut t, &rows, SaveMode::ErrorIfExists).await;
    assert!(matches!(err, SinkError::TableExists { .. }), "{err}");
    let w = writer_with(&t, &[batch(&v2, 6)]).await; // 7 rows: a full file, written out
    assert_eq!(data_files(), 3);
    w.discard().await.unwrap();
    assert_eq!(data_files(), 2);
    assert_eq!(read_all(&t).await.len(), 8);

    // A write that stops without commit or discard (a killed sync) leaves its closed files;
    // vacuum removes them.
    let w = writer_with(&t, &[batch(&v2, 7)]).await;
    drop(w);
    assert_eq!(data_files(), 3);
    let report = t.vacuum(Duration::ZERO, false, false).await.unwrap();
    assert_eq!(report.files_deleted, 1, "{report:?}");
    assert_eq!(data_files(), 2);
    assert_eq!(read_all(&t).await.len(), 8);
}
