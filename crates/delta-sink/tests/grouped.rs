//! Grouped keys (SQL-on-FHIR view tables): every resource has a group of rows, named by
//! hidden key columns; a newer version of the resource replaces all of them. Real tables,
//! read back through delta-rs (DataFusion), with and without deletion vectors, indexed at
//! once and spilled by bucket.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, TimeZone, Utc};
use delta_sink::{
    CommitOptions, Cursor, IdSet, KeyRows, KeySpec, OptimizeOptions, ResourceTable, SaveMode,
    SinkConfig, SinkError, WriteOutcome, WriteStatus,
};
use deltalake::datafusion::prelude::SessionContext;
use tempfile::TempDir;

use common::{local_table, small_config, us};

const KEY: &str = "_resource_key";
const META: &str = "_resource_meta";
const PLACEHOLDER: &str = "_placeholder";

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us(secs)).single().unwrap()
}

/// One row of a view: its resource's key and version (versionId `v`, last updated at
/// `us(v)`), and its value; `None`: a placeholder (the version has no rows).
struct ViewRow {
    key: &'static str,
    version: i64,
    value: Option<&'static str>,
}

fn row(key: &'static str, version: i64, value: &'static str) -> ViewRow {
    ViewRow {
        key,
        version,
        value: Some(value),
    }
}

fn placeholder(key: &'static str, version: i64) -> ViewRow {
    ViewRow {
        key,
        version,
        value: None,
    }
}

fn meta_fields() -> Fields {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Fields::from(vec![
        Field::new("versionId", DataType::Utf8, true),
        Field::new("lastUpdated", ts, true),
    ])
}

/// A view table's schema: key, recency, placeholder flag (when `grouped`) and a value.
fn view_schema(grouped: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new(KEY, DataType::Utf8, true),
        Field::new(META, DataType::Struct(meta_fields()), true),
    ];
    if grouped {
        fields.push(Field::new(PLACEHOLDER, DataType::Boolean, true));
    }
    fields.push(Field::new("value", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

fn view_batch(rows: &[ViewRow], grouped: bool) -> RecordBatch {
    let keys = StringArray::from_iter_values(rows.iter().map(|r| r.key));
    let versions = StringArray::from_iter_values(rows.iter().map(|r| r.version.to_string()));
    let updated = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| us(r.version)))
        .with_timezone("UTC");
    let meta = StructArray::new(
        meta_fields(),
        vec![Arc::new(versions) as ArrayRef, Arc::new(updated)],
        None,
    );
    let mut columns: Vec<ArrayRef> = vec![Arc::new(keys), Arc::new(meta)];
    if grouped {
        let flags = BooleanArray::from_iter(rows.iter().map(|r| Some(r.value.is_none())));
        columns.push(Arc::new(flags));
    }
    columns.push(Arc::new(StringArray::from_iter(
        rows.iter().map(|r| r.value),
    )));
    RecordBatch::try_new(view_schema(grouped), columns).unwrap()
}

fn grouped_keys() -> KeySpec {
    KeySpec::grouped(KEY, META, PLACEHOLDER)
}

/// `small_config` with grouped keys, deletion vectors as asked, and matching at once or,
/// with `spill`, in buckets of one row.
fn grouped_config(deletion_vectors: bool, spill: bool) -> SinkConfig {
    SinkConfig {
        keys: grouped_keys(),
        deletion_vectors,
        index_bucket_rows: if spill { 1 } else { 10_000 },
        ..small_config()
    }
}

/// A view table and whether its rows have the placeholder column (grouped keys).
struct View {
    table: ResourceTable,
    grouped: bool,
    dir: TempDir,
}

async fn view_table(config: SinkConfig) -> View {
    let grouped = config.keys.is_grouped();
    let (dir, _sink, table) = local_table("ObservationView", config).await;
    View {
        table,
        grouped,
        dir,
    }
}

/// Merges `batches` (each into its own new file) and deletes `deletes` (as of
/// `at(1_000)`) in one commit.
async fn commit(
    view: &mut View,
    batches: &[&[ViewRow]],
    deletes: &[&str],
    cursor: Option<Cursor>,
) -> WriteOutcome {
    let grouped = view.grouped;
    let table = &mut view.table;
    let mut w = table.writer(view_schema(grouped));
    for rows in batches {
        w.push(&view_batch(rows, grouped)).await.unwrap();
        w.close_file().await.unwrap();
    }
    w.delete(deletes, at(1_000));
    let options = CommitOptions {
        mode: SaveMode::Merge,
        cursor,
    };
    table.commit(w, options).await.unwrap()
}

/// A stored row: versionId and value.
type Stored = (String, Option<String>);

/// The stored rows by key, each key's sorted; fails on a stored placeholder.
async fn read_view(view: &View) -> BTreeMap<String, Vec<Stored>> {
    let ctx = SessionContext::new();
    let dt = view.table.delta_table();
    dt.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", dt.table_provider().await.unwrap())
        .unwrap();
    let flag = if view.grouped { PLACEHOLDER } else { "false" };
    let sql = format!("SELECT {KEY}, {META}['versionId'], {flag}, value FROM t");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut out: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for b in batches {
        let utf8 = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8).unwrap();
        let (keys, versions, values) = (utf8(0), utf8(1), utf8(3));
        let (keys, versions, values) = (
            keys.as_string::<i32>(),
            versions.as_string::<i32>(),
            values.as_string::<i32>(),
        );
        let flags = b.column(2).as_boolean();
        for i in 0..b.num_rows() {
            assert!(!flags.value(i), "a placeholder was written");
            let value = (!values.is_null(i)).then(|| values.value(i).to_string());
            out.entry(keys.value(i).to_string())
                .or_default()
                .push((versions.value(i).to_string(), value));
        }
    }
    out.values_mut().for_each(|rows| rows.sort());
    out
}

/// Rows as [`read_view`] gives them: `(key, [(version, value)])`.
fn expect(rows: &[(&str, &[(i64, &str)])]) -> BTreeMap<String, Vec<Stored>> {
    rows.iter()
        .map(|(key, rows)| {
            let rows = rows
                .iter()
                .map(|(v, value)| (v.to_string(), Some(value.to_string())))
                .collect();
            (key.to_string(), rows)
        })
        .collect()
}

/// Ten keys of one row that no commit touches: they keep the share of rows a commit
/// removes from the first file low enough for deletion vectors.
const FILLERS: [&str; 10] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"];

fn counts(out: &WriteOutcome) -> [u64; 6] {
    [
        out.inserted,
        out.updated,
        out.unchanged,
        out.deleted,
        out.duplicates,
        out.reconciled,
    ]
}

/// The scenario of the brief: a first commit of groups a (3 rows), b (2), c (1), e (2);
/// then, with a cursor, a newer a of 1 row, b newer as a placeholder only, d new with 2
/// rows (beside an older duplicate group of 3), c at an older version, and e deleted.
async fn group_scenario(deletion_vectors: bool, spill: bool) {
    let mut v = view_table(grouped_config(deletion_vectors, spill)).await;
    let mut first = vec![
        row("a", 1, "a1-x"),
        row("a", 1, "a1-y"),
        row("b", 1, "b1-x"),
        row("c", 2, "c2-x"),
        row("e", 1, "e1-x"),
        row("a", 1, "a1-z"),
        row("b", 1, "b1-y"),
        row("e", 1, "e1-y"),
    ];
    first.extend(FILLERS.iter().map(|f| row(f, 1, "filler")));
    let cursor = |secs| Some(Cursor::new("view-sync", at(secs), "run"));
    let out = commit(&mut v, &[&first], &[], cursor(10)).await;
    // Keys, not rows: 14 groups of 18 rows.
    assert_eq!(counts(&out), [14, 0, 0, 0, 0, 0], "{out:?}");
    let fillers: Vec<(&str, &[(i64, &str)])> =
        FILLERS.iter().map(|f| (*f, &[(1, "filler")][..])).collect();
    let mut want = expect(&[
        ("a", &[(1, "a1-x"), (1, "a1-y"), (1, "a1-z")]),
        ("b", &[(1, "b1-x"), (1, "b1-y")]),
        ("c", &[(2, "c2-x")]),
        ("e", &[(1, "e1-x"), (1, "e1-y")]),
    ]);
    want.extend(expect(&fillers));
    assert_eq!(read_view(&v).await, want);

    // Two new files; d's newer group and a's rows are split between them.
    let one: &[ViewRow] = &[
        row("d", 1, "d1-x"),
        row("a", 2, "a2-x"),
        row("d", 0, "d0-x"),
        placeholder("b", 2),
        row("d", 0, "d0-y"),
    ];
    let two: &[ViewRow] = &[
        row("c", 1, "c1-x"),
        row("d", 0, "d0-z"),
        row("d", 1, "d1-y"),
        row("e", 1, "e1-x"),
    ];
    let before = v.table.version().unwrap();
    let out = commit(&mut v, &[one, two], &["e"], cursor(20)).await;
    assert_eq!(out.version, Some(before + 1), "one commit");
    // Inserted d; updated a and b; unchanged c and e (deleted in the input too); e's two
    // stored rows are one deleted key; d's older group is one duplicate.
    assert_eq!(counts(&out), [1, 2, 2, 1, 1, 0], "{out:?}");
    if deletion_vectors {
        assert!(out.files_marked > 0, "{out:?}");
    } else {
        assert!(out.files_marked == 0 && out.files_rewritten > 0, "{out:?}");
    }
    want = expect(&[
        ("a", &[(2, "a2-x")]),
        ("c", &[(2, "c2-x")]),
        ("d", &[(1, "d1-x"), (1, "d1-y")]),
    ]);
    want.extend(expect(&fillers));
    assert_eq!(read_view(&v).await, want);
    assert_eq!(
        v.table.committed_version("view-sync").await.unwrap(),
        Some(at(20).timestamp_millis())
    );

    // b comes back with rows; a's same version again changes nothing.
    let three: &[ViewRow] = &[
        row("b", 3, "b3-x"),
        row("a", 2, "a2-other"),
        row("b", 3, "b3-y"),
    ];
    let out = commit(&mut v, &[three], &[], cursor(30)).await;
    assert_eq!(counts(&out), [1, 0, 1, 0, 0, 0], "{out:?}");
    want.extend(expect(&[("b", &[(3, "b3-x"), (3, "b3-y")])]));
    assert_eq!(read_view(&v).await, want);

    // The same export again is skipped by its cursor.
    let out = commit(&mut v, &[three], &[], cursor(30)).await;
    assert_eq!(out.status, WriteStatus::AlreadyApplied);
}

#[tokio::test]
async fn a_newer_group_replaces_every_stored_row_of_its_key() {
    group_scenario(false, false).await;
}

#[tokio::test]
async fn grouped_keys_with_deletion_vectors() {
    group_scenario(true, false).await;
}

#[tokio::test]
async fn grouped_keys_matched_by_bucket() {
    group_scenario(false, true).await;
}

#[tokio::test]
async fn grouped_keys_by_bucket_with_deletion_vectors() {
    group_scenario(true, true).await;
}

/// Groups a (3 rows), b (2), c (1), d (2).
async fn four_groups(config: SinkConfig) -> View {
    let mut v = view_table(config).await;
    let rows = [
        row("a", 1, "a-x"),
        row("a", 1, "a-y"),
        row("b", 1, "b-x"),
        row("a", 1, "a-z"),
        row("c", 1, "c-x"),
        row("b", 1, "b-y"),
        row("d", 1, "d-x"),
        row("d", 1, "d-y"),
    ];
    commit(&mut v, &[&rows], &[], None).await;
    v
}

#[tokio::test]
async fn reconciliation_removes_every_row_of_the_keys_not_kept() {
    let mut v = four_groups(grouped_config(false, false)).await;
    let keep: IdSet = ["a", "d"].into_iter().collect();
    let removed = v.table.reconcile(keep, None, None).await.unwrap();
    assert_eq!(removed, 2, "keys b and c, three rows");
    let want = expect(&[
        ("a", &[(1, "a-x"), (1, "a-y"), (1, "a-z")]),
        ("d", &[(1, "d-x"), (1, "d-y")]),
    ]);
    assert_eq!(read_view(&v).await, want);
}

#[tokio::test]
async fn reconciliation_with_input_by_bucket() {
    for deletion_vectors in [false, true] {
        let mut v = four_groups(grouped_config(deletion_vectors, true)).await;
        let mut w = v.table.writer(view_schema(true));
        let rows = [row("a", 2, "a2"), placeholder("c", 2), row("e", 1, "e")];
        w.push(&view_batch(&rows, true)).await.unwrap();
        // The export has a, c and e; b and d are gone from the server.
        w.reconcile(["a", "c", "e"].into_iter().collect(), None);
        let out = v.table.commit(w, CommitOptions::default()).await.unwrap();
        assert_eq!(counts(&out), [1, 2, 0, 0, 0, 2], "{out:?}");
        let want = expect(&[("a", &[(2, "a2")]), ("e", &[(1, "e")])]);
        assert_eq!(
            read_view(&v).await,
            want,
            "deletion vectors: {deletion_vectors}"
        );
    }
}

#[tokio::test]
async fn a_file_of_placeholders_only_is_not_taken() {
    let mut v = four_groups(grouped_config(false, false)).await;
    let table_dir = v.dir.path().join("ObservationView.parquet");
    let files_before = count_parquet(&table_dir);
    let only_placeholders: &[ViewRow] = &[placeholder("a", 2), placeholder("new", 1)];
    let out = commit(&mut v, &[only_placeholders], &[], None).await;
    // a is emptied; a placeholder for a key the table lacks changes nothing.
    assert_eq!(counts(&out), [0, 1, 1, 0, 0, 0], "{out:?}");
    assert_eq!(out.files_added, 1, "the stored file rewritten: {out:?}");
    let keys: Vec<String> = read_view(&v).await.into_keys().collect();
    assert_eq!(keys, ["b", "c", "d"]);
    assert_eq!(
        count_parquet(&table_dir),
        files_before + 1,
        "the rewrite's file is added, the placeholders' file deleted"
    );
}

fn count_parquet(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".parquet")
        })
        .count() as u64
}

#[tokio::test]
async fn grouped_input_must_carry_the_placeholder_column() {
    let config = SinkConfig {
        keys: grouped_keys(),
        ..small_config()
    };
    let mut v = view_table(config).await;
    let mut w = v.table.writer(view_schema(false));
    w.push(&view_batch(&[row("a", 1, "a")], false))
        .await
        .unwrap();
    let err = v
        .table
        .commit(w, CommitOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::InvalidData { .. }), "{err}");
    assert!(err.to_string().contains(PLACEHOLDER), "{err}");
}

#[tokio::test]
async fn one_row_keys_in_named_columns() {
    let keys = KeySpec::one(KEY, META);
    assert_eq!(keys.rows, KeyRows::One);
    let config = SinkConfig {
        keys,
        index_bucket_rows: 2,
        ..small_config()
    };
    let mut v = view_table(config).await;
    let first: &[ViewRow] = &[
        row("x", 1, "x1"),
        row("y", 1, "y1"),
        row("x", 2, "x2"),
        row("z", 1, "z1"),
    ];
    let out = commit(&mut v, &[first], &[], None).await;
    assert_eq!(counts(&out), [3, 0, 0, 0, 1, 0], "one row per key: {out:?}");
    let second: &[ViewRow] = &[row("y", 2, "y2"), row("x", 1, "x1-again")];
    let out = commit(&mut v, &[second], &["z"], None).await;
    assert_eq!(counts(&out), [0, 1, 1, 1, 0, 0], "{out:?}");
    let want = expect(&[("x", &[(2, "x2")]), ("y", &[(2, "y2")])]);
    assert_eq!(read_view(&v).await, want);

    // Z-order by the key column (there is no `id`).
    let options = OptimizeOptions {
        zorder_by_id: true,
        ..OptimizeOptions::default()
    };
    v.table.optimize(options).await.unwrap();
    assert_eq!(read_view(&v).await, want);
}

#[tokio::test]
async fn the_default_keys_do_not_find_named_columns() {
    let mut v = view_table(small_config()).await;
    let mut w = v.table.writer(view_schema(false));
    w.push(&view_batch(&[row("a", 1, "a")], false))
        .await
        .unwrap();
    let err = v
        .table
        .commit(w, CommitOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no `id` column"), "{err}");
}

/// Rows of one key with one recency are one group only in grouped tables: the same input
/// keeps a single row per key in a table of one-row keys.
#[tokio::test]
async fn the_same_rows_keep_one_per_key_without_groups() {
    let rows: &[ViewRow] = &[row("a", 1, "a-x"), row("a", 1, "a-y"), row("b", 1, "b")];
    let mut one = view_table(SinkConfig {
        keys: KeySpec::one(KEY, META),
        ..small_config()
    })
    .await;
    let out = commit(&mut one, &[rows], &[], None).await;
    assert_eq!((out.inserted, out.duplicates), (2, 1));
    assert_eq!(
        read_view(&one).await["a"],
        [("1".to_string(), Some("a-y".to_string()))]
    );

    let mut grouped = view_table(grouped_config(false, false)).await;
    let out = commit(&mut grouped, &[rows], &[], None).await;
    assert_eq!((out.inserted, out.duplicates), (2, 0));
    assert_eq!(read_view(&grouped).await["a"].len(), 2);
}
