//! Kick-off at each level, parameters, errors and manifest shape.
mod common;

use bulk_test_server::{DataSource, ServerConfig, TestServer};
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn system_export_of_synthea_has_every_resource() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let m = export(&c, &url(&server, "$export")).await;
    assert!(m["transactionTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["request"], json!(url(&server, "$export")));
    assert_eq!(m["requiresAccessToken"], json!(false));
    assert_eq!(m["error"], json!([]));
    let all = all_resources(&c, &m).await;
    let total: usize = all.values().map(Vec::len).sum();
    assert_eq!(total, 38_483);
    assert_eq!(all.len(), 19);
    assert_eq!(all["Patient"].len(), 100);
    assert_eq!(all["Observation"].len(), 16_315);
    for r in all.values().flatten() {
        assert!(r["meta"]["lastUpdated"].is_string(), "{r}");
        assert!(r["meta"]["versionId"].is_string(), "{r}");
    }
    let counts = server.store().counts();
    assert_eq!(counts["Observation"], 16_315);
    server.shutdown().await;
}

#[tokio::test]
async fn type_since_and_output_format_parameters() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let m = export(
        &c,
        &url(
            &server,
            "$export?_type=Patient,Condition&_type=Group&_outputFormat=application%2Fndjson",
        ),
    )
    .await;
    let mut types: Vec<&str> = m["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    types.dedup();
    assert_eq!(types, vec!["Condition", "Group", "Patient"]);

    // Everything was loaded before this instant, so a _since after it yields nothing.
    let since = m["transactionTime"].as_str().unwrap().to_string();
    let m2 = export(
        &c,
        &url(
            &server,
            &format!("$export?_since={}", since.replace('+', "%2B")),
        ),
    )
    .await;
    assert_eq!(m2["output"], json!([]));

    for bad in [
        "_outputFormat=text%2Fcsv",
        "_since=yesterday",
        "_type=NotAType",
        "organizeOutputBy=Patient",
        "_typeFilter=Observation%3Fvalue-quantity%3D5",
        "bogus=1",
    ] {
        let r = kickoff_get(&c, &url(&server, &format!("$export?{bad}"))).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/fhir+json")
        );
        let oo: Value = r.json().await.unwrap();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{bad}");
        assert!(oo["issue"][0]["diagnostics"].as_str().unwrap().len() > 10);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn lenient_handling_reports_problems_in_error_files() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let r = c
        .get(url(
            &server,
            "$export?_type=Patient,NotAType&_typeFilter=Patient%3Fbirthdate%3Dgt2000",
        ))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async, handling=lenient")
        .send()
        .await
        .unwrap();
    let status = accepted(&r);
    let m = manifest(&c, &status).await;
    assert_eq!(m["output"].as_array().unwrap().len(), 1);
    assert_eq!(m["output"][0]["count"], 100);
    let errors = m["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["type"], "OperationOutcome");
    let oos = lines(&download(&c, errors[0]["url"].as_str().unwrap()).await);
    assert_eq!(oos.len(), 2);
    assert!(oos.iter().all(|o| o["resourceType"] == "OperationOutcome"));
    assert!(
        oos[0]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("NotAType")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn required_headers_are_enforced() {
    let server = start(DataSource::Empty).await;
    let c = client();
    let u = url(&server, "$export");
    let no_prefer = c
        .get(&u)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .unwrap();
    assert_eq!(no_prefer.status(), 400);
    assert!(no_prefer.text().await.unwrap().contains("respond-async"));
    let no_accept = c
        .get(&u)
        .header("Prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(no_accept.status(), 400);
    assert!(no_accept.text().await.unwrap().contains("Accept"));
    let m = export(&c, &u).await;
    assert_eq!(m["output"], json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn patient_and_group_level_exports_stay_in_the_compartment() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let m = export(
        &c,
        &url(
            &server,
            "Patient/$export?_type=Patient,Observation,Organization,Practitioner,Group",
        ),
    )
    .await;
    let all = all_resources(&c, &m).await;
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        vec!["Observation", "Patient"]
    );
    assert_eq!(all["Patient"].len(), 100);
    assert_eq!(all["Observation"].len(), 16_315);

    let group = server
        .store()
        .get("Group", "NeighborhoodHealthPlan")
        .unwrap();
    let members: Vec<String> = group["member"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["entity"]["reference"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:uuid:")
                .to_string()
        })
        .collect();
    let m = export(&c, &url(&server, "Group/NeighborhoodHealthPlan/$export")).await;
    let all = all_resources(&c, &m).await;
    let mut ids: Vec<String> = all["Patient"]
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut expected = members.clone();
    expected.sort();
    assert_eq!(ids, expected);
    for obs in &all["Observation"] {
        let subject = obs["subject"]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Patient/");
        assert!(members.iter().any(|m| m == subject));
    }

    let r = kickoff_get(&c, &url(&server, "Group/no-such-group/$export")).await;
    assert_eq!(r.status(), 404);
    server.shutdown().await;
}

#[tokio::test]
async fn post_kickoff_with_parameters_and_patient_references() {
    let server = start(DataSource::Synthetic {
        patients: 30,
        seed: 5,
    })
    .await;
    let c = client();
    let body = json!({
        "resourceType": "Parameters",
        "parameter": [
            { "name": "_type", "valueString": "Patient,Observation" },
            { "name": "_outputFormat", "valueString": "application/fhir+ndjson" },
            { "name": "patient", "valueReference": { "reference": "Patient/pat-3" } },
            { "name": "patient", "valueReference": { "reference": "Patient/pat-7" } },
            { "name": "patient", "valueReference": { "reference": "Patient/pat-999" } }
        ]
    });
    let r = c
        .post(url(&server, "Patient/$export"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .header("Content-Type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let m = manifest(&c, r.headers()["content-location"].to_str().unwrap()).await;
    assert_eq!(m["request"], json!(url(&server, "Patient/$export")));
    let all = all_resources(&c, &m).await;
    let pats: Vec<&str> = all["Patient"]
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(pats, vec!["pat-3", "pat-7"]);
    assert!(all["Observation"].iter().all(|o| {
        let s = o["subject"]["reference"].as_str().unwrap();
        s == "Patient/pat-3" || s == "Patient/pat-7"
    }));
    // The unknown patient is reported, not silently dropped.
    let errors = m["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(
        download(&c, errors[0]["url"].as_str().unwrap())
            .await
            .contains("pat-999")
    );

    let bad = c
        .post(url(&server, "$export"))
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    server.shutdown().await;
}

#[tokio::test]
async fn type_filters_and_elements() {
    let server = start(DataSource::Synthea).await;
    let c = client();
    let m = export(
        &c,
        &url(&server, "$export?_type=Patient,Observation&_typeFilter=Patient%3Fgender%3Dfemale,Observation%3Fcategory%3Dlaboratory%26status%3Dfinal"),
    )
    .await;
    let all = all_resources(&c, &m).await;
    assert!(!all["Patient"].is_empty() && all["Patient"].len() < 100);
    assert!(all["Patient"].iter().all(|p| p["gender"] == "female"));
    assert!(!all["Observation"].is_empty() && all["Observation"].len() < 16_315);
    for o in &all["Observation"] {
        assert_eq!(o["status"], "final");
        assert!(o["category"].to_string().contains("\"laboratory\""));
    }

    let m = export(
        &c,
        &url(
            &server,
            "$export?_type=Patient&_elements=gender,Patient.birthDate",
        ),
    )
    .await;
    let all = all_resources(&c, &m).await;
    for p in &all["Patient"] {
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        for k in &keys {
            assert!(
                ["resourceType", "id", "meta", "gender", "birthDate"].contains(k),
                "{k}"
            );
        }
        assert!(p["meta"]["tag"].to_string().contains("SUBSETTED"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn files_are_split_and_jobs_are_limited_and_cancellable() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 20,
            seed: 1,
        },
        resources_per_file: 7,
        max_concurrent_jobs: 1,
        polls_before_complete: 1,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let s1 = kickoff_ok(&c, &url(&server, "$export")).await;
    let busy = kickoff_get(&c, &url(&server, "$export")).await;
    assert_eq!(busy.status(), 429);
    assert!(busy.headers().contains_key("retry-after"));
    let oo: Value = busy.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");

    let del = c.delete(&s1).send().await.unwrap();
    assert_eq!(del.status(), 202);
    assert_eq!(c.get(&s1).send().await.unwrap().status(), 404);

    let m = export(&c, &url(&server, "$export")).await;
    let outputs = m["output"].as_array().unwrap();
    assert!(outputs.iter().all(|o| o["count"].as_u64().unwrap() <= 7));
    let counts = server.store().counts();
    for (ty, n) in &counts {
        let sum: u64 = outputs
            .iter()
            .filter(|o| o["type"] == json!(ty))
            .map(|o| o["count"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, *n, "{ty}");
    }
    let all = all_resources(&c, &m).await;
    assert_eq!(all["Patient"].len(), 20);
    server.shutdown().await;
}

#[tokio::test]
async fn partial_manifests_link_to_the_next_page() {
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthetic {
            patients: 10,
            seed: 2,
        },
        manifest_page_size: 3,
        polls_before_complete: 0,
        retry_after_secs: 0,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let c = client();
    let whole = export(&c, &url(&server, "$export")).await;
    let total = whole["output"].as_array().unwrap().len();
    assert!(total > 3);
    let mut page = export(&c, &url(&server, "$export?allowPartialManifests=true")).await;
    let mut seen = Vec::new();
    loop {
        let out = page["output"].as_array().unwrap();
        assert!(out.len() <= 3);
        seen.extend(out.iter().map(|o| o["type"].clone()));
        match page.get("link") {
            Some(link) => {
                assert_eq!(link[0]["relation"], "next");
                page = manifest(&c, link[0]["url"].as_str().unwrap()).await;
            }
            None => break,
        }
    }
    let expected: Vec<Value> = whole["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].clone())
        .collect();
    assert_eq!(seen, expected);
    server.shutdown().await;
}

#[tokio::test]
async fn capability_statement_and_unknown_paths() {
    let server = start(DataSource::Empty).await;
    let c = client();
    let cap: Value = c
        .get(url(&server, "metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cap["resourceType"], "CapabilityStatement");
    let r = c.get(url(&server, "nothing/here")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    server.shutdown().await;
}

/// POST kick-off naming `patients`; returns the response.
async fn post_with_patients(
    c: &reqwest::Client,
    url: &str,
    patients: &[&str],
) -> reqwest::Response {
    let parameter: Vec<Value> = patients
        .iter()
        .map(|p| json!({ "name": "patient", "valueReference": { "reference": format!("Patient/{p}") } }))
        .collect();
    c.post(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", "respond-async")
        .header("Content-Type", "application/fhir+json")
        .body(json!({ "resourceType": "Parameters", "parameter": parameter }).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_patient_parameter_is_taken_where_the_server_is_set_to_take_it() {
    use bulk_test_server::PatientParameter;
    let data = DataSource::Synthetic {
        patients: 20,
        seed: 8,
    };
    let c = client();
    for (setting, group_ok, patient_ok) in [
        (PatientParameter::PatientAndGroup, true, true),
        (PatientParameter::PatientLevelOnly, false, true),
        (PatientParameter::Refused, false, false),
    ] {
        let server = TestServer::start(ServerConfig {
            patient_parameter: setting,
            ..config(data.clone())
        })
        .await
        .unwrap();
        let group = post_with_patients(&c, &url(&server, "Group/grp-0/$export"), &["pat-0"]).await;
        assert_eq!(group.status() == 202, group_ok, "{setting:?}");
        let patient = post_with_patients(&c, &url(&server, "Patient/$export"), &["pat-0"]).await;
        assert_eq!(patient.status() == 202, patient_ok, "{setting:?}");
        if !group_ok {
            assert_eq!(group.status(), 400);
            let text = group.text().await.unwrap();
            assert!(
                text.contains("patient parameter is not supported"),
                "{text}"
            );
        }
        server.shutdown().await;
    }
}

/// A Group's members are those of the Group resource at the kick-off; with `patient`, only
/// the named ones among them.
#[tokio::test]
async fn group_exports_follow_the_group_resource_and_the_patient_parameter() {
    let server = start(DataSource::Synthetic {
        patients: 20,
        seed: 8,
    })
    .await;
    let c = client();
    let store = server.store();
    let mut group = store.get("Group", "grp-0").unwrap();
    let outsider = "pat-1";
    assert!(!group.to_string().contains(&format!("Patient/{outsider}\"")));
    let absolute = format!("{}/Patient/{outsider}", server.base_url());
    group["member"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "entity": { "reference": absolute } }));
    store.upsert(group).unwrap();

    let r = post_with_patients(
        &c,
        &url(&server, "Group/grp-0/$export"),
        &[outsider, "pat-0"],
    )
    .await;
    assert_eq!(r.status(), 202);
    let m = manifest(&c, r.headers()["content-location"].to_str().unwrap()).await;
    let all = all_resources(&c, &m).await;
    let mut pats: Vec<&str> = all["Patient"]
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    pats.sort();
    assert_eq!(pats, vec!["pat-0", outsider]);
    let read = c
        .get(url(&server, "Group/grp-0"))
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let body: Value = read.json().await.unwrap();
    assert!(body.to_string().contains(&format!("/Patient/{outsider}")));
    server.shutdown().await;
}
