//! `fhirsync view run`: a SQL on FHIR view over synced tables gives the rows the same view
//! gives over the server's resources, read back from the tables by the encoder's decoder.
mod common;

use std::path::Path;
use std::process::Command;

use arrow::array::RecordBatch;
use bulk_test_server::{DataSource, StoreHandle};
use common::{options, run, server};
use fhir_encoder::json::Tape;
use fhir_views::RowBatchBuilder;
use fhirsync::run::RunKind;
use fhirsync::views::{LoadedView, run_over_table};
use serde_json::{Value, json};

fn demographics() -> Value {
    json!({
        "resourceType": "ViewDefinition",
        "name": "patient_demographics",
        "resource": "Patient",
        "status": "active",
        "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "gender", "path": "gender"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {"name": "deceased", "path": "deceased.exists()", "type": "boolean"},
                {"name": "marital_status", "path": "maritalStatus.coding.code.first()"}
            ]},
            {"forEachOrNull": "name.where(use = 'official').first()", "column": [
                {"name": "family", "path": "family"},
                {"name": "given", "path": "given.join(' ')"}
            ]},
            {"column": [{"name": "phones", "path": "telecom.where(system = 'phone').value",
                         "collection": true}]}
        ]
    })
}

fn observations() -> Value {
    json!({
        "name": "observation_values",
        "resource": "Observation",
        "where": [{"path": "value.ofType(Quantity).exists()"}],
        "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).code"}
            ]},
            {"forEach": "code.coding", "column": [
                {"name": "system", "path": "system"},
                {"name": "code", "path": "code"},
                {"name": "row", "path": "%rowIndex", "type": "integer"}
            ]}
        ]
    })
}

/// Synthea's patient extensions: a string, an Address and a decimal.
fn extensions_view() -> Value {
    let sd = "http://hl7.org/fhir/StructureDefinition";
    json!({
        "name": "patient_extensions",
        "resource": "Patient",
        "select": [{"column": [
            {"name": "id", "path": "id"},
            {"name": "mothers_maiden_name",
             "path": format!("extension('{sd}/patient-mothersMaidenName').value.ofType(string)")},
            {"name": "birth_city",
             "path": format!("extension('{sd}/patient-birthPlace').value.ofType(Address).city")},
            {"name": "daly", "type": "decimal",
             "path": "extension('http://synthetichealth.github.io/synthea/disability-adjusted-life-years').value.ofType(decimal)"}
        ]}]
    })
}

/// The view's rows over a synced table, as JSON lines (Arrow's writer).
async fn over_table(delta: &Path, view: &Value) -> anyhow::Result<Vec<Value>> {
    let view = LoadedView::from_json(view)?;
    let mut batches = Vec::new();
    let run = run_over_table(
        &delta.display().to_string(),
        &Default::default(),
        &view,
        &mut |b| {
            batches.push(b);
            Ok(())
        },
    )
    .await?;
    let rows = lines(&batches);
    assert_eq!(run.rows, rows.len() as u64);
    Ok(rows)
}

/// The view's rows over the server's resources of its type, as JSON lines.
fn over_resources(store: &StoreHandle, view: &Value) -> Vec<Value> {
    let view = LoadedView::from_json(view)
        .expect("a valid view")
        .definition;
    let mut builder = RowBatchBuilder::new(&view);
    let mut tape = Tape::default();
    for id in store.ids(&view.resource) {
        let text = store.get(&view.resource, &id).expect("listed").to_string();
        let doc = tape.parse(&text).expect("JSON");
        for row in view.rows(doc).expect("rows") {
            builder.push(&row).expect("row fits");
        }
    }
    lines(&[builder.finish().expect("batch")])
}

fn lines(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = arrow::json::LineDelimitedWriter::new(Vec::new());
    for b in batches {
        out.write(b).expect("JSON");
    }
    out.finish().expect("JSON");
    String::from_utf8(out.into_inner())
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Rows sorted, with decimals at the six places the tables keep (`docs/encoding.md`).
fn canonical(rows: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|mut row| {
            for v in row.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let decimal = v.as_str().filter(|s| s.contains('.'));
                if let Some(d) = decimal.and_then(|s| s.parse::<f64>().ok()) {
                    *v = json!(format!("{d:.6}"));
                }
            }
            row.to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_over_the_tables_equals_the_view_over_the_resources() {
    let server = server(DataSource::Synthea).await;
    let dir = tempfile::tempdir().unwrap();
    run(&options(&server, dir.path()), RunKind::Incremental)
        .await
        .expect("sync");
    for view in [demographics(), observations()] {
        let table = canonical(over_table(dir.path(), &view).await.expect("view run"));
        let resources = canonical(over_resources(&server.store(), &view));
        assert!(
            table.len() >= 100,
            "{} rows of {}",
            table.len(),
            view["name"]
        );
        assert_eq!(table.len(), resources.len(), "{}", view["name"]);
        for (t, r) in table.iter().zip(&resources) {
            assert_eq!(t, r, "{}", view["name"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_of_extensions_needs_tables_that_keep_them() {
    let server = server(DataSource::Synthea).await;
    let plain = tempfile::tempdir().unwrap();
    run(&options(&server, plain.path()), RunKind::Incremental)
        .await
        .expect("sync");
    let error = over_table(plain.path(), &extensions_view())
        .await
        .expect_err("refused");
    let message = format!("{error:#}");
    assert!(message.contains("--extensions"), "{message}");

    let with = tempfile::tempdir().unwrap();
    let mut opts = options(&server, with.path());
    opts.extensions = true;
    run(&opts, RunKind::Incremental).await.expect("sync");
    let table = canonical(
        over_table(with.path(), &extensions_view())
            .await
            .expect("view run"),
    );
    let resources = canonical(over_resources(&server.store(), &extensions_view()));
    assert_eq!(table, resources);
    assert!(
        table
            .iter()
            .all(|r| r.contains("mothers_maiden_name") && r.contains("birth_city"))
    );
}

fn fhirsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fhirsync"))
        .args(args)
        .env_remove("DELTA_PATH")
        .output()
        .expect("fhirsync runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn view_run_writes_each_format_and_refuses_what_cannot_work() {
    let server = server(DataSource::Synthea).await;
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("lake");
    run(&options(&server, &delta), RunKind::Incremental)
        .await
        .expect("sync");
    let delta = delta.display().to_string();
    let patients = server.store().ids("Patient").len();
    // `fhirsync view run <view> --delta-path <lake> <args>`; the view is written to a file.
    let view_run = |view: &Value, args: &[&str]| {
        let file = dir.path().join("view.json");
        std::fs::write(&file, view.to_string()).unwrap();
        let file = file.display().to_string();
        fhirsync(&[&["view", "run", &file, "--delta-path", &delta], args].concat())
    };
    let succeeded = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let refused = |out: &std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let ndjson = dir.path().join("out.ndjson").display().to_string();
    succeeded(&view_run(
        &demographics(),
        &["--format", "ndjson", "--output", &ndjson],
    ));
    let written = std::fs::read_to_string(&ndjson).unwrap();
    assert_eq!(written.lines().count(), patients);

    let parquet = dir.path().join("out.parquet").display().to_string();
    succeeded(&view_run(
        &demographics(),
        &["--format", "parquet", "--output", &parquet],
    ));
    let file = std::fs::File::open(&parquet).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, patients);

    let out = view_run(&demographics(), &[]);
    succeeded(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| id ") && table.contains("marital_status"),
        "{table}"
    );

    // A collection column cannot be CSV; the message names the column and the way out.
    let stderr = refused(&view_run(&demographics(), &["--format", "csv"]));
    assert!(
        stderr.contains("phones") && stderr.contains("--format ndjson"),
        "{stderr}"
    );

    // An invalid view is refused before anything runs, naming the element.
    let mut bad = demographics();
    bad["select"][1]["column"][0]["path"] = json!("family.nope()");
    let stderr = refused(&view_run(&bad, &[]));
    assert!(
        stderr.contains("select[1].column[0].path") && stderr.contains("nope"),
        "{stderr}"
    );

    // A type the lake has no table of.
    let mut other = demographics();
    other["resource"] = json!("Immunization");
    let stderr = refused(&view_run(&other, &[]));
    assert!(stderr.contains("no Immunization table"), "{stderr}");
}

/// The rows of the view table `name` (its own columns only), read by Python's `deltalake`,
/// an independent reader; `None` when it is not installed (outside CI).
fn view_in_python(delta: &Path, name: &str) -> Option<Vec<Value>> {
    if !common::python_reader() {
        return None;
    }
    let script = r#"
import json, sys
from deltalake import DeltaTable, QueryBuilder
dt = DeltaTable(sys.argv[1])
if "deletionVectors" in (dt.protocol().reader_features or []):
    import pyarrow
    rows = pyarrow.table(QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all())
else:
    rows = dt.to_pyarrow_table()
hidden = {"_resource_key", "_resource_meta", "_placeholder"}
for row in rows.to_pylist():
    print(json.dumps({k: v for k, v in row.items() if k not in hidden and v is not None}, default=str))
import os
os._exit(0)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(delta.join("views").join(name))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    Some(rows)
}

/// The view's rows as `fhirsync query` sees them (without the hidden columns).
async fn view_in_query(delta: &Path, name: &str) -> Vec<Value> {
    let batches = common::sql(delta, &format!("SELECT * FROM {name}")).await;
    lines(&batches)
}

/// Rows compared as sorted JSON texts, null members left out (Python's rows list them).
fn sorted(rows: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .into_iter()
        .map(|mut r| {
            if let Some(o) = r.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            r.to_string()
        })
        .collect();
    out.sort();
    out
}

/// Each view kept by the sync equals the view run from scratch over the server's resources.
async fn assert_views_current(delta: &Path, store: &StoreHandle, views: &[Value], when: &str) {
    for view in views {
        let name = view["name"].as_str().expect("named");
        let expected = sorted(over_resources(store, view));
        let kept = sorted(view_in_query(delta, name).await);
        assert_eq!(kept.len(), expected.len(), "{name} {when}: row count");
        assert_eq!(kept, expected, "{name} {when}");
        if let Some(python) = view_in_python(delta, name) {
            assert_eq!(sorted(python), expected, "{name} {when}, read by Python");
        }
    }
}

fn write_views(dir: &Path, views: &[Value]) -> Vec<std::path::PathBuf> {
    views
        .iter()
        .map(|v| {
            let path = dir.join(format!("{}.json", v["name"].as_str().expect("named")));
            std::fs::write(&path, v.to_string()).expect("view written");
            path
        })
        .collect()
}

async fn keeps_views_current(deletion_vectors: bool) {
    let server = server(DataSource::Synthea).await;
    let store = server.store();
    let dir = tempfile::tempdir().unwrap();
    let delta = dir.path().join("lake");
    let views = [demographics(), observations(), extensions_view()];
    let mut opts = options(&server, &delta);
    opts.deletion_vectors = deletion_vectors;
    // Extensions are not encoded: the views are computed from the resources as they arrive.
    opts.views = write_views(dir.path(), &views);
    let report = run(&opts, RunKind::Incremental).await.expect("first sync");
    assert_eq!(report.views.len(), 3, "{:?}", report.views);
    assert_views_current(&delta, &store, &views, "after the first sync").await;

    // Updates (more rows, fewer rows, none), inserts and deletes on the server.
    let patients = store.ids("Patient");
    let mut p = store.get("Patient", &patients[0]).unwrap();
    p["gender"] = json!("other");
    p["name"] = json!([{"use": "official", "family": "Changed", "given": ["A", "B"]}]);
    p["telecom"] = json!([{"system": "phone", "value": "1"}, {"system": "phone", "value": "2"}]);
    store.upsert(p).unwrap();
    let mut p = store.get("Patient", &patients[1]).unwrap();
    p.as_object_mut().unwrap().remove("name");
    p.as_object_mut().unwrap().remove("extension");
    store.upsert(p).unwrap();
    store.delete("Patient", &patients[2]);
    store
        .upsert(
            json!({"resourceType": "Patient", "id": "new-patient", "gender": "female",
            "name": [{"use": "official", "family": "New", "given": ["N"]}]}),
        )
        .unwrap();
    let o = store
        .ids("Observation")
        .into_iter()
        .filter_map(|id| store.get("Observation", &id))
        .find(|o| o.get("valueQuantity").is_some())
        .expect("an Observation with a Quantity");
    let o_id = o["id"].as_str().unwrap().to_owned();
    let mut o2 = o.clone();
    o2["code"]["coding"] = json!([
        {"system": "http://loinc.org", "code": "1-1"},
        {"system": "http://loinc.org", "code": "2-2"},
        {"system": "http://snomed.info/sct", "code": "3"}
    ]);
    store.upsert(o2).unwrap();
    let o = common::resource_of(&store, "Observation", &patients[4]);
    store.delete("Observation", o["id"].as_str().unwrap());
    let report = run(&opts, RunKind::Incremental)
        .await
        .expect("incremental sync");
    let names: Vec<&String> = report.views.keys().collect();
    assert_eq!(
        names,
        [
            "observation_values",
            "patient_demographics",
            "patient_extensions"
        ]
    );
    for (name, v) in &report.views {
        assert!(
            !v.rebuilt,
            "{name} was rebuilt instead of kept current: {v:?}"
        );
    }
    assert_views_current(&delta, &store, &views, "after an incremental sync").await;
    let kept = view_in_query(&delta, "observation_values").await;
    assert_eq!(kept.iter().filter(|r| r["id"] == json!(o_id)).count(), 3);

    // A view added later is built from the table; a changed one is rebuilt.
    let mut changed = demographics();
    changed["select"][0]["column"][1]["path"] = json!("iif(gender = 'female', 'F', 'not F')");
    let later = json!({"name": "patient_links", "resource": "Patient", "select": [
        {"forEach": "link", "column": [{"name": "other", "path": "other.getReferenceKey(Patient)"}]},
        {"column": [{"name": "id", "path": "id"}]}
    ]});
    let views = [changed, observations(), extensions_view(), later];
    opts.views = write_views(dir.path(), &views);
    // Reconciliation: a patient gone from the server without a deletion record.
    store.delete("Patient", &patients[5]);
    let report = run(&opts, RunKind::FullRefresh)
        .await
        .expect("full refresh");
    assert!(report.views["patient_demographics"].rebuilt);
    assert!(report.views["patient_links"].rebuilt);
    assert!(!report.views["observation_values"].rebuilt);
    assert_views_current(&delta, &store, &views, "after a full refresh").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn views_are_kept_current_by_the_sync() {
    keeps_views_current(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn views_are_kept_current_by_the_sync_with_deletion_vectors() {
    keeps_views_current(true).await;
}
