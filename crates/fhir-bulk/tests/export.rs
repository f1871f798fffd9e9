//! End-to-end exports against the Bulk Data test server over loopback.
mod common;

use std::time::Duration;

use bulk_test_server::{DataSource, ServerConfig, TestServer};
use common::{content, export_system, fast_config, recorder, total_resources};
use fhir_bulk::{BulkClient, BulkEvent, ExportOptions, ExportRequest, FileKind, JobState};

fn synthetic(patients: usize) -> ServerConfig {
    ServerConfig {
        data: DataSource::Synthetic { patients, seed: 42 },
        resources_per_file: 60,
        retry_after_secs: 1,
        ..ServerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_export_writes_every_resource_once() {
    let server = TestServer::start(synthetic(12)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (handler, events) = recorder();
    let mut config = fast_config(server.base_url());
    config.events = Some(handler);
    let client = BulkClient::new(config).unwrap();
    let summary = export_system(&client, dir.path()).await.unwrap();

    let got = content(dir.path());
    let expected = server.store().counts();
    let got_counts: std::collections::BTreeMap<String, u64> = got
        .iter()
        .map(|(t, ids)| (t.clone(), ids.values().map(|v| v.len() as u64).sum()))
        .collect();
    assert_eq!(
        got_counts,
        expected.into_iter().filter(|(_, n)| *n > 0).collect()
    );
    for ids in got.values() {
        assert!(ids.values().all(|v| v.len() == 1), "an id came twice");
    }
    assert_eq!(summary.resources as usize, total_resources(&got));
    assert!(
        summary.outputs().count() > got.len(),
        "files should be split at 60 resources"
    );
    for f in summary.outputs() {
        assert_eq!(f.expected_count, Some(f.lines), "{}", f.name);
        assert!(!f.count_mismatch());
        assert_eq!(f.rejected_lines, 0);
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.bytes);
    }
    // manifest.json and a completed state are kept next to the data.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["output"].as_array().unwrap().len(),
        summary.outputs().count()
    );
    let state = JobState::load(dir.path()).await.unwrap().unwrap();
    assert!(state.completed);
    assert_eq!(state.finished.len(), summary.files.len());
    // No partial files left behind.
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".part"))
    );

    let requests = server.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.method, "DELETE", "the job is deleted once downloaded");
    let kick = &requests[0];
    assert_eq!(kick.method, "GET");
    assert!(
        kick.path_and_query.ends_with("/$export"),
        "{}",
        kick.path_and_query
    );

    let events = events.lock().unwrap().clone();
    let has = |f: &dyn Fn(&BulkEvent) -> bool| events.iter().any(f);
    assert!(has(&|e| matches!(e, BulkEvent::KickOff { .. })));
    assert!(has(&|e| matches!(e, BulkEvent::StatusProgress { .. })));
    assert!(has(&|e| matches!(e, BulkEvent::StatusComplete { .. })));
    assert!(has(&|e| matches!(e, BulkEvent::DownloadRequest { .. })));
    assert!(has(&|e| matches!(
        e,
        BulkEvent::DownloadComplete {
            kind: FileKind::Output,
            ..
        }
    )));
    assert!(has(&|e| matches!(e, BulkEvent::ExportComplete { .. })));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_filter_and_parameters_reach_the_server() {
    let server = TestServer::start(synthetic(5)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    let req = ExportRequest {
        types: vec!["Patient".into(), "Observation".into()],
        type_filters: vec!["Observation?status=final,amended".into()],
        ..ExportRequest::patient()
    };
    let summary = client
        .export_to_dir(&req, dir.path(), &ExportOptions::default())
        .await
        .unwrap();
    let types: std::collections::BTreeSet<&str> = summary
        .outputs()
        .map(|f| f.resource_type.as_str())
        .collect();
    assert!(
        types.iter().all(|t| ["Patient", "Observation"].contains(t)),
        "{types:?}"
    );
    let kick = &server.requests()[0];
    assert!(
        kick.path_and_query.contains("/Patient/$export?"),
        "{}",
        kick.path_and_query
    );
    assert!(
        kick.path_and_query
            .contains("_typeFilter=Observation%3Fstatus%3Dfinal%2Camended"),
        "{}",
        kick.path_and_query
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overall_timeout_gives_up_and_cancels_the_job() {
    let server = TestServer::start(ServerConfig {
        polls_before_complete: 1_000_000,
        ..synthetic(1)
    })
    .await
    .unwrap();
    let mut config = fast_config(server.base_url());
    config.poll.timeout = Duration::from_millis(600);
    let client = BulkClient::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_system(&client, dir.path()).await.unwrap_err();
    assert!(matches!(err, fhir_bulk::BulkError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("did not complete within"), "{err}");
    // The failed job is cancelled on the server.
    assert!(server.requests().iter().any(|r| r.method == "DELETE"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_are_read_in_every_reference_form() {
    let server = TestServer::start(ServerConfig::default()).await.unwrap();
    let store = server.store();
    let base = server.base_url();
    let mut member: Vec<serde_json::Value> = (0..3000)
        .map(|i| serde_json::json!({"entity": {"reference": format!("Patient/p{i}")}}))
        .collect();
    member.push(serde_json::json!({"entity": {"reference": format!("{base}/Patient/abs")}}));
    member.push(serde_json::json!({"entity": {"reference": "Patient/v/_history/2"}}));
    member.push(serde_json::json!({"entity": {"identifier": {"value": "mrn-1"}}}));
    let groups = [
        serde_json::json!({"resourceType": "Group", "id": "big", "type": "person", "actual": true, "member": member}),
        serde_json::json!({"resourceType": "Group", "id": "described", "type": "person", "actual": false,
            "characteristic": [{"code": {"text": "diabetic"}, "valueBoolean": true, "exclude": false}]}),
        serde_json::json!({"resourceType": "Group", "id": "unlisted", "type": "person", "actual": true, "quantity": 12}),
    ];
    for g in groups {
        store.upsert(g).unwrap();
    }
    let client = BulkClient::new(fast_config(base.clone())).unwrap();

    let big = client.read_group_members("big").await.unwrap();
    assert!(big.listed);
    assert_eq!(big.references.len(), 3002);
    assert_eq!(big.references[0], "Patient/p0");
    assert_eq!(big.references[3000], format!("{base}/Patient/abs"));
    assert_eq!(big.references[3001], "Patient/v/_history/2");
    assert_eq!(big.without_reference, 1);
    for id in ["described", "unlisted"] {
        let g = client.read_group_members(id).await.unwrap();
        assert!(!g.listed && g.references.is_empty(), "{id}: {g:?}");
    }
    let missing = client.read_group_members("nope").await.unwrap_err();
    assert!(missing.to_string().contains("HTTP 404"), "{missing}");
    server.shutdown().await;
}
