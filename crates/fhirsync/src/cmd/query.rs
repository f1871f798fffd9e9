use std::sync::Arc;

use anyhow::Context;
use arrow::util::pretty::pretty_format_batches;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use delta_sink::{DeltaSink, StorageOptions};
use fhirsync::logging::LogMode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the Delta tables live: a directory or `s3://bucket/prefix`.
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    /// SQL (DataFusion dialect); every table is registered under its resource type name, e.g.
    /// `SELECT gender, count(*) FROM Patient GROUP BY gender`.
    pub sql: String,

    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// Tables to register (default: every table found; on object stores, every FHIR type is probed).
    #[arg(long, value_name = "TYPE", num_args = 1.., value_delimiter = ',')]
    pub types: Option<Vec<String>>,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let batches = query(&args.delta_path, &args.sql, args.types.as_deref()).await?;
    match args.format {
        OutputFormat::Table => println!("{}", pretty_format_batches(&batches)?),
        OutputFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(std::io::stdout().lock());
            for b in &batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::Writer::new(std::io::stdout().lock());
            for b in &batches {
                w.write(b)?;
            }
        }
    }
    Ok(())
}

/// Runs `sql` over every table under `delta_path`.
pub async fn query(
    delta_path: &str,
    sql: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    let sink = DeltaSink::new(delta_path, StorageOptions::from_env())?;
    let tables = fhirsync::tables::list_tables(&sink, delta_path, types).await?;
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
        let provider = delta.table_provider().await.with_context(|| format!("reading the {name} table"))?;
        ctx.register_table(deltalake::datafusion::common::TableReference::bare(name.as_str()), Arc::clone(&provider))?;
    }
    let df = ctx.sql(sql).await.context("planning the query")?;
    df.collect().await.context("running the query")
}
