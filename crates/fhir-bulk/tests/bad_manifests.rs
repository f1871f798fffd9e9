//! Bad completion manifests, one named case per kind, each through a whole export against a
//! scripted server: a manifest that cannot be trusted is refused with a one-line reason before
//! any file is downloaded; one that can is downloaded, every file once, the FHIR server's
//! token never sent to another origin. No panic on any thread, no hang (a timeout fails it).
mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Reply, Scripted, content, export_system, fast_config};
use fhir_bulk::{BulkClient, StaticBearer};
use serde_json::{Value, json};

const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the export must do with the case's manifest.
enum Expect {
    /// Fail with one line saying this, having downloaded nothing.
    Refused(&'static str),
    /// Succeed with these Patients, each once, downloaded from the FHIR server's origin (with
    /// its token) or from the other origin (without).
    Downloaded {
        patients: &'static [&'static str],
        other_origin: bool,
    },
}

/// Writes a manifest body, given the FHIR server and the other origin.
type Body = Box<dyn Fn(&Scripted, &Scripted) -> Vec<u8>>;

struct Case {
    kind: &'static str,
    decided: &'static str,
    body: Body,
    expect: Expect,
}

/// A valid manifest listing the FHIR server's Patient file, with `patch` applied (a `null`
/// member removes the key).
fn manifest(s: &Scripted, patch: Value) -> Vec<u8> {
    let mut m = json!({
        "transactionTime": "2024-03-01T12:00:00Z",
        "request": s.url("/fhir/$export").to_string(),
        "requiresAccessToken": true,
        "output": [{"type": "Patient", "url": s.url("/files/p.ndjson").to_string(), "count": 2}],
        "error": []
    });
    if let (Some(m), Some(patch)) = (m.as_object_mut(), patch.as_object()) {
        for (k, v) in patch {
            match v {
                Value::Null => m.remove(k),
                v => m.insert(k.clone(), v.clone()),
            };
        }
    }
    m.to_string().into_bytes()
}

fn case(
    kind: &'static str,
    decided: &'static str,
    expect: Expect,
    body: impl Fn(&Scripted, &Scripted) -> Vec<u8> + 'static,
) -> Case {
    Case {
        kind,
        decided,
        body: Box::new(body),
        expect,
    }
}

/// The manifest with `patch`, refused with `reason`.
fn refused(
    kind: &'static str,
    reason: &'static str,
    patch: impl Fn(&Scripted) -> Value + 'static,
) -> Case {
    case(
        kind,
        "refused before any download",
        Expect::Refused(reason),
        move |s, _| manifest(s, patch(s)),
    )
}

/// One output entry (`type`, `url`, more members) in place of the manifest's.
fn output(entry: Value) -> Value {
    json!({ "output": [entry] })
}

const BOTH: Expect = Expect::Downloaded {
    patients: &["p1", "p2"],
    other_origin: false,
};

/// The URL of the FHIR server's Patient file.
fn p(s: &Scripted) -> String {
    s.url("/files/p.ndjson").to_string()
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        case("body not JSON", "refused", Expect::Refused("not JSON"), |_, _| b"{\"transactionTime\":".to_vec()),
        case("an HTML page with status 200", "refused", Expect::Refused("not JSON"), |_, _| b"<html><body>Service unavailable</body></html>".to_vec()),
        case("an empty body", "refused", Expect::Refused("not JSON"), |_, _| Vec::new()),
        case("a JSON array", "refused", Expect::Refused("not a JSON object"), |_, _| b"[]".to_vec()),
        case("an OperationOutcome with status 200", "refused", Expect::Refused("got a OperationOutcome resource"), |_, _| br#"{"resourceType":"OperationOutcome","issue":[]}"#.to_vec()),
        refused("transactionTime missing", "transactionTime is missing", |_| json!({"transactionTime": null})),
        refused("transactionTime not an instant", "not a FHIR instant", |_| json!({"transactionTime": "yesterday"})),
        refused("transactionTime without a time zone", "not a FHIR instant", |_| json!({"transactionTime": "2024-03-01T12:00:00"})),
        refused("transactionTime a number", "transactionTime must be a string", |_| json!({"transactionTime": 1709294400})),
        refused("request a number", "request must be a string", |_| json!({"request": 7})),
        refused("requiresAccessToken a string", "requiresAccessToken must be a boolean", |_| json!({"requiresAccessToken": "yes"})),
        refused("outputOrganizedBy a number", "outputOrganizedBy must be a string", |_| json!({"outputOrganizedBy": 1})),
        refused("output missing", "output is missing", |_| json!({"output": null})),
        refused("output an object", "output must be an array", |s| json!({"output": {"type": "Patient", "url": p(s)}})),
        refused("output entry a string", "output[0] must be an object", |s| json!({"output": [p(s)]})),
        refused("output entry without type", "output[0].type is missing", |s| output(json!({"url": p(s)}))),
        refused("output entry type a number", "output[0].type must be a string", |s| output(json!({"type": 1, "url": p(s)}))),
        refused("output entry type not a type name (a path)", "is not a resource type", |s| output(json!({"type": "../../etc", "url": p(s)}))),
        refused("output entry type in lower case", "is not a resource type", |s| output(json!({"type": "patient", "url": p(s)}))),
        refused("output entry without url", "output[0].url is missing", |_| output(json!({"type": "Patient"}))),
        refused("output entry url a number", "output[0].url must be a string", |_| output(json!({"type": "Patient", "url": 7}))),
        refused("output entry url not a URL", "is not a URL", |_| output(json!({"type": "Patient", "url": "http://[::1"}))),
        refused("output entry url of a local file", "not an http(s) URL", |_| output(json!({"type": "Patient", "url": "file:///etc/passwd"}))),
        refused("deleted entry url a number", "deleted[0].url must be a string", |_| json!({"deleted": [{"type": "Bundle", "url": 7}]})),
        refused("error an object", "error must be an array", |_| json!({"error": {}})),
        refused("count negative", "count must be a non-negative integer", |s| output(json!({"type": "Patient", "url": p(s), "count": -1}))),
        refused("count a fraction", "count must be a non-negative integer", |s| output(json!({"type": "Patient", "url": p(s), "count": 1.5}))),
        refused("count beyond 64 bits", "count must be a non-negative integer", |s| output(json!({"type": "Patient", "url": p(s), "count": 1e30}))),
        refused("count a string", "count must be a number", |s| output(json!({"type": "Patient", "url": p(s), "count": "2"}))),
        refused("link without url", "link[0] needs string relation and url", |_| json!({"link": [{"relation": "next"}]})),
        refused("link to itself (a loop)", "manifest links form a loop", |s| json!({"link": [{"relation": "next", "url": s.url("/fhir/status/1").to_string()}]})),
        refused("one URL listed as two types", "listed as Patient and as Observation files", |s| json!({"output": [{"type": "Patient", "url": p(s)}, {"type": "Observation", "url": p(s)}]})),
        case("count absurdly large", "downloaded; the count is only compared (a warning), never trusted for memory", BOTH, move |s, _| manifest(s, output(json!({"type": "Patient", "url": p(s), "count": u64::MAX})))),
        case("absurd counts on two entries", "downloaded; their sum does not overflow", BOTH, move |s, _| manifest(s, json!({"output": [{"type": "Patient", "url": p(s), "count": u64::MAX}, {"type": "Observation", "url": s.url("/files/empty.ndjson").to_string(), "count": u64::MAX}]}))),
        case("the same URL listed twice", "downloaded once", BOTH, move |s, _| manifest(s, json!({"output": [{"type": "Patient", "url": p(s)}, {"type": "Patient", "url": p(s)}]}))),
        case("relative URL", "resolved against the status URL and downloaded", BOTH, |s, _| manifest(s, output(json!({"type": "Patient", "url": "../../files/p.ndjson"})))),
        case("URL on another origin", "downloaded without the FHIR server's token", Expect::Downloaded { patients: &["p1", "p2"], other_origin: true }, |s, cdn| manifest(s, output(json!({"type": "Patient", "url": cdn.url("/files/p.ndjson").to_string()})))),
        case("request missing (Aidbox at system level)", "downloaded", BOTH, |s, _| manifest(s, json!({"request": null}))),
        case("a FHIR relative reference (Binary/id, as HAPI and Medplum list files)", "resolved against the FHIR base and downloaded", BOTH, |s, _| manifest(s, output(json!({"type": "Patient", "url": "Binary/p"})))),
        case("output empty", "nothing to download", Expect::Downloaded { patients: &[], other_origin: false }, |s, _| manifest(s, json!({"output": []}))),
        case("unknown members and an extension of any shape", "ignored", BOTH, |s, _| manifest(s, json!({"extension": "text", "somethingElse": [1, 2]}))),
    ]
}

const PATIENTS: &str =
    "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n";

/// Every panic of any thread, process-wide.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The problems with the export of `case` (none when it behaved as decided).
async fn run(case: &Case) -> Vec<String> {
    let (s, cdn) = (Scripted::start().await, Scripted::start().await);
    s.on(
        "/fhir/$export",
        Reply::new(202).header("content-location", "/fhir/status/1"),
    );
    s.on(
        "/fhir/status/1",
        Reply::new(200)
            .header("content-type", "application/json")
            .body((case.body)(&s, &cdn)),
    );
    for server in [&s, &cdn] {
        server.on("/files/p.ndjson", Reply::new(200).body(PATIENTS));
        server.on("/files/empty.ndjson", Reply::new(200));
    }
    s.on("/fhir/Binary/p", Reply::new(200).body(PATIENTS));
    let mut config = fast_config(s.url("/fhir"));
    config.bearer = Some(Arc::new(StaticBearer::new("secret").expect("a token")));
    let client = BulkClient::new(config).expect("a client");
    let dir = tempfile::tempdir().expect("a directory");
    let result = export_system(&client, dir.path()).await;
    let file_requests = |server: &Scripted| -> Vec<Option<String>> {
        let seen = server.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|r| r.path.starts_with("/files/") || r.path.starts_with("/fhir/Binary/"))
            .map(|r| r.headers.get("authorization").cloned())
            .collect()
    };
    let (own, other) = (file_requests(&s), file_requests(&cdn));
    let mut problems = Vec::new();
    match (&case.expect, result) {
        (Expect::Refused(reason), Err(e)) => {
            let message = e.to_string();
            if !message.contains(reason) || message.contains('\n') {
                problems.push(format!(
                    "refused with {message:?}, not one line saying {reason:?}"
                ));
            }
            if !own.is_empty() || !other.is_empty() {
                problems.push("a refused manifest's files were downloaded".into());
            }
        }
        (Expect::Refused(reason), Ok(_)) => {
            problems.push(format!("accepted; it should be refused saying {reason:?}"))
        }
        (Expect::Downloaded { .. }, Err(e)) => problems.push(format!("the export failed: {e}")),
        (
            Expect::Downloaded {
                patients,
                other_origin,
            },
            Ok(_),
        ) => {
            let got = content(dir.path());
            let ids: BTreeSet<&str> = got
                .get("Patient")
                .map(|ids| ids.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if ids != patients.iter().copied().collect() {
                problems.push(format!(
                    "downloaded Patients {ids:?}, expected {patients:?}"
                ));
            }
            if let Some(repeated) = got
                .values()
                .flat_map(|ids| ids.iter())
                .find(|(_, lines)| lines.len() > 1)
            {
                problems.push(format!(
                    "{} downloaded {} times",
                    repeated.0,
                    repeated.1.len()
                ));
            }
            let (with, without) = if *other_origin {
                (&other, &own)
            } else {
                (&own, &other)
            };
            if !patients.is_empty() && with.is_empty() {
                problems.push("the file was not fetched where the manifest says".into());
            }
            if !without.is_empty() {
                problems.push("a file was fetched where the manifest does not say".into());
            }
            let token_sent = with.iter().any(|a| a.as_deref() == Some("Bearer secret"));
            if !patients.is_empty() && token_sent == *other_origin {
                problems.push(format!(
                    "token sent: {token_sent}, other origin: {other_origin}"
                ));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_refused_before_any_download_and_odd_ones_handled() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.to_string());
        previous(info);
    }));
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let before = PANICS.lock().unwrap_or_else(|e| e.into_inner()).len();
        let mut problems = tokio::time::timeout(CASE_TIMEOUT, run(case))
            .await
            .unwrap_or_else(|_| vec![format!("no result within {CASE_TIMEOUT:?} (a hang)")]);
        problems.extend(
            PANICS.lock().unwrap_or_else(|e| e.into_inner())[before..]
                .iter()
                .map(|p| format!("panic: {p}")),
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    decided: {}",
                case.kind,
                problems.join("; "),
                case.decided
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
