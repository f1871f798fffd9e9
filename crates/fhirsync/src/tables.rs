//! Finding the resource tables under a delta path, for `status`, `query` and `maintain`.
use std::path::Path;

use anyhow::Context;
use delta_sink::{DeltaSink, ResourceTable};

/// Suffix of every table directory (`<delta-path>/<Type>.parquet`, the Pathling layout).
pub const TABLE_SUFFIX: &str = ".parquet";

/// The tables under `delta_path`, sorted by type. A local path is listed; an object store path
/// is probed for every type the encoder supports (or `types`, when given).
pub async fn list_tables(
    sink: &DeltaSink,
    delta_path: &str,
    types: Option<&[String]>,
) -> anyhow::Result<Vec<(String, ResourceTable)>> {
    let candidates: Vec<String> = match types {
        Some(t) => t.to_vec(),
        None if !crate::config::is_remote_path(delta_path) => {
            let dir = Path::new(delta_path.strip_prefix("file://").unwrap_or(delta_path));
            let mut found = Vec::new();
            let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(t) = name.strip_suffix(TABLE_SUFFIX)
                    && entry.path().join("_delta_log").is_dir()
                {
                    found.push(t.to_string());
                }
            }
            found
        }
        None => fhir_encoder::Encoder::new(Default::default()).supported_types().into_iter().map(|t| t.to_string()).collect(),
    };
    let mut tables = Vec::new();
    for t in candidates {
        let table = sink.table(&t).await.with_context(|| format!("opening the {t} table"))?;
        if table.exists() {
            tables.push((t, table));
        }
    }
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tables)
}
