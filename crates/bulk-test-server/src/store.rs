//! The server's resources: an immutable base (bundled, directory or synthetic data) plus an
//! in-memory overlay of mutations (upserts and deletions) made by tests.
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::ServerError;
use crate::synthetic::Synthetic;

/// Errors from [`StoreHandle`] mutations.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("resource has no string `resourceType`")]
    NoResourceType,
    #[error("resource is not a JSON object")]
    NotAnObject,
    #[error("invalid resource id {0:?} (FHIR ids are 1-64 of A-Z a-z 0-9 - .)")]
    InvalidId(String),
}

/// FHIR instant with millisecond precision, as servers write `meta.lastUpdated`.
pub(crate) fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A strictly increasing clock (milliseconds), so an upsert made right after a kick-off is
/// always later than that export's `transactionTime`.
#[derive(Default)]
pub(crate) struct Clock {
    last_ms: Mutex<i64>,
}

impl Clock {
    pub fn tick(&self) -> DateTime<Utc> {
        let now = Utc::now().timestamp_millis();
        let mut last = self.last_ms.lock().unwrap_or_else(|e| e.into_inner());
        let t = now.max(*last + 1);
        *last = t;
        DateTime::from_timestamp_millis(t).unwrap_or_else(Utc::now)
    }
}

/// Reference fields that put a resource in a patient's compartment.
const PATIENT_REF_FIELDS: &[&str] = &["subject", "patient", "beneficiary", "individual"];

/// The patient id a reference string points to, for `Patient/x` and `urn:uuid:x` forms.
pub(crate) fn ref_id(reference: &str) -> Option<(&'static str, &str)> {
    if let Some(id) = reference.strip_prefix("Patient/") {
        return Some(("Patient", id.split('/').next().unwrap_or(id)));
    }
    if let Some(id) = reference.strip_prefix("urn:uuid:") {
        return Some(("", id));
    }
    // Absolute references: ".../Patient/x"
    if let Some(pos) = reference.rfind("/Patient/") {
        let id = &reference[pos + 9..];
        return Some(("Patient", id.split('/').next().unwrap_or(id)));
    }
    None
}

/// Candidate patient id of a resource (its own id for a Patient).
fn patient_candidate(v: &Value) -> Option<String> {
    if v.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return v.get("id").and_then(Value::as_str).map(str::to_string);
    }
    for f in PATIENT_REF_FIELDS {
        if let Some(r) = v
            .get(*f)
            .and_then(|s| s.get("reference"))
            .and_then(Value::as_str)
            && let Some((_, id)) = ref_id(r)
        {
            return Some(id.to_string());
        }
    }
    None
}

/// One resource type of in-memory base data.
#[derive(Default)]
pub(crate) struct MemType {
    /// NDJSON lines, `meta.lastUpdated` and `meta.versionId` already present.
    pub lines: Vec<Arc<str>>,
    pub ids: Vec<String>,
    pub last_updated: Vec<DateTime<Utc>>,
    pub index: HashMap<String, u32>,
    /// Patient id -> indices of this type in that patient's compartment.
    pub by_patient: HashMap<String, Vec<u32>>,
    pub in_compartment: Vec<bool>,
}

#[derive(Default)]
pub(crate) struct MemoryData {
    pub types: BTreeMap<String, MemType>,
    /// Group id -> member patient ids.
    pub groups: HashMap<String, Vec<String>>,
}

struct Head {
    resource_type: Option<String>,
    id: Option<String>,
    meta: Option<MetaHead>,
}

struct MetaHead {
    last_updated: Option<String>,
    version_id: Option<String>,
}

impl MemoryData {
    /// Builds the base from NDJSON texts; lines that are not resources are reported in `bad`.
    fn load(
        sources: impl IntoIterator<Item = (String, String)>,
        load_time: DateTime<Utc>,
        bad: &mut Vec<String>,
    ) -> MemoryData {
        let mut data = MemoryData::default();
        let lu_text = instant(load_time);
        let mut candidates: Vec<(String, u32, String)> = Vec::new();
        for (name, text) in sources {
            for (lineno, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let value: Value = match serde_json::from_str(line) {
                    Ok(v) => v,
                    Err(e) => {
                        bad.push(format!("{name}:{}: {e}", lineno + 1));
                        continue;
                    }
                };
                let head: Head = match Head::deserialize_from(&value) {
                    Some(h) => h,
                    None => {
                        bad.push(format!("{name}:{}: not a resource", lineno + 1));
                        continue;
                    }
                };
                let (Some(rt), Some(id)) = (head.resource_type, head.id) else {
                    bad.push(format!(
                        "{name}:{}: resource without resourceType or id",
                        lineno + 1
                    ));
                    continue;
                };
                let (lu, text_line) = match &head.meta {
                    Some(MetaHead {
                        last_updated: Some(lu),
                        version_id: Some(_),
                    }) => {
                        let t = DateTime::parse_from_rfc3339(lu)
                            .map(|t| t.with_timezone(&Utc))
                            .unwrap_or(load_time);
                        (t, Arc::<str>::from(line))
                    }
                    _ => {
                        let mut v = value.clone();
                        let t = head
                            .meta
                            .as_ref()
                            .and_then(|m| m.last_updated.as_deref())
                            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                            .map(|t| t.with_timezone(&Utc));
                        set_meta(
                            &mut v,
                            "1",
                            &t.map(instant).unwrap_or_else(|| lu_text.clone()),
                            false,
                        );
                        (t.unwrap_or(load_time), Arc::<str>::from(v.to_string()))
                    }
                };
                let t = data.types.entry(rt.clone()).or_default();
                if let Some(&existing) = t.index.get(&id) {
                    // A later copy of the same id replaces the earlier one.
                    let i = existing as usize;
                    t.lines[i] = text_line;
                    t.last_updated[i] = lu;
                    continue;
                }
                let idx = t.lines.len() as u32;
                t.lines.push(text_line);
                t.ids.push(id.clone());
                t.last_updated.push(lu);
                t.index.insert(id.clone(), idx);
                t.in_compartment.push(false);
                if rt == "Group" {
                    data.groups.insert(id.clone(), group_members(&value));
                }
                if let Some(p) = patient_candidate(&value) {
                    candidates.push((rt, idx, p));
                }
            }
        }
        let patients: std::collections::HashSet<String> = data
            .types
            .get("Patient")
            .map(|t| t.ids.iter().cloned().collect())
            .unwrap_or_default();
        for (rt, idx, p) in candidates {
            if patients.contains(&p)
                && let Some(t) = data.types.get_mut(&rt)
            {
                t.by_patient.entry(p).or_default().push(idx);
                t.in_compartment[idx as usize] = true;
            }
        }
        data
    }
}

impl Head {
    fn deserialize_from(v: &Value) -> Option<Head> {
        let obj = v.as_object()?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let meta = obj
            .get("meta")
            .and_then(Value::as_object)
            .map(|m| MetaHead {
                last_updated: m
                    .get("lastUpdated")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                version_id: m
                    .get("versionId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        Some(Head {
            resource_type: s("resourceType"),
            id: s("id"),
            meta,
        })
    }
}

/// Patient ids of a Group's members.
pub(crate) fn group_members(group: &Value) -> Vec<String> {
    group
        .get("member")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("entity")?.get("reference")?.as_str())
                .filter_map(|r| ref_id(r).map(|(_, id)| id.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `meta.versionId` and `meta.lastUpdated` (keeping other meta elements).
pub(crate) fn set_meta(v: &mut Value, version: &str, last_updated: &str, overwrite: bool) {
    let Some(obj) = v.as_object_mut() else { return };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    if let Some(m) = meta.as_object_mut() {
        if overwrite || !m.contains_key("versionId") {
            m.insert("versionId".into(), Value::String(version.into()));
        }
        if overwrite || !m.contains_key("lastUpdated") {
            m.insert("lastUpdated".into(), Value::String(last_updated.into()));
        }
    }
}

/// The bundled Synthea export, gzipped NDJSON compiled into the binary.
const SYNTHEA: &[(&str, &[u8])] = &[
    (
        "AllergyIntolerance",
        include_bytes!("../data/synthea-100/AllergyIntolerance.ndjson.gz"),
    ),
    (
        "CarePlan",
        include_bytes!("../data/synthea-100/CarePlan.ndjson.gz"),
    ),
    (
        "CareTeam",
        include_bytes!("../data/synthea-100/CareTeam.ndjson.gz"),
    ),
    (
        "Claim",
        include_bytes!("../data/synthea-100/Claim.ndjson.gz"),
    ),
    (
        "Condition",
        include_bytes!("../data/synthea-100/Condition.ndjson.gz"),
    ),
    (
        "Device",
        include_bytes!("../data/synthea-100/Device.ndjson.gz"),
    ),
    (
        "DiagnosticReport",
        include_bytes!("../data/synthea-100/DiagnosticReport.ndjson.gz"),
    ),
    (
        "DocumentReference",
        include_bytes!("../data/synthea-100/DocumentReference.ndjson.gz"),
    ),
    (
        "Encounter",
        include_bytes!("../data/synthea-100/Encounter.ndjson.gz"),
    ),
    (
        "ExplanationOfBenefit",
        include_bytes!("../data/synthea-100/ExplanationOfBenefit.ndjson.gz"),
    ),
    (
        "Group",
        include_bytes!("../data/synthea-100/Group.ndjson.gz"),
    ),
    (
        "ImagingStudy",
        include_bytes!("../data/synthea-100/ImagingStudy.ndjson.gz"),
    ),
    (
        "Immunization",
        include_bytes!("../data/synthea-100/Immunization.ndjson.gz"),
    ),
    (
        "MedicationRequest",
        include_bytes!("../data/synthea-100/MedicationRequest.ndjson.gz"),
    ),
    (
        "Observation",
        include_bytes!("../data/synthea-100/Observation.ndjson.gz"),
    ),
    (
        "Organization",
        include_bytes!("../data/synthea-100/Organization.ndjson.gz"),
    ),
    (
        "Patient",
        include_bytes!("../data/synthea-100/Patient.ndjson.gz"),
    ),
    (
        "Practitioner",
        include_bytes!("../data/synthea-100/Practitioner.ndjson.gz"),
    ),
    (
        "Procedure",
        include_bytes!("../data/synthea-100/Procedure.ndjson.gz"),
    ),
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
    pub fn load(source: &crate::DataSource, load_time: DateTime<Utc>) -> Result<Base, ServerError> {
        Ok(match source {
            crate::DataSource::Synthea => Base::Memory(synthea()?),
            crate::DataSource::Dir(d) => {
                Base::Memory(Arc::new((load_dir(d, load_time)?, load_time)))
            }
            crate::DataSource::Empty => Base::Memory(Arc::new((MemoryData::default(), load_time))),
            crate::DataSource::Synthetic { patients, seed } => {
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

/// A mutation made through [`StoreHandle`].
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    Upsert {
        line: Arc<str>,
        value: Arc<Value>,
        last_updated: DateTime<Utc>,
        patient: Option<String>,
    },
    Delete {
        at: DateTime<Utc>,
        patient: Option<String>,
    },
}

/// Mutations by (type, id); cloned on write so running jobs keep their snapshot.
pub(crate) type Overlay = BTreeMap<(String, String), Mutation>;

pub(crate) struct StoreInner {
    pub base: Base,
    pub overlay: RwLock<Arc<Overlay>>,
    pub clock: Clock,
    versions: Mutex<HashMap<(String, String), u64>>,
}

/// Handle to the server's resources. Mutations apply to exports kicked off afterwards.
#[derive(Clone)]
pub struct StoreHandle {
    pub(crate) inner: Arc<StoreInner>,
}

impl StoreHandle {
    pub(crate) fn new(base: Base) -> Self {
        StoreHandle {
            inner: Arc::new(StoreInner {
                base,
                overlay: RwLock::new(Arc::new(Overlay::new())),
                clock: Clock::default(),
                versions: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Overlay> {
        self.inner
            .overlay
            .read()
            .map(|o| o.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    fn mutate(&self, key: (String, String), m: Mutation) {
        let mut guard = self
            .inner
            .overlay
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Copies the overlay only while an export still holds the previous snapshot.
        Arc::make_mut(&mut *guard).insert(key, m);
    }

    fn current_version(&self, ty: &str, id: &str) -> u64 {
        let key = (ty.to_string(), id.to_string());
        if let Some(v) = self
            .inner
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return *v;
        }
        let base = &self.inner.base;
        base.index_of(ty, id)
            .and_then(|i| {
                base.value(ty, i)
                    .get("meta")?
                    .get("versionId")?
                    .as_str()?
                    .parse()
                    .ok()
            })
            .unwrap_or(if base.index_of(ty, id).is_some() {
                1
            } else {
                0
            })
    }

    /// Creates or replaces a resource; sets `meta.versionId` (previous + 1) and
    /// `meta.lastUpdated` (now). Returns the stored resource. A resource without `id` gets one.
    pub fn upsert(&self, mut resource: Value) -> Result<Value, StoreError> {
        let obj = resource.as_object_mut().ok_or(StoreError::NotAnObject)?;
        let ty = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or(StoreError::NoResourceType)?
            .to_string();
        let id = match obj.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                obj.insert("id".into(), Value::String(id.clone()));
                id
            }
        };
        if !valid_id(&id) {
            return Err(StoreError::InvalidId(id));
        }
        let version = self.current_version(&ty, &id) + 1;
        let now = self.inner.clock.tick();
        set_meta(&mut resource, &version.to_string(), &instant(now), true);
        let patient = patient_candidate(&resource).filter(|p| {
            ty == "Patient"
                || self.inner.base.is_patient(p)
                || self
                    .snapshot()
                    .contains_key(&("Patient".to_string(), p.clone()))
        });
        self.inner
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ty.clone(), id.clone()), version);
        let line: Arc<str> = Arc::from(resource.to_string());
        self.mutate(
            (ty, id),
            Mutation::Upsert {
                line,
                value: Arc::new(resource.clone()),
                last_updated: now,
                patient,
            },
        );
        Ok(resource)
    }

    /// Deletes a resource; returns false when it did not exist. The deletion time is recorded
    /// for `deleted[]` in later `_since` exports.
    pub fn delete(&self, resource_type: &str, id: &str) -> bool {
        if !self.exists(resource_type, id) {
            return false;
        }
        // Remember the compartment, so Patient- and Group-level exports report the deletion.
        let patient = self
            .get(resource_type, id)
            .and_then(|v| patient_candidate(&v));
        let at = self.inner.clock.tick();
        self.mutate(
            (resource_type.to_string(), id.to_string()),
            Mutation::Delete { at, patient },
        );
        true
    }

    /// Whether the resource currently exists.
    pub fn exists(&self, resource_type: &str, id: &str) -> bool {
        match self
            .snapshot()
            .get(&(resource_type.to_string(), id.to_string()))
        {
            Some(Mutation::Upsert { .. }) => true,
            Some(Mutation::Delete { .. }) => false,
            None => self.inner.base.index_of(resource_type, id).is_some(),
        }
    }

    /// The current version of a resource.
    pub fn get(&self, resource_type: &str, id: &str) -> Option<Value> {
        match self
            .snapshot()
            .get(&(resource_type.to_string(), id.to_string()))
        {
            Some(Mutation::Upsert { value, .. }) => Some((**value).clone()),
            Some(Mutation::Delete { .. }) => None,
            None => {
                let i = self.inner.base.index_of(resource_type, id)?;
                Some(self.inner.base.value(resource_type, i))
            }
        }
    }

    /// Current resource counts per type (types with no resources are left out).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let base = &self.inner.base;
        let mut out: BTreeMap<String, u64> = base
            .types()
            .into_iter()
            .map(|t| {
                let n = base.len(&t);
                (t, n)
            })
            .collect();
        for ((ty, id), m) in self.snapshot().iter() {
            let in_base = base.index_of(ty, id).is_some();
            let c = out.entry(ty.clone()).or_insert(0);
            match (m, in_base) {
                (Mutation::Upsert { .. }, false) => *c += 1,
                (Mutation::Delete { .. }, true) => *c = c.saturating_sub(1),
                _ => {}
            }
        }
        out.retain(|_, n| *n > 0);
        out
    }

    /// Ids of the current resources of a type, in export order.
    pub fn ids(&self, resource_type: &str) -> Vec<String> {
        let base = &self.inner.base;
        let snap = self.snapshot();
        let mut out = Vec::new();
        for i in 0..base.len(resource_type) {
            let id = base.id_at(resource_type, i);
            if !snap.contains_key(&(resource_type.to_string(), id.clone())) {
                out.push(id);
            }
        }
        for ((ty, id), m) in snap.iter() {
            if ty == resource_type && matches!(m, Mutation::Upsert { .. }) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The time base resources without `meta.lastUpdated` were given.
    pub fn load_time(&self) -> DateTime<Utc> {
        match &self.inner.base {
            Base::Memory(m) => m.1,
            Base::Synthetic(s) => s.load_time(),
        }
    }
}
