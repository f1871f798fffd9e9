//! The daemon against a runner built here: real schedules (second-granularity cron), real HTTP
//! over loopback for `/health` and `/metrics`, real state files.
//!
//! Time is virtual: each test runs on a runtime whose clock is paused (tokio advances it
//! whenever every task waits for a timer), and the daemon's wall clock follows it from
//! [`start_time`]. Schedules fire, grace periods end and health turns stale without real
//! time passing, and always at the same instants.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fhirsync::config::{DaemonConfig, JobConfig, Secret, SecretSource, SyncOptions};
use fhirsync::daemon::{Clock, Daemon, DaemonState, SyncRunner};
use fhirsync::run::{RunKind, SyncReport, TableReport};
use fhirsync::schedule::{OverlapPolicy, Schedule, ScheduleConfig};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Virtual time: long enough for any condition the daemon's timers lead to.
const WAIT: Duration = Duration::from_secs(30);

/// The wall-clock time at which every test starts.
fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Wall-clock time that follows tokio's (paused) clock from [`start_time`].
struct VirtualClock {
    origin: tokio::time::Instant,
}

impl VirtualClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            origin: tokio::time::Instant::now(),
        })
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        start_time() + chrono::Duration::from_std(self.origin.elapsed()).unwrap()
    }
}

/// Lets `d` of virtual time pass, every task of the daemon running meanwhile.
async fn pass_virtual_time(d: Duration) {
    tokio::time::sleep(d).await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Succeed,
    Fail,
    /// Wait for a permit from `gate` (or cancellation) before succeeding.
    Gated,
    /// Run until cancelled, then return an error (as a cancelled sync does).
    UntilCancelled,
    /// Ignore cancellation entirely.
    Stubborn,
}

struct TestRunner {
    mode: Mutex<Mode>,
    gate: Semaphore,
    calls: Mutex<Vec<(String, RunKind)>>,
    finished: AtomicUsize,
    saw_cancel: AtomicBool,
}

impl TestRunner {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            mode: Mutex::new(mode),
            gate: Semaphore::new(0),
            calls: Mutex::new(Vec::new()),
            finished: AtomicUsize::new(0),
            saw_cancel: AtomicBool::new(false),
        })
    }
    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn calls(&self) -> Vec<(String, RunKind)> {
        self.calls.lock().unwrap().clone()
    }
}

struct Handle(Arc<TestRunner>);

impl SyncRunner for Handle {
    fn run(
        &self,
        job: &JobConfig,
        kind: RunKind,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<SyncReport>> {
        let r = self.0.clone();
        r.calls.lock().unwrap().push((job.name.clone(), kind));
        let mode = *r.mode.lock().unwrap();
        let secret = match &job.sync.auth.client_secret {
            Some(SecretSource::Inline(s)) => s.expose().to_owned(),
            _ => String::new(),
        };
        async move {
            let result = match mode {
                Mode::Succeed => Ok(report()),
                Mode::Fail => Err(
                    anyhow::anyhow!("token request rejected for secret {secret}")
                        .context("server returned 500"),
                ),
                Mode::Gated => tokio::select! {
                    p = r.gate.acquire() => { p?.forget(); Ok(report()) }
                    _ = cancel.cancelled() => Err(anyhow::anyhow!("cancelled")),
                },
                Mode::UntilCancelled => {
                    cancel.cancelled().await;
                    r.saw_cancel.store(true, Ordering::SeqCst);
                    Err(anyhow::anyhow!("cancelled"))
                }
                Mode::Stubborn => {
                    std::future::pending::<()>().await;
                    Ok(report())
                }
            };
            r.finished.fetch_add(1, Ordering::SeqCst);
            result
        }
        .boxed()
    }
}

fn report() -> SyncReport {
    let mut tables = BTreeMap::new();
    tables.insert(
        "Patient".to_string(),
        TableReport {
            inserted: 3,
            updated: 1,
            deleted: 1,
            ..Default::default()
        },
    );
    tables.insert(
        "Observation".to_string(),
        TableReport {
            inserted: 10,
            unchanged: 2,
            rejected: 2,
            ..Default::default()
        },
    );
    SyncReport {
        transaction_time: Some("2024-05-01T10:00:00Z".into()),
        tables,
        bytes_downloaded: 1000,
        duration: Duration::from_millis(5),
        http_retries: [("429".to_string(), 2), ("network".to_string(), 1)]
            .into_iter()
            .collect(),
        token_refreshes: 1,
        ..Default::default()
    }
}

fn job(name: &str, dir: &Path, inc: Option<&str>, full: Option<&str>) -> JobConfig {
    let mut sync = SyncOptions::new(
        "http://127.0.0.1:9/fhir".parse().unwrap(),
        dir.join(name).to_str().unwrap(),
    );
    sync.auth.client_id = Some("client".into());
    sync.auth.client_secret = Some(SecretSource::Inline(Secret::new("TOPSECRET-abc123")));
    sync.auth.enabled = true;
    JobConfig {
        name: name.into(),
        sync,
        schedule: ScheduleConfig {
            incremental: inc.map(|s| Schedule::parse(s).unwrap()),
            full_refresh: full.map(|s| Schedule::parse(s).unwrap()),
            timezone: chrono_tz::UTC,
            jitter: Duration::ZERO,
            run_on_start: false,
            on_overlap: OverlapPolicy::Skip,
        },
    }
}

fn config(jobs: Vec<JobConfig>, stale_after: Duration) -> DaemonConfig {
    DaemonConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        stale_after,
        grace_period: Duration::from_secs(20),
        jobs,
        config_file: None,
    }
}

struct Running {
    addr: SocketAddr,
    state: Arc<DaemonState>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), fhirsync::daemon::DaemonError>>,
}

fn daemon(config: DaemonConfig, runner: Arc<dyn SyncRunner>) -> Daemon {
    Daemon::with_clock(config, runner, VirtualClock::new())
}

async fn start(config: DaemonConfig, runner: &Arc<TestRunner>) -> Running {
    let daemon = daemon(config, Arc::new(Handle(runner.clone())));
    let listener = daemon.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = daemon.state();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(listener, shutdown.clone()));
    Running {
        addr,
        state,
        shutdown,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        pass_virtual_time(Duration::from_millis(20)).await;
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.text().await.unwrap())
}

async fn health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = get(addr, "/health").await;
    (code, serde_json::from_str(&body).unwrap())
}

async fn wait_for_health(
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(u16, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, body) = health(addr).await;
        if pred(code, &body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {code} {body}"
        );
        pass_virtual_time(Duration::from_millis(50)).await;
    }
}

type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Metrics as (name, sorted labels) -> value, via a Prometheus text parser.
async fn metrics(addr: SocketAddr) -> Samples {
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    parse_metrics(&body)
}

fn parse_metrics(body: &str) -> Samples {
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        let v = match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                out.insert(
                    (format!("{}_count", s.metric), labels.clone()),
                    h.last().map(|b| b.count).unwrap_or(0.0),
                );
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((s.metric, labels), v);
    }
    out
}

fn m(map: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    *map.get(&(name.to_string(), l.clone())).unwrap_or_else(|| {
        panic!(
            "no sample {name}{l:?}; have {:?}",
            map.keys().filter(|k| k.0 == name).collect::<Vec<_>>()
        )
    })
}

const EVERY_SECOND: &str = "* * * * * *";
const NEVER_SOON: &str = "0 0 1 1 *";

#[tokio::test(start_paused = true)]
async fn overlapping_ticks_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Gated);
    let d = start(
        config(
            vec![job("main", dir.path(), Some(EVERY_SECOND), None)],
            Duration::from_secs(3600),
        ),
        &runner,
    )
    .await;

    wait_until("the first sync to start", || runner.calls().len() == 1).await;
    let addr = d.addr;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let skipped = m(
            &metrics(addr).await,
            "fhirsync_ticks_skipped_total",
            &[("job", "main")],
        );
        if skipped >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ticks were not skipped"
        );
        pass_virtual_time(Duration::from_millis(100)).await;
    }
    assert_eq!(runner.calls().len(), 1, "never two syncs of a job at once");
    let body = wait_for_health(addr, "running", |_, b| b["jobs"]["main"]["running"] == true).await;
    assert_eq!(body["jobs"]["main"]["running_kind"], "incremental");

    runner.gate.add_permits(1);
    wait_until("a later tick to start a new sync", || {
        runner.calls().len() >= 2
    })
    .await;
    runner.gate.add_permits(1000);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn overlapping_ticks_queue_at_most_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Gated);
    let mut j = job("main", dir.path(), Some(EVERY_SECOND), None);
    j.schedule.on_overlap = OverlapPolicy::Queue;
    let d = start(config(vec![j], Duration::from_secs(3600)), &runner).await;

    wait_until("the first sync", || runner.calls().len() == 1).await;
    wait_until("a queued run", || {
        d.state.job("main").and_then(|s| s.queued).is_some()
    })
    .await;
    // Further ticks merge into the one queued run.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let skipped = m(
            &metrics(d.addr).await,
            "fhirsync_ticks_skipped_total",
            &[("job", "main")],
        );
        if skipped >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        pass_virtual_time(Duration::from_millis(100)).await;
    }
    assert_eq!(runner.calls().len(), 1);

    // Releasing the first sync starts the queued one at once (the gate holds it again).
    runner.gate.add_permits(1);
    wait_until("the queued run", || runner.calls().len() == 2).await;
    assert_eq!(runner.finished.load(Ordering::SeqCst), 1);
    runner.gate.add_permits(1000);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn full_refresh_wins_when_both_schedules_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Succeed);
    let d = start(
        config(
            vec![job(
                "main",
                dir.path(),
                Some(EVERY_SECOND),
                Some("*/2 * * * * *"),
            )],
            Duration::from_secs(3600),
        ),
        &runner,
    )
    .await;
    wait_until("four runs", || runner.finished.load(Ordering::SeqCst) >= 4).await;
    d.stop().await;
    let kinds: Vec<RunKind> = runner.calls().into_iter().map(|(_, k)| k).collect();
    // Both are due at even seconds: the full refresh runs then, the incremental sync at odd ones.
    assert_eq!(
        kinds[..4],
        [
            RunKind::Incremental,
            RunKind::FullRefresh,
            RunKind::Incremental,
            RunKind::FullRefresh
        ],
        "{kinds:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_the_running_sync_and_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::UntilCancelled);
    let mut j = job("main", dir.path(), Some(NEVER_SOON), None);
    j.schedule.run_on_start = true;
    let d = start(config(vec![j], Duration::from_secs(3600)), &runner).await;
    wait_until("the start-up sync", || runner.calls().len() == 1).await;
    assert_eq!(runner.calls()[0].1, RunKind::Incremental);
    let state = d.state.clone();
    d.stop().await;
    assert!(
        runner.saw_cancel.load(Ordering::SeqCst),
        "the sync saw the cancellation"
    );
    assert_eq!(
        runner.finished.load(Ordering::SeqCst),
        1,
        "and returned before the daemon did"
    );
    let s = state.job("main").unwrap();
    assert_eq!(
        s.consecutive_failures, 0,
        "a cancelled sync is not a failure"
    );
    assert!(s.running.is_none());
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Stubborn);
    let mut j = job("main", dir.path(), Some(NEVER_SOON), None);
    j.schedule.run_on_start = true;
    let mut c = config(vec![j], Duration::from_secs(3600));
    c.grace_period = Duration::from_millis(200);
    let d = start(c, &runner).await;
    wait_until("the start-up sync", || runner.calls().len() == 1).await;
    let stopping = tokio::time::Instant::now();
    d.stop().await; // returns although the sync never does
    assert!(
        stopping.elapsed() >= Duration::from_millis(200),
        "the daemon waited the grace period for the sync"
    );
    assert_eq!(runner.finished.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn health_flips_between_failed_and_ok_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Succeed);
    let d = start(
        config(
            vec![job("main", dir.path(), Some(EVERY_SECOND), None)],
            Duration::from_secs(3600),
        ),
        &runner,
    )
    .await;
    let addr = d.addr;

    let ok = wait_for_health(addr, "ok", |c, b| {
        c == 200 && b["jobs"]["main"]["status"] == "ok"
    })
    .await;
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["jobs"]["main"]["last_sync_time"], "2024-05-01T10:00:00Z");
    assert!(ok["jobs"]["main"]["next_run"].is_string());

    runner.set_mode(Mode::Fail);
    let failed = wait_for_health(addr, "failed", |c, b| {
        c == 503 && b["jobs"]["main"]["status"] == "failed"
    })
    .await;
    assert_eq!(failed["status"], "unhealthy");
    let err = failed["jobs"]["main"]["last_error"].as_str().unwrap();
    assert!(err.contains("server returned 500"), "{err}");
    let text = failed.to_string();
    assert!(!text.contains("TOPSECRET"), "secret in /health: {text}");
    wait_for_health(addr, "two failures", |_, b| {
        b["jobs"]["main"]["consecutive_failures"].as_u64() >= Some(2)
    })
    .await;
    let (_, metrics_text) = get(addr, "/metrics").await;
    assert!(!metrics_text.contains("TOPSECRET"));
    assert!(
        m(
            &metrics(addr).await,
            "fhirsync_consecutive_failures",
            &[("job", "main")]
        ) >= 2.0
    );

    runner.set_mode(Mode::Succeed);
    let back = wait_for_health(addr, "ok again", |c, b| {
        c == 200 && b["jobs"]["main"]["status"] == "ok"
    })
    .await;
    assert_eq!(back["jobs"]["main"]["consecutive_failures"], 0);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn health_turns_stale_when_no_sync_succeeds_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Succeed);
    let mut j = job("main", dir.path(), Some(NEVER_SOON), None);
    j.schedule.run_on_start = true;
    let d = start(config(vec![j], Duration::from_secs(1)), &runner).await;
    wait_until("the start-up sync", || {
        runner.finished.load(Ordering::SeqCst) == 1
    })
    .await;
    let stale = wait_for_health(d.addr, "stale", |c, b| {
        c == 503 && b["jobs"]["main"]["status"] == "stale"
    })
    .await;
    assert!(stale["jobs"]["main"]["age_seconds"].as_i64().unwrap() >= 1);
    assert!(
        stale["jobs"]["main"]["reason"]
            .as_str()
            .unwrap()
            .contains("ago")
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn health_starts_from_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Succeed);
    let fresh = job("fresh", dir.path(), Some(NEVER_SOON), None);
    let old = job("old", dir.path(), Some(NEVER_SOON), None);
    let now = start_time();
    let write = |j: &JobConfig, json: serde_json::Value| {
        let p = j.sync.state_file_path().unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, json.to_string()).unwrap();
    };
    write(
        &fresh,
        serde_json::json!({
            "last_sync_time": "2024-05-01T10:00:00Z",
            "last_success_at": (now - chrono::Duration::seconds(60)).to_rfc3339(),
        }),
    );
    // The replaced script's file: only the cursor.
    write(
        &old,
        serde_json::json!({"last_sync_time": "2020-01-01T00:00:00Z"}),
    );

    let d = start(config(vec![fresh, old], Duration::from_secs(3600)), &runner).await;
    let body = wait_for_health(d.addr, "both jobs", |_, b| {
        b["jobs"].as_object().map(|o| o.len()) == Some(2)
    })
    .await;
    let (code, body2) = health(d.addr).await;
    assert_eq!(code, 503, "{body2}");
    assert_eq!(body["jobs"]["fresh"]["status"], "ok");
    assert_eq!(
        body["jobs"]["fresh"]["last_sync_time"],
        "2024-05-01T10:00:00Z"
    );
    assert_eq!(body["jobs"]["old"]["status"], "stale");
    assert_eq!(
        body["jobs"]["old"]["last_sync_time"],
        "2020-01-01T00:00:00Z"
    );
    assert!(runner.calls().is_empty());
    let metrics = metrics(d.addr).await;
    assert!(m(&metrics, "fhirsync_cursor_age_seconds", &[("job", "old")]) > 86400.0 * 365.0);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_count_real_runs() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Succeed);
    let d = start(
        config(
            vec![job("main", dir.path(), Some(EVERY_SECOND), None)],
            Duration::from_secs(3600),
        ),
        &runner,
    )
    .await;
    wait_until("three runs", || runner.finished.load(Ordering::SeqCst) >= 3).await;
    runner.set_mode(Mode::Fail);
    wait_until("a failed run", || {
        d.state
            .job("main")
            .is_some_and(|s| s.consecutive_failures >= 1)
    })
    .await;
    let state = d.state.clone();
    let (code, _) = get(d.addr, "/metrics").await;
    assert_eq!(code, 200);
    // Stop first, so the counts no longer move while they are compared.
    d.stop().await;
    let metrics_before_stop = parse_metrics(&state.metrics_text());

    let succeeded = m(
        &metrics_before_stop,
        "fhirsync_syncs_succeeded_total",
        &[("job", "main"), ("run", "incremental")],
    );
    let failed = m(
        &metrics_before_stop,
        "fhirsync_syncs_failed_total",
        &[("job", "main"), ("run", "incremental")],
    );
    let started = m(
        &metrics_before_stop,
        "fhirsync_syncs_started_total",
        &[("job", "main"), ("run", "incremental")],
    );
    assert!(succeeded >= 3.0);
    assert!(failed >= 1.0);
    assert!(
        started >= succeeded + failed,
        "started {started} succeeded {succeeded} failed {failed}"
    );
    let ok = succeeded;
    let res = |t: &str, k: &str| {
        m(
            &metrics_before_stop,
            "fhirsync_resources_written_total",
            &[("job", "main"), ("resource_type", t), ("kind", k)],
        )
    };
    assert_eq!(res("Patient", "inserted"), 3.0 * ok);
    assert_eq!(res("Patient", "deleted"), 1.0 * ok);
    assert_eq!(res("Observation", "rejected"), 2.0 * ok);
    assert_eq!(res("Observation", "unchanged"), 2.0 * ok);
    assert_eq!(
        m(
            &metrics_before_stop,
            "fhirsync_downloaded_bytes_total",
            &[("job", "main")]
        ),
        1000.0 * ok
    );
    assert_eq!(
        m(
            &metrics_before_stop,
            "fhirsync_http_retries_total",
            &[("job", "main"), ("reason", "429")]
        ),
        2.0 * ok
    );
    assert_eq!(
        m(
            &metrics_before_stop,
            "fhirsync_http_retries_total",
            &[("job", "main"), ("reason", "5xx")]
        ),
        0.0
    );
    assert_eq!(
        m(
            &metrics_before_stop,
            "fhirsync_token_refreshes_total",
            &[("job", "main")]
        ),
        ok
    );
    assert_eq!(
        m(
            &metrics_before_stop,
            "fhirsync_sync_duration_seconds_count",
            &[("job", "main"), ("run", "incremental")]
        ),
        succeeded + failed
    );
    let last = m(
        &metrics_before_stop,
        "fhirsync_last_success_timestamp_seconds",
        &[("job", "main")],
    );
    assert!((start_time().timestamp() as f64 - last).abs() < 3600.0);
    assert!(
        m(
            &metrics_before_stop,
            "fhirsync_cursor_age_seconds",
            &[("job", "main")]
        ) > 0.0
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_run_independently() {
    let dir = tempfile::tempdir().unwrap();
    // The runner blocks "slow" at its gate while "fast" keeps syncing.
    struct Split(Arc<TestRunner>, Arc<TestRunner>);
    impl SyncRunner for Split {
        fn run(
            &self,
            job: &JobConfig,
            kind: RunKind,
            cancel: CancellationToken,
        ) -> BoxFuture<'static, anyhow::Result<SyncReport>> {
            if job.name == "slow" {
                Handle(self.0.clone()).run(job, kind, cancel)
            } else {
                Handle(self.1.clone()).run(job, kind, cancel)
            }
        }
    }
    let slow = TestRunner::new(Mode::Gated);
    let fast = TestRunner::new(Mode::Succeed);
    let c = config(
        vec![
            job("slow", dir.path(), Some(EVERY_SECOND), None),
            job("fast", dir.path(), Some(EVERY_SECOND), None),
        ],
        Duration::from_secs(3600),
    );
    let daemon = daemon(c, Arc::new(Split(slow.clone(), fast.clone())));
    let listener = daemon.bind().await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(listener, shutdown.clone()));
    wait_until("fast to sync three times", || {
        fast.finished.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(slow.calls().len(), 1);
    assert_eq!(slow.finished.load(Ordering::SeqCst), 0);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_job_restarts_after_its_current_sync_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let runner = TestRunner::new(Mode::Gated);
    let mut j = job("main", dir.path(), Some(NEVER_SOON), None);
    j.schedule.run_on_start = true;
    let daemon = daemon(
        config(vec![j.clone()], Duration::from_secs(3600)),
        Arc::new(Handle(runner.clone())),
    );
    let reloader = daemon.reloader();
    let state = daemon.state();
    let listener = daemon.bind().await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(listener, shutdown.clone()));
    wait_until("the start-up sync", || runner.calls().len() == 1).await;

    let mut changed = j.clone();
    changed.schedule.run_on_start = false;
    changed.schedule.incremental = Some(Schedule::parse(EVERY_SECOND).unwrap());
    let mut added = job("second", dir.path(), Some(NEVER_SOON), None);
    added.schedule.run_on_start = false;
    assert!(reloader.reload(config(vec![changed, added], Duration::from_secs(60))));
    wait_until("the new job", || state.job("second").is_some()).await;
    // The new schedule's ticks come due, but the changed job waits for its running sync.
    pass_virtual_time(Duration::from_secs(3)).await;
    assert_eq!(
        runner.calls().len(),
        1,
        "the running sync is not cancelled or doubled"
    );
    assert_eq!(runner.finished.load(Ordering::SeqCst), 0);

    runner.gate.add_permits(1000);
    wait_until("the new schedule to run", || runner.calls().len() >= 2).await;
    let s = state.job("main").unwrap();
    assert!(
        s.last_success_at.is_some(),
        "the first sync completed normally"
    );
    assert_eq!(state.stale_after(), Duration::from_secs(60));
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
