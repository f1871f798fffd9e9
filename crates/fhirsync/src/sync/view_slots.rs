//! The views a sync keeps, while its export is applied: each view's table and writers. A
//! view's rows are computed from each resource's original JSON as the resource is encoded
//! (whatever the encoding keeps), and staged beside the resource rows; the commit of the
//! resource's table then commits them (see `view_commit`).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use delta_sink::{ResourceTable, TableWriter};
use fhir_encoder::Observer;

use crate::views::MaintainedView;
use crate::views::stage::{ViewRows, table_schema};

/// View rows gathered before they are written (per view and encoding thread).
const VIEW_BATCH_ROWS: usize = 4096;

/// One view while an export is applied.
pub(crate) struct ViewSlot {
    pub view: Arc<MaintainedView>,
    /// Taken by the commit.
    pub table: Mutex<Option<ResourceTable>>,
    /// Writers not in use; an encoding thread that finds none opens another.
    idle: Mutex<Vec<TableWriter>>,
    /// Resources whose rows could not be computed.
    pub failed: AtomicU64,
}

impl ViewSlot {
    pub fn new(view: Arc<MaintainedView>, table: ResourceTable) -> ViewSlot {
        ViewSlot {
            view,
            table: Mutex::new(Some(table)),
            idle: Mutex::new(Vec::new()),
            failed: AtomicU64::new(0),
        }
    }

    /// Every writer of the view; none remain.
    pub fn take_writers(&self) -> anyhow::Result<Vec<TableWriter>> {
        Ok(std::mem::take(&mut *self.idle.lock().map_err(poisoned)?))
    }

    /// Writes `rows`' batch into one of the view's writers (from an encoding thread).
    fn write(&self, rows: &mut ViewRows, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = rows.finish()?;
        let popped = self.idle.lock().map_err(poisoned)?.pop();
        let mut writer = match popped {
            Some(w) => w,
            None => {
                let table = self.table.lock().map_err(poisoned)?;
                let table = table
                    .as_ref()
                    .ok_or_else(|| anyhow!("the view {} is already committed", self.view.name))?;
                table.writer(table_schema(&self.view.definition))
            }
        };
        let pushed = runtime.block_on(writer.push(&batch));
        self.idle.lock().map_err(poisoned)?.push(writer);
        pushed.with_context(|| format!("writing rows of the view {}", self.view.name))
    }
}

fn poisoned<T>(_: T) -> anyhow::Error {
    anyhow!("a view writer thread panicked")
}

/// Every view of a sync, by the resource type it reads.
#[derive(Default)]
pub(crate) struct ViewSlots {
    by_type: BTreeMap<String, Vec<Arc<ViewSlot>>>,
    /// Tells apart the copies of a resource across syncs and files (see `version_key`).
    run: String,
    files: AtomicU64,
}

impl ViewSlots {
    pub fn new(slots: Vec<Arc<ViewSlot>>) -> ViewSlots {
        let mut by_type: BTreeMap<String, Vec<Arc<ViewSlot>>> = BTreeMap::new();
        for s in slots {
            by_type
                .entry(s.view.definition.resource.clone())
                .or_default()
                .push(s);
        }
        ViewSlots {
            by_type,
            run: format!("{:015}", chrono::Utc::now().timestamp_millis()),
            files: AtomicU64::new(0),
        }
    }

    /// The views of `resource_type`.
    pub fn of_type(&self, resource_type: &str) -> &[Arc<ViewSlot>] {
        self.by_type.get(resource_type).map_or(&[], Vec::as_slice)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ViewSlot>> {
        self.by_type.values().flatten()
    }

    /// The staging of one input file's view rows; `None` without views.
    pub fn for_file(&self) -> Option<FileViews> {
        if self.by_type.is_empty() {
            return None;
        }
        let file = self.files.fetch_add(1, Ordering::SeqCst);
        let rows = self
            .all()
            .map(|slot| (slot.clone(), ViewRows::new(slot.view.definition.clone())))
            .collect();
        Some(FileViews {
            rows: Arc::new(Mutex::new(rows)),
            copy_prefix: format!("{}.{file:09}.", self.run),
        })
    }
}

/// Each view's rows of one file, beside the view's slot.
type FileRows = Vec<(Arc<ViewSlot>, ViewRows)>;

/// One input file's view rows, computed by the encoder's observer.
pub(crate) struct FileViews {
    rows: Arc<Mutex<FileRows>>,
    copy_prefix: String,
}

impl FileViews {
    /// What the encoder calls with each resource it made a row of.
    pub fn observer(&self) -> Observer {
        let rows = self.rows.clone();
        let prefix = self.copy_prefix.clone();
        let mut copy = String::new();
        Box::new(move |resource_type, doc, line| {
            let Ok(mut rows) = rows.lock() else { return };
            copy.clear();
            copy.push_str(&prefix);
            let _ = write!(copy, "{line:010}");
            for (slot, r) in rows.iter_mut() {
                if slot.view.definition.resource == resource_type {
                    r.push(doc, &copy);
                }
            }
        })
    }

    /// Writes the views' batches gathered so far: all of them with `all`, else only those
    /// that are full.
    pub fn flush(&self, all: bool, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
        let mut rows = self.rows.lock().map_err(poisoned)?;
        for (slot, r) in rows.iter_mut() {
            if all || r.len() >= VIEW_BATCH_ROWS {
                slot.failed
                    .fetch_add(std::mem::take(&mut r.failed), Ordering::SeqCst);
                slot.write(r, runtime)?;
            }
        }
        Ok(())
    }
}
