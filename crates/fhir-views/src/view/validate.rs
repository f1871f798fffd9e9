//! Rules a view must obey beyond the shape of its JSON: names, the resource type, one
//! iteration per select, and the output columns (no duplicates; unionAll branches alike).
use std::collections::HashMap;

use super::definition::Select;
use super::error::{ViewError, ViewErrorKind};
use super::schema::Column;

/// The spec's `sql-name`: `^[A-Za-z][A-Za-z0-9_]*$`.
pub(crate) fn check_name(name: &str, path: &str) -> Result<(), ViewError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ViewError::new(
            path,
            ViewErrorKind::InvalidName(name.to_owned()),
        ))
    }
}

/// A FHIR resource type name: an upper-case letter, then letters (`Patient`, `ClaimResponse`).
pub(crate) fn check_resource_type(resource: &str, path: &str) -> Result<(), ViewError> {
    if resource.is_empty() {
        return Err(ViewError::new(path, ViewErrorKind::Empty));
    }
    let mut chars = resource.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ViewError::new(
            path,
            ViewErrorKind::UnknownResource(resource.to_owned()),
        ))
    }
}

/// At most one of forEach, forEachOrNull and repeat (`sql-expressions`).
pub(crate) fn check_one_iteration(given: &[&str], path: &str) -> Result<(), ViewError> {
    if given.len() > 1 {
        return Err(ViewError::new(
            path,
            ViewErrorKind::SeveralIterations(given.join(", ")),
        ));
    }
    Ok(())
}

/// The view's output columns in the spec's order: for each select, its own columns, then its
/// nested selects' columns, then its unionAll's (one branch's; every branch must match it).
/// A name given twice is refused, naming both places.
pub(crate) fn output_columns(selects: &[Select]) -> Result<Vec<Column>, ViewError> {
    let mut out = Vec::new();
    for s in selects {
        select_columns(s, &mut out)?;
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (column, at) in &out {
        if let Some(first) = seen.insert(&column.name, at) {
            return Err(ViewError::new(
                format!("{at}.name"),
                ViewErrorKind::DuplicateColumn {
                    name: column.name.clone(),
                    first: first.to_owned(),
                },
            ));
        }
    }
    Ok(out.into_iter().map(|(c, _)| c).collect())
}

/// Appends a select's columns, each with the path of the element that defines it.
fn select_columns(s: &Select, out: &mut Vec<(Column, String)>) -> Result<(), ViewError> {
    for c in &s.columns {
        out.push((c.column.clone(), c.at.clone()));
    }
    for nested in &s.selects {
        select_columns(nested, out)?;
    }
    let mut first: Option<Vec<(Column, String)>> = None;
    for branch in &s.union_all {
        let mut columns = Vec::new();
        select_columns(branch, &mut columns)?;
        match &first {
            None => first = Some(columns),
            Some(first) => check_branch(first, &columns, &branch.at)?,
        }
    }
    out.extend(first.unwrap_or_default());
    Ok(())
}

/// A unionAll branch must give the same column names, in the same order, of the same types.
fn check_branch(
    first: &[(Column, String)],
    other: &[(Column, String)],
    at: &str,
) -> Result<(), ViewError> {
    let names = |cs: &[(Column, String)]| {
        let names: Vec<&str> = cs.iter().map(|(c, _)| c.name.as_str()).collect();
        format!("[{}]", names.join(", "))
    };
    if first.len() != other.len() || first.iter().zip(other).any(|(a, b)| a.0.name != b.0.name) {
        return Err(ViewError::new(
            at,
            ViewErrorKind::UnionColumns {
                first: names(first),
                other: names(other),
            },
        ));
    }
    for ((a, _), (b, b_at)) in first.iter().zip(other) {
        if a.data_type() != b.data_type() {
            return Err(ViewError::new(
                b_at.clone(),
                ViewErrorKind::UnionTypes {
                    name: a.name.clone(),
                    first: a.data_type().to_string(),
                    other: b.data_type().to_string(),
                },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names() {
        for ok in ["a", "A1", "patient_id", "x_"] {
            assert!(check_name(ok, "name").is_ok(), "{ok}");
        }
        for bad in ["", "1a", "_a", "a-b", "a b", "é"] {
            let e = check_name(bad, "select[0].column[1].name").expect_err(bad);
            assert_eq!(e.path, "select[0].column[1].name");
        }
    }

    #[test]
    fn resource_types() {
        assert!(check_resource_type("Patient", "resource").is_ok());
        assert!(check_resource_type("ClaimResponse", "resource").is_ok());
        for bad in ["", "patient", "Patient/1", "Pat ient"] {
            assert!(check_resource_type(bad, "resource").is_err(), "{bad}");
        }
    }
}
