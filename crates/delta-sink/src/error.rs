//! Typed errors. Every variant names the table it concerns.

use deltalake::DeltaTableError;

/// Errors from Delta table operations.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The table location could not be turned into a URL.
    #[error("invalid table location {location:?}: {reason}")]
    InvalidLocation {
        /// Location as given.
        location: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `SaveMode::ErrorIfExists` and the table is already there.
    #[error("table {table} already exists (save mode `error`)")]
    TableExists {
        /// Table URL.
        table: String,
    },
    /// The operation needs an existing table.
    #[error("table {table} does not exist")]
    NotATable {
        /// Table URL.
        table: String,
    },
    /// Incoming data does not fit the table or the declared schema.
    #[error("schema mismatch for table {table}: {detail}")]
    SchemaMismatch {
        /// Table URL.
        table: String,
        /// What differs.
        detail: String,
    },
    /// A batch lacks a column the sink needs (`id`, `meta.lastUpdated`, ...).
    #[error("table {table}: {detail}")]
    InvalidData {
        /// Table URL.
        table: String,
        /// What is wrong.
        detail: String,
    },
    /// Another writer committed to the table in between; reload and retry.
    #[error("concurrent commit to table {table}: {}", first_line(.source))]
    Conflict {
        /// Table URL.
        table: String,
        /// Underlying conflict.
        #[source]
        source: DeltaTableError,
    },
    /// Any other Delta Lake failure.
    #[error("delta table {table}: {source}")]
    Delta {
        /// Table URL.
        table: String,
        /// Underlying error.
        #[source]
        source: DeltaTableError,
    },
    /// Reading or writing Parquet (new or stored table files).
    #[error("table {table}: parquet: {source}")]
    Parquet {
        /// Table URL.
        table: String,
        /// Underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow compute / conversion failure.
    #[error("table {table}: arrow: {source}")]
    Arrow {
        /// Table URL.
        table: String,
        /// Underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Local file system.
    #[error("table {table}: {context}: {source}")]
    Io {
        /// Table URL.
        table: String,
        /// What was being done.
        context: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl SinkError {
    /// Wraps a delta-rs error, singling out commit conflicts.
    pub(crate) fn delta(table: &str, source: DeltaTableError) -> Self {
        let table = table.to_string();
        if is_conflict(&source) {
            SinkError::Conflict { table, source }
        } else {
            SinkError::Delta { table, source }
        }
    }

    pub(crate) fn parquet(table: &str, source: parquet::errors::ParquetError) -> Self {
        SinkError::Parquet {
            table: table.to_string(),
            source,
        }
    }

    pub(crate) fn invalid(table: &str, detail: impl Into<String>) -> Self {
        SinkError::InvalidData {
            table: table.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(table: &str, context: &str, source: std::io::Error) -> Self {
        SinkError::Io {
            table: table.to_string(),
            context: context.to_string(),
            source,
        }
    }

    /// True when retrying after a reload may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, SinkError::Conflict { .. })
    }
}

/// The first line of a Delta error: delta-rs adds pages of help to its conflict messages.
fn first_line(e: &DeltaTableError) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn is_conflict(err: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    match err {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::CommitConflict(_)
                | TransactionError::VersionAlreadyExists(_)
                | TransactionError::MaxCommitAttempts(_)
        ),
        _ => false,
    }
}

/// Result alias for this crate.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;
