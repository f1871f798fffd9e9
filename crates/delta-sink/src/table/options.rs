//! What a commit is asked to do: the save mode and the sync cursor.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Prefix of the commit metadata keys this crate writes.
pub(crate) const METADATA_PREFIX: &str = "fhirsync.";

/// How a write treats an existing table (the Delta/Spark save modes plus `merge`).
///
/// Its names (`merge`, `overwrite`, `append`, `ignore`, `error`) are the same for
/// [`FromStr`](std::str::FromStr), [`Display`](std::fmt::Display) and serde, so one
/// vocabulary serves command lines, configuration files and commit metadata.
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

impl SaveMode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [SaveMode; 5] = [
        SaveMode::Merge,
        SaveMode::Overwrite,
        SaveMode::Append,
        SaveMode::Ignore,
        SaveMode::ErrorIfExists,
    ];

    /// The mode's name, as parsed and displayed.
    pub const fn as_str(self) -> &'static str {
        match self {
            SaveMode::Merge => "merge",
            SaveMode::Overwrite => "overwrite",
            SaveMode::Append => "append",
            SaveMode::Ignore => "ignore",
            SaveMode::ErrorIfExists => "error",
        }
    }

    /// One line on what the mode does, for help texts.
    pub const fn description(self) -> &'static str {
        match self {
            SaveMode::Merge => "Upsert by resource id (and apply deletions): the incremental mode.",
            SaveMode::Overwrite => "Replace the table contents.",
            SaveMode::Append => "Append rows without de-duplication against stored rows.",
            SaveMode::Ignore => "Leave an existing table untouched.",
            SaveMode::ErrorIfExists => "Fail if the table exists.",
        }
    }
}

/// A save mode name that is not one of [`SaveMode::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown save mode `{0}` (expected merge, overwrite, append, ignore or error)")]
pub struct UnknownSaveMode(pub String);

impl std::str::FromStr for SaveMode {
    type Err = UnknownSaveMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SaveMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownSaveMode(s.to_string()))
    }
}

impl std::fmt::Display for SaveMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_mode_names_are_one_vocabulary() {
        let names: Vec<&str> = SaveMode::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(names, ["merge", "overwrite", "append", "ignore", "error"]);
        for mode in SaveMode::ALL {
            let name = mode.to_string();
            assert_eq!(name, mode.as_str());
            assert_eq!(name.parse::<SaveMode>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<SaveMode>(&json).unwrap(), mode);
            assert!(!mode.description().is_empty());
        }
        assert_eq!(SaveMode::default(), SaveMode::Merge);
    }

    #[test]
    fn other_save_mode_names_are_refused() {
        for name in [
            "upsert",
            "Merge",
            " merge",
            "errorifexists",
            "ErrorIfExists",
            "",
        ] {
            let err = name.parse::<SaveMode>().unwrap_err();
            assert_eq!(err, UnknownSaveMode(name.to_string()));
            assert!(
                err.to_string().contains("expected merge, overwrite"),
                "{err}"
            );
            assert!(serde_json::from_str::<SaveMode>(&format!("\"{name}\"")).is_err());
        }
    }
}
