//! Exports whose files the server leaves in a bucket: read through the cloud's object store
//! with its own credentials, never the FHIR token; resumed and reported as HTTP downloads are.
mod common;

use std::collections::BTreeMap;

use bulk_test_server::{DataSource, OutputStore, Profile, ServerConfig, TestServer};
use common::{content, export_system, fast_config, recorder, total_resources};
use fhir_bulk::{BulkClient, BulkEvent, DownloadOptions, ExportRequest};
use futures::StreamExt;
use gcs_emulator::GcsEmulator;

/// A GCS emulator with bucket `exports` and its client settings.
async fn gcs() -> (GcsEmulator, BTreeMap<String, String>) {
    let emulator = GcsEmulator::start().await.unwrap();
    emulator.create_bucket("exports");
    let settings = emulator.client_settings();
    (emulator, settings)
}

/// The Google Cloud Healthcare profile, writing its files to `gs://exports/out`.
async fn gcp_server(settings: &BTreeMap<String, String>) -> TestServer {
    TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 5,
            seed: 8,
        },
        profile: Profile::Gcp,
        output_store: Some(OutputStore {
            url: "gs://exports/out".into(),
            options: settings.clone(),
        }),
        resources_per_file: 25,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_gcs_are_read_with_the_clouds_credentials() {
    let (emulator, settings) = gcs().await;
    let server = gcp_server(&settings).await;
    let dir = tempfile::tempdir().unwrap();
    let (handler, events) = recorder();
    let mut config = fast_config(server.base_url());
    config.storage_options = settings;
    config.events = Some(handler);
    let client = BulkClient::new(config).unwrap();
    let summary = export_system(&client, dir.path()).await.unwrap();

    assert!(
        summary
            .manifest
            .output
            .iter()
            .all(|f| f.url.as_str().starts_with("gs://exports/out/"))
    );
    let got = content(dir.path());
    let expected = server.store().counts();
    assert_eq!(total_resources(&got) as u64, expected.values().sum::<u64>());
    for f in summary.outputs() {
        assert_eq!(f.expected_count, Some(f.lines), "{}", f.name);
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.bytes);
    }
    // Every file came from the bucket: none was asked of the FHIR server.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.path_and_query.starts_with("/files"))
    );
    assert_eq!(emulator.names("exports").len(), summary.files.len());
    let completed = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, BulkEvent::DownloadComplete { .. }))
        .count();
    assert_eq!(completed, summary.files.len());
    server.shutdown().await;
}

/// A client of the emulator's `exports` bucket.
fn bucket(emulator: &GcsEmulator) -> object_store::gcp::GoogleCloudStorage {
    object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_bucket_name("exports")
        .with_service_account_key(emulator.service_account_key())
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_objects_are_read_decoded() {
    use std::io::Write;

    use object_store::ObjectStoreExt;
    let (emulator, settings) = gcs().await;
    let server = gcp_server(&settings).await;
    let mut config = fast_config(server.base_url());
    config.storage_options = settings;
    let client = BulkClient::new(config).unwrap();
    let job = client.kick_off(&ExportRequest::system()).await.unwrap();
    let manifest = client.wait_for_manifest(&job).await.unwrap();
    // The first file stored gzip-compressed, as a bucket may hold it.
    let store = bucket(&emulator);
    let key = object_store::path::Path::from(manifest.output[0].url.path().trim_start_matches('/'));
    let plain = store.get(&key).await.unwrap().bytes().await.unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    store.put(&key, gz.finish().unwrap().into()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let results: Vec<_> = client
        .download(&manifest, dir.path(), DownloadOptions::default())
        .collect()
        .await;
    let files: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let first = files
        .iter()
        .find(|f| f.url == manifest.output[0].url)
        .unwrap();
    assert_eq!(std::fs::read(&first.path).unwrap(), plain.to_vec());
    assert_eq!(first.expected_count, Some(first.lines));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_from_the_bucket_is_reported_gone_with_its_url() {
    let (emulator, settings) = gcs().await;
    let server = gcp_server(&settings).await;
    let mut config = fast_config(server.base_url());
    config.storage_options = settings.clone();
    let client = BulkClient::new(config).unwrap();
    let job = client.kick_off(&ExportRequest::system()).await.unwrap();
    let manifest = client.wait_for_manifest(&job).await.unwrap();
    let gone = manifest.output[0].url.clone();
    // Remove the object behind the first file, as a bucket's lifecycle rule would.
    let store = bucket(&emulator);
    let key = gone.path().trim_start_matches('/');
    object_store::ObjectStoreExt::delete(&store, &object_store::path::Path::from(key))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<_> = client
        .download(&manifest, dir.path(), DownloadOptions::default())
        .collect()
        .await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].url, gone);
    assert!(failures[0].gone, "{:?}", failures[0]);
    assert!(
        failures[0].message.contains(gone.as_str()),
        "{}",
        failures[0].message
    );
    assert_eq!(results.len(), manifest.output.len());
    server.shutdown().await;
}
