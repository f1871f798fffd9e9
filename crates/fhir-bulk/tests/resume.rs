//! A run interrupted mid-download continues the same export: finished files are kept, partial
//! ones redone, and the result equals an uninterrupted export.
mod common;

use std::collections::HashMap;
use std::time::Duration;

use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};
use common::{content, export_system, fast_config};
use fhir_bulk::{
    BulkClient, BulkError, BulkEvent, ExportOptions, ExportRequest, FileKind, JobState,
};
use tokio::sync::mpsc;

async fn server() -> TestServer {
    TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 8,
            seed: 3,
        },
        resources_per_file: 40,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// Starts an export and drops it once `after` files are complete, while others are still
/// crawling; returns the request log length at that point.
async fn interrupted_export(server: &TestServer, dir: &std::path::Path, after: usize) {
    // Every file crawls except the first few, so the run is cut with work left.
    server.faults().add(FaultRule::always(
        FaultTarget::AnyFile,
        Fault::Slow {
            bytes_per_sec: 4_000,
        },
    ));
    for i in 0..after {
        server.faults().add(FaultRule::once(
            FaultTarget::FileIndex(i),
            Fault::Slow {
                bytes_per_sec: 50_000_000,
            },
        ));
    }
    // Rules match in insertion order: the fast ones must come first.
    let pending = server.faults().pending();
    server.faults().clear();
    for r in pending.iter().rev() {
        server.faults().add(r.clone());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut config = fast_config(server.base_url());
    config.max_concurrent_downloads = after + 1;
    config.events = Some(std::sync::Arc::new(move |e: &BulkEvent| {
        if let BulkEvent::DownloadComplete {
            kind: FileKind::Output,
            ..
        } = e
        {
            let _ = tx.send(());
        }
    }));
    let client = BulkClient::new(config).unwrap();
    let (request, options) = (ExportRequest::system(), ExportOptions::default());
    let run = client.export_to_dir(&request, dir, &options);
    tokio::pin!(run);
    let mut done = 0;
    tokio::select! {
        r = &mut run => panic!("export finished before the interruption: {:?}", r.map(|s| s.files.len())),
        _ = async { while done < after { rx.recv().await; done += 1; } } => {}
    }
    // Keep the run going until the state file records the completions already reported, then
    // drop it mid-download, as a killed process would stop.
    let recorded = async {
        for _ in 0..1000 {
            let state = JobState::load(dir).await.ok().flatten();
            if state.is_some_and(|s| s.finished.len() >= after) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the state file did not record {after} finished files within 10 s");
    };
    tokio::select! {
        r = &mut run => panic!("export finished before the interruption: {:?}", r.map(|s| s.files.len())),
        _ = recorded => {}
    }
    server.faults().clear();
}

/// What an uninterrupted export of `server` writes, and a directory of an export interrupted
/// after two finished files.
async fn expected_and_interrupted(server: &TestServer) -> (Content, tempfile::TempDir) {
    let base_dir = tempfile::tempdir().unwrap();
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    export_system(&client, base_dir.path()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    interrupted_export(server, dir.path(), 2).await;
    (content(base_dir.path()), dir)
}

type Content = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

/// Resumes the export recorded in `dir`.
async fn resume(server: &TestServer, dir: &std::path::Path) -> fhir_bulk::ExportSummary {
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    let options = ExportOptions {
        resume: true,
        ..ExportOptions::default()
    };
    client
        .export_to_dir(&ExportRequest::system(), dir, &options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_abort_gives_the_same_content() {
    let server = server().await;
    let (expected, dir) = expected_and_interrupted(&server).await;
    let state = JobState::load(dir.path())
        .await
        .unwrap()
        .expect("state saved");
    assert!(!state.completed);
    assert!(state.manifest.is_some());
    let finished: Vec<String> = state.finished.keys().cloned().collect();
    assert!(!finished.is_empty(), "some files finished before the abort");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".part"))
    );

    let mark = server.requests().len();
    let summary = resume(&server, dir.path()).await;
    assert_eq!(content(dir.path()), expected);
    assert_eq!(summary.resumed_files, finished.len());
    assert!(
        summary
            .files
            .iter()
            .filter(|f| f.resumed)
            .all(|f| finished.contains(&f.name))
    );

    // The resumed run polled the same job (no new kick-off) and skipped finished files.
    let after = &server.requests()[mark..];
    assert!(
        !after.iter().any(|r| r.path_and_query.contains("$export")),
        "no new kick-off"
    );
    assert!(
        after
            .iter()
            .any(|r| r.path_and_query.contains(state.job.status_url.path()))
    );
    let mut per_file: HashMap<&str, usize> = HashMap::new();
    for r in after
        .iter()
        .filter(|r| r.path_and_query.starts_with("/files/"))
    {
        *per_file.entry(r.path_and_query.as_str()).or_default() += 1;
    }
    let manifest = state.manifest.unwrap();
    for name in &finished {
        let planned = fhir_bulk::plan(&manifest)
            .into_iter()
            .find(|p| &p.name == name)
            .unwrap();
        assert!(
            !per_file.contains_key(planned.url.path()),
            "{name} downloaded again"
        );
    }
    assert_eq!(per_file.len(), manifest.output.len() - finished.len());
    assert!(JobState::load(dir.path()).await.unwrap().unwrap().completed);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_file_cut_short_on_disk_is_downloaded_again_on_resume() {
    let server = server().await;
    let (expected, dir) = expected_and_interrupted(&server).await;
    let state = JobState::load(dir.path()).await.unwrap().unwrap();
    let (name, _) = state.finished.iter().next().expect("a finished file");
    let path = dir.path().join(name);
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let summary = resume(&server, dir.path()).await;
    assert_eq!(content(dir.path()), expected, "{name} is whole again");
    assert!(
        summary.files.iter().any(|f| &f.name == name && !f.resumed),
        "{name} was downloaded again"
    );
    assert_eq!(summary.resumed_files, state.finished.len() - 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_of_a_forgotten_job_says_to_start_again() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    interrupted_export(&server, dir.path(), 1).await;
    let state = JobState::load(dir.path()).await.unwrap().unwrap();
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    client.cancel(&state.job).await.unwrap();
    let options = ExportOptions {
        resume: true,
        ..ExportOptions::default()
    };
    let err = client
        .export_to_dir(&ExportRequest::system(), dir.path(), &options)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BulkError::JobGone {
                status: 404 | 410,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("start a new export"), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_refuses_a_different_request() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    interrupted_export(&server, dir.path(), 1).await;
    let client = BulkClient::new(fast_config(server.base_url())).unwrap();
    let other = ExportRequest {
        types: vec!["Patient".into()],
        ..ExportRequest::system()
    };
    let options = ExportOptions {
        resume: true,
        ..ExportOptions::default()
    };
    let err = client
        .export_to_dir(&other, dir.path(), &options)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("different export request"),
        "{err}"
    );
    server.shutdown().await;
}
