//! A Pratt parser from tokens to the syntax tree; names of functions and constants are
//! checked here so that a view with a typo is refused when it is read.

use super::ParseError;
use super::ast::{Args, BinOp, Call, Func, Node, TypeOp, Var};
use super::lexer::{Tok, Token, lex};

/// Deeper nesting is refused (it would only serve to exhaust the stack).
const MAX_DEPTH: usize = 100;
/// Binding power of unary minus/plus; postfix `.` and `[]` bind tighter than any operator.
const UNARY_BP: u8 = 11;

pub(crate) fn parse(text: &str, constants: &dyn Fn(&str) -> bool) -> Result<Node, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser {
        toks,
        pos: 0,
        constants,
        depth: 0,
    };
    let node = p.expr(0)?;
    match p.peek() {
        Tok::Eof => Ok(node),
        Tok::Punct(")") => Err(p.error("unexpected ')' (no matching '(')")),
        other => Err(p.error(format!(
            "expected an operator or the end, found {}",
            describe(other)
        ))),
    }
}

struct Parser<'c> {
    toks: Vec<Token>,
    pos: usize,
    constants: &'c dyn Fn(&str) -> bool,
    depth: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Delimited(s) => format!("`{s}`"),
        Tok::Str(_) => "a string".to_owned(),
        Tok::Number(n) => format!("'{n}'"),
        Tok::Date(_) | Tok::DateTime(_) | Tok::Time(_) => "a date/time".to_owned(),
        Tok::Const(c) => format!("'%{c}'"),
        Tok::Special(s) => format!("'${s}'"),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "the end of the expression".to_owned(),
    }
}

/// Infix operators: (operator, left binding power).
fn infix(tok: &Tok) -> Option<(BinOp, u8)> {
    let op = match tok {
        Tok::Punct(p) => match *p {
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "&" => BinOp::Concat,
            "|" => BinOp::Union,
            "<" => BinOp::Lt,
            ">" => BinOp::Gt,
            "<=" => BinOp::Le,
            ">=" => BinOp::Ge,
            "=" => BinOp::Eq,
            "!=" => BinOp::Ne,
            "~" => BinOp::Equiv,
            "!~" => BinOp::NotEquiv,
            _ => return None,
        },
        Tok::Ident(word) => match word.as_str() {
            "div" => BinOp::IntDiv,
            "mod" => BinOp::Mod,
            "in" => BinOp::In,
            "contains" => BinOp::Contains,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "xor" => BinOp::Xor,
            "implies" => BinOp::Implies,
            _ => return None,
        },
        _ => return None,
    };
    let bp = match op {
        BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => 10,
        BinOp::Add | BinOp::Sub | BinOp::Concat => 9,
        BinOp::Union => 7,
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => 6,
        BinOp::Eq | BinOp::Ne | BinOp::Equiv | BinOp::NotEquiv => 5,
        BinOp::In | BinOp::Contains => 4,
        BinOp::And => 3,
        BinOp::Or | BinOp::Xor => 2,
        BinOp::Implies => 1,
    };
    Some((op, bp))
}

/// `is`/`as` bind between `|` and `+`.
const TYPE_OP_BP: u8 = 8;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.toks
            .get(self.pos + ahead)
            .map_or(&Tok::Eof, |t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |t| t.at)
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            offset: self.offset(),
            message: message.into(),
        }
    }

    fn next(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        tok
    }

    fn expect(&mut self, punct: &'static str) -> Result<(), ParseError> {
        if *self.peek() == Tok::Punct(punct) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format!(
                "expected '{punct}', found {}",
                describe(self.peek())
            )))
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<Node, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("expression nested too deeply"));
        }
        let mut left = self.prefix()?;
        loop {
            if let Tok::Ident(word) = self.peek()
                && (word == "is" || word == "as")
                && TYPE_OP_BP >= min_bp
            {
                let op = if word == "is" { TypeOp::Is } else { TypeOp::As };
                self.pos += 1;
                let ty = self.type_name()?;
                left = Node::TypeOp(op, Box::new(left), ty);
                continue;
            }
            let Some((op, bp)) = infix(self.peek()) else {
                break;
            };
            if bp < min_bp {
                break;
            }
            self.pos += 1;
            let right = self.expr(bp + 1)?;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn prefix(&mut self) -> Result<Node, ParseError> {
        match self.peek() {
            Tok::Punct("-") => {
                self.pos += 1;
                Ok(Node::Neg(Box::new(self.expr(UNARY_BP)?)))
            }
            Tok::Punct("+") => {
                self.pos += 1;
                self.expr(UNARY_BP)
            }
            _ => {
                let term = self.term()?;
                self.postfix(term)
            }
        }
    }

    fn postfix(&mut self, mut node: Node) -> Result<Node, ParseError> {
        loop {
            match self.peek() {
                Tok::Punct(".") => {
                    self.pos += 1;
                    let at = self.offset();
                    let name = match self.next() {
                        Tok::Ident(n) | Tok::Delimited(n) => n,
                        other => {
                            self.pos -= 1;
                            return Err(ParseError {
                                offset: at,
                                message: format!(
                                    "expected a name after '.', found {}",
                                    describe(&other)
                                ),
                            });
                        }
                    };
                    node = self.invocation(Some(node), name, at)?;
                }
                Tok::Punct("[") => {
                    self.pos += 1;
                    let index = self.expr(0)?;
                    self.expect("]")?;
                    node = Node::Indexer(Box::new(node), Box::new(index));
                }
                _ => return Ok(node),
            }
        }
    }

    /// A member name or, when `(` follows, a function call.
    fn invocation(
        &mut self,
        base: Option<Node>,
        name: String,
        at: usize,
    ) -> Result<Node, ParseError> {
        let base = base.map(Box::new);
        if *self.peek() != Tok::Punct("(") {
            return Ok(Node::Member(base, name));
        }
        let func = Func::from_name(&name).ok_or_else(|| ParseError {
            offset: at,
            message: format!("unknown function '{name}'"),
        })?;
        self.pos += 1;
        let mut call = Call {
            func,
            args: Vec::new(),
            ty: None,
        };
        match func.args() {
            Args::Type { optional } => {
                if !(optional && *self.peek() == Tok::Punct(")")) {
                    call.ty = Some(self.type_name()?);
                }
            }
            Args::Lambda { .. } | Args::Exprs(..) => {
                if *self.peek() != Tok::Punct(")") {
                    call.args.push(self.expr(0)?);
                    while *self.peek() == Tok::Punct(",") {
                        self.pos += 1;
                        call.args.push(self.expr(0)?);
                    }
                }
            }
        }
        self.expect(")")?;
        let (min, max) = match func.args() {
            Args::Exprs(min, max) => (min, max),
            Args::Lambda { optional } => (usize::from(!optional), 1),
            Args::Type { .. } => (0, 0),
        };
        let n = call.args.len();
        if n < min || n > max {
            let wanted = match (min, max) {
                (a, b) if a == b => format!("{a}"),
                (a, b) => format!("{a} to {b}"),
            };
            return Err(ParseError {
                offset: at,
                message: format!("{name}() takes {wanted} argument(s), found {n}"),
            });
        }
        Ok(Node::Call(base, call))
    }

    /// `Name` or `Namespace.Name`.
    fn type_name(&mut self) -> Result<String, ParseError> {
        let mut name = match self.next() {
            Tok::Ident(n) | Tok::Delimited(n) => n,
            other => {
                self.pos -= 1;
                return Err(self.error(format!("expected a type name, found {}", describe(&other))));
            }
        };
        if *self.peek() == Tok::Punct(".")
            && matches!(self.peek_at(1), Tok::Ident(_) | Tok::Delimited(_))
            && (name == "FHIR" || name == "System")
        {
            self.pos += 1;
            if let Tok::Ident(n) | Tok::Delimited(n) = self.next() {
                name = format!("{name}.{n}");
            }
        }
        Ok(name)
    }

    fn term(&mut self) -> Result<Node, ParseError> {
        let at = self.offset();
        let err = |message: String| ParseError {
            offset: at,
            message,
        };
        Ok(match self.next() {
            Tok::Number(text) if text.contains('.') => Node::Decimal(text),
            Tok::Number(text) => Node::Integer(
                text.parse()
                    .map_err(|_| err(format!("integer {text} is too large")))?,
            ),
            Tok::Str(s) => Node::String(s),
            Tok::Date(d) => Node::Date(d),
            Tok::DateTime(d) => Node::DateTime(d),
            Tok::Time(t) => Node::Time(t),
            Tok::Ident(word) if word == "true" => Node::Bool(true),
            Tok::Ident(word) if word == "false" => Node::Bool(false),
            Tok::Ident(word)
                if matches!(
                    word.as_str(),
                    "and" | "or" | "xor" | "implies" | "div" | "mod" | "is" | "as"
                ) =>
            {
                return Err(err(format!("expected an expression, found '{word}'")));
            }
            Tok::Ident(name) | Tok::Delimited(name) => self.invocation(None, name, at)?,
            Tok::Const(name) => Node::Var(match name.as_str() {
                "rowIndex" => Var::RowIndex,
                "resource" => Var::Resource,
                "rootResource" => Var::RootResource,
                _ if (self.constants)(&name) => Var::Const(name),
                _ => return Err(err(format!("unknown constant %{name}"))),
            }),
            Tok::Special(name) => match name.as_str() {
                "this" => Node::This,
                "index" => Node::Index,
                _ => return Err(err(format!("unsupported variable ${name}"))),
            },
            Tok::Punct("(") => {
                let inner = self.expr(0)?;
                self.expect(")")?;
                inner
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                Node::Empty
            }
            other => {
                self.pos -= 1;
                return Err(err(format!(
                    "expected an expression, found {}",
                    describe(&other)
                )));
            }
        })
    }
}
