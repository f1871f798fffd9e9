//! The store's handle: resources upserted and deleted by tests, kept as an overlay over the
//! base so that each export sees the store as it was at its kick-off.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::base::Base;
use crate::resource::{instant, patient_candidate, set_meta, valid_id};

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

/// The server's clock: wall time plus whatever tests advanced it by, strictly increasing
/// (milliseconds) across ticks, so an upsert made right after a kick-off is always later than
/// that export's `transactionTime`.
#[derive(Default)]
pub(crate) struct Clock {
    last_ms: Mutex<i64>,
    offset_ms: AtomicI64,
}

impl Clock {
    /// The current time, later than any earlier tick.
    pub fn tick(&self) -> DateTime<Utc> {
        let now = self.now().timestamp_millis();
        let mut last = self.last_ms.lock().unwrap_or_else(|e| e.into_inner());
        let t = now.max(*last + 1);
        *last = t;
        DateTime::from_timestamp_millis(t).unwrap_or_else(Utc::now)
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed));
        Utc::now() + offset
    }

    /// Moves the clock forward, as if `by` had passed.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let _ = self
            .offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(ms))
            });
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
    pub fn upsert(&self, resource: Value) -> Result<Value, StoreError> {
        self.upsert_garbled(resource, |line| line.to_owned())
    }

    /// [`upsert`](Self::upsert), but exports serve the line `garble` makes of the resource's
    /// NDJSON line, e.g. one with an unpaired surrogate escape no JSON parser accepts, as a
    /// faulty server writes it. Reads and filters still see the resource.
    pub fn upsert_garbled(
        &self,
        mut resource: Value,
        garble: impl FnOnce(&str) -> String,
    ) -> Result<Value, StoreError> {
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
        let line: Arc<str> = Arc::from(garble(&resource.to_string()));
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
