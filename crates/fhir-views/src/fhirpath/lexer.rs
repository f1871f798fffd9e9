//! Splits FHIRPath text into tokens, each with its character offset.

use super::ParseError;
use super::compare::{parse_date, parse_datetime, parse_time};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A plain identifier (keywords included; the parser tells them apart).
    Ident(String),
    /// A `` `delimited` `` identifier.
    Delimited(String),
    Str(String),
    /// Number text: digits, optionally `.` and digits.
    Number(String),
    Date(String),
    /// DateTime text without a trailing `T`.
    DateTime(String),
    Time(String),
    /// `%name`, `` %`name` `` or `%'name'`.
    Const(String),
    /// `$this`, `$index`, `$total` (without the `$`).
    Special(String),
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Character offset of the token's first character.
    pub at: usize,
}

const PUNCTS: &[&str] = &[
    "<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", ",", "+", "-", "*", "/", "&", "|", "=", "<",
    ">", "~", "{", "}",
];

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

fn err(offset: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        offset,
        message: message.into(),
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Tokens of `text`, ending with [`Tok::Eof`].
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        lx.skip_space_and_comments()?;
        let at = lx.pos;
        let Some(c) = lx.peek(0) else {
            out.push(Token { tok: Tok::Eof, at });
            return Ok(out);
        };
        let tok = match c {
            c if is_ident_start(c) => Tok::Ident(lx.take_while(is_ident_char)),
            '`' => Tok::Delimited(lx.quoted('`')?),
            '\'' => Tok::Str(lx.quoted('\'')?),
            c if c.is_ascii_digit() => lx.number(),
            '@' => lx.date_time()?,
            '%' => {
                lx.pos += 1;
                match lx.peek(0) {
                    Some('`') => Tok::Const(lx.quoted('`')?),
                    Some('\'') => Tok::Const(lx.quoted('\'')?),
                    Some(c) if is_ident_start(c) => Tok::Const(lx.take_while(is_ident_char)),
                    _ => return Err(err(at, "expected a name after '%'")),
                }
            }
            '$' => {
                lx.pos += 1;
                let name = lx.take_while(is_ident_char);
                if name.is_empty() {
                    return Err(err(at, "expected a name after '$'"));
                }
                Tok::Special(name)
            }
            _ => {
                let punct = PUNCTS
                    .iter()
                    .find(|p| p.chars().enumerate().all(|(i, pc)| lx.peek(i) == Some(pc)));
                match punct {
                    Some(p) => {
                        lx.pos += p.chars().count();
                        Tok::Punct(p)
                    }
                    None => return Err(err(at, format!("unexpected character '{c}'"))),
                }
            }
        };
        out.push(Token { tok, at });
    }
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek(0).is_some_and(&f) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn skip_space_and_comments(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('/'), Some('/')) => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos;
                    self.pos += 2;
                    loop {
                        match (self.peek(0), self.peek(1)) {
                            (Some('*'), Some('/')) => {
                                self.pos += 2;
                                break;
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => return Err(err(start, "unterminated comment")),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// A string or delimited identifier closed by `quote`, with escapes decoded.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(err(start, format!("unterminated {quote}...{quote}")));
            };
            self.pos += 1;
            match c {
                c if c == quote => return Ok(s),
                '\\' => {
                    let at = self.pos - 1;
                    let e = self.peek(0).ok_or_else(|| err(at, "unfinished escape"))?;
                    self.pos += 1;
                    s.push(match e {
                        '\'' | '"' | '`' | '\\' | '/' => e,
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'u' => {
                            let hex: String = (0..4).filter_map(|i| self.peek(i)).collect();
                            let code = (hex.len() == 4)
                                .then(|| u32::from_str_radix(&hex, 16).ok())
                                .flatten()
                                .and_then(char::from_u32)
                                .ok_or_else(|| err(at, "invalid \\u escape"))?;
                            self.pos += 4;
                            code
                        }
                        other => return Err(err(at, format!("unknown escape '\\{other}'"))),
                    });
                }
                c => s.push(c),
            }
        }
    }

    fn number(&mut self) -> Tok {
        let mut text = self.take_while(|c| c.is_ascii_digit());
        if self.peek(0) == Some('.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            text.push('.');
            text.push_str(&self.take_while(|c| c.is_ascii_digit()));
        }
        Tok::Number(text)
    }

    /// `@date`, `@dateTime` or `@Ttime`.
    fn date_time(&mut self) -> Result<Tok, ParseError> {
        let at = self.pos;
        self.pos += 1;
        let time_chars = |c: char| c.is_ascii_digit() || c == ':' || c == '.';
        if self.peek(0) == Some('T') {
            self.pos += 1;
            let t = self.take_while(time_chars);
            return match parse_time(&t) {
                Some(_) => Ok(Tok::Time(t)),
                None => Err(err(at, format!("invalid time literal '@T{t}'"))),
            };
        }
        let mut text = self.take_while(|c| c.is_ascii_digit() || c == '-');
        if self.peek(0) != Some('T') {
            return match parse_date(&text) {
                Some(_) => Ok(Tok::Date(text)),
                None => Err(err(at, format!("invalid date literal '@{text}'"))),
            };
        }
        self.pos += 1;
        let time = self.take_while(time_chars);
        if !time.is_empty() {
            text.push('T');
            text.push_str(&time);
            match self.peek(0) {
                Some('Z') => {
                    self.pos += 1;
                    text.push('Z');
                }
                Some(sign @ ('+' | '-'))
                    if (1..=5).all(|i| {
                        self.peek(i)
                            .is_some_and(|c| if i == 3 { c == ':' } else { c.is_ascii_digit() })
                    }) =>
                {
                    text.push(sign);
                    text.extend(self.chars[self.pos + 1..self.pos + 6].iter());
                    self.pos += 6;
                }
                _ => {}
            }
        }
        match parse_datetime(&text) {
            Some(_) => Ok(Tok::DateTime(text)),
            None => Err(err(at, format!("invalid dateTime literal '@{text}T'"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn tokens_of_a_path() {
        assert_eq!(
            toks("name.where(use = 'official')[0] <= 1.50"),
            vec![
                Tok::Ident("name".into()),
                Tok::Punct("."),
                Tok::Ident("where".into()),
                Tok::Punct("("),
                Tok::Ident("use".into()),
                Tok::Punct("="),
                Tok::Str("official".into()),
                Tok::Punct(")"),
                Tok::Punct("["),
                Tok::Number("0".into()),
                Tok::Punct("]"),
                Tok::Punct("<="),
                Tok::Number("1.50".into()),
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn literals_constants_and_escapes() {
        assert_eq!(
            toks(r"'a\'b\n\u00e9' `x y` %c %`d e` $this"),
            vec![
                Tok::Str("a'b\né".into()),
                Tok::Delimited("x y".into()),
                Tok::Const("c".into()),
                Tok::Const("d e".into()),
                Tok::Special("this".into()),
                Tok::Eof,
            ]
        );
        assert_eq!(
            toks("@2020-01 @2020-01-01T10:00:00.5+02:00 @2020T @T12:34 1.first()"),
            vec![
                Tok::Date("2020-01".into()),
                Tok::DateTime("2020-01-01T10:00:00.5+02:00".into()),
                Tok::DateTime("2020".into()),
                Tok::Time("12:34".into()),
                Tok::Number("1".into()),
                Tok::Punct("."),
                Tok::Ident("first".into()),
                Tok::Punct("("),
                Tok::Punct(")"),
                Tok::Eof,
            ]
        );
        assert_eq!(toks("a // x\n/* y */ b").len(), 3);
    }

    #[test]
    fn errors_carry_character_offsets() {
        let e = lex("@@").expect_err("invalid");
        assert_eq!(
            (e.offset, e.message.as_str()),
            (0, "invalid date literal '@'")
        );
        let e = lex("'é' 'abc").expect_err("unterminated");
        assert_eq!(e.offset, 4);
        assert_eq!(lex("a # b").expect_err("bad char").offset, 2);
        assert_eq!(
            lex(r"'\q'").expect_err("bad escape").message,
            "unknown escape '\\q'"
        );
        assert!(lex(r"'\u12'").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("@2020-13").is_err());
    }
}
