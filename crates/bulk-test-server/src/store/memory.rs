//! Base data held in memory (the bundled Synthea export, a directory of NDJSON files): every
//! line kept as served, indexed by id and by patient compartment.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::resource::{group_members, instant, patient_candidate, set_meta};

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
    pub(super) fn load(
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
