//! Answers the full test server does not give (bad lines, bare epoch Retry-After, cross-origin
//! redirects, 401s, manifest pages), from a scripted HTTP server over loopback.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Reply, Scripted, export_system, fast_config, recorder};
use fhir_bulk::{
    AuthFailure, BearerSource, BulkClient, BulkError, BulkEvent, ExportOptions, ExportRequest,
    FileEncoding, FileKind, RejectedLine,
};
use futures::future::BoxFuture;
use http::HeaderValue;
use serde_json::json;

fn manifest(
    s: &Scripted,
    output: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut m = json!({
        "transactionTime": "2024-03-01T12:00:00Z",
        "request": s.url("/fhir/$export").to_string(),
        "requiresAccessToken": true,
        "output": output,
        "error": []
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

fn kick_off(s: &Scripted) {
    s.on(
        "/fhir/$export",
        Reply::new(202).header("content-location", "/fhir/status/1"),
    );
    s.on(
        "/fhir/status/1",
        Reply::new(202)
            .header("x-progress", "10%")
            .header("retry-after", "0"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_set_aside_and_good_ones_kept() {
    let s = Scripted::start().await;
    kick_off(&s);
    let long = format!(
        r#"{{"resourceType":"Patient","id":"long","text":"{}"}}"#,
        "x".repeat(3000)
    );
    let long_len = long.len();
    let body = [
        r#"{"resourceType":"Patient","id":"p1"}"#.to_string(),
        r#"{"resourceType":"Patient","id":"p2""#.to_string(),
        r#"{"resourceType":"Observation","id":"o1"}"#.to_string(),
        r#"{"resourceType":"Patient"}"#.to_string(),
        String::new(),
        "{\"resourceType\":\"Patient\",\"id\":\"p3\"}\r".to_string(),
        long,
        r#"{"resourceType":"Patient","id":"p4"}"#.to_string(),
    ]
    .join("\n");
    s.on("/files/p.ndjson", Reply::new(200).body(body));
    s.on(
        "/fhir/status/1",
        Reply::new(200).json(manifest(
            &s,
            json!([{"type": "Patient", "url": s.url("/files/p.ndjson"), "count": 9}]),
            json!({}),
        )),
    );
    s.on("/fhir/status/1", Reply::new(202));
    let (handler, events) = recorder();
    let mut config = fast_config(s.url("/fhir"));
    config.max_line_bytes = 1024;
    config.events = Some(handler);
    let client = BulkClient::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = export_system(&client, dir.path()).await.unwrap();

    let kept = std::fs::read_to_string(dir.path().join("Patient.1.ndjson")).unwrap();
    assert_eq!(
        kept,
        "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\"p3\"}\n{\"resourceType\":\"Patient\",\"id\":\"p4\"}\n"
    );
    let f = &summary.files[0];
    assert_eq!(
        (f.lines, f.rejected_lines, f.expected_count),
        (3, 4, Some(9))
    );
    assert!(f.count_mismatch());
    let rejects: Vec<RejectedLine> = std::fs::read_to_string(f.rejects_path.as_ref().unwrap())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary_of = |r: &RejectedLine| (r.line, r.reason.split(':').next().unwrap().to_string());
    assert_eq!(
        rejects.iter().map(summary_of).collect::<Vec<_>>(),
        vec![
            (2, "invalid JSON".to_string()),
            (
                3,
                "resourceType \"Observation\" does not match the manifest's type \"Patient\""
                    .to_string()
            ),
            (4, "id is missing".to_string()),
            (
                7,
                format!("line is {long_len} bytes, over the limit of 1024 bytes")
            ),
        ]
    );
    assert_eq!(rejects[0].raw, r#"{"resourceType":"Patient","id":"p2""#);
    assert_eq!(rejects[0].file, "Patient.1.ndjson");
    assert!(rejects[3].raw_truncated && rejects[3].raw.len() <= 4096);
    let events = events.lock().unwrap();
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            BulkEvent::Warning { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("manifest count is 9 but 7 lines")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("4 invalid lines")),
        "{warnings:?}"
    );
    assert!(
        events.iter().any(
            |e| matches!(e, BulkEvent::StatusProgress { progress: Some(p), .. } if p == "10%")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_error_files_are_parsed() {
    let s = Scripted::start().await;
    kick_off(&s);
    s.on(
        "/files/p.ndjson",
        Reply::new(200).body("{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"),
    );
    s.on(
        "/files/del.ndjson",
        Reply::new(200).body(
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"request": {"method": "DELETE", "url": "Patient/gone1"}},
                {"request": {"method": "DELETE", "url": "Observation/gone2"}}
            ]})
            .to_string(),
        ),
    );
    s.on(
        "/files/err.ndjson",
        Reply::new(200).body(
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": "Patient/x could not be read"}]})
                .to_string(),
        ),
    );
    s.on(
        "/fhir/status/1",
        Reply::new(200).json(manifest(
            &s,
            json!([{"type": "Patient", "url": s.url("/files/p.ndjson")}]),
            json!({
                "deleted": [{"type": "Bundle", "url": s.url("/files/del.ndjson")}],
                "error": [{"type": "OperationOutcome", "url": s.url("/files/err.ndjson")}]
            }),
        )),
    );
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = ExportRequest {
        since: Some("2024-01-01T00:00:00Z".parse().unwrap()),
        ..ExportRequest::system()
    };
    let summary = client
        .export_to_dir(&req, dir.path(), &ExportOptions::default())
        .await
        .unwrap();
    let deletions: Vec<(String, String)> = summary
        .deletions()
        .map(|d| (d.resource_type.clone(), d.id.clone()))
        .collect();
    assert_eq!(
        deletions,
        vec![
            ("Patient".into(), "gone1".into()),
            ("Observation".into(), "gone2".into())
        ]
    );
    let err = summary
        .files
        .iter()
        .find(|f| f.kind == FileKind::Error)
        .unwrap();
    assert_eq!(err.issues[0].message, "Patient/x could not be read");
    assert!(dir.path().join("deleted/Bundle.1.ndjson").is_file());
    assert!(dir.path().join("error/OperationOutcome.1.ndjson").is_file());
    assert_eq!(summary.resources, 1);
    let kick = &s.requests_to("/fhir/$export")[0];
    assert_eq!(kick.headers["accept"], "application/fhir+json");
    assert_eq!(kick.headers["prefer"], "respond-async");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_epoch_retry_after_is_honoured() {
    let s = Scripted::start().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    s.on(
        "/fhir/$export",
        Reply::new(429).header("retry-after", &(now_ms + 300).to_string()),
    );
    s.on(
        "/fhir/$export",
        Reply::new(202).header("content-location", "status/1"),
    );
    s.on(
        "/fhir/status/1",
        Reply::new(202).header("retry-after", &((now_ms / 1000) as u64 + 1).to_string()),
    );
    s.on(
        "/fhir/status/1",
        Reply::new(200).json(manifest(&s, json!([]), json!({}))),
    );
    let (handler, events) = recorder();
    let mut config = fast_config(s.url("/fhir/"));
    config.events = Some(handler);
    let client = BulkClient::new(config).unwrap();
    let job = client.kick_off(&ExportRequest::system()).await.unwrap();
    assert_eq!(job.status_url, s.url("/fhir/status/1"));
    let m = client.wait_for_manifest(&job).await.unwrap();
    assert!(m.output.is_empty());
    let events = events.lock().unwrap();
    // The epoch forms became delays relative to now (clamped to the poll maximum), not years.
    for e in events.iter() {
        match e {
            BulkEvent::Retry { delay, .. }
            | BulkEvent::StatusProgress {
                next_poll_in: delay,
                ..
            } => {
                assert!(delay.as_millis() <= 1500, "{e:?}")
            }
            _ => {}
        }
    }
    assert!(events.iter().any(|e| matches!(
        e,
        BulkEvent::Retry {
            what: "kick-off",
            ..
        }
    )));
}

/// Tokens `t1`, `t2`, ...: each refresh hands out the next.
struct Counting(AtomicU32);

impl BearerSource for Counting {
    fn token(&self) -> BoxFuture<'_, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move {
            Ok(HeaderValue::from_str(&format!(
                "Bearer t{}",
                self.0.load(Ordering::SeqCst)
            ))?)
        })
    }
    fn refresh<'a>(
        &'a self,
        _rejected: &'a HeaderValue,
    ) -> BoxFuture<'a, Result<HeaderValue, AuthFailure>> {
        Box::pin(async move {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(HeaderValue::from_str(&format!("Bearer t{n}"))?)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_stays_on_the_fhir_origin_and_is_refreshed_on_401() {
    let fhir = Scripted::start().await;
    let cdn = Scripted::start().await;
    fhir.on(
        "/fhir/$export",
        Reply::new(202).header("content-location", "/fhir/status/1"),
    );
    fhir.on("/fhir/status/1", Reply::new(401));
    fhir.on(
        "/fhir/status/1",
        Reply::new(200).json(manifest(
            &fhir,
            json!([
                {"type": "Patient", "url": fhir.url("/files/redirected.ndjson")},
                {"type": "Patient", "url": cdn.url("/direct.ndjson")},
                {"type": "Patient", "url": fhir.url("/files/local.ndjson")}
            ]),
            json!({}),
        )),
    );
    fhir.on(
        "/files/redirected.ndjson",
        Reply::new(307).header("location", cdn.url("/signed.ndjson?sig=abc").as_str()),
    );
    fhir.on(
        "/files/local.ndjson",
        Reply::new(200).body("{\"resourceType\":\"Patient\",\"id\":\"c\"}\n"),
    );
    cdn.on(
        "/signed.ndjson",
        Reply::new(200).body("{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"),
    );
    cdn.on(
        "/direct.ndjson",
        Reply::new(200).body("{\"resourceType\":\"Patient\",\"id\":\"b\"}\n"),
    );
    let mut config = fast_config(fhir.url("/fhir"));
    config.bearer = Some(Arc::new(Counting(AtomicU32::new(1))));
    let client = BulkClient::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = export_system(&client, dir.path()).await.unwrap();
    assert_eq!(summary.resources, 3);

    let auth = |seen: &common::Seen| seen.headers.get("authorization").cloned();
    for seen in cdn.seen.lock().unwrap().iter() {
        assert_eq!(auth(seen), None, "token sent to another origin: {seen:?}");
    }
    let status = fhir.requests_to("/fhir/status/1");
    assert_eq!(auth(&status[0]).as_deref(), Some("Bearer t1"));
    assert_eq!(
        auth(&status[1]).as_deref(),
        Some("Bearer t2"),
        "retried once with the refreshed token"
    );
    assert_eq!(
        auth(&fhir.requests_to("/files/redirected.ndjson")[0]).as_deref(),
        Some("Bearer t2")
    );
    assert_eq!(
        auth(&fhir.requests_to("/files/local.ndjson")[0]).as_deref(),
        Some("Bearer t2")
    );
    assert_eq!(
        auth(&fhir.requests_to("/fhir/$export")[0]).as_deref(),
        Some("Bearer t1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_on_files_unless_required() {
    let fhir = Scripted::start().await;
    kick_off(&fhir);
    fhir.on(
        "/files/p.ndjson",
        Reply::new(200).body("{\"resourceType\":\"Patient\",\"id\":\"a\"}\n"),
    );
    let mut m = manifest(
        &fhir,
        json!([{"type": "Patient", "url": fhir.url("/files/p.ndjson")}]),
        json!({}),
    );
    m["requiresAccessToken"] = json!(false);
    fhir.on("/fhir/status/1", Reply::new(200).json(m));
    let mut config = fast_config(fhir.url("/fhir"));
    config.bearer = Some(Arc::new(fhir_bulk::StaticBearer::new("secret").unwrap()));
    let client = BulkClient::new(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    export_system(&client, dir.path()).await.unwrap();
    assert!(
        !fhir.requests_to("/files/p.ndjson")[0]
            .headers
            .contains_key("authorization")
    );
    assert!(
        fhir.requests_to("/fhir/status/1")[0]
            .headers
            .contains_key("authorization")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_kick_off_is_a_post_with_parameters() {
    let s = Scripted::start().await;
    s.on(
        "/fhir/Group/g1/$export",
        Reply::new(202).header("content-location", "/fhir/status/1"),
    );
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let req = ExportRequest {
        patients: vec!["p1".into()],
        type_filters: vec!["Observation?code=a,b".into()],
        ..ExportRequest::group("g1")
    };
    client.kick_off(&req).await.unwrap();
    let seen = &s.requests_to("/fhir/Group/g1/$export")[0];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["content-type"], "application/fhir+json");
    assert_eq!(seen.headers["prefer"], "respond-async");
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["resourceType"], "Parameters");
    assert!(
        body["parameter"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "patient", "valueReference": {"reference": "Patient/p1"}}))
    );
    assert!(
        body["parameter"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "_typeFilter", "valueString": "Observation?code=a,b"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_manifests_are_followed_and_merged() {
    let s = Scripted::start().await;
    kick_off(&s);
    for name in ["a", "b", "c"] {
        s.on(
            &format!("/files/{name}.ndjson"),
            Reply::new(200).body(format!(
                "{{\"resourceType\":\"Patient\",\"id\":\"{name}\"}}\n"
            )),
        );
    }
    let file = |n: &str| json!([{"type": "Patient", "url": s.url(&format!("/files/{n}.ndjson"))}]);
    s.on(
        "/fhir/status/1",
        Reply::new(200).json(manifest(
            &s,
            file("a"),
            json!({"link": [{"relation": "next", "url": s.url("/fhir/page/2")}]}),
        )),
    );
    // The next page is not ready at first.
    s.on("/fhir/page/2", Reply::new(202).header("retry-after", "0"));
    s.on(
        "/fhir/page/2",
        Reply::new(200).json(manifest(
            &s,
            file("b"),
            json!({"link": [{"relation": "next", "url": "/fhir/page/3"}]}),
        )),
    );
    s.on(
        "/fhir/page/3",
        Reply::new(200).json(manifest(&s, file("c"), json!({}))),
    );
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = ExportRequest {
        allow_partial_manifests: true,
        ..ExportRequest::system()
    };
    let summary = client
        .export_to_dir(&req, dir.path(), &ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.manifest.output.len(), 3);
    assert_eq!(summary.resources, 3);
    assert!(summary.manifest.link.is_empty());
    assert!(s.requests_to("/fhir/$export")[0].method == "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_explained() {
    let s = Scripted::start().await;
    s.on("/fhir/$export", Reply::new(202));
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let err = client.kick_off(&ExportRequest::system()).await.unwrap_err();
    assert!(
        matches!(err, BulkError::MissingContentLocation { .. }),
        "{err}"
    );

    let s = Scripted::start().await;
    kick_off(&s);
    s.on("/fhir/status/1", Reply::new(200).json(json!({"transactionTime": "2024-01-01T00:00:00Z", "request": "x", "output": [{"type": "Patient"}]})));
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export_system(&client, dir.path()).await.unwrap_err();
    assert!(
        err.to_string().contains("output[0].url is missing"),
        "{err}"
    );

    let s = Scripted::start().await;
    s.on(
        "/fhir/$export",
        Reply::new(400).json(json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "_type Foo is not supported"}]})),
    );
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let err = client.kick_off(&ExportRequest::system()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 400: error invalid: _type Foo is not supported"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_up_with_the_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = fast_config(format!("http://127.0.0.1:{port}/fhir").parse().unwrap());
    config.retry.max_retries = 2;
    let client = BulkClient::new(config).unwrap();
    let err = client.kick_off(&ExportRequest::system()).await.unwrap_err();
    assert!(
        matches!(err, BulkError::RetriesExhausted { attempts: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{err}"
    );
}

/// How a file comes when gzip is asked for: compressed in transit, gzip bytes with no
/// `Content-Encoding`, or plain; the request says it takes gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_encoding_is_told_as_sent() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let s = Scripted::start().await;
    let line = b"{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n";
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(line).unwrap();
    let gz = gz.finish().unwrap();
    s.on(
        "/files/transfer",
        Reply::new(200)
            .header("content-encoding", "gzip")
            .body(gz.clone()),
    );
    s.on("/files/bytes", Reply::new(200).body(gz));
    s.on("/files/plain", Reply::new(200).body(line.to_vec()));
    let client = BulkClient::new(fast_config(s.url("/fhir"))).unwrap();
    let encoding = |path: &'static str| {
        let (client, url) = (client.clone(), s.url(path));
        async move { client.file_encoding(&url, true).await }
    };
    assert_eq!(
        encoding("/files/transfer").await.unwrap(),
        FileEncoding::Transfer("gzip".into())
    );
    assert_eq!(
        encoding("/files/bytes").await.unwrap(),
        FileEncoding::GzipBytes
    );
    assert_eq!(encoding("/files/plain").await.unwrap(), FileEncoding::Plain);
    let missing = encoding("/files/none").await.unwrap_err();
    assert!(missing.to_string().contains("404"), "{missing}");
    let asked = s.requests_to("/files/plain");
    assert_eq!(
        asked[0].headers.get("accept-encoding").map(String::as_str),
        Some("gzip")
    );
}
