//! Rejected resources: where their list goes, the list itself (one JSON object per line), and
//! which table each one counts under.
use std::collections::BTreeSet;
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
    /// Whether the list's directory was created for it.
    created_dir: bool,
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
            created_dir: false,
            count: 0,
        }
    }

    /// Rejects written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn write(&mut self, r: &EncodeReject) -> anyhow::Result<()> {
        if self.out.is_none() {
            self.created_dir = !self.dir.exists();
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

    /// Removes the list, and its directory when it was created for it and holds nothing
    /// else: a run that committed nothing leaves no list behind.
    pub fn discard(&mut self) {
        let written = self.out.take().is_some() || self.count > 0;
        if !written {
            return;
        }
        let path = self.dir.join(&self.name);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the list of rejects");
        }
        if self.created_dir {
            // Fails, as it should, when something else is in it.
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// The rejects of one input file, and the type they count under: the type the manifest
/// announced for the file; without one (an import), the line's own type, else that of the
/// file's other lines (when they are all of one type) or the type its name starts with.
pub(crate) struct FileRejects {
    announced: Option<String>,
    name_type: Option<String>,
    /// Types of the file's lines that could be read, encoded or rejected.
    seen: BTreeSet<String>,
    /// Rejects whose type is known only once the whole file is read.
    waiting: Vec<EncodeReject>,
}

impl FileRejects {
    /// `name_type`: the type the file's name starts with, if it names one.
    pub fn new(announced: Option<String>, name_type: Option<String>) -> Self {
        Self {
            announced,
            name_type,
            seen: BTreeSet::new(),
            waiting: Vec::new(),
        }
    }

    /// A line of `resource_type` was read.
    pub fn saw(&mut self, resource_type: &str) {
        if self.announced.is_none() && !self.seen.contains(resource_type) {
            self.seen.insert(resource_type.to_owned());
        }
    }

    /// The type `r` counts under, with `r`; `None` when that depends on the rest of the
    /// file (`r` waits for [`Self::finish`]).
    pub fn place(&mut self, r: EncodeReject) -> Option<(String, EncodeReject)> {
        if let Some(t) = &r.resource_type {
            self.saw(t);
        }
        match self.announced.clone().or_else(|| r.resource_type.clone()) {
            Some(t) => Some((t, r)),
            None => {
                self.waiting.push(r);
                None
            }
        }
    }

    /// The file is read: the rejects that waited for its type, and that type if it has one.
    pub fn finish(self) -> (Option<String>, Vec<EncodeReject>) {
        let others = (self.seen.len() == 1)
            .then(|| self.seen.into_iter().next())
            .flatten();
        (others.or(self.name_type), self.waiting)
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

    fn reject(resource_type: Option<&str>, line: u64) -> EncodeReject {
        EncodeReject {
            resource_type: resource_type.map(str::to_owned),
            id: None,
            file: "f.ndjson".into(),
            line,
            reason: "bad".into(),
        }
    }

    fn table(placed: Option<(String, EncodeReject)>) -> Option<String> {
        placed.map(|(t, _)| t)
    }

    #[test]
    fn a_reject_counts_under_the_announced_type_else_its_own() {
        let mut announced = FileRejects::new(Some("Patient".into()), None);
        assert_eq!(
            table(announced.place(reject(None, 1))).as_deref(),
            Some("Patient")
        );
        let other = announced.place(reject(Some("Observation"), 2));
        assert_eq!(table(other).as_deref(), Some("Patient"));
        let mut local = FileRejects::new(None, Some("Condition".into()));
        let own = local.place(reject(Some("Observation"), 1));
        assert_eq!(table(own).as_deref(), Some("Observation"));
    }

    #[test]
    fn a_reject_of_no_type_waits_for_the_files_other_lines_or_its_name() {
        let mut file = FileRejects::new(None, Some("Condition".into()));
        assert!(file.place(reject(None, 1)).is_none());
        file.saw("Observation");
        let (t, waiting) = file.finish();
        assert_eq!((t.as_deref(), waiting.len()), (Some("Observation"), 1));

        let mut mixed = FileRejects::new(None, Some("Condition".into()));
        assert!(mixed.place(reject(None, 1)).is_none());
        mixed.saw("Observation");
        mixed.saw("Patient");
        assert_eq!(
            mixed.finish().0.as_deref(),
            Some("Condition"),
            "by its name"
        );

        let mut nameless = FileRejects::new(None, None);
        assert!(nameless.place(reject(None, 1)).is_none());
        assert_eq!(nameless.finish().0, None);
    }

    #[test]
    fn a_discarded_list_leaves_no_file_and_no_folder_it_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RejectLog::new(dir.path().join("r"), "sync-1");
        log.write(&reject(None, 1)).unwrap();
        log.discard();
        assert!(!dir.path().join("r").exists());

        std::fs::create_dir(dir.path().join("kept")).unwrap();
        std::fs::write(dir.path().join("kept/other"), "").unwrap();
        let mut log = RejectLog::new(dir.path().join("kept"), "sync-2");
        log.write(&reject(None, 1)).unwrap();
        log.discard();
        let left: Vec<_> = std::fs::read_dir(dir.path().join("kept"))
            .unwrap()
            .collect();
        assert_eq!(left.len(), 1, "only the file that was there before");
    }
}
