//! The immutable base data of a server: bundled, loaded from a directory, or synthetic, and
//! the queries planning asks of it.
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::memory::MemoryData;
use crate::config::{DataSource, ServerError};
use crate::synthetic::Synthetic;

/// `(type, gzipped NDJSON)` of each bundled file `data/synthea-100/<type>.ndjson.gz`.
macro_rules! bundled {
    ($($ty:literal),* $(,)?) => {
        &[$(($ty, include_bytes!(concat!("../../data/synthea-100/", $ty, ".ndjson.gz")))),*]
    };
}

/// The bundled Synthea export, gzipped NDJSON compiled into the binary.
const SYNTHEA: &[(&str, &[u8])] = bundled![
    "AllergyIntolerance",
    "CarePlan",
    "CareTeam",
    "Claim",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "ExplanationOfBenefit",
    "Group",
    "ImagingStudy",
    "Immunization",
    "MedicationRequest",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "Procedure",
];

fn gunzip(name: &str, bytes: &[u8]) -> Result<String, String> {
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut s)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(s)
}

/// The Synthea base is immutable, so one parse serves every server in the process.
/// Loaded data and the time given to resources without `meta.lastUpdated`.
pub(crate) type Loaded = Arc<(MemoryData, DateTime<Utc>)>;

fn synthea() -> Result<Loaded, ServerError> {
    static CELL: OnceLock<Result<Loaded, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        let load_time = Utc::now();
        let mut texts = Vec::new();
        for (name, bytes) in SYNTHEA {
            texts.push((format!("{name}.ndjson.gz"), gunzip(name, bytes)?));
        }
        let mut bad = Vec::new();
        let data = MemoryData::load(texts, load_time, &mut bad);
        if let Some(b) = bad.first() {
            return Err(format!("bundled data is corrupt: {b}"));
        }
        Ok(Arc::new((data, load_time)))
    })
    .clone()
    .map_err(|message| ServerError::Data {
        path: "bundled synthea-100".into(),
        message,
    })
}

fn load_dir(dir: &Path, load_time: DateTime<Utc>) -> Result<MemoryData, ServerError> {
    let err = |message: String| ServerError::Data {
        path: dir.display().to_string(),
        message,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".ndjson") || n.ends_with(".ndjson.gz")
        })
        .collect();
    entries.sort();
    let mut texts = Vec::new();
    for p in entries {
        let name = p.display().to_string();
        let bytes = std::fs::read(&p).map_err(|e| err(format!("{name}: {e}")))?;
        let text = if name.ends_with(".gz") {
            gunzip(&name, &bytes).map_err(err)?
        } else {
            String::from_utf8(bytes).map_err(|e| err(format!("{name}: not UTF-8: {e}")))?
        };
        texts.push((name, text));
    }
    let mut bad = Vec::new();
    let data = MemoryData::load(texts, load_time, &mut bad);
    for b in bad.iter().take(20) {
        tracing::warn!(line = %b, "skipping a line that is not a FHIR resource");
    }
    Ok(data)
}

/// The immutable base data.
pub(crate) enum Base {
    Memory(Loaded),
    Synthetic(Synthetic),
}

impl Base {
    pub fn load(source: &DataSource, load_time: DateTime<Utc>) -> Result<Base, ServerError> {
        Ok(match source {
            DataSource::Synthea => Base::Memory(synthea()?),
            DataSource::Dir(d) => Base::Memory(Arc::new((load_dir(d, load_time)?, load_time))),
            DataSource::Empty => Base::Memory(Arc::new((MemoryData::default(), load_time))),
            DataSource::Synthetic { patients, seed } => {
                Base::Synthetic(Synthetic::new(*seed, *patients, load_time))
            }
        })
    }

    pub fn types(&self) -> Vec<String> {
        match self {
            Base::Memory(m) => m.0.types.keys().cloned().collect(),
            Base::Synthetic(s) => s.types().iter().map(|t| t.to_string()).collect(),
        }
    }

    pub fn len(&self, ty: &str) -> u64 {
        match self {
            Base::Memory(m) => m.0.types.get(ty).map(|t| t.lines.len() as u64).unwrap_or(0),
            Base::Synthetic(s) => s.len(ty),
        }
    }

    pub fn index_of(&self, ty: &str, id: &str) -> Option<u64> {
        match self {
            Base::Memory(m) => m.0.types.get(ty)?.index.get(id).map(|&i| i as u64),
            Base::Synthetic(s) => s.index_of(ty, id),
        }
    }

    pub fn id_at(&self, ty: &str, idx: u64) -> String {
        match self {
            Base::Memory(m) => {
                m.0.types
                    .get(ty)
                    .and_then(|t| t.ids.get(idx as usize))
                    .cloned()
                    .unwrap_or_default()
            }
            Base::Synthetic(s) => s.id_at(ty, idx),
        }
    }

    /// The resource as one NDJSON line (no newline).
    pub fn line(&self, ty: &str, idx: u64) -> Arc<str> {
        match self {
            Base::Memory(m) => {
                m.0.types
                    .get(ty)
                    .and_then(|t| t.lines.get(idx as usize))
                    .cloned()
                    .unwrap_or_else(|| Arc::from(""))
            }
            Base::Synthetic(s) => Arc::from(s.resource(ty, idx).to_string()),
        }
    }

    pub fn value(&self, ty: &str, idx: u64) -> Value {
        match self {
            Base::Memory(_) => serde_json::from_str(&self.line(ty, idx)).unwrap_or(Value::Null),
            Base::Synthetic(s) => s.resource(ty, idx),
        }
    }

    /// `Some(t)` when every resource of the type has the same `lastUpdated`.
    pub fn uniform_last_updated(&self, _ty: &str) -> Option<DateTime<Utc>> {
        match self {
            Base::Memory(_) => None,
            Base::Synthetic(s) => Some(s.load_time()),
        }
    }

    pub fn last_updated(&self, ty: &str, idx: u64) -> DateTime<Utc> {
        match self {
            Base::Memory(m) => {
                m.0.types
                    .get(ty)
                    .and_then(|t| t.last_updated.get(idx as usize))
                    .copied()
                    .unwrap_or(m.1)
            }
            Base::Synthetic(s) => s.load_time(),
        }
    }

    /// Index ranges of `ty` in the compartment of `patient`.
    pub fn patient_ranges(&self, ty: &str, patient: &str) -> Vec<Range<u64>> {
        match self {
            Base::Memory(m) => {
                m.0.types
                    .get(ty)
                    .and_then(|t| t.by_patient.get(patient))
                    .map(|v| v.iter().map(|&i| i as u64..i as u64 + 1).collect())
                    .unwrap_or_default()
            }
            Base::Synthetic(s) => s.patient_ranges(ty, patient).into_iter().collect(),
        }
    }

    /// Index ranges of `ty` in any patient's compartment.
    pub fn compartment_ranges(&self, ty: &str) -> Vec<Range<u64>> {
        match self {
            Base::Memory(m) => {
                let Some(t) = m.0.types.get(ty) else {
                    return Vec::new();
                };
                let mut out: Vec<Range<u64>> = Vec::new();
                for (i, &inc) in t.in_compartment.iter().enumerate() {
                    if inc {
                        push_index(&mut out, i as u64);
                    }
                }
                out
            }
            Base::Synthetic(s) => {
                if s.is_patient_type(ty) {
                    std::iter::once(0..s.len(ty)).collect()
                } else {
                    Vec::new()
                }
            }
        }
    }

    pub fn is_patient(&self, id: &str) -> bool {
        self.index_of("Patient", id).is_some()
    }

    pub fn group_members(&self, id: &str) -> Option<Vec<String>> {
        match self {
            Base::Memory(m) => m.0.groups.get(id).cloned(),
            Base::Synthetic(s) => s.group_members(id),
        }
    }
}

/// Appends index `i` to sorted ranges, merging when contiguous.
pub(crate) fn push_index(out: &mut Vec<Range<u64>>, i: u64) {
    match out.last_mut() {
        Some(r) if r.end == i => r.end = i + 1,
        _ => out.push(i..i + 1),
    }
}
