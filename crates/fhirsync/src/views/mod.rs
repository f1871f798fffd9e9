//! SQL on FHIR views over the synced tables: reading a ViewDefinition file, what the
//! encoding of a table can serve a view, and a view run over a resource table.
mod run;

pub use run::{ViewRun, run_over_table};

use std::path::Path;

use anyhow::Context;
use fhir_views::view::ViewDefinition;
use serde_json::Value;

/// A checked view, with what the tables must keep to serve it.
#[derive(Debug, Clone)]
pub struct LoadedView {
    pub definition: ViewDefinition,
    /// An expression reads `extension`: tables encoded without extensions cannot serve it.
    pub reads_extensions: bool,
}

/// Reads and checks the ViewDefinition in `path` (JSON); the error names the file and the
/// offending element.
pub fn read_view(path: &Path) -> anyhow::Result<LoadedView> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the view {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("the view {} is not JSON", path.display()))?;
    LoadedView::from_json(&json)
        .with_context(|| format!("the view {} is not valid", path.display()))
}

impl LoadedView {
    /// Checks the ViewDefinition `json`.
    pub fn from_json(json: &Value) -> Result<LoadedView, fhir_views::ViewError> {
        Ok(LoadedView {
            definition: ViewDefinition::from_json(json)?,
            reads_extensions: reads_extensions(json),
        })
    }
}

/// Whether any expression of the view (`json`, the definition as read) reads extensions.
pub(crate) fn reads_extensions(json: &Value) -> bool {
    match json {
        Value::Object(members) => members
            .iter()
            .any(|(key, value)| match (key.as_str(), value) {
                ("path" | "forEach" | "forEachOrNull", Value::String(p)) => p.contains("extension"),
                ("repeat", Value::Array(paths)) => paths
                    .iter()
                    .any(|p| p.as_str().is_some_and(|p| p.contains("extension"))),
                _ => reads_extensions(value),
            }),
        Value::Array(items) => items.iter().any(reads_extensions),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extension_reads_are_found_in_every_kind_of_path() {
        let plain =
            json!({"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]});
        assert!(!reads_extensions(&plain));
        for select in [
            json!({"column": [{"name": "race", "path": "extension('http://x').value.ofType(Coding).code"}]}),
            json!({"forEach": "extension.where(url = 'x')", "column": []}),
            json!({"unionAll": [{"forEachOrNull": "address.extension", "column": []}]}),
            json!({"repeat": ["item", "extension"], "column": []}),
        ] {
            let view = json!({"resource": "Patient", "select": [select]});
            assert!(reads_extensions(&view), "{view}");
        }
        let in_where =
            json!({"resource": "Patient", "where": [{"path": "extension.exists()"}], "select": []});
        assert!(reads_extensions(&in_where));
    }
}
