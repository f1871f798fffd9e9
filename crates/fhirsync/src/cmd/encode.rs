//! `fhirsync encode`: a directory of NDJSON files into one Parquet file per resource type, in
//! the Pathling encoding (the equivalent of Pathling's `read.ndjson(...).write.parquet(...)`).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use fhir_bulk::AtomicFile;
use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, NdjsonBatches, Reject, Warning};
use fhirsync::config::{EncodingArgs, FileOptions};
use fhirsync::logging::LogMode;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of NDJSON files (`*.ndjson` or `*.ndjson.gz`, any names; types are read from
    /// the resources)
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,

    /// Directory for `<Type>.parquet`, `_rejects.ndjson` and `_warnings.ndjson` (created if
    /// missing; existing files of the same names are replaced)
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,

    #[command(flatten)]
    pub encoding: EncodingArgs,

    /// Types kept for open-type elements such as `Extension.value[x]`, space- or
    /// comma-separated [default: Pathling's list]
    #[arg(long, num_args = 1.., value_delimiter = ',', value_name = "TYPE")]
    pub open_types: Vec<String>,

    /// Maximum rows per Parquet row group batch
    #[arg(long, default_value_t = 8192, value_name = "ROWS")]
    pub batch_rows: usize,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || encode(args))
        .await
        .context("the encoding task failed")?
}

#[derive(Default)]
struct TypeStats {
    rows: u64,
    rejects: u64,
    warnings: u64,
}

struct Output {
    dir: PathBuf,
    props: WriterProperties,
    writers: BTreeMap<String, ArrowWriter<AtomicFile>>,
    rejects: BufWriter<File>,
    warnings: BufWriter<File>,
    stats: BTreeMap<String, TypeStats>,
    rejects_without_type: u64,
}

impl Output {
    fn write_batch(&mut self, rt: &str, batch: &arrow::array::RecordBatch) -> anyhow::Result<()> {
        if !self.writers.contains_key(rt) {
            let dest = self.dir.join(format!("{rt}.parquet"));
            let tmp = self.dir.join(format!(".{rt}.parquet.partial"));
            let file = AtomicFile::create_with_temp(&dest, &tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let w = ArrowWriter::try_new(file, batch.schema(), Some(self.props.clone()))
                .with_context(|| format!("cannot start the Parquet file for {rt}"))?;
            self.writers.insert(rt.to_string(), w);
        }
        let Some(w) = self.writers.get_mut(rt) else {
            bail!("no writer for {rt}")
        };
        w.write(batch)
            .with_context(|| format!("cannot write {rt} rows to Parquet"))?;
        self.stats.entry(rt.to_string()).or_default().rows += batch.num_rows() as u64;
        Ok(())
    }

    fn record(&mut self, rejects: Vec<Reject>, warnings: Vec<Warning>) -> anyhow::Result<()> {
        for r in rejects {
            tracing::warn!(file = %r.file, line = r.line, resource_type = ?r.resource_type, id = ?r.id, reason = %r.reason, "resource rejected");
            match &r.resource_type {
                Some(t) => self.stats.entry(t.clone()).or_default().rejects += 1,
                None => self.rejects_without_type += 1,
            }
            let line = serde_json::json!({
                "type": r.resource_type, "id": r.id, "file": r.file, "line": r.line, "reason": r.reason,
            });
            writeln!(self.rejects, "{line}").context("cannot write _rejects.ndjson")?;
        }
        for w in warnings {
            self.stats
                .entry(w.resource_type.clone())
                .or_default()
                .warnings += 1;
            serde_json::to_writer(&mut self.warnings, &w)
                .context("cannot write _warnings.ndjson")?;
            writeln!(self.warnings).context("cannot write _warnings.ndjson")?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<(BTreeMap<String, TypeStats>, u64)> {
        for (rt, w) in std::mem::take(&mut self.writers) {
            let file = w
                .into_inner()
                .with_context(|| format!("cannot finish the Parquet file for {rt}"))?;
            let dest = file.target().to_path_buf();
            file.commit()
                .with_context(|| format!("cannot move the Parquet file to {}", dest.display()))?;
        }
        self.rejects
            .flush()
            .context("cannot write _rejects.ndjson")?;
        self.warnings
            .flush()
            .context("cannot write _warnings.ndjson")?;
        Ok((self.stats, self.rejects_without_type))
    }
}

fn encode(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let encoding = args.encoding.resolve(&FileOptions::default());
    let mut options = EncoderOptions {
        max_nesting_level: encoding.max_nesting_level,
        enable_extensions: encoding.extensions,
        keep_json: encoding.keep_json,
        ..EncoderOptions::default()
    };
    if !args.open_types.is_empty() {
        options.open_types = args.open_types.clone();
    }
    let encoder = Encoder::try_new(options).context("invalid encoding options")?;
    if args.batch_rows == 0 {
        bail!("--batch-rows must be at least 1");
    }
    let limits = BatchLimits {
        max_rows: args.batch_rows,
        ..BatchLimits::default()
    };
    let files = fhirsync::files::ndjson_files(&args.input)?;
    std::fs::create_dir_all(&args.output).with_context(|| {
        format!(
            "cannot create the output directory {}",
            args.output.display()
        )
    })?;
    let create = |name: &str| -> anyhow::Result<BufWriter<File>> {
        let p = args.output.join(name);
        Ok(BufWriter::new(File::create(&p).with_context(|| {
            format!("cannot create {}", p.display())
        })?))
    };
    let mut out = Output {
        dir: args.output.clone(),
        props: WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build(),
        writers: BTreeMap::new(),
        rejects: create("_rejects.ndjson")?,
        warnings: create("_warnings.ndjson")?,
        stats: BTreeMap::new(),
        rejects_without_type: 0,
    };
    let mut failed_files = Vec::new();
    let mut bytes_in = 0u64;
    for path in &files {
        bytes_in += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let name = fhirsync::files::file_name(path);
        tracing::info!(file = %path.display(), "encoding");
        let reader = fhirsync::files::open_ndjson(path)?;
        let mut batches = NdjsonBatches::new(encoder.clone(), reader, name.as_str(), limits);
        loop {
            match batches.next() {
                None => break,
                Some(Ok((rt, batch))) => out.write_batch(&rt, &batch)?,
                Some(Err(e)) => {
                    // A file that cannot be read (e.g. corrupt gzip) does not stop the others;
                    // what was read from it before the error is kept.
                    tracing::error!(file = %path.display(), error = %e, "cannot read the file; continuing with the next one");
                    failed_files.push(format!("{}: {e}", path.display()));
                }
            }
            out.record(batches.take_rejects(), batches.take_warnings())?;
        }
        out.record(batches.take_rejects(), batches.take_warnings())?;
    }
    let (stats, untyped) = out.finish()?;
    let total_rows: u64 = stats.values().map(|s| s.rows).sum();
    let total_rejects: u64 = stats.values().map(|s| s.rejects).sum::<u64>() + untyped;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<36} {:>10} {:>8} {:>9}",
        "type", "rows", "rejects", "warnings"
    );
    for (rt, s) in &stats {
        println!("{rt:<36} {:>10} {:>8} {:>9}", s.rows, s.rejects, s.warnings);
    }
    if untyped > 0 {
        println!(
            "{:<36} {:>10} {untyped:>8} {:>9}",
            "(unreadable lines)", 0, 0
        );
    }
    println!(
        "{total_rows} resources in {} files ({:.1} MB) encoded in {secs:.1} s to {}; {total_rejects} rejected (see _rejects.ndjson)",
        files.len(),
        bytes_in as f64 / 1e6,
        args.output.display()
    );
    tracing::info!(
        resources = total_rows,
        rejects = total_rejects,
        seconds = secs,
        "encode finished"
    );
    if !failed_files.is_empty() {
        bail!(
            "{} input file(s) could not be read completely:\n{}",
            failed_files.len(),
            failed_files.join("\n")
        );
    }
    Ok(())
}
