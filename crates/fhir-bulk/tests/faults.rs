//! Every fault the test server can inject: the downloaded content must be what a fault-free
//! export gives (same ids, same bytes per resource), or the error must say what happened.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bulk_test_server::{
    DataSource, Fault, FaultRule, FaultTarget, RetryAfter, ServerConfig, TestServer,
};
use common::{content, fast_config, recorder};
use fhir_bulk::{BulkClient, BulkError, BulkEvent, ExportOptions, ExportRequest, RetryReason};

type Content = BTreeMap<String, BTreeMap<String, Vec<String>>>;

async fn server() -> TestServer {
    TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 8,
            seed: 7,
        },
        resources_per_file: 50,
        retry_after_secs: 1,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

async fn export(
    server: &TestServer,
    dir: &Path,
) -> (Result<fhir_bulk::ExportSummary, BulkError>, Vec<BulkEvent>) {
    let (handler, events) = recorder();
    let mut config = fast_config(server.base_url());
    config.events = Some(handler);
    let client = BulkClient::new(config).unwrap();
    let result = client
        .export_to_dir(&ExportRequest::system(), dir, &ExportOptions::default())
        .await;
    let events = events.lock().unwrap().clone();
    (result, events)
}

async fn baseline(server: &TestServer) -> Content {
    let dir = tempfile::tempdir().unwrap();
    export(server, dir.path()).await.0.unwrap();
    content(dir.path())
}

/// Runs an export with `rules` in force; asserts it matches `expected` and that the faults fired.
async fn same_content_despite(
    server: &TestServer,
    expected: &Content,
    rules: Vec<FaultRule>,
) -> Vec<BulkEvent> {
    let before = server.requests().len();
    for r in &rules {
        server.faults().add(r.clone());
    }
    let dir = tempfile::tempdir().unwrap();
    let (result, events) = export(server, dir.path()).await;
    let summary = result.unwrap_or_else(|e| panic!("{rules:?}: {e}"));
    assert!(
        server.faults().pending().is_empty(),
        "faults did not all fire: {:?}",
        server.faults().pending()
    );
    assert_eq!(&content(dir.path()), expected, "{rules:?}");
    assert_eq!(summary.rejected_lines, 0);
    assert!(server.requests().len() > before);
    events
}

fn retries(events: &[BulkEvent]) -> Vec<(&'static str, RetryReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            BulkEvent::Retry { what, reason, .. } => Some((*what, reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_in_every_retry_after_form() {
    let server = server().await;
    let expected = baseline(&server).await;
    for form in [
        RetryAfter::Seconds(1),
        RetryAfter::HttpDate(1),
        RetryAfter::EpochTimestamp(1),
    ] {
        for target in [
            FaultTarget::KickOff,
            FaultTarget::Status,
            FaultTarget::AnyFile,
        ] {
            let events = same_content_despite(
                &server,
                &expected,
                vec![FaultRule::once(
                    target.clone(),
                    Fault::TooManyRequests(form),
                )],
            )
            .await;
            assert!(
                retries(&events)
                    .iter()
                    .any(|(_, r)| *r == RetryReason::RateLimited),
                "{form:?} {target:?}"
            );
        }
    }
    assert!(server.requests().iter().filter(|r| r.status == 429).count() >= 9);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_server_errors_are_retried() {
    let server = server().await;
    let expected = baseline(&server).await;
    let rules = vec![
        FaultRule::once(FaultTarget::KickOff, Fault::Transient { status: 503 }),
        // A 500 is retried only because its OperationOutcome says `transient`.
        FaultRule::times(FaultTarget::Status, Fault::Transient { status: 500 }, 2),
        FaultRule::times(FaultTarget::AnyFile, Fault::Transient { status: 503 }, 3),
    ];
    let events = same_content_despite(&server, &expected, rules).await;
    let r = retries(&events);
    assert!(
        r.contains(&("kick-off", RetryReason::ServerError(503))),
        "{r:?}"
    );
    assert!(
        r.contains(&("status", RetryReason::ServerError(500))),
        "{r:?}"
    );
    assert!(
        r.iter()
            .filter(|x| **x == ("download", RetryReason::ServerError(503)))
            .count()
            >= 3,
        "{r:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_are_resumed_or_restarted() {
    // Files large enough that the breaks fall mid-body even gzip-compressed.
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 8,
            seed: 7,
        },
        resources_per_file: 400,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let expected = baseline(&server).await;
    let rules = vec![
        FaultRule::once(FaultTarget::FileIndex(0), Fault::ResetAfter { bytes: 2000 }),
        FaultRule::once(
            FaultTarget::FileIndex(1),
            Fault::Truncate {
                bytes: 700,
                chunked: false,
            },
        ),
        FaultRule::once(
            FaultTarget::FileIndex(2),
            Fault::Truncate {
                bytes: 600,
                chunked: true,
            },
        ),
        FaultRule::times(
            FaultTarget::FileIndex(3),
            Fault::ResetAfter { bytes: 10 },
            2,
        ),
    ];
    let before = server.requests().len();
    let events = same_content_despite(&server, &expected, rules).await;
    let r = retries(&events);
    assert!(
        r.iter()
            .filter(|(w, r)| *w == "download" && matches!(r, RetryReason::Network(_)))
            .count()
            >= 4,
        "{r:?}"
    );
    // After a break past complete lines the rest is fetched with Range (206), not the whole
    // file again (a break inside the first gzip block restarts the file: nothing to keep).
    let partial = server.requests()[before..]
        .iter()
        .filter(|r| r.status == 206)
        .count();
    assert!(partial >= 1, "expected ranged re-requests, saw {partial}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_delayed_manifests_complete() {
    let server = server().await;
    let expected = baseline(&server).await;
    let rules = vec![
        FaultRule::times(FaultTarget::Status, Fault::DelayManifest, 3),
        FaultRule::once(
            FaultTarget::FileIndex(0),
            Fault::Slow {
                bytes_per_sec: 100_000,
            },
        ),
        FaultRule::once(
            FaultTarget::FileIndex(1),
            Fault::Slow {
                bytes_per_sec: 100_000,
            },
        ),
    ];
    let events = same_content_despite(&server, &expected, rules).await;
    let progress = events
        .iter()
        .filter(|e| matches!(e, BulkEvent::StatusProgress { .. }))
        .count();
    assert!(progress >= 4, "polls in progress: {progress}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_across_files_are_all_kept() {
    let server = server().await;
    let expected = baseline(&server).await;
    server.faults().add(FaultRule::once(
        FaultTarget::KickOff,
        Fault::DuplicateIds { count: 3 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let summary = export(&server, dir.path()).await.0.unwrap();
    let got = content(dir.path());
    // Same ids; the repeated versions are kept for the consumer's merge to resolve.
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (ty, ids) in &got {
        assert_eq!(
            ids.keys().collect::<Vec<_>>(),
            expected[ty].keys().collect::<Vec<_>>(),
            "{ty}"
        );
        let repeated = ids.values().filter(|v| v.len() == 2).count();
        assert_eq!(repeated, expected[ty].len().min(3), "{ty}");
        for (id, lines) in ids {
            assert!(
                lines.contains(&expected[ty][id][0]),
                "{ty}/{id}: current version kept"
            );
        }
    }
    assert_eq!(summary.rejected_lines, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_status_error_carries_the_servers_text() {
    let server = server().await;
    server.faults().add(FaultRule::once(
        FaultTarget::Status,
        Fault::Fatal { status: 500 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let (result, events) = export(&server, dir.path()).await;
    let err = result.unwrap_err();
    match &err {
        BulkError::ExportFailed {
            status: 500,
            message,
            ..
        } => assert!(message.contains("exception"), "{message}"),
        other => panic!("unexpected {other}"),
    }
    assert!(
        err.to_string().contains("export failed on the server"),
        "{err}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BulkEvent::StatusError { .. }))
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_kick_off_error_is_not_retried() {
    let server = server().await;
    server.faults().add(FaultRule::always(
        FaultTarget::KickOff,
        Fault::Fatal { status: 500 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let err = export(&server, dir.path()).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            BulkError::Http {
                what: "kick-off",
                status: 500,
                outcome: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_files_fail_clearly_and_keep_the_rest() {
    for status in [404, 410] {
        let server = server().await;
        let expected = baseline(&server).await;
        server.faults().add(FaultRule::always(
            FaultTarget::FileIndex(0),
            Fault::Gone { status },
        ));
        let dir = tempfile::tempdir().unwrap();
        let err = export(&server, dir.path()).await.0.unwrap_err();
        let BulkError::DownloadsFailed { failures, total } = &err else {
            panic!("unexpected {err}")
        };
        assert_eq!(failures.len(), 1, "{err}");
        assert!(
            failures[0].message.contains("is gone")
                && failures[0].message.contains(&status.to_string()),
            "{err}"
        );
        assert!(*total > 1);
        // Every other file is complete and intact.
        let got = content(dir.path());
        let got_lines: usize = common::total_resources(&got);
        assert!(got_lines > 0 && got_lines < common::total_resources(&expected));
        for (ty, ids) in &got {
            for (id, lines) in ids {
                assert_eq!(lines, &expected[ty][id]);
            }
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_jobs_waits_for_a_slot() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 2,
            seed: 1,
        },
        max_concurrent_jobs: 1,
        polls_before_complete: 3,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    let first = client.kick_off(&ExportRequest::system()).await.unwrap();
    let c2 = client.clone();
    let second = tokio::spawn(async move { c2.kick_off(&ExportRequest::system()).await });
    // The second kick-off is refused (429) until the first job is gone.
    let mut polls = 0;
    while !server.requests().iter().any(|r| r.status == 429) {
        polls += 1;
        assert!(
            polls < 500,
            "the second kick-off was not refused within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    client.cancel(&first).await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert_ne!(second.status_url, first.status_url);
    server.shutdown().await;
}
