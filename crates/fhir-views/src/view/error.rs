//! Errors of the view layer: a view that cannot be read ([`ViewError`], naming the offending
//! element) and a resource whose rows cannot be made ([`RowError`], naming the column and the
//! resource).
use crate::fhirpath::{EvalError, ParseError};

/// Why a ViewDefinition was refused. `path` names the element, e.g.
/// `select[1].unionAll[0].column[2].name` (empty for the view as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ViewError {
    pub path: String,
    pub kind: ViewErrorKind,
}

impl ViewError {
    pub(crate) fn new(path: impl Into<String>, kind: ViewErrorKind) -> Self {
        ViewError {
            path: path.into(),
            kind,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewErrorKind {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("is required")]
    Missing,
    #[error("must be {expected}")]
    WrongType { expected: &'static str },
    #[error("must not be empty")]
    Empty,
    #[error("'{0}' is not a FHIR resource type")]
    UnknownResource(String),
    #[error("'{0}' is not a valid name (a letter, then letters, digits or '_')")]
    InvalidName(String),
    #[error("unknown element '{0}'")]
    UnknownElement(String),
    #[error("a view of {expected} cannot read a '{found}' resource")]
    NotAViewDefinition {
        expected: &'static str,
        found: String,
    },
    #[error("column '{name}' is already defined (at {first})")]
    DuplicateColumn { name: String, first: String },
    #[error("constant '{0}' is already defined")]
    DuplicateConstant(String),
    #[error("has no value[x]")]
    ConstantWithoutValue,
    #[error("has several value[x] ({0})")]
    ConstantWithSeveralValues(String),
    #[error("constant: {0}")]
    Constant(String),
    #[error("at most one of forEach, forEachOrNull and repeat may be given (found {0})")]
    SeveralIterations(String),
    #[error("unionAll branches must have the same columns in the same order ({first} vs {other})")]
    UnionColumns { first: String, other: String },
    #[error("unionAll branches give column '{name}' different types ({first} vs {other})")]
    UnionTypes {
        name: String,
        first: String,
        other: String,
    },
    #[error("unsupported ansi/type '{0}'")]
    UnsupportedAnsiType(String),
    #[error("invalid FHIRPath '{text}': {error}")]
    Expression { text: String, error: ParseError },
}

/// Why a resource's rows could not be made (the resource, not the view, is at fault, or the
/// view asks something of it that it does not hold).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("resource {}: {at}: {error}", id_text(.resource_id))]
    Eval {
        resource_id: Option<String>,
        /// The element of the view whose expression failed, e.g. `select[0].forEach`.
        at: String,
        error: EvalError,
    },
    #[error("resource {}: {at}: where must give a boolean: {error}", id_text(.resource_id))]
    WhereNotBoolean {
        resource_id: Option<String>,
        at: String,
        error: EvalError,
    },
    #[error(
        "resource {}: column '{column}' found {count} values but is not a collection",
        id_text(.resource_id)
    )]
    SeveralValues {
        resource_id: Option<String>,
        column: String,
        count: usize,
    },
    #[error("resource {}: {at}: repeat nests deeper than {limit} levels", id_text(.resource_id))]
    RepeatTooDeep {
        resource_id: Option<String>,
        at: String,
        limit: usize,
    },
    #[error("resource {}: column '{column}': {message}", id_text(.resource_id))]
    Value {
        resource_id: Option<String>,
        column: String,
        message: String,
    },
    #[error("a row of {found} cells does not fit a view of {expected} columns")]
    Width { expected: usize, found: usize },
    #[error("a batch cannot hold more than {0} collection items in one column")]
    BatchFull(usize),
}

fn id_text(id: &Option<String>) -> String {
    match id {
        Some(id) => format!("'{id}'"),
        None => "(no id)".to_owned(),
    }
}
