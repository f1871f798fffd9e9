//! What the table tests share: rows with a marker, small sinks in temporary directories,
//! writes, and reading a table back through delta-rs (DataFusion).
// Each test crate uses its own part of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::TimestampMicrosecondType;
use delta_sink::generator::{RowSpec, observation_batch, observation_schema};
use delta_sink::{
    CommitOptions, Cursor, DeltaSink, ResourceTable, SaveMode, SinkConfig, StorageOptions,
    TableWriter, WriteOutcome,
};
use deltalake::datafusion::prelude::SessionContext;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tempfile::TempDir;

/// Stored row: (versionId, lastUpdated µs, `_fid` marker).
pub type Row = (Option<String>, Option<i64>, Option<i32>);

pub fn us(secs: i64) -> i64 {
    1_700_000_000_000_000 + secs * 1_000_000
}

pub fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// A batch whose `_fid` column carries `marker` so tests can tell versions apart.
pub fn batch(rows: &[RowSpec], marker: i32) -> RecordBatch {
    let b = observation_batch(rows, &mut rng());
    let mut cols = b.columns().to_vec();
    let fid_idx = b.schema().index_of("_fid").unwrap();
    cols[fid_idx] = Arc::new(arrow::array::Int32Array::from(vec![marker; rows.len()]));
    RecordBatch::try_new(b.schema(), cols).unwrap()
}

pub fn small_config() -> SinkConfig {
    SinkConfig {
        new_file_rows: 7, // several new files even for tiny inputs
        new_file_bytes: 1,
        read_batch_rows: 5,
        index_bucket_rows: 4, // several matching passes even for tiny inputs
        ..SinkConfig::default()
    }
}

/// A sink with `config` in a fresh directory.
pub fn local_sink_with(config: SinkConfig) -> (TempDir, DeltaSink) {
    let dir = tempfile::tempdir().unwrap();
    let sink = DeltaSink::new(dir.path().to_str().unwrap(), StorageOptions::new())
        .unwrap()
        .with_config(config);
    (dir, sink)
}

/// The (not yet existing) table of `resource_type` of a fresh [`local_sink_with`].
pub async fn local_table(
    resource_type: &str,
    config: SinkConfig,
) -> (TempDir, DeltaSink, ResourceTable) {
    let (dir, sink) = local_sink_with(config);
    let table = sink.table(resource_type).await.unwrap();
    (dir, sink, table)
}

pub async fn observations_with(config: SinkConfig) -> (TempDir, DeltaSink, ResourceTable) {
    local_table("Observation", config).await
}

pub async fn read_all(table: &ResourceTable) -> BTreeMap<String, Vec<Row>> {
    let ctx = SessionContext::new();
    let dt = table.delta_table();
    dt.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("t", dt.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("SELECT id, meta, _fid FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for b in batches {
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let ids = ids.as_string::<i32>();
        let meta = b.column(1).as_struct();
        let ver = arrow::compute::cast(
            meta.column_by_name("versionId").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let ver = ver.as_string::<i32>();
        let lu = meta
            .column_by_name("lastUpdated")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        let fid = b.column(2).as_primitive::<arrow::datatypes::Int32Type>();
        for i in 0..b.num_rows() {
            out.entry(ids.value(i).to_string()).or_default().push((
                ver.is_valid(i).then(|| ver.value(i).to_string()),
                lu.is_valid(i).then(|| lu.value(i)),
                fid.is_valid(i).then(|| fid.value(i)),
            ));
        }
    }
    out
}

/// A writer of `table` holding `batches`.
pub async fn writer_with(table: &ResourceTable, batches: &[RecordBatch]) -> TableWriter {
    let mut w = table.writer(observation_schema());
    for b in batches {
        w.push(b).await.unwrap();
    }
    w
}

pub async fn write(
    table: &mut ResourceTable,
    batches: &[RecordBatch],
    mode: SaveMode,
    cursor: Option<Cursor>,
) -> WriteOutcome {
    let w = writer_with(table, batches).await;
    table
        .commit(w, CommitOptions { mode, cursor })
        .await
        .unwrap()
}

/// Merges `rows` (one batch marked `marker`) without a cursor.
pub async fn merge(table: &mut ResourceTable, rows: &[RowSpec], marker: i32) -> WriteOutcome {
    write(table, &[batch(rows, marker)], SaveMode::Merge, None).await
}

/// Version 1 of every id, all last updated at the same time.
pub fn first_versions<S: AsRef<str>>(ids: &[S]) -> Vec<RowSpec> {
    ids.iter()
        .map(|id| RowSpec::new(id.as_ref(), 1, us(1)))
        .collect()
}

pub fn only(rows: &BTreeMap<String, Vec<Row>>, id: &str) -> Row {
    let v = rows.get(id).unwrap_or_else(|| panic!("id {id} missing"));
    assert_eq!(v.len(), 1, "id {id} stored {} times", v.len());
    v[0].clone()
}

/// Storage options for Azurite (emulator mode, well-known account) when
/// `FHIRSYNC_TEST_AZURITE_URL` is set; `None` (the test is skipped) otherwise, except in CI.
/// object_store takes the emulator's address from `AZURITE_BLOB_STORAGE_URL` only.
pub fn azurite_storage() -> Option<StorageOptions> {
    let Ok(url) = std::env::var("FHIRSYNC_TEST_AZURITE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "FHIRSYNC_TEST_AZURITE_URL must be set in CI"
        );
        println!("skipped: FHIRSYNC_TEST_AZURITE_URL not set");
        return None;
    };
    assert_eq!(
        std::env::var("AZURITE_BLOB_STORAGE_URL").ok().as_deref(),
        Some(url.as_str()),
        "AZURITE_BLOB_STORAGE_URL must name the emulator of FHIRSYNC_TEST_AZURITE_URL (as .ci/run sets it)"
    );
    Some(StorageOptions::new().with("azure_storage_use_emulator", "true"))
}
