//! Evaluation of the syntax tree: navigation, literals, variables, indexers and operators.
//! Functions are in [`super::functions`].

use std::borrow::Cow;
use std::cmp::Ordering;

use fhir_encoder::json::Tok;

use super::ast::{BinOp, Node, TypeOp, Var};
use super::compare::compare;
use super::decimal::Dec;
use super::functions;
use super::types;
use super::value::Prim;
use super::{Env, EvalError, Item};

/// `$this` and `$index` inside a function argument (`where`, `select`, ...).
#[derive(Clone, Copy, Default)]
pub(crate) struct Scope<'s, 'a> {
    pub this: Option<&'s Item<'a>>,
    pub index: Option<i64>,
}

pub(crate) fn evaluate<'a>(
    node: &Node,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    eval(node, focus, Scope::default(), env)
}

pub(crate) fn eval<'a>(
    node: &Node,
    focus: &[Item<'a>],
    scope: Scope<'_, 'a>,
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    Ok(match node {
        Node::Empty => Vec::new(),
        Node::Bool(b) => vec![Item::Bool(*b)],
        Node::Integer(i) => vec![Item::Integer(*i)],
        Node::Decimal(d) => vec![Item::Decimal(d.clone())],
        Node::String(s) => vec![Item::String(Cow::Owned(s.clone()))],
        Node::Date(d) => vec![Item::Date(d.clone())],
        Node::DateTime(d) => vec![Item::DateTime(d.clone())],
        Node::Time(t) => vec![Item::Time(t.clone())],
        Node::This => match scope.this {
            Some(this) => vec![this.clone()],
            None => focus.to_vec(),
        },
        Node::Index => scope.index.map(Item::Integer).into_iter().collect(),
        Node::Var(var) => match var {
            Var::RowIndex => vec![Item::Integer(env.row_index)],
            Var::Resource | Var::RootResource => vec![env.resource.clone()],
            Var::Const(name) => env.constants.get(name).cloned().into_iter().collect(),
        },
        Node::Member(base, name) => {
            let input = input(base.as_deref(), focus, scope, env)?;
            let mut out = Vec::new();
            for item in &input {
                member(item, name, &mut out);
            }
            out
        }
        Node::Call(base, call) => {
            let input = input(base.as_deref(), focus, scope, env)?;
            functions::call(call, input, focus, scope, env)?
        }
        Node::Indexer(base, index) => {
            let items = eval(base, focus, scope, env)?;
            let index = eval(index, focus, scope, env)?;
            match single(&index, "the indexer []")? {
                None => Vec::new(),
                Some(i) => {
                    let i = i.as_i64().ok_or_else(|| EvalError::Operands {
                        op: "[]",
                        left: "a collection".to_owned(),
                        right: i.describe(),
                    })?;
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| items.into_iter().nth(i))
                        .into_iter()
                        .collect()
                }
            }
        }
        Node::Neg(inner) => {
            let items = eval(inner, focus, scope, env)?;
            match single(&items, "unary '-'")? {
                None => Vec::new(),
                Some(item) => vec![negate(item)?],
            }
        }
        Node::Binary(op, l, r) => binary(*op, l, r, focus, scope, env)?,
        Node::TypeOp(op, inner, ty) => {
            let items = eval(inner, focus, scope, env)?;
            let context = if *op == TypeOp::Is { "'is'" } else { "'as'" };
            match single(&items, context)? {
                None => Vec::new(),
                Some(item) => {
                    let matched = of_type(item, ty);
                    match op {
                        TypeOp::Is => vec![Item::Bool(matched.is_some())],
                        TypeOp::As => matched.into_iter().collect(),
                    }
                }
            }
        }
    })
}

fn input<'a>(
    base: Option<&Node>,
    focus: &[Item<'a>],
    scope: Scope<'_, 'a>,
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    match base {
        Some(base) => eval(base, focus, scope, env),
        None => Ok(focus.to_vec()),
    }
}

/// The one item of a collection, `None` when empty; several is an error.
pub(crate) fn single<'i, 'a>(
    items: &'i [Item<'a>],
    context: &str,
) -> Result<Option<&'i Item<'a>>, EvalError> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(EvalError::NotSingleton {
            context: context.to_owned(),
            count: many.len(),
        }),
    }
}

/// The children of `item` named `name`: an element (each item of an array), a choice
/// element (`value` finds `valueQuantity`, typed `Quantity`), or the resource itself when
/// `name` is its type (`Patient.name`).
pub(crate) fn member<'a>(item: &Item<'a>, name: &str, out: &mut Vec<Item<'a>>) {
    let Some((doc, at)) = item.object() else {
        return;
    };
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        if doc.get(at, "resourceType").and_then(|t| doc.str(t)) == Some(name) {
            out.push(item.clone());
        }
        return;
    }
    let push = |v: u32, fhir_type: Option<&'static str>, out: &mut Vec<Item<'a>>| match doc.tok(v) {
        Tok::Arr(_) => out.extend(
            doc.items(v)
                .filter(|i| doc.tok(*i) != Tok::Null)
                .map(|at| Item::Node { doc, at, fhir_type }),
        ),
        Tok::Null => {}
        _ => out.push(Item::Node {
            doc,
            at: v,
            fhir_type,
        }),
    };
    if let Some(v) = doc.get(at, name) {
        push(v, None, out);
        return;
    }
    for (key, v) in doc.members(at) {
        if let Some(t) = key.strip_prefix(name).and_then(types::from_suffix) {
            push(v, Some(t), out);
        }
    }
}

/// `item` as type `ty` (with that type recorded), or `None` if it is not of that type.
pub(crate) fn of_type<'a>(item: &Item<'a>, ty: &str) -> Option<Item<'a>> {
    let wanted = types::canonical(ty)?;
    let matches = match item {
        Item::Node { doc, at, fhir_type } => match fhir_type {
            Some(t) => *t == wanted || system_of(t) == Some(wanted),
            None => match doc.tok(*at) {
                Tok::Obj(_) => {
                    doc.get(*at, "resourceType").and_then(|t| doc.str(t)) == Some(wanted)
                }
                _ => {
                    let inferred = match item.prim() {
                        Prim::Bool(_) => "boolean",
                        Prim::Int(_) => "integer",
                        Prim::Dec(_) => "decimal",
                        _ => "string",
                    };
                    inferred == wanted || system_of(inferred) == Some(wanted)
                }
            },
        },
        other => other
            .fhir_type()
            .is_some_and(|t| t == wanted || system_of(t) == Some(wanted)),
    };
    if !matches {
        return None;
    }
    Some(match item {
        Item::Node {
            doc,
            at,
            fhir_type: None,
        } if types::is_primitive(wanted) => Item::Node {
            doc: *doc,
            at: *at,
            fhir_type: Some(wanted),
        },
        other => other.clone(),
    })
}

/// The FHIRPath System type of a FHIR primitive type.
fn system_of(fhir_type: &str) -> Option<&'static str> {
    Some(match fhir_type {
        "boolean" => "Boolean",
        "integer" | "positiveInt" | "unsignedInt" | "integer64" => "Integer",
        "decimal" => "Decimal",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        "Quantity" => "Quantity",
        t if types::is_string_like(t) => "String",
        _ => return None,
    })
}

fn negate<'a>(item: &Item<'a>) -> Result<Item<'a>, EvalError> {
    match item.prim() {
        Prim::Int(i) => i
            .checked_neg()
            .map(Item::Integer)
            .ok_or(EvalError::Overflow { op: "-" }),
        Prim::Dec(d) => {
            let d = Dec::parse(d).ok_or(EvalError::Overflow { op: "-" })?;
            Ok(Item::Decimal(Dec { mant: -d.mant, ..d }.to_string()))
        }
        _ => Err(EvalError::Operands {
            op: "-",
            left: String::new(),
            right: item.describe(),
        }),
    }
}

fn binary<'a>(
    op: BinOp,
    l: &Node,
    r: &Node,
    focus: &[Item<'a>],
    scope: Scope<'_, 'a>,
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    let left = eval(l, focus, scope, env)?;
    // `implies` and `or`/`and` could skip the right side; evaluating it keeps errors visible.
    let right = eval(r, focus, scope, env)?;
    let one = |b: Option<bool>| b.map(Item::Bool).into_iter().collect::<Vec<_>>();
    Ok(match op {
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
            let (a, b) = (Item::to_bool(&left)?, Item::to_bool(&right)?);
            one(match op {
                BinOp::And => match (a, b) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                BinOp::Or => match (a, b) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
                BinOp::Xor => a.zip(b).map(|(a, b)| a != b),
                _ => match (a, b) {
                    (Some(false), _) | (_, Some(true)) => Some(true),
                    (Some(true), b) => b,
                    (None, _) => None,
                },
            })
        }
        BinOp::Eq => one(equal(&left, &right)),
        BinOp::Ne => one(equal(&left, &right).map(|e| !e)),
        BinOp::Equiv => vec![Item::Bool(equivalent(&left, &right))],
        BinOp::NotEquiv => vec![Item::Bool(!equivalent(&left, &right))],
        BinOp::Union => {
            let mut out: Vec<Item<'a>> = Vec::new();
            for item in left.into_iter().chain(right) {
                if !out.iter().any(|o| item_equal(o, &item) == Some(true)) {
                    out.push(item);
                }
            }
            out
        }
        BinOp::In | BinOp::Contains => {
            let (needle, haystack) = if op == BinOp::In {
                (&left, &right)
            } else {
                (&right, &left)
            };
            match single(needle, op.symbol())? {
                None => Vec::new(),
                Some(n) => vec![Item::Bool(
                    haystack.iter().any(|h| item_equal(n, h) == Some(true)),
                )],
            }
        }
        BinOp::Concat => {
            let text = |items: &[Item<'a>]| -> Result<String, EvalError> {
                Ok(single(items, "'&'")?
                    .and_then(|i| i.as_text().map(|t| t.into_owned()))
                    .unwrap_or_default())
            };
            vec![Item::String(Cow::Owned(text(&left)? + &text(&right)?))]
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let context = op.symbol();
            match (single(&left, context)?, single(&right, context)?) {
                (Some(a), Some(b)) => {
                    let ord = compare(a.prim(), b.prim()).ok_or_else(|| operands(op, a, b))?;
                    one(ord.map(|o| match op {
                        BinOp::Lt => o == Ordering::Less,
                        BinOp::Gt => o == Ordering::Greater,
                        BinOp::Le => o != Ordering::Greater,
                        _ => o != Ordering::Less,
                    }))
                }
                _ => Vec::new(),
            }
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
            let context = op.symbol();
            match (single(&left, context)?, single(&right, context)?) {
                (Some(a), Some(b)) => arithmetic(op, a, b)?.into_iter().collect(),
                _ => Vec::new(),
            }
        }
    })
}

fn operands(op: BinOp, a: &Item<'_>, b: &Item<'_>) -> EvalError {
    EvalError::Operands {
        op: op.symbol(),
        left: a.describe(),
        right: b.describe(),
    }
}

/// `a op b` for numbers (and `+` for strings); `None` where FHIRPath gives empty (division
/// by zero).
fn arithmetic<'a>(op: BinOp, a: &Item<'a>, b: &Item<'a>) -> Result<Option<Item<'a>>, EvalError> {
    let overflow = EvalError::Overflow { op: op.symbol() };
    match (a.prim(), b.prim()) {
        (Prim::Str(x), Prim::Str(y)) if op == BinOp::Add => {
            Ok(Some(Item::String(Cow::Owned(format!("{x}{y}")))))
        }
        (Prim::Int(x), Prim::Int(y)) if op != BinOp::Div => Ok(match op {
            BinOp::Add => Some(Item::Integer(x.checked_add(y).ok_or(overflow)?)),
            BinOp::Sub => Some(Item::Integer(x.checked_sub(y).ok_or(overflow)?)),
            BinOp::Mul => Some(Item::Integer(x.checked_mul(y).ok_or(overflow)?)),
            BinOp::IntDiv if y == 0 => None,
            BinOp::IntDiv => Some(Item::Integer(x.checked_div(y).ok_or(overflow)?)),
            _ if y == 0 => None,
            _ => Some(Item::Integer(x.checked_rem(y).ok_or(overflow)?)),
        }),
        (Prim::Int(_) | Prim::Dec(_), Prim::Int(_) | Prim::Dec(_)) => {
            let num = |p: Prim<'_>| match p {
                Prim::Int(i) => Some(Dec::from_i64(i)),
                Prim::Dec(s) => Dec::parse(s),
                _ => None,
            };
            let (x, y) = (
                num(a.prim()).ok_or(overflow.clone())?,
                num(b.prim()).ok_or(overflow.clone())?,
            );
            let dec = |d: Option<Dec>| d.map(|d| Item::Decimal(d.to_string()));
            match op {
                BinOp::Add => Ok(dec(Some(x.add(y).ok_or(overflow)?))),
                BinOp::Sub => Ok(dec(Some(x.sub(y).ok_or(overflow)?))),
                BinOp::Mul => Ok(dec(Some(x.mul(y).ok_or(overflow)?))),
                BinOp::Div => Ok(dec(x.div(y).ok_or(overflow)?)),
                BinOp::Mod => Ok(dec(x.modulo(y).ok_or(overflow)?)),
                _ => {
                    let q = x.int_div(y).ok_or(overflow.clone())?;
                    q.map(|q| i64::try_from(q).map(Item::Integer).map_err(|_| overflow))
                        .transpose()
                }
            }
        }
        _ => Err(operands(op, a, b)),
    }
}

/// FHIRPath `=` on collections: empty if either is empty or a comparison is unknown.
fn equal(left: &[Item<'_>], right: &[Item<'_>]) -> Option<bool> {
    if left.is_empty() || right.is_empty() {
        return None;
    }
    if left.len() != right.len() {
        return Some(false);
    }
    let mut result = Some(true);
    for (a, b) in left.iter().zip(right) {
        match item_equal(a, b) {
            Some(true) => {}
            Some(false) => return Some(false),
            None => result = None,
        }
    }
    result
}

/// `=` of two items: primitives by value (dates by precision: `None` when unknown), objects
/// by their JSON.
pub(crate) fn item_equal(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (a.prim(), b.prim()) {
        (Prim::Complex, Prim::Complex) => Some(a.as_json() == b.as_json()),
        (x, y) => match compare(x, y) {
            Some(Some(o)) => Some(o == Ordering::Equal),
            Some(None) => None,
            None => Some(false),
        },
    }
}

/// FHIRPath `~`: both empty is true; strings ignore case and runs of white space; dates of
/// different precision are not equivalent.
fn equivalent(left: &[Item<'_>], right: &[Item<'_>]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let one = |a: &Item<'_>, b: &Item<'_>| match (a.prim(), b.prim()) {
        (Prim::Str(x), Prim::Str(y)) => norm(x) == norm(y),
        _ => item_equal(a, b) == Some(true),
    };
    // Order does not matter for equivalence of collections.
    left.iter().all(|a| right.iter().any(|b| one(a, b)))
}
