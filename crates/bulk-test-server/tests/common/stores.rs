//! Output stores for the cloud profiles: the in-process GCS emulator, Azurite
//! (`FHIRSYNC_TEST_AZURITE_URL`) and the S3 server `.ci/run` starts
//! (`FHIRSYNC_TEST_S3_ENDPOINT`), and reading back what the server wrote there.
use std::collections::BTreeMap;

use bulk_test_server::{DataSource, OutputStore, Profile, ServerConfig, TestServer};
use gcs_emulator::GcsEmulator;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// A GCS emulator with bucket `exports`, and an output store in it.
pub async fn gcs() -> (GcsEmulator, OutputStore) {
    let emulator = GcsEmulator::start().await.unwrap();
    emulator.create_bucket("exports");
    let store = OutputStore {
        url: format!("gs://exports/{}", uuid::Uuid::new_v4()),
        options: emulator.client_settings(),
    };
    (emulator, store)
}

/// Whether a test that needs the service named by `var` runs; prints why not (and fails in
/// CI, where `.ci/run` starts the service).
pub fn service(var: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{var} must be set in CI");
    println!("skipped: {var} not set");
    false
}

/// A server with the test settings of [`super::config`], this profile and output store.
pub async fn start_with_store(
    profile: Profile,
    data: DataSource,
    store: OutputStore,
    resources_per_file: usize,
) -> TestServer {
    TestServer::start(ServerConfig {
        profile,
        output_store: Some(store),
        resources_per_file,
        ..super::config(data)
    })
    .await
    .unwrap()
}

/// An output store in Azurite's `fhirsync-test` container (emulator mode from the
/// environment `.ci/run` sets).
pub fn azurite() -> Option<OutputStore> {
    service("FHIRSYNC_TEST_AZURITE_URL").then(|| OutputStore {
        url: format!("az://fhirsync-test/exports-{}", uuid::Uuid::new_v4()),
        options: BTreeMap::from([("azure_storage_use_emulator".into(), "true".into())]),
    })
}

/// An output store in the S3 server's `fhirsync-test` bucket (credentials and endpoint from
/// the environment `.ci/run` sets).
pub fn s3() -> Option<OutputStore> {
    service("FHIRSYNC_TEST_S3_ENDPOINT").then(|| OutputStore {
        url: format!("s3://fhirsync-test/exports-{}", uuid::Uuid::new_v4()),
        options: BTreeMap::new(),
    })
}

/// The text of a file the server listed by a `gs://` or `s3://` URL, read with the store's
/// settings (and the environment).
pub async fn read_bucket_file(store: &OutputStore, url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    let mut options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    options.extend(store.options.clone());
    let (objects, path) = object_store::parse_url_opts(&parsed, options).unwrap();
    read(&*objects, &path).await
}

/// The text of a blob the server listed by its emulator URL
/// (`<address>/devstoreaccount1/<container>/<blob>`).
pub async fn read_blob(url: &str) -> String {
    let address = std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap();
    let rest = url
        .strip_prefix(&format!("{address}/devstoreaccount1/"))
        .unwrap();
    let (container, blob) = rest.split_once('/').unwrap();
    let objects = MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_container_name(container)
        .build()
        .unwrap();
    read(&objects, &Path::parse(blob).unwrap()).await
}

async fn read(objects: &dyn ObjectStore, path: &Path) -> String {
    let bytes = objects.get(path).await.unwrap().bytes().await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}
