//! Finding the resource tables under a delta path, for `status`, `query` and `maintain`, and
//! reading them with DataFusion.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::AsArray as _;
use delta_sink::{DeltaSink, ResourceTable, StorageOptions};
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt as _;

use crate::config::is_remote_path;
use crate::files;

/// Suffix of every table directory (`<delta-path>/<Type>.parquet`, the Pathling layout).
pub(crate) const TABLE_SUFFIX: &str = ".parquet";

/// The directory of a local delta path (`file://` stripped); `None` for an object store URL.
pub(crate) fn local_dir(delta_path: &str) -> Option<PathBuf> {
    (!is_remote_path(delta_path))
        .then(|| PathBuf::from(delta_path.strip_prefix("file://").unwrap_or(delta_path)))
}

/// The tables under `delta_path`, sorted by type. A local path is listed; an object store path
/// is probed for every type the encoder supports (or `types`, when given).
pub async fn list_tables(
    sink: &DeltaSink,
    delta_path: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<(String, ResourceTable)>> {
    let candidates: Vec<String> = match (types, local_dir(delta_path)) {
        (Some(t), _) => t.to_vec(),
        (None, Some(dir)) => files::dir_entries(&dir)?
            .into_iter()
            .filter(|p| p.join("_delta_log").is_dir())
            .filter_map(|p| {
                let name = files::file_name(&p);
                name.strip_suffix(TABLE_SUFFIX).map(str::to_string)
            })
            .collect(),
        (None, None) => fhir_encoder::Encoder::new(Default::default())
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

/// The views' tables under `<delta_path>/views/`, sorted by name. A local path is listed; in
/// an object store, the folders under `views/` are.
pub async fn list_views(
    sink: &DeltaSink,
    delta_path: &str,
) -> anyhow::Result<Vec<(String, ResourceTable)>> {
    let names: Vec<String> = match local_dir(delta_path) {
        Some(dir) => {
            let dir = dir.join(crate::views::VIEWS_DIR);
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            files::dir_entries(&dir)?
                .into_iter()
                .filter(|p| p.join("_delta_log").is_dir())
                .map(|p| files::file_name(&p))
                .collect()
        }
        None => sink
            .list_folders(crate::views::VIEWS_DIR)
            .await
            .context("listing the views")?,
    };
    let mut views = Vec::new();
    for name in names {
        let table = crate::views::open_table(sink, &name)
            .await
            .with_context(|| format!("opening the view {name}"))?;
        if table.exists() {
            views.push((name, table));
        }
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(views)
}

/// Runs `sql` over every table under `delta_path`.
pub async fn query(
    delta_path: &str,
    sql: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    query_with(delta_path, &BTreeMap::new(), sql, types).await
}

/// [`query`] with object store options (over the environment's) for tables in a bucket.
pub async fn query_with(
    delta_path: &str,
    storage_options: &BTreeMap<String, String>,
    sql: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    let storage = storage_options
        .iter()
        .fold(StorageOptions::from_env(), |s, (k, v)| s.with(k, v));
    let sink = DeltaSink::new(delta_path, storage)?;
    let tables = list_tables(&sink, delta_path, types).await?;
    let views = list_views(&sink, delta_path).await?;
    if tables.is_empty() && views.is_empty() {
        anyhow::bail!("no Delta tables under {delta_path}");
    }
    let named: Vec<(&str, &ResourceTable)> = tables.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let ctx = session(&named).await?;
    for (name, view) in &views {
        if tables.iter().any(|(t, _)| t == name) {
            tracing::warn!(view = %name, "a view has the name of a resource table: not queryable by it");
            continue;
        }
        register_view(&ctx, name, view).await?;
    }
    let df = ctx.sql(sql).await.context("planning the query")?;
    df.collect().await.context("running the query")
}

/// The ids of `table`'s rows that are among `wanted`, read a batch at a time.
pub(crate) async fn ids_among(
    name: &str,
    table: &ResourceTable,
    wanted: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let ctx = session(&[(name, table)]).await?;
    let df = ctx
        .sql(&format!("SELECT id FROM \"{name}\""))
        .await
        .context("planning the query")?;
    let mut batches = df.execute_stream().await?;
    let mut found = BTreeSet::new();
    while let Some(batch) = batches.next().await {
        let batch = batch.with_context(|| format!("reading the ids of the {name} table"))?;
        let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        found.extend(
            ids.iter()
                .flatten()
                .filter(|id| wanted.contains(*id))
                .map(str::to_string),
        );
    }
    Ok(found)
}

/// A DataFusion session with `tables` registered under their resource types.
/// Registers a view's table under its name, without the columns that only tell the sync
/// which resource each row came from.
async fn register_view(
    ctx: &SessionContext,
    name: &str,
    view: &ResourceTable,
) -> anyhow::Result<()> {
    let delta = view.delta_table();
    delta.update_datafusion_session(&ctx.state())?;
    let provider = delta
        .table_provider()
        .await
        .with_context(|| format!("reading the view {name}"))?;
    let hidden = crate::views::stage::HIDDEN_COLUMNS;
    let visible: Vec<String> = provider
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !hidden.contains(&n.as_str()))
        .collect();
    let visible: Vec<&str> = visible.iter().map(String::as_str).collect();
    let df = ctx.read_table(provider)?.select_columns(&visible)?;
    ctx.register_table(
        deltalake::datafusion::common::TableReference::bare(name),
        df.into_view(),
    )?;
    Ok(())
}

pub(crate) async fn session(tables: &[(&str, &ResourceTable)]) -> anyhow::Result<SessionContext> {
    // FHIR names are case-sensitive camelCase (`Patient`, `birthDate`): keep identifiers as written.
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    for (name, table) in tables {
        let delta = table.delta_table();
        delta.update_datafusion_session(&ctx.state())?;
        let provider = delta
            .table_provider()
            .await
            .with_context(|| format!("reading the {name} table"))?;
        ctx.register_table(
            deltalake::datafusion::common::TableReference::bare(*name),
            Arc::clone(&provider),
        )?;
    }
    Ok(ctx)
}
