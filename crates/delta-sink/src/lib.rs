//! Delta Lake tables for FHIR resources: merge by id, deletes, save modes, cursor
//! committed with the data.
//!
//! One table per resource type at `<root>/<Type>.parquet` (local path or `s3://`).
//! A write streams its batches into new data files in the table's location, then
//! [`ResourceTable::commit`] applies them — with deletes, reconciliation and the sync
//! cursor — as one Delta commit: files whose rows all win are added as written, the rest
//! rewritten without the losing rows.
//!
//! ```no_run
//! # async fn demo(schema: arrow::datatypes::SchemaRef, batch: arrow::array::RecordBatch) -> delta_sink::Result<()> {
//! use delta_sink::{CommitOptions, Cursor, DeltaSink, SaveMode, StorageOptions};
//! let sink = DeltaSink::new("./delta", StorageOptions::new())?;
//! let mut table = sink.table("Patient").await?;
//! let mut w = table.writer(schema);
//! w.push(&batch).await?;
//! let tt = chrono::Utc::now();
//! let cursor = Cursor::new("server-a/Patient", tt, "sync-42");
//! let outcome = table.commit(w, CommitOptions { mode: SaveMode::Merge, cursor: Some(cursor) }).await?;
//! println!("{} inserted, {} updated", outcome.inserted, outcome.updated);
//! # Ok(()) }
//! ```

mod error;
pub mod generator;
mod keys;
mod location;
mod table;

pub use error::{Result, SinkError};
pub use keys::{IdSet, IdSetBuilder, reference_id};
pub use location::StorageOptions;
pub use table::{
    CommitOptions, Cursor, DeltaSink, KeyRows, KeySpec, OptimizeOptions, OptimizeReport,
    ReconcileScope, ResourceTable, SaveMode, SinkConfig, SyncMetadata, TableStats, TableWriter,
    UnknownSaveMode, VacuumReport, WriteOutcome, WriteStatus,
};
