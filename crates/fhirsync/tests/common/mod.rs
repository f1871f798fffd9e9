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

/// `id -> meta.versionId` of every row of a table.
pub async fn versions(delta: &Path, table: &str) -> BTreeMap<String, Option<String>> {
    let batches = sql(
        delta,
        &format!("SELECT id, meta['versionId'] AS v FROM {table}"),
    )
    .await;
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

/// `id -> the row` of batches with an `id` column.
fn rows(t: &str, batches: &[RecordBatch]) -> BTreeMap<String, String> {
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
    let batches = fhirsync::tables::query(
        &delta.display().to_string(),
        &format!("SELECT * FROM {t}"),
        Some(&[t.to_string()]),
    )
    .await
    .unwrap();
    rows(t, &batches)
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

/// The first Observation of `patient` on the server.
pub fn observation_of(store: &bulk_test_server::StoreHandle, patient: &str) -> String {
    store
        .ids("Observation")
        .into_iter()
        .find(|id| {
            store.get("Observation", id).is_some_and(|o| {
                o.pointer("/subject/reference").and_then(|r| r.as_str())
                    == Some(&format!("Patient/{patient}"))
            })
        })
        .unwrap_or_else(|| panic!("no Observation of {patient}"))
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
