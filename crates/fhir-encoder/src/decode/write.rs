//! Writing rows as FHIR JSON: a plan's columns bound to one batch's arrays, and the writers of
//! each value kind. Absent values, empty groups and empty lists write nothing (FHIR JSON has
//! no nulls or empty arrays); a key whose value wrote nothing is taken back.
use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, Int32Array, LargeBinaryArray,
    ListArray, MapArray, StructArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::TimeUnit;
use base64::Engine as _;

use super::DecodeError;
use super::plan::{ExtPlan, FieldPlan, GroupPlan, Kind};

/// One column bound to its array.
pub(crate) enum Col<'a> {
    Str(&'a dyn StrValues),
    Bool(&'a BooleanArray),
    Int(&'a Int32Array),
    Dec {
        values: &'a Decimal128Array,
        type_scale: i8,
        scales: Option<&'a Int32Array>,
    },
    Instant {
        nulls: Option<&'a NullBuffer>,
        values: &'a ScalarBuffer<i64>,
        unit: TimeUnit,
    },
    Binary(&'a dyn BinValues),
    Group(Group<'a>),
    List {
        list: &'a ListArray,
        item: Box<Col<'a>>,
    },
}

/// A group bound to its arrays.
pub(crate) struct Group<'a> {
    nulls: Option<&'a NullBuffer>,
    fields: Vec<(&'a str, Col<'a>)>,
    fid: Option<&'a Int32Array>,
    ext_at: usize,
}

/// The root's `_extension` map bound to its arrays.
pub(crate) struct Exts<'a> {
    map: &'a MapArray,
    keys: &'a Int32Array,
    lists: &'a ListArray,
    group: Group<'a>,
}

/// String arrays of any offset width or layout.
pub(crate) trait StrValues {
    fn get(&self, i: usize) -> Option<&str>;
}
impl<T: arrow_array::OffsetSizeTrait> StrValues for arrow_array::GenericStringArray<T> {
    #[inline]
    fn get(&self, i: usize) -> Option<&str> {
        self.is_valid(i).then(|| self.value(i))
    }
}
impl StrValues for arrow_array::StringViewArray {
    #[inline]
    fn get(&self, i: usize) -> Option<&str> {
        self.is_valid(i).then(|| self.value(i))
    }
}

pub(crate) trait BinValues {
    fn get(&self, i: usize) -> Option<&[u8]>;
}
impl BinValues for BinaryArray {
    fn get(&self, i: usize) -> Option<&[u8]> {
        self.is_valid(i).then(|| self.value(i))
    }
}
impl BinValues for LargeBinaryArray {
    fn get(&self, i: usize) -> Option<&[u8]> {
        self.is_valid(i).then(|| self.value(i))
    }
}
impl BinValues for arrow_array::BinaryViewArray {
    fn get(&self, i: usize) -> Option<&[u8]> {
        self.is_valid(i).then(|| self.value(i))
    }
}

/// A string column of any layout.
pub(crate) fn bind_str(arr: &ArrayRef) -> Result<&dyn StrValues, DecodeError> {
    let bad = || mismatch(crate::options::JSON_COLUMN);
    Ok(match arr.data_type() {
        arrow_schema::DataType::Utf8 => arr.as_string_opt::<i32>().ok_or_else(bad)?,
        arrow_schema::DataType::LargeUtf8 => arr.as_string_opt::<i64>().ok_or_else(bad)?,
        _ => arr.as_string_view_opt().ok_or_else(bad)?,
    })
}

fn mismatch(what: &str) -> DecodeError {
    DecodeError::SchemaMismatch(format!("column `{what}` is not of the decoder's type"))
}

pub(crate) fn bind_group<'a>(
    plan: &'a GroupPlan,
    nulls: Option<&'a NullBuffer>,
    columns: &'a [ArrayRef],
) -> Result<Group<'a>, DecodeError> {
    let mut fields = Vec::with_capacity(plan.fields.len());
    for f in &plan.fields {
        let arr = columns.get(f.col).ok_or_else(|| mismatch(&f.name))?;
        let col = match bind(f, &f.kind, arr, columns)? {
            Some(c) => c,
            None => continue,
        };
        fields.push((&*f.key, col));
    }
    let fid = match plan.fid {
        Some(i) => Some(
            columns
                .get(i)
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
                .ok_or_else(|| mismatch("_fid"))?,
        ),
        None => None,
    };
    Ok(Group {
        nulls,
        fields,
        fid,
        ext_at: plan.ext_at,
    })
}

/// Binds a column; `None` for a column with no values in this batch (skipped when writing).
fn bind<'a>(
    f: &'a FieldPlan,
    kind: &'a Kind,
    arr: &'a ArrayRef,
    siblings: &'a [ArrayRef],
) -> Result<Option<Col<'a>>, DecodeError> {
    if arr.null_count() == arr.len() {
        return Ok(None);
    }
    let bad = || mismatch(&f.name);
    Ok(Some(match kind {
        Kind::Str => Col::Str(match arr.data_type() {
            arrow_schema::DataType::Utf8 => arr.as_string_opt::<i32>().ok_or_else(bad)?,
            arrow_schema::DataType::LargeUtf8 => arr.as_string_opt::<i64>().ok_or_else(bad)?,
            _ => arr.as_string_view_opt().ok_or_else(bad)?,
        }),
        Kind::Bool => Col::Bool(arr.as_boolean_opt().ok_or_else(bad)?),
        Kind::Int => Col::Int(arr.as_primitive_opt::<Int32Type>().ok_or_else(bad)?),
        Kind::Dec {
            type_scale,
            scale_col,
        } => {
            let scales = match scale_col.and_then(|i| siblings.get(i)) {
                None => None,
                // A list of decimals: the scales are the items of the sibling list, which
                // must have the same offsets.
                Some(s) if s.as_list_opt::<i32>().is_some() => {
                    let sl = s.as_list::<i32>();
                    Some(
                        sl.values()
                            .as_primitive_opt::<Int32Type>()
                            .ok_or_else(bad)?,
                    )
                }
                Some(s) => Some(s.as_primitive_opt::<Int32Type>().ok_or_else(bad)?),
            };
            Col::Dec {
                values: arr.as_primitive_opt().ok_or_else(bad)?,
                type_scale: *type_scale,
                scales,
            }
        }
        Kind::Instant(unit) => {
            use arrow_array::types::*;
            let values = match unit {
                TimeUnit::Second => arr
                    .as_primitive_opt::<TimestampSecondType>()
                    .map(|a| a.values()),
                TimeUnit::Millisecond => arr
                    .as_primitive_opt::<TimestampMillisecondType>()
                    .map(|a| a.values()),
                TimeUnit::Microsecond => arr
                    .as_primitive_opt::<TimestampMicrosecondType>()
                    .map(|a| a.values()),
                TimeUnit::Nanosecond => arr
                    .as_primitive_opt::<TimestampNanosecondType>()
                    .map(|a| a.values()),
            };
            Col::Instant {
                nulls: arr.nulls(),
                values: values.ok_or_else(bad)?,
                unit: *unit,
            }
        }
        Kind::Binary => Col::Binary(match arr.data_type() {
            arrow_schema::DataType::Binary => arr.as_binary_opt::<i32>().ok_or_else(bad)?,
            arrow_schema::DataType::LargeBinary => arr.as_binary_opt::<i64>().ok_or_else(bad)?,
            _ => arr.as_binary_view_opt().ok_or_else(bad)?,
        }),
        Kind::Group(g) => {
            let s: &StructArray = arr.as_struct_opt().ok_or_else(bad)?;
            Col::Group(bind_group(g, s.nulls(), s.columns())?)
        }
        Kind::List(item) => {
            let list = arr.as_list_opt::<i32>().ok_or_else(bad)?;
            if let Some(scale_list) = decimal_scales(item, siblings)
                && scale_list.value_offsets() != list.value_offsets()
            {
                return Err(DecodeError::SchemaMismatch(format!(
                    "`{}_scale` does not have one scale per decimal of `{}`",
                    f.name, f.name
                )));
            }
            match bind(f, item, list.values(), siblings)? {
                Some(item) => Col::List {
                    list,
                    item: Box::new(item),
                },
                None => return Ok(None),
            }
        }
    }))
}

/// The sibling list of scales of a list of decimals.
fn decimal_scales<'a>(item: &Kind, siblings: &'a [ArrayRef]) -> Option<&'a ListArray> {
    match item {
        Kind::Dec {
            scale_col: Some(i), ..
        } => siblings.get(*i)?.as_list_opt::<i32>(),
        _ => None,
    }
}

pub(crate) fn bind_exts<'a>(
    plan: &'a ExtPlan,
    columns: &'a [ArrayRef],
) -> Result<Exts<'a>, DecodeError> {
    let bad = || mismatch("_extension");
    let map = columns
        .get(plan.col)
        .and_then(|c| c.as_map_opt())
        .ok_or_else(bad)?;
    let keys = map.keys().as_primitive_opt::<Int32Type>().ok_or_else(bad)?;
    let lists = map.values().as_list_opt::<i32>().ok_or_else(bad)?;
    let items = lists.values().as_struct_opt().ok_or_else(bad)?;
    let group = bind_group(&plan.group, items.nulls(), items.columns())?;
    Ok(Exts {
        map,
        keys,
        lists,
        group,
    })
}

impl Exts<'_> {
    /// Fills `index` with row `row`'s (fid, map entry) pairs, sorted by fid.
    pub(crate) fn index_row(&self, row: usize, index: &mut Vec<(i32, u32)>) {
        index.clear();
        if self.map.is_null(row) {
            return;
        }
        let offsets = self.map.value_offsets();
        for e in offsets[row] as usize..offsets[row + 1] as usize {
            index.push((self.keys.value(e), e as u32));
        }
        index.sort_unstable();
    }
}

/// What the writers of one row share: the row's extensions, by the fid of their parent.
pub(crate) struct Ctx<'a, 'b> {
    pub exts: Option<&'b Exts<'a>>,
    pub index: &'b [(i32, u32)],
}

impl Ctx<'_, '_> {
    /// Writes `"extension":[…]` for the group with fid `fid`, if it has any.
    fn write_extensions(&self, fid: i32, out: &mut String, first: bool) -> bool {
        let Some(exts) = self.exts else { return false };
        let Ok(at) = self.index.binary_search_by_key(&fid, |(k, _)| *k) else {
            return false;
        };
        let entry = self.index[at].1 as usize;
        if exts.lists.is_null(entry) {
            return false;
        }
        let mark = out.len();
        if !first {
            out.push(',');
        }
        out.push_str("\"extension\":[");
        let offsets = exts.lists.value_offsets();
        let mut any = false;
        for i in offsets[entry] as usize..offsets[entry + 1] as usize {
            let item = out.len();
            if any {
                out.push(',');
            }
            if self.write_group(&exts.group, i, out, "{") {
                any = true;
            } else {
                out.truncate(item);
            }
        }
        if !any {
            out.truncate(mark);
            return false;
        }
        out.push(']');
        true
    }

    /// Writes the group at `i` starting with `open` (`{`, or the root's `{"resourceType":…`);
    /// false, with nothing written, when it has no values.
    pub(crate) fn write_group(&self, g: &Group, i: usize, out: &mut String, open: &str) -> bool {
        if g.nulls.is_some_and(|n| n.is_null(i)) {
            return false;
        }
        let start = out.len();
        out.push_str(open);
        // The root's `resourceType` is a value already.
        let mut first = open.len() == 1;
        let fid = g.fid.and_then(|f| f.is_valid(i).then(|| f.value(i)));
        for (k, (key, col)) in g.fields.iter().enumerate() {
            if k == g.ext_at
                && let Some(fid) = fid
                && self.write_extensions(fid, out, first)
            {
                first = false;
            }
            let mark = out.len();
            if !first {
                out.push(',');
            }
            out.push_str(key);
            if self.write_value(col, i, out) {
                first = false;
            } else {
                out.truncate(mark);
            }
        }
        if g.ext_at >= g.fields.len()
            && let Some(fid) = fid
            && self.write_extensions(fid, out, first)
        {
            first = false;
        }
        if first && open.len() == 1 {
            out.truncate(start);
            return false;
        }
        out.push('}');
        true
    }

    fn write_value(&self, col: &Col, i: usize, out: &mut String) -> bool {
        match col {
            Col::Str(a) => match a.get(i) {
                Some(s) => {
                    write_str(s, out);
                    true
                }
                None => false,
            },
            Col::Bool(a) => {
                if a.is_null(i) {
                    return false;
                }
                out.push_str(if a.value(i) { "true" } else { "false" });
                true
            }
            Col::Int(a) => {
                if a.is_null(i) {
                    return false;
                }
                let _ = write!(out, "{}", a.value(i));
                true
            }
            Col::Dec {
                values,
                type_scale,
                scales,
            } => {
                if values.is_null(i) {
                    return false;
                }
                let scale = scales.and_then(|s| s.is_valid(i).then(|| s.value(i)));
                write_decimal(values.value(i), *type_scale, scale, out);
                true
            }
            Col::Instant {
                nulls,
                values,
                unit,
            } => {
                if nulls.is_some_and(|n| n.is_null(i)) {
                    return false;
                }
                write_instant(values[i], *unit, out)
            }
            Col::Binary(a) => match a.get(i) {
                Some(b) => {
                    out.push('"');
                    base64::engine::general_purpose::STANDARD.encode_string(b, out);
                    out.push('"');
                    true
                }
                None => false,
            },
            Col::Group(g) => self.write_group(g, i, out, "{"),
            Col::List { list, item } => {
                if list.is_null(i) {
                    return false;
                }
                let offsets: &OffsetBuffer<i32> = list.offsets();
                let (s, e) = (offsets[i] as usize, offsets[i + 1] as usize);
                if s == e {
                    return false;
                }
                let start = out.len();
                out.push('[');
                let mut any = false;
                for j in s..e {
                    let mark = out.len();
                    if any {
                        out.push(',');
                    }
                    if self.write_value(item, j, out) {
                        any = true;
                    } else {
                        out.truncate(mark);
                    }
                }
                if !any {
                    out.truncate(start);
                    return false;
                }
                out.push(']');
                true
            }
        }
    }
}

/// Bytes that JSON strings must escape: `"`, `\` and control characters.
const fn escapes() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static ESCAPE: [bool; 256] = escapes();

/// Appends `s` as a JSON string.
pub(crate) fn write_str(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if !ESCAPE[b as usize] {
            continue;
        }
        // Escaped bytes are ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a decimal stored as `unscaled * 10^-type_scale` with its original `scale`: exact
/// when `scale <= type_scale` (the stored value then has only zeros past `scale`), else all
/// `type_scale` places (the original was rounded to them). Without a scale, trailing zeros are
/// dropped.
pub(crate) fn write_decimal(unscaled: i128, type_scale: i8, scale: Option<i32>, out: &mut String) {
    if unscaled < 0 {
        out.push('-');
    }
    let mut u = unscaled.unsigned_abs();
    let mut places = type_scale.max(0) as u32;
    let fits = |k: i32| (0..=places as i32).contains(&k);
    let target = match scale {
        Some(k) if fits(k) => k as u32,
        Some(_) => places,
        None => 0,
    };
    // Drop stored places down to `target`, but only zeros: a value with more digits than its
    // recorded scale keeps them.
    while places > target && u.is_multiple_of(10) {
        u /= 10;
        places -= 1;
    }
    if places == 0 {
        let _ = write!(out, "{u}");
        return;
    }
    let p = 10u128.pow(places);
    let _ = write!(out, "{}.{:0width$}", u / p, u % p, width = places as usize);
}

/// Appends an instant as RFC 3339 UTC (`Z`), with milliseconds, microseconds or nanoseconds
/// when it has a fraction of a second. False (nothing written) when out of chrono's range.
pub(crate) fn write_instant(v: i64, unit: TimeUnit, out: &mut String) -> bool {
    let per_sec: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let secs = v.div_euclid(per_sec);
    let nanos = (v.rem_euclid(per_sec) * (1_000_000_000 / per_sec)) as u32;
    let Some(t) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return false;
    };
    use chrono::{Datelike, Timelike};
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let _ = if nanos == 0 {
        Ok(())
    } else if nanos.is_multiple_of(1_000_000) {
        write!(out, ".{:03}", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        write!(out, ".{:06}", nanos / 1_000)
    } else {
        write!(out, ".{nanos:09}")
    };
    out.push_str("Z\"");
    true
}
