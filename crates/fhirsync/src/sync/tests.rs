//! The apply path as a sync drives it (files of an announced type, reconciliation on) with a
//! file that breaks off, a user's file and a downloaded copy: tested here, below the export,
//! since a download that the client checked does not break so short of a failing disk.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::{Array, StringArray};
use chrono::{TimeZone, Utc};

use super::apply::apply_files;
use super::input::{ApplyInput, InputFile};
use super::setup;
use crate::config::SaveMode;
use crate::run::SyncReport;

fn input(dir: &Path, reconcile: bool) -> ApplyInput {
    ApplyInput {
        app_id: "fhirsync:test".into(),
        mode: SaveMode::Merge,
        types: Some(BTreeSet::from(["Patient".to_string()])),
        reconcile,
        max_rejects: None,
        rejects_dir: dir.join("_rejects"),
        events: Default::default(),
        cancel: Default::default(),
        views: Vec::new(),
    }
}

fn patients(ids: impl IntoIterator<Item = String>) -> String {
    ids.into_iter()
        .map(|id| {
            format!("{{\"resourceType\":\"Patient\",\"id\":\"{id}\",\"gender\":\"female\"}}\n")
        })
        .collect()
}

async fn ids(delta: &str) -> BTreeSet<String> {
    let batches = crate::tables::query(delta, "SELECT id FROM Patient", None)
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for b in batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        out.extend((0..col.len()).map(|i| col.value(i).to_owned()));
    }
    out
}

/// Applies `path` (a file announced as Patient resources) to the tables in `dir`, as an export
/// of `month` 2024; reconciling or not.
async fn apply(dir: &Path, path: PathBuf, reconcile: bool, month: u32) -> SyncReport {
    try_apply(dir, path, reconcile, month, false).await.unwrap()
}

async fn try_apply(
    dir: &Path,
    path: PathBuf,
    reconcile: bool,
    month: u32,
    downloaded: bool,
) -> anyhow::Result<SyncReport> {
    let delta = dir.join("delta").display().to_string();
    let sink = setup::sink(&delta, &BTreeMap::new(), false).unwrap();
    let file = InputFile {
        downloaded,
        ..InputFile::of_type(path, Some("Patient".into()))
    };
    let transaction_time = Utc.with_ymd_and_hms(2024, month, 1, 0, 0, 0).unwrap();
    let input = input(dir, reconcile);
    let encoder = setup::encoder(3, false, false);
    apply_files(&sink, encoder, vec![file], vec![], input, transaction_time).await
}

/// Patient resources `p0`..`p1999`, gzipped and cut in half.
fn broken_gzip(path: &Path) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(patients((0..2000).map(|i| format!("p{i}"))).as_bytes())
        .unwrap();
    let whole = gz.finish().unwrap();
    std::fs::write(path, &whole[..whole.len() / 2]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_breaks_off_is_one_reject_and_stops_the_reconciliation_of_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("Patient.1.ndjson");
    std::fs::write(&first, patients(["x1".into(), "x2".into(), "p0".into()])).unwrap();
    apply(dir.path(), first, false, 1).await;

    // A full export whose one file breaks off: x1 and x2 may be in the part never read.
    let broken = dir.path().join("Patient.2.ndjson.gz");
    broken_gzip(&broken);
    let report = apply(dir.path(), broken, true, 2).await;

    let p = &report.tables["Patient"];
    assert_eq!((p.rejected, p.reconciled), (1, 0), "{p:?}");
    let kept = ids(&dir.path().join("delta").display().to_string()).await;
    assert!(kept.contains("x1") && kept.contains("x2"), "{kept:?}");
    assert!(
        kept.len() > 3,
        "the rows read before the break are written: {kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaded_copy_that_breaks_off_fails_the_run_and_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("Patient.1.ndjson");
    std::fs::write(&first, patients(["x1".into(), "p0".into()])).unwrap();
    apply(dir.path(), first, false, 1).await;
    let delta = dir.path().join("delta").display().to_string();
    let before = ids(&delta).await;

    // The server has every line of the file: committing what was read would move the cursor
    // past the rest.
    let broken = dir.path().join("Patient.2.ndjson.gz");
    broken_gzip(&broken);
    let err = try_apply(dir.path(), broken.clone(), true, 2, true)
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("Patient.2.ndjson.gz")
            && message.contains("the next run downloads it again"),
        "{message}"
    );
    assert!(
        !broken.exists(),
        "the broken copy is deleted so a resumed export fetches it"
    );
    assert_eq!(ids(&delta).await, before, "nothing was committed");
    let sink = setup::sink(&delta, &BTreeMap::new(), false).unwrap();
    let table = sink.table("Patient").await.unwrap();
    let cursor = table.committed_version("fhirsync:test").await.unwrap();
    let january = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(
        cursor,
        Some(january.timestamp_millis()),
        "the cursor did not move"
    );
}
