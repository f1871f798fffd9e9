//! What a person sees at a terminal: `fhirsync sync` run in a pseudo-terminal (util-linux
//! `script`), against the test server on loopback.
use std::path::Path;
use std::process::Command;

use bulk_test_server::{DataSource, ServerConfig, TestServer};

/// Runs `fhirsync ARGS` in a pseudo-terminal; returns its exit success and everything it drew
/// (stdout and stderr share the terminal). `None` when `script` is not installed.
async fn in_terminal(args: Vec<String>) -> Option<(bool, String)> {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_fhirsync").to_string())
        .chain(args)
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args([
        "--quiet",
        "--return",
        "--command",
        &quoted.join(" "),
        "/dev/null",
    ])
    .env("TERM", "xterm-256color")
    .env("COLUMNS", "120")
    .env("LINES", "40");
    for var in [
        "FHIRSYNC_LOG",
        "FHIRSYNC_LOG_FORMAT",
        "FHIR_ENDPOINT",
        "FHIR_CLIENT_ID",
    ] {
        cmd.env_remove(var);
    }
    let out = match tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "`script` (util-linux) must be installed in CI"
            );
            println!("skipped: `script` (util-linux) is not installed");
            return None;
        }
        Err(e) => panic!("cannot run script: {e}"),
    };
    let drawn = String::from_utf8_lossy(&out.stdout).into_owned();
    Some((out.status.success(), drawn))
}

fn sync_args(server: &TestServer, delta: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "sync",
            "--fhir-endpoint",
            server.base_url().as_str(),
            "--delta-path",
            &delta.display().to_string(),
            "--resource-types",
            "Patient",
            "Observation",
            "Encounter",
        ]
        .map(String::from),
    );
    args
}

/// Lines a per-file or per-commit log event leaves (in the human format).
fn per_file_lines(drawn: &str) -> Vec<&str> {
    drawn
        .lines()
        .filter(|l| {
            l.contains("file downloaded")
                || l.contains("/files/")
                || l.contains("committed")
                || l.contains(" INFO ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_on_a_terminal_shows_bars_and_the_summary_not_a_line_per_file() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 40,
            seed: 5,
        },
        // Many small files: a line per file would show.
        resources_per_file: 20,
        polls_before_complete: 1,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let Some((ok, drawn)) = in_terminal(sync_args(&server, &dir.path().join("a"), &[])).await
    else {
        return;
    };
    assert!(ok, "sync failed:\n{drawn}");
    let files = server
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("/files/"))
        .count();
    assert!(files >= 20, "only {files} files: the test needs many");
    assert_eq!(
        per_file_lines(&drawn),
        Vec::<&str>::new(),
        "per-file or per-commit lines on a terminal by default:\n{drawn}"
    );
    for phase in ["export", "download", "encode", "commit"] {
        assert!(drawn.contains(phase), "no {phase} bar:\n{drawn}");
    }
    // The summary table, as before.
    for row in ["Patient", "Observation", "Encounter"] {
        assert!(
            drawn.lines().any(|l| l.trim_start().starts_with(row)),
            "no summary row for {row}:\n{drawn}"
        );
    }

    // The same check finds the lines once they are asked for.
    let debug = ["--log-level", "debug"];
    let (ok, drawn) = in_terminal(sync_args(&server, &dir.path().join("b"), &debug))
        .await
        .unwrap();
    assert!(ok, "sync failed:\n{drawn}");
    let lines = per_file_lines(&drawn);
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("file downloaded"))
            .count()
            >= files,
        "with --log-level debug every file has its line:\n{drawn}"
    );
}
