//! Encoding of one parsed resource into the column builders of its plan.
use arrow_array::builder::ArrayBuilder;

use crate::builder::{ColBuilder, Fill, StructCols};
use crate::error::{LineRef, Reject, Warning};
use crate::json::{Doc, Tape, Tok};
use crate::scan::scan_header;
use crate::schema::{Col, Prim, ResourcePlan, StructPlan, UNSUPPORTED_TYPES};
use crate::ucum;
use crate::values;

const NONE: u32 = u32::MAX;
const UCUM: &str = "http://unitsofmeasure.org";
/// Instants before this (1900-01-01T00:00:00Z, in µs) are kept but flagged.
const INSTANT_1900: i64 = -2_208_988_800_000_000;

pub(crate) struct RawWarning {
    pub path: String,
    pub message: String,
}

pub(crate) struct RawReject {
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub reason: String,
}

impl RawReject {
    pub fn into_reject(self, source: &LineRef) -> Reject {
        Reject {
            resource_type: self.resource_type,
            id: self.id,
            file: source.file.to_string(),
            line: source.line,
            reason: self.reason,
        }
    }
}

pub(crate) struct Header<'a> {
    pub resource_type: Option<&'a str>,
    pub id: Option<&'a str>,
}

pub(crate) enum RowOutcome {
    Row { warnings: Vec<Warning> },
    Reject(RawReject),
}

/// Reusable per-thread state: the line's tape and scratch space.
#[derive(Default)]
pub(crate) struct RowEncoder {
    tape: Tape,
    /// Slot values of the groups being encoded (a stack of frames).
    slots: Vec<u32>,
    warnings: Vec<RawWarning>,
    path: String,
    fid: i32,
    /// (parent `_fid`, index of its `extension` array) still to be written to `_extension`.
    pending_ext: Vec<(i32, u32)>,
    bytes: Vec<u8>,
    /// `_code_canonicalized` of the Quantity being encoded (computed with its value).
    canon_code: Option<String>,
}

impl RowEncoder {
    /// Parses a line, which the tape then refers to: pass the returned text to
    /// [`header`](Self::header) and [`encode_parsed`](Self::encode_parsed).
    /// A line that does not parse is rejected with the `resourceType` and `id` that can
    /// still be read from it (see [`scan_header`]).
    pub fn parse<'l>(&mut self, line: &'l [u8]) -> Result<&'l str, RawReject> {
        let refuse = |reason: String| {
            let h = scan_header(line);
            RawReject {
                resource_type: h.resource_type,
                id: h.id,
                reason,
            }
        };
        let text = std::str::from_utf8(line)
            .map_err(|e| refuse(format!("not valid UTF-8 (at byte {})", e.valid_up_to())))?;
        let doc = self.tape.parse(text).map_err(|e| refuse(e.to_string()))?;
        if !matches!(doc.tok(0), Tok::Obj(_)) {
            return Err(refuse("not a JSON object".into()));
        }
        Ok(text)
    }

    pub(crate) fn doc<'a>(&'a self, src: &'a str) -> Doc<'a> {
        Doc {
            src,
            toks: &self.tape.toks,
            buf: &self.tape.buf,
        }
    }

    /// `resourceType` and `id` of the parsed line `src`, when they are strings.
    pub fn header<'a>(&'a self, src: &'a str) -> Header<'a> {
        let doc = self.doc(src);
        let (mut resource_type, mut id) = (None, None);
        for (k, v) in doc.members(0) {
            match k {
                "resourceType" if resource_type.is_none() => {
                    resource_type = Some(doc.str(v));
                }
                "id" if id.is_none() => id = Some(doc.str(v)),
                _ => {}
            }
            if resource_type.is_some() && id.is_some() {
                break;
            }
        }
        Header {
            resource_type: resource_type.flatten(),
            id: id.flatten(),
        }
    }

    /// Parses and encodes a line of `plan`'s type.
    pub fn encode(
        &mut self,
        plan: &ResourcePlan,
        root: &mut StructCols,
        line: &[u8],
    ) -> RowOutcome {
        match self.parse(line) {
            Ok(src) => self.encode_parsed(plan, root, src),
            Err(r) => RowOutcome::Reject(r),
        }
    }

    /// Encodes the parsed line `src`, or rejects it when it is not a resource of `plan`'s type
    /// with an id. Nothing is appended for a rejected line.
    pub fn encode_parsed(
        &mut self,
        plan: &ResourcePlan,
        root: &mut StructCols,
        src: &str,
    ) -> RowOutcome {
        let h = self.header(src);
        let reject = |reason: String, h: Header| {
            RowOutcome::Reject(RawReject {
                resource_type: h.resource_type.map(str::to_string),
                id: h.id.map(str::to_string),
                reason,
            })
        };
        match h.resource_type {
            None => return reject("no resourceType".into(), h),
            Some(t) if t != &*plan.resource_type => {
                let reason = if UNSUPPORTED_TYPES.contains(&t) {
                    format!("{t} resources are not supported by the Pathling encoding")
                } else if crate::schema::supported_types().binary_search(&t).is_ok() {
                    format!(
                        "a {t} resource where {} resources were expected",
                        plan.resource_type
                    )
                } else {
                    format!("unknown resourceType {t:?}")
                };
                return reject(reason, h);
            }
            Some(_) => {}
        }
        match h.id {
            None => return reject("no id (a string is required)".into(), h),
            Some("") => return reject("empty id".into(), h),
            Some(_) => {}
        }
        self.warnings.clear();
        self.pending_ext.clear();
        self.fid = 0;
        self.path.clear();
        self.path.push_str(&plan.resource_type);
        // The tape is moved out so the document can be borrowed while `self` is mutated; it
        // is put back afterwards (no copies).
        let tape = std::mem::take(&mut self.tape);
        let doc = Doc {
            src,
            toks: &tape.toks,
            buf: &tape.buf,
        };
        self.group(
            &doc,
            &plan.root,
            root,
            Some(0),
            true,
            Some(&*plan.resource_type),
        );
        self.tape = tape;
        let warnings = if self.warnings.is_empty() {
            Vec::new()
        } else {
            let rt = plan.resource_type.to_string();
            let id = self.header(src).id.unwrap_or_default().to_string();
            self.warnings
                .drain(..)
                .map(|w| Warning {
                    resource_type: rt.clone(),
                    id: id.clone(),
                    file: String::new(),
                    line: 0,
                    path: w.path,
                    message: w.message,
                })
                .collect()
        };
        RowOutcome::Row { warnings }
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        let path = if key.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{key}", self.path)
        };
        self.warnings.push(RawWarning {
            path,
            message: message.into(),
        });
    }

    /// Encodes a group: from the object at `obj`, or absent (`obj` None): an empty group when
    /// `valid`, a null one otherwise.
    fn group(
        &mut self,
        doc: &Doc,
        plan: &StructPlan,
        cols: &mut StructCols,
        obj: Option<u32>,
        valid: bool,
        resource: Option<&str>,
    ) {
        let Some(obj) = obj else {
            cols.add_rows(1, if valid { Fill::Empty } else { Fill::Null });
            return;
        };
        cols.flush();
        let frame = self.slots.len();
        let nslots = plan.slot_names.len();
        self.slots.resize(frame + nslots, NONE);
        for (key, v) in doc.members(obj) {
            if let Some(s) = plan.keys.get(key) {
                let at = frame + s as usize;
                if self.slots[at] != NONE {
                    self.warn(key, "duplicate key; the first value is kept");
                } else if doc.tok(v) != Tok::Null {
                    if plan.choice_slots(s).any(|c| self.slots[frame + c] != NONE) {
                        self.warn(
                            key,
                            "a second value of one choice element; the first is kept",
                        );
                    } else {
                        self.slots[at] = v;
                    }
                }
            } else if !ignored_key(key, resource.is_some()) {
                self.warn(key, "unknown element ignored");
            }
        }
        let fid = self.fid;
        self.fid += 1;
        if let Some(es) = plan.ext_slot {
            let v = self.slots[frame + es as usize];
            if v != NONE {
                if matches!(doc.tok(v), Tok::Arr(_)) {
                    self.pending_ext.push((fid, v));
                } else {
                    self.warn("extension", "expected an array; ignored");
                }
            }
        }
        for (ci, col) in plan.cols.iter().enumerate() {
            let b = &mut cols.cols[ci];
            match col {
                Col::Prim { slot, prim, list } => {
                    let v = self.slots[frame + *slot as usize];
                    let key = &plan.slot_names[*slot as usize];
                    if *list {
                        self.prim_list(doc, key, *prim, v, b);
                    } else if v == NONE {
                        b.null();
                    } else {
                        self.prim(doc, key, *prim, v, b);
                    }
                }
                Col::Struct {
                    slot,
                    plan: child,
                    list,
                    choice,
                } => {
                    let v = self.slots[frame + *slot as usize];
                    if v == NONE {
                        // Absent: no path or warning needed.
                        match b {
                            ColBuilder::List(l) => {
                                let n = l.last_offset();
                                l.close(n, true);
                            }
                            ColBuilder::Struct(s) => {
                                s.add_rows(1, if *choice { Fill::Null } else { Fill::Empty });
                            }
                            _ => {}
                        }
                        continue;
                    }
                    let key = &plan.slot_names[*slot as usize];
                    let len = self.path.len();
                    self.path.push('.');
                    self.path.push_str(key);
                    if *list {
                        self.struct_list(doc, child, v, b);
                    } else if let ColBuilder::Struct(s) = b {
                        let v = match (v, v != NONE && matches!(doc.tok(v), Tok::Obj(_))) {
                            (NONE, _) => None,
                            (v, true) => Some(v),
                            (_, false) => {
                                self.warn("", "expected an object; stored as absent");
                                None
                            }
                        };
                        self.group(doc, child, s, v, !*choice, None);
                    }
                    self.path.truncate(len);
                }
                Col::Scale { slot, list } => {
                    let v = self.slots[frame + *slot as usize];
                    let one = |doc: &Doc, v: u32, b: &mut ColBuilder| match doc
                        .num(v)
                        .map(values::parse_decimal)
                    {
                        Some(Ok(d)) => b.push_i32(d.scale),
                        _ => b.null(),
                    };
                    derived(doc, v, *list, b, one);
                }
                Col::Versioned { slot, list } => {
                    let v = self.slots[frame + *slot as usize];
                    let one = |doc: &Doc, v: u32, b: &mut ColBuilder| match doc.str(v) {
                        Some(s) => b.push_str(s),
                        None => b.null(),
                    };
                    derived(doc, v, *list, b, one);
                }
                Col::ResourceVersioned { id, meta } => {
                    let id = doc
                        .str(self.slots[frame + *id as usize])
                        .unwrap_or_default();
                    let version = meta
                        .map(|m| self.slots[frame + m as usize])
                        .filter(|m| *m != NONE)
                        .and_then(|m| doc.get(m, "versionId"))
                        .and_then(|v| doc.str(v));
                    if let ColBuilder::Utf8(sb) = b {
                        use std::fmt::Write;
                        let rt = resource.unwrap_or_default();
                        let _ = match version {
                            Some(ver) => write!(sb, "{rt}/{id}/_history/{ver}"),
                            None => write!(sb, "{rt}/{id}"),
                        };
                        sb.append_value("");
                    }
                }
                Col::CanonValue {
                    value,
                    code,
                    system,
                } => {
                    let get = |s: u16| Some(self.slots[frame + s as usize]).filter(|v| *v != NONE);
                    let fields = match (get(*value), get(*code), get(*system)) {
                        (Some(v), Some(c), Some(s)) if doc.str(s) == Some(UCUM) => {
                            match (doc.num(v), doc.str(c)) {
                                (Some(v), Some(c)) => Some(ucum::canonicalize_fields(v, c)),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    let (value, code) = match fields {
                        Some(f) => (f.value, f.code),
                        None => (None, None),
                    };
                    self.canon_code = code;
                    match (value, b) {
                        (Some((unscaled, scale)), ColBuilder::Struct(s)) => {
                            s.flush();
                            s.cols[0].push_i128(unscaled);
                            s.cols[1].push_i32(scale);
                            s.row(true);
                        }
                        (_, b) => b.null(),
                    }
                }
                Col::CanonCode => match self.canon_code.take() {
                    Some(code) => b.push_str(&code),
                    None => b.null(),
                },
                Col::Fid => b.push_i32(fid),
                Col::Extensions { plan: ext } => self.extensions(doc, ext, b),
            }
        }
        cols.row(true);
        self.slots.truncate(frame);
    }

    fn struct_list(&mut self, doc: &Doc, plan: &StructPlan, v: u32, b: &mut ColBuilder) {
        let ColBuilder::List(l) = b else { return };
        if v != NONE {
            if matches!(doc.tok(v), Tok::Arr(_)) {
                if let ColBuilder::Struct(s) = &mut l.child {
                    for item in doc.items(v) {
                        match doc.tok(item) {
                            Tok::Obj(_) => self.group(doc, plan, s, Some(item), true, None),
                            Tok::Null => self.group(doc, plan, s, None, false, None),
                            _ => {
                                self.warn("", "expected an object in the array; stored as null");
                                self.group(doc, plan, s, None, false, None);
                            }
                        }
                    }
                }
            } else {
                self.warn("", "expected an array; stored as empty");
            }
        }
        let n = l.child.len();
        l.close(n, true);
    }

    fn prim_list(&mut self, doc: &Doc, key: &str, prim: Prim, v: u32, b: &mut ColBuilder) {
        let ColBuilder::List(l) = b else { return };
        if v != NONE {
            if matches!(doc.tok(v), Tok::Arr(_)) {
                for item in doc.items(v) {
                    if doc.tok(item) == Tok::Null {
                        // A null paired with a primitive extension (`_given`): keep the position.
                        l.child.null();
                    } else {
                        self.prim(doc, key, prim, item, &mut l.child);
                    }
                }
            } else {
                self.warn(key, "expected an array; stored as empty");
            }
        }
        let n = l.child.len();
        l.close(n, true);
    }

    /// Appends one primitive value, or null with a warning when it is not valid.
    fn prim(&mut self, doc: &Doc, key: &str, prim: Prim, v: u32, b: &mut ColBuilder) {
        let result: Result<(), String> = match prim {
            Prim::Boolean => match doc.tok(v) {
                Tok::Bool(x) => {
                    b.push_bool(x);
                    Ok(())
                }
                _ => Err("expected a boolean".into()),
            },
            Prim::Integer | Prim::UnsignedInt | Prim::PositiveInt => match doc.num(v) {
                Some(t) => match t.parse::<i32>() {
                    Ok(x) if prim == Prim::UnsignedInt && x < 0 => {
                        Err(format!("{t} is not an unsignedInt"))
                    }
                    Ok(x) if prim == Prim::PositiveInt && x < 1 => {
                        Err(format!("{t} is not a positiveInt"))
                    }
                    Ok(x) => {
                        b.push_i32(x);
                        Ok(())
                    }
                    Err(_) => Err(format!("{t} is not a 32-bit integer")),
                },
                None => Err("expected a number".into()),
            },
            Prim::Decimal => match doc.num(v) {
                Some(t) => match values::parse_decimal(t) {
                    Ok(d) => {
                        b.push_i128(d.unscaled);
                        Ok(())
                    }
                    Err(e) => Err(format!("{t}: {e}")),
                },
                None => Err("expected a number".into()),
            },
            _ => match doc.str(v) {
                None => Err("expected a string".into()),
                Some(s) => match prim {
                    Prim::Date => values::check_date(s)
                        .map(|()| b.push_str(s))
                        .map_err(|e| format!("{s:?}: {e}")),
                    Prim::DateTime => values::check_date_time(s)
                        .map(|()| b.push_str(s))
                        .map_err(|e| format!("{s:?}: {e}")),
                    Prim::Time => values::check_time(s)
                        .map(|()| b.push_str(s))
                        .map_err(|e| format!("{s:?}: {e}")),
                    Prim::Instant => match values::parse_instant(s) {
                        Ok(us) => {
                            b.push_i64(us);
                            if us < INSTANT_1900 {
                                self.warn(
                                    key,
                                    format!("{s:?} is before 1900; kept (proleptic Gregorian)"),
                                );
                            }
                            Ok(())
                        }
                        Err(e) => Err(format!("{s:?}: {e}")),
                    },
                    Prim::Base64 => {
                        let mut bytes = std::mem::take(&mut self.bytes);
                        let r = values::decode_base64(s, &mut bytes).map(|()| b.push_bytes(&bytes));
                        self.bytes = bytes;
                        r.map_err(|e| e.to_string())
                    }
                    _ => {
                        b.push_str(s);
                        Ok(())
                    }
                },
            },
        };
        if let Err(message) = result {
            b.null();
            self.warn(key, format!("{message}; stored as null"));
        }
    }

    fn extensions(&mut self, doc: &Doc, plan: &StructPlan, b: &mut ColBuilder) {
        let ColBuilder::Map(m) = b else { return };
        let mut i = 0;
        let saved = std::mem::take(&mut self.path);
        while i < self.pending_ext.len() {
            let (fid, arr) = self.pending_ext[i];
            i += 1;
            m.keys.append_value(fid);
            let l = &mut m.values;
            if let ColBuilder::Struct(s) = &mut l.child {
                self.path.clear();
                self.path.push_str("extension");
                for item in doc.items(arr) {
                    match doc.tok(item) {
                        Tok::Obj(_) => self.group(doc, plan, s, Some(item), true, None),
                        _ => {
                            self.warn("", "expected an extension object; stored as null");
                            self.group(doc, plan, s, None, false, None);
                        }
                    }
                }
            }
            let n = l.child.len();
            l.close(n, true);
        }
        self.path = saved;
        let n = m.keys.len() as i32;
        m.offsets.push(n);
        m.nulls.append(true);
    }
}

/// A column derived from another element's value (`_scale`, `_versioned`): one value per
/// value of the source, null where the source is absent or invalid.
fn derived(
    doc: &Doc,
    v: u32,
    list: bool,
    b: &mut ColBuilder,
    one: impl Fn(&Doc, u32, &mut ColBuilder),
) {
    if !list {
        if v == NONE {
            b.null()
        } else {
            one(doc, v, b)
        }
        return;
    }
    let ColBuilder::List(l) = b else { return };
    if v != NONE && matches!(doc.tok(v), Tok::Arr(_)) {
        for item in doc.items(v) {
            one(doc, item, &mut l.child);
        }
    }
    let n = l.child.len();
    l.close(n, true);
}

/// Keys that are not encoded, silently: primitive extensions (`_birthDate`), `resourceType`,
/// and the elements the encoding leaves out.
fn ignored_key(key: &str, root: bool) -> bool {
    key.starts_with('_')
        || matches!(key, "extension" | "modifierExtension")
        || (root && matches!(key, "resourceType" | "contained"))
}
