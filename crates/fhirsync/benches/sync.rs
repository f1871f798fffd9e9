//! End-to-end sync throughput: the built-in Bulk Data server serves synthetic patients over
//! loopback, `fhirsync::sync::run_sync` exports, encodes and merges them into Delta tables in a
//! temporary directory; then 1% of the resources change, 1% are added, and an incremental sync
//! (`_since` the committed cursor) merges them.
//!
//! ```text
//! cargo bench -p fhirsync --bench sync -- [--patients 3200] [--seed 1] [--types all|default|T1,T2]
//!     [--changed-pct 1] [--new-pct 1] [--resources-per-file 10000] [--dir PATH]
//!     [--views VIEW.json,...]
//! ```
//! With `--views`, both syncs keep those SQL on FHIR views (`--view`), and each view's commit
//! time and the resources whose rows it replaced are printed.
//! Environment: `BENCH_PATIENTS`, `BENCH_TYPES` are used when the flags are absent;
//! `BENCH_DELETION_VECTORS=1` syncs with deletion vectors (`--deletion-vectors`). A synthetic
//! patient is about 15.8 KB of NDJSON over all types: 3,200 patients ≈ 50 MB, 65,000 ≈ 1 GB,
//! 320,000 ≈ 5 GB. `all` (the default) syncs every synthetic type (11 types); `default` the four
//! types `fhirsync sync` syncs without `--resource-types`.
//!
//! Each sync runs in a child process of its own, so its peak RSS (VmHWM) is the sync's alone,
//! as for the `fhirsync` binary; the server runs in this parent process.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bulk_test_server::{DataSource, ServerConfig, TestServer};
use fhirsync::config::{DEFAULT_RESOURCE_TYPES, SyncOptions};
use fhirsync::logging::LogMode;
use fhirsync::run::RunKind;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn arg_or<T: std::str::FromStr>(
    args: &[String],
    name: &str,
    env: &str,
    default: T,
) -> anyhow::Result<T> {
    match arg(args, name).or_else(|| std::env::var(env).ok()) {
        Some(v) => v
            .parse()
            .map_err(|_| anyhow!("{name}: {v:?} is not a valid value")),
        None => Ok(default),
    }
}

/// A line of `/proc/self/status` in bytes (`VmHWM`: peak RSS, `VmRSS`: current).
fn proc_status_bytes(key: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Instants of the export's milestones, seen through the bulk client's events.
#[derive(Default)]
struct Milestones {
    kick_off: Option<Instant>,
    manifest: Option<Instant>,
    first_file: Option<Instant>,
    downloaded: Option<Instant>,
    files: u64,
}

/// The highest RSS seen by a sampler while the export ran and after it (encode tail + commits).
#[derive(Default)]
struct RssSamples {
    during_export: u64,
    after_export: u64,
}

/// Child process: one `run_sync` into `--delta`, printed as a `RESULT {json}` line.
fn child(args: &[String]) -> anyhow::Result<()> {
    let endpoint: url::Url = arg(args, "--endpoint").context("--endpoint")?.parse()?;
    let delta = arg(args, "--delta").context("--delta")?;
    let types: Vec<String> = arg(args, "--sync-types")
        .context("--sync-types")?
        .split(',')
        .map(str::to_string)
        .collect();
    let views: Vec<PathBuf> = arg(args, "--views")
        .map(|v| {
            v.split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let rss_start = proc_status_bytes("VmRSS:");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut opts = SyncOptions::new(endpoint, delta);
        opts.resource_types = types;
        opts.deletion_vectors = std::env::var("BENCH_DELETION_VECTORS").is_ok_and(|v| v == "1");
        opts.views = views;
        let mut client = fhirsync::sync::client_config(&opts, LogMode::Json).await?;
        // The server answers at once; the default 1-2 s poll delays would only add idle time.
        client.poll.initial_delay = Duration::from_millis(50);
        client.poll.min_delay = Duration::from_millis(50);
        let marks: Arc<Mutex<Milestones>> = Arc::default();
        let seen = marks.clone();
        client.events = Some(Arc::new(move |event: &fhir_bulk::BulkEvent| {
            let now = Instant::now();
            let Ok(mut m) = seen.lock() else { return };
            match event {
                fhir_bulk::BulkEvent::KickOff { .. } => m.kick_off = Some(now),
                fhir_bulk::BulkEvent::StatusComplete { .. } => m.manifest = Some(now),
                fhir_bulk::BulkEvent::DownloadRequest { .. } => {
                    m.first_file.get_or_insert(now);
                }
                fhir_bulk::BulkEvent::DownloadComplete {
                    kind: fhir_bulk::FileKind::Output,
                    ..
                } => m.files += 1,
                fhir_bulk::BulkEvent::ExportComplete { .. } => m.downloaded = Some(now),
                _ => {}
            }
        }));

        let rss: Arc<Mutex<RssSamples>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (rss, stop, marks) = (rss.clone(), stop.clone(), marks.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = proc_status_bytes("VmRSS:");
                    let exported = marks
                        .lock()
                        .map(|m| m.downloaded.is_some())
                        .unwrap_or(false);
                    if let Ok(mut r) = rss.lock() {
                        let slot = if exported {
                            &mut r.after_export
                        } else {
                            &mut r.during_export
                        };
                        *slot = (*slot).max(now);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };

        let started = Instant::now();
        let report = fhirsync::sync::run_sync(
            &opts,
            RunKind::Incremental,
            client,
            CancellationToken::new(),
        )
        .await;
        let finished = Instant::now();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        let report = report?;

        let m = marks.lock().map_err(|_| anyhow!("poisoned"))?;
        let secs = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a).as_secs_f64()),
            _ => None,
        };
        let r = rss.lock().map_err(|_| anyhow!("poisoned"))?;
        let (mut inserted, mut updated, mut unchanged, mut deleted, mut resources) =
            (0, 0, 0, 0, 0);
        for t in report.tables.values() {
            resources += t.resources;
            inserted += t.inserted;
            updated += t.updated;
            unchanged += t.unchanged;
            deleted += t.removed();
        }
        let out = json!({
            "wall_s": finished.duration_since(started).as_secs_f64(),
            "bytes": report.bytes_downloaded,
            // Per table: counted as batches are written.
            "resources": resources,
            "rejects": report.rejects,
            "inserted": inserted,
            "updated": updated,
            "unchanged": unchanged,
            "deleted": deleted,
            "files": m.files,
            "tables": report.tables.len(),
            "setup_s": secs(Some(started), m.kick_off),
            "kickoff_to_manifest_s": secs(m.kick_off, m.manifest),
            "download_s": secs(m.first_file, m.downloaded),
            "tail_s": secs(m.downloaded, Some(finished)),
            "rss_start": rss_start,
            "rss_peak": proc_status_bytes("VmHWM:"),
            "rss_max_during_export": r.during_export,
            "rss_max_after_export": r.after_export,
            "views": report.views.iter().map(|(name, v)| json!({
                "name": name,
                "resources_in": v.inserted + v.updated,
                "removed": v.removed,
                "rebuilt": v.rebuilt,
                "commit_s": v.commit_seconds,
            })).collect::<Vec<_>>(),
        });
        println!("RESULT {out}");
        Ok(())
    })
}

fn run_child(
    exe: &Path,
    endpoint: &url::Url,
    delta: &Path,
    types: &[String],
    views: &str,
) -> anyhow::Result<Value> {
    let output = Command::new(exe)
        .args([
            "--phase",
            "sync",
            "--endpoint",
            endpoint.as_str(),
            "--sync-types",
            &types.join(","),
            "--views",
            views,
        ])
        .arg("--delta")
        .arg(delta)
        // Warnings and errors only: the figures are the output.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting the sync process")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("the sync process failed ({}):\n{stdout}", output.status);
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| anyhow!("the sync process printed no result:\n{stdout}"))?;
    Ok(serde_json::from_str(line)?)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn print_result(label: &str, v: &Value) {
    let wall = f(v, "wall_s");
    let bytes = u(v, "bytes");
    let resources = u(v, "resources");
    println!("-- {label}");
    println!(
        "  export size        {:>10.1} MB NDJSON ({} files, {} tables)",
        mb(bytes),
        u(v, "files"),
        u(v, "tables")
    );
    println!(
        "  resources          {resources:>10} (rejected {})",
        u(v, "rejects")
    );
    println!(
        "  rows               {:>10} inserted, {} updated, {} unchanged, {} deleted",
        u(v, "inserted"),
        u(v, "updated"),
        u(v, "unchanged"),
        u(v, "deleted")
    );
    println!("  wall time          {wall:>10.2} s");
    println!(
        "  throughput         {:>10.1} MB/s, {:.0} resources/s",
        mb(bytes) / wall,
        resources as f64 / wall
    );
    println!(
        "  phases             {:>10.2} s open tables + kick-off, {:.2} s to manifest, {:.2} s downloads (encoding overlaps), {:.2} s encode tail + commits",
        f(v, "setup_s"),
        f(v, "kickoff_to_manifest_s"),
        f(v, "download_s"),
        f(v, "tail_s")
    );
    println!(
        "  peak RSS (VmHWM)   {:>10.1} MiB (at start {:.1} MiB; max sampled during export {:.1} MiB, after {:.1} MiB)",
        mib(u(v, "rss_peak")),
        mib(u(v, "rss_start")),
        mib(u(v, "rss_max_during_export")),
        mib(u(v, "rss_max_after_export"))
    );
    for view in v
        .get("views")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "  view {:<22} {:>6.2} s commit; rows of {} resources written, of {} removed{}",
            view["name"].as_str().unwrap_or(""),
            f(view, "commit_s"),
            u(view, "resources_in"),
            u(view, "removed"),
            if view["rebuilt"] == json!(true) {
                " (built from its table)"
            } else {
                ""
            }
        );
    }
}

/// Changes `changed_pct` % of each type's resources (a new `meta.versionId`/`lastUpdated` and a
/// changed `language`) and adds `new_pct` % copies under new ids. Returns (changed, added).
fn change_server(
    server: &TestServer,
    types: &[String],
    changed_pct: f64,
    new_pct: f64,
) -> anyhow::Result<(u64, u64)> {
    let store = server.store();
    let (mut changed, mut added) = (0u64, 0u64);
    for t in types {
        let ids = store.ids(t);
        let n = ids.len();
        let pick = |pct: f64| ((n as f64 * pct / 100.0).round() as usize).min(n);
        let (c, a) = (pick(changed_pct), pick(new_pct));
        // Spread over the whole table, as real changes are: each touches a different file.
        let stride = |k: usize| n.checked_div(k).unwrap_or(1).max(1);
        for id in ids.iter().step_by(stride(c)).take(c) {
            let mut r = store
                .get(t, id)
                .ok_or_else(|| anyhow!("{t}/{id} vanished"))?;
            r["language"] = json!("en-AU");
            store.upsert(r)?;
            changed += 1;
        }
        for (k, id) in ids
            .iter()
            .skip(stride(a) / 2)
            .step_by(stride(a))
            .take(a)
            .enumerate()
        {
            let mut r = store
                .get(t, id)
                .ok_or_else(|| anyhow!("{t}/{id} vanished"))?;
            r["id"] = json!(format!("bench-{k}"));
            if let Some(meta) = r.get_mut("meta").and_then(Value::as_object_mut) {
                meta.remove("versionId");
            }
            store.upsert(r)?;
            added += 1;
        }
    }
    Ok((changed, added))
}

fn parent(args: &[String]) -> anyhow::Result<()> {
    let patients: usize = arg_or(args, "--patients", "BENCH_PATIENTS", 3_200)?;
    let seed: u64 = arg_or(args, "--seed", "BENCH_SEED", 1)?;
    let types_arg: String = arg_or(args, "--types", "BENCH_TYPES", "all".to_string())?;
    let changed_pct: f64 = arg_or(args, "--changed-pct", "BENCH_CHANGED_PCT", 1.0)?;
    let new_pct: f64 = arg_or(args, "--new-pct", "BENCH_NEW_PCT", 1.0)?;
    let per_file: usize = arg_or(
        args,
        "--resources-per-file",
        "BENCH_RESOURCES_PER_FILE",
        10_000,
    )?;
    let tmp = match arg(args, "--dir") {
        Some(d) => {
            tempfile::tempdir_in(&d).with_context(|| format!("temporary directory in {d}"))?
        }
        None => tempfile::tempdir()?,
    };
    let delta: PathBuf = tmp.path().join("delta");
    let views: String = arg_or(args, "--views", "BENCH_VIEWS", String::new())?;
    let exe = std::env::current_exe()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server = runtime.block_on(TestServer::start(ServerConfig {
        data: DataSource::Synthetic { patients, seed },
        resources_per_file: per_file,
        polls_before_complete: 0,
        ..ServerConfig::default()
    }))?;
    let counts = server.store().counts();
    let types: Vec<String> = match types_arg.as_str() {
        "all" => counts.keys().cloned().collect(),
        "default" => DEFAULT_RESOURCE_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        list => list
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    let total: u64 = types
        .iter()
        .map(|t| counts.get(t).copied().unwrap_or(0))
        .sum();
    println!("fhirsync end-to-end sync benchmark");
    println!(
        "  {patients} synthetic patients (seed {seed}), {total} resources in {} types: {}",
        types.len(),
        types.join(",")
    );
    println!(
        "  {per_file} resources per file; {} cores; delta tables in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        delta.display()
    );

    let full = run_child(&exe, &server.base_url(), &delta, &types, &views)?;
    print_result("full sync (empty tables)", &full);
    println!("  tables on disk     {:>10.1} MB", mb(dir_size(&delta)));

    let t = Instant::now();
    let (changed, added) = change_server(&server, &types, changed_pct, new_pct)?;
    println!(
        "\n  server: {changed} resources changed, {added} added ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    let incremental = run_child(&exe, &server.base_url(), &delta, &types, &views)?;
    print_result(
        &format!("incremental sync ({changed_pct}% changed + {new_pct}% new)"),
        &incremental,
    );
    if u(&incremental, "updated") != changed || u(&incremental, "inserted") != added {
        bail!(
            "the incremental sync merged {} updates and {} inserts; expected {changed} and {added}",
            u(&incremental, "updated"),
            u(&incremental, "inserted")
        );
    }
    runtime.block_on(server.shutdown());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As the `fhirsync` binary does, so the child syncs' RSS is the binary's.
    fhirsync::memory::limit_malloc_arenas();
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` lists and runs benches with `--list`/no args: nothing to do there.
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    match arg(&args, "--phase").as_deref() {
        Some("sync") => child(&args),
        Some(other) => bail!("unknown --phase {other}"),
        None => parent(&args),
    }
}
