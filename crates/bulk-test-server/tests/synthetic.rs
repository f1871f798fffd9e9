//! Synthetic data: deterministic, references that resolve, FHIR shapes clients must handle.
mod common;

use std::collections::{BTreeMap, HashSet};

use bulk_test_server::DataSource;
use common::*;
use serde_json::Value;

async fn everything(seed: u64, patients: usize) -> BTreeMap<String, Vec<Value>> {
    let server = start(DataSource::Synthetic { patients, seed }).await;
    let c = client();
    let m = export(&c, &url(&server, "$export")).await;
    let all = all_resources(&c, &m).await;
    server.shutdown().await;
    all
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_data() {
    let a = everything(11, 12).await;
    let b = everything(11, 12).await;
    let c = everything(12, 12).await;
    // Everything but meta.lastUpdated (the server's load time) is identical.
    let strip = |m: &BTreeMap<String, Vec<Value>>| {
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.iter()
                        .map(|r| {
                            let mut r = r.clone();
                            r["meta"] = Value::Null;
                            r
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_ne!(strip(&a), strip(&c));
}

#[tokio::test]
async fn references_resolve_and_shapes_vary() {
    let all = everything(21, 25).await;
    for ty in [
        "Patient",
        "Encounter",
        "Observation",
        "Organization",
        "Practitioner",
        "Group",
    ] {
        assert!(all.contains_key(ty), "{ty}");
    }
    assert_eq!(all["Patient"].len(), 25);
    let ids: HashSet<String> = all
        .iter()
        .flat_map(|(ty, rs)| {
            rs.iter()
                .map(move |r| format!("{ty}/{}", r["id"].as_str().unwrap()))
        })
        .collect();
    let mut refs = 0;
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("reference") {
                    out.push(r.clone());
                }
                o.values().for_each(|x| collect(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    for r in all.values().flatten() {
        let mut out = Vec::new();
        collect(r, &mut out);
        for reference in out {
            assert!(ids.contains(&reference), "dangling {reference}");
            refs += 1;
        }
    }
    assert!(refs > 500);
    let text: String = all
        .values()
        .flatten()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "valueQuantity",
        "valueCodeableConcept",
        "deceasedBoolean",
        "onsetDateTime",
        "onsetPeriod",
        "\"extension\"",
        "effectivePeriod",
        "component",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    // Decimals that only survive when kept exactly (more than 12 significant digits).
    let long = all["Observation"]
        .iter()
        .filter_map(|o| o["valueQuantity"]["value"].as_f64())
        .filter(|v| format!("{v}").len() > 14)
        .count();
    assert!(long > 0);
    // Instants with offsets other than Z.
    assert!(text.contains("-05:00\"") || text.contains("+05:30\""));
    let per_patient = text.len() / 25;
    assert!(
        (6_000..30_000).contains(&per_patient),
        "{per_patient} bytes per patient"
    );
}

#[tokio::test]
async fn synthetic_groups_export_their_members() {
    let server = start(DataSource::Synthetic {
        patients: 10,
        seed: 2,
    })
    .await;
    let c = client();
    let group = server.store().get("Group", "grp-1").unwrap();
    let members: Vec<&str> = group["member"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["entity"]["reference"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        vec![
            "Patient/pat-1",
            "Patient/pat-3",
            "Patient/pat-5",
            "Patient/pat-7",
            "Patient/pat-9"
        ]
    );
    let m = export(&c, &url(&server, "Group/grp-1/$export?_type=Patient,Condition,Encounter&_typeFilter=Encounter%3Fstatus%3Dfinished")).await;
    let all = all_resources(&c, &m).await;
    let pats: Vec<&str> = all["Patient"]
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pats, vec!["pat-1", "pat-3", "pat-5", "pat-7", "pat-9"]);
    for e in &all["Encounter"] {
        assert!(members.contains(&e["subject"]["reference"].as_str().unwrap()));
    }
    server.shutdown().await;
}
