//! The Aidbox profile: one export at a time on the whole server, `$export-status/<id>`,
//! pre-signed file URLs on another origin, gzip files without `Content-Encoding`, and a
//! system-level manifest without `request`.
mod common;

use std::io::Read;

use bulk_test_server::{DataSource, Origin, Profile, TestServer};
use common::*;
use serde_json::Value;

const DATA: DataSource = DataSource::Synthetic {
    patients: 3,
    seed: 21,
};

async fn aidbox() -> TestServer {
    start_profile(Profile::Aidbox, DATA).await
}

#[tokio::test]
async fn one_export_runs_at_a_time_on_the_whole_server() {
    let server = aidbox().await;
    let c = client();
    let first = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    assert!(first.contains("/$export-status/"), "{first}");
    // Another export, of another level and types, is refused while the first runs.
    let r = kickoff_get(&c, &url(&server, "Patient/$export?_type=Condition")).await;
    assert_eq!(r.status(), 429);
    let _ = manifest(&c, &first).await;
    let second = kickoff_ok(&c, &url(&server, "Patient/$export?_type=Condition")).await;
    assert_ne!(first, second);
    server.shutdown().await;
}

#[tokio::test]
async fn files_are_presigned_on_another_origin_and_the_manifest_has_no_request() {
    let server = aidbox().await;
    let c = client();
    let m = export(&c, &url(&server, "$export?_type=Patient")).await;
    assert!(m.get("request").is_none(), "{m}");
    assert_eq!(m["status"], "completed");
    assert_eq!(m["requiresAccessToken"], false);
    let file = m["output"][0]["url"].as_str().unwrap().to_string();
    assert!(file.starts_with(server.file_origin().as_str()), "{file}");
    assert_ne!(server.file_origin().origin(), server.base_url().origin());
    let with_bearer = c.get(&file).bearer_auth("t").send().await.unwrap();
    assert!(
        with_bearer.status().is_client_error(),
        "{}",
        with_bearer.status()
    );
    let text = download(&c, &file).await;
    assert_eq!(lines(&text).len(), 3);
    let file_requests: Vec<(bool, u16)> = server
        .requests()
        .iter()
        .filter(|r| r.origin == Origin::Files)
        .map(|r| (r.authorization, r.status))
        .collect();
    assert_eq!(file_requests.len(), 2, "{file_requests:?}");
    assert!(file_requests[0].0 && file_requests[0].1 >= 400);
    assert_eq!(file_requests[1], (false, 200));

    // A Patient-level manifest keeps its request.
    let m = export(&c, &url(&server, "Patient/$export?_type=Patient")).await;
    assert!(m["request"].as_str().is_some(), "{m}");
    server.shutdown().await;
}

#[tokio::test]
async fn gzip_output_format_gives_gzip_bytes_without_content_encoding() {
    let server = aidbox().await;
    let c = client();
    let m = export(
        &c,
        &url(
            &server,
            "$export?_type=Patient&_outputFormat=application/fhir%2Bndjson%2Bgzip",
        ),
    )
    .await;
    let file = m["output"][0]["url"].as_str().unwrap();
    let r = c
        .get(file)
        .header("accept-encoding", "identity")
        .header("range", "bytes=5-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no ranges on stored gzip files");
    assert!(r.headers().get("content-encoding").is_none());
    let bytes = r.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .unwrap();
    let patients: Vec<Value> = lines(&text);
    assert_eq!(patients.len(), 3);
    assert!(patients.iter().all(|p| p["resourceType"] == "Patient"));
    server.shutdown().await;

    // The spec profile refuses the format.
    let spec = start(DATA).await;
    let r = kickoff_get(
        &c,
        &url(
            &spec,
            "$export?_outputFormat=application/fhir%2Bndjson%2Bgzip",
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    spec.shutdown().await;
}
