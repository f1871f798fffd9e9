//! One resource type's Delta table: writes merged by id in a single commit.
//!
//! A commit's steps, in order, each in its own module: the writer stages the input in
//! new data files (`writer`, `stage`); `commit` prepares the table, then matches the
//! input against the stored rows by id (`matching`, reading keys with `keyscan`, indexing
//! them with `index`, spilling large inputs with `spill`), decides per file (`plan`),
//! rewrites files (`rewrite`) or marks rows in deletion vectors (`dv`), and writes the
//! log entry (`actions`) as one Delta commit. Around it: the tuning (`config`), what a
//! commit is asked (`options`) and reports (`outcome`), what the log tells (`history`),
//! and `maintenance`.

mod actions;
mod commit;
mod config;
mod dv;
mod files;
mod history;
mod index;
mod keyscan;
mod maintenance;
mod matching;
mod options;
mod outcome;
mod plan;
mod rewrite;
mod spill;
mod stage;
mod writer;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::WriterConfig;
use deltalake::operations::get_num_idx_cols_and_stats_columns;
use deltalake::{DeltaTable, DeltaTableBuilder};
use parquet::file::properties::WriterProperties;
use url::Url;

pub use config::{KeyRows, KeySpec, SinkConfig};
pub use history::{SyncMetadata, TableStats};
pub use maintenance::{OptimizeOptions, OptimizeReport, VacuumReport};
pub use options::{CommitOptions, Cursor, SaveMode, UnknownSaveMode};
pub use outcome::{WriteOutcome, WriteStatus};
pub use writer::{ReconcileScope, TableWriter};

use crate::error::{Result, SinkError};
use crate::location::{StorageOptions, register_object_stores, root_url, table_url};
use config::WriterConfigFn;
use dv::Warned;

/// Entry point: a directory (or S3 prefix) of `<Type>.parquet` Delta tables.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    root: Url,
    storage: StorageOptions,
    config: SinkConfig,
    /// Shared by its tables: each warning once per sink.
    warned: Warned,
}

impl DeltaSink {
    /// A sink rooted at `location`: a local path (relative or absolute), `file://` or
    /// `s3://bucket/prefix`. Storage options are the AWS variables from the environment
    /// overridden by `storage`.
    pub fn new(location: &str, storage: StorageOptions) -> Result<Self> {
        register_object_stores();
        let root = root_url(location)?;
        let storage = StorageOptions::from_env().merged(&storage);
        Ok(Self {
            root,
            storage,
            config: SinkConfig::default(),
            warned: Warned::default(),
        })
    }

    /// Replaces the write tuning.
    pub fn with_config(mut self, config: SinkConfig) -> Self {
        self.config = config;
        self
    }

    /// The root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The write tuning its tables get.
    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    /// Opens the table in the folder `path` under the root (e.g. `views/patients`), with
    /// `config` instead of the sink's. The table need not exist yet.
    pub async fn open_path(&self, path: &str, config: SinkConfig) -> Result<ResourceTable> {
        let url = folder_url(&self.root, path)?;
        let mut table = ResourceTable::open(url, self.storage.clone(), config).await?;
        table.warned = self.warned.clone();
        Ok(table)
    }

    /// The names of the folders directly in the folder `path` under the root.
    pub async fn list_folders(&self, path: &str) -> Result<Vec<String>> {
        let url = folder_url(&self.root, path)?;
        let name = url.to_string();
        let store = DeltaTableBuilder::from_url(url)
            .and_then(|b| {
                b.with_storage_options(self.storage.as_map().clone())
                    .build_storage()
            })
            .map_err(|e| SinkError::delta(&name, e))?
            .object_store(None);
        let listed = store
            .list_with_delimiter(None)
            .await
            .map_err(|e| SinkError::delta(&name, e.into()))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// The URL of a resource type's table.
    pub fn table_url(&self, resource_type: &str) -> Result<Url> {
        table_url(&self.root, resource_type)
    }

    /// Opens (loads the latest version of) a resource type's table. The table need not
    /// exist yet: [`ResourceTable::exists`] tells, and the first commit creates it.
    pub async fn table(&self, resource_type: &str) -> Result<ResourceTable> {
        let url = self.table_url(resource_type)?;
        let mut table = ResourceTable::open(url, self.storage.clone(), self.config.clone()).await?;
        table.warned = self.warned.clone();
        Ok(table)
    }
}

/// The URL of the folder `path` (relative, `/`-separated names) under `root`.
fn folder_url(root: &Url, path: &str) -> Result<Url> {
    let valid = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        });
    if !valid {
        return Err(SinkError::InvalidLocation {
            location: path.to_owned(),
            reason: "not a folder name under the delta path".to_owned(),
        });
    }
    root.join(&format!("{path}/"))
        .map_err(|e| SinkError::InvalidLocation {
            location: path.to_owned(),
            reason: e.to_string(),
        })
}

/// One Delta table. One writer per table at a time: concurrent commits fail with
/// [`SinkError::Conflict`].
pub struct ResourceTable {
    url: Url,
    name: String,
    storage: StorageOptions,
    config: SinkConfig,
    table: DeltaTable,
    /// Tables warned about (shared with the sink that opened it).
    warned: Warned,
}

impl std::fmt::Debug for ResourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceTable")
            .field("url", &self.name)
            .field("version", &self.table.version())
            .finish()
    }
}

impl ResourceTable {
    /// Opens the table at `url` (which need not exist yet).
    pub async fn open(url: Url, storage: StorageOptions, config: SinkConfig) -> Result<Self> {
        register_object_stores();
        let name = url.to_string();
        let table = load_table(&url, &storage, false)
            .await
            .map_err(|e| SinkError::delta(&name, e))?;
        Ok(Self {
            url,
            name,
            storage,
            config,
            table,
            warned: Warned::default(),
        })
    }

    /// Whether the table exists (has a committed version).
    pub fn exists(&self) -> bool {
        self.table.version().is_some()
    }

    /// The table URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The current version, if the table exists.
    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    /// The underlying delta-rs table (for reads through DataFusion).
    pub fn delta_table(&self) -> &DeltaTable {
        &self.table
    }

    /// The table's schema as Arrow, if it exists.
    pub fn arrow_schema(&self) -> Result<Option<SchemaRef>> {
        if !self.exists() {
            return Ok(None);
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        Ok(Some(snapshot.snapshot().arrow_schema()))
    }

    /// Loads the latest version.
    pub async fn reload(&mut self) -> Result<()> {
        if !self.exists() {
            self.table = load_table(&self.url, &self.storage, false)
                .await
                .map_err(|e| self.err(e))?;
            return Ok(());
        }
        self.table.update_state().await.map_err(|e| self.err(e))
    }

    pub(crate) fn err(&self, e: deltalake::DeltaTableError) -> SinkError {
        SinkError::delta(&self.name, e)
    }

    /// Writer configs for data files of this table: `props`, files of about `target`
    /// bytes (one file when `None`), Delta statistics for the columns the table's settings
    /// name (delta-rs' defaults for a new table).
    pub(crate) fn writer_configs(
        &self,
        props: WriterProperties,
        target: Option<NonZeroU64>,
    ) -> WriterConfigFn {
        let table_props = self.table.snapshot().ok().map(|s| s.table_config());
        let (num_idx, stats_cols) = get_num_idx_cols_and_stats_columns(table_props, HashMap::new());
        let batch_rows = self.config.read_batch_rows;
        Arc::new(move |schema: SchemaRef| {
            WriterConfig::new(
                schema,
                Vec::new(),
                Some(props.clone()),
                target,
                Some(batch_rows),
                num_idx,
                stats_cols.clone(),
            )
        })
    }

    /// The storage options this table was opened with.
    pub fn storage_options(&self) -> &StorageOptions {
        &self.storage
    }
}

/// Builds and loads a table handle. A missing local directory means "no table yet"; it
/// is created only when `create_dir` is set (right before the first commit).
pub(crate) async fn load_table(
    url: &Url,
    storage: &StorageOptions,
    create_dir: bool,
) -> std::result::Result<DeltaTable, deltalake::DeltaTableError> {
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        if create_dir {
            std::fs::create_dir_all(&path).map_err(|e| {
                deltalake::DeltaTableError::Generic(format!(
                    "cannot create {}: {e}",
                    path.display()
                ))
            })?;
        } else if !path.exists() {
            // Not created yet: an empty in-memory handle reports "no version".
            return Ok(DeltaTable::new_in_memory());
        }
    }
    let mut table = DeltaTableBuilder::from_url(url.clone())?
        .with_storage_options(storage.as_map().clone())
        .build()?;
    match table.load().await {
        Ok(()) | Err(deltalake::DeltaTableError::NotATable(_)) => Ok(table),
        Err(e) => Err(e),
    }
}
