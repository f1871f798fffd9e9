//! What a commit did: its status and counts.

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
///
/// The row counts count keys: with grouped keys (`KeyRows::Group`) `inserted`, `updated`,
/// `unchanged`, `deleted`, `reconciled` and `duplicates` count groups (one per key, or per
/// losing group for `duplicates`), not the rows in them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteOutcome {
    /// What happened.
    pub status: WriteStatus,
    /// Table version after the operation (`None` when no table exists).
    pub version: Option<u64>,
    /// Incoming rows (groups) whose key was not in the table.
    pub inserted: u64,
    /// Stored rows (groups) replaced by newer incoming ones.
    pub updated: u64,
    /// Incoming rows (groups) skipped: stale, the same version as the stored one, removed
    /// by the delete list, or a group of placeholders only for a key the table lacks.
    pub unchanged: u64,
    /// Stored rows (keys) removed by the delete list.
    pub deleted: u64,
    /// Stored rows (keys) removed by reconciliation (key absent from the export).
    pub reconciled: u64,
    /// Incoming rows (groups) superseded by a newer one with the same key in the same input.
    pub duplicates: u64,
    /// Incoming rows without a key (not written); counted by row.
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
    pub(crate) fn empty(status: WriteStatus, version: Option<u64>) -> Self {
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
