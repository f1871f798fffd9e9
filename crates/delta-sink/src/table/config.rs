//! Write tuning: the key columns, file and row-group sizes, compression, matching memory,
//! deletion vectors.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::WriterConfig;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

/// Page and dictionary page size limit of new data files.
const NEW_FILE_PAGE_BYTES: usize = 256 * 1024;

/// The writer configuration of a table's data files for a given Arrow schema.
pub(crate) type WriterConfigFn = Arc<dyn Fn(SchemaRef) -> WriterConfig + Send + Sync>;

/// Which columns identify a table's rows and order their versions.
///
/// The default is a resource table: `id`, `meta`, one row per id. A SQL-on-FHIR view table
/// names hidden columns instead and keeps a group of rows per resource:
///
/// ```
/// use delta_sink::{KeySpec, SinkConfig};
/// let config = SinkConfig {
///     keys: KeySpec::grouped("_resource_key", "_resource_meta", "_placeholder"),
///     ..SinkConfig::default()
/// };
/// assert!(config.keys.is_grouped());
/// assert_eq!(SinkConfig::default().keys, KeySpec::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Column holding the key (string).
    pub id: String,
    /// Struct column with `lastUpdated` (timestamp) and `versionId` (string): the recency.
    pub meta: String,
    /// Whether a key has one row (default) or a group of rows.
    pub rows: KeyRows,
}

/// How many rows a key has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyRows {
    /// One row per key: the newest input row of a key replaces its stored row.
    #[default]
    One,
    /// All input rows of a key with the same recency form one group; a newer group replaces
    /// every stored row of the key. Rows whose boolean column `placeholder` is true stand
    /// for a group with no rows: they take part in matching (so the group can replace
    /// stored rows) but are never written.
    Group {
        /// The boolean column marking placeholder rows (null is false).
        placeholder: String,
    },
}

impl Default for KeySpec {
    fn default() -> Self {
        Self {
            id: "id".to_string(),
            meta: "meta".to_string(),
            rows: KeyRows::One,
        }
    }
}

impl KeySpec {
    /// Keys of one row each in the columns `id` and `meta`.
    pub fn one(id: impl Into<String>, meta: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            meta: meta.into(),
            rows: KeyRows::One,
        }
    }

    /// Keys of a group of rows each in the columns `id` and `meta`, placeholder rows marked
    /// in the boolean column `placeholder`.
    pub fn grouped(
        id: impl Into<String>,
        meta: impl Into<String>,
        placeholder: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            meta: meta.into(),
            rows: KeyRows::Group {
                placeholder: placeholder.into(),
            },
        }
    }

    /// Whether a key has a group of rows.
    pub fn is_grouped(&self) -> bool {
        matches!(self.rows, KeyRows::Group { .. })
    }

    /// The placeholder column of grouped keys.
    pub(crate) fn placeholder(&self) -> Option<&str> {
        match &self.rows {
            KeyRows::One => None,
            KeyRows::Group { placeholder } => Some(placeholder),
        }
    }
}

/// Tuning for writes. Defaults suit production; tests shrink the sizes.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The key columns and whether a key has one row or a group (default: `id`, `meta`,
    /// one row per id).
    pub keys: KeySpec,
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
    /// enable them on an existing table without the property in the commit that writes its
    /// first vector; a table whose owner set the property to false keeps it (its merges
    /// rewrite files, and the sink warns once). Where a table has them enabled, a merge
    /// marks the replaced and deleted rows of a stored file in a deletion vector instead of
    /// rewriting the file. Readers must support deletion vectors (Delta reader version 3).
    pub deletion_vectors: bool,
    /// With deletion vectors, a stored file is rewritten instead once more than this
    /// fraction of its rows would be marked deleted.
    pub max_deleted_fraction: f64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            keys: KeySpec::default(),
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

    fn writer_properties_builder(&self) -> WriterPropertiesBuilder {
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
    pub(crate) fn new_file_properties(&self) -> WriterProperties {
        self.writer_properties_builder()
            .set_compression(Compression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::Chunk)
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
    pub(crate) fn writer_properties_for(&self, dense: &HashSet<ColumnPath>) -> WriterProperties {
        let mut b = self
            .writer_properties_builder()
            .set_compression(Compression::SNAPPY);
        for path in dense {
            b = b.set_column_compression(path.clone(), self.zstd());
        }
        b.build()
    }
}
