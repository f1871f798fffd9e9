use arrow::util::pretty::pretty_format_batches;
use fhirsync::config::ResourceTypeArgs;
use fhirsync::logging::LogMode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(clap::Args, Debug)]
#[command(mut_arg(
    "resource_types",
    ResourceTypeArgs::help(
        "of the tables to register",
        "every table found; on object stores, every FHIR type is probed"
    )
))]
pub struct Args {
    /// Where the Delta tables live: a directory or `s3://bucket/prefix`
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    /// SQL (DataFusion dialect); every table is registered under its resource type name, e.g.
    /// `SELECT gender, count(*) FROM Patient GROUP BY gender`
    pub sql: String,

    /// How the result is printed
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    #[command(flatten)]
    pub types: ResourceTypeArgs,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let types = args.types.resolve()?;
    let batches = fhirsync::tables::query(&args.delta_path, &args.sql, types.as_deref()).await?;
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
