//! Real signals sent to this test process: SIGHUP reloads the config file, SIGTERM cancels the
//! running sync and stops the daemon. One test, so no other daemon in this process sees them.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fhirsync::config::{DaemonArgs, JobConfig, NoEnv, SyncArgs};
use fhirsync::daemon::{Daemon, SyncRunner, handle_signals};
use fhirsync::run::{RunKind, SyncReport};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct UntilCancelled {
    started: AtomicUsize,
    cancelled: AtomicBool,
}

struct Handle(Arc<UntilCancelled>);

impl SyncRunner for Handle {
    fn run(
        &self,
        _job: &JobConfig,
        _kind: RunKind,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<SyncReport>> {
        let r = self.0.clone();
        r.started.fetch_add(1, Ordering::SeqCst);
        async move {
            cancel.cancelled().await;
            r.cancelled.store(true, Ordering::SeqCst);
            anyhow::bail!("cancelled")
        }
        .boxed()
    }
}

fn signal(name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(std::process::id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn job_toml(name: &str, dir: &std::path::Path, run_on_start: bool) -> String {
    format!(
        "[[jobs]]\nname = \"{name}\"\nfhir_endpoint = \"http://127.0.0.1:9/fhir\"\n\
         delta_path = \"{}\"\nschedule = \"0 0 1 1 *\"\nrun_on_start = {run_on_start}\n",
        dir.join(name).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_cancels_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirsync.toml");
    let header = "[daemon]\nlisten = \"127.0.0.1:0\"\ngrace_period = \"20s\"\n";
    std::fs::write(
        &path,
        format!("{header}{}", job_toml("a", dir.path(), false)),
    )
    .unwrap();
    let args = DaemonArgs {
        sync: SyncArgs {
            config: Some(path.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let config = args.resolve(&NoEnv).unwrap();
    let runner = Arc::new(UntilCancelled::default());
    let daemon = Daemon::new(config, Arc::new(Handle(runner.clone())));
    let state = daemon.state();
    let listener = daemon.bind().await.unwrap();
    let shutdown = CancellationToken::new();
    let reload_args = args.clone();
    // Each reload's outcome, in order (true: the file was read).
    let reloads = Arc::new(std::sync::Mutex::new(Vec::<bool>::new()));
    let seen = reloads.clone();
    handle_signals(shutdown.clone(), daemon.reloader(), move || {
        let config = reload_args.resolve(&NoEnv);
        seen.lock().unwrap().push(config.is_ok());
        config
    })
    .unwrap();
    let task = tokio::spawn(daemon.run(listener, shutdown.clone()));
    wait_until("job a", || state.job("a").is_some()).await;

    // Add a job that starts a sync at once.
    std::fs::write(
        &path,
        format!(
            "{header}{}{}",
            job_toml("a", dir.path(), false),
            job_toml("b", dir.path(), true)
        ),
    )
    .unwrap();
    signal("HUP");
    wait_until("job b to start its sync", || {
        runner.started.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        state
            .job("b")
            .is_some_and(|s| s.running == Some(RunKind::Incremental))
    );

    // A broken file is reported and ignored.
    std::fs::write(&path, "[[jobs]]\nname = \n").unwrap();
    signal("HUP");
    wait_until("the broken file to be read", || {
        reloads.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*reloads.lock().unwrap(), [true, false]);
    assert!(!task.is_finished());
    assert!(state.job("a").is_some() && state.job("b").is_some());

    signal("TERM");
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(shutdown.is_cancelled());
    assert!(
        runner.cancelled.load(Ordering::SeqCst),
        "the running sync was cancelled"
    );
    let b = state.job("b").unwrap();
    assert!(b.running.is_none());
    assert_eq!(b.consecutive_failures, 0);
}
