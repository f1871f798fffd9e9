use anyhow::Context;
use clap::ArgAction;
use delta_sink::{DeltaSink, StorageOptions};
use fhirsync::logging::LogMode;
use fhirsync::state::SyncState;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the Delta tables live: a directory or `s3://bucket/prefix`
    #[arg(long, value_name = "PATH", env = "DELTA_PATH")]
    pub delta_path: String,

    /// Sync state file [default: <delta-path>/_fhirsync/state.json]
    #[arg(long, value_name = "FILE")]
    pub state_file: Option<std::path::PathBuf>,

    /// Print one JSON object on stdout instead of a table
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub json: bool,
}

pub async fn run(args: Args, _mode: LogMode) -> anyhow::Result<()> {
    let state =
        match fhirsync::config::default_state_file(&args.delta_path, args.state_file.as_deref()) {
            Some(path) => Some((path.clone(), SyncState::load(&path)?)),
            None => None,
        };
    let sink = DeltaSink::new(&args.delta_path, StorageOptions::from_env())?;
    let tables = fhirsync::tables::list_tables(&sink, &args.delta_path, None).await?;
    let mut stats = Vec::new();
    for (name, table) in &tables {
        stats.push((
            name.clone(),
            table
                .stats()
                .await
                .with_context(|| format!("reading the {name} table"))?,
        ));
    }
    let views = fhirsync::tables::list_views(&sink, &args.delta_path).await?;
    let mut view_stats = Vec::new();
    for (name, table) in &views {
        view_stats.push((
            name.clone(),
            table
                .stats()
                .await
                .with_context(|| format!("reading the view {name}"))?,
        ));
    }
    if args.json {
        let as_map = |stats: &[(String, delta_sink::TableStats)]| {
            stats
                .iter()
                .map(|(n, s)| Ok((n.clone(), serde_json::to_value(s)?)))
                .collect::<anyhow::Result<serde_json::Map<String, serde_json::Value>>>()
        };
        let out = serde_json::json!({
            "delta_path": args.delta_path,
            "state_file": state.as_ref().map(|(p, _)| p.display().to_string()),
            "state": state.as_ref().map(|(_, s)| s),
            "tables": as_map(&stats)?,
            "views": as_map(&view_stats)?,
        });
        println!("{out}");
        return Ok(());
    }
    if let Some((path, s)) = &state {
        println!("state file:        {}", path.display());
        println!(
            "cursor (last_sync_time): {}",
            s.last_sync_time.as_deref().unwrap_or("-")
        );
        println!(
            "last success:      {}",
            s.last_success_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into())
        );
        if let Some(e) = &s.last_error {
            println!("last error:        {e}");
        }
    }
    print_stats("table", &stats);
    if stats.is_empty() {
        println!("(no tables under {})", args.delta_path);
    }
    if !view_stats.is_empty() {
        println!();
        print_stats("view", &view_stats);
    }
    Ok(())
}

/// One line per table: version, rows, files, size and the last cursor committed.
fn print_stats(kind: &str, stats: &[(String, delta_sink::TableStats)]) {
    println!(
        "{:<24} {:>8} {:>12} {:>7} {:>12}  last cursor",
        kind, "version", "rows", "files", "size (MB)"
    );
    for (name, s) in stats {
        let cursor = s
            .last_sync
            .as_ref()
            .and_then(|m| m.transaction_time)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:>8} {:>12} {:>7} {:>12.2}  {cursor}",
            name,
            s.version,
            s.rows.map(|r| r.to_string()).unwrap_or_else(|| "?".into()),
            s.files,
            s.size_bytes as f64 / 1e6
        );
    }
}
