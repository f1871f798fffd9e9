//! `_since` exports after store mutations: changed resources, deletions, transactionTime.
mod common;

use bulk_test_server::DataSource;
use common::*;
use serde_json::json;

fn since_param(m: &serde_json::Value) -> String {
    m["transactionTime"].as_str().unwrap().replace('+', "%2B")
}

#[tokio::test]
async fn since_export_has_only_changes_and_deletions() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let full = export(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    let store = server.store();
    let before = store.counts();

    let pid = store.ids("Patient")[0].clone();
    let mut patient = store.get("Patient", &pid).unwrap();
    assert_eq!(patient["meta"]["versionId"], "1");
    patient["gender"] = json!("other");
    let stored = store.upsert(patient).unwrap();
    assert_eq!(stored["meta"]["versionId"], "2");
    let new = store
        .upsert(json!({"resourceType": "Observation", "id": "new-obs", "status": "final", "code": {"text": "x"}, "subject": {"reference": format!("Patient/{pid}")}}))
        .unwrap();
    assert_eq!(new["meta"]["versionId"], "1");
    let gone = store.ids("Observation")[5].clone();
    assert!(store.delete("Observation", &gone));
    assert!(!store.delete("Observation", &gone));
    assert!(!store.delete("Observation", "never-existed"));
    assert_eq!(store.counts()["Observation"], before["Observation"]);

    let inc = export(
        &c,
        &url(
            &server,
            &format!(
                "$export?_type=Patient,Observation&_since={}",
                since_param(&full)
            ),
        ),
    )
    .await;
    assert!(inc["transactionTime"].as_str().unwrap() > full["transactionTime"].as_str().unwrap());
    let all = all_resources(&c, &inc).await;
    assert_eq!(all["Patient"].len(), 1);
    assert_eq!(all["Patient"][0]["gender"], "other");
    assert_eq!(all["Patient"][0]["meta"]["versionId"], "2");
    assert_eq!(all["Observation"].len(), 1);
    assert_eq!(all["Observation"][0]["id"], "new-obs");
    let deleted = inc["deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["type"], "Bundle");
    let bundles = lines(&download(&c, deleted[0]["url"].as_str().unwrap()).await);
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0]["type"], "transaction");
    assert_eq!(
        bundles[0]["entry"][0]["request"],
        json!({"method": "DELETE", "url": format!("Observation/{gone}")})
    );

    // A full export reflects the changes and has no deleted[].
    let again = export(&c, &url(&server, "$export?_type=Patient,Observation")).await;
    assert!(again.get("deleted").is_none());
    let all = all_resources(&c, &again).await;
    assert_eq!(all["Observation"].len() as u64, before["Observation"]);
    assert!(all["Observation"].iter().all(|o| o["id"] != json!(gone)));
    let p = all["Patient"]
        .iter()
        .find(|p| p["id"] == json!(pid))
        .unwrap();
    assert_eq!(p["gender"], "other");

    // Nothing changed since the last export.
    let none = export(
        &c,
        &url(&server, &format!("$export?_since={}", since_param(&again))),
    )
    .await;
    assert_eq!(none["output"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn changes_after_kickoff_wait_for_the_next_export() {
    let server = start(DataSource::Synthetic {
        patients: 5,
        seed: 4,
    })
    .await;
    let c = client();
    let status = kickoff_ok(&c, &url(&server, "$export?_type=Patient")).await;
    // Made after the kick-off: not part of this export (its transactionTime is earlier).
    let mut p = server.store().get("Patient", "pat-0").unwrap();
    p["active"] = json!(false);
    server.store().upsert(p).unwrap();
    let m = manifest(&c, &status).await;
    let all = all_resources(&c, &m).await;
    let p0 = all["Patient"].iter().find(|p| p["id"] == "pat-0").unwrap();
    assert!(p0.get("active").is_none());
    let inc = export(
        &c,
        &url(&server, &format!("$export?_since={}", since_param(&m))),
    )
    .await;
    let all = all_resources(&c, &inc).await;
    assert_eq!(all["Patient"].len(), 1);
    assert_eq!(all["Patient"][0]["active"], false);
    server.shutdown().await;
}

#[tokio::test]
async fn patient_level_deletions_and_until() {
    let server = start(DataSource::Synthetic {
        patients: 5,
        seed: 4,
    })
    .await;
    let c = client();
    let full = export(&c, &url(&server, "Patient/$export")).await;
    let store = server.store();
    assert!(store.delete("Encounter", "enc-1-0"));
    assert!(store.delete("Organization", "org-0"));
    let inc = export(
        &c,
        &url(
            &server,
            &format!("Patient/$export?_since={}", since_param(&full)),
        ),
    )
    .await;
    let bundles = lines(&download(&c, inc["deleted"][0]["url"].as_str().unwrap()).await);
    // The Organization is outside every patient compartment.
    assert_eq!(bundles.len(), 1);
    assert_eq!(
        bundles[0]["entry"][0]["request"]["url"],
        "Encounter/enc-1-0"
    );

    let sys = export(
        &c,
        &url(&server, &format!("$export?_since={}", since_param(&full))),
    )
    .await;
    let bundles = lines(&download(&c, sys["deleted"][0]["url"].as_str().unwrap()).await);
    assert_eq!(bundles.len(), 2);

    // _until before the data was loaded: nothing.
    let r = export(&c, &url(&server, "$export?_until=2001-01-01T00:00:00Z")).await;
    assert_eq!(r["output"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn directory_data_keeps_its_meta_and_skips_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.ndjson"),
        concat!(
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"7","lastUpdated":"2020-01-01T00:00:00Z"}}"#, "\n",
            "not json\n",
            r#"{"resourceType":"Observation","id":"o1","status":"final","subject":{"reference":"Patient/p1"}}"#, "\n",
        ),
    )
    .unwrap();
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(br#"{"resourceType":"Patient","id":"p2","gender":"female"}"#)
            .unwrap();
        e.finish().unwrap()
    };
    std::fs::write(dir.path().join("more.ndjson.gz"), gz).unwrap();
    let server = start(DataSource::Dir(dir.path().to_path_buf())).await;
    assert_eq!(
        server.store().counts().into_iter().collect::<Vec<_>>(),
        vec![("Observation".to_string(), 1), ("Patient".to_string(), 2)]
    );
    let c = client();
    let m = export(&c, &url(&server, "$export?_since=2021-01-01T00:00:00Z")).await;
    let all = all_resources(&c, &m).await;
    assert_eq!(all["Patient"].len(), 1);
    assert_eq!(all["Patient"][0]["id"], "p2");
    let m = export(
        &c,
        &url(&server, "Patient/$export?_type=Patient,Observation"),
    )
    .await;
    let all = all_resources(&c, &m).await;
    assert_eq!(all["Observation"][0]["id"], "o1");
    let p1 = all["Patient"].iter().find(|p| p["id"] == "p1").unwrap();
    assert_eq!(p1["meta"]["versionId"], "7");
    server.shutdown().await;
}
