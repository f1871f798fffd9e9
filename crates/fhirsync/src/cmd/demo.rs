use std::path::PathBuf;

use anyhow::Context;
use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::{ResourceTypeArgs, SyncOptions};
use fhirsync::logging::LogMode;
use fhirsync::run::RunKind;
use fhirsync::sync;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help("to sync", "all 19 types of the bundled Synthea export")
))]
pub struct Args {
    /// Where the demo's Delta tables go (replaced on every run)
    #[arg(long, value_name = "DIR", default_value = "fhirsync-demo")]
    pub delta_path: PathBuf,

    #[command(flatten)]
    pub types: ResourceTypeArgs,
}

/// The marker that makes a directory safe for the demo to wipe.
const MARKER: &str = ".fhirsync-demo";

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    let dir = &args.delta_path;
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            anyhow::bail!(
                "{} exists and was not made by `fhirsync demo`; choose another --delta-path",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "made by `fhirsync demo`; safe to delete\n",
    )?;

    println!(
        "== starting the built-in Bulk Data server with the bundled Synthea export (100 patients)"
    );
    let server = TestServer::start(ServerConfig {
        data: DataSource::Synthea,
        polls_before_complete: 1,
        retry_after_secs: 1,
        resources_per_file: 5_000,
        ..ServerConfig::default()
    })
    .await?;
    let store = server.store();
    println!("   {}", server.base_url());

    let mut opts = SyncOptions::new(server.base_url(), dir.display().to_string());
    opts.resource_types = match args.types.resolve()? {
        Some(t) => t,
        None => store.counts().into_keys().collect(),
    };
    let with_view = opts.resource_types.iter().any(|t| t == "Patient");
    if with_view {
        let path = dir.join("patient_demographics.view.json");
        std::fs::write(&path, serde_json::to_string_pretty(&demographics_view())?)?;
        println!(
            "   a SQL on FHIR view kept with the tables: {}",
            path.display()
        );
        opts.views = vec![path];
    }

    println!("\n== first sync: a full export into {}", dir.display());
    let report = sync::run_sync(
        &opts,
        RunKind::Incremental,
        sync::client_config(&opts, mode).await?,
        CancellationToken::new(),
    )
    .await?;
    super::sync::print_report(&report, false)?;
    let patients = store.ids("Patient");
    let changed = patients
        .first()
        .context("the demo data has no patients")?
        .clone();
    let view_sql = format!(
        "SELECT id, gender, birth_date, family, given FROM patient_demographics \
         WHERE id IN ('{changed}', 'demo-new-patient') ORDER BY id"
    );
    if with_view {
        show(
            dir,
            "the view patient_demographics (views/patient_demographics)",
            &view_sql,
        )
        .await?;
    }

    println!(
        "\n== the server changes: one patient updated, one patient and an observation added, one observation deleted"
    );
    let mut patient = store.get("Patient", &changed).context("patient vanished")?;
    patient["gender"] = json!("unknown");
    patient["name"] = json!([{ "family": "Changed", "given": ["Demo"] }]);
    store.upsert(patient)?;
    store.upsert(json!({
        "resourceType": "Patient",
        "id": "demo-new-patient",
        "gender": "female",
        "birthDate": "1990-02-03",
        "name": [{ "family": "Newcomer", "given": ["Ada"] }]
    }))?;
    store.upsert(json!({
        "resourceType": "Observation",
        "id": "demo-new-observation",
        "status": "final",
        "code": { "coding": [{ "system": "http://loinc.org", "code": "8302-2", "display": "Body Height" }] },
        "subject": { "reference": "Patient/demo-new-patient" },
        "effectiveDateTime": "2024-05-06T07:08:09+02:00",
        "valueQuantity": { "value": 170.3, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm" }
    }))?;
    if let Some(obs) = store
        .ids("Observation")
        .into_iter()
        .find(|id| id != "demo-new-observation")
    {
        store.delete("Observation", &obs);
    }

    println!("\n== second sync: incremental (_since the first export's transactionTime)");
    let report = sync::run_sync(
        &opts,
        RunKind::Incremental,
        sync::client_config(&opts, mode).await?,
        CancellationToken::new(),
    )
    .await?;
    super::sync::print_report(&report, false)?;
    server.shutdown().await;
    if with_view {
        show(dir, "the view, kept current by the same sync", &view_sql).await?;
    }

    let sql =
        "SELECT gender, count(*) AS patients FROM Patient GROUP BY gender ORDER BY patients DESC";
    show(dir, "a query over the tables", sql).await?;
    println!(
        "\nTry: fhirsync status --delta-path {0}\n     fhirsync query --delta-path {0} \"SELECT id, gender, birthDate FROM Patient WHERE id = 'demo-new-patient'\"",
        dir.display()
    );
    Ok(())
}

/// Prints the result of `sql` over the demo's tables and views.
async fn show(dir: &std::path::Path, what: &str, sql: &str) -> anyhow::Result<()> {
    println!("\n== {what}: {sql}");
    let batches = fhirsync::tables::query(&dir.display().to_string(), sql, None).await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}

/// One row per patient: the demographics analysts ask for first.
fn demographics_view() -> serde_json::Value {
    json!({
        "resourceType": "ViewDefinition",
        "name": "patient_demographics",
        "status": "active",
        "resource": "Patient",
        "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "gender", "path": "gender"},
                {"name": "birth_date", "path": "birthDate", "type": "date"}
            ]},
            {"forEachOrNull": "name.first()", "column": [
                {"name": "family", "path": "family"},
                {"name": "given", "path": "given.join(' ')"}
            ]}
        ]
    })
}
