//! `fhirsync encode` on the bundled Synthea export: one Parquet file per type, every line a row.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};

fn synthea() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../bulk-test-server/data/synthea-100")
}

fn encode(input: &Path, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirsync"))
        .args(["--log-format", "json", "encode", "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .env_remove("FHIRSYNC_LOG")
        .output()
        .unwrap()
}

/// Ids of the non-empty lines of every `<Type>.ndjson.gz` input file, by type.
fn input_ids() -> BTreeMap<String, Vec<String>> {
    let mut ids = BTreeMap::new();
    for entry in std::fs::read_dir(synthea()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(ty) = name.strip_suffix(".ndjson.gz") else {
            continue;
        };
        let reader = BufReader::new(flate2::read::GzDecoder::new(File::open(&path).unwrap()));
        let mut list = Vec::new();
        for line in reader.lines() {
            let line = line.unwrap();
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["resourceType"].as_str(), Some(ty));
            list.push(v["id"].as_str().unwrap().to_owned());
        }
        ids.insert(ty.to_owned(), list);
    }
    ids
}

fn parquet_rows(path: &Path) -> i64 {
    SerializedFileReader::new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .file_metadata()
        .num_rows()
}

fn parquet_ids(path: &Path) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("id").expect("an id column");
        let col = col
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("id is a string");
        assert_eq!(col.null_count(), 0);
        ids.extend(col.iter().map(|v| v.unwrap().to_owned()));
    }
    ids
}

#[test]
fn the_bundled_synthea_export_encodes_to_one_parquet_file_per_type() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("parquet");
    let out = encode(&synthea(), &output);
    assert!(
        out.status.success(),
        "encode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let inputs = input_ids();
    assert_eq!(inputs.len(), 19, "the fixture has 19 types");
    let written: BTreeSet<String> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".parquet").map(str::to_owned))
        .collect();
    assert_eq!(written, inputs.keys().cloned().collect::<BTreeSet<_>>());

    let mut total = 0;
    for (ty, ids) in &inputs {
        let path = output.join(format!("{ty}.parquet"));
        assert_eq!(
            parquet_rows(&path),
            ids.len() as i64,
            "{ty}: rows vs. input lines"
        );
        total += ids.len();
    }
    assert!(total > 30_000, "{total} resources");

    // Rows are the input's resources, not just as many: the ids read back match.
    for ty in ["Patient", "Organization", "Condition"] {
        let mut expected = inputs[ty].clone();
        let mut got = parquet_ids(&output.join(format!("{ty}.parquet")));
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{ty} ids");
    }
}

#[test]
fn a_missing_input_directory_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = encode(&dir.path().join("nope"), &dir.path().join("out"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fhirsync: "))
        .collect();
    assert_eq!(reasons.len(), 1, "{stderr}");
    assert!(reasons[0].contains("nope"), "names the directory: {stderr}");
}
