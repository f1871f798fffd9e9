//! Any bytes as a completion manifest: never a panic; a refusal is one line naming where the
//! manifest came from; an accepted manifest names only http(s) files, each once, laid out
//! inside the output directory, and round-trips through its own serialization.
#![no_main]
use std::collections::HashSet;

use fhir_bulk::{BulkError, Manifest, plan};
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let source = Url::parse("http://127.0.0.1:9/fhir/status/1").expect("a URL");
    let manifest = match Manifest::parse(data, &source) {
        Ok(m) => m,
        Err(BulkError::InvalidManifest { url, message }) => {
            assert_eq!(url, source);
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{message:?}"
            );
            return;
        }
        Err(other) => panic!("not an InvalidManifest: {other}"),
    };
    let mut again = Manifest::parse(&serde_json::to_vec(&manifest).expect("serializes"), &source)
        .expect("an accepted manifest parses again");
    // The extension is carried, not read: its floats may come back a last digit apart (JSON
    // numbers are parsed fast rather than exactly).
    again.extension.clone_from(&manifest.extension);
    assert_eq!(again, manifest);
    let _ = manifest.announced_resources();

    let mut urls = HashSet::new();
    let mut names = HashSet::new();
    for f in plan(&manifest) {
        assert!(matches!(f.url.scheme(), "http" | "https"), "{}", f.url);
        let (dir, file) = f.name.rsplit_once('/').unwrap_or(("", &f.name));
        assert!(matches!(dir, "" | "deleted" | "error"), "{}", f.name);
        assert!(
            !file.starts_with('.') && file.ends_with(".ndjson"),
            "{}",
            f.name
        );
        assert!(names.insert(f.name.clone()), "{} twice", f.name);
        assert!(
            urls.insert((dir.to_string(), f.url.clone())),
            "{} twice",
            f.url
        );
    }
    // The same files as a second page of a partial manifest: nothing new to download.
    let mut merged = manifest.clone();
    merged
        .merge_page(manifest.clone())
        .expect("the same files again");
    assert_eq!(plan(&merged), plan(&manifest));
});
