//! `fhirsync daemon` running real syncs against the built-in server: `/health` and `/metrics`
//! reflect them, and SIGTERM in the middle of a sync exits cleanly with consistent tables.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_real_syncs_and_stops_cleanly_on_sigterm() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 6,
            seed: 4,
        },
        polls_before_complete: 1,
        retry_after_secs: 1,
        resources_per_file: 100,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("delta");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let daemon = |delta: &std::path::Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
        cmd.args(["--log-format", "json", "daemon", "--fhir-endpoint"])
            .arg(server.base_url().as_str())
            .arg("--delta-path")
            .arg(delta)
            .args([
                "--resource-types",
                "Patient,Observation",
                "--schedule",
                "0 0 1 1 *",
                "--run-on-start",
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.spawn().unwrap()
    };

    // First: the run-on-start sync completes; /health turns ok and /metrics counts it.
    let mut child = daemon(&delta);
    let deadline = Instant::now() + Duration::from_secs(180);
    let health = loop {
        if let Some((200, body)) = get(&format!("{base}/health")).await {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["jobs"]
                .as_object()
                .is_some_and(|j| j.values().any(|job| !job["last_success_at"].is_null()))
            {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no successful sync reported by /health"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(health["status"], "ok");
    let (_, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(metric(&metrics, "fhirsync_syncs_succeeded_total", &[]), 1.0);
    let patients = server.store().counts()["Patient"] as f64;
    assert_eq!(
        metric(
            &metrics,
            "fhirsync_resources_written_total",
            &[("resource_type", "Patient"), ("kind", "inserted")]
        ),
        patients
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "daemon exits 0 on SIGTERM");

    // Second: SIGTERM while a (slowed) sync downloads; the daemon exits 0 and a later sync
    // completes the same tables.
    server.faults().add(FaultRule {
        target: FaultTarget::AnyFile,
        fault: Fault::Slow {
            bytes_per_sec: 20_000,
        },
        times: None,
    });
    let other = dir.path().join("other");
    let requests_before = server.requests().len();
    let mut child = daemon(&other);
    // SIGTERM once a file is being downloaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.requests()[requests_before..]
        .iter()
        .any(|r| r.path_and_query.starts_with("/files/"))
    {
        assert!(
            Instant::now() < deadline,
            "the sync did not start downloading"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(other.join("_fhirsync/export").exists());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    assert!(
        child.wait().unwrap().success(),
        "daemon exits 0 on SIGTERM during a sync"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    server.faults().clear();
    let status = Command::new(env!("CARGO_BIN_EXE_fhirsync"))
        .args(["--log-format", "json", "sync", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--delta-path")
        .arg(&other)
        .args(["--resource-types", "Patient,Observation"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for t in ["Patient", "Observation"] {
        let q = format!("SELECT count(*) AS n, count(DISTINCT id) AS d FROM {t}");
        let a = fhirsync::tables::query(&delta.display().to_string(), &q, None)
            .await
            .unwrap();
        let b = fhirsync::tables::query(&other.display().to_string(), &q, None)
            .await
            .unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&a)
                .unwrap()
                .to_string(),
            arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string(),
            "{t}"
        );
    }
    server.shutdown().await;
}
