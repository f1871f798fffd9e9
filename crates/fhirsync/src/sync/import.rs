//! `fhirsync import`: a local directory of NDJSON files (e.g. an earlier `fhirsync export`)
//! applied like an export, with its manifest's `transactionTime` as the cursor and its
//! `deleted/` files as deletions.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};

use super::apply::apply_files;
use super::input::{ApplyInput, InputFile};
use super::rejects::rejects_dir;
use super::setup;
use crate::config::SaveMode;
use crate::files;
use crate::run::{SyncEvents, SyncReport};

/// What to import, and how.
#[derive(Clone, Debug)]
pub struct ImportRequest {
    pub input: PathBuf,
    pub delta_path: String,
    pub save_mode: SaveMode,
    pub resource_types: Option<Vec<String>>,
    pub max_rejects: Option<u64>,
    pub max_nesting_level: usize,
    pub extensions: bool,
    pub keep_json: bool,
    /// See [`crate::config::SyncOptions::deletion_vectors`].
    pub deletion_vectors: bool,
    /// Progress of encoding and commits.
    pub events: SyncEvents,
}

/// The identity under which imports commit their cursor.
pub(crate) const IMPORT_APP_ID: &str = "fhirsync:import";

pub async fn run_import(request: &ImportRequest) -> anyhow::Result<SyncReport> {
    let started = Instant::now();
    let dir = &request.input;
    let files = files::ndjson_files(dir)?
        .into_iter()
        .map(InputFile::local)
        .collect();
    let transaction_time = manifest_transaction_time(dir)?.unwrap_or_else(Utc::now);
    let deletions = read_deletions(&dir.join("deleted"))?;

    let sink = setup::sink(
        &request.delta_path,
        &BTreeMap::new(),
        request.deletion_vectors,
    )?;
    let encoder = setup::encoder(
        request.max_nesting_level,
        request.extensions,
        request.keep_json,
    );
    let input = ApplyInput {
        app_id: IMPORT_APP_ID.to_string(),
        mode: request.save_mode,
        types: request
            .resource_types
            .as_ref()
            .map(|t| t.iter().cloned().collect()),
        reconcile: false,
        max_rejects: request.max_rejects,
        rejects_dir: rejects_dir(&request.delta_path, None),
        events: request.events.clone(),
        cancel: Default::default(),
        views: Vec::new(),
    };
    let mut report = apply_files(&sink, encoder, files, deletions, input, transaction_time).await?;
    report.duration = started.elapsed();
    Ok(report)
}

/// The `transactionTime` of the manifest a `fhirsync export` left in `dir`, if there is one.
fn manifest_transaction_time(dir: &Path) -> anyhow::Result<Option<DateTime<Utc>>> {
    let path = dir.join(fhir_bulk::MANIFEST_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let tt = v
        .get("transactionTime")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow!("{} has no transactionTime", path.display()))?;
    let tt = DateTime::parse_from_rfc3339(tt)
        .with_context(|| format!("{}: transactionTime {tt:?}", path.display()))?;
    Ok(Some(tt.with_timezone(&Utc)))
}

/// The `(type, id)` pairs of the deletion Bundles in `dir` (none when it does not exist).
fn read_deletions(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut deletions = Vec::new();
    if !dir.is_dir() {
        return Ok(deletions);
    }
    for path in files::dir_entries(dir)?.into_iter().filter(|p| p.is_file()) {
        let reader = files::open_ndjson(&path)?;
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let bundle: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not a JSON Bundle", path.display(), n + 1))?;
            let (found, problems) = fhir_bulk::deletions(&bundle);
            for p in problems {
                tracing::warn!(file = %path.display(), line = n + 1, problem = %p, "ignored a deletion entry");
            }
            deletions.extend(found.into_iter().map(|d| (d.resource_type, d.id)));
        }
    }
    Ok(deletions)
}
