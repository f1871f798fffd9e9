//! The apply path as a sync drives it (files of an announced type, reconciliation on) with a
//! file that breaks off: tested here, below the export, since a download never breaks so.
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

/// Applies `path` (a file of Patient resources, as a sync's download is) to the tables in
/// `dir`, as an export of `month` 2024; reconciling or not.
async fn apply(dir: &Path, path: PathBuf, reconcile: bool, month: u32) -> SyncReport {
    let delta = dir.join("delta").display().to_string();
    let sink = setup::sink(&delta, &BTreeMap::new(), false).unwrap();
    let file = InputFile::of_type(path, Some("Patient".into()));
    let transaction_time = Utc.with_ymd_and_hms(2024, month, 1, 0, 0, 0).unwrap();
    let input = input(dir, reconcile);
    let encoder = setup::encoder(3, false);
    apply_files(&sink, encoder, vec![file], vec![], input, transaction_time)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_breaks_off_is_one_reject_and_stops_the_reconciliation_of_its_type() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("Patient.1.ndjson");
    std::fs::write(&first, patients(["x1".into(), "x2".into(), "p0".into()])).unwrap();
    apply(dir.path(), first, false, 1).await;

    // A full export whose one file breaks off: x1 and x2 may be in the part never read.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(patients((0..2000).map(|i| format!("p{i}"))).as_bytes())
        .unwrap();
    let whole = gz.finish().unwrap();
    let broken = dir.path().join("Patient.2.ndjson.gz");
    std::fs::write(&broken, &whole[..whole.len() / 2]).unwrap();
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
