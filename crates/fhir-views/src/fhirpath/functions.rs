//! The functions views use: filtering and projection, subsetting, existence, `iif`,
//! `ofType`, `extension`, `join`, the resource and reference keys, boundaries and `toString`.

use std::borrow::Cow;

use super::ast::{Call, Func};
use super::boundary;
use super::eval::{Scope, eval, item_equal, of_type, single};
use super::value::Prim;
use super::{Env, EvalError, Item};

pub(crate) fn call<'a>(
    call: &Call,
    input: Vec<Item<'a>>,
    _focus: &[Item<'a>],
    scope: Scope<'_, 'a>,
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    let name = call.func.name();
    let fail = |message: String| EvalError::Function {
        function: name,
        message,
    };
    // An expression argument, evaluated against the function's input.
    let arg = |i: usize| -> Result<Vec<Item<'a>>, EvalError> {
        match call.args.get(i) {
            None => Ok(Vec::new()),
            Some(node) => {
                let this = match input.as_slice() {
                    [one] => Some(one),
                    _ => scope.this,
                };
                eval(node, &input, Scope { this, ..scope }, env)
            }
        }
    };
    let integer_arg = |i: usize| -> Result<i64, EvalError> {
        let items = arg(i)?;
        single(&items, name)?
            .and_then(Item::as_i64)
            .ok_or_else(|| fail("expects an integer argument".to_owned()))
    };
    // A lambda argument, evaluated per input item with `$this` and `$index` set.
    let per_item = |item: &Item<'a>, index: usize| -> Result<Vec<Item<'a>>, EvalError> {
        let node = &call.args[0];
        let scope = Scope {
            this: Some(item),
            index: i64::try_from(index).ok(),
        };
        eval(node, std::slice::from_ref(item), scope, env)
    };
    let criterion = |item: &Item<'a>, index: usize| -> Result<Option<bool>, EvalError> {
        Item::to_bool(&per_item(item, index)?)
    };
    let boolean = |b: bool| vec![Item::Bool(b)];

    Ok(match call.func {
        Func::Where => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                if criterion(item, i)? == Some(true) {
                    out.push(item.clone());
                }
            }
            out
        }
        Func::Select => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(per_item(item, i)?);
            }
            out
        }
        Func::All => {
            let mut all = true;
            for (i, item) in input.iter().enumerate() {
                all &= criterion(item, i)? == Some(true);
            }
            boolean(all)
        }
        Func::Exists if call.args.is_empty() => boolean(!input.is_empty()),
        Func::Exists => {
            let mut any = false;
            for (i, item) in input.iter().enumerate() {
                any |= criterion(item, i)? == Some(true);
            }
            boolean(any)
        }
        Func::Empty => boolean(input.is_empty()),
        Func::First => input.into_iter().take(1).collect(),
        Func::Last => input.into_iter().last().into_iter().collect(),
        Func::Tail => input.into_iter().skip(1).collect(),
        Func::Skip => {
            let n = usize::try_from(integer_arg(0)?.max(0)).unwrap_or(usize::MAX);
            input.into_iter().skip(n).collect()
        }
        Func::Take => {
            let n = usize::try_from(integer_arg(0)?.max(0)).unwrap_or(usize::MAX);
            input.into_iter().take(n).collect()
        }
        Func::Single => match input.len() {
            0 | 1 => input,
            n => return Err(fail(format!("expects at most one item, found {n}"))),
        },
        Func::Count => vec![Item::Integer(
            i64::try_from(input.len()).unwrap_or(i64::MAX),
        )],
        Func::Distinct => {
            let mut out: Vec<Item<'a>> = Vec::new();
            for item in input {
                if !out.iter().any(|o| item_equal(o, &item) == Some(true)) {
                    out.push(item);
                }
            }
            out
        }
        Func::Not => Item::to_bool(&input)?
            .map(|b| Item::Bool(!b))
            .into_iter()
            .collect(),
        Func::HasValue => boolean(matches!(input.as_slice(), [one] if one.prim() != Prim::Complex)),
        Func::Iif => {
            let condition = Item::to_bool(&arg(0)?)?;
            if condition == Some(true) {
                arg(1)?
            } else {
                arg(2)?
            }
        }
        Func::OfType => {
            let ty = call.ty.as_deref().unwrap_or_default();
            input.iter().filter_map(|i| of_type(i, ty)).collect()
        }
        Func::Extension => {
            let url = arg(0)?;
            let url = single(&url, name)?
                .and_then(|u| u.as_text().map(Cow::into_owned))
                .ok_or_else(|| fail("expects a url".to_owned()))?;
            let mut out = Vec::new();
            for item in &input {
                let mut extensions = Vec::new();
                super::eval::member(item, "extension", &mut extensions);
                out.extend(extensions.into_iter().filter(|e| {
                    let mut u = Vec::new();
                    super::eval::member(e, "url", &mut u);
                    matches!(u.as_slice(), [u] if u.as_text().as_deref() == Some(url.as_str()))
                }));
            }
            out
        }
        Func::Join => {
            if input.is_empty() {
                return Ok(Vec::new());
            }
            let separator = arg(0)?;
            let separator = single(&separator, name)?
                .and_then(|s| s.as_text().map(Cow::into_owned))
                .unwrap_or_default();
            let mut parts = Vec::with_capacity(input.len());
            for item in &input {
                parts.push(
                    item.as_text()
                        .ok_or_else(|| fail(format!("expects strings, found {}", item.describe())))?
                        .into_owned(),
                );
            }
            vec![Item::String(Cow::Owned(parts.join(&separator)))]
        }
        Func::GetResourceKey => {
            let mut out = Vec::new();
            for item in &input {
                if let Some((doc, at)) = item.object()
                    && let Some(id) = doc.get(at, "id").and_then(|i| doc.str(i))
                {
                    out.push(Item::String(Cow::Borrowed(id)));
                }
            }
            out
        }
        Func::GetReferenceKey => {
            let mut out = Vec::new();
            for item in &input {
                let Some((doc, at)) = item.object() else {
                    continue;
                };
                let Some(reference) = doc.get(at, "reference").and_then(|r| doc.str(r)) else {
                    continue;
                };
                if let Some((ty, id)) = reference_parts(reference)
                    && call.ty.as_deref().is_none_or(|want| want == ty)
                {
                    out.push(Item::String(Cow::Borrowed(id)));
                }
            }
            out
        }
        Func::LowBoundary | Func::HighBoundary => {
            let precision = if call.args.is_empty() {
                None
            } else {
                Some(integer_arg(0)?)
            };
            let high = call.func == Func::HighBoundary;
            match single(&input, name)? {
                None => Vec::new(),
                Some(item) => boundary::boundary(item, precision, high)?
                    .into_iter()
                    .collect(),
            }
        }
        Func::ToString => match single(&input, name)? {
            None => Vec::new(),
            Some(item) => item
                .as_text()
                .map(|t| Item::String(Cow::Owned(t.into_owned())))
                .into_iter()
                .collect(),
        },
    })
}

/// A literal reference's type and id: `Patient/123`, `Patient/123/_history/2`, or an absolute
/// URL ending in `Patient/123`. Contained (`#id`) and other references have none.
fn reference_parts(reference: &str) -> Option<(&str, &str)> {
    let path = reference.split(['?', '#']).next().unwrap_or_default();
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let (ty, id) = match parts.as_slice() {
        [.., ty, id] => (*ty, *id),
        _ => return None,
    };
    let is_type = ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric());
    (is_type && !id.is_empty()).then_some((ty, id))
}

#[cfg(test)]
mod tests {
    use super::reference_parts;

    #[test]
    fn reference_keys() {
        assert_eq!(reference_parts("Patient/p1"), Some(("Patient", "p1")));
        assert_eq!(
            reference_parts("http://myapp.com/prefix/Organization/o2"),
            Some(("Organization", "o2"))
        );
        assert_eq!(
            reference_parts("Patient/p1/_history/3"),
            Some(("Patient", "p1"))
        );
        assert_eq!(reference_parts("#contained"), None);
        assert_eq!(reference_parts("urn:uuid:1234"), None);
        assert_eq!(reference_parts("p1"), None);
    }
}
