//! The FHIRPath subset that SQL on FHIR views use, evaluated over resources held as JSON tapes.
//!
//! An expression is parsed once per view ([`Expr::parse`]), then evaluated per resource
//! ([`evaluate`]). Values that come from the resource ([`Item::Node`]) borrow its tape, so
//! navigation allocates only the output collections.

mod ast;
mod boundary;
mod compare;
mod constants;
mod decimal;
mod eval;
mod functions;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;
mod types;
mod value;

pub use constants::{ConstantError, Constants};
pub use value::Item;

/// A parsed FHIRPath expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: ast::Node,
}

impl Expr {
    /// Parses `text`; `constants` says which `%name`s the view defines (an unknown `%name` is a
    /// parse error; `%rowIndex`, `%resource` and `%rootResource` are always known).
    pub fn parse(text: &str, constants: &dyn Fn(&str) -> bool) -> Result<Expr, ParseError> {
        parser::parse(text, constants).map(|root| Expr { root })
    }
}

/// Prints the expression back as FHIRPath text (fully parenthesised) that parses to an equal
/// expression.
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.root.fmt(f)
    }
}

/// Why a FHIRPath expression did not parse; `offset` counts characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {offset})")]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

/// What an expression is evaluated against.
pub struct Env<'e, 'a> {
    /// `%resource` / `%rootResource`.
    pub resource: &'e Item<'a>,
    /// The view's constants (`%name`).
    pub constants: &'e Constants,
    /// `%rowIndex`.
    pub row_index: i64,
}

/// Evaluates `expr` with `focus` as the input collection; returns the output collection.
pub fn evaluate<'a>(
    expr: &Expr,
    focus: &[Item<'a>],
    env: &Env<'_, 'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    eval::evaluate(&expr.root, focus, env)
}

/// Why an evaluation failed (the data or the expression's use of it does not fit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A boolean was needed but the collection held something else.
    #[error("expected a single boolean, found {found}")]
    NotBoolean { found: String },
    /// An operand or argument that must be a single item held several.
    #[error("{context} expects a single item, found {count}")]
    NotSingleton { context: String, count: usize },
    /// An operator applied to values it does not work on.
    #[error("'{op}' cannot be applied to {left} and {right}")]
    Operands {
        op: &'static str,
        left: String,
        right: String,
    },
    /// A function given an input or argument it does not work on.
    #[error("{function}(): {message}")]
    Function {
        function: &'static str,
        message: String,
    },
    /// A number outside the range FHIRPath arithmetic can hold.
    #[error("arithmetic overflow in '{op}'")]
    Overflow { op: &'static str },
}
