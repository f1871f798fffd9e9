//! What the end-to-end tests share: the test server, sync options and a fast-polling client,
//! and reading the tables back.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::SyncOptions;
use fhirsync::logging::LogMode;
use fhirsync::run::{RunKind, SyncReport};
use fhirsync::sync;
use tokio_util::sync::CancellationToken;

pub const TYPES: [&str; 4] = ["Patient", "Condition", "Observation", "Encounter"];

pub async fn server(data: DataSource) -> TestServer {
    TestServer::start(server_config(data))
        .await
        .expect("test server starts")
}

/// The settings of [`server`]: quick polls, several files per type.
pub fn server_config(data: DataSource) -> ServerConfig {
    ServerConfig {
        data,
        polls_before_complete: 1,
        retry_after_secs: 0,
        resources_per_file: 400,
        ..ServerConfig::default()
    }
}

/// A test server behaving as `profile`, asked for no `Retry-After` wait (profiles that fix
/// minutes or hours of it included).
pub async fn profile_server(
    mut profile: bulk_test_server::Profile,
    data: DataSource,
    resources_per_file: usize,
) -> TestServer {
    profile.set_retry_after(0);
    TestServer::start(ServerConfig {
        data,
        polls_before_complete: 1,
        retry_after_secs: 0,
        resources_per_file,
        profile,
        ..ServerConfig::default()
    })
    .await
    .expect("test server starts")
}

pub fn options(server: &TestServer, delta: &Path) -> SyncOptions {
    let mut opts = SyncOptions::new(server.base_url(), delta.display().to_string());
    opts.resource_types = TYPES.iter().map(|t| t.to_string()).collect();
    opts
}

pub async fn client(opts: &SyncOptions) -> sync::SyncClient {
    let mut c = sync::client_config(opts, LogMode::Json).await.unwrap();
    c.poll.min_delay = Duration::from_millis(10);
    c.poll.initial_delay = Duration::from_millis(50);
    c.retry.initial_backoff = Duration::from_millis(50);
    c.retry.max_backoff = Duration::from_millis(500);
    c
}

pub async fn run(opts: &SyncOptions, kind: RunKind) -> anyhow::Result<SyncReport> {
    sync::run_sync(opts, kind, client(opts).await, CancellationToken::new()).await
}

/// Runs SQL over the tables in `delta` (DataFusion, identifiers as written).
pub async fn sql(delta: &Path, query: &str) -> Vec<arrow::array::RecordBatch> {
    fhirsync::tables::query(&delta.display().to_string(), query, None)
        .await
        .unwrap()
}

pub async fn count(delta: &Path, table: &str) -> i64 {
    let batches = sql(delta, &format!("SELECT count(*) AS n FROM {table}")).await;
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

/// DataFusion may hand strings back as views; tests compare plain strings.
pub fn utf8(a: &arrow::array::ArrayRef) -> arrow::array::ArrayRef {
    arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).unwrap()
}

/// Where tables are: a directory or bucket URL and the object store options to read it.
pub struct Location {
    pub root: String,
    pub storage: BTreeMap<String, String>,
}

/// The tables of a local directory.
pub fn local(delta: &Path) -> Location {
    Location {
        root: delta.display().to_string(),
        storage: BTreeMap::new(),
    }
}

/// `id -> meta.versionId` of every row of a table.
pub async fn versions(delta: &Path, table: &str) -> BTreeMap<String, Option<String>> {
    versions_at(&local(delta), table).await
}

/// [`versions`] of the tables at a [`Location`].
pub async fn versions_at(at: &Location, table: &str) -> BTreeMap<String, Option<String>> {
    let query = format!("SELECT id, meta['versionId'] AS v FROM {table}");
    let batches = fhirsync::tables::query_with(&at.root, &at.storage, &query, None)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for b in batches {
        let ids = utf8(b.column(0));
        let vs = utf8(b.column(1));
        let (ids, vs) = (
            ids.as_any().downcast_ref::<StringArray>().unwrap(),
            vs.as_any().downcast_ref::<StringArray>().unwrap(),
        );
        for i in 0..b.num_rows() {
            let v = (!vs.is_null(i)).then(|| vs.value(i).to_string());
            assert!(
                out.insert(ids.value(i).to_string(), v).is_none(),
                "duplicate id {} in {table}",
                ids.value(i)
            );
        }
    }
    out
}

/// `id -> the row` of batches with an `id` column, without the columns named in `skip`.
fn rows(t: &str, batches: &[RecordBatch], skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let options = FormatOptions::default().with_null("null");
    for b in batches {
        let ids = utf8(b.column_by_name("id").expect("an id column"));
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let columns: Vec<(String, ArrayFormatter)> = b
            .schema()
            .fields()
            .iter()
            .zip(b.columns())
            .filter(|(f, _)| !skip.contains(&f.name().as_str()))
            .map(|(f, c)| {
                let format = ArrayFormatter::try_new(c.as_ref(), &options).unwrap();
                (f.name().clone(), format)
            })
            .collect();
        for i in 0..b.num_rows() {
            let row: Vec<String> = columns
                .iter()
                .map(|(name, format)| format!("{name}={}", format.value(i)))
                .collect();
            assert!(
                out.insert(ids.value(i).to_string(), row.join(", "))
                    .is_none(),
                "duplicate id {} in {t}",
                ids.value(i)
            );
        }
    }
    out
}

/// Every row of table `t`.
pub async fn table_rows(delta: &Path, t: &str) -> BTreeMap<String, String> {
    table_rows_without(delta, t, &[]).await
}

/// Every row of table `t` without the columns named in `skip` (`meta`, say, when the rows
/// come from servers whose clocks differ).
pub async fn table_rows_without(delta: &Path, t: &str, skip: &[&str]) -> BTreeMap<String, String> {
    let batches = fhirsync::tables::query(
        &delta.display().to_string(),
        &format!("SELECT * FROM {t}"),
        Some(&[t.to_string()]),
    )
    .await
    .unwrap();
    rows(t, &batches, skip)
}

/// How `actual` differs from `expected`: a few ids of rows missing, extra or not the same.
pub fn difference(
    expected: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> String {
    let few = |ids: Vec<&String>| format!("{} {:?}", ids.len(), &ids[..ids.len().min(5)]);
    let missing = expected
        .keys()
        .filter(|id| !actual.contains_key(*id))
        .collect();
    let extra = actual
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let changed = expected
        .iter()
        .filter(|(id, row)| actual.get(*id).is_some_and(|a| a != *row))
        .map(|(id, _)| id)
        .collect();
    format!(
        "missing {}, extra {}, changed {}",
        few(missing),
        few(extra),
        few(changed)
    )
}

/// Asserts that the tables `types` of `actual` hold the rows of those of `expected`, every
/// column alike.
pub async fn assert_same_rows(actual: &Path, expected: &Path, types: &[&str]) {
    for t in types {
        let (a, e) = (table_rows(actual, t).await, table_rows(expected, t).await);
        assert!(a == e, "{t}: {}", difference(&e, &a));
    }
}

/// The id of the first Observation of `patient` on the server.
pub fn observation_of(store: &bulk_test_server::StoreHandle, patient: &str) -> String {
    let o = resource_of(store, "Observation", patient);
    o["id"].as_str().expect("an id").to_string()
}

/// The first resource of type `ty` on the server whose `subject` or `patient` is `patient`.
pub fn resource_of(
    store: &bulk_test_server::StoreHandle,
    ty: &str,
    patient: &str,
) -> serde_json::Value {
    let reference = format!("Patient/{patient}");
    store
        .ids(ty)
        .into_iter()
        .filter_map(|id| store.get(ty, &id))
        .find(|r| {
            ["/subject/reference", "/patient/reference"]
                .iter()
                .any(|p| r.pointer(p).and_then(|v| v.as_str()) == Some(reference.as_str()))
        })
        .unwrap_or_else(|| panic!("no {ty} of {patient}"))
}

/// The patient ids of Group `group` on the server (its members are `Patient/<id>` references).
pub fn group_members(store: &bulk_test_server::StoreHandle, group: &str) -> Vec<String> {
    store
        .get("Group", group)
        .unwrap()
        .pointer("/member")
        .and_then(|m| m.as_array())
        .unwrap()
        .iter()
        .map(|m| {
            m.pointer("/entity/reference").unwrap().as_str().unwrap()["Patient/".len()..]
                .to_string()
        })
        .collect()
}

/// Whether the tests that need the service named by `var` run (`.ci/run` starts it and sets
/// `var`); prints why not, and fails in CI.
pub fn service(var: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{var} must be set in CI");
    eprintln!("skipped: {var} not set");
    false
}

/// Whether python3 with `deltalake` and `pyarrow` is there (required in CI); prints why not.
pub fn python_reader() -> bool {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .status();
    if probe.is_ok_and(|s| s.success()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3 with deltalake and pyarrow is required in CI (.ci/requirements.txt)"
    );
    eprintln!("skipped: python3 with deltalake and pyarrow is not installed");
    false
}

/// Reads every table with Python's `deltalake` and compares ids and versions with ours;
/// `with_vectors` are the tables it must read through DataFusion (deletion vectors on).
pub async fn read_back_in_python(at: &Location, with_vectors: &[&str]) {
    let script = r#"
import json, sys
from deltalake import DeltaTable, QueryBuilder
out = {}
options = json.loads(sys.argv[2])
for t in sys.argv[3:]:
    dt = DeltaTable(f"{sys.argv[1]}/{t}.parquet", storage_options=options)
    if "deletionVectors" in (dt.protocol().reader_features or []):
        reader = "datafusion"
        rows = QueryBuilder().register("t", dt).execute("SELECT id, meta FROM t").read_all()
    else:
        reader = "pyarrow"
        rows = dt.to_pyarrow_table(columns=["id", "meta"])
    ids = [str(i) for i in rows.column("id").to_pylist()]
    versions = [m["versionId"] for m in rows.column("meta").to_pylist()]
    meta = [h for h in dt.history() if any(k.startswith("fhirsync.") for k in h)]
    out[t] = {"reader": reader, "rows": len(ids), "distinct": len(set(ids)), "versions": dict(zip(ids, versions)), "fhirsync_commits": len(meta)}
print(json.dumps(out), flush=True)
# The native reader's threads can abort the interpreter's shutdown ("terminate called without
# an active exception"); the answer is printed, so leave without that shutdown.
import os
os._exit(0)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(at.root.trim_end_matches('/'))
        .arg(serde_json::to_string(&at.storage).unwrap())
        .args(TYPES)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in TYPES {
        let ours = versions_at(at, t).await;
        let expected_reader = if with_vectors.contains(&t) {
            "datafusion"
        } else {
            "pyarrow"
        };
        assert_eq!(seen[t]["reader"], expected_reader, "{t}");
        assert_eq!(
            seen[t]["rows"].as_u64().unwrap() as usize,
            ours.len(),
            "{t}"
        );
        assert_eq!(seen[t]["distinct"], seen[t]["rows"], "{t}");
        let theirs: BTreeMap<String, Option<String>> =
            serde_json::from_value(seen[t]["versions"].clone()).unwrap();
        assert_eq!(theirs, ours, "{t}");
        assert!(
            seen[t]["fhirsync_commits"].as_u64().unwrap() >= 1,
            "{t}: the cursor commit is in the history"
        );
    }
}
