//! One sync: a Bulk Data export (or a local NDJSON directory), encoded and committed into one
//! Delta table per resource type, with the export's `transactionTime` committed in the same
//! Delta commit as the data.
//!
//! Crash safety rests on three facts:
//! - every table commit carries a Delta `txn` (app id = the sync's identity, version = the
//!   export's `transactionTime` in epoch ms), so re-applying an export to a table that already
//!   has it is skipped;
//! - the next `_since` is the oldest cursor committed across the requested tables (the state
//!   file is written only after all of them committed), so the cursor is never ahead of data;
//! - the export's job (status URL, manifest, finished files) is persisted by the bulk client in
//!   the work directory, so an interrupted export is resumed while the server still has it.
//!
//! This file is the sync from start to end; each step lives in a module of its own.
mod apply;
mod backfill;
mod client;
mod commit;
mod cursor;
mod encoding;
mod export;
mod import;
mod input;
mod limits;
mod members;
mod pool;
mod reconcile;
mod rejects;
mod setup;
#[cfg(test)]
mod tests;
mod view_commit;
mod view_slots;

use std::time::Instant;

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use delta_sink::WriteStatus;
use fhir_bulk::BulkClient;
use tokio_util::sync::CancellationToken;

pub use client::{SyncClient, authenticate, client_config};
pub use cursor::sync_identity;
pub use import::{ImportRequest, run_import};
pub use limits::explain;

use crate::config::SyncOptions;
use crate::run::{RunKind, SyncEvents, SyncReport};
use crate::state::{SyncLock, SyncState};

/// Runs one sync as configured: lock, export (resuming an interrupted one), encode, commit,
/// state file. Returns when every table has committed, or with the first error.
pub async fn run_sync(
    opts: &SyncOptions,
    kind: RunKind,
    client: SyncClient,
    cancel: CancellationToken,
) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    let SyncClient {
        mut config,
        tokens,
        sync_events: events,
    } = client;
    let retries = client::RetryCounts::default();
    config.events = Some(client::count_retries(config.events.take(), retries.clone()));
    let work = setup::WorkDir::for_options(opts)?;
    let _lock = SyncLock::try_acquire(&work.lock_path())?;
    let mut state = SyncState::load(&work.state_file)?;

    // A server that refuses `_since` gets full refreshes (unless `--since` was asked for).
    let sync_id = cursor::sync_identity(&opts.fhir_endpoint, opts.group_id.as_deref());
    let mut opts_now = if limits::since_known_refused(&state, &sync_id) && opts.since.is_none() {
        limits::without_since(opts)
    } else {
        opts.clone()
    };
    let attempt = |o: &SyncOptions, state: &SyncState| {
        let (config, events) = (config.clone(), events.clone());
        let (cancel, work) = (&cancel, &work);
        let o = o.clone();
        let state = state.clone();
        async move { sync_locked(&o, kind, config, events, cancel, work, &state).await }
    };
    let mut result = attempt(&opts_now, &state).await;
    if let Err(e) = &result
        && opts.since.is_none()
        && !limits::since_known_refused(&state, &sync_id)
        && let Some(text) = limits::since_refusal(e)
    {
        limits::note_since_refused(&mut state, &text);
        opts_now = limits::without_since(opts);
        result = attempt(&opts_now, &state).await;
    }
    // An export whose job the server forgot, or whose files expired: nothing was committed;
    // its files and jobs go, and a new export starts with new writers.
    if let Err(e) = &result
        && limits::needs_new_export_now(e)
    {
        tracing::warn!(error = %crate::error_line::error_line(e), "the export can no longer deliver its data: starting a new one");
        export::discard(&config, &work.export_dir()).await;
        export::discard(&config, &work.new_members_dir()).await;
        result = attempt(&opts_now, &state).await;
    }
    // A failed job goes at once; one interrupted for a passing reason (network, timeout, a
    // stop) stays, for the next run to resume.
    if let Err(e) = &result
        && limits::export_failed(e)
    {
        export::discard(&config, &work.export_dir()).await;
        export::discard(&config, &work.new_members_dir()).await;
    }
    let types_sent = !opts.resource_types.is_empty();
    let mut result = result.map_err(|e| limits::explain(e, types_sent));
    if let Ok(report) = &result {
        limits::note_unlisted_deletions(&mut state, report);
    }
    if let Ok(report) = result.as_mut() {
        report.duration = started.elapsed();
        report.http_retries = retries.lock().map(|r| r.clone()).unwrap_or_default();
        report.token_refreshes = tokens.as_ref().map_or(0, |t| t.token_refreshes());
    }
    cursor::record_result(&mut state, opts, &result);
    if let Err(e) = state.store(&work.state_file) {
        // The tables carry the cursor; a lost state write costs nothing but this warning.
        tracing::warn!(error = %e, "could not write the state file");
        if result.is_ok() {
            return Err(e.into());
        }
    }
    result
}

async fn sync_locked(
    opts: &SyncOptions,
    kind: RunKind,
    config: fhir_bulk::ClientConfig,
    events: SyncEvents,
    cancel: &CancellationToken,
    work: &setup::WorkDir,
    state: &SyncState,
) -> anyhow::Result<SyncReport> {
    // Where the export starts.
    let sink = setup::sink(
        &opts.delta_path,
        &opts.storage_options,
        opts.deletion_vectors,
    )?;
    encoding::check_tables_fit(&sink, opts).await?;
    let app_id = cursor::sync_identity(&opts.fhir_endpoint, opts.group_id.as_deref());
    let full = kind == RunKind::FullRefresh || opts.full_refresh;
    let since = match (opts.since, full) {
        (Some(s), _) => Some(s.with_timezone(&Utc)),
        (None, true) => None,
        (None, false) => cursor::resume_cursor(&sink, &app_id, &opts.resource_types, state).await?,
    };

    // The views are checked before anything is exported.
    let views = crate::views::read_views(&opts.views, Some(&opts.resource_types))?;
    // The tables' writers, ready before the first file arrives.
    let reconcile = reconcile::reconciles(opts, full);
    let input = input::ApplyInput {
        app_id: app_id.clone(),
        mode: opts.save_mode,
        types: Some(opts.resource_types.iter().cloned().collect()),
        reconcile,
        max_rejects: opts.max_rejects,
        rejects_dir: rejects::rejects_dir(&opts.delta_path, Some(&work.dir)),
        events,
        cancel: cancel.clone(),
        views,
    };
    let encoder = setup::encoder(opts.max_nesting_level, opts.extensions, opts.keep_json);
    let mut applier = apply::Applier::new(&sink, encoder, input).await?;
    applier.remove_inputs_once_encoded();

    // The export: files are encoded as they finish downloading. A Group's members are read
    // first: after a `_since` export, those who joined since (their earlier data is left out
    // of it) are exported too; those who join while it runs are found by the next run.
    let request = export::export_request(opts, since);
    let export_dir = work.export_dir();
    let new_members_dir = work.new_members_dir();
    let exported = async {
        let group = match &opts.group_id {
            Some(group_id) => {
                let client =
                    BulkClient::new(config.clone()).context("configuring the Bulk Data client")?;
                let read = members::read(&client, group_id).await;
                members::joined(read, &sink, opts, &app_id, since, &work.dir).await?
            }
            None => members::Joined::default(),
        };
        let (client, summary) = export::export_into(
            &mut applier,
            config.clone(),
            &request,
            &export_dir,
            opts.timeout,
            cancel,
        )
        .await?;
        if reconcile && let Some(group_id) = &opts.group_id {
            // The group's members once its export is done: who may lose rows.
            let read = members::read(&client, group_id).await;
            let exported_patients = applier.exported_ids("Patient")?;
            let members = reconcile::group_members(group_id, &read, exported_patients)?;
            applier.reconcile_within_group(members);
        }
        let mut more = Vec::new();
        if !group.new.is_empty() {
            more = backfill::export_new_members(
                &mut applier,
                &config,
                opts,
                &group.new,
                &new_members_dir,
                cancel,
            )
            .await?;
        }
        anyhow::Ok((client, summary, group, more))
    }
    .await;
    let (_, summary, joined, more) = match exported {
        Ok(done) => done,
        Err(e) => {
            let e = limits::mark_since_refusal(e, since.is_some());
            return Err(applier.abandon(e).await);
        }
    };

    // The commits, each table with the export's deletions and cursor (the `_since` export's:
    // the new members' exports add data from before it).
    let transaction_time = summary.manifest.transaction_time.with_timezone(&Utc);
    let deletions: Vec<(String, String)> = summary
        .deletions()
        .map(|d| (d.resource_type.clone(), d.id.clone()))
        .collect();
    let deletions_listed = deletions.len();
    // A cancellation stops the encoding, or lets the commits begun finish and starts no other.
    let mut report = applier.finish(deletions, transaction_time).await?;
    report.since = since.map(|s| s.to_rfc3339_opts(SecondsFormat::Millis, true));
    report.deletions_listed = deletions_listed;
    report.new_group_members = joined.new.len() as u64;
    for s in std::iter::once(&summary).chain(more.iter().map(|(_, s)| s)) {
        report.bytes_downloaded += s.bytes;
        report.resumed_files += s.resumed_files;
    }
    // The members are recorded once their data is in every table; a table that had this
    // export already may lack what this run's new members brought (they may differ from the
    // first run's), so then the record stays as it was and the next run asks again.
    if let Some(members) = joined.record
        && report.tables.values().all(|t| {
            matches!(
                t.status,
                Some(WriteStatus::Committed | WriteStatus::NothingToDo)
            )
        })
    {
        members::store_record(&work.dir, &app_id, transaction_time, members);
    }

    // Every table has the data: we may now drop our copy of the files and the server its jobs
    // (this run's, and any an earlier run of other new members left).
    export::discard(&config, &export_dir).await;
    export::discard(&config, &new_members_dir).await;
    Ok(report)
}
