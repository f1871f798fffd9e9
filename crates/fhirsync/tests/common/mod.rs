//! What the end-to-end tests share: the test server, sync options and a fast-polling client,
//! and reading the tables back.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::SyncOptions;
use fhirsync::logging::LogMode;
use fhirsync::run::{RunKind, SyncReport};
use fhirsync::sync;
use tokio_util::sync::CancellationToken;

pub const TYPES: [&str; 4] = ["Patient", "Condition", "Observation", "Encounter"];

pub async fn server(data: DataSource) -> TestServer {
    TestServer::start(ServerConfig {
        data,
        polls_before_complete: 1,
        retry_after_secs: 0,
        resources_per_file: 400,
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
