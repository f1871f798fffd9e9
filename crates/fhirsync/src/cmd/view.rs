//! `fhirsync view run VIEW.json --delta-path P`: a SQL on FHIR view over the synced tables,
//! printed or written as a table, CSV, NDJSON or Parquet.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::pretty::pretty_format_batches;
use fhirsync::logging::LogMode;
use fhirsync::views;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: ViewCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ViewCommand {
    /// Run a ViewDefinition over the synced tables and print or write its rows.
    Run(RunArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewFormat {
    Table,
    Csv,
    Ndjson,
    Parquet,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The ViewDefinition (SQL on FHIR, JSON)
    #[arg(value_name = "VIEW.json")]
    pub view: PathBuf,

    /// Where the Delta tables live: a directory or a bucket URL
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    /// How the rows are printed or written (`parquet` needs `--output`)
    #[arg(long, value_enum, default_value_t = ViewFormat::Table)]
    pub format: ViewFormat,

    /// Write the rows to this file (replaced only once the whole view is written) instead of
    /// standard output
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    match args.command {
        ViewCommand::Run(args) => run_view(args).await,
    }
}

async fn run_view(args: RunArgs) -> anyhow::Result<()> {
    let view = views::read_view(&args.view)?;
    let schema = view.definition.arrow_schema();
    if args.format == ViewFormat::Csv
        && let Some(f) = schema
            .fields()
            .iter()
            .find(|f| matches!(f.data_type(), DataType::List(_)))
    {
        bail!(
            "column `{}` is a collection, which CSV cannot hold: use `--format ndjson` or \
             `--format parquet`",
            f.name()
        );
    }
    let mut sink = match &args.output {
        Some(path) => Output::file(path, args.format, &schema)?,
        None => Output::stdout(args.format, &schema)?,
    };
    let run = views::run_over_table(&args.delta_path, &Default::default(), &view, &mut |b| {
        sink.write(b)
    })
    .await?;
    sink.finish()?;
    tracing::info!(
        resources = run.resources,
        rows = run.rows,
        view = view.definition.name.as_deref().unwrap_or(""),
        "view run"
    );
    Ok(())
}

/// Where the rows go: standard output, or a file written under a temporary name beside it
/// and moved into place once complete (a failed run leaves the old file, or none).
struct Output {
    writer: Writer,
    file: Option<(tempfile::NamedTempFile, PathBuf)>,
}

enum Writer {
    /// Printed as one table once all rows are in.
    Table(Vec<RecordBatch>, Box<dyn Write + Send>),
    Csv(arrow::csv::Writer<Box<dyn Write + Send>>),
    Ndjson(arrow::json::LineDelimitedWriter<Box<dyn Write + Send>>),
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>),
}

impl Output {
    fn stdout(format: ViewFormat, schema: &SchemaRef) -> anyhow::Result<Output> {
        let writer = writer(format, schema, Box::new(std::io::stdout()), None)?;
        Ok(Output { writer, file: None })
    }

    fn file(path: &Path, format: ViewFormat, schema: &SchemaRef) -> anyhow::Result<Output> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let file = tmp.reopen().context("opening the output file")?;
        let out = Box::new(std::io::BufWriter::new(file.try_clone()?));
        let writer = writer(format, schema, out, Some(file))?;
        Ok(Output {
            writer,
            file: Some((tmp, path.to_path_buf())),
        })
    }

    fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        match &mut self.writer {
            Writer::Table(batches, _) => batches.push(batch),
            Writer::Csv(w) => w.write(&batch)?,
            Writer::Ndjson(w) => w.write(&batch)?,
            Writer::Parquet(w) => w.write(&batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let mut out = match self.writer {
            Writer::Table(batches, mut out) => {
                writeln!(out, "{}", pretty_format_batches(&batches)?)?;
                out
            }
            Writer::Csv(w) => w.into_inner(),
            Writer::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Writer::Parquet(w) => {
                w.close()?;
                Box::new(std::io::sink())
            }
        };
        out.flush().context("writing the rows")?;
        drop(out);
        if let Some((tmp, path)) = self.file {
            tmp.persist(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn writer(
    format: ViewFormat,
    schema: &SchemaRef,
    out: Box<dyn Write + Send>,
    file: Option<std::fs::File>,
) -> anyhow::Result<Writer> {
    Ok(match (format, file) {
        (ViewFormat::Table, _) => Writer::Table(Vec::new(), out),
        (ViewFormat::Csv, _) => Writer::Csv(arrow::csv::Writer::new(out)),
        (ViewFormat::Ndjson, _) => Writer::Ndjson(arrow::json::LineDelimitedWriter::new(out)),
        (ViewFormat::Parquet, Some(file)) => Writer::Parquet(parquet::arrow::ArrowWriter::try_new(
            file,
            schema.clone(),
            None,
        )?),
        (ViewFormat::Parquet, None) => {
            bail!("`--format parquet` writes a file: name it with `--output FILE`")
        }
    })
}
