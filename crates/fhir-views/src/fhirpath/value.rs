//! FHIRPath values: JSON nodes borrowed from a resource, and values computed by expressions.

use std::borrow::Cow;
use std::fmt;

use fhir_encoder::json::{Doc, Tok};

use super::EvalError;

/// A FHIRPath value.
#[derive(Clone)]
pub enum Item<'a> {
    /// A JSON value in the resource (object, string, number or boolean), with the FHIR type
    /// where known (from a choice key suffix like `valueUuid` → "uuid", or `ofType`).
    Node {
        doc: Doc<'a>,
        at: u32,
        fhir_type: Option<&'static str>,
    },
    Bool(bool),
    Integer(i64),
    /// Exact decimal text, e.g. "1.50".
    Decimal(String),
    String(Cow<'a, str>),
    /// FHIRPath Date as its FHIR text (precision kept), e.g. "2010-10".
    Date(String),
    /// FHIRPath DateTime as its FHIR text, e.g. "2010-10-10T10:00:00Z".
    DateTime(String),
    /// FHIRPath Time as its FHIR text, e.g. "12:34:00".
    Time(String),
}

/// A primitive view of an item, borrowed: what comparison and arithmetic work on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Prim<'s> {
    Bool(bool),
    Int(i64),
    /// Decimal text (also JSON numbers that are not plain integers).
    Dec(&'s str),
    Str(&'s str),
    Date(&'s str),
    DateTime(&'s str),
    Time(&'s str),
    /// An object (or anything without a primitive value).
    Complex,
}

impl<'a> Item<'a> {
    /// The value at tape index `at` of `doc`, type unknown.
    pub fn node(doc: Doc<'a>, at: u32) -> Item<'a> {
        Item::Node {
            doc,
            at,
            fhir_type: None,
        }
    }

    /// Singleton boolean evaluation of a collection: empty → `None`, one boolean → its value;
    /// anything else is an error.
    pub fn to_bool(items: &[Item<'_>]) -> Result<Option<bool>, EvalError> {
        match items {
            [] => Ok(None),
            [one] => one
                .as_bool()
                .map(Some)
                .ok_or_else(|| EvalError::NotBoolean {
                    found: one.describe(),
                }),
            many => Err(EvalError::NotBoolean {
                found: format!("{} items", many.len()),
            }),
        }
    }

    /// The boolean value, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self.prim() {
            Prim::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The integer value, if this is an integer (a JSON number without fraction or exponent).
    pub fn as_i64(&self) -> Option<i64> {
        match self.prim() {
            Prim::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The FHIR string form of a primitive (decimals and dates exactly as written); `None` for
    /// objects.
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        Some(match self.prim() {
            Prim::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
            Prim::Int(i) => match self {
                Item::Node { doc, at, .. } => Cow::Borrowed(doc.num(*at)?),
                _ => Cow::Owned(i.to_string()),
            },
            Prim::Dec(s) | Prim::Str(s) | Prim::Date(s) | Prim::DateTime(s) | Prim::Time(s) => {
                Cow::Borrowed(s)
            }
            Prim::Complex => return None,
        })
    }

    /// The value as JSON: numbers from their exact text, dates and times as strings, objects
    /// as they are in the resource.
    pub fn as_json(&self) -> serde_json::Value {
        match self {
            Item::Node { doc, at, .. } => node_json(doc, *at, 0),
            Item::Bool(b) => serde_json::Value::Bool(*b),
            Item::Integer(i) => serde_json::Value::from(*i),
            Item::Decimal(s) => number_json(s),
            Item::String(s) => serde_json::Value::String(s.to_string()),
            Item::Date(s) | Item::DateTime(s) | Item::Time(s) => {
                serde_json::Value::String(s.clone())
            }
        }
    }

    /// The FHIR type, where known: a node's recorded type, or the System type of a value.
    pub fn fhir_type(&self) -> Option<&'static str> {
        match self {
            Item::Node { fhir_type, .. } => *fhir_type,
            Item::Bool(_) => Some("boolean"),
            Item::Integer(_) => Some("integer"),
            Item::Decimal(_) => Some("decimal"),
            Item::String(_) => Some("string"),
            Item::Date(_) => Some("date"),
            Item::DateTime(_) => Some("dateTime"),
            Item::Time(_) => Some("time"),
        }
    }

    pub(crate) fn prim(&self) -> Prim<'_> {
        match self {
            Item::Node { doc, at, fhir_type } => match doc.toks.get(*at as usize) {
                Some(Tok::Bool(b)) => Prim::Bool(*b),
                Some(Tok::Num(..)) => doc.num(*at).map_or(Prim::Complex, number_prim),
                Some(Tok::Str(..) | Tok::Esc(..)) => {
                    let s = doc.str(*at).unwrap_or("");
                    match *fhir_type {
                        Some("date") => Prim::Date(s),
                        Some("dateTime" | "instant") => Prim::DateTime(s),
                        Some("time") => Prim::Time(s),
                        _ => Prim::Str(s),
                    }
                }
                _ => Prim::Complex,
            },
            Item::Bool(b) => Prim::Bool(*b),
            Item::Integer(i) => Prim::Int(*i),
            Item::Decimal(s) => Prim::Dec(s),
            Item::String(s) => Prim::Str(s),
            Item::Date(s) => Prim::Date(s),
            Item::DateTime(s) => Prim::DateTime(s),
            Item::Time(s) => Prim::Time(s),
        }
    }

    /// Whether this is a JSON object in the resource.
    pub(crate) fn object(&self) -> Option<(Doc<'a>, u32)> {
        match self {
            Item::Node { doc, at, .. }
                if matches!(doc.toks.get(*at as usize), Some(Tok::Obj(_))) =>
            {
                Some((*doc, *at))
            }
            _ => None,
        }
    }

    /// A short description for error messages: the kind and, for primitives, the value.
    pub(crate) fn describe(&self) -> String {
        let kind = match self.prim() {
            Prim::Bool(_) => "Boolean",
            Prim::Int(_) => "Integer",
            Prim::Dec(_) => "Decimal",
            Prim::Str(_) => "String",
            Prim::Date(_) => "Date",
            Prim::DateTime(_) => "DateTime",
            Prim::Time(_) => "Time",
            Prim::Complex => return "an object".to_owned(),
        };
        match self.as_text() {
            Some(t) if t.len() <= 40 => format!("{kind} {t:?}"),
            _ => kind.to_owned(),
        }
    }
}

/// A JSON number's text as an integer when it is one, else as a decimal.
fn number_prim(text: &str) -> Prim<'_> {
    if !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse()
    {
        return Prim::Int(i);
    }
    Prim::Dec(text)
}

fn number_json(text: &str) -> serde_json::Value {
    text.parse::<serde_json::Number>().map_or_else(
        |_| serde_json::Value::String(text.to_owned()),
        serde_json::Value::Number,
    )
}

fn node_json(doc: &Doc<'_>, at: u32, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    // The tape parser already bounds nesting; this guards the recursion regardless.
    if depth > fhir_encoder::json::MAX_DEPTH {
        return Value::Null;
    }
    match doc.toks.get(at as usize) {
        Some(Tok::Bool(b)) => Value::Bool(*b),
        Some(Tok::Num(..)) => doc.num(at).map_or(Value::Null, number_json),
        Some(Tok::Str(..) | Tok::Esc(..)) => Value::String(doc.str(at).unwrap_or("").to_owned()),
        Some(Tok::Arr(_)) => Value::Array(
            doc.items(at)
                .map(|i| node_json(doc, i, depth + 1))
                .collect(),
        ),
        Some(Tok::Obj(_)) => Value::Object(
            doc.members(at)
                .map(|(k, v)| (k.to_owned(), node_json(doc, v, depth + 1)))
                .collect(),
        ),
        Some(Tok::Null) | None => Value::Null,
    }
}

impl fmt::Debug for Item<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Node { at, fhir_type, .. } => f
                .debug_struct("Node")
                .field("at", at)
                .field("fhir_type", fhir_type)
                .field("value", &self.as_json())
                .finish(),
            Item::Bool(b) => write!(f, "Bool({b})"),
            Item::Integer(i) => write!(f, "Integer({i})"),
            Item::Decimal(s) => write!(f, "Decimal({s})"),
            Item::String(s) => write!(f, "String({s:?})"),
            Item::Date(s) => write!(f, "Date({s})"),
            Item::DateTime(s) => write!(f, "DateTime({s})"),
            Item::Time(s) => write!(f, "Time({s})"),
        }
    }
}
