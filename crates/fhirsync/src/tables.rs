//! Finding the resource tables under a delta path, for `status`, `query` and `maintain`.
use std::path::Path;

use anyhow::Context;
use std::sync::Arc;

use delta_sink::{DeltaSink, ResourceTable, StorageOptions};
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

/// Suffix of every table directory (`<delta-path>/<Type>.parquet`, the Pathling layout).
pub const TABLE_SUFFIX: &str = ".parquet";

/// The tables under `delta_path`, sorted by type. A local path is listed; an object store path
/// is probed for every type the encoder supports (or `types`, when given).
pub async fn list_tables(
    sink: &DeltaSink,
    delta_path: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<(String, ResourceTable)>> {
    let candidates: Vec<String> = match types {
        Some(t) => t.to_vec(),
        None if !crate::config::is_remote_path(delta_path) => {
            let dir = Path::new(delta_path.strip_prefix("file://").unwrap_or(delta_path));
            let mut found = Vec::new();
            let entries =
                std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(t) = name.strip_suffix(TABLE_SUFFIX)
                    && entry.path().join("_delta_log").is_dir()
                {
                    found.push(t.to_string());
                }
            }
            found
        }
        None => fhir_encoder::Encoder::new(Default::default())
            .supported_types()
            .into_iter()
            .map(|t| t.to_string())
            .collect(),
    };
    let mut tables = Vec::new();
    for t in candidates {
        let table = sink
            .table(&t)
            .await
            .with_context(|| format!("opening the {t} table"))?;
        if table.exists() {
            tables.push((t, table));
        }
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tables)
}

/// Runs `sql` over every table under `delta_path`.
pub async fn query(
    delta_path: &str,
    sql: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    let sink = DeltaSink::new(delta_path, StorageOptions::from_env())?;
    let tables = list_tables(&sink, delta_path, types).await?;
    if tables.is_empty() {
        anyhow::bail!("no Delta tables under {delta_path}");
    }
    // FHIR names are case-sensitive camelCase (`Patient`, `birthDate`): keep identifiers as written.
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    for (name, table) in &tables {
        let delta = table.delta_table();
        delta.update_datafusion_session(&ctx.state())?;
        let provider = delta
            .table_provider()
            .await
            .with_context(|| format!("reading the {name} table"))?;
        ctx.register_table(
            deltalake::datafusion::common::TableReference::bare(name.as_str()),
            Arc::clone(&provider),
        )?;
    }
    let df = ctx.sql(sql).await.context("planning the query")?;
    df.collect().await.context("running the query")
}
