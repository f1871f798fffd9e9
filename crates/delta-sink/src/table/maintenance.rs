//! Maintenance: compaction (optimize), removal of unreferenced files (vacuum), checkpoints.

use std::num::NonZeroU64;
use std::time::Duration;

use super::ResourceTable;
use crate::error::{Result, SinkError};

/// Options of [`ResourceTable::optimize`].
#[derive(Debug, Clone, Default)]
pub struct OptimizeOptions {
    /// Z-order files by the key column (`id` by default, see `SinkConfig::keys`) instead
    /// of bin-packing.
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

impl ResourceTable {
    /// Compacts small files (bin-packing, or z-order by the key column).
    pub async fn optimize(&mut self, options: OptimizeOptions) -> Result<OptimizeReport> {
        self.reload_existing().await?;
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
                    self.config.keys.id.clone(),
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
        self.reload_existing().await?;
        let retention = chrono::Duration::from_std(retention)
            .map_err(|e| SinkError::invalid(&self.name, format!("retention: {e}")))?;
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

    /// Loads the latest version of a table that must exist.
    async fn reload_existing(&mut self) -> Result<()> {
        self.reload().await?;
        if !self.exists() {
            return Err(SinkError::NotATable {
                table: self.name.clone(),
            });
        }
        Ok(())
    }
}
