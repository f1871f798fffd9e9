//! Whether the existing tables fit this sync's encoding, checked before anything is exported:
//! a table written with other `--extensions` or `--max-nesting-level` settings would refuse
//! the sync's rows at its commit, after the whole export.
use anyhow::{Context, bail};
use delta_sink::{DeltaSink, ResourceTable};

use super::setup;
use crate::config::{DEFAULT_MAX_NESTING_LEVEL, SyncOptions};

/// The deepest nesting level tried when finding what a table was written with.
const DEEPEST_LEVEL_TRIED: usize = 10;

/// Refuses a sync whose encoding differs from that of a table it would write, naming the
/// settings the table was written with where they can be found.
pub(super) async fn check_tables_fit(sink: &DeltaSink, opts: &SyncOptions) -> anyhow::Result<()> {
    let encoder = setup::encoder(opts.max_nesting_level, opts.extensions, opts.keep_json);
    let asked = settings(opts.extensions, opts.max_nesting_level, opts.keep_json);
    for resource_type in &opts.resource_types {
        // A type the encoder cannot encode is reported when its first file arrives.
        let Ok(schema) = encoder.schema(resource_type) else {
            continue;
        };
        let table = sink
            .table(resource_type)
            .await
            .with_context(|| format!("opening the {resource_type} table"))?;
        let Some(difference) = table.schema_difference(&schema)? else {
            continue;
        };
        match written_with(&table, resource_type, opts) {
            Some((extensions, level, keep_json)) => bail!(
                "the {resource_type} table was written with {}; this sync encodes with {asked} \
                 ({difference}): sync with the table's settings, or into a new --delta-path",
                settings(extensions, level, keep_json)
            ),
            None => bail!(
                "the {resource_type} table does not fit this sync's encoding ({asked}): \
                 {difference}; it was written with other encoding settings or by another \
                 encoding version: sync into a new --delta-path"
            ),
        }
    }
    Ok(())
}

/// The extensions setting and nesting level whose schema the table has, if any does. Levels
/// deeper than a type's recursion give the same schema: the level asked for, then the default
/// one, are tried first, so the answer names the likeliest.
fn written_with(
    table: &ResourceTable,
    resource_type: &str,
    opts: &SyncOptions,
) -> Option<(bool, usize, bool)> {
    let first = [opts.max_nesting_level, DEFAULT_MAX_NESTING_LEVEL];
    let levels: Vec<usize> = first
        .into_iter()
        .chain((0..=DEEPEST_LEVEL_TRIED).filter(|l| !first.contains(l)))
        .collect();
    for keep_json in [opts.keep_json, !opts.keep_json] {
        for extensions in [opts.extensions, !opts.extensions] {
            for &level in &levels {
                let schema = setup::encoder(level, extensions, keep_json)
                    .schema(resource_type)
                    .ok()?;
                if matches!(table.schema_difference(&schema), Ok(None)) {
                    return Some((extensions, level, keep_json));
                }
            }
        }
    }
    None
}

fn settings(extensions: bool, level: usize, keep_json: bool) -> String {
    format!("--extensions={extensions} --max-nesting-level {level} --keep-json={keep_json}")
}
