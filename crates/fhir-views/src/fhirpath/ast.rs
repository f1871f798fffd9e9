//! The syntax tree of a FHIRPath expression, and its printing back to FHIRPath text.

use std::fmt;

/// An expression node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// `{}`
    Empty,
    Bool(bool),
    Integer(i64),
    /// Decimal literal text, e.g. "1.50".
    Decimal(String),
    String(String),
    /// Date literal text without the `@`, e.g. "2020-01".
    Date(String),
    /// DateTime literal text without the `@` (and without a trailing `T`).
    DateTime(String),
    /// Time literal text without the `@T`, e.g. "12:00".
    Time(String),
    /// `$this`
    This,
    /// `$index`
    Index,
    /// `%name`
    Var(Var),
    /// A member name, navigated from `base` (or from the focus).
    Member(Option<Box<Node>>, String),
    /// A function call on `base` (or on the focus).
    Call(Option<Box<Node>>, Call),
    /// `base[index]`
    Indexer(Box<Node>, Box<Node>),
    /// Unary minus.
    Neg(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    /// `expr is Type` / `expr as Type` (the type name as written).
    TypeOp(TypeOp, Box<Node>, String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Var {
    RowIndex,
    Resource,
    RootResource,
    Const(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Call {
    pub func: Func,
    pub args: Vec<Node>,
    /// The type argument of `ofType`, `getReferenceKey`, `is`, `as`, as written.
    pub ty: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TypeOp {
    Is,
    As,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

impl BinOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::IntDiv => "div",
            BinOp::Mod => "mod",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Concat => "&",
            BinOp::Union => "|",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Equiv => "~",
            BinOp::NotEquiv => "!~",
            BinOp::In => "in",
            BinOp::Contains => "contains",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Implies => "implies",
        }
    }
}

/// How a function's arguments are given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// `min..=max` expression arguments.
    Exprs(usize, usize),
    /// One expression evaluated per input item (`where`, `select`, `all`, `exists`).
    Lambda { optional: bool },
    /// A type name (`ofType(T)`); optional for `getReferenceKey([T])`.
    Type { optional: bool },
}

macro_rules! functions {
    ($($variant:ident $name:literal $args:expr;)*) => {
        /// A known function.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Func { $($variant),* }

        impl Func {
            pub(crate) fn from_name(name: &str) -> Option<Func> {
                match name { $($name => Some(Func::$variant),)* _ => None }
            }
            pub(crate) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name),* }
            }
            pub(crate) fn args(self) -> Args {
                match self { $(Func::$variant => $args),* }
            }
            #[cfg(test)]
            pub(crate) const ALL: &[Func] = &[$(Func::$variant),*];
        }
    };
}

functions! {
    Where "where" Args::Lambda { optional: false };
    Select "select" Args::Lambda { optional: false };
    All "all" Args::Lambda { optional: false };
    Exists "exists" Args::Lambda { optional: true };
    Empty "empty" Args::Exprs(0, 0);
    First "first" Args::Exprs(0, 0);
    Last "last" Args::Exprs(0, 0);
    Tail "tail" Args::Exprs(0, 0);
    Skip "skip" Args::Exprs(1, 1);
    Take "take" Args::Exprs(1, 1);
    Single "single" Args::Exprs(0, 0);
    Count "count" Args::Exprs(0, 0);
    Distinct "distinct" Args::Exprs(0, 0);
    Not "not" Args::Exprs(0, 0);
    HasValue "hasValue" Args::Exprs(0, 0);
    Iif "iif" Args::Exprs(2, 3);
    OfType "ofType" Args::Type { optional: false };
    Extension "extension" Args::Exprs(1, 1);
    Join "join" Args::Exprs(0, 1);
    GetResourceKey "getResourceKey" Args::Exprs(0, 0);
    GetReferenceKey "getReferenceKey" Args::Type { optional: true };
    LowBoundary "lowBoundary" Args::Exprs(0, 1);
    HighBoundary "highBoundary" Args::Exprs(0, 1);
    ToString "toString" Args::Exprs(0, 0);
}

/// Writes an identifier as a delimited (backtick) identifier, which always reparses.
fn write_ident(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    f.write_str("`")?;
    for c in name.chars() {
        write_char_escaped(f, c, '`')?;
    }
    f.write_str("`")
}

fn write_char_escaped(f: &mut fmt::Formatter<'_>, c: char, quote: char) -> fmt::Result {
    match c {
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\u{c}' => f.write_str("\\f"),
        c if c == quote => write!(f, "\\{c}"),
        c if c.is_control() => write!(f, "\\u{:04x}", c as u32),
        c => write!(f, "{c}"),
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Empty => f.write_str("{}"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Integer(i) => write!(f, "{i}"),
            Node::Decimal(d) => f.write_str(d),
            Node::String(s) => {
                f.write_str("'")?;
                for c in s.chars() {
                    write_char_escaped(f, c, '\'')?;
                }
                f.write_str("'")
            }
            Node::Date(d) => write!(f, "@{d}"),
            Node::DateTime(d) if d.contains('T') => write!(f, "@{d}"),
            Node::DateTime(d) => write!(f, "@{d}T"),
            Node::Time(t) => write!(f, "@T{t}"),
            Node::This => f.write_str("$this"),
            Node::Index => f.write_str("$index"),
            Node::Var(Var::RowIndex) => f.write_str("%rowIndex"),
            Node::Var(Var::Resource) => f.write_str("%resource"),
            Node::Var(Var::RootResource) => f.write_str("%rootResource"),
            Node::Var(Var::Const(name)) => {
                f.write_str("%")?;
                write_ident(f, name)
            }
            Node::Member(base, name) => {
                if let Some(base) = base {
                    write!(f, "({base}).")?;
                }
                write_ident(f, name)
            }
            Node::Call(base, call) => {
                if let Some(base) = base {
                    write!(f, "({base}).")?;
                }
                write!(f, "{}(", call.func.name())?;
                if let Some(ty) = &call.ty {
                    f.write_str(ty)?;
                }
                for (i, arg) in call.args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            Node::Indexer(base, index) => write!(f, "({base})[{index}]"),
            Node::Neg(inner) => write!(f, "-({inner})"),
            Node::Binary(op, l, r) => write!(f, "({l}) {} ({r})", op.symbol()),
            Node::TypeOp(op, inner, ty) => {
                let op = if *op == TypeOp::Is { "is" } else { "as" };
                write!(f, "({inner}) {op} {ty}")
            }
        }
    }
}
