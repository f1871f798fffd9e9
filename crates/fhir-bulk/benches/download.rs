//! Download throughput: exports synthetic data from the test server over loopback into a
//! temporary directory and prints MB/s, resources/s and peak RSS.
//!
//! `cargo bench -p fhir-bulk --bench download` (defaults to about 1 GB of NDJSON).
//! Settings (environment): `BENCH_PATIENTS` (default 80000; ~16 KB of NDJSON each),
//! `BENCH_RESOURCES_PER_FILE` (default 20000), `BENCH_CONCURRENCY` (default 4),
//! `BENCH_GZIP` (`1` to ask for gzip-compressed files; default off: loopback is not the
//! bottleneck, compression is), `BENCH_DIR` (where to write; default a temporary directory).
use std::time::Instant;

use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhir_bulk::{BulkClient, ClientConfig, ExportOptions, ExportRequest};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size of this process (server and client together), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing else we use.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let patients: usize = env("BENCH_PATIENTS", 80_000);
    let per_file: usize = env("BENCH_RESOURCES_PER_FILE", 20_000);
    let concurrency: usize = env("BENCH_CONCURRENCY", 4);
    let gzip = env("BENCH_GZIP", 0u8) == 1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = TestServer::start(ServerConfig {
            data: DataSource::Synthetic { patients, seed: 1 },
            resources_per_file: per_file,
            polls_before_complete: 0,
            ..ServerConfig::default()
        })
        .await?;
        let tmp = tempfile::tempdir()?;
        let dir = std::env::var_os("BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
        let mut config = ClientConfig::new(server.base_url());
        config.max_concurrent_downloads = concurrency;
        config.gzip = gzip;
        config.poll.min_delay = std::time::Duration::from_millis(50);
        config.poll.initial_delay = std::time::Duration::from_millis(50);
        let client = BulkClient::new(config)?;
        let rss_before = peak_rss().unwrap_or(0);
        let started = Instant::now();
        let summary = client.export_to_dir(&ExportRequest::system(), &dir, &ExportOptions::default()).await?;
        let secs = started.elapsed().as_secs_f64();
        let mb = summary.bytes as f64 / 1e6;
        println!("fhir-bulk download benchmark");
        println!("  patients           {patients}");
        println!("  files              {}", summary.outputs().count());
        println!("  resources          {}", summary.resources);
        println!("  bytes              {} ({mb:.1} MB)", summary.bytes);
        println!("  concurrency        {concurrency}, gzip {gzip}");
        println!("  time               {secs:.2} s");
        println!("  throughput         {:.1} MB/s", mb / secs);
        println!("  resources/s        {:.0}", summary.resources as f64 / secs);
        println!("  peak RSS           {:.1} MB (before export {:.1} MB; server and client in one process)",
            peak_rss().unwrap_or(0) as f64 / 1e6, rss_before as f64 / 1e6);
        server.shutdown().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
