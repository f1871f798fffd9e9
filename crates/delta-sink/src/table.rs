//! One resource type's Delta table: writes merged by id in a single commit.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use chrono::{DateTime, SecondsFormat, Utc};
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, LogicalFileView, Remove, StructType, Transaction};
use deltalake::operations::get_num_idx_cols_and_stats_columns;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableBuilder, ObjectStore, TableProperty};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::RowSelection;
// ParquetObjectReader is deprecated in favour of hand-written readers, but it is the
// ranged-read object-store reader delta-rs itself uses; it reads only the needed columns.
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::async_reader::ParquetRecordBatchStreamBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use roaring::RoaringTreemap;
use serde_json::Value;
use url::Url;

use crate::dv;
use crate::error::{Result, SinkError};
use crate::keys::{IdSet, KeyColumns, Recency, RefColumn, fingerprint};
use crate::location::{StorageOptions, register_object_stores, root_url, table_url};
use crate::spill::{FingerprintFilter, Spill};
use crate::stage::{FileSizing, Stage, Staged, describe_difference};

/// Prefix of the commit metadata keys this crate writes.
pub const METADATA_PREFIX: &str = "fhirsync.";

/// How a write treats an existing table (the Delta/Spark save modes plus `merge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveMode {
    /// Upsert by `id`: newer rows replace stored ones, new ids are appended.
    #[default]
    Merge,
    /// Replace the table's contents with the input (history is kept; vacuum reclaims space).
    Overwrite,
    /// Add the input's rows without looking at the stored ones.
    Append,
    /// Do nothing when the table exists; create it otherwise.
    Ignore,
    /// Fail when the table exists; create it otherwise.
    #[serde(rename = "error")]
    ErrorIfExists,
}

impl std::str::FromStr for SaveMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "merge" => Ok(SaveMode::Merge),
            "overwrite" => Ok(SaveMode::Overwrite),
            "append" => Ok(SaveMode::Append),
            "ignore" => Ok(SaveMode::Ignore),
            "error" | "errorifexists" => Ok(SaveMode::ErrorIfExists),
            other => Err(format!(
                "unknown save mode `{other}` (expected merge, overwrite, append, ignore or error)"
            )),
        }
    }
}

impl std::fmt::Display for SaveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SaveMode::Merge => "merge",
            SaveMode::Overwrite => "overwrite",
            SaveMode::Append => "append",
            SaveMode::Ignore => "ignore",
            SaveMode::ErrorIfExists => "error",
        })
    }
}

/// Page and dictionary page size limit of new data files.
const NEW_FILE_PAGE_BYTES: usize = 256 * 1024;

/// Tuning for writes. Defaults suit production; tests shrink the sizes.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Target size of written data files in bytes (compressed).
    pub target_file_size: u64,
    /// zstd level for table files. Level 1: on the 1M-row merge benchmark its files were
    /// as small as level 3's (216.2 vs 216.7 MB) and the merge ~20% faster.
    pub zstd_level: i32,
    /// Rows per Parquet row group in table files.
    pub row_group_rows: usize,
    /// Rows of the first data file a write starts, and the fewest any of its files gets.
    pub new_file_rows: u64,
    /// Compressed size the data files of a write aim at; after the first file, the rows
    /// per file follow from the bytes per row seen. Smaller than `target_file_size`: a
    /// sync keeps one file open per type, and an open file holds its row groups' metadata.
    pub new_file_bytes: u64,
    /// Encoded bytes a row group of a new data file may buffer before it is written out
    /// (a sync has one row group in progress per type).
    pub new_row_group_bytes: usize,
    /// Batch size when reading and rewriting table files.
    pub read_batch_rows: usize,
    /// When a merge finds at least this many small files (under an eighth of the target
    /// size), it folds them into its rewrite, so incremental syncs do not pile up small
    /// files between maintenance runs. 0 disables.
    pub compact_small_files: usize,
    /// Ids indexed at once when matching the input against the table. A larger input's
    /// keys (and those of stored rows that may match) are read once into a temporary file
    /// partitioned by id fingerprint, then matched one bucket at a time, so memory does
    /// not grow with the input.
    pub index_bucket_rows: usize,
    /// Directory of that temporary file (unnamed, removed when done); the system's
    /// temporary directory when `None`.
    pub spill_dir: Option<std::path::PathBuf>,
    /// Create tables with deletion vectors enabled (`delta.enableDeletionVectors`), and
    /// enable them on existing tables. Where a table has them enabled, a merge marks the
    /// replaced and deleted rows of a stored file in a deletion vector instead of
    /// rewriting the file. Readers must support deletion vectors (Delta reader version 3).
    pub deletion_vectors: bool,
    /// With deletion vectors, a stored file is rewritten instead once more than this
    /// fraction of its rows would be marked deleted.
    pub max_deleted_fraction: f64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            target_file_size: 128 * 1024 * 1024,
            zstd_level: 1,
            row_group_rows: 64 * 1024,
            new_file_rows: 64 * 1024,
            new_file_bytes: 32 * 1024 * 1024,
            new_row_group_bytes: 2 * 1024 * 1024,
            read_batch_rows: 2 * 1024,
            compact_small_files: 16,
            index_bucket_rows: 128 * 1024,
            spill_dir: None,
            deletion_vectors: false,
            max_deleted_fraction: 0.5,
        }
    }
}

impl SinkConfig {
    /// zstd writer properties used for every table file.
    pub fn writer_properties(&self) -> WriterProperties {
        self.writer_properties_builder().build()
    }

    fn writer_properties_builder(&self) -> parquet::file::properties::WriterPropertiesBuilder {
        WriterProperties::builder()
            .set_compression(self.zstd())
            .set_max_row_group_row_count(Some(self.row_group_rows.max(1)))
    }

    fn zstd(&self) -> Compression {
        Compression::ZSTD(ZstdLevel::try_new(self.zstd_level).unwrap_or_default())
    }

    /// Writer properties of the data files a write creates as batches arrive: Snappy, as
    /// Spark and Pathling write (zstd would give each of a thousand column writers per type
    /// its own contexts, for every type of a sync at once), row groups bounded by bytes,
    /// chunk statistics (for the Delta file statistics), no page indexes (an open file
    /// keeps them in memory until it closes).
    fn new_file_properties(&self) -> WriterProperties {
        self.writer_properties_builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            .set_max_row_group_bytes(Some(self.new_row_group_bytes.max(1)))
            // Every column writer buffers its current page and dictionary (1 MiB each by
            // default) until the row group flushes; with a writer per type open at once
            // that was most of a sync's heap. Low-cardinality columns (codes, systems)
            // keep their dictionaries; high-cardinality ones fall back to plain sooner.
            .set_dictionary_page_size_limit(NEW_FILE_PAGE_BYTES)
            .set_data_page_size_limit(NEW_FILE_PAGE_BYTES)
            .build()
    }

    /// Writer properties that use zstd only for the leaf columns in `dense` (the ones
    /// holding values) and Snappy for the rest. Every column writer of a zstd column
    /// allocates its own zstd contexts (~100 KB, more once used), and the FHIR schemas have
    /// hundreds to thousands of leaf columns, most of them empty; their pages are only
    /// definition/repetition levels, which Snappy compresses about as well without the cost.
    fn writer_properties_for(&self, dense: &HashSet<ColumnPath>) -> WriterProperties {
        let mut b = self
            .writer_properties_builder()
            .set_compression(Compression::SNAPPY);
        for path in dense {
            b = b.set_column_compression(path.clone(), self.zstd());
        }
        b.build()
    }
}

/// The sync position stored with a commit: a Delta `txn` action (`app_id`, `version`)
/// plus `fhirsync.*` commit metadata.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// Identity of the sync (e.g. a hash of server URL + type + group); the txn app id.
    pub app_id: String,
    /// Monotonic version, e.g. the export's transactionTime in epoch milliseconds.
    pub version: i64,
    /// The export's `transactionTime`.
    pub transaction_time: DateTime<Utc>,
    /// Identifier of the sync run.
    pub sync_id: String,
    /// Extra commit metadata; keys are prefixed with `fhirsync.` when missing it.
    pub extra: Vec<(String, Value)>,
}

impl Cursor {
    /// A cursor whose version is `transaction_time` in epoch milliseconds.
    pub fn new(
        app_id: impl Into<String>,
        transaction_time: DateTime<Utc>,
        sync_id: impl Into<String>,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            version: transaction_time.timestamp_millis(),
            transaction_time,
            sync_id: sync_id.into(),
            extra: Vec::new(),
        }
    }
}

/// Options of one commit.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Save mode.
    pub mode: SaveMode,
    /// Cursor to commit with the data; with it a re-run of the same export is skipped.
    pub cursor: Option<Cursor>,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStatus {
    /// A new table version was written.
    Committed,
    /// The table's txn version for the cursor's app id is already ≥ the cursor's version.
    AlreadyApplied,
    /// `SaveMode::Ignore` and the table exists.
    IgnoredExisting,
    /// Nothing changed and there is no cursor to record (or no table, no data and no
    /// schema): no commit was made.
    NothingToDo,
}

/// Counts and effects of one commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteOutcome {
    /// What happened.
    pub status: WriteStatus,
    /// Table version after the operation (`None` when no table exists).
    pub version: Option<u64>,
    /// Rows whose id was not in the table.
    pub inserted: u64,
    /// Stored rows replaced by newer incoming rows.
    pub updated: u64,
    /// Incoming rows skipped: stale, or the same version as the stored row.
    pub unchanged: u64,
    /// Stored rows removed by the delete list.
    pub deleted: u64,
    /// Stored rows removed by reconciliation (id absent from the export).
    pub reconciled: u64,
    /// Incoming rows superseded by a newer row with the same id in the same input.
    pub duplicates: u64,
    /// Incoming rows without an id (not written).
    pub rejected: u64,
    /// Data files added.
    pub files_added: u64,
    /// Data files removed (rewritten or replaced).
    pub files_removed: u64,
    /// Bytes of data files added.
    pub bytes_added: u64,
    /// Existing files rewritten because rows in them were replaced or removed.
    pub files_rewritten: u64,
    /// Small untouched files folded into the rewrite (see `SinkConfig::compact_small_files`).
    pub files_compacted: u64,
    /// Stored files kept with rows marked deleted in a new deletion vector.
    pub files_marked: u64,
}

impl WriteOutcome {
    fn empty(status: WriteStatus, version: Option<u64>) -> Self {
        Self {
            status,
            version,
            inserted: 0,
            updated: 0,
            unchanged: 0,
            deleted: 0,
            reconciled: 0,
            duplicates: 0,
            rejected: 0,
            files_added: 0,
            files_removed: 0,
            bytes_added: 0,
            files_rewritten: 0,
            files_compacted: 0,
            files_marked: 0,
        }
    }
}

/// The fhirsync metadata of a commit, read back from the table history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SyncMetadata {
    /// Table version of that commit.
    pub table_version: Option<u64>,
    /// Commit timestamp (epoch ms).
    pub commit_timestamp: Option<i64>,
    /// Delta operation name (`MERGE`, `WRITE`, ...).
    pub operation: Option<String>,
    /// `fhirsync.transactionTime`.
    pub transaction_time: Option<DateTime<Utc>>,
    /// `fhirsync.syncId`.
    pub sync_id: Option<String>,
    /// `fhirsync.appId`.
    pub app_id: Option<String>,
    /// `fhirsync.version` (the txn version).
    pub cursor_version: Option<i64>,
    /// All `fhirsync.*` entries.
    pub entries: HashMap<String, Value>,
}

/// Table figures for status displays, from the log alone (no data scan).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TableStats {
    /// Table URL.
    pub url: String,
    /// Current version.
    pub version: u64,
    /// Rows, summed from the add actions' statistics (`None` if a file lacks them).
    pub rows: Option<u64>,
    /// Active data files.
    pub files: u64,
    /// Bytes in active data files.
    pub size_bytes: u64,
    /// Latest commit carrying fhirsync metadata.
    pub last_sync: Option<SyncMetadata>,
}

/// Options of [`ResourceTable::optimize`].
#[derive(Debug, Clone, Default)]
pub struct OptimizeOptions {
    /// Z-order files by `id` instead of bin-packing.
    pub zorder_by_id: bool,
    /// Target file size (default: the sink's).
    pub target_file_size: Option<u64>,
}

/// Result of an optimize.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OptimizeReport {
    /// Files written.
    pub files_added: u64,
    /// Files compacted away.
    pub files_removed: u64,
    /// Table version afterwards.
    pub version: u64,
}

/// Result of a vacuum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VacuumReport {
    /// Files deleted (or that would be, on a dry run).
    pub files_deleted: u64,
    /// Whether nothing was deleted because it was a dry run.
    pub dry_run: bool,
}

/// Entry point: a directory (or S3 prefix) of `<Type>.parquet` Delta tables.
#[derive(Debug, Clone)]
pub struct DeltaSink {
    root: Url,
    storage: StorageOptions,
    config: SinkConfig,
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

    /// The URL of a resource type's table.
    pub fn table_url(&self, resource_type: &str) -> Result<Url> {
        table_url(&self.root, resource_type)
    }

    /// Opens (loads the latest version of) a resource type's table. The table need not
    /// exist yet: [`ResourceTable::exists`] tells, and the first commit creates it.
    pub async fn table(&self, resource_type: &str) -> Result<ResourceTable> {
        let url = self.table_url(resource_type)?;
        ResourceTable::open(url, self.storage.clone(), self.config.clone()).await
    }
}

/// One Delta table. One writer per table at a time: concurrent commits fail with
/// [`SinkError::Conflict`].
pub struct ResourceTable {
    url: Url,
    name: String,
    storage: StorageOptions,
    config: SinkConfig,
    table: DeltaTable,
}

impl std::fmt::Debug for ResourceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceTable")
            .field("url", &self.name)
            .field("version", &self.table.version())
            .finish()
    }
}

/// Per-id state of the deduplicated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not (yet) found in the table.
    Insert,
    /// Replaces a stored row.
    Update,
    /// Stored row is newer or the same version.
    Unchanged,
    /// Removed by the delete list.
    Deleted,
}

struct Incoming {
    recency: Recency,
    file: u32,
    row: u32,
    fate: Fate,
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

    fn err(&self, e: deltalake::DeltaTableError) -> SinkError {
        SinkError::delta(&self.name, e)
    }

    fn spill_err(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            table: self.name.clone(),
            context: "spilling key columns to a temporary file".into(),
            source,
        }
    }

    fn pq(&self, source: parquet::errors::ParquetError) -> SinkError {
        SinkError::Parquet {
            table: self.name.clone(),
            source,
        }
    }

    /// Writer configs for data files of this table: `props`, files of about `target`
    /// bytes (one file when `None`), Delta statistics for the columns the table's settings
    /// name (delta-rs' defaults for a new table).
    fn writer_configs(
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

    fn invalid(&self, detail: String) -> SinkError {
        SinkError::InvalidData {
            table: self.name.clone(),
            detail,
        }
    }

    /// The txn version last committed for `app_id` (the cursor), if any.
    pub async fn committed_version(&self, app_id: &str) -> Result<Option<i64>> {
        if !self.exists() {
            return Ok(None);
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))
    }

    /// The newest commit's fhirsync metadata, looking back past maintenance commits
    /// (optimize, vacuum) that carry none; at most `lookback` commits are read.
    pub async fn last_sync_metadata(&self, lookback: usize) -> Result<Option<SyncMetadata>> {
        if !self.exists() {
            return Ok(None);
        }
        let infos: Vec<_> = self
            .table
            .history(Some(lookback.max(1)))
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        let current = self.table.version();
        // history() yields newest first; it does not carry versions, so derive them.
        for (i, info) in infos.into_iter().enumerate() {
            let entries: HashMap<String, Value> = info
                .info
                .iter()
                .filter(|(k, _)| k.starts_with(METADATA_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if entries.is_empty() {
                continue;
            }
            let s = |k: &str| entries.get(k).and_then(Value::as_str).map(str::to_string);
            let transaction_time = s("fhirsync.transactionTime")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            let cursor_version = entries.get("fhirsync.version").and_then(Value::as_i64);
            return Ok(Some(SyncMetadata {
                table_version: entries
                    .get("fhirsync.tableVersion")
                    .and_then(Value::as_u64)
                    .or_else(|| current.map(|v| v.saturating_sub(i as u64))),
                commit_timestamp: info.timestamp,
                operation: info.operation.clone(),
                transaction_time,
                sync_id: s("fhirsync.syncId"),
                app_id: s("fhirsync.appId"),
                cursor_version,
                entries,
            }));
        }
        Ok(None)
    }

    /// Version, rows (from file statistics), files and bytes, plus the last sync metadata.
    pub async fn stats(&self) -> Result<TableStats> {
        let version = self.table.version().ok_or_else(|| SinkError::NotATable {
            table: self.name.clone(),
        })?;
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let mut rows = Some(0u64);
        let mut files = 0u64;
        let mut size = 0u64;
        for f in snapshot.log_data().iter() {
            files += 1;
            size += u64::try_from(f.size()).unwrap_or(0);
            let deleted = f
                .deletion_vector_descriptor()
                .map_or(0, |dv| dv.cardinality);
            rows = match (rows, f.num_records()) {
                (Some(r), Some(n)) => Some(r + (n as u64).saturating_sub(deleted as u64)),
                _ => None,
            };
        }
        Ok(TableStats {
            url: self.name.clone(),
            version,
            rows,
            files,
            size_bytes: size,
            last_sync: self.last_sync_metadata(100).await?,
        })
    }

    /// Starts a write whose batches must have `schema` (the Pathling encoding of the
    /// resource type: `id`, `meta{versionId, lastUpdated}`, ...). Batches are written into
    /// new data files in the table's location as they come; the table sees them only once
    /// [`ResourceTable::commit`] commits.
    pub fn writer(&self, schema: SchemaRef) -> TableWriter {
        let config = self.writer_configs(self.config.new_file_properties(), None)(schema.clone());
        TableWriter {
            stage: Stage::new(
                self.name.clone(),
                self.url.clone(),
                self.storage.clone(),
                config,
                schema.clone(),
                FileSizing {
                    min_rows: self.config.new_file_rows,
                    target_bytes: self.config.new_file_bytes,
                },
            ),
            schema,
            deletes: HashMap::new(),
            reconcile: None,
        }
    }

    /// Removes `ids` whose stored `meta.lastUpdated` is not newer than
    /// `transaction_time`, in one commit (with the cursor, if given).
    pub async fn delete_ids<I, S>(
        &mut self,
        ids: I,
        transaction_time: DateTime<Utc>,
        cursor: Option<Cursor>,
    ) -> Result<WriteOutcome>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let schema = self
            .arrow_schema()?
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let mut w = self.writer(schema);
        w.delete(ids, transaction_time);
        self.commit(
            w,
            CommitOptions {
                mode: SaveMode::Merge,
                cursor,
            },
        )
        .await
    }

    /// Removes every stored row whose id is not in `keep` (restricted to ids in
    /// `candidates` when given, for Group-scoped exports); one commit. Returns the count.
    pub async fn reconcile(
        &mut self,
        keep: IdSet,
        candidates: Option<IdSet>,
        cursor: Option<Cursor>,
    ) -> Result<u64> {
        if !self.exists() {
            return Ok(0);
        }
        let schema = self
            .arrow_schema()?
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let mut w = self.writer(schema);
        w.reconcile(keep, candidates);
        let out = self
            .commit(
                w,
                CommitOptions {
                    mode: SaveMode::Merge,
                    cursor,
                },
            )
            .await?;
        Ok(out.reconciled)
    }

    /// Applies a staged write as ONE Delta commit (data, deletes, reconciliation and the
    /// cursor together), so a crash leaves either the old or the new state.
    ///
    /// Merge semantics: rows are deduplicated by `id` (newest wins, see
    /// [`Recency::supersedes`]); new ids are appended without touching existing files;
    /// a stored row is replaced only by a newer incoming row, and only the files holding
    /// replaced or removed rows are rewritten.
    pub async fn commit(
        &mut self,
        writer: TableWriter,
        options: CommitOptions,
    ) -> Result<WriteOutcome> {
        let TableWriter {
            stage,
            schema,
            deletes,
            reconcile,
        } = writer;
        let input_rows = stage.rows();
        let staged = stage.finish().await?;
        let mut progress = CommitProgress::default();
        let result = self
            .commit_staged(
                &staged,
                CommitInput {
                    schema,
                    deletes,
                    reconcile,
                    input_rows,
                },
                options,
                &mut progress,
            )
            .await;
        match &result {
            // Written files the commit did not take (rewritten or all rows lost) go.
            Ok(_) => {
                let unused = staged
                    .files
                    .iter()
                    .filter(|f| !progress.keep.contains(&f.add.path))
                    .map(|f| f.path())
                    .collect();
                staged.delete(unused, &self.name).await;
            }
            Err(_) if !progress.committing => staged.discard(&self.name).await,
            // The commit may have landed: its files must stay (vacuum takes them otherwise).
            Err(_) => {}
        }
        result
    }

    /// [`ResourceTable::commit`] once the writer's files are closed; `progress` tells the
    /// caller, whatever the result, which new files to keep.
    async fn commit_staged(
        &mut self,
        staged: &Staged,
        input: CommitInput,
        options: CommitOptions,
        progress: &mut CommitProgress,
    ) -> Result<WriteOutcome> {
        let CommitInput {
            schema,
            deletes,
            reconcile,
            input_rows,
        } = input;
        self.reload().await?;
        let exists = self.exists();
        let mode = options.mode;
        match mode {
            SaveMode::Ignore if exists => {
                return Ok(WriteOutcome::empty(
                    WriteStatus::IgnoredExisting,
                    self.version(),
                ));
            }
            SaveMode::ErrorIfExists if exists => {
                return Err(SinkError::TableExists {
                    table: self.name.clone(),
                });
            }
            _ => {}
        }
        if let (Some(cursor), true) = (&options.cursor, exists)
            && let Some(done) = self.committed_version(&cursor.app_id).await?
            && done >= cursor.version
        {
            tracing::info!(table = %self.name, app_id = %cursor.app_id, committed = done,
                requested = cursor.version, "export already applied; skipping");
            return Ok(WriteOutcome::empty(
                WriteStatus::AlreadyApplied,
                self.version(),
            ));
        }
        if !exists && input_rows == 0 && schema.fields().is_empty() {
            return Ok(WriteOutcome::empty(WriteStatus::NothingToDo, None));
        }
        let kernel_schema: StructType =
            schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| SinkError::SchemaMismatch {
                    table: self.name.clone(),
                    detail: format!("schema cannot be stored in Delta: {e}"),
                })?;
        if exists && input_rows > 0 {
            let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
            let table_schema = snapshot.schema();
            if table_schema.as_ref() != &kernel_schema {
                let table_arrow = snapshot.snapshot().arrow_schema();
                return Err(SinkError::SchemaMismatch {
                    table: self.name.clone(),
                    detail: format!(
                        "input does not match the table: {}",
                        describe_difference(&table_arrow, &schema)
                    ),
                });
            }
        }
        if !exists {
            self.table = load_table(&self.url, &self.storage, true)
                .await
                .map_err(|e| self.err(e))?;
        } else if self.config.deletion_vectors && !self.deletion_vectors_enabled()? {
            self.enable_deletion_vectors().await?;
        }
        let mark = exists && self.deletion_vectors_enabled()?;
        let mut out = WriteOutcome::empty(WriteStatus::Committed, None);

        // 1. Plan which input rows to keep and which stored rows to drop. The input is
        // indexed by id one bucket of ids (by fingerprint) at a time, so memory stays
        // bounded whatever the export's size; each pass reads only key columns.
        let scan_needed = exists
            && mode != SaveMode::Overwrite
            && (mode == SaveMode::Merge && input_rows > 0
                || !deletes.is_empty()
                || reconcile.is_some());
        let table_files: Vec<LogicalFileView> = if exists {
            let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
            snapshot.log_data().iter().collect()
        } else {
            Vec::new()
        };
        let mut removed: Vec<Vec<u32>> = vec![Vec::new(); table_files.len()];
        let deleted_rows = if scan_needed {
            self.read_deletion_vectors(&table_files).await?
        } else {
            vec![None; table_files.len()]
        };
        let mut winners = RowMarks::default();
        let mut tally = |incoming: &HashMap<Box<str>, Incoming>, out: &mut WriteOutcome| {
            for inc in incoming.values() {
                match inc.fate {
                    Fate::Insert => out.inserted += 1,
                    Fate::Update => out.updated += 1,
                    Fate::Unchanged | Fate::Deleted => out.unchanged += 1,
                }
                if matches!(inc.fate, Fate::Insert | Fate::Update) {
                    winners.set(inc.file, inc.row);
                }
            }
        };
        let apply_deletes = |incoming: &mut HashMap<Box<str>, Incoming>| {
            for (id, inc) in incoming.iter_mut() {
                if let Some(tt) = deletes.get(id.as_ref())
                    && inc.recency.last_updated.is_none_or(|lu| lu <= *tt)
                {
                    inc.fate = Fate::Deleted;
                }
            }
        };
        let buckets = bucket_count(input_rows, self.config.index_bucket_rows);
        let mut scan = StoredScan {
            mode,
            files: &table_files,
            deleted_rows: &deleted_rows,
            deletes: &deletes,
            reconcile: reconcile.as_ref(),
            removed: &mut removed,
        };
        if buckets == 1 {
            let mut incoming = HashMap::new();
            self.read_staged_keys(staged, &mut out, |id, record, out| {
                add_incoming(&mut incoming, id, record, out);
                Ok(())
            })
            .await?;
            apply_deletes(&mut incoming);
            if scan_needed {
                self.scan_table(&mut scan, Matcher::Direct(&mut incoming), &mut out)
                    .await?;
            }
            tally(&incoming, &mut out);
        } else {
            // Too many ids to index at once: the keys of the input (and of stored rows
            // that may match it) are read once into a spill by id bucket, then matched one
            // bucket at a time.
            let count = buckets as usize;
            let spill_err = |e| self.spill_err(e);
            let dir = self
                .config
                .spill_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            let mut input = Spill::new(&dir, count).map_err(spill_err)?;
            let mut filter = FingerprintFilter::new();
            self.read_staged_keys(staged, &mut out, |id, record, _| {
                let fp = fingerprint(id);
                filter.insert(fp);
                let r = &record.recency;
                input.push(
                    (fp % buckets) as usize,
                    id,
                    r.last_updated,
                    r.version_id.as_deref(),
                    record.file,
                    record.row,
                    false,
                )
            })
            .await?;
            input.finish().map_err(spill_err)?;
            let mut stored = Spill::new(&dir, count).map_err(spill_err)?;
            if scan_needed {
                let matcher = Matcher::Spill {
                    filter: &filter,
                    spill: &mut stored,
                    buckets,
                };
                self.scan_table(&mut scan, matcher, &mut out).await?;
                stored.finish().map_err(spill_err)?;
            }
            drop(filter);
            for bucket in 0..count {
                let mut incoming = HashMap::new();
                input
                    .for_each(bucket, |rec| {
                        let record = Incoming {
                            recency: rec.recency,
                            file: rec.file,
                            row: rec.row,
                            fate: Fate::Insert,
                        };
                        add_incoming(&mut incoming, &rec.id, record, &mut out);
                    })
                    .map_err(spill_err)?;
                apply_deletes(&mut incoming);
                stored
                    .for_each(bucket, |rec| {
                        if let Some(inc) = incoming.get_mut(rec.id.as_ref()) {
                            if settle(inc, &rec.recency) {
                                scan.removed[rec.file as usize].push(rec.row);
                            }
                        } else if rec.flag {
                            scan.removed[rec.file as usize].push(rec.row);
                            out.reconciled += 1;
                        }
                    })
                    .map_err(spill_err)?;
                tally(&incoming, &mut out);
            }
        }

        // 2. Decide, per stored file, whether it goes, is rewritten, or gets rows marked.
        let mut plan = FilePlan::default();
        if exists && mode == SaveMode::Overwrite {
            for f in &table_files {
                plan.removes.push(f.remove_action(true));
            }
        } else if scan_needed {
            plan = self.plan_rewrites(
                table_files,
                removed,
                deleted_rows,
                out.inserted > 0,
                mark,
                &mut out,
            );
        }
        let FilePlan {
            removes,
            mut rewrites,
            marks,
        } = plan;
        let stored_rewrites = rewrites.len() as u64;

        // 3. New files whose rows all won are added as written; files with some winners
        // are rewritten without the losers; the others are dropped.
        let mut adds: Vec<Add> = Vec::new();
        for (fi, f) in staged.files.iter().enumerate() {
            let won = winners.count_in(fi as u32);
            if won == f.rows {
                progress.keep.insert(f.add.path.clone());
                adds.push(f.add.clone());
            } else if won > 0 {
                let rows = u32::try_from(f.rows).unwrap_or(u32::MAX);
                let losers: Vec<u32> = (0..rows).filter(|r| !winners.get(fi as u32, *r)).collect();
                rewrites.push((f.path(), f.add.size, losers));
            }
        }
        drop(winners);

        if !rewrites.is_empty() {
            out.files_rewritten = stored_rewrites - out.files_compacted;
            let store = self.table.object_store();
            // Which leaf columns hold values: only those get zstd (see
            // `SinkConfig::writer_properties_for`).
            let mut dense: HashSet<ColumnPath> = HashSet::new();
            for (path, size, _) in &rewrites {
                #[allow(deprecated)]
                let reader = ParquetObjectReader::new(store.clone(), path.clone())
                    .with_file_size(u64::try_from(*size).unwrap_or(0));
                let builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| self.pq(e))?;
                add_dense_columns(builder.metadata(), &mut dense);
            }
            let wcfg = self.writer_configs(
                self.config.writer_properties_for(&dense),
                NonZeroU64::new(self.config.target_file_size),
            );
            adds.extend(
                rewrite_files(
                    &store,
                    rewrites,
                    wcfg,
                    self.config.read_batch_rows,
                    self.config.target_file_size,
                    &self.name,
                )
                .await?,
            );
        }

        out.files_added = adds.len() as u64;
        out.files_removed = (removes.len() - marks.len()) as u64;
        out.files_marked = marks.len() as u64;
        out.bytes_added = adds
            .iter()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum();
        if !marks.is_empty() {
            // The marked files stay, re-added with their new deletion vectors.
            let (files, vectors): (Vec<_>, Vec<_>) = marks.into_iter().unzip();
            let descriptors = dv::write(&self.table.object_store(), vectors)
                .await
                .map_err(|d| self.invalid(format!("writing deletion vectors: {d}")))?;
            for (f, d) in files.iter().zip(descriptors) {
                #[allow(deprecated)]
                let mut add = f.add_action();
                add.deletion_vector = Some(d);
                add.data_change = true;
                add.stats = add.stats.as_deref().map(wide_bounds);
                adds.push(add);
            }
        }

        let changed = !adds.is_empty() || !removes.is_empty();
        if !changed && options.cursor.is_none() && exists {
            // Nothing to record: avoid an empty commit.
            out.status = WriteStatus::NothingToDo;
            out.version = self.version();
            return Ok(out);
        }

        // 4. One commit.
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(removes.into_iter().map(Action::Remove));
        let props = self.commit_properties(mode, &options, &out);
        progress.committing = true;
        if !exists {
            let mut create = self.table.create();
            if self.config.deletion_vectors {
                create = create.with_configuration_property(
                    TableProperty::EnableDeletionVectors,
                    Some("true"),
                );
            }
            let table = create
                .with_columns(kernel_schema.fields().cloned())
                .with_save_mode(deltalake::protocol::SaveMode::ErrorIfExists)
                .with_actions(actions)
                .with_commit_properties(props)
                .await
                .map_err(|e| match e {
                    // Another writer created the table since it was loaded.
                    e if e.to_string().contains("already exists") => SinkError::Conflict {
                        table: self.name.clone(),
                        source: e,
                    },
                    e => self.err(e),
                })?;
            self.table = table;
        } else {
            let operation = match mode {
                SaveMode::Overwrite => DeltaOperation::Write {
                    mode: deltalake::protocol::SaveMode::Overwrite,
                    partition_by: None,
                    predicate: None,
                },
                SaveMode::Append if deletes.is_empty() && reconcile.is_none() => {
                    DeltaOperation::Write {
                        mode: deltalake::protocol::SaveMode::Append,
                        partition_by: None,
                        predicate: None,
                    }
                }
                _ if input_rows == 0 => DeltaOperation::Delete { predicate: None },
                _ => DeltaOperation::Merge {
                    predicate: None,
                    merge_predicate: Some("target.id = source.id".to_string()),
                    matched_predicates: Vec::new(),
                    not_matched_predicates: Vec::new(),
                    not_matched_by_source_predicates: Vec::new(),
                },
            };
            let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
            CommitBuilder::from(props)
                .with_actions(actions)
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(|e| self.err(e))?;
            self.reload().await?;
        }
        out.version = self.version();
        tracing::info!(table = %self.name, version = ?out.version, inserted = out.inserted,
            updated = out.updated, unchanged = out.unchanged, deleted = out.deleted,
            reconciled = out.reconciled, files_added = out.files_added,
            files_removed = out.files_removed, "committed");
        Ok(out)
    }

    fn commit_properties(
        &self,
        mode: SaveMode,
        options: &CommitOptions,
        out: &WriteOutcome,
    ) -> CommitProperties {
        let mut meta: Vec<(String, Value)> = vec![
            ("fhirsync.mode".into(), Value::from(mode.to_string())),
            ("fhirsync.inserted".into(), Value::from(out.inserted)),
            ("fhirsync.updated".into(), Value::from(out.updated)),
            ("fhirsync.unchanged".into(), Value::from(out.unchanged)),
            ("fhirsync.deleted".into(), Value::from(out.deleted)),
            ("fhirsync.reconciled".into(), Value::from(out.reconciled)),
            ("fhirsync.duplicates".into(), Value::from(out.duplicates)),
            ("fhirsync.rejected".into(), Value::from(out.rejected)),
            (
                "fhirsync.filesRewritten".into(),
                Value::from(out.files_rewritten),
            ),
            ("fhirsync.filesMarked".into(), Value::from(out.files_marked)),
        ];
        let mut props = CommitProperties::default();
        if let Some(c) = &options.cursor {
            meta.push(("fhirsync.appId".into(), Value::from(c.app_id.clone())));
            meta.push(("fhirsync.version".into(), Value::from(c.version)));
            meta.push((
                "fhirsync.transactionTime".into(),
                Value::from(
                    c.transaction_time
                        .to_rfc3339_opts(SecondsFormat::Millis, true),
                ),
            ));
            meta.push(("fhirsync.syncId".into(), Value::from(c.sync_id.clone())));
            for (k, v) in &c.extra {
                let key = if k.starts_with(METADATA_PREFIX) {
                    k.clone()
                } else {
                    format!("{METADATA_PREFIX}{k}")
                };
                meta.push((key, v.clone()));
            }
            props = props.with_application_transaction(Transaction::new_with_last_update(
                c.app_id.clone(),
                c.version,
                Some(Utc::now().timestamp_millis()),
            ));
        }
        if let Some(v) = self.version() {
            meta.push(("fhirsync.tableVersion".into(), Value::from(v + 1)));
        } else {
            meta.push(("fhirsync.tableVersion".into(), Value::from(0)));
        }
        props.with_metadata(meta)
    }

    /// Streams the key columns of the new files, calling `f` with every row that has an
    /// id (in file and row order); rows without one are counted as rejected.
    async fn read_staged_keys(
        &self,
        staged: &Staged,
        out: &mut WriteOutcome,
        mut f: impl FnMut(&str, Incoming, &mut WriteOutcome) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(store) = &staged.store else {
            return Ok(());
        };
        let mut opened = futures::stream::iter(staged.files.iter().enumerate().map(|(fi, f)| {
            let (store, name) = (store.clone(), self.name.clone());
            async move {
                let path = f.path();
                let stream = open_keys(&store, &path, f.add.size, &[], &name).await?;
                Ok::<_, SinkError>((fi, path, stream))
            }
        }))
        .buffered(4);
        let rejected_before = out.rejected;
        while let Some(item) = opened.next().await {
            let (fi, path, mut stream) = item?;
            let mut offset = 0u32;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.pq(e))?;
                let keys = KeyColumns::from_batch(&batch)
                    .map_err(|d| self.invalid(format!("file {path}: {d}")))?;
                for i in 0..keys.len() {
                    let Some(id) = keys.id(i) else {
                        out.rejected += 1;
                        continue;
                    };
                    let incoming = Incoming {
                        recency: keys.recency(i),
                        file: fi as u32,
                        row: offset + i as u32,
                        fate: Fate::Insert,
                    };
                    f(id, incoming, out).map_err(|e| self.spill_err(e))?;
                }
                offset += keys.len() as u32;
            }
        }
        if out.rejected > rejected_before {
            tracing::warn!(table = %self.name, rows = out.rejected - rejected_before, "input rows without id were skipped");
        }
        Ok(())
    }

    /// Streams the key columns of every stored file and records which rows go (deleted,
    /// reconciled, or replaced by an input row) in `scan.removed` (by file position). With
    /// a spill, stored rows that may match an input id are spilled instead, to be matched
    /// bucket by bucket.
    async fn scan_table(
        &self,
        scan: &mut StoredScan<'_>,
        mut matcher: Matcher<'_>,
        out: &mut WriteOutcome,
    ) -> Result<()> {
        let store = self.table.object_store();
        let name = self.name.clone();
        let reconcile = scan.reconcile;
        let scope_columns: Vec<String> = reconcile
            .map(|(_, scope)| scope.columns().to_vec())
            .unwrap_or_default();
        // Open (read the footers of) a few files ahead: latency matters on S3. Key batches
        // are consumed one at a time, so memory is one batch whatever the file sizes.
        let mut opened = futures::stream::iter(scan.files.iter().enumerate().map(|(fi, f)| {
            let store = store.clone();
            let name = name.clone();
            let f = f.clone();
            let scope_columns = scope_columns.clone();
            async move {
                let path = f.object_store_path();
                let stream = open_keys(&store, &path, f.size(), &scope_columns, &name).await?;
                Ok::<_, SinkError>((fi, path, stream))
            }
        }))
        .buffered(4);
        while let Some(item) = opened.next().await {
            let (fi, path, mut stream) = item?;
            let mut row = 0u32;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| self.pq(e))?;
                let keys = KeyColumns::from_batch(&batch)
                    .map_err(|d| self.invalid(format!("file {path}: {d}")))?;
                let refs: Vec<RefColumn> = scope_columns
                    .iter()
                    .filter_map(|c| RefColumn::from_batch(&batch, c))
                    .collect();
                for i in 0..keys.len() {
                    let r = row + i as u32;
                    if scan.deleted_rows[fi]
                        .as_ref()
                        .is_some_and(|d| d.contains(u64::from(r)))
                    {
                        continue;
                    }
                    let Some(id) = keys.id(i) else { continue };
                    if let Some(tt) = scan.deletes.get(id)
                        && keys.last_updated(i).is_none_or(|lu| lu <= *tt)
                    {
                        scan.removed[fi].push(r);
                        out.deleted += 1;
                        continue;
                    }
                    // Whether reconciliation removes the row unless the input has its id.
                    let unlisted = || {
                        reconcile.is_some_and(|(keep, scope)| {
                            let in_scope = match scope {
                                ReconcileScope::All => true,
                                ReconcileScope::Ids(ids) => ids.contains(id),
                                ReconcileScope::References {
                                    target_type,
                                    targets,
                                    ..
                                } => refs.iter().any(|r| r.refers_to(i, target_type, targets)),
                            };
                            in_scope && !keep.contains(id)
                        })
                    };
                    if scan.mode == SaveMode::Merge {
                        match &mut matcher {
                            Matcher::Direct(incoming) => {
                                if let Some(inc) = incoming.get_mut(id) {
                                    if settle(inc, &keys.recency(i)) {
                                        scan.removed[fi].push(r);
                                    }
                                    continue;
                                }
                            }
                            Matcher::Spill {
                                filter,
                                spill,
                                buckets,
                            } => {
                                let fp = fingerprint(id);
                                if filter.may_contain(fp) {
                                    spill
                                        .push(
                                            (fp % *buckets) as usize,
                                            id,
                                            keys.last_updated(i),
                                            keys.version_id(i),
                                            fi as u32,
                                            r,
                                            unlisted(),
                                        )
                                        .map_err(|e| self.spill_err(e))?;
                                    continue;
                                }
                            }
                        }
                    }
                    if unlisted() {
                        scan.removed[fi].push(r);
                        out.reconciled += 1;
                    }
                }
                row += keys.len() as u32;
            }
        }
        Ok(())
    }

    /// Turns the removed rows per stored file into remove actions, rewrites and (with
    /// `mark`) deletion vectors; folds small untouched files into the rewrite when there
    /// are many and a commit happens anyway.
    fn plan_rewrites(
        &self,
        files: Vec<LogicalFileView>,
        removed: Vec<Vec<u32>>,
        deleted_rows: Vec<Option<RoaringTreemap>>,
        inserting: bool,
        mark: bool,
        out: &mut WriteOutcome,
    ) -> FilePlan {
        let mut plan = FilePlan::default();
        let small_threshold = self.config.target_file_size / 8;
        let small_limit = self.config.compact_small_files;
        let is_small = |f: &LogicalFileView| (f.size() as u64) < small_threshold;
        let small_total = files.iter().filter(|f| is_small(f)).count();
        let mut small_untouched = Vec::new();
        for ((file, rows), before) in files.into_iter().zip(removed).zip(deleted_rows) {
            let mut gone = before.unwrap_or_default();
            if rows.is_empty() {
                if small_limit > 0 && is_small(&file) {
                    small_untouched.push((file, gone));
                }
                continue;
            }
            gone.extend(rows.into_iter().map(u64::from));
            plan.removes.push(file.remove_action(true));
            let total = file.num_records().map_or(u64::MAX, |n| n as u64);
            if gone.len() >= total {
                continue;
            }
            if mark && (gone.len() as f64) <= total as f64 * self.config.max_deleted_fraction {
                plan.marks.push((file, gone));
            } else {
                plan.rewrites
                    .push((file.object_store_path(), file.size(), positions(&gone)));
            }
        }
        // Only worth it once there is something to compact and a commit happens anyway.
        let committing = !plan.removes.is_empty() || inserting;
        if small_limit > 0 && small_total >= small_limit && small_untouched.len() > 1 && committing
        {
            for (file, gone) in small_untouched {
                plan.removes.push(file.remove_action(true));
                plan.rewrites
                    .push((file.object_store_path(), file.size(), positions(&gone)));
                out.files_compacted += 1;
            }
        }
        plan
    }

    /// The rows each file's deletion vector marks deleted (`None` for files without one).
    async fn read_deletion_vectors(
        &self,
        files: &[LogicalFileView],
    ) -> Result<Vec<Option<RoaringTreemap>>> {
        let store = self.table.object_store();
        let root = self.table.table_url().clone();
        futures::stream::iter(files.iter().map(|f| {
            let (store, root) = (store.clone(), root.clone());
            async move {
                let Some(d) = f.deletion_vector_descriptor() else {
                    return Ok(None);
                };
                dv::read(&store, &root, &d)
                    .await
                    .map(Some)
                    .map_err(|detail| {
                        self.invalid(format!("deletion vector of {}: {detail}", f.path()))
                    })
            }
        }))
        .buffered(8)
        .try_collect()
        .await
    }

    fn deletion_vectors_enabled(&self) -> Result<bool> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.table_config().enable_deletion_vectors == Some(true))
    }

    /// Sets `delta.enableDeletionVectors` (upgrading the table's protocol) in a commit of
    /// its own.
    async fn enable_deletion_vectors(&mut self) -> Result<()> {
        tracing::info!(table = %self.name, "enabling deletion vectors");
        self.table = self
            .table
            .clone()
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                TableProperty::EnableDeletionVectors.as_ref().to_string(),
                "true".to_string(),
            )]))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
    /// Compacts small files (bin-packing, or z-order by `id`).
    pub async fn optimize(&mut self, options: OptimizeOptions) -> Result<OptimizeReport> {
        self.reload().await?;
        if !self.exists() {
            return Err(SinkError::NotATable {
                table: self.name.clone(),
            });
        }
        let target = options
            .target_file_size
            .unwrap_or(self.config.target_file_size);
        let mut builder = self
            .table
            .clone()
            .optimize()
            .with_writer_properties(self.config.writer_properties());
        if let Some(t) = NonZeroU64::new(target) {
            builder = builder.with_target_size(t);
        }
        if options.zorder_by_id {
            builder =
                builder.with_type(deltalake::operations::optimize::OptimizeType::ZOrder(vec![
                    "id".to_string(),
                ]));
        }
        let (table, metrics) = builder.await.map_err(|e| self.err(e))?;
        self.table = table;
        Ok(OptimizeReport {
            files_added: metrics.num_files_added,
            files_removed: metrics.num_files_removed,
            version: self.version().unwrap_or_default(),
        })
    }

    /// Deletes files no longer referenced and older than `retention`. delta-rs refuses a
    /// retention shorter than the table's `delta.deletedFileRetentionDuration` (7 days by
    /// default) unless `enforce_retention` is false.
    pub async fn vacuum(
        &mut self,
        retention: Duration,
        enforce_retention: bool,
        dry_run: bool,
    ) -> Result<VacuumReport> {
        self.reload().await?;
        if !self.exists() {
            return Err(SinkError::NotATable {
                table: self.name.clone(),
            });
        }
        let retention = chrono::Duration::from_std(retention)
            .map_err(|e| self.invalid(format!("retention: {e}")))?;
        let (table, metrics) = self
            .table
            .clone()
            .vacuum()
            // Full: also files that no commit ever added (left by a failed or killed write),
            // not only those of `remove` actions.
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(retention)
            .with_enforce_retention_duration(enforce_retention)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| self.err(e))?;
        self.table = table;
        Ok(VacuumReport {
            files_deleted: metrics.files_deleted.len() as u64,
            dry_run,
        })
    }

    /// Writes a checkpoint for the current version (faster loads, log cleanup).
    pub async fn checkpoint(&mut self) -> Result<u64> {
        self.reload().await?;
        let version = self.version().ok_or_else(|| SinkError::NotATable {
            table: self.name.clone(),
        })?;
        deltalake::checkpoints::create_checkpoint(&self.table, None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(version)
    }

    /// The storage options this table was opened with.
    pub fn storage_options(&self) -> &StorageOptions {
        &self.storage
    }
}

type WriterConfigFn = Arc<dyn Fn(SchemaRef) -> WriterConfig + Send + Sync>;

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// File rewrites running at once in this process, over all tables: one per core (a rewrite
/// is CPU-bound, and each holds a writer's buffers).
static REWRITE_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> =
    std::sync::LazyLock::new(|| tokio::sync::Semaphore::new(cores()));

/// A table file to copy without the listed (sorted) row positions.
type FileRewrite = (deltalake::Path, i64, Vec<u32>);

/// How far a commit got, for cleaning up after it.
#[derive(Default)]
struct CommitProgress {
    /// New files the commit adds as written.
    keep: HashSet<String>,
    /// Set once the commit was attempted: it may have landed, so its files must stay.
    committing: bool,
}

/// What a commit does with the stored files.
#[derive(Default)]
struct FilePlan {
    removes: Vec<Remove>,
    rewrites: Vec<FileRewrite>,
    /// Files that stay, with the rows to mark deleted (old and new).
    marks: Vec<(LogicalFileView, RoaringTreemap)>,
}

/// File statistics marked as no longer tight: min/max and null counts were taken over rows
/// of which some are now deleted (the Delta protocol's `tightBounds`, which readers take as
/// true when absent).
fn wide_bounds(stats: &str) -> String {
    match serde_json::from_str::<Value>(stats) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("tightBounds".into(), Value::Bool(false));
            Value::Object(fields).to_string()
        }
        _ => stats.to_string(),
    }
}

/// Sorted row positions of a file (files have fewer than 2^32 rows).
fn positions(rows: &RoaringTreemap) -> Vec<u32> {
    rows.iter().filter_map(|r| u32::try_from(r).ok()).collect()
}

/// Copies the surviving rows of each file into new files, in parallel (the rewrite is
/// CPU-bound: decode, filter, encode). Large files are rewritten one to one; small files
/// are packed together up to the target size.
async fn rewrite_files(
    store: &Arc<dyn ObjectStore>,
    files: Vec<FileRewrite>,
    wcfg: WriterConfigFn,
    batch_rows: usize,
    target_size: u64,
    table: &str,
) -> Result<Vec<Add>> {
    let small = target_size / 8;
    let mut groups: Vec<Vec<FileRewrite>> = Vec::new();
    let mut pack: Vec<FileRewrite> = Vec::new();
    let mut pack_size = 0u64;
    for f in files {
        let size = u64::try_from(f.1).unwrap_or(0);
        if size >= small {
            groups.push(vec![f]);
            continue;
        }
        if pack_size + size > target_size && !pack.is_empty() {
            groups.push(std::mem::take(&mut pack));
            pack_size = 0;
        }
        pack_size += size;
        pack.push(f);
    }
    if !pack.is_empty() {
        groups.push(pack);
    }
    let parallel = cores();
    let mut tasks = futures::stream::iter(groups.into_iter().map(|group| {
        let (store, wcfg, table) = (store.clone(), wcfg.clone(), table.to_string());
        tokio::spawn(async move {
            // Tables may commit concurrently: their rewrites share the cores.
            let _slot = REWRITE_SLOTS.acquire().await;
            rewrite_group(store, group, wcfg, batch_rows, table).await
        })
    }))
    .buffer_unordered(parallel);
    let mut adds = Vec::new();
    while let Some(joined) = tasks.next().await {
        let result = joined.map_err(|e| SinkError::Io {
            table: table.to_string(),
            context: "rewriting table files".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        adds.extend(result?);
    }
    Ok(adds)
}

async fn rewrite_group(
    store: Arc<dyn ObjectStore>,
    group: Vec<FileRewrite>,
    wcfg: WriterConfigFn,
    batch_rows: usize,
    table: String,
) -> Result<Vec<Add>> {
    let mut writers: Vec<(SchemaRef, DeltaWriter)> = Vec::new();
    for (path, size, removed) in group {
        let copied = copy_rows(
            &store,
            &path,
            size,
            &removed,
            &wcfg,
            batch_rows,
            &table,
            &mut writers,
        )
        .await;
        if let Err(e) = copied {
            for (_, w) in writers {
                let _ = w.abort().await;
            }
            return Err(e);
        }
    }
    let mut adds = Vec::new();
    for (_, w) in writers {
        adds.extend(w.close().await.map_err(|e| SinkError::delta(&table, e))?);
    }
    Ok(adds)
}

/// The rows of a file of `total` rows that are not in `removed` (sorted positions).
fn kept_rows(removed: &[u32], total: usize) -> RowSelection {
    let mut ranges = Vec::with_capacity(removed.len() + 1);
    let mut start = 0usize;
    for &r in removed {
        let r = r as usize;
        if r >= total {
            break;
        }
        if r > start {
            ranges.push(start..r);
        }
        start = start.max(r + 1);
    }
    if start < total {
        ranges.push(start..total);
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

/// Streams one file's rows, minus `removed`, into the writer for its schema.
#[allow(clippy::too_many_arguments)]
async fn copy_rows(
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
    removed: &[u32],
    wcfg: &WriterConfigFn,
    batch_rows: usize,
    table: &str,
    writers: &mut Vec<(SchemaRef, DeltaWriter)>,
) -> Result<()> {
    let pq = |source| SinkError::Parquet {
        table: table.to_string(),
        source,
    };
    let arrow_err = |source| SinkError::Arrow {
        table: table.to_string(),
        source,
    };
    #[allow(deprecated)]
    let reader = ParquetObjectReader::new(store.clone(), path.clone())
        .with_file_size(u64::try_from(size).unwrap_or(0));
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(pq)?
        .with_batch_size(batch_rows);
    let total = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    // The reader skips the removed rows as it decodes: no filtering copy of every batch.
    let mut stream = builder
        .with_row_selection(kept_rows(removed, total))
        .build()
        .map_err(pq)?;
    while let Some(kept) = stream.next().await {
        let kept = kept.map_err(pq)?;
        if kept.num_rows() == 0 {
            continue;
        }
        let schema = Arc::new(Schema::new(kept.schema().fields().clone()));
        let kept =
            RecordBatch::try_new(schema.clone(), kept.columns().to_vec()).map_err(arrow_err)?;
        let idx = match writers.iter().position(|(s, _)| s == &schema) {
            Some(i) => i,
            None => {
                writers.push((
                    schema.clone(),
                    DeltaWriter::new(store.clone(), wcfg(schema)),
                ));
                writers.len() - 1
            }
        };
        writers[idx]
            .1
            .write(&kept)
            .await
            .map_err(|e| SinkError::delta(table, e))?;
    }
    Ok(())
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

/// Reads only `id`, `meta.versionId`, `meta.lastUpdated` of one table file.
#[allow(deprecated)]
type KeyStream = parquet::arrow::async_reader::ParquetRecordBatchStream<ParquetObjectReader>;

/// Rows per batch when reading key columns.
const KEY_BATCH_ROWS: usize = 64 * 1024;

/// Opens a stream of the key columns (`id`, `meta.versionId`, `meta.lastUpdated`) of one
/// table file, plus the `reference` leaves of `ref_columns`.
async fn open_keys(
    store: &Arc<dyn ObjectStore>,
    path: &deltalake::Path,
    size: i64,
    ref_columns: &[String],
    table: &str,
) -> Result<KeyStream> {
    let pq = |source| SinkError::Parquet {
        table: table.to_string(),
        source,
    };
    #[allow(deprecated)]
    let reader = ParquetObjectReader::new(store.clone(), path.clone())
        .with_file_size(u64::try_from(size).unwrap_or(0));
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(pq)?;
    let leaves: Vec<usize> = builder
        .parquet_schema()
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let parts: Vec<&str> = c.path().parts().iter().map(String::as_str).collect();
            let key = matches!(
                parts.as_slice(),
                ["id"] | ["meta", "versionId"] | ["meta", "lastUpdated"]
            );
            let reference = parts.len() <= 4
                && parts.last() == Some(&"reference")
                && ref_columns.iter().any(|c| c == parts[0])
                && !parts.contains(&"identifier");
            key || reference
        })
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
    builder
        .with_projection(mask)
        .with_batch_size(KEY_BATCH_ROWS)
        .build()
        .map_err(pq)
}

/// Adds the leaf columns of `meta` that hold at least one value (by their chunk statistics;
/// a chunk without statistics counts as holding values).
fn add_dense_columns(meta: &ParquetMetaData, dense: &mut HashSet<ColumnPath>) {
    for rg in meta.row_groups() {
        for col in rg.columns() {
            let all_null = col
                .statistics()
                .and_then(|s| s.null_count_opt())
                .is_some_and(|nulls| i64::try_from(nulls).is_ok_and(|n| n == col.num_values()));
            if !all_null && !dense.contains(col.column_path()) {
                dense.insert(col.column_path().clone());
            }
        }
    }
}

/// How many buckets an input of `rows` rows is matched in so that one bucket indexes
/// about `bucket_rows` ids.
fn bucket_count(rows: u64, bucket_rows: usize) -> u64 {
    rows.div_ceil(bucket_rows.max(1) as u64).max(1)
}

/// What a scan of the stored rows works on, besides the input's index.
struct StoredScan<'a> {
    mode: SaveMode,
    files: &'a [LogicalFileView],
    deleted_rows: &'a [Option<RoaringTreemap>],
    deletes: &'a HashMap<Box<str>, i64>,
    reconcile: Option<&'a (IdSet, ReconcileScope)>,
    removed: &'a mut [Vec<u32>],
}

/// How stored rows meet the input: its whole index, or a spill by id bucket.
enum Matcher<'a> {
    Direct(&'a mut HashMap<Box<str>, Incoming>),
    Spill {
        filter: &'a FingerprintFilter,
        spill: &'a mut Spill,
        buckets: u64,
    },
}

/// Adds an input row to the index: of two rows with one id the newer wins (later rows
/// win ties: "not older" replaces), and the other is counted as a duplicate.
fn add_incoming(
    index: &mut HashMap<Box<str>, Incoming>,
    id: &str,
    incoming: Incoming,
    out: &mut WriteOutcome,
) {
    match index.get_mut(id) {
        Some(prev) => {
            out.duplicates += 1;
            if incoming.recency.compare(&prev.recency) != std::cmp::Ordering::Less {
                *prev = incoming;
            }
        }
        None => {
            index.insert(id.into(), incoming);
        }
    }
}

/// Meets an input row with a stored row of its id; returns whether the stored row goes.
fn settle(inc: &mut Incoming, stored: &Recency) -> bool {
    // A deleted id keeps its stored row unless the delete list removed it.
    if inc.fate == Fate::Deleted {
        return false;
    }
    if inc.recency.supersedes(stored) {
        if inc.fate == Fate::Insert {
            inc.fate = Fate::Update;
        }
        true
    } else {
        // A stored row at least as new wins (if the table held duplicates, older copies
        // beaten before are still dropped).
        inc.fate = Fate::Unchanged;
        false
    }
}

/// One bit per staged row: whether it is written.
#[derive(Default)]
struct RowMarks {
    files: Vec<Vec<u64>>,
}

impl RowMarks {
    fn set(&mut self, file: u32, row: u32) {
        let (f, w) = (file as usize, row as usize / 64);
        if self.files.len() <= f {
            self.files.resize_with(f + 1, Vec::new);
        }
        let bits = &mut self.files[f];
        if bits.len() <= w {
            bits.resize(w + 1, 0);
        }
        bits[w] |= 1 << (row % 64);
    }

    fn get(&self, file: u32, row: u32) -> bool {
        self.files
            .get(file as usize)
            .and_then(|bits| bits.get(row as usize / 64))
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    fn count_in(&self, file: u32) -> u64 {
        self.files.get(file as usize).map_or(0, |bits| {
            bits.iter().map(|w| u64::from(w.count_ones())).sum()
        })
    }
}

/// What a [`TableWriter`] hands to the commit besides its files.
struct CommitInput {
    schema: SchemaRef,
    deletes: HashMap<Box<str>, i64>,
    reconcile: Option<(IdSet, ReconcileScope)>,
    input_rows: u64,
}

/// Input of one commit: rows (written into new files as they come), deletes and an
/// optional reconciliation set.
pub struct TableWriter {
    stage: Stage,
    schema: SchemaRef,
    deletes: HashMap<Box<str>, i64>,
    reconcile: Option<(IdSet, ReconcileScope)>,
}

/// Which stored rows a reconciliation may remove (those whose id the export lacks).
#[derive(Debug, Clone)]
pub enum ReconcileScope {
    /// Every stored row.
    All,
    /// Stored rows whose id is in the set.
    Ids(IdSet),
    /// Stored rows that reference `<target_type>/<id>`, id in `targets`, in one of
    /// `columns` (top-level Reference or list-of-Reference columns), e.g. the rows of a
    /// Group's patients.
    References {
        columns: Vec<String>,
        target_type: String,
        targets: IdSet,
    },
}

impl ReconcileScope {
    fn seal(&mut self) {
        match self {
            ReconcileScope::All => {}
            ReconcileScope::Ids(ids) => ids.seal(),
            ReconcileScope::References { targets, .. } => targets.seal(),
        }
    }

    /// Columns the scan must read besides the keys.
    fn columns(&self) -> &[String] {
        match self {
            ReconcileScope::References { columns, .. } => columns,
            _ => &[],
        }
    }
}

impl TableWriter {
    /// Writes one batch into the write's current new data file (memory stays at about one
    /// row group per writer).
    pub async fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        self.stage.push(batch).await
    }

    /// Takes over the rows of `other`, a writer of the same table: several writers can be
    /// filled in parallel (each encodes its own files) and committed as one.
    pub async fn absorb(&mut self, other: TableWriter) -> Result<()> {
        if other.schema != self.schema {
            let detail = format!(
                "writers of one table with different schemas: {}",
                describe_difference(&self.schema, &other.schema)
            );
            let name = other.stage.table().to_string();
            other.discard().await?;
            return Err(SinkError::SchemaMismatch {
                table: name,
                detail,
            });
        }
        for (id, tt) in other.deletes {
            let e = self.deletes.entry(id).or_insert(tt);
            *e = (*e).max(tt);
        }
        if self.reconcile.is_none() {
            self.reconcile = other.reconcile;
        }
        self.stage.absorb(other.stage).await
    }

    /// Abandons the write: deletes the data files written so far.
    pub async fn discard(self) -> Result<()> {
        let name = self.stage.table().to_string();
        self.stage.finish().await?.discard(&name).await;
        Ok(())
    }

    /// Whether the writer has a data file open, i.e. holds rows in memory. It closes a file
    /// once the file has its rows; the next batch starts a new one.
    pub fn has_open_file(&self) -> bool {
        self.stage.has_open_file()
    }

    /// Closes the data file being written now (e.g. when no more rows of this type are
    /// coming), which releases its Parquet writer's buffers; a later push opens a new file.
    pub async fn close_file(&mut self) -> Result<()> {
        self.stage.close_current().await
    }

    /// Rows staged so far.
    pub fn staged_rows(&self) -> u64 {
        self.stage.rows()
    }

    /// The declared schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Adds ids deleted on the server as of `transaction_time`: a stored (or incoming)
    /// row is removed only if its `meta.lastUpdated` is not newer (null is not newer).
    pub fn delete<I, S>(&mut self, ids: I, transaction_time: DateTime<Utc>)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tt = transaction_time.timestamp_micros();
        for id in ids {
            let e = self.deletes.entry(Box::from(id.as_ref())).or_insert(tt);
            *e = (*e).max(tt);
        }
    }

    /// Removes stored rows whose id is not in `keep` (only those in `candidates`, if
    /// given). `keep` should be every id the server exported for the type.
    pub fn reconcile(&mut self, keep: IdSet, candidates: Option<IdSet>) {
        self.reconcile_within(
            keep,
            candidates.map_or(ReconcileScope::All, ReconcileScope::Ids),
        );
    }

    /// Removes stored rows within `scope` whose id is not in `keep`.
    pub fn reconcile_within(&mut self, mut keep: IdSet, mut scope: ReconcileScope) {
        keep.seal();
        scope.seal();
        self.reconcile = Some((keep, scope));
    }
}

#[cfg(test)]
mod tests {
    use super::kept_rows;

    fn selected(removed: &[u32], total: usize) -> Vec<usize> {
        let mut rows = Vec::new();
        let mut at = 0;
        for s in kept_rows(removed, total).iter() {
            if !s.skip {
                rows.extend(at..at + s.row_count);
            }
            at += s.row_count;
        }
        assert_eq!(at, total, "the selection covers the whole file");
        rows
    }

    #[test]
    fn kept_rows_select_everything_but_the_removed() {
        assert_eq!(selected(&[], 4), [0, 1, 2, 3]);
        assert_eq!(selected(&[0, 2, 5], 6), [1, 3, 4]);
        assert_eq!(selected(&[1, 1, 2], 4), [0, 3], "duplicates");
        assert_eq!(selected(&[0, 1, 2], 3), Vec::<usize>::new());
        assert_eq!(selected(&[3, 9], 4), [0, 1, 2], "positions past the end");
    }
}
