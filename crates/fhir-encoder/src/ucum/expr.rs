//! UCUM unit expression lexer and parser (case-sensitive syntax), producing
//! the term tree that the converter reduces to base units.
//!
//! Follows the reference parser's grammar and quirks: terms are
//! right-recursive (`a/b.c` is `a / (b . c)` in tree shape, but the converter
//! walks it left to right), annotations stand for the factor 1, and a symbol
//! is split into prefix and unit only when the rest is a base or metric unit.

use super::UcumError;
use super::model::{Model, UnitRef};

/// Longest unit expression accepted; real codes are far shorter, and the
/// bound keeps recursion depth and work per code small.
pub(super) const MAX_CODE_LEN: usize = 256;
/// Largest exponent magnitude accepted on a symbol.
pub(super) const MAX_EXPONENT: i32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenType {
    None,
    Number,
    Symbol,
    Solidus,
    Period,
    Open,
    Close,
    Annotation,
}

struct Lexer<'a> {
    source: &'a [u8],
    index: usize,
    token: &'a [u8],
    kind: TokenType,
}

fn is_valid_symbol_char(ch: Option<u8>, allow_digits: bool, in_brackets: bool) -> bool {
    let Some(ch) = ch else { return false };
    (allow_digits && ch.is_ascii_digit())
        || ch.is_ascii_alphabetic()
        || matches!(ch, b'[' | b']' | b'%' | b'*' | b'^' | b'\'' | b'"' | b'_')
        || (in_brackets && ch == b'.')
}

impl<'a> Lexer<'a> {
    fn new(source: &'a str) -> Result<Lexer<'a>, UcumError> {
        let mut lexer = Lexer {
            source: source.as_bytes(),
            index: 0,
            token: &[],
            kind: TokenType::None,
        };
        lexer.consume()?;
        Ok(lexer)
    }

    fn peek(&self) -> Option<u8> {
        self.source.get(self.index).copied()
    }

    fn consume(&mut self) -> Result<(), UcumError> {
        self.kind = TokenType::None;
        let start = self.index;
        self.token = &self.source[start..start];
        let Some(ch) = self.peek() else {
            return Ok(());
        };
        self.index += 1;
        let single = match ch {
            b'/' => Some(TokenType::Solidus),
            b'.' => Some(TokenType::Period),
            b'(' => Some(TokenType::Open),
            b')' => Some(TokenType::Close),
            _ => None,
        };
        if let Some(kind) = single {
            self.kind = kind;
        } else if ch == b'{' {
            // Annotations: printable ASCII up to the closing brace.
            loop {
                let c = self
                    .peek()
                    .ok_or_else(|| syntax("unterminated annotation"))?;
                self.index += 1;
                if !(b' '..=b'~').contains(&c) {
                    return Err(syntax("annotation contains non-ASCII characters"));
                }
                if c == b'}' {
                    break;
                }
            }
            self.kind = TokenType::Annotation;
        } else if ch == b'+' || ch == b'-' {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.index += 1;
            }
            if self.index - start == 1 {
                return Err(syntax("a + or - must be followed by at least one digit"));
            }
            self.kind = TokenType::Number;
        } else if is_valid_symbol_char(Some(ch), true, false) {
            let mut is_symbol = !ch.is_ascii_digit();
            let mut in_brackets = check_brackets(Some(ch), false)?;
            let mut next = self.peek();
            in_brackets = check_brackets(next, in_brackets)?;
            while is_valid_symbol_char(next, !is_symbol || in_brackets, in_brackets) {
                is_symbol = is_symbol || next.is_some_and(|c| !c.is_ascii_digit());
                self.index += 1;
                next = self.peek();
                in_brackets = check_brackets(next, in_brackets)?;
            }
            self.kind = if is_symbol {
                TokenType::Symbol
            } else {
                TokenType::Number
            };
        } else {
            return Err(syntax("unexpected character"));
        }
        self.token = &self.source[start..self.index];
        Ok(())
    }

    fn token_as_int(&self) -> Result<i32, UcumError> {
        let text = std::str::from_utf8(self.token).map_err(|_| syntax("invalid number"))?;
        text.parse::<i32>()
            .map_err(|_| syntax("number out of range"))
    }

    fn finished(&self) -> bool {
        self.index == self.source.len()
    }
}

fn check_brackets(ch: Option<u8>, in_brackets: bool) -> Result<bool, UcumError> {
    match ch {
        Some(b'[') if in_brackets => Err(syntax("nested [")),
        Some(b'[') => Ok(true),
        Some(b']') if !in_brackets => Err(syntax("] without [")),
        Some(b']') => Ok(false),
        _ => Ok(in_brackets),
    }
}

fn syntax(message: &'static str) -> UcumError {
    UcumError::Syntax(message)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operator {
    Multiplication,
    Division,
}

#[derive(Debug)]
pub(super) enum Component {
    Factor(i32),
    Symbol {
        prefix: Option<usize>,
        unit: UnitRef,
        exponent: i32,
    },
    Term(Box<Term>),
}

/// `comp op term`: a component followed by an operator and the rest.
#[derive(Debug, Default)]
pub(super) struct Term {
    pub comp: Option<Component>,
    pub op: Option<Operator>,
    pub term: Option<Box<Term>>,
}

/// Parses a case-sensitive UCUM expression.
pub(super) fn parse(model: &Model, code: &str) -> Result<Term, UcumError> {
    if code.len() > MAX_CODE_LEN {
        return Err(syntax("unit expression too long"));
    }
    let mut lexer = Lexer::new(code)?;
    let term = parse_term(model, &mut lexer, true)?;
    if !lexer.finished() {
        return Err(syntax("expression was not parsed completely"));
    }
    Ok(term)
}

fn parse_term(model: &Model, lexer: &mut Lexer<'_>, first: bool) -> Result<Term, UcumError> {
    let mut res = Term::default();
    if first && lexer.kind == TokenType::None {
        res.comp = Some(Component::Factor(1));
    } else if lexer.kind == TokenType::Solidus {
        res.op = Some(Operator::Division);
        lexer.consume()?;
        res.term = Some(Box::new(parse_term(model, lexer, false)?));
    } else {
        if lexer.kind == TokenType::Annotation {
            // An annotation on its own means the unit 1.
            res.comp = Some(Component::Factor(1));
            lexer.consume()?;
        } else {
            res.comp = Some(parse_comp(model, lexer)?);
        }
        if lexer.kind != TokenType::None && lexer.kind != TokenType::Close {
            match lexer.kind {
                TokenType::Solidus => {
                    res.op = Some(Operator::Division);
                    lexer.consume()?;
                }
                TokenType::Period => {
                    res.op = Some(Operator::Multiplication);
                    lexer.consume()?;
                }
                // An annotation directly after a unit multiplies by 1.
                TokenType::Annotation => res.op = Some(Operator::Multiplication),
                _ => return Err(syntax("expected '/' or '.'")),
            }
            res.term = Some(Box::new(parse_term(model, lexer, false)?));
        }
    }
    Ok(res)
}

fn parse_comp(model: &Model, lexer: &mut Lexer<'_>) -> Result<Component, UcumError> {
    match lexer.kind {
        TokenType::Number => {
            let factor = lexer.token_as_int()?;
            lexer.consume()?;
            Ok(Component::Factor(factor))
        }
        TokenType::Symbol => parse_symbol(model, lexer),
        TokenType::None => Err(syntax("unexpected end of expression")),
        TokenType::Open => {
            lexer.consume()?;
            let inner = parse_term(model, lexer, true)?;
            if lexer.kind != TokenType::Close {
                return Err(syntax("missing close bracket"));
            }
            lexer.consume()?;
            Ok(Component::Term(Box::new(inner)))
        }
        _ => Err(syntax("unexpected token looking for a symbol or a number")),
    }
}

fn parse_symbol(model: &Model, lexer: &mut Lexer<'_>) -> Result<Component, UcumError> {
    let sym = std::str::from_utf8(lexer.token).map_err(|_| syntax("invalid symbol"))?;
    let (prefix, unit) = match model.split_prefix(sym) {
        Some((prefix, unit)) => (Some(prefix), unit),
        None => (
            None,
            model
                .unit(sym)
                .ok_or_else(|| UcumError::UnknownUnit(sym.to_owned()))?,
        ),
    };
    lexer.consume()?;
    let exponent = if lexer.kind == TokenType::Number {
        let e = lexer.token_as_int()?;
        lexer.consume()?;
        e
    } else {
        1
    };
    if exponent.unsigned_abs() > MAX_EXPONENT.unsigned_abs() {
        return Err(syntax("exponent out of range"));
    }
    Ok(Component::Symbol {
        prefix,
        unit,
        exponent,
    })
}
