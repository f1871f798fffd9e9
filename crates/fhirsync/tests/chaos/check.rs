//! The checks every scenario makes: the tables' rows against the fault-free run's, duplicate
//! ids, committed cursors against the data, orphan files after a vacuum, rejected lines.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail, ensure};
use arrow::array::{Array, RecordBatch, StringArray};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::DateTime;
use delta_sink::{DeltaSink, StorageOptions};
use deltalake::ObjectStore;
use fhirsync::state::SyncState;
use futures::TryStreamExt;

use crate::tally::{self, Tally};

/// `id -> the row, every column rendered`.
pub type Rows = BTreeMap<String, String>;
/// `type -> rows` over the tables a sync writes.
pub type Contents = BTreeMap<String, Rows>;

fn sink(delta: &str) -> anyhow::Result<DeltaSink> {
    Ok(DeltaSink::new(delta, StorageOptions::from_env())?)
}

/// `id -> row` of batches with an `id` column; duplicate ids are counted in `tally`.
fn rows(t: &str, batches: &[RecordBatch], tally: &Tally) -> anyhow::Result<Rows> {
    let mut out = BTreeMap::new();
    let options = FormatOptions::default().with_null("null");
    let mut duplicates = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("id")
            .context("a table without an id column")?;
        let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Utf8)?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .context("ids are strings")?;
        let columns = b
            .schema()
            .fields()
            .iter()
            .zip(b.columns())
            .map(|(f, c)| {
                Ok((
                    f.name().clone(),
                    ArrayFormatter::try_new(c.as_ref(), &options)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for i in 0..b.num_rows() {
            let row: Vec<String> = columns
                .iter()
                .map(|(name, format)| format!("{name}={}", format.value(i)))
                .collect();
            if out
                .insert(ids.value(i).to_string(), row.join(", "))
                .is_some()
            {
                duplicates.push(ids.value(i).to_string());
            }
        }
    }
    if !duplicates.is_empty() {
        tally.add(tally::DUPLICATE_IDS, duplicates.len() as u64);
        bail!(
            "{t} holds duplicate ids: {:?}",
            &duplicates[..duplicates.len().min(5)]
        );
    }
    Ok(out)
}

/// Every row of table `t` (none when the table does not exist).
pub async fn table_rows(delta: &str, t: &str, tally: &Tally) -> anyhow::Result<Rows> {
    if !sink(delta)?.table(t).await?.exists() {
        return Ok(Rows::new());
    }
    let batches = fhirsync::tables::query(delta, &format!("SELECT * FROM {t}"), Some(&[t.into()]))
        .await
        .with_context(|| format!("reading the {t} table"))?;
    rows(t, &batches, tally)
}

/// The rows of every table of `types`.
pub async fn contents(delta: &str, types: &[&str], tally: &Tally) -> anyhow::Result<Contents> {
    let mut out = Contents::new();
    for t in types {
        out.insert(t.to_string(), table_rows(delta, t, tally).await?);
    }
    Ok(out)
}

/// How `actual` differs from `expected`: counts and a few ids of rows missing, extra or changed.
pub fn difference(expected: &Rows, actual: &Rows) -> (u64, String) {
    let few = |ids: Vec<&String>| format!("{} {:?}", ids.len(), &ids[..ids.len().min(4)]);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|id| !actual.contains_key(*id))
        .collect();
    let extra: Vec<&String> = actual
        .keys()
        .filter(|id| !expected.contains_key(*id))
        .collect();
    let changed: Vec<&String> = expected
        .iter()
        .filter(|(id, row)| actual.get(*id).is_some_and(|a| a != *row))
        .map(|(id, _)| id)
        .collect();
    let lost = (missing.len() + changed.len()) as u64;
    let text = format!(
        "missing {}, extra {}, changed {}",
        few(missing),
        few(extra),
        few(changed)
    );
    (lost, text)
}

/// Fails unless every table of `delta` holds exactly `expected`'s rows; rows missing or
/// changed count as lost.
pub async fn same_as(
    delta: &str,
    expected: &Contents,
    tally: &Tally,
    context: &str,
) -> anyhow::Result<()> {
    for (t, rows) in expected {
        let actual = table_rows(delta, t, tally).await?;
        if actual != *rows {
            let (lost, text) = difference(rows, &actual);
            tally.add(tally::LOST, lost);
            bail!("{t} differs from the fault-free run: {text} ({context})");
        }
    }
    Ok(())
}

/// The cursor (`txn` version: the export's `transactionTime` in epoch ms) each existing table
/// carries under `app_id`. A table committed without one is an error.
pub async fn cursors(
    delta: &str,
    app_id: &str,
    types: &[&str],
) -> anyhow::Result<BTreeMap<String, i64>> {
    let sink = sink(delta)?;
    let mut out = BTreeMap::new();
    for t in types {
        let table = sink.table(t).await?;
        if !table.exists() {
            continue;
        }
        match table.committed_version(app_id).await? {
            Some(v) => {
                out.insert(t.to_string(), v);
            }
            None => bail!("{t} was committed without a cursor"),
        }
    }
    Ok(out)
}

/// After any run, finished or not: each table holds exactly the rows of the export its cursor
/// names (`expected(type, cursor)`), and the state file's cursor is not ahead of any table's.
pub async fn consistent<'a>(
    delta: &str,
    state_file: &std::path::Path,
    app_id: &str,
    types: &[&str],
    expected: impl Fn(&str, i64) -> &'a Rows,
    tally: &Tally,
    context: &str,
) -> anyhow::Result<()> {
    let cursors = cursors(delta, app_id, types).await?;
    for (t, cursor) in &cursors {
        let actual = table_rows(delta, t, tally).await?;
        let want = expected(t, *cursor);
        if actual != *want {
            let (lost, text) = difference(want, &actual);
            tally.add(tally::CURSORS_AHEAD, 1);
            tally.add(tally::LOST, lost);
            bail!("{t} carries cursor {cursor} but not that export's rows: {text} ({context})");
        }
    }
    let state = SyncState::load(state_file)?;
    if let Some(last) = state.last_sync_time {
        let last = DateTime::parse_from_rfc3339(&last)?.timestamp_millis();
        for t in types {
            if cursors.get(*t).is_none_or(|c| *c < last) {
                tally.add(tally::CURSORS_AHEAD, 1);
                bail!(
                    "the state file's cursor {last} is ahead of {t}'s {:?} ({context})",
                    cursors.get(*t)
                );
            }
        }
    }
    Ok(())
}

/// Files of table `t` that its current version does not reference (data files and deletion
/// vectors; the log aside).
pub async fn unreferenced_files(delta: &str, t: &str) -> anyhow::Result<Vec<String>> {
    let table = sink(delta)?.table(t).await?;
    if !table.exists() {
        return Ok(Vec::new());
    }
    let delta_table = table.delta_table();
    let mut live = BTreeSet::new();
    for file in delta_table.snapshot()?.log_data() {
        live.insert(file.path().to_string());
        if let Some(dv) = file.deletion_vector_descriptor()
            && dv.storage_type.as_ref() == "u"
        {
            live.insert(deletion_vector_file(&dv.path_or_inline_dv)?);
        }
    }
    let listed: Vec<_> = delta_table.object_store().list(None).try_collect().await?;
    Ok(listed
        .into_iter()
        .map(|meta| meta.location.to_string())
        .filter(|p| !p.starts_with("_delta_log/") && !live.contains(p))
        .collect())
}

/// The file of a deletion vector stored beside the table (`storageType` `u`): a random prefix,
/// then the Z85-encoded UUID naming `deletion_vector_<uuid>.bin` (Delta protocol).
fn deletion_vector_file(path_or_inline: &str) -> anyhow::Result<String> {
    ensure!(
        path_or_inline.len() >= 20,
        "a deletion vector path {path_or_inline:?}"
    );
    let (prefix, encoded) = path_or_inline.split_at(path_or_inline.len() - 20);
    let bytes = z85::decode(encoded).map_err(|e| anyhow::anyhow!("{encoded:?}: {e:?}"))?;
    let uuid = uuid::Uuid::from_slice(&bytes)?;
    let name = format!("deletion_vector_{uuid}.bin");
    Ok(if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    })
}

/// Fails when a table of `delta` has files its log does not reference; `context` says when.
pub async fn no_orphans(
    delta: &str,
    types: &[&str],
    tally: &Tally,
    context: &str,
) -> anyhow::Result<()> {
    for t in types {
        let orphans = unreferenced_files(delta, t).await?;
        if !orphans.is_empty() {
            tally.add(tally::ORPHAN_FILES, orphans.len() as u64);
            bail!("{t} has files its log does not reference {context}: {orphans:?}");
        }
    }
    Ok(())
}

/// Counts the files a failed run left in the tables' directories that no commit references
/// (staged data files it did not delete): not an error (the next `vacuum` removes them, and
/// [`no_orphans`] checks that it does) but counted, since a failed run should leave nothing.
pub async fn left_behind(delta: &str, types: &[&str], tally: &Tally) -> anyhow::Result<()> {
    for t in types {
        let files = unreferenced_files(delta, t).await?;
        if !files.is_empty() {
            println!(
                "  note: a failed run left {} unreferenced files in {t}: {files:?}",
                files.len()
            );
            tally.add(tally::LEFT_BEHIND, files.len() as u64);
        }
    }
    Ok(())
}

/// The records of every rejects file under `dir` (`<delta-path>/_rejects`).
pub fn rejects(dir: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries {
        out.extend(rejects_in(&e?.path())?);
    }
    Ok(out)
}

/// The records of one rejects file.
pub fn rejects_in(file: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Fails unless the rejects under `dir` list every line of the bad-line files of `types`
/// (each such file's four lines, by type, file and line number).
pub fn bad_lines_listed(
    dir: &std::path::Path,
    types: &[&str],
    tally: &Tally,
) -> anyhow::Result<()> {
    let records = rejects(dir)?;
    for t in types {
        // The bad-line file of a type is its only file whose lines 1-4 are all rejected.
        let mut by_file: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for r in &records {
            if r["file"]
                .as_str()
                .is_some_and(|f| f.starts_with(&format!("{t}.")))
                && let (Some(file), Some(line)) = (r["file"].as_str(), r["line"].as_u64())
            {
                ensure!(
                    r["reason"].as_str().is_some_and(|s| !s.is_empty()),
                    "a reject without a reason: {r}"
                );
                by_file.entry(file.to_string()).or_default().insert(line);
            }
        }
        let complete = by_file
            .values()
            .any(|lines| (1..=4).all(|l| lines.contains(&l)));
        if !complete {
            tally.add(tally::UNLISTED_REJECTS, 4);
            let listed: Vec<String> = records
                .iter()
                .map(|r| format!("{}:{}", r["file"].as_str().unwrap_or("?"), r["line"]))
                .collect();
            bail!(
                "the rejects in {} do not list {t}'s four bad lines: {by_file:?} (all rejects: \
                 {listed:?})",
                dir.display()
            );
        }
    }
    Ok(())
}
