//! SQL on FHIR views over the synced tables: reading a ViewDefinition file, what the
//! encoding of a table can serve a view, and a view run over a resource table.
mod run;
pub mod stage;

pub use run::{TableResources, ViewRun, for_each_resource, run_over_table};

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use delta_sink::{DeltaSink, ResourceTable, SinkConfig};
use fhir_views::view::ViewDefinition;
use serde_json::Value;

/// A checked view, with what the tables must keep to serve it.
#[derive(Debug, Clone)]
pub struct LoadedView {
    pub definition: ViewDefinition,
    /// An expression reads `extension`: tables encoded without extensions cannot serve it.
    pub reads_extensions: bool,
}

/// A view the sync keeps current, as a table at `<delta-path>/views/<name>`.
#[derive(Debug, Clone)]
pub struct MaintainedView {
    pub name: String,
    pub definition: Arc<ViewDefinition>,
    pub reads_extensions: bool,
    /// Where the view came from, for messages.
    pub source: String,
}

impl MaintainedView {
    /// Reads and checks the view in `path`; it must have a `name` (its table's name).
    pub fn read(path: &Path) -> anyhow::Result<MaintainedView> {
        let loaded = read_view(path)?;
        let Some(name) = loaded.definition.name.clone() else {
            anyhow::bail!(
                "the view {} has no `name`: a view kept by the sync needs one, for its table \
                 (<delta-path>/views/<name>)",
                path.display()
            );
        };
        Ok(MaintainedView {
            name,
            definition: Arc::new(loaded.definition),
            reads_extensions: loaded.reads_extensions,
            source: path.display().to_string(),
        })
    }

    /// The cursor's app id in the view's table: the sync's, with the definition's
    /// fingerprint, so a changed definition finds no cursor of its own and is rebuilt.
    pub fn app_id(&self, sync_app_id: &str) -> String {
        format!("{sync_app_id}#view:{}", self.definition.fingerprint())
    }

    /// The view as a [`LoadedView`] (for a run over a table).
    pub fn loaded(&self) -> LoadedView {
        LoadedView {
            definition: self.definition.as_ref().clone(),
            reads_extensions: self.reads_extensions,
        }
    }
}

/// The table of the view `name`: `<delta-path>/views/<name>`, its rows matched by the
/// resource they came from (see [`stage`]).
pub async fn open_table(sink: &DeltaSink, name: &str) -> anyhow::Result<ResourceTable> {
    let config = SinkConfig {
        keys: stage::key_spec(),
        ..sink.config().clone()
    };
    Ok(sink
        .open_path(&format!("{VIEWS_DIR}/{name}"), config)
        .await?)
}

/// The folder under the delta path that holds the views' tables.
pub const VIEWS_DIR: &str = "views";

/// Reads every view of `paths`; refuses two views of one name and views of types the sync
/// does not write (`types`, when the sync names them).
pub fn read_views(
    paths: &[std::path::PathBuf],
    types: Option<&[String]>,
) -> anyhow::Result<Vec<Arc<MaintainedView>>> {
    let mut views: Vec<Arc<MaintainedView>> = Vec::new();
    for path in paths {
        let view = MaintainedView::read(path)?;
        if let Some(other) = views.iter().find(|v| v.name == view.name) {
            anyhow::bail!(
                "two views are named {}: {} and {}; a view's name names its table",
                view.name,
                other.source,
                view.source
            );
        }
        if let Some(types) = types
            && !types.iter().any(|t| *t == view.definition.resource)
        {
            anyhow::bail!(
                "the view {} ({}) reads {} resources, which this sync does not write: add {} \
                 to the resource types",
                view.name,
                view.source,
                view.definition.resource,
                view.definition.resource
            );
        }
        views.push(Arc::new(view));
    }
    Ok(views)
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
