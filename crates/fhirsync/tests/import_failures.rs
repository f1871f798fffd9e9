//! `fhirsync import` with broken inputs, run as a user runs it: a file that cannot be read to
//! its end is one reject and the others are committed; a run that fails leaves nothing behind
//! and ends without a panic.
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use common::versions;
use serde_json::{Value, json};

fn import(input: &Path, delta: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirsync"))
        .args(["--log-format", "json", "import", "--input"])
        .arg(input)
        .arg("--delta-path")
        .arg(delta)
        .arg("--json")
        .env_remove("FHIRSYNC_LOG")
        .env_remove("DELTA_PATH")
        .output()
        .unwrap()
}

fn resource(resource_type: &str, id: String) -> Value {
    json!({"resourceType": resource_type, "id": id, "status": "final",
        "code": {"text": format!("measurement {id}")}, "subject": {"reference": "Patient/p0"}})
}

/// `n` resources of a type, one NDJSON line each.
fn lines(resource_type: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{}\n",
                resource(resource_type, format!("{resource_type}-{i}"))
            )
        })
        .collect()
}

/// `text` gzipped, cut to `keep` of its compressed bytes.
fn truncated_gzip(text: &str, keep: f64) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let whole = gz.finish().unwrap();
    whole[..(whole.len() as f64 * keep) as usize].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_file_is_one_reject_and_the_other_files_are_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (input, delta) = (dir.path().join("in"), dir.path().join("delta"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("Condition.ndjson"), lines("Condition", 3)).unwrap();
    std::fs::write(
        input.join("Observation.ndjson.gz"),
        truncated_gzip(&lines("Observation", 2000), 0.6),
    )
    .unwrap();
    std::fs::write(input.join("Procedure.ndjson"), lines("Procedure", 2)).unwrap();

    let out = tokio::task::spawn_blocking({
        let (input, delta) = (input.clone(), delta.clone());
        move || import(&input, &delta)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rejects"], 1, "{report}");
    assert_eq!(report["tables"]["Observation"]["rejected"], 1, "{report}");
    assert_eq!(versions(&delta, "Condition").await.len(), 3);
    assert_eq!(versions(&delta, "Procedure").await.len(), 2);

    // The reject names the file, the line where reading stopped and the error; the lines
    // before it were read and kept.
    let rejects = std::fs::read_to_string(report["rejects_file"].as_str().unwrap()).unwrap();
    let records: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{rejects}");
    let r = &records[0];
    assert_eq!(r["file"], "Observation.ndjson.gz", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("could not be read") && reason.contains("deflate"),
        "{reason}"
    );
    let line = r["line"].as_u64().unwrap();
    assert!(line > 1 && line < 2000, "reading stopped at line {line}");
    let kept = versions(&delta, "Observation").await;
    let expected: Vec<String> = (0..line - 1).map(|i| format!("Observation-{i}")).collect();
    let mut kept: Vec<String> = kept.into_keys().collect();
    kept.sort_by_key(|id| id[12..].parse::<u64>().unwrap());
    assert_eq!(kept, expected, "the rows before line {line}");
}

/// The entries directly in `dir`, by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An import that fails while its other files are being encoded and their tables opened (the
/// rejects cannot be written: a file stands where their folder goes), run many times: each
/// run exits with one line, without a panic, and leaves no table folder and no data file.
#[test]
fn a_failing_import_ends_without_panics_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("0-first.ndjson"),
        format!("{{not json\n{}", lines("Observation", 10)),
    )
    .unwrap();
    for t in [
        "Condition",
        "Encounter",
        "Procedure",
        "Immunization",
        "MedicationRequest",
        "DiagnosticReport",
        "CarePlan",
        "AllergyIntolerance",
    ] {
        std::fs::write(input.join(format!("{t}.ndjson")), lines(t, 300)).unwrap();
    }
    for run in 0..20 {
        let delta = dir.path().join(format!("delta-{run}"));
        std::fs::create_dir_all(&delta).unwrap();
        std::fs::write(delta.join("_rejects"), "not a folder").unwrap();
        let out = import(&input, &delta);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "run {run} succeeded: {stderr}");
        assert!(
            !stderr.contains("panicked"),
            "run {run} panicked:\n{stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("fhirsync: ") && last.contains("_rejects"),
            "run {run}: {stderr}"
        );
        assert_eq!(
            entries(&delta),
            ["_fhirsync", "_rejects"],
            "run {run} left something behind"
        );
        assert_eq!(entries(&delta.join("_fhirsync")), ["fhirsync.lock"]);
    }
}
