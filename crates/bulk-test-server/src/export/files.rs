//! The files of a planned export, produced on demand from the base data and the job's
//! snapshot of the store (nothing is materialised up front).
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::elements::Elements;
use crate::store::{Base, StoreInner};

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Output,
    Deleted,
    Error,
}

pub(crate) enum Seg {
    Base(Range<u64>),
    Line(Arc<str>),
}

/// One file of a job: produced on demand from the base data and the job's snapshot.
pub(crate) struct FileSpec {
    pub number: usize,
    pub resource_type: String,
    pub kind: FileKind,
    pub output_index: Option<usize>,
    pub count: u64,
    pub segs: Vec<Seg>,
    pub store: Arc<StoreInner>,
    pub elements: Option<Elements>,
    /// `meta.lastUpdated` is removed from each resource.
    pub without_last_updated: bool,
    pub len: OnceLock<u64>,
}

impl FileSpec {
    /// Produces the NDJSON body; `sink` returns false to stop early.
    pub fn render(&self, sink: &mut dyn FnMut(&[u8]) -> bool) {
        let mut buf = Vec::with_capacity(4096);
        let ty = self.resource_type.as_str();
        let mut emit = |line: &str, buf: &mut Vec<u8>| -> bool {
            buf.clear();
            let elements = self
                .elements
                .as_ref()
                .filter(|_| self.kind == FileKind::Output);
            if elements.is_none() && !self.without_last_updated {
                buf.extend_from_slice(line.as_bytes());
            } else if elements.is_none() {
                without_last_updated(line, buf);
            } else {
                let mut v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                if let Some(e) = elements {
                    v = e.apply(ty, v);
                }
                if self.without_last_updated
                    && let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut)
                {
                    meta.remove("lastUpdated");
                }
                let _ = serde_json::to_writer(&mut *buf, &v);
            }
            buf.push(b'\n');
            sink(buf)
        };
        for seg in &self.segs {
            match seg {
                Seg::Line(l) => {
                    if !emit(l, &mut buf) {
                        return;
                    }
                }
                Seg::Base(r) => {
                    for i in r.clone() {
                        let line = self.store.base.line(ty, i);
                        if !emit(&line, &mut buf) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sets the length without rendering when every line is already in memory as served.
    pub fn quick_length(&self) {
        if (self.elements.is_some() && self.kind == FileKind::Output) || self.without_last_updated {
            return;
        }
        let memory = matches!(self.store.base, Base::Memory(_));
        let mut n = 0u64;
        for seg in &self.segs {
            match seg {
                Seg::Line(l) => n += l.len() as u64 + 1,
                Seg::Base(r) if memory => {
                    for i in r.clone() {
                        n += self.store.base.line(&self.resource_type, i).len() as u64 + 1;
                    }
                }
                Seg::Base(_) => return,
            }
        }
        let _ = self.len.set(n);
    }

    /// Body length in bytes (computed once by rendering).
    pub fn length(&self) -> u64 {
        *self.len.get_or_init(|| {
            let mut n = 0u64;
            self.render(&mut |b| {
                n += b.len() as u64;
                true
            });
            n
        })
    }
}

pub(crate) struct Plan {
    pub files: Vec<Arc<FileSpec>>,
}

impl Plan {
    pub fn of_kind(&self, kind: FileKind) -> impl Iterator<Item = &Arc<FileSpec>> {
        self.files.iter().filter(move |f| f.kind == kind)
    }
}

/// `line` without `meta.lastUpdated`, every other value as written: decimals keep their
/// digits, which a round trip through `f64` would not.
fn without_last_updated(line: &str, buf: &mut Vec<u8>) {
    use serde_json::value::RawValue;
    let Ok(mut fields) =
        serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(line)
    else {
        buf.extend_from_slice(line.as_bytes());
        return;
    };
    if let Some(meta) = fields.get_mut("meta")
        && let Ok(mut m) = serde_json::from_str::<Value>(meta.get())
        && let Some(obj) = m.as_object_mut()
    {
        obj.remove("lastUpdated");
        if let Ok(raw) = serde_json::value::to_raw_value(&m) {
            *meta = raw;
        }
    }
    if serde_json::to_writer(&mut *buf, &fields).is_err() {
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
    }
}
