//! `_elements`: the elements kept of each exported resource (plus the mandatory ones), the
//! resource then marked SUBSETTED.
use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use super::bad_request::{BadRequest, bad};
use super::types::R4_TYPES;

/// `_elements`: per type (None key = all types) the elements to keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct Elements {
    all: BTreeSet<String>,
    by_type: HashMap<String, BTreeSet<String>>,
}

impl Elements {
    pub(super) fn parse(
        list: &[String],
        warnings: &mut Vec<String>,
    ) -> Result<Elements, BadRequest> {
        let mut e = Elements::default();
        for item in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once('.') {
                Some((ty, el)) => {
                    if !R4_TYPES.contains(&ty) {
                        return Err(bad(
                            "invalid",
                            format!("_elements entry {item:?} names an unknown resource type"),
                        ));
                    }
                    if el.contains('.') {
                        warnings.push(format!("_elements entry {item:?}: nested elements are not supported; kept {ty}.{}", el.split('.').next().unwrap_or(el)));
                    }
                    e.by_type
                        .entry(ty.to_string())
                        .or_default()
                        .insert(el.split('.').next().unwrap_or(el).to_string());
                }
                None => {
                    e.all.insert(item.to_string());
                }
            }
        }
        Ok(e)
    }

    /// Keeps the listed elements plus the mandatory ones, and marks the resource SUBSETTED.
    pub fn apply(&self, ty: &str, res: Value) -> Value {
        let Value::Object(map) = res else { return res };
        let typed = self.by_type.get(ty);
        if self.all.is_empty() && typed.is_none() && !self.by_type.is_empty() {
            // The list names only other types: this type is exported whole.
            return Value::Object(map);
        }
        let keep = |k: &str| {
            matches!(k, "resourceType" | "id" | "meta")
                || self.all.contains(k)
                || typed.is_some_and(|t| t.contains(k))
        };
        let mut out = serde_json::Map::new();
        for (k, v) in map {
            if keep(&k) {
                out.insert(k, v);
            }
        }
        let meta = out.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(t) = tags.as_array_mut() {
                t.push(json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED", "display": "subsetted" }));
            }
        }
        Value::Object(out)
    }
}
