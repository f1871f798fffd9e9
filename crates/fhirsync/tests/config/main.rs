//! Configuration: flag > environment > config file > default, TOML jobs, secrets kept out of output;
//! the shared flag vocabulary in `vocabulary`.
mod vocabulary;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use fhirsync::config::{
    ConfigError, ConfigFile, DaemonArgs, NoEnv, SaveMode, SecretSource, SyncArgs,
};
use fhirsync::schedule::OverlapPolicy;

#[derive(Parser)]
struct SyncCli {
    #[command(flatten)]
    args: SyncArgs,
}

#[derive(Parser)]
struct DaemonCli {
    #[command(flatten)]
    args: DaemonArgs,
}

/// Reads a secret source now, as the sync would.
trait ReadNow {
    fn resolve(&self, what: &str) -> Result<fhirsync::config::Secret, ConfigError>;
}

impl ReadNow for SecretSource {
    fn resolve(&self, what: &str) -> Result<fhirsync::config::Secret, ConfigError> {
        fhirsync::config::read_secret(self, what)
    }
}

fn sync_args(argv: &[&str]) -> SyncArgs {
    SyncCli::try_parse_from(std::iter::once("sync").chain(argv.iter().copied()))
        .unwrap()
        .args
}

fn daemon_args(argv: &[&str]) -> DaemonArgs {
    DaemonCli::try_parse_from(std::iter::once("daemon").chain(argv.iter().copied()))
        .unwrap()
        .args
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(text, Path::new("fhirsync.toml")).unwrap()
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let f = file(
        r#"
        fhir_endpoint = "http://file.example/fhir"
        delta_path = "/data/file"
        max_concurrent_downloads = 3
        max_retry_after = "20m"
        gzip = false
        deletion_vectors = true
        "#,
    );
    let e = env(&[("FHIR_ENDPOINT", "http://env.example/fhir")]);
    let flags = sync_args(&["--fhir-endpoint", "http://flag.example/fhir"]);

    let o = flags.resolve(&e, Some(&f.options)).unwrap();
    assert_eq!(o.fhir_endpoint.as_str(), "http://flag.example/fhir");
    assert_eq!(
        o.delta_path, "/data/file",
        "file value when neither flag nor env is set"
    );
    assert_eq!(o.max_concurrent_downloads, 3);
    assert_eq!(o.max_retry_after, std::time::Duration::from_secs(1200));
    assert_eq!(
        sync_args(&["--max-retry-after", "5m"])
            .resolve(&e, Some(&f.options))
            .unwrap()
            .max_retry_after,
        std::time::Duration::from_secs(300)
    );
    assert!(!o.gzip, "gzip = false in the file");
    assert!(o.deletion_vectors, "deletion_vectors = true in the file");
    assert!(
        !sync_args(&["--deletion-vectors=false"])
            .resolve(&e, Some(&f.options))
            .unwrap()
            .deletion_vectors
    );
    assert!(
        sync_args(&["--gzip"])
            .resolve(&e, Some(&f.options))
            .unwrap()
            .gzip
    );

    let o = SyncArgs::default().resolve(&e, Some(&f.options)).unwrap();
    assert_eq!(o.fhir_endpoint.as_str(), "http://env.example/fhir");

    let o = SyncArgs::default()
        .resolve(&NoEnv, Some(&f.options))
        .unwrap();
    assert_eq!(o.fhir_endpoint.as_str(), "http://file.example/fhir");
    assert_eq!(
        o.resource_types,
        ["Patient", "Condition", "Observation", "Encounter"]
    );
    assert_eq!(o.save_mode, SaveMode::Merge);

    let e = env(&[("DELTA_PATH", "/data/env")]);
    let o = sync_args(&["--max-concurrent-downloads", "7"])
        .resolve(&e, Some(&f.options))
        .unwrap();
    assert_eq!(o.delta_path, "/data/env");
    assert_eq!(o.max_concurrent_downloads, 7);
    assert!(
        sync_args(&["--fhir-endpoint", "http://x/fhir"])
            .resolve(&e, None)
            .unwrap()
            .gzip,
        "gzip by default"
    );
    assert!(
        !sync_args(&["--fhir-endpoint", "http://x/fhir"])
            .resolve(&e, None)
            .unwrap()
            .deletion_vectors,
        "no deletion vectors by default"
    );
}

#[test]
fn missing_required_options_name_the_flag_and_variable() {
    let err = SyncArgs::default().resolve(&NoEnv, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Missing { .. }));
    assert!(
        msg.contains("--fhir-endpoint") && msg.contains("FHIR_ENDPOINT"),
        "{msg}"
    );
    let err = sync_args(&["--fhir-endpoint", "http://x/fhir"])
        .resolve(&NoEnv, None)
        .unwrap_err();
    assert!(err.to_string().contains("--delta-path"), "{err}");
}

#[test]
fn script_flags_parse_as_the_replaced_script_wrote_them() {
    let a = sync_args(&[
        "--fhir-endpoint",
        "https://fhir.example.org/fhir",
        "--delta-path",
        "s3://bucket/fhir",
        "--resource-types",
        "Patient",
        "Observation",
        "MedicationRequest",
        "--group-id",
        "g1",
        "--full-refresh",
        "--timeout",
        "3600",
        "--max-concurrent-downloads",
        "4",
        "--save-mode",
        "overwrite",
        "--max-rejects",
        "10",
        "--storage-option",
        "AWS_REGION=eu-central-1",
    ]);
    let o = a.resolve(&NoEnv, None).unwrap();
    assert_eq!(
        o.resource_types,
        ["Patient", "Observation", "MedicationRequest"]
    );
    assert_eq!(o.group_id.as_deref(), Some("g1"));
    assert!(o.full_refresh);
    assert_eq!(o.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(o.save_mode, SaveMode::Overwrite);
    assert_eq!(o.max_rejects, Some(10));
    assert!(o.is_remote());
    assert_eq!(
        o.state_file_path(),
        None,
        "no local default for an object store path"
    );
    assert_eq!(
        o.storage_options.get("AWS_REGION").map(String::as_str),
        Some("eu-central-1")
    );

    let o = sync_args(&[
        "--fhir-endpoint",
        "http://x/fhir",
        "--delta-path",
        "/d",
        "--timeout",
        "90m",
    ])
    .resolve(&NoEnv, None)
    .unwrap();
    assert_eq!(o.timeout, Some(Duration::from_secs(5400)));
    assert_eq!(
        o.state_file_path().unwrap(),
        Path::new("/d/_fhirsync/state.json")
    );
}

#[test]
fn bad_values_are_rejected_clearly() {
    let base = ["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"];
    let with = |extra: &[&str]| {
        let argv: Vec<&str> = base.iter().chain(extra).copied().collect();
        sync_args(&argv)
            .resolve(&NoEnv, None)
            .unwrap_err()
            .to_string()
    };
    assert!(with(&["--resource-types", "patient"]).contains("not a FHIR resource type"));
    assert!(with(&["--max-concurrent-downloads", "0"]).contains("at least 1"));
    assert!(with(&["--full-refresh", "--since", "2024-01-01T00:00:00Z"]).contains("exclude"));
    assert!(
        with(&[
            "--since",
            "2024-02-01T00:00:00Z",
            "--until",
            "2024-01-01T00:00:00Z"
        ])
        .contains("before")
    );
    let err = sync_args(&["--fhir-endpoint", "ftp://x", "--delta-path", "/d"])
        .resolve(&NoEnv, None)
        .unwrap_err();
    assert!(err.to_string().contains("http(s)"), "{err}");
    assert!(SyncCli::try_parse_from(["sync", "--since", "yesterday"]).is_err());
    assert!(SyncCli::try_parse_from(["sync", "--timeout", "soon"]).is_err());
    assert!(SyncCli::try_parse_from(["sync", "--save-mode", "upsert"]).is_err());
}

#[test]
fn unknown_keys_in_the_file_are_errors() {
    let err = ConfigFile::parse("fhir_endpont = \"http://x\"\n", Path::new("c.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("fhir_endpont") && msg.contains("c.toml"),
        "{msg}"
    );
    let err = ConfigFile::parse("[auth]\nclient_idd = \"x\"\n", Path::new("c.toml")).unwrap_err();
    assert!(err.to_string().contains("client_idd"), "{err}");
    let err = ConfigFile::parse("fhir_endpoint = \n", Path::new("c.toml")).unwrap_err();
    assert!(err.to_string().contains("not valid TOML"), "{err}");
}

#[test]
fn auth_section_mirrors_the_replaced_tool() {
    let f = file(
        r#"
        fhir_endpoint = "https://fhir.example.org/fhir"
        delta_path = "/data"
        [auth]
        enabled = true
        client_id = "fhirsync"
        private_key_jwk = '{"kty":"RSA","d":"SECRET-D-VALUE-123456"}'
        use_smart = true
        scope = "system/*.read"
        use_form_for_basic_auth = false
        token_expiry_tolerance = 60
        "#,
    );
    let o = SyncArgs::default()
        .resolve(&NoEnv, Some(&f.options))
        .unwrap();
    assert!(o.auth.enabled);
    assert_eq!(o.auth.client_id.as_deref(), Some("fhirsync"));
    assert_eq!(o.auth.scope.as_deref(), Some("system/*.read"));
    assert_eq!(o.auth.token_expiry_tolerance, Duration::from_secs(60));
    let key = o.auth.private_key.as_ref().unwrap();
    assert!(
        key.resolve("key")
            .unwrap()
            .expose()
            .contains("SECRET-D-VALUE-123456")
    );
    let debug = format!("{o:?}");
    assert!(
        !debug.contains("SECRET-D-VALUE"),
        "secret in Debug output: {debug}"
    );

    // The shape the token provider takes.
    let ac = o.auth.to_auth_config();
    assert!(ac.enabled);
    assert_eq!(ac.scope, "system/*.read");
    assert_eq!(ac.token_expiry_tolerance, 60);
    assert_eq!(ac.private_key_jwk, o.auth.private_key);
    assert!(!format!("{ac:?}").contains("SECRET-D-VALUE"));

    let bad = sync_args(&[
        "--fhir-endpoint",
        "http://x/fhir",
        "--delta-path",
        "/d",
        "--auth-algorithm",
        "XS999",
    ]);
    let err = bad.resolve(&NoEnv, None).unwrap_err();
    assert!(err.to_string().contains("algorithm"), "{err}");
    let ok = sync_args(&[
        "--fhir-endpoint",
        "http://x/fhir",
        "--delta-path",
        "/d",
        "--auth-algorithm",
        "ES384",
    ]);
    assert_eq!(
        ok.resolve(&NoEnv, None).unwrap().auth.algorithm,
        Some(fhirsync::config::SigningAlgorithm::ES384)
    );

    // enabled without a key or secret is an error, as is a client id with both.
    let f =
        file("fhir_endpoint = \"http://x/fhir\"\ndelta_path = \"/d\"\n[auth]\nclient_id = \"c\"\n");
    let err = SyncArgs::default()
        .resolve(&NoEnv, Some(&f.options))
        .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
}

#[test]
fn secrets_come_from_env_files_and_commands_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.pem");
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\nFILEKEYMATERIAL0123456789\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let base = [
        "--fhir-endpoint",
        "http://x/fhir",
        "--delta-path",
        "/d",
        "--auth-client-id",
        "c",
    ];

    // FHIR_PRIVATE_KEY holds the key itself; it is referenced, not copied.
    let e = env(&[("FHIR_PRIVATE_KEY", "ENVKEYMATERIAL-abcdef")]);
    let o = sync_args(&base).resolve(&e, None).unwrap();
    assert_eq!(
        o.auth.private_key,
        Some(SecretSource::Env("FHIR_PRIVATE_KEY".into()))
    );

    // FHIR_PRIVATE_KEY_FILE for LoadCredential and secret volumes.
    let e = env(&[("FHIR_PRIVATE_KEY_FILE", key_file.to_str().unwrap())]);
    let o = sync_args(&base).resolve(&e, None).unwrap();
    let key = o
        .auth
        .private_key
        .as_ref()
        .unwrap()
        .resolve("the private key")
        .unwrap();
    assert!(
        key.expose().ends_with("-----END PRIVATE KEY-----"),
        "trailing newline trimmed"
    );
    assert!(!format!("{key:?} {key}").contains("FILEKEYMATERIAL"));

    // Both forms at once is ambiguous.
    let e = env(&[("FHIR_PRIVATE_KEY", "x"), ("FHIR_PRIVATE_KEY_FILE", "/k")]);
    assert!(matches!(
        sync_args(&base).resolve(&e, None),
        Err(ConfigError::Conflict(_))
    ));

    // The flag (a path) wins over the environment.
    let mut argv = base.to_vec();
    argv.extend(["--auth-private-key", key_file.to_str().unwrap()]);
    let e = env(&[("FHIR_PRIVATE_KEY", "ENVKEYMATERIAL-abcdef")]);
    let o = sync_args(&argv).resolve(&e, None).unwrap();
    assert_eq!(
        o.auth.private_key,
        Some(SecretSource::File(key_file.clone()))
    );

    // A command's output is the secret.
    let mut argv = base.to_vec();
    argv.extend([
        "--auth-client-secret-command",
        "printf 'CMDSECRET-987654\\n'",
    ]);
    let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
    let secret = o.auth.client_secret.as_ref().unwrap();
    assert_eq!(
        fhirsync::config::read_secret(secret, "the client secret")
            .unwrap()
            .expose(),
        "CMDSECRET-987654"
    );
    assert!(
        !format!("{o:?}").contains("CMDSECRET"),
        "command arguments are not shown"
    );
    let failing = SecretSource::Command("exit 3".into())
        .resolve("the client secret")
        .unwrap_err();
    assert!(failing.to_string().contains("exited"), "{failing}");

    // An inline secret on the command line.
    let mut argv = base.to_vec();
    argv.extend(["--auth-client-secret", "INLINESECRET-42424242"]);
    let o = sync_args(&argv).resolve(&NoEnv, None).unwrap();
    assert!(!format!("{o:?}").contains("INLINESECRET"));

    // A missing secret file names the file, never a value.
    let err = SecretSource::File(dir.path().join("nope"))
        .resolve("the private key")
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // The client id from a file (FHIR_CLIENT_ID_FILE).
    let id_file = dir.path().join("client_id");
    std::fs::write(&id_file, "client-from-file\n").unwrap();
    let e = env(&[
        ("FHIR_CLIENT_ID_FILE", id_file.to_str().unwrap()),
        ("FHIR_CLIENT_SECRET_FILE", key_file.to_str().unwrap()),
    ]);
    let o = sync_args(&base[..4]).resolve(&e, None).unwrap();
    assert_eq!(o.auth.client_id.as_deref(), Some("client-from-file"));
    assert!(o.auth.enabled);
    assert_eq!(o.auth.client_secret, Some(SecretSource::File(key_file)));
}

#[test]
fn storage_option_values_are_not_shown() {
    let o = sync_args(&[
        "--fhir-endpoint",
        "http://x/fhir",
        "--delta-path",
        "s3://b/p",
        "--storage-option",
        "AWS_SECRET_ACCESS_KEY=STORAGESECRET123",
    ])
    .resolve(&NoEnv, None)
    .unwrap();
    let debug = format!("{o:?}");
    assert!(
        debug.contains("AWS_SECRET_ACCESS_KEY") && !debug.contains("STORAGESECRET"),
        "{debug}"
    );
}

#[test]
fn export_storage_options_come_from_flags_over_the_file_and_are_not_shown() {
    let f = file(
        "fhir_endpoint = \"http://x/fhir\"\ndelta_path = \"/d\"\n\n[export_storage_options]\n\
         AZURE_STORAGE_ACCOUNT_NAME = \"fromfile\"\nAZURE_STORAGE_ACCOUNT_KEY = \"FILESECRET123\"\n",
    );
    let o = sync_args(&[
        "--export-storage-option",
        "AZURE_STORAGE_ACCOUNT_KEY=FLAGSECRET123",
    ])
    .resolve(&NoEnv, Some(&f.options))
    .unwrap();
    assert_eq!(
        o.export_storage_options,
        BTreeMap::from([
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), "FLAGSECRET123".into()),
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), "fromfile".into()),
        ])
    );
    assert!(
        o.storage_options.is_empty(),
        "tables and export files apart"
    );
    let debug = format!("{o:?}");
    assert!(
        debug.contains("AZURE_STORAGE_ACCOUNT_KEY") && !debug.contains("SECRET123"),
        "{debug}"
    );
}

const MULTI_JOB: &str = r#"
resource_types = ["Patient", "Observation"]
max_concurrent_downloads = 4
timezone = "Europe/Berlin"

[auth]
client_id = "shared-client"
private_key_file = "/run/credentials/fhirsync.service/key"
scope = "system/*.read"

[daemon]
listen = "127.0.0.1:19464"
stale_after = "3h"
grace_period = "10s"

[[jobs]]
name = "main"
fhir_endpoint = "https://fhir-a.example.org/fhir"
delta_path = "/data/a"
schedule = "15 * * * *"
full_refresh_schedule = "0 3 * * SUN"
jitter = "30s"
run_on_start = true
on_overlap = "queue"

[[jobs]]
name = "lab"
fhir_endpoint = "https://fhir-b.example.org/fhir"
delta_path = "/data/b"
resource_types = "Observation DiagnosticReport"
schedule = "*/30 * * * * *"
timezone = "UTC"
[jobs.auth]
client_id = "lab-client"
"#;

#[test]
fn a_file_with_several_jobs() {
    let f = file(MULTI_JOB);
    let c = DaemonArgs::default().resolve_with(&NoEnv, f, None).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:19464");
    assert_eq!(c.stale_after, Duration::from_secs(3 * 3600));
    assert_eq!(c.grace_period, Duration::from_secs(10));
    assert_eq!(c.jobs.len(), 2);

    let main = &c.jobs[0];
    assert_eq!(main.name, "main");
    assert_eq!(
        main.sync.fhir_endpoint.as_str(),
        "https://fhir-a.example.org/fhir"
    );
    assert_eq!(
        main.sync.resource_types,
        ["Patient", "Observation"],
        "inherited from the top level"
    );
    assert_eq!(main.sync.max_concurrent_downloads, 4);
    assert_eq!(main.sync.auth.client_id.as_deref(), Some("shared-client"));
    assert_eq!(
        main.schedule.incremental.as_ref().unwrap().as_str(),
        "15 * * * *"
    );
    assert_eq!(
        main.schedule.full_refresh.as_ref().unwrap().as_str(),
        "0 3 * * SUN"
    );
    assert_eq!(main.schedule.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(main.schedule.jitter, Duration::from_secs(30));
    assert!(main.schedule.run_on_start);
    assert_eq!(main.schedule.on_overlap, OverlapPolicy::Queue);

    let lab = &c.jobs[1];
    assert_eq!(lab.sync.resource_types, ["Observation", "DiagnosticReport"]);
    assert_eq!(
        lab.sync.auth.client_id.as_deref(),
        Some("lab-client"),
        "job auth overrides"
    );
    assert_eq!(
        lab.sync.auth.scope.as_deref(),
        Some("system/*.read"),
        "and merges key by key"
    );
    assert_eq!(lab.schedule.timezone, chrono_tz::UTC);
    assert_eq!(lab.schedule.on_overlap, OverlapPolicy::Skip);
    assert!(!lab.schedule.run_on_start);
}

#[test]
fn job_errors_name_the_job() {
    let bad = MULTI_JOB.replace("*/30 * * * * *", "every half minute");
    let err = DaemonArgs::default()
        .resolve_with(&NoEnv, file(&bad), None)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("\"lab\"") && msg.contains("cron"), "{msg}");

    let bad = MULTI_JOB.replace("Europe/Berlin", "Europe/Atlantis");
    let err = DaemonArgs::default()
        .resolve_with(&NoEnv, file(&bad), None)
        .unwrap_err();
    assert!(err.to_string().contains("IANA"), "{err}");

    let dup = MULTI_JOB.replace("/data/b", "/data/a");
    let err = DaemonArgs::default()
        .resolve_with(&NoEnv, file(&dup), None)
        .unwrap_err();
    assert!(err.to_string().contains("same delta path"), "{err}");

    let dup = MULTI_JOB.replace("name = \"lab\"", "name = \"main\"");
    let err = DaemonArgs::default()
        .resolve_with(&NoEnv, file(&dup), None)
        .unwrap_err();
    assert!(err.to_string().contains("two jobs"), "{err}");

    // Per-job flags next to [[jobs]] would be ambiguous.
    let args = daemon_args(&["--schedule", "0 * * * *"]);
    let err = args
        .resolve_with(&NoEnv, file(MULTI_JOB), None)
        .unwrap_err();
    assert!(err.to_string().contains("[[jobs]]"), "{err}");
}

#[test]
fn single_job_daemon_from_flags() {
    let args = daemon_args(&[
        "--fhir-endpoint",
        "http://127.0.0.1:8080/fhir",
        "--delta-path",
        "/data",
        "--schedule",
        "15 * * * *",
        "--full-refresh-schedule",
        "0 3 * * SUN",
        "--timezone",
        "America/New_York",
        "--run-on-start",
        "--listen",
        "127.0.0.1:9999",
        "--stale-after",
        "30m",
    ]);
    let c = args
        .resolve_with(&NoEnv, ConfigFile::default(), None)
        .unwrap();
    assert_eq!(c.listen.port(), 9999);
    assert_eq!(c.stale_after, Duration::from_secs(1800));
    assert_eq!(c.jobs.len(), 1);
    let job = &c.jobs[0];
    assert_eq!(job.name, "default");
    assert!(job.schedule.run_on_start);
    assert_eq!(job.schedule.timezone, chrono_tz::America::New_York);

    // The file's top level supplies what the flags leave out; flags win.
    let f = file(
        "schedule = \"0 * * * *\"\ndelta_path = \"/from-file\"\n[daemon]\nlisten = \"127.0.0.1:1234\"\n",
    );
    let args = daemon_args(&[
        "--fhir-endpoint",
        "http://x/fhir",
        "--schedule",
        "30 * * * *",
    ]);
    let c = args.resolve_with(&NoEnv, f, None).unwrap();
    assert_eq!(c.listen.port(), 1234);
    assert_eq!(c.jobs[0].sync.delta_path, "/from-file");
    assert_eq!(
        c.jobs[0].schedule.incremental.as_ref().unwrap().as_str(),
        "30 * * * *"
    );

    // A daemon without any schedule has nothing to do.
    let args = daemon_args(&["--fhir-endpoint", "http://x/fhir", "--delta-path", "/d"]);
    let err = args
        .resolve_with(&NoEnv, ConfigFile::default(), None)
        .unwrap_err();
    assert!(err.to_string().contains("--schedule"), "{err}");
}

#[test]
fn config_file_is_read_from_disk_via_flag_or_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fhirsync.toml");
    std::fs::write(&path, MULTI_JOB).unwrap();
    let c = daemon_args(&["--config", path.to_str().unwrap()])
        .resolve(&NoEnv)
        .unwrap();
    assert_eq!(c.jobs.len(), 2);
    assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
    let e = env(&[("FHIRSYNC_CONFIG", path.to_str().unwrap())]);
    assert_eq!(DaemonArgs::default().resolve(&e).unwrap().jobs.len(), 2);
    let err = daemon_args(&["--config", "/nonexistent/fhirsync.toml"])
        .resolve(&NoEnv)
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/fhirsync.toml"),
        "{err}"
    );
}
