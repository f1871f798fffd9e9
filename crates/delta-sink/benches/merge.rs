//! Merge benchmark: build a table of N realistic rows (~1 KB, random UUID ids), then merge
//! 1% changed + 1% new rows. Each phase runs in a fresh process so peak RSS (VmHWM) is
//! per phase.
//!
//! ```text
//! cargo bench -p delta-sink --bench merge -- [--rows 1000000,100000] [--changed-pct 1] [--new-pct 1] [--zstd-level N] [--deletion-vectors] [--dir PATH]
//! ```
//! Environment: `BENCH_ROWS` (comma-separated sizes) is used when `--rows` is absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use delta_sink::generator::{RowSpec, observation_batch, observation_schema, random_ids};
use delta_sink::{
    CommitOptions, Cursor, DeltaSink, ResourceTable, SaveMode, SinkConfig, StorageOptions,
    TableWriter, WriteOutcome,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

const CHUNK: usize = 20_000;
const T0: i64 = 1_700_000_000_000_000;

fn vm_hwm_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().ok();
                    if m.as_ref().is_some_and(|m| m.is_dir()) {
                        dir_size(&e.path())
                    } else {
                        m.map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The benchmark's table in `dir`.
async fn open_table(dir: &Path, config: SinkConfig) -> ResourceTable {
    let sink = DeltaSink::new(dir.to_str().unwrap(), StorageOptions::new())
        .unwrap()
        .with_config(config);
    sink.table("Observation").await.unwrap()
}

/// Commits `w` as a merge with `cursor`.
async fn commit_merge(table: &mut ResourceTable, w: TableWriter, cursor: Cursor) -> WriteOutcome {
    let options = CommitOptions {
        mode: SaveMode::Merge,
        cursor: Some(cursor),
    };
    table.commit(w, options).await.unwrap()
}

async fn build(dir: &Path, rows: usize, config: SinkConfig) {
    let mut table = open_table(dir, config).await;
    let ids = random_ids(rows);
    std::fs::write(dir.join("ids.txt"), ids.join("\n")).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    let mut w = table.writer(observation_schema());
    for chunk in ids.chunks(CHUNK) {
        let specs: Vec<RowSpec> = chunk
            .iter()
            .map(|id| RowSpec::new(id.clone(), 1, T0))
            .collect();
        w.push(&observation_batch(&specs, &mut rng)).await.unwrap();
    }
    let written = start.elapsed();
    let cursor = Cursor::new(
        "bench",
        chrono::DateTime::from_timestamp_micros(T0).unwrap(),
        "build",
    );
    let out = commit_merge(&mut table, w, cursor).await;
    let total = start.elapsed();
    let stats = table.stats().await.unwrap();
    println!(
        "build rows={rows} write={:.2}s total={:.2}s inserted={} files={} table_bytes={} peak_rss={:.0}MiB",
        written.as_secs_f64(),
        total.as_secs_f64(),
        out.inserted,
        stats.files,
        stats.size_bytes,
        vm_hwm_mib()
    );
}

async fn merge(dir: &Path, changed_pct: f64, new_pct: f64, config: SinkConfig) {
    let ids_text = std::fs::read_to_string(dir.join("ids.txt")).unwrap();
    let mut ids: Vec<&str> = ids_text.lines().collect();
    let n = ids.len();
    let changed = ((n as f64) * changed_pct / 100.0) as usize;
    let new = ((n as f64) * new_pct / 100.0) as usize;
    let mut rng = StdRng::seed_from_u64(2);
    ids.shuffle(&mut rng);
    let mut specs: Vec<RowSpec> = ids[..changed]
        .iter()
        .map(|id| RowSpec::new(*id, 2, T0 + 1_000_000))
        .collect();
    specs.extend(
        random_ids(new)
            .into_iter()
            .map(|id| RowSpec::new(id, 1, T0 + 1_000_000)),
    );
    specs.shuffle(&mut rng);
    let batches: Vec<_> = specs
        .chunks(CHUNK)
        .map(|c| observation_batch(c, &mut rng))
        .collect();
    drop(ids_text);
    let before_rss = vm_hwm_mib();

    let mut table = open_table(dir, config).await;
    let files_before = table.stats().await.unwrap().files;
    let start = Instant::now();
    let mut w = table.writer(observation_schema());
    for b in &batches {
        w.push(b).await.unwrap();
    }
    // A fresh cursor version per run: re-running one export would be skipped.
    let mut cursor = Cursor::new("bench", chrono::Utc::now(), "merge");
    cursor.version = chrono::Utc::now().timestamp_micros();
    let out = commit_merge(&mut table, w, cursor).await;
    let elapsed = start.elapsed();
    println!(
        "merge rows={n} changed={changed} new={new} status={:?} time={:.2}s inserted={} updated={} files_before={files_before} files_rewritten={} files_marked={} files_added={} bytes_added={} peak_rss={:.0}MiB (input batches alone: {:.0}MiB)",
        out.status,
        elapsed.as_secs_f64(),
        out.inserted,
        out.updated,
        out.files_rewritten,
        out.files_marked,
        out.files_added,
        out.bytes_added,
        vm_hwm_mib(),
        before_rss
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let changed_pct: f64 = arg(&args, "--changed-pct")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let new_pct: f64 = arg(&args, "--new-pct")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut config = SinkConfig::default();
    if let Some(level) = arg(&args, "--zstd-level") {
        config.zstd_level = level.parse().unwrap();
    }
    let vectors = args.iter().any(|a| a == "--deletion-vectors");
    config.deletion_vectors = vectors;
    match arg(&args, "--phase").as_deref() {
        Some("build") => {
            let dir = PathBuf::from(arg(&args, "--dir").unwrap());
            let rows: usize = arg(&args, "--rows").unwrap().parse().unwrap();
            rt.block_on(build(&dir, rows, config));
            return;
        }
        Some("merge") => {
            let dir = PathBuf::from(arg(&args, "--dir").unwrap());
            rt.block_on(merge(&dir, changed_pct, new_pct, config));
            return;
        }
        _ => {}
    }
    let sizes = arg(&args, "--rows")
        .or_else(|| std::env::var("BENCH_ROWS").ok())
        .unwrap_or_else(|| "100000,1000000".to_string());
    let exe = std::env::current_exe().unwrap();
    let mut passed: Vec<String> = arg(&args, "--zstd-level")
        .map(|l| vec!["--zstd-level".into(), l])
        .unwrap_or_default();
    if vectors {
        passed.push("--deletion-vectors".into());
    }
    for size in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let tmp = match arg(&args, "--dir") {
            Some(d) => tempfile::tempdir_in(d).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let run = |phase: &str, extra: &[String]| {
            let status = Command::new(&exe)
                .args(["--phase", phase, "--dir", tmp.path().to_str().unwrap()])
                .args(extra)
                .args(&passed)
                .status()
                .unwrap();
            assert!(status.success(), "{phase} failed");
        };
        run("build", &["--rows".into(), size.trim().into()]);
        println!(
            "table on disk: {} bytes",
            dir_size(&tmp.path().join("Observation.parquet"))
        );
        run(
            "merge",
            &[
                "--changed-pct".into(),
                changed_pct.to_string(),
                "--new-pct".into(),
                new_pct.to_string(),
            ],
        );
        run(
            "merge",
            &[
                "--changed-pct".into(),
                "0".into(),
                "--new-pct".into(),
                new_pct.to_string(),
            ],
        );
    }
}
