//! `fhirsync health`'s verdict from real state files.
use std::time::Duration;

use chrono::{DateTime, Utc};
use fhirsync::config::default_state_file;
use fhirsync::health::{Verdict, check_state_file};

const TWO_HOURS: Duration = Duration::from_secs(7200);

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn write(dir: &tempfile::TempDir, json: &str) -> std::path::PathBuf {
    let path = default_state_file(dir.path().to_str().unwrap(), None).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn recent_success_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"{"last_sync_time": "2024-05-01T11:00:00Z", "last_success_at": "2024-05-01T11:30:00Z", "sync_id": "x", "tables": {"Patient": 3}}"#,
    );
    let r = check_state_file(&path, TWO_HOURS, now());
    assert_eq!(r.status, Verdict::Ok);
    assert!(r.healthy);
    assert_eq!(r.age_seconds, Some(1800));
    assert_eq!(r.last_sync_time.as_deref(), Some("2024-05-01T11:00:00Z"));
    let line = serde_json::to_string(&r).unwrap();
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["max_age_seconds"], 7200);
}

#[test]
fn the_replaced_scripts_file_with_only_the_cursor_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, r#"{"last_sync_time": "2024-05-01T10:30:00+00:00"}"#);
    assert!(check_state_file(&path, TWO_HOURS, now()).healthy);
    let r = check_state_file(&path, Duration::from_secs(3600), now());
    assert_eq!(r.status, Verdict::Stale);
    assert!(r.reason.unwrap().contains("1h 30m"));
}

#[test]
fn a_failure_after_the_last_success_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"{"last_sync_time": "2024-05-01T11:00:00Z", "last_success_at": "2024-05-01T11:05:00Z",
            "last_error": "export failed: server returned 503", "last_error_at": "2024-05-01T11:50:00Z"}"#,
    );
    let r = check_state_file(&path, TWO_HOURS, now());
    assert_eq!(r.status, Verdict::Failed);
    assert!(!r.healthy);
    assert_eq!(
        r.last_error.as_deref(),
        Some("export failed: server returned 503")
    );
}

#[test]
fn missing_or_broken_files_are_unhealthy_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("_fhirsync/state.json");
    let r = check_state_file(&missing, TWO_HOURS, now());
    assert!(!r.healthy);
    assert!(r.reason.unwrap().contains("does not exist"));

    let path = write(&dir, "{not json");
    let r = check_state_file(&path, TWO_HOURS, now());
    assert!(!r.healthy);
    assert!(r.reason.unwrap().contains("not valid JSON"));

    let path = write(&dir, r#"{"last_sync_time": "yesterday"}"#);
    let r = check_state_file(&path, TWO_HOURS, now());
    assert!(!r.healthy);
    assert!(r.reason.is_some());
}

#[test]
fn object_store_paths_need_an_explicit_state_file() {
    assert_eq!(default_state_file("s3://bucket/fhir", None), None);
    assert_eq!(
        default_state_file(
            "s3://bucket/fhir",
            Some(std::path::Path::new("/var/lib/fhirsync/state.json"))
        ),
        Some("/var/lib/fhirsync/state.json".into())
    );
    assert_eq!(
        default_state_file("file:///data/fhir", None),
        Some("/data/fhir/_fhirsync/state.json".into())
    );
}
