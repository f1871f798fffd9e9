//! Rejected resources: where their list goes, and the list itself (one JSON object per line).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};

use crate::encode::EncodeReject;
use crate::tables;

/// Where the rejects of a sync or import into `delta_path` go: `<delta-path>/_rejects` for a
/// local path; for an object store path, `rejects/` in the work directory (beside the state
/// file), or `_rejects` in the current directory when there is none.
pub(crate) fn rejects_dir(delta_path: &str, work_dir: Option<&Path>) -> PathBuf {
    match (tables::local_dir(delta_path), work_dir) {
        (Some(local), _) => local.join("_rejects"),
        (None, Some(work)) => work.join("rejects"),
        (None, None) => PathBuf::from("_rejects"),
    }
}

/// The list of rejected resources, in a file created on the first reject.
pub(crate) struct RejectLog {
    dir: PathBuf,
    name: String,
    sync_id: String,
    started_at: String,
    out: Option<BufWriter<File>>,
    count: u64,
}

impl RejectLog {
    pub fn new(dir: PathBuf, sync_id: &str) -> Self {
        let now = Utc::now();
        let stamp = now.format("%Y%m%dT%H%M%S%.3fZ");
        Self {
            dir,
            name: format!("rejects-{stamp}.ndjson"),
            sync_id: sync_id.to_owned(),
            started_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            out: None,
            count: 0,
        }
    }

    /// Rejects written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn write(&mut self, r: &EncodeReject) -> anyhow::Result<()> {
        if self.out.is_none() {
            std::fs::create_dir_all(&self.dir)
                .with_context(|| format!("creating {}", self.dir.display()))?;
            let path = self.dir.join(&self.name);
            // Truncate: a re-run of the same export rewrites the same list.
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            self.out = Some(BufWriter::new(f));
        }
        let record = serde_json::json!({
            "sync_id": self.sync_id,
            "sync_started_at": self.started_at,
            "resource_type": r.resource_type,
            "id": r.id,
            "file": r.file,
            "line": r.line,
            "reason": r.reason,
        });
        if let Some(out) = self.out.as_mut() {
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
        }
        self.count += 1;
        Ok(())
    }

    /// Flushes the list; its path, when anything was rejected.
    pub fn finish(&mut self) -> anyhow::Result<Option<PathBuf>> {
        match self.out.take() {
            Some(mut out) => {
                out.flush()?;
                Ok(Some(self.dir.join(&self.name)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_go_beside_a_local_table_else_beside_the_state_file() {
        let work = Path::new("/var/lib/fhirsync");
        assert_eq!(
            rejects_dir("/data/fhir", Some(work)),
            Path::new("/data/fhir/_rejects")
        );
        assert_eq!(
            rejects_dir("file:///data/fhir", None),
            Path::new("/data/fhir/_rejects")
        );
        assert_eq!(
            rejects_dir("s3://bucket/fhir", Some(work)),
            Path::new("/var/lib/fhirsync/rejects")
        );
        assert_eq!(rejects_dir("s3://bucket/fhir", None), Path::new("_rejects"));
    }

    #[test]
    fn the_list_is_created_on_the_first_reject_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RejectLog::new(dir.path().join("r"), "sync-1");
        assert_eq!(log.finish().unwrap(), None);
        assert!(!dir.path().join("r").exists());
        let reject = EncodeReject {
            resource_type: Some("Patient".into()),
            id: None,
            file: "Patient.ndjson".into(),
            line: 7,
            reason: "no id".into(),
        };
        log.write(&reject).unwrap();
        assert_eq!(log.count(), 1);
        let path = log.finish().unwrap().unwrap();
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(path).unwrap().trim()).unwrap();
        assert_eq!(line["sync_id"], "sync-1");
        assert_eq!(line["line"], 7);
        assert_eq!(line["reason"], "no id");
    }
}
