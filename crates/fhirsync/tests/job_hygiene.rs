//! Export jobs on the server: deleted once their data is in the tables, and replaced by a new
//! export in the same run when the server forgets a job or its files expire mid-download, and
//! deleted at once when the server reports it failed.
mod common;

use std::path::Path;

use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, TestServer};
use common::{TYPES, assert_same_rows, options, run, server};
use fhirsync::run::RunKind;

/// GET kick-offs the server saw.
fn get_kick_offs(server: &TestServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("$export?"))
        .count()
}

/// The tables in `faulted` are those a clean sync of the same data gives: nothing twice,
/// nothing missing.
async fn same_as_a_clean_sync(server: &TestServer, faulted: &Path, clean: &Path) {
    run(&options(server, clean), RunKind::Incremental)
        .await
        .expect("a clean sync");
    assert_same_rows(faulted, clean, &TYPES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_expire_mid_download_bring_a_new_export_in_the_same_run() {
    let server = server(DataSource::Synthetic {
        patients: 30,
        seed: 8,
    })
    .await;
    let dir = tempfile::tempdir().expect("a directory");
    let (faulted, clean) = (dir.path().join("faulted"), dir.path().join("clean"));

    // The third output file's download finds the job gone: every file of it is 404 from then.
    server
        .faults()
        .add(FaultRule::once(FaultTarget::FileIndex(2), Fault::ExpireJob));
    let report = run(&options(&server, &faulted), RunKind::Incremental)
        .await
        .expect("the same run exports again");
    assert!(report.resources > 0);
    let requests = server.requests();
    let kick_offs = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path_and_query.contains("$export?"))
        .count();
    assert_eq!(kick_offs, 2, "one export, then a new one");
    // The new export's job is deleted after the commits (the old one is gone already: 404).
    let deleted: Vec<u16> = requests
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        deleted.iter().filter(|s| (200..300).contains(*s)).count(),
        1,
        "{deleted:?}"
    );

    same_as_a_clean_sync(&server, &faulted, &clean).await;
    server.shutdown().await;
}

/// A run that failed keeps its job for the next run to resume; when the resumed job's files
/// have expired meanwhile, that run starts a new export with new writers and ends with the
/// tables a clean sync gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_job_whose_files_expired_is_replaced_in_the_same_run() {
    let server = server(DataSource::Synthetic {
        patients: 30,
        seed: 9,
    })
    .await;
    let dir = tempfile::tempdir().expect("a directory");
    let (faulted, clean) = (dir.path().join("faulted"), dir.path().join("clean"));
    let opts = options(&server, &faulted);

    // The fourth file fails until the retries run out: the run fails, its job is kept.
    server.faults().add(FaultRule::always(
        FaultTarget::FileIndex(3),
        Fault::Transient { status: 503 },
    ));
    run(&opts, RunKind::Incremental)
        .await
        .expect_err("a file that cannot be downloaded fails the run");
    server.faults().clear();
    // By the next run the job's files have expired.
    server
        .faults()
        .add(FaultRule::once(FaultTarget::FileIndex(3), Fault::ExpireJob));
    run(&opts, RunKind::Incremental)
        .await
        .expect("the resumed job is replaced by a new export");
    let kick_offs = get_kick_offs(&server);
    assert_eq!(kick_offs, 2, "the first run's export, then a new one");

    same_as_a_clean_sync(&server, &faulted, &clean).await;
    server.shutdown().await;
}

/// A job the server reports as failed fails the run and is deleted at once, with the files of
/// the run; the next run starts a new export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_deleted_and_the_next_run_exports_anew() {
    let server = server(DataSource::Synthetic {
        patients: 5,
        seed: 10,
    })
    .await;
    let dir = tempfile::tempdir().expect("a directory");
    let (faulted, clean) = (dir.path().join("faulted"), dir.path().join("clean"));
    let opts = options(&server, &faulted);
    server
        .faults()
        .add(FaultRule::once(FaultTarget::KickOff, Fault::FailJob));
    let failed = run(&opts, RunKind::Incremental)
        .await
        .expect_err("a failed job fails the run");
    assert!(format!("{failed:#}").contains("fail"), "{failed:#}");
    let deletes = |server: &TestServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path_and_query.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        deletes(&server).len(),
        1,
        "the failed job is deleted at once"
    );
    let work = faulted.join("_fhirsync");
    let exports: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !exports
            .iter()
            .any(|n| n.to_string_lossy().starts_with("export")),
        "nothing of the failed export is kept: {exports:?}"
    );

    run(&opts, RunKind::Incremental)
        .await
        .expect("the next run exports anew");
    let kick_offs = get_kick_offs(&server);
    assert_eq!(kick_offs, 2, "the failed export, then a new one");
    same_as_a_clean_sync(&server, &faulted, &clean).await;
    server.shutdown().await;
}
