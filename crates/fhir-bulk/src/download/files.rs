//! The files of a download: where each manifest entry goes, what a finished file records,
//! and the record of a line set aside.
use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::events::FileKind;
use crate::manifest::Manifest;
use crate::outcome::{Deletion, OutcomeIssue};

/// A file of the manifest and where it goes, relative to the output directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub kind: FileKind,
    pub resource_type: String,
    pub url: Url,
    pub count: Option<u64>,
    /// `Type.n.ndjson`, `deleted/Type.n.ndjson` or `error/Type.n.ndjson` (n from 1, per type).
    pub name: String,
}

/// Lays out the manifest's files deterministically (the same manifest gives the same names).
pub fn plan(manifest: &Manifest) -> Vec<PlannedFile> {
    let mut planned = Vec::new();
    for (kind, files, dir) in [
        (FileKind::Output, &manifest.output, ""),
        (FileKind::Deleted, &manifest.deleted, "deleted/"),
        (FileKind::Error, &manifest.error, "error/"),
    ] {
        let mut seq: HashMap<&str, u32> = HashMap::new();
        for f in files {
            let n = seq.entry(&f.resource_type).or_default();
            *n += 1;
            planned.push(PlannedFile {
                kind,
                resource_type: f.resource_type.clone(),
                url: f.url.clone(),
                count: f.count,
                name: format!("{dir}{}.{n}.ndjson", f.resource_type),
            });
        }
    }
    planned
}

/// A file that finished downloading (or had finished in an earlier, resumed run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownloadedFile {
    pub kind: FileKind,
    pub resource_type: String,
    pub url: Url,
    /// Path relative to the output directory.
    pub name: String,
    pub path: PathBuf,
    /// Valid lines kept (resources for output files).
    pub lines: u64,
    /// Bytes of the kept file.
    pub bytes: u64,
    /// Lines set aside in `rejects_path`.
    pub rejected_lines: u64,
    pub rejects_path: Option<PathBuf>,
    /// The manifest's `count`, when given.
    pub expected_count: Option<u64>,
    /// Parsed deletions (deleted files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<Deletion>,
    /// OperationOutcome issues (error files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<OutcomeIssue>,
    /// True when taken over from an earlier run rather than downloaded now.
    #[serde(default)]
    pub resumed: bool,
}

impl DownloadedFile {
    /// `count` was given and differs from the lines received.
    pub fn count_mismatch(&self) -> bool {
        self.kind == FileKind::Output
            && self
                .expected_count
                .is_some_and(|c| c != self.lines + self.rejected_lines)
    }
}

/// A line set aside, as written (one JSON object per line) to `rejects/<file>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    pub file: String,
    pub url: String,
    pub line: u64,
    pub reason: String,
    pub raw: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_truncated: bool,
}
