use anyhow::Context;
use clap::ArgAction;
use fhirsync::config::{ConfigFile, ProcessEnv, SyncArgs};
use fhirsync::logging::LogMode;
use fhirsync::progress::Progress;
use fhirsync::run::{RunKind, SyncReport};
use fhirsync::sync;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Print the report as one JSON object on stdout instead of a table
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    pub json: bool,
}

pub async fn run(args: Args, mode: LogMode) -> anyhow::Result<()> {
    let env = ProcessEnv;
    let file = match args.sync.config_path(&env) {
        Some(path) => Some(ConfigFile::load(&path)?),
        None => None,
    };
    let opts = args.sync.resolve(&env, file.as_ref().map(|f| &f.options))?;
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let mut client = sync::client_config(&opts, mode).await?;
    // On a terminal a bar follows the export; in JSON mode the logs say it all.
    let progress = (mode == LogMode::Human).then(|| Progress::new("export", "starting"));
    if let Some(p) = &progress {
        client.events = Some(p.handler(client.events.take()));
        client.sync_events = p.sync_events();
    }
    let kind = if opts.full_refresh {
        RunKind::FullRefresh
    } else {
        RunKind::Incremental
    };
    let result = sync::run_sync(&opts, kind, client, cancel).await;
    if let Some(p) = &progress {
        p.finish();
    }
    let report = result.context("sync failed")?;
    print_report(&report, args.json)
}

/// Ctrl-C / SIGTERM cancel the sync; it stops at the next safe point and the next run resumes.
pub fn cancel_on_signal(cancel: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::warn!("interrupted: stopping at the next safe point");
        cancel.cancel();
    });
}

pub fn print_report(report: &SyncReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  version",
        "table", "resources", "inserted", "updated", "unchanged", "deleted", "rejected"
    );
    for (t, r) in &report.tables {
        let version = r
            .version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        let note = match r.status {
            Some(delta_sink::WriteStatus::AlreadyApplied) => " (already applied)",
            Some(delta_sink::WriteStatus::IgnoredExisting) => " (exists, ignored)",
            _ => "",
        };
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {version}{note}",
            t,
            r.resources,
            r.inserted,
            r.updated,
            r.unchanged,
            r.deleted + r.reconciled,
            r.rejected
        );
    }
    if !report.views.is_empty() {
        println!(
            "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}  version",
            "view", "reads", "inserted", "updated", "removed", "failed"
        );
        for (name, v) in &report.views {
            let version = v
                .version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into());
            let note = match v.status {
                Some(delta_sink::WriteStatus::AlreadyApplied) => " (already applied)",
                _ if v.rebuilt => " (built from its table)",
                _ => "",
            };
            println!(
                "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}  {version}{note}",
                name, v.resource_type, v.inserted, v.updated, v.removed, v.failed
            );
        }
    }
    println!(
        "cursor (transactionTime): {}   since: {}   downloaded: {:.1} MB   duration: {:.1} s",
        report.transaction_time.as_deref().unwrap_or("-"),
        report.since.as_deref().unwrap_or("(full export)"),
        report.bytes_downloaded as f64 / 1e6,
        report.duration.as_secs_f64()
    );
    if report.new_group_members > 0 {
        println!(
            "{} patients joined the group since the last sync: their earlier data was exported too",
            report.new_group_members
        );
    }
    if let Some(path) = &report.rejects_file {
        println!(
            "{} rejected resources listed in {}",
            report.rejects,
            path.display()
        );
    }
    Ok(())
}
