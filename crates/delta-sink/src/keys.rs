//! Row identity and recency: the key column (`id` by default), the recency struct's
//! `lastUpdated` and `versionId` (`meta` by default), and grouped keys' placeholders.

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hasher};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};

use crate::table::KeySpec;

/// The recency of one resource version: `meta.lastUpdated` (epoch microseconds) and
/// `meta.versionId`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Recency {
    /// `meta.lastUpdated` in microseconds since the epoch; `None` is oldest.
    pub(crate) last_updated: Option<i64>,
    /// `meta.versionId`; `None` is oldest.
    pub(crate) version_id: Option<Box<str>>,
}

impl Recency {
    /// Orders two versions of one resource: `lastUpdated` first (null oldest), then
    /// `versionId` (numerically when both parse as integers, else as strings; null oldest).
    pub(crate) fn compare(&self, other: &Recency) -> Ordering {
        self.last_updated.cmp(&other.last_updated).then_with(|| {
            compare_version_ids(self.version_id.as_deref(), other.version_id.as_deref())
        })
    }

    /// Whether an incoming version should replace `stored`: it must be newer; when both
    /// keys are equal it is the same version (skipped), except when neither side carries
    /// any recency at all, where nothing proves the incoming row is older, so it wins.
    pub(crate) fn supersedes(&self, stored: &Recency) -> bool {
        match self.compare(stored) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.last_updated.is_none() && self.version_id.is_none(),
        }
    }
}

/// Compares two `versionId`s: numerically when both are integers, else bytewise.
pub(crate) fn compare_version_ids(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match (a.trim().parse::<i128>(), b.trim().parse::<i128>()) {
            (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
            _ => a.cmp(b),
        },
    }
}

/// Column accessors for the key fields of one batch.
pub(crate) struct KeyColumns {
    ids: StringArray,
    last_updated: Option<arrow::array::PrimitiveArray<TimestampMicrosecondType>>,
    version_ids: Option<StringArray>,
    /// Grouped keys' placeholder flags, where read.
    placeholders: Option<BooleanArray>,
}

impl KeyColumns {
    /// Extracts the key (`spec.id`), `lastUpdated` and `versionId` of the recency struct
    /// (`spec.meta`) and, with `placeholders`, the placeholder flags of grouped keys from a
    /// batch. The recency struct and its fields may be absent (treated as null); the key
    /// column, and the placeholder column when asked for, must be present.
    pub(crate) fn from_batch(
        batch: &RecordBatch,
        spec: &KeySpec,
        placeholders: bool,
    ) -> Result<Self, String> {
        let id_name = &spec.id;
        let id = batch
            .column_by_name(id_name)
            .ok_or_else(|| format!("batch has no `{id_name}` column"))?;
        let ids = to_utf8(id).map_err(|e| format!("column `{id_name}`: {e}"))?;
        let mut last_updated = None;
        let mut version_ids = None;
        let meta_name = &spec.meta;
        if let Some(meta) = batch.column_by_name(meta_name) {
            let meta: &StructArray = meta.as_struct_opt().ok_or_else(|| {
                format!("column `{meta_name}` is {}, not a struct", meta.data_type())
            })?;
            if let Some(lu) = meta.column_by_name("lastUpdated") {
                let lu = with_parent_nulls(lu, meta.nulls());
                let casted = match lu.data_type() {
                    DataType::Timestamp(_, _) => {
                        cast(&lu, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    }
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        cast(&lu, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    }
                    other => {
                        return Err(format!(
                            "column `{meta_name}.lastUpdated` is {other}, not a timestamp"
                        ));
                    }
                }
                .map_err(|e| format!("column `{meta_name}.lastUpdated`: {e}"))?;
                last_updated = Some(casted.as_primitive::<TimestampMicrosecondType>().clone());
            }
            if let Some(v) = meta.column_by_name("versionId") {
                let v = with_parent_nulls(v, meta.nulls());
                version_ids =
                    Some(to_utf8(&v).map_err(|e| format!("column `{meta_name}.versionId`: {e}"))?);
            }
        }
        let placeholders = match spec.placeholder().filter(|_| placeholders) {
            None => None,
            Some(name) => {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| format!("batch has no `{name}` column (placeholders)"))?;
                let flags = column.as_boolean_opt().ok_or_else(|| {
                    format!("column `{name}` is {}, not a boolean", column.data_type())
                })?;
                Some(flags.clone())
            }
        };
        Ok(Self {
            ids,
            last_updated,
            version_ids,
            placeholders,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id of row `i`; `None` for a null id.
    pub(crate) fn id(&self, i: usize) -> Option<&str> {
        self.ids.is_valid(i).then(|| self.ids.value(i))
    }

    pub(crate) fn version_id(&self, i: usize) -> Option<&str> {
        self.version_ids
            .as_ref()
            .and_then(|a| a.is_valid(i).then(|| a.value(i)))
    }

    pub(crate) fn recency(&self, i: usize) -> Recency {
        Recency {
            last_updated: self.last_updated(i),
            version_id: self.version_id(i).map(Box::from),
        }
    }

    pub(crate) fn last_updated(&self, i: usize) -> Option<i64> {
        self.last_updated
            .as_ref()
            .and_then(|a| a.is_valid(i).then(|| a.value(i)))
    }

    /// Whether row `i` is a placeholder of a grouped key (a null flag is not).
    pub(crate) fn is_placeholder(&self, i: usize) -> bool {
        self.placeholders
            .as_ref()
            .is_some_and(|a| a.is_valid(i) && a.value(i))
    }
}

/// The `reference` strings of one Reference column (`struct<reference, ...>`) or list of
/// References of a batch.
pub(crate) enum RefColumn {
    Single(StringArray),
    List {
        offsets: arrow::buffer::OffsetBuffer<i32>,
        nulls: Option<arrow::buffer::NullBuffer>,
        refs: StringArray,
    },
}

impl RefColumn {
    /// Finds `column` in `batch`; `None` when it is absent or not Reference-shaped.
    pub(crate) fn from_batch(batch: &RecordBatch, column: &str) -> Option<Self> {
        let col = batch.column_by_name(column)?;
        if let Some(st) = col.as_struct_opt() {
            let r = with_parent_nulls(st.column_by_name("reference")?, st.nulls());
            return to_utf8(&r).ok().map(RefColumn::Single);
        }
        let list = col.as_list_opt::<i32>()?;
        let st = list.values().as_struct_opt()?;
        let r = with_parent_nulls(st.column_by_name("reference")?, st.nulls());
        Some(RefColumn::List {
            offsets: list.offsets().clone(),
            nulls: list.nulls().cloned(),
            refs: to_utf8(&r).ok()?,
        })
    }

    /// Whether row `i` holds a reference to `target_type/<id>` with the id in `targets`.
    pub(crate) fn refers_to(&self, i: usize, target_type: &str, targets: &IdSet) -> bool {
        let hit = |refs: &StringArray, j: usize| {
            refs.is_valid(j)
                && reference_id(refs.value(j), target_type).is_some_and(|id| targets.contains(id))
        };
        match self {
            RefColumn::Single(refs) => hit(refs, i),
            RefColumn::List {
                offsets,
                nulls,
                refs,
            } => {
                if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    return false;
                }
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                (start..end).any(|j| hit(refs, j))
            }
        }
    }
}

/// The id in a reference to `target_type`: `Patient/1`, `Patient/1/_history/2` or an
/// absolute URL ending so; `None` for other types, contained (`#x`) or `urn:` references.
pub fn reference_id<'a>(reference: &'a str, target_type: &str) -> Option<&'a str> {
    let r = reference.split(['?', '#']).next().unwrap_or_default();
    let r = match r.find("/_history/") {
        Some(i) => &r[..i],
        None => r,
    };
    let mut parts = r.rsplit('/');
    let id = parts.next().filter(|s| !s.is_empty())?;
    (parts.next()? == target_type).then_some(id)
}

fn to_utf8(a: &ArrayRef) -> Result<StringArray, arrow::error::ArrowError> {
    match a.data_type() {
        DataType::Utf8 => Ok(a.as_string::<i32>().clone()),
        DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
        }
        other => Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "expected a string, found {other}"
        ))),
    }
}

/// A child of a null struct is null, whatever its own buffer says.
fn with_parent_nulls(child: &ArrayRef, parent: Option<&arrow::buffer::NullBuffer>) -> ArrayRef {
    match parent {
        None => child.clone(),
        Some(p) => {
            let merged = arrow::buffer::NullBuffer::union(Some(p), child.nulls());
            let data = child.to_data().into_builder().nulls(merged);
            match data.build() {
                Ok(d) => arrow::array::make_array(d),
                Err(_) => child.clone(),
            }
        }
    }
}

/// The ids of an [`IdSet`] being collected. It answers no membership questions: only the
/// set that [`IdSetBuilder::seal`] returns does, so no lookup can run on unsorted ids (where
/// "absent" would be wrong, and absent means "delete" in reconciliation).
///
/// ```
/// let mut ids = delta_sink::IdSetBuilder::new();
/// ids.insert("a");
/// let ids = ids.seal();
/// assert!(ids.contains("a"));
/// ```
///
/// Asking the builder does not compile:
///
/// ```compile_fail,E0599
/// let mut ids = delta_sink::IdSetBuilder::new();
/// ids.insert("a");
/// assert!(ids.contains("a"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct IdSetBuilder {
    hashes: Vec<u64>,
}

impl IdSetBuilder {
    /// No ids yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id.
    pub fn insert(&mut self, id: &str) {
        self.hashes.push(fingerprint(id));
    }

    /// Adds every non-null id of an Arrow string array (e.g. the `id` column of a batch).
    pub fn extend_from_array(&mut self, ids: &dyn Array) {
        if let Some(s) = ids.as_string_opt::<i32>() {
            self.hashes.extend(s.iter().flatten().map(fingerprint));
        } else if let Some(s) = ids.as_string_opt::<i64>() {
            self.hashes.extend(s.iter().flatten().map(fingerprint));
        } else if let Some(s) = ids.as_string_view_opt() {
            self.hashes.extend(s.iter().flatten().map(fingerprint));
        }
    }

    /// Adds every id of `other`.
    pub fn merge(&mut self, other: IdSetBuilder) {
        self.hashes.extend(other.hashes);
    }

    /// The set of the ids added: sorted and deduplicated, ready for lookups.
    pub fn seal(mut self) -> IdSet {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.hashes.shrink_to_fit();
        IdSet {
            hashes: self.hashes,
        }
    }
}

/// A compact set of resource ids: 64-bit fingerprints in a sorted vector (8 bytes per id,
/// ~80 MB for ten million ids). Built by an [`IdSetBuilder`] or collected from ids.
///
/// Fingerprints can collide (the odds that any two of ten million ids share one are about
/// 3 in a million: n²/2⁶⁵); a collision can only make an absent id look present, so
/// reconciliation errs towards keeping a row, never towards deleting one that the server
/// still has.
#[derive(Debug, Clone, Default)]
pub struct IdSet {
    /// Sorted, without duplicates.
    hashes: Vec<u64>,
}

impl IdSet {
    /// Number of distinct fingerprints.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// True when the set holds no id.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Membership test.
    pub fn contains(&self, id: &str) -> bool {
        self.hashes.binary_search(&fingerprint(id)).is_ok()
    }
}

impl<S: AsRef<str>> FromIterator<S> for IdSet {
    fn from_iter<T: IntoIterator<Item = S>>(iter: T) -> Self {
        let mut set = IdSetBuilder::new();
        for id in iter {
            set.insert(id.as_ref());
        }
        set.seal()
    }
}

/// Stable 64-bit fingerprint (SipHash-1-3 with fixed keys).
pub(crate) fn fingerprint(id: &str) -> u64 {
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(id.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(lu: Option<i64>, v: Option<&str>) -> Recency {
        Recency {
            last_updated: lu,
            version_id: v.map(Box::from),
        }
    }

    #[test]
    fn reference_ids() {
        assert_eq!(reference_id("Patient/p1", "Patient"), Some("p1"));
        assert_eq!(reference_id("Patient/p1/_history/3", "Patient"), Some("p1"));
        assert_eq!(
            reference_id("https://fhir.example/r4/Patient/p1", "Patient"),
            Some("p1")
        );
        assert_eq!(reference_id("Group/p1", "Patient"), None);
        assert_eq!(reference_id("urn:uuid:p1", "Patient"), None);
        assert_eq!(reference_id("#p1", "Patient"), None);
        assert_eq!(reference_id("Patient/", "Patient"), None);
        assert_eq!(reference_id("p1", "Patient"), None);
    }

    #[test]
    fn recency_rules() {
        assert!(r(Some(2), Some("1")).supersedes(&r(Some(1), Some("9"))));
        assert!(!r(Some(1), Some("9")).supersedes(&r(Some(2), Some("1"))));
        assert!(r(Some(1), Some("10")).supersedes(&r(Some(1), Some("9"))));
        assert!(!r(Some(1), Some("2")).supersedes(&r(Some(1), Some("2"))));
        assert!(r(Some(1), None).supersedes(&r(None, Some("5"))));
        assert!(!r(None, Some("5")).supersedes(&r(Some(1), None)));
        assert!(r(None, None).supersedes(&r(None, None)));
        assert!(r(Some(1), Some("b")).supersedes(&r(Some(1), Some("a"))));
        assert!(r(Some(1), Some("a")).supersedes(&r(Some(1), None)));
    }

    #[test]
    fn a_sealed_set_holds_each_inserted_id_once() {
        let mut b = IdSetBuilder::new();
        for id in ["b", "a", "c", "a", "b"] {
            b.insert(id);
        }
        let set = b.seal();
        assert_eq!(set.len(), 3, "duplicates count once");
        assert!(["a", "b", "c"].iter().all(|id| set.contains(id)));
        assert!(!set.contains("d"));
        assert!(!set.contains(""));
    }

    #[test]
    fn an_empty_builder_seals_to_an_empty_set() {
        let set = IdSetBuilder::new().seal();
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert!(!set.contains("a"));
        assert!(IdSet::default().is_empty());
        assert!(std::iter::empty::<&str>().collect::<IdSet>().is_empty());
    }

    #[test]
    fn merged_builders_seal_to_the_union() {
        let mut a = IdSetBuilder::new();
        a.insert("x");
        a.insert("shared");
        let mut b = IdSetBuilder::new();
        b.insert("y");
        b.insert("shared");
        a.merge(b);
        a.merge(IdSetBuilder::new());
        let set = a.seal();
        assert_eq!(set.len(), 3);
        assert!(["x", "y", "shared"].iter().all(|id| set.contains(id)));
    }

    #[test]
    fn ids_come_from_every_arrow_string_type_nulls_skipped() {
        use arrow::array::{LargeStringArray, StringViewArray};
        let mut b = IdSetBuilder::new();
        b.extend_from_array(&StringArray::from(vec![Some("a"), None]));
        b.extend_from_array(&LargeStringArray::from(vec![Some("b")]));
        b.extend_from_array(&StringViewArray::from(vec![Some("c"), None]));
        // Not strings: nothing to add.
        b.extend_from_array(&arrow::array::Int32Array::from(vec![1]));
        let set = b.seal();
        assert_eq!(set.len(), 3);
        assert!(["a", "b", "c"].iter().all(|id| set.contains(id)));
    }

    /// A batch of a view table: key, recency struct and placeholder flags, named apart.
    fn view_batch(with_placeholder: bool) -> RecordBatch {
        use arrow::array::{BooleanArray, TimestampMicrosecondArray};
        use arrow::datatypes::Field;
        use std::sync::Arc;
        let meta = StructArray::from(vec![
            (
                Arc::new(Field::new("versionId", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec![Some("1"), None, Some("3")])) as ArrayRef,
            ),
            (
                Arc::new(Field::new(
                    "lastUpdated",
                    DataType::Timestamp(TimeUnit::Microsecond, None),
                    true,
                )),
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(5),
                    Some(6),
                    None,
                ])),
            ),
        ]);
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            (
                "_resource_key",
                Arc::new(StringArray::from(vec![Some("a"), Some("a"), None])),
            ),
            ("_resource_meta", Arc::new(meta)),
        ];
        if with_placeholder {
            let flags = BooleanArray::from(vec![Some(true), None, Some(false)]);
            columns.push(("_placeholder", Arc::new(flags)));
        }
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn key_columns_come_from_the_named_columns() {
        let spec = KeySpec::grouped("_resource_key", "_resource_meta", "_placeholder");
        let keys = KeyColumns::from_batch(&view_batch(true), &spec, true).unwrap();
        assert_eq!((keys.id(0), keys.id(2)), (Some("a"), None));
        assert_eq!(keys.recency(0), r(Some(5), Some("1")));
        assert_eq!(keys.recency(1), r(Some(6), None));
        assert_eq!(keys.recency(2), r(None, Some("3")));
        let flags: Vec<bool> = (0..3).map(|i| keys.is_placeholder(i)).collect();
        assert_eq!(flags, [true, false, false], "a null flag is no placeholder");

        // Stored rows: the flags are not read, and never set.
        let stored = KeyColumns::from_batch(&view_batch(false), &spec, false).unwrap();
        assert!(!stored.is_placeholder(0));
        // Input rows of a grouped key must say whether they are placeholders.
        let err = KeyColumns::from_batch(&view_batch(false), &spec, true).err();
        assert!(err.is_some_and(|e| e.contains("`_placeholder`")));
        // The default names are not there.
        let err = KeyColumns::from_batch(&view_batch(true), &KeySpec::default(), true).err();
        assert!(err.is_some_and(|e| e.contains("no `id` column")));
        let one = KeySpec::one("_resource_key", "_resource_meta");
        let keys = KeyColumns::from_batch(&view_batch(true), &one, true).unwrap();
        assert!(!keys.is_placeholder(0), "one-row keys have no placeholders");
    }

    proptest! {
        #[test]
        fn numeric_version_ids_compare_as_numbers(a in 0u64..1_000_000_000, b in 0u64..1_000_000_000) {
            prop_assert_eq!(compare_version_ids(Some(&a.to_string()), Some(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn version_order_is_antisymmetric(a in "[0-9a-z]{0,6}", b in "[0-9a-z]{0,6}") {
            let ab = compare_version_ids(Some(&a), Some(&b));
            let ba = compare_version_ids(Some(&b), Some(&a));
            prop_assert_eq!(ab, ba.reverse());
            if ab == Ordering::Equal { prop_assert_eq!(&a, &b); }
        }

        #[test]
        fn id_set_has_no_false_negatives(ids in proptest::collection::vec("[A-Za-z0-9.-]{1,64}", 0..200)) {
            let set: IdSet = ids.iter().collect();
            for id in &ids {
                prop_assert!(set.contains(id));
            }
        }

        #[test]
        fn builders_split_and_merged_equal_one_builder(
            ids in proptest::collection::vec("[a-z0-9]{1,8}", 0..100),
            split in 0usize..100,
        ) {
            let split = split.min(ids.len());
            let (mut left, mut right) = (IdSetBuilder::new(), IdSetBuilder::new());
            ids[..split].iter().for_each(|id| left.insert(id));
            ids[split..].iter().for_each(|id| right.insert(id));
            left.merge(right);
            let merged = left.seal();
            let whole: IdSet = ids.iter().collect();
            prop_assert_eq!(merged.hashes, whole.hashes);
        }
    }
}
