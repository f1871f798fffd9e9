//! Decoding plans: what each column of a table's schema becomes in FHIR JSON, worked out once
//! per schema from the Arrow types alone.
//!
//! FHIR element names are letters and digits, so every column whose name contains `_` is one
//! the encoding adds (`_scale`, `_versioned`, `_canonicalized`, `_fid`, `_extension`) or one
//! that is not part of the resource, and is not written.
use arrow_schema::{DataType, Field, Fields, TimeUnit};

use super::DecodeError;

/// How one column is written.
#[derive(Debug)]
pub(crate) enum Kind {
    Str,
    Bool,
    Int,
    /// A decimal: its Arrow scale, and the index (in the same group) of its `<name>_scale`
    /// column, if any.
    Dec {
        type_scale: i8,
        scale_col: Option<usize>,
    },
    Instant(TimeUnit),
    Binary,
    Group(GroupPlan),
    List(Box<Kind>),
}

/// One FHIR element of a group.
#[derive(Debug)]
pub(crate) struct FieldPlan {
    pub name: Box<str>,
    /// `"name":`, ready to append.
    pub key: Box<str>,
    /// Column index in the group.
    pub col: usize,
    pub kind: Kind,
}

/// A group (resource, complex type, backbone element or extension).
#[derive(Debug)]
pub(crate) struct GroupPlan {
    pub fields: Vec<FieldPlan>,
    /// Column index of `_fid`, when extensions are encoded.
    pub fid: Option<usize>,
    /// Number of elements written before `extension` (FHIR's element order).
    pub ext_at: usize,
}

/// The root's `_extension` map: column index and the plan of its Extension groups.
#[derive(Debug)]
pub(crate) struct ExtPlan {
    pub col: usize,
    pub group: GroupPlan,
}

/// Elements a resource has before `extension` (`id`, `meta`, `implicitRules`, `language`,
/// `text`; `contained` is not encoded).
const RESOURCE_HEAD: [&str; 5] = ["id", "meta", "implicitRules", "language", "text"];

pub(crate) fn root_plan(fields: &Fields) -> Result<(GroupPlan, Option<ExtPlan>), DecodeError> {
    let group = group_plan("", fields, true)?;
    let ext = match fields.find("_extension") {
        None => None,
        Some((col, f)) => Some(ExtPlan {
            col,
            group: extension_group(f)?,
        }),
    };
    Ok((group, ext))
}

/// The Extension group inside `_extension: Map<Int32, List<Struct>>`.
fn extension_group(f: &Field) -> Result<GroupPlan, DecodeError> {
    let bad = || DecodeError::UnsupportedColumn {
        path: "_extension".into(),
        data_type: f.data_type().to_string(),
    };
    let DataType::Map(entries, _) = f.data_type() else {
        return Err(bad());
    };
    let DataType::Struct(kv) = entries.data_type() else {
        return Err(bad());
    };
    match (
        kv.first().map(|k| k.data_type()),
        kv.get(1).map(|v| v.data_type()),
    ) {
        (Some(DataType::Int32), Some(DataType::List(item))) => match item.data_type() {
            DataType::Struct(ext) => group_plan("_extension", ext, false),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn group_plan(path: &str, fields: &Fields, root: bool) -> Result<GroupPlan, DecodeError> {
    let mut out = Vec::with_capacity(fields.len());
    let mut fid = None;
    for (col, f) in fields.iter().enumerate() {
        let name = f.name();
        if name == "_fid" {
            fid = Some(col);
            continue;
        }
        if name.contains('_') {
            continue;
        }
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let mut kind = kind_of(&path, f.data_type())?;
        let scale_name = format!("{name}_scale");
        if let Some(scale_col) = kind.decimal_scale_col() {
            *scale_col = fields.find(&scale_name).map(|(i, _)| i);
        }
        out.push(FieldPlan {
            key: format!("\"{name}\":").into(),
            name: name.as_str().into(),
            col,
            kind,
        });
    }
    let ext_at = if root {
        out.iter()
            .take_while(|f| RESOURCE_HEAD.contains(&&*f.name))
            .count()
    } else {
        usize::from(out.first().is_some_and(|f| &*f.name == "id"))
    };
    Ok(GroupPlan {
        fields: out,
        fid,
        ext_at,
    })
}

impl Kind {
    /// The `scale_col` of a decimal or a list of decimals.
    fn decimal_scale_col(&mut self) -> Option<&mut Option<usize>> {
        match self {
            Kind::Dec { scale_col, .. } => Some(scale_col),
            Kind::List(item) => item.decimal_scale_col(),
            _ => None,
        }
    }
}

fn kind_of(path: &str, dt: &DataType) -> Result<Kind, DecodeError> {
    Ok(match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Str,
        DataType::Boolean => Kind::Bool,
        DataType::Int32 => Kind::Int,
        DataType::Decimal128(_, s) => Kind::Dec {
            type_scale: *s,
            scale_col: None,
        },
        DataType::Timestamp(unit, _) => Kind::Instant(*unit),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Kind::Binary,
        DataType::Struct(fields) => Kind::Group(group_plan(path, fields, false)?),
        DataType::List(item) => match kind_of(path, item.data_type())? {
            Kind::List(_) => return Err(unsupported(path, dt)),
            k => Kind::List(Box::new(k)),
        },
        _ => return Err(unsupported(path, dt)),
    })
}

fn unsupported(path: &str, dt: &DataType) -> DecodeError {
    DecodeError::UnsupportedColumn {
        path: path.into(),
        data_type: dt.to_string(),
    }
}

impl GroupPlan {
    /// Whether the element path `segs` (below this group) is stored; see
    /// [`super::Decoder::keeps`].
    pub(crate) fn keeps(&self, segs: &[&str], ext: Option<&ExtPlan>) -> bool {
        let Some((seg, rest)) = segs.split_first() else {
            return true;
        };
        let base = seg.strip_suffix("[x]").unwrap_or(seg);
        if base == "extension" {
            return match ext {
                Some(e) if self.fid.is_some() => e.group.keeps(rest, ext),
                _ => false,
            };
        }
        let exact = self.fields.iter().find(|f| &*f.name == base);
        if let Some(f) = exact {
            return f.kind.keeps(rest, ext);
        }
        // A choice element by its base name: any of its types that keeps the rest.
        self.fields.iter().any(|f| {
            f.name
                .strip_prefix(base)
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
                && f.kind.keeps(rest, ext)
        })
    }
}

impl Kind {
    fn keeps(&self, segs: &[&str], ext: Option<&ExtPlan>) -> bool {
        match self {
            Kind::Group(g) => g.keeps(segs, ext),
            Kind::List(item) => item.keeps(segs, ext),
            _ => segs.is_empty(),
        }
    }
}
