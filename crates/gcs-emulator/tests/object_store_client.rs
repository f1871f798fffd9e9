//! The emulator as `object_store`'s GCS client sees it: object_store's own conformance checks
//! for GCS (those its CI runs against real GCS), then the conditional writes Delta commits
//! rely on.
//!
//! object_store 0.13.2 sends copies with their precondition inverted (`copy` asks
//! `x-goog-if-generation-match: 0`, `copy_if_not_exists` asks nothing; fixed upstream in
//! apache/arrow-rs-object-store#713), so its copy checks cannot pass against real GCS or a
//! faithful emulator: copies are checked here at the HTTP level instead.
use gcs_emulator::GcsEmulator;
use object_store::gcp::{GoogleCloudStorage, GoogleCloudStorageBuilder};
use object_store::integration::*;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode};

/// A client of bucket `name` (which need not exist) on the emulator.
fn client(emulator: &GcsEmulator, name: &str) -> GoogleCloudStorage {
    let settings = emulator.client_settings();
    settings
        .iter()
        .fold(
            GoogleCloudStorageBuilder::new().with_bucket_name(name),
            |b, (k, v)| b.with_config(k.to_ascii_lowercase().parse().unwrap(), v),
        )
        .build()
        .expect("client for the emulator")
}

/// A client of bucket `name`, created first.
async fn bucket(emulator: &GcsEmulator, name: &str) -> GoogleCloudStorage {
    emulator.create_bucket(name);
    client(emulator, name)
}

#[tokio::test]
async fn object_stores_gcs_conformance_checks_pass() {
    let emulator = GcsEmulator::start().await.unwrap();
    let store = bucket(&emulator, "conformance").await;
    put_get_delete_list(&store).await;
    list_with_offset_exclusivity(&store).await;
    list_uses_directories_correctly(&store).await;
    list_with_delimiter(&store).await;
    stream_get(&store).await;
    multipart(&store, &store).await;
    multipart_race_condition(&store, true).await;
    multipart_out_of_order(&store).await;
    list_paginated(&store, &store).await;
    get_opts(&store).await;
    put_opts(&store, true).await;
    put_get_attributes(&store).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn create_if_absent_refuses_a_second_writer() {
    let emulator = GcsEmulator::start().await.unwrap();
    let store = bucket(&emulator, "b").await;
    let path = Path::from("_delta_log/00000000000000000000.json");
    store
        .put_opts(&path, "first".into(), PutMode::Create.into())
        .await
        .unwrap();
    let err = store
        .put_opts(&path, "second".into(), PutMode::Create.into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
    let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept.as_ref(), b"first");
    // The same guard on copies, as GCS answers them.
    store.put(&Path::from("tmp"), "x".into()).await.unwrap();
    let copy = |guard: bool| {
        let mut req = reqwest::Client::new()
            .put(format!(
                "{}/b/_delta_log%2F00000000000000000000.json",
                emulator.base_url()
            ))
            .header("x-goog-copy-source", "b/tmp");
        if guard {
            req = req.header("x-goog-if-generation-match", "0");
        }
        req.send()
    };
    assert_eq!(copy(true).await.unwrap().status(), 412);
    let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept.as_ref(), b"first");
    assert_eq!(copy(false).await.unwrap().status(), 200);
    let copied = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(copied.as_ref(), b"x");
    assert_eq!(
        emulator.names("b"),
        ["_delta_log/00000000000000000000.json", "tmp"]
    );
}

#[tokio::test]
async fn unknown_buckets_are_not_found() {
    let emulator = GcsEmulator::start().await.unwrap();
    let store = bucket(&emulator, "here").await;
    let other = client(&emulator, "elsewhere");
    let err = other.get(&Path::from("x")).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    let err = other.put(&Path::from("x"), "y".into()).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    let err = store.delete(&Path::from("missing")).await.unwrap_err();
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
}
