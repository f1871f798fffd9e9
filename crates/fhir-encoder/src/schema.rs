//! Encoding plans: the Arrow schema of a resource type and, for every group, how JSON keys map
//! to columns. Built at runtime from the generated model and the [`EncoderOptions`].
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};

use crate::error::EncodeError;
use crate::model::{ElementDef, Model, TypeKind, model};
use crate::options::EncoderOptions;

/// Resource types Pathling refuses to encode.
pub const UNSUPPORTED_TYPES: [&str; 5] = [
    "Bundle",
    "Parameters",
    "StructureDefinition",
    "StructureMap",
    "Task",
];

/// Name of the item field of every list (the Delta Lake / Parquet convention).
pub(crate) const LIST_ITEM: &str = "element";

/// Quantity and its specialisations carry the UCUM-canonicalised value and code.
const QUANTITY_TYPES: [&str; 5] = ["Quantity", "Age", "Count", "Distance", "Duration"];

/// Choice elements with at least this many types are open types (`Extension.value[x]` etc.),
/// limited to the configured list.
const OPEN_TYPE_THRESHOLD: usize = 40;

/// FNV-1a: JSON keys are short, and this lookup is on the hot path.
#[derive(Default)]
pub(crate) struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}
pub(crate) type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// The slots of a group's JSON keys: an open-addressing table keyed by the key's length and
/// first 8 bytes, so that most lookups cost one multiplication and two integer compares.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    mask: usize,
    /// (first 8 bytes, length, slot); `EMPTY_SLOT` marks a free entry.
    table: Vec<(u64, u32, u16)>,
    /// Bytes after the first 8 of every slot's key.
    tails: Vec<Box<[u8]>>,
}

const EMPTY_SLOT: u16 = u16::MAX;

#[inline]
fn key_prefix(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = k.len().min(8);
    b[..n].copy_from_slice(&k[..n]);
    u64::from_le_bytes(b)
}

#[inline]
fn key_hash(prefix: u64, len: usize) -> usize {
    ((prefix ^ (len as u64).rotate_left(56)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl KeyIndex {
    fn new(keys: &FnvMap<Box<str>, u16>) -> KeyIndex {
        let size = (keys.len() * 2).next_power_of_two().max(4);
        let mut table = vec![(0, 0, EMPTY_SLOT); size];
        let slots = keys.values().map(|s| *s as usize + 1).max().unwrap_or(0);
        let mut tails: Vec<Box<[u8]>> = vec![Box::default(); slots];
        for (k, &slot) in keys {
            let k = k.as_bytes();
            let p = key_prefix(k);
            let mut h = key_hash(p, k.len());
            while table[h & (size - 1)].2 != EMPTY_SLOT {
                h += 1;
            }
            table[h & (size - 1)] = (p, k.len() as u32, slot);
            tails[slot as usize] = k.get(8..).unwrap_or_default().into();
        }
        KeyIndex {
            mask: size - 1,
            table,
            tails,
        }
    }

    /// The slot of `key`.
    #[inline]
    pub fn get(&self, key: &str) -> Option<u16> {
        let k = key.as_bytes();
        let p = key_prefix(k);
        let mut h = key_hash(p, k.len());
        loop {
            let (ep, elen, slot) = self.table[h & self.mask];
            if slot == EMPTY_SLOT {
                return None;
            }
            if ep == p
                && elen as usize == k.len()
                && (k.len() <= 8 || self.tails[slot as usize][..] == k[8..])
            {
                return Some(slot);
            }
            h += 1;
        }
    }
}

/// Kinds of FHIR primitives, by how they are validated and stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prim {
    String,
    Date,
    DateTime,
    Time,
    Boolean,
    Integer,
    UnsignedInt,
    PositiveInt,
    Decimal,
    Instant,
    Base64,
}

impl Prim {
    fn of(code: &str) -> Prim {
        match code {
            "boolean" => Prim::Boolean,
            "integer" => Prim::Integer,
            "unsignedInt" => Prim::UnsignedInt,
            "positiveInt" => Prim::PositiveInt,
            "decimal" => Prim::Decimal,
            "instant" => Prim::Instant,
            "base64Binary" => Prim::Base64,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "time" => Prim::Time,
            _ => Prim::String,
        }
    }

    pub(crate) fn data_type(self) -> DataType {
        match self {
            Prim::Boolean => DataType::Boolean,
            Prim::Integer | Prim::UnsignedInt | Prim::PositiveInt => DataType::Int32,
            Prim::Decimal => DataType::Decimal128(32, 6),
            Prim::Instant => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Prim::Base64 => DataType::Binary,
            _ => DataType::Utf8,
        }
    }
}

/// One output column of a group and where its value comes from (a slot holds the JSON value
/// of one key of the group's object).
#[derive(Debug)]
pub(crate) enum Col {
    Prim {
        slot: u16,
        prim: Prim,
        list: bool,
    },
    Struct {
        slot: u16,
        plan: Arc<StructPlan>,
        list: bool,
        choice: bool,
    },
    /// `<name>_scale` of a decimal (a list of scales for a list of decimals).
    Scale {
        slot: u16,
        list: bool,
    },
    /// `<name>_versioned` of an `id` element: the same value.
    Versioned {
        slot: u16,
        list: bool,
    },
    /// `id_versioned` of a resource: `Type/id` or `Type/id/_history/versionId`.
    ResourceVersioned {
        id: u16,
        meta: Option<u16>,
    },
    CanonValue {
        value: u16,
        code: u16,
        system: u16,
    },
    /// `_code_canonicalized`, from the same conversion as the preceding `CanonValue`.
    CanonCode,
    /// `_fid`: the element's id within the resource, the key of its extensions.
    Fid,
    /// `_extension`: the resource's extensions, keyed by the `_fid` of their parent.
    Extensions {
        plan: Arc<StructPlan>,
    },
}

/// A group (resource, complex type or backbone element).
#[derive(Debug)]
pub(crate) struct StructPlan {
    pub fields: Fields,
    pub cols: Vec<Col>,
    pub keys: KeyIndex,
    /// JSON key of every slot.
    pub slot_names: Vec<Box<str>>,
    /// For every slot of a choice element's types (`deceasedBoolean`, `deceasedDateTime`), the
    /// first of them (the slots of one choice element are consecutive); else [`NOT_A_CHOICE`].
    pub choice_of: Vec<u16>,
    /// Slot of `extension` when extensions are encoded.
    pub ext_slot: Option<u16>,
}

/// [`StructPlan::choice_of`] of a slot that is not a choice element's.
pub(crate) const NOT_A_CHOICE: u16 = u16::MAX;

impl StructPlan {
    /// The slots of the choice element slot `slot` belongs to (empty when it is not a choice).
    pub fn choice_slots(&self, slot: u16) -> std::ops::Range<usize> {
        let first = self.choice_of[slot as usize];
        if first == NOT_A_CHOICE {
            return 0..0;
        }
        let start = first as usize;
        let len = self.choice_of[start..]
            .iter()
            .take_while(|c| **c == first)
            .count();
        start..start + len
    }
}

/// The encoding of one resource type.
#[derive(Debug)]
pub(crate) struct ResourcePlan {
    pub resource_type: Arc<str>,
    pub schema: SchemaRef,
    pub root: Arc<StructPlan>,
    /// The schema ends with the original JSON's column (its rows are the lines as read).
    pub keep_json: bool,
}

/// Class-name order of HAPI, which is the order of flattened choice types in Pathling's schema.
fn choice_order_key(code: &str, model: &Model) -> String {
    let mut s = capitalize(code);
    if model.is_primitive(code) {
        s.push_str("Type");
    }
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new(LIST_ITEM, item, true)))
}

fn canon_value_type() -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("value", DataType::Decimal128(38, 0), true),
        Field::new("scale", DataType::Int32, true),
    ]))
}

struct PlanBuilder<'a> {
    model: &'a Model,
    opts: &'a EncoderOptions,
    /// Types and backbone paths being expanded, to cut recursion at the maximum nesting level.
    stack: Vec<String>,
}

struct GroupAcc {
    fields: Vec<FieldRef>,
    cols: Vec<Col>,
    keys: FnvMap<Box<str>, u16>,
    slot_names: Vec<Box<str>>,
    choice_of: Vec<u16>,
}

impl GroupAcc {
    fn new() -> Self {
        GroupAcc {
            fields: Vec::new(),
            cols: Vec::new(),
            keys: FnvMap::default(),
            slot_names: Vec::new(),
            choice_of: Vec::new(),
        }
    }
    fn slot(&mut self, key: &str) -> u16 {
        let slot = self.slot_names.len() as u16;
        self.keys.insert(key.into(), slot);
        self.slot_names.push(key.into());
        self.choice_of.push(NOT_A_CHOICE);
        slot
    }
    fn col(&mut self, name: &str, dt: DataType, col: Col) {
        self.fields.push(Arc::new(Field::new(name, dt, true)));
        self.cols.push(col);
    }
}

impl PlanBuilder<'_> {
    fn depth_of(&self, key: &str) -> usize {
        self.stack.iter().filter(|s| *s == key).count()
    }

    /// Builds a group from its elements. `type_name` selects type-specific rules
    /// (Quantity canonical columns, Reference without `identifier.assigner`).
    fn group(
        &mut self,
        path: &str,
        type_name: Option<&str>,
        elements: &[ElementDef],
        exclude: &[&str],
        resource: Option<&str>,
    ) -> StructPlan {
        let mut g = GroupAcc::new();
        let mut ext_slot = None;
        for el in elements {
            if exclude.contains(&el.name.as_str()) {
                continue;
            }
            match el.name.as_str() {
                "modifierExtension" | "contained" => continue,
                "extension" => {
                    if self.opts.enable_extensions {
                        ext_slot = Some(g.slot("extension"));
                    }
                    continue;
                }
                _ => {}
            }
            if resource.is_some() && el.name == "id" {
                let id = g.slot("id");
                g.col(
                    "id",
                    DataType::Utf8,
                    Col::Prim {
                        slot: id,
                        prim: Prim::String,
                        list: false,
                    },
                );
                // `meta` comes later in the definition; its slot is resolved after the loop.
                g.col(
                    "id_versioned",
                    DataType::Utf8,
                    Col::ResourceVersioned { id, meta: None },
                );
                continue;
            }
            let backbone = match &el.content_ref {
                Some(r) => self.model.backbone(r).map(|b| (r.as_str(), b)),
                None => el
                    .children
                    .as_ref()
                    .map(|_| (el.path.as_deref().unwrap_or(""), el)),
            };
            if let Some((bpath, def)) = backbone {
                if self.depth_of(bpath) > self.opts.max_nesting_level {
                    continue;
                }
                let children = def.children.as_deref().unwrap_or(&[]);
                self.stack.push(bpath.to_string());
                let plan = self.group(bpath, None, children, &[], None);
                self.stack.pop();
                self.add_struct(&mut g, &el.name, plan, el.array, false);
                continue;
            }
            if el.choice {
                let mut types: Vec<&str> = el.types.iter().map(String::as_str).collect();
                if types.len() >= OPEN_TYPE_THRESHOLD {
                    types.retain(|t| self.opts.open_types.iter().any(|o| o == t));
                }
                types.sort_by_cached_key(|t| choice_order_key(t, self.model));
                let first = g.slot_names.len();
                for t in types {
                    let name = format!("{}{}", el.name, capitalize(t));
                    self.typed(&mut g, path, &name, t, false, true);
                }
                // Every slot the types added is one of this choice element's.
                for c in &mut g.choice_of[first..] {
                    *c = first as u16;
                }
            } else if let Some(t) = el.types.first() {
                self.typed(&mut g, path, &el.name, t, el.array, false);
            }
        }
        if let Some(tn) = type_name
            && QUANTITY_TYPES.contains(&tn)
        {
            let slot = |name: &str| g.keys.get(name).copied();
            if let (Some(value), Some(code), Some(system)) =
                (slot("value"), slot("code"), slot("system"))
            {
                g.col(
                    "_value_canonicalized",
                    canon_value_type(),
                    Col::CanonValue {
                        value,
                        code,
                        system,
                    },
                );
                g.col("_code_canonicalized", DataType::Utf8, Col::CanonCode);
            }
        }
        if resource.is_some() {
            let meta_slot = g.keys.get("meta").copied();
            for c in &mut g.cols {
                if let Col::ResourceVersioned { meta, .. } = c {
                    *meta = meta_slot;
                }
            }
        }
        if self.opts.enable_extensions {
            g.col("_fid", DataType::Int32, Col::Fid);
            if resource.is_some() {
                let ext = Arc::new(self.extension_plan());
                let entries = Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Int32, false),
                        Field::new(
                            "value",
                            list_of(DataType::Struct(ext.fields.clone())),
                            false,
                        ),
                    ])),
                    false,
                );
                g.col(
                    "_extension",
                    DataType::Map(Arc::new(entries), false),
                    Col::Extensions { plan: ext },
                );
            }
        }
        StructPlan {
            fields: Fields::from(g.fields),
            cols: g.cols,
            keys: KeyIndex::new(&g.keys),
            slot_names: g.slot_names,
            choice_of: g.choice_of,
            ext_slot,
        }
    }

    /// The Extension group of the `_extension` map: nested extensions are map entries too.
    fn extension_plan(&mut self) -> StructPlan {
        let def = &self.model.types["Extension"];
        self.stack.push("Extension".into());
        let plan = self.group("Extension", Some("Extension"), &def.elements, &[], None);
        self.stack.pop();
        plan
    }

    fn add_struct(&self, g: &mut GroupAcc, name: &str, plan: StructPlan, list: bool, choice: bool) {
        let slot = g.slot(name);
        let dt = DataType::Struct(plan.fields.clone());
        let dt = if list { list_of(dt) } else { dt };
        g.col(
            name,
            dt,
            Col::Struct {
                slot,
                plan: Arc::new(plan),
                list,
                choice,
            },
        );
    }

    fn typed(
        &mut self,
        g: &mut GroupAcc,
        parent: &str,
        name: &str,
        code: &str,
        list: bool,
        choice: bool,
    ) {
        if self.model.is_primitive(code) {
            let prim = Prim::of(code);
            let slot = g.slot(name);
            let dt = if list {
                list_of(prim.data_type())
            } else {
                prim.data_type()
            };
            g.col(name, dt, Col::Prim { slot, prim, list });
            let wrap = |dt: DataType| if list { list_of(dt) } else { dt };
            if prim == Prim::Decimal {
                g.col(
                    &format!("{name}_scale"),
                    wrap(DataType::Int32),
                    Col::Scale { slot, list },
                );
            }
            if code == "id" {
                g.col(
                    &format!("{name}_versioned"),
                    wrap(DataType::Utf8),
                    Col::Versioned { slot, list },
                );
            }
            return;
        }
        let Some(def) = self.model.types.get(code) else {
            return;
        };
        if def.kind != TypeKind::Complex || code == "Extension" {
            return;
        }
        if self.depth_of(code) > self.opts.max_nesting_level {
            return;
        }
        // The specification's Reference has an identifier, but without its assigner.
        let exclude: &[&str] = if parent == "Reference" && name == "identifier" {
            &["assigner"]
        } else {
            &[]
        };
        self.stack.push(code.to_string());
        let plan = self.group(code, Some(code), &def.elements, exclude, None);
        self.stack.pop();
        self.add_struct(g, name, plan, list, choice);
    }
}

/// Builds the plan of a resource type.
pub(crate) fn resource_plan(
    resource_type: &str,
    opts: &EncoderOptions,
) -> Result<ResourcePlan, EncodeError> {
    let model = model();
    let def = match model.types.get(resource_type) {
        Some(d) if d.kind == TypeKind::Resource => d,
        _ => return Err(EncodeError::UnknownResourceType(resource_type.to_string())),
    };
    if UNSUPPORTED_TYPES.contains(&resource_type) {
        return Err(EncodeError::UnsupportedResourceType(
            resource_type.to_string(),
        ));
    }
    let mut b = PlanBuilder {
        model,
        opts,
        stack: vec![resource_type.to_string()],
    };
    let root = b.group(resource_type, None, &def.elements, &[], Some(resource_type));
    let mut fields: Vec<arrow_schema::FieldRef> = root.fields.iter().cloned().collect();
    if opts.keep_json {
        fields.push(Arc::new(Field::new(
            crate::options::JSON_COLUMN,
            DataType::Utf8,
            true,
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    Ok(ResourcePlan {
        resource_type: resource_type.into(),
        schema,
        root: Arc::new(root),
        keep_json: opts.keep_json,
    })
}

/// All resource types of the model that the encoding supports, sorted.
pub(crate) fn supported_types() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = model()
        .types
        .iter()
        .filter(|(n, d)| d.kind == TypeKind::Resource && !UNSUPPORTED_TYPES.contains(&n.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    v.sort_unstable();
    v
}

/// Whether `name` is a FHIR R4 data type usable as an open type.
pub(crate) fn is_data_type(name: &str) -> bool {
    let m = model();
    m.is_primitive(name)
        || m.types
            .get(name)
            .is_some_and(|d| d.kind == TypeKind::Complex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index(keys: &[String]) -> KeyIndex {
        let mut map = FnvMap::default();
        for (i, k) in keys.iter().enumerate() {
            map.insert(k.as_str().into(), i as u16);
        }
        KeyIndex::new(&map)
    }

    #[test]
    fn finds_keys_sharing_prefixes() {
        let keys: Vec<String> = [
            "valueCodeableConcept",
            "valueCoding",
            "valueCode",
            "value",
            "valueQuantity",
            "valueQuantit",
            "",
            "a",
        ]
        .map(String::from)
        .to_vec();
        let ix = index(&keys);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(ix.get(k), Some(i as u16), "{k:?}");
        }
        for k in [
            "valueCodeableConcepts",
            "valueCod",
            "valu",
            "b",
            "valueQuantitx",
        ] {
            assert_eq!(ix.get(k), None, "{k:?}");
        }
    }

    proptest! {
        #[test]
        fn finds_exactly_its_keys(
            keys in proptest::collection::hash_set("[a-zA-Z_]{0,20}", 0..60),
            probes in proptest::collection::vec("[a-zA-Z_]{0,20}", 0..60),
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let ix = index(&keys);
            for (i, k) in keys.iter().enumerate() {
                prop_assert_eq!(ix.get(k), Some(i as u16));
            }
            for p in &probes {
                let expected = keys.iter().position(|k| k == p).map(|i| i as u16);
                prop_assert_eq!(ix.get(p), expected);
            }
        }
    }
}
