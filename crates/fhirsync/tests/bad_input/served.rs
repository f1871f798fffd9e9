//! Bad lines a FHIR server sends, through a whole sync against the test server (which serves
//! the lines of the files it is given as they are, when they are JSON resources with an id and
//! `meta`): the sync treats them as the import does, and the download's own limit on a line's
//! length rejects an over-long line with the server's line number.
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::SyncOptions;
use fhirsync::logging::LogMode;
use fhirsync::run::{RunKind, SyncReport};
use fhirsync::sync;
use tokio_util::sync::CancellationToken;

use crate::harness::{Case, Expect, run_family};

/// The download's line limit in these syncs.
const MAX_LINE: usize = 4096;

/// A Patient as the server keeps it verbatim (it has `meta.versionId` and `meta.lastUpdated`).
fn served(id: &str, members: &str) -> String {
    format!(
        r#"{{"resourceType":"Patient","id":"{id}","meta":{{"versionId":"1","lastUpdated":"2024-01-01T00:00:00Z"}},{members}}}"#
    )
}

/// The bad line between two good Patients in the server's data.
fn line(kind: &'static str, decided: &'static str, bad: String, expect: Expect) -> Case {
    let text = format!(
        "{}\n{bad}\n{}\n",
        served("before", r#""gender":"female""#),
        served("after", r#""gender":"male""#)
    );
    Case::new(kind, decided, expect)
        .file("Patient.ndjson", text)
        .neighbours(&[("Patient", "before"), ("Patient", "after")])
}

fn kept(id: &'static str, checks: &[(&str, &'static str)]) -> Expect {
    Expect::Kept {
        table: "Patient",
        id,
        checks: checks
            .iter()
            .map(|(expr, want)| {
                (
                    format!("SELECT {expr} FROM Patient WHERE id = '{id}'"),
                    *want,
                )
            })
            .collect(),
    }
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        line(
            "line over the download's length limit",
            "rejected with the server's line number",
            served(
                "long",
                &format!(r#""text":{{"div":"{}"}}"#, "x".repeat(MAX_LINE)),
            ),
            Expect::Rejected {
                file: "Patient.1.ndjson",
                line: 2,
                reason: "over the limit",
            },
        ),
        line(
            "impossible date",
            "kept, the date stored as null",
            served("feb30", r#""birthDate":"2020-02-30""#),
            kept("feb30", &[(r#""birthDate" IS NULL"#, "true")]),
        ),
        line(
            "integer out of 32-bit range",
            "kept, stored as null",
            served("int", r#""multipleBirthInteger":3000000000"#),
            kept("int", &[(r#""multipleBirthInteger" IS NULL"#, "true")]),
        ),
        line(
            "id with characters FHIR does not allow",
            "kept as given",
            served("a b", r#""gender":"male""#),
            kept("a b", &[]),
        ),
        line(
            "two values of one choice element",
            "kept with the first value in the line",
            served(
                "choice",
                r#""deceasedBoolean":true,"deceasedDateTime":"2020-01-01""#,
            ),
            kept(
                "choice",
                &[(
                    r#""deceasedBoolean" IS NOT NULL AND "deceasedDateTime" IS NULL"#,
                    "true",
                )],
            ),
        ),
        line(
            "escaped NUL and a surrogate pair in a string",
            "kept exactly",
            served("escapes", r#""name":[{"family":"a\u0000b\ud83d\ude00"}]"#),
            kept(
                "escapes",
                &[(
                    "name[1]['family'] = concat('a', chr(0), 'b', chr(128512))",
                    "true",
                )],
            ),
        ),
        line(
            "unknown element",
            "kept, the element ignored",
            served("unknown", r#""favouriteColour":"blue","gender":"male""#),
            kept("unknown", &[("gender", "male")]),
        ),
        line(
            "wrong JSON type for an element",
            "kept, stored as null",
            served("bool", r#""active":"yes""#),
            kept("bool", &[("active IS NULL", "true")]),
        ),
    ]
}

async fn start(input: PathBuf) -> anyhow::Result<TestServer> {
    Ok(TestServer::start(ServerConfig {
        data: DataSource::Dir(input),
        polls_before_complete: 1,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await?)
}

async fn sync(server: &TestServer, delta: &Path, kind: RunKind) -> anyhow::Result<SyncReport> {
    let mut opts = SyncOptions::new(server.base_url(), delta.display().to_string());
    opts.resource_types = vec!["Patient".into(), "Observation".into()];
    opts.full_refresh = kind == RunKind::FullRefresh;
    let mut client = sync::client_config(&opts, LogMode::Json).await?;
    client.poll.min_delay = Duration::from_millis(10);
    client.poll.initial_delay = Duration::from_millis(20);
    client.max_line_bytes = MAX_LINE;
    sync::run_sync(&opts, kind, client, CancellationToken::new()).await
}

/// One sync of the server's data.
async fn sync_from(input: PathBuf, delta: PathBuf) -> anyhow::Result<SyncReport> {
    let server = start(input).await?;
    let report = sync(&server, &delta, RunKind::Incremental).await;
    server.shutdown().await;
    report
}

/// A sync, then a full refresh after `r2` changed on the server into a line over the limit.
async fn refresh_with_r2_too_long(input: PathBuf, delta: PathBuf) -> anyhow::Result<SyncReport> {
    let server = start(input).await?;
    sync(&server, &delta, RunKind::Incremental).await?;
    let store = server.store();
    let mut r2 = store
        .get("Patient", "r2")
        .ok_or_else(|| anyhow::anyhow!("the server has no r2"))?;
    r2["text"] = serde_json::json!({"status": "generated", "div": "x".repeat(MAX_LINE)});
    store.upsert(r2)?;
    let report = sync(&server, &delta, RunKind::FullRefresh).await;
    server.shutdown().await;
    report
}

#[test]
fn bad_lines_from_a_server_are_treated_as_in_an_import() {
    run_family("served", cases(), sync_from);
}

#[test]
fn a_full_refresh_keeps_a_resource_whose_line_is_rejected() {
    let case = Case::new(
        "full refresh with a line rejected, its id unreadable (a line over the limit)",
        "rejected; the table keeps the resource: reconciliation of its type stops instead of deleting what it could not read",
        // The changed resource comes last in the server's file.
        Expect::Rejected { file: "Patient.1.ndjson", line: 3, reason: "over the limit" },
    )
    .file(
        "Patient.ndjson",
        format!(
            "{}\n{}\n{}\n",
            served("before", r#""gender":"female""#),
            served("r2", r#""gender":"other""#),
            served("after", r#""gender":"male""#)
        ),
    )
    .neighbours(&[("Patient", "before"), ("Patient", "r2"), ("Patient", "after")]);
    run_family("reconcile", vec![case], refresh_with_r2_too_long);
}
