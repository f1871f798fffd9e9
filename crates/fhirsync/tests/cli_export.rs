//! `fhirsync export` run as a user runs it: the real binary against the test server on loopback.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulk_test_server::smart::{RegisteredClient, SmartServerConfig};
use bulk_test_server::{DataSource, Fault, FaultRule, FaultTarget, ServerConfig, TestServer};
use serde_json::Value;

fn fhirsync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fhirsync"));
    // Settings from the surrounding environment must not leak into the tests.
    for var in [
        "FHIR_CLIENT_ID",
        "FHIR_CLIENT_ID_FILE",
        "FHIR_PRIVATE_KEY",
        "FHIR_PRIVATE_KEY_FILE",
        "FHIR_CLIENT_SECRET",
        "FHIR_CLIENT_SECRET_FILE",
        "FHIR_ENDPOINT",
        "FHIRSYNC_FHIR_ENDPOINT",
        "FHIRSYNC_LOG",
        "FHIRSYNC_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

fn export_cmd(server: &TestServer, dir: &Path) -> Command {
    let mut cmd = fhirsync();
    cmd.args(["--log-format", "json", "export", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--output-dir")
        .arg(dir);
    cmd
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "fhirsync failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one JSON summary line `export` prints on stdout in JSON mode.
fn summary(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"))
}

async fn server(config: ServerConfig) -> TestServer {
    TestServer::start(ServerConfig {
        polls_before_complete: 2,
        retry_after_secs: 1,
        ..config
    })
    .await
    .unwrap()
}

fn synthetic(patients: usize, resources_per_file: usize) -> ServerConfig {
    ServerConfig {
        data: DataSource::Synthetic { patients, seed: 17 },
        resources_per_file,
        ..ServerConfig::default()
    }
}

/// Lines of every `<Type>.<n>.ndjson` file directly in `dir` (or `dir/deleted`), by type.
fn lines_by_type(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".ndjson") else {
            continue;
        };
        let ty = stem.split('.').next().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        out.entry(ty).or_default().extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    for lines in out.values_mut() {
        lines.sort();
    }
    out
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).unwrap()
}

/// The `count`s of the manifest's `output` entries, summed by type.
fn manifest_counts(m: &Value) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for f in m["output"].as_array().expect("output array") {
        let ty = f["type"].as_str().unwrap().to_owned();
        *counts.entry(ty).or_default() += f["count"].as_u64().expect("count");
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_system_export_has_every_resource_the_manifest_counts() {
    let server = server(synthetic(6, 40)).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    // Human mode: the progress display runs (hidden, as stderr is not a terminal).
    let mut cmd = fhirsync();
    cmd.args(["--log-format", "human", "export", "--fhir-endpoint"])
        .arg(server.base_url().as_str())
        .arg("--output-dir")
        .arg(&out_dir);
    let out = run(cmd).await;
    assert_success(&out);

    let m = manifest(&out_dir);
    let counts = manifest_counts(&m);
    let files = lines_by_type(&out_dir);
    let line_counts: BTreeMap<String, u64> = files
        .iter()
        .map(|(t, l)| (t.clone(), l.len() as u64))
        .collect();
    assert_eq!(line_counts, counts, "lines per type vs. manifest counts");
    assert_eq!(
        counts,
        server.store().counts(),
        "manifest vs. the server's data"
    );
    assert!(counts.len() > 3, "several types exported: {counts:?}");
    // Several files per type where the type has more than 40 resources.
    let outputs = m["output"].as_array().unwrap().len();
    assert!(
        outputs > counts.len(),
        "{outputs} files for {} types",
        counts.len()
    );
    // Every line is a resource of its file's type, ids unique within the type.
    for (ty, lines) in &files {
        let mut ids = std::collections::BTreeSet::new();
        for line in lines {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"].as_str(), Some(ty.as_str()));
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_owned()),
                "duplicate {ty} id"
            );
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let total: u64 = counts.values().sum();
    assert!(
        stdout.contains(&format!("exported {total} resources in {outputs} files")),
        "{stdout}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_export_lists_changes_and_deletions() {
    let server = server(synthetic(4, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let out = run(export_cmd(&server, &full)).await;
    assert_success(&out);
    let since = manifest(&full)["transactionTime"]
        .as_str()
        .unwrap()
        .to_owned();

    let store = server.store();
    let patients = store.ids("Patient");
    let (changed, deleted) = (&patients[0], &patients[1]);
    let mut patient = store.get("Patient", changed).unwrap();
    patient["gender"] = Value::String("other".into());
    store.upsert(patient).unwrap();
    assert!(store.delete("Patient", deleted));

    let inc = dir.path().join("inc");
    let mut cmd = export_cmd(&server, &inc);
    cmd.args(["--types", "Patient", "--since", &since]);
    let out = run(cmd).await;
    assert_success(&out);

    let files = lines_by_type(&inc);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["Patient"]);
    let exported: Vec<Value> = files["Patient"]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 1, "only the changed patient: {exported:?}");
    assert_eq!(exported[0]["id"].as_str(), Some(changed.as_str()));
    assert_eq!(exported[0]["gender"].as_str(), Some("other"));

    let deletions = lines_by_type(&inc.join("deleted"));
    let text = deletions
        .values()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(&format!("Patient/{deleted}")),
        "deleted/ names the deleted patient: {text}"
    );
    assert!(!text.contains(&format!("Patient/{changed}")));
    let s = summary(&out);
    assert_eq!(s["resources"], 1);
    assert_eq!(s["deletions"], 1);
    server.shutdown().await;
}

fn key(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../smart-auth/tests/keys")
    .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_authenticates_with_a_client_id_and_a_private_key() {
    let public: Value =
        serde_json::from_slice(&std::fs::read(key("rsa-a.public.jwk.json")).unwrap()).unwrap();
    let server = server(ServerConfig {
        requires_access_token: true,
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(60),
            clients: vec![RegisteredClient {
                client_id: "fhirsync-export".into(),
                jwks: Some(serde_json::json!({ "keys": [public] })),
                client_secret: None,
            }],
        }),
        ..synthetic(3, 50)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // Without credentials the server refuses the export.
    let out = run(export_cmd(&server, &dir.path().join("anonymous"))).await;
    assert!(!out.status.success(), "an unauthenticated export must fail");

    let out_dir = dir.path().join("out");
    let mut cmd = export_cmd(&server, &out_dir);
    cmd.args(["--auth-client-id", "fhirsync-export", "--auth-private-key"])
        .arg(key("rsa-a.private.jwk.json"));
    let out = run(cmd).await;
    assert_success(&out);
    let counts = manifest_counts(&manifest(&out_dir));
    assert_eq!(counts, server.store().counts());
    let requests = server.requests();
    let authorized = requests
        .iter()
        .filter(|r| r.path_and_query.contains("$export") || r.path_and_query.starts_with("/files"))
        .filter(|r| r.status < 400);
    assert!(authorized.clone().count() > 1);
    assert!(authorized.clone().all(|r| r.authorization), "{requests:?}");
    assert!(server.smart().unwrap().tokens_issued() >= 1);

    // The key's private part never reaches the output.
    let private: Value =
        serde_json::from_slice(&std::fs::read(key("rsa-a.private.jwk.json")).unwrap()).unwrap();
    let d = private["d"].as_str().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(d));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(d));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_credentials_come_from_the_environment() {
    let public: Value =
        serde_json::from_slice(&std::fs::read(key("ec384-a.public.jwk.json")).unwrap()).unwrap();
    let server = server(ServerConfig {
        requires_access_token: true,
        smart: Some(SmartServerConfig {
            token_lifetime: Duration::from_secs(60),
            clients: vec![RegisteredClient {
                client_id: "fhirsync-env".into(),
                jwks: Some(serde_json::json!({ "keys": [public] })),
                client_secret: None,
            }],
        }),
        ..synthetic(2, 1000)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut cmd = export_cmd(&server, &out_dir);
    cmd.env("FHIR_CLIENT_ID", "fhirsync-env")
        .env("FHIR_PRIVATE_KEY_FILE", key("ec384-a.private.jwk.json"));
    let out = run(cmd).await;
    assert_success(&out);
    assert_eq!(
        manifest_counts(&manifest(&out_dir)),
        server.store().counts()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_comes_from_fhir_endpoint_or_the_deprecated_name() {
    let server = server(synthetic(2, 1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let export = |var: &str, out_dir: &Path| {
        let mut cmd = fhirsync();
        cmd.args(["--log-format", "json", "export", "--types", "Patient"])
            .arg("--output-dir")
            .arg(out_dir)
            .env(var, server.base_url().as_str());
        cmd
    };
    let patients = server.store().counts()["Patient"];

    let out = run(export("FHIR_ENDPOINT", &dir.path().join("a"))).await;
    assert_success(&out);
    assert_eq!(summary(&out)["resources"].as_u64(), Some(patients));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("deprecated"), "{stderr}");

    let out = run(export("FHIRSYNC_FHIR_ENDPOINT", &dir.path().join("b"))).await;
    assert_success(&out);
    assert_eq!(summary(&out)["resources"].as_u64(), Some(patients));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("FHIRSYNC_FHIR_ENDPOINT is deprecated"))
        .unwrap_or_else(|| panic!("no deprecation warning: {stderr}"));
    assert!(
        warning.contains("\"WARN\"") && warning.contains("set FHIR_ENDPOINT"),
        "{warning}"
    );

    // Neither flag nor variable: refused with both named.
    let mut cmd = fhirsync();
    cmd.args(["export", "--output-dir"])
        .arg(dir.path().join("c"));
    let out = run(cmd).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--fhir-endpoint") && stderr.contains("FHIR_ENDPOINT"),
        "{stderr}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_export_resumes_to_the_same_content() {
    let server = server(synthetic(6, 40)).await;
    // Slow files: the export is still downloading when it is killed.
    server.faults().add(FaultRule::always(
        FaultTarget::AnyFile,
        Fault::Slow {
            bytes_per_sec: 2_000,
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut cmd = export_cmd(&server, &out_dir);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    while !server
        .requests()
        .iter()
        .any(|r| r.path_and_query.starts_with("/files"))
    {
        assert!(Instant::now() < deadline, "no download started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export ended early"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let total: u64 = server.store().counts().values().sum();
    let downloaded: u64 = lines_by_type(&out_dir)
        .values()
        .map(|l| l.len() as u64)
        .sum();
    assert!(
        downloaded < total,
        "the kill came before the export finished"
    );

    server.faults().clear();
    let mut cmd = export_cmd(&server, &out_dir);
    cmd.arg("--resume");
    let out = run(cmd).await;
    assert_success(&out);
    let kickoffs = server
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("$export"))
        .count();

    // An uninterrupted export of the same data for comparison.
    let fresh = dir.path().join("fresh");
    assert_success(&run(export_cmd(&server, &fresh)).await);

    let resumed = lines_by_type(&out_dir);
    assert_eq!(
        resumed,
        lines_by_type(&fresh),
        "resumed export differs from a fresh one"
    );
    assert_eq!(
        resumed
            .iter()
            .map(|(t, l)| (t.clone(), l.len() as u64))
            .collect::<BTreeMap<_, _>>(),
        server.store().counts()
    );
    assert_eq!(
        kickoffs, 1,
        "--resume continued the first job instead of starting another"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_exits_non_zero_with_one_line_on_stderr() {
    let server = server(synthetic(2, 1000)).await;
    server
        .faults()
        .add(FaultRule::times(FaultTarget::KickOff, Fault::FailJob, 2));
    let dir = tempfile::tempdir().unwrap();

    // With logging off, stderr is exactly the one line.
    let mut cmd = export_cmd(&server, &dir.path().join("a"));
    cmd.args(["--log-level", "off"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("fhirsync: "), "{stderr}");
    assert!(
        lines[0].contains(server.base_url().as_str()),
        "names the server: {stderr}"
    );
    assert!(out.stdout.is_empty());

    // With JSON logs, the last line is the same one-line reason.
    let out = run(export_cmd(&server, &dir.path().join("b"))).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fhirsync: "))
        .collect();
    assert_eq!(reasons.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(reasons[0]));

    // A bad flag value is refused before anything is sent.
    let mut cmd = export_cmd(&server, &dir.path().join("c"));
    cmd.args(["--since", "yesterday"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    server.shutdown().await;
}

/// Every file below `dir` with its length, modification time and contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else {
                let contents = std::fs::read(&path).unwrap();
                out.insert(path, (meta.len(), meta.modified().unwrap(), contents));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_export_into_a_directory_in_use_is_refused_and_touches_nothing() {
    let server = server(synthetic(4, 1000)).await;
    // The first export waits for its manifest until the rule is cleared.
    server
        .faults()
        .add(FaultRule::always(FaultTarget::Status, Fault::DelayManifest));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut first = export_cmd(&server, &out_dir);
    first.stdout(Stdio::null()).stderr(Stdio::null());
    let mut first = first.spawn().unwrap();
    let kickoffs = || {
        server
            .requests()
            .iter()
            .filter(|r| r.path_and_query.contains("$export"))
            .count()
    };
    let polled = |server: &TestServer| {
        server
            .requests()
            .iter()
            .any(|r| !r.path_and_query.contains("$export") && r.path_and_query.contains("status"))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !polled(&server) {
        assert!(Instant::now() < deadline, "the first export never polled");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first export ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = snapshot(&out_dir);
    let lock = out_dir.join(fhir_bulk::EXPORT_LOCK_FILE);
    for resume in [false, true] {
        let mut second = export_cmd(&server, &out_dir);
        second.args(["--log-level", "off", &format!("--resume={resume}")]);
        // Refused at once; the limit only ends one that would wait for the manifest too.
        second.args(["--timeout", "20s"]);
        let out = run(second).await;
        assert!(!out.status.success(), "resume={resume}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        for part in [
            out_dir.display().to_string(),
            lock.display().to_string(),
            "another export".to_string(),
        ] {
            assert!(lines[0].contains(&part), "{part:?} in {stderr}");
        }
        assert_eq!(kickoffs(), 1, "the refused export sent no kick-off");
        assert!(
            snapshot(&out_dir) == before,
            "the refused export changed files"
        );
    }

    // Once the first has ended (killed here), a resume continues its job to the end.
    first.kill().unwrap();
    first.wait().unwrap();
    server.faults().clear();
    let mut resume = export_cmd(&server, &out_dir);
    resume.arg("--resume");
    assert_success(&run(resume).await);
    assert_eq!(kickoffs(), 1, "the resume continued the first job");
    let lines: BTreeMap<String, u64> = lines_by_type(&out_dir)
        .into_iter()
        .map(|(t, l)| (t, l.len() as u64))
        .collect();
    assert_eq!(lines, server.store().counts());
    server.shutdown().await;
}
