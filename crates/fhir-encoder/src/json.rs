//! A JSON parser for one NDJSON line into a flat tape (also what view runners evaluate over).
//!
//! The whole line is parsed (and so validated) before anything is appended to the Arrow
//! builders, so an invalid line never leaves a half-written row. Strings without escapes and
//! numbers are borrowed from the line; numbers keep their exact text (decimals need their scale).

/// One token of the tape. Containers store the tape index just past their last token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tok {
    Null,
    Bool(bool),
    /// Number text: byte range in the line.
    Num(u32, u32),
    /// String without escapes: byte range in the line.
    Str(u32, u32),
    /// String with escapes, decoded: byte range in the tape's buffer.
    Esc(u32, u32),
    /// Array; end index. Its items follow.
    Arr(u32),
    /// Object; end index. Key (`Str`/`Esc`) and value tokens follow, alternating.
    Obj(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub offset: usize,
    pub message: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.message)
    }
}

/// Containers nested deeper than this are refused (no FHIR resource comes close).
pub const MAX_DEPTH: usize = 256;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `w` is `"`, `\\` or below 0x20 (exact, no false negatives).
#[inline]
fn needs_attention(w: u64) -> bool {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | below_space) != 0
}

#[derive(Default)]
pub struct Tape {
    pub toks: Vec<Tok>,
    pub buf: String,
}

/// A parsed line: the tape and the line it borrows from.
#[derive(Clone, Copy)]
pub struct Doc<'a> {
    pub src: &'a str,
    pub toks: &'a [Tok],
    pub buf: &'a str,
}

impl<'a> Doc<'a> {
    #[inline]
    pub fn tok(&self, i: u32) -> Tok {
        self.toks[i as usize]
    }

    /// Index of the token after the value at `i`.
    #[inline]
    pub fn skip(&self, i: u32) -> u32 {
        match self.toks[i as usize] {
            Tok::Arr(end) | Tok::Obj(end) => end,
            _ => i + 1,
        }
    }

    /// The string at `i`, if it is one.
    #[inline]
    pub fn str(&self, i: u32) -> Option<&'a str> {
        match self.toks[i as usize] {
            Tok::Str(s, e) => self.src.get(s as usize..e as usize),
            Tok::Esc(s, e) => self.buf.get(s as usize..e as usize),
            _ => None,
        }
    }

    #[inline]
    pub fn num(&self, i: u32) -> Option<&'a str> {
        match self.toks[i as usize] {
            Tok::Num(s, e) => self.src.get(s as usize..e as usize),
            _ => None,
        }
    }

    /// Members of the object at `i` as (key, value index).
    pub fn members(&self, i: u32) -> Members<'a> {
        let end = match self.toks[i as usize] {
            Tok::Obj(end) => end,
            _ => i + 1,
        };
        Members {
            doc: *self,
            pos: i + 1,
            end,
        }
    }

    /// Items of the array at `i`.
    pub fn items(&self, i: u32) -> Items<'a> {
        let end = match self.toks[i as usize] {
            Tok::Arr(end) => end,
            _ => i + 1,
        };
        Items {
            doc: *self,
            pos: i + 1,
            end,
        }
    }

    /// Value of `key` in the object at `i` (first occurrence).
    pub fn get(&self, i: u32, key: &str) -> Option<u32> {
        self.members(i).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

pub struct Members<'a> {
    doc: Doc<'a>,
    pos: u32,
    end: u32,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, u32);
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let key = self.doc.str(self.pos).unwrap_or("");
        let v = self.pos + 1;
        self.pos = self.doc.skip(v);
        Some((key, v))
    }
}

pub struct Items<'a> {
    doc: Doc<'a>,
    pos: u32,
    end: u32,
}

impl Iterator for Items<'_> {
    type Item = u32;
    #[inline]
    fn next(&mut self) -> Option<u32> {
        if self.pos >= self.end {
            return None;
        }
        let v = self.pos;
        self.pos = self.doc.skip(v);
        Some(v)
    }
}

impl Tape {
    /// Parses one JSON value filling the whole of `src` (surrounding whitespace allowed).
    pub fn parse<'a>(&'a mut self, src: &'a str) -> Result<Doc<'a>, JsonError> {
        self.toks.clear();
        self.buf.clear();
        if src.len() >= u32::MAX as usize {
            return Err(JsonError {
                offset: 0,
                message: "line too long",
            });
        }
        let mut p = Parser {
            b: src.as_bytes(),
            i: 0,
            tape: self,
        };
        p.ws();
        p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            return Err(p.err("unexpected data after the value"));
        }
        Ok(Doc {
            src,
            toks: &self.toks,
            buf: &self.buf,
        })
    }
}

struct Parser<'a, 't> {
    b: &'a [u8],
    i: usize,
    tape: &'t mut Tape,
}

impl Parser<'_, '_> {
    fn err(&self, message: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            message,
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.b.get(self.i) {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => {
                let t = self.string()?;
                self.tape.toks.push(t);
                Ok(())
            }
            Some(b't') => self.literal(b"true", Tok::Bool(true)),
            Some(b'f') => self.literal(b"false", Tok::Bool(false)),
            Some(b'n') => self.literal(b"null", Tok::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn literal(&mut self, lit: &[u8], tok: Tok) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            self.tape.toks.push(tok);
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let at = self.tape.toks.len();
        self.tape.toks.push(Tok::Obj(0));
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                if self.b.get(self.i) != Some(&b'"') {
                    return Err(self.err("expected a string key"));
                }
                let k = self.string()?;
                self.tape.toks.push(k);
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return Err(self.err("expected ':'"));
                }
                self.i += 1;
                self.ws();
                self.value(depth + 1)?;
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or '}'")),
                }
            }
        }
        let end = self.tape.toks.len() as u32;
        self.tape.toks[at] = Tok::Obj(end);
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        let at = self.tape.toks.len();
        self.tape.toks.push(Tok::Arr(0));
        self.i += 1;
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
        } else {
            loop {
                self.value(depth + 1)?;
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or ']'")),
                }
            }
        }
        let end = self.tape.toks.len() as u32;
        self.tape.toks[at] = Tok::Arr(end);
        Ok(())
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            _ => {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        self.i = i;
        self.tape.toks.push(Tok::Num(start as u32, i as u32));
        Ok(())
    }

    /// Parses a string at `self.i` (on the opening quote).
    fn string(&mut self) -> Result<Tok, JsonError> {
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        // Fast path: no escapes. Skip 8 bytes at a time while none is '"', '\\' or a control.
        loop {
            while let Some(chunk) = b.get(i..i + 8) {
                let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
                    break;
                };
                if needs_attention(u64::from_le_bytes(bytes)) {
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                None => {
                    self.i = i;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(Tok::Str(start as u32, i as u32));
                }
                Some(b'\\') => break,
                Some(c) if *c < 0x20 => {
                    self.i = i;
                    return Err(self.err("control character in string"));
                }
                Some(_) => i += 1,
            }
        }
        let bstart = self.tape.buf.len();
        // The input is valid UTF-8 and every split point is ASCII, so the pieces are too.
        let text = std::str::from_utf8(&b[start..i]).map_err(|_| self.err("invalid UTF-8"))?;
        self.tape.buf.push_str(text);
        loop {
            match b.get(i) {
                None => {
                    self.i = i;
                    return Err(self.err("unterminated string"));
                }
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(Tok::Esc(bstart as u32, self.tape.buf.len() as u32));
                }
                Some(b'\\') => {
                    i += 1;
                    let c = match b.get(i) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4(i + 1)?;
                            i += 4;
                            if (0xD800..0xDC00).contains(&hi) {
                                if b.get(i + 1) != Some(&b'\\') || b.get(i + 2) != Some(&b'u') {
                                    self.i = i;
                                    return Err(self.err("unpaired surrogate"));
                                }
                                let lo = self.hex4(i + 3)?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    self.i = i;
                                    return Err(self.err("unpaired surrogate"));
                                }
                                i += 6;
                                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                char::from_u32(cp).ok_or_else(|| self.err("invalid escape"))?
                            } else {
                                char::from_u32(hi).ok_or_else(|| self.err("unpaired surrogate"))?
                            }
                        }
                        _ => {
                            self.i = i;
                            return Err(self.err("invalid escape"));
                        }
                    };
                    self.tape.buf.push(c);
                    i += 1;
                }
                Some(c) if *c < 0x20 => {
                    self.i = i;
                    return Err(self.err("control character in string"));
                }
                Some(_) => {
                    let s = i;
                    while let Some(c) = b.get(i) {
                        if *c == b'"' || *c == b'\\' || *c < 0x20 {
                            break;
                        }
                        i += 1;
                    }
                    let text =
                        std::str::from_utf8(&b[s..i]).map_err(|_| self.err("invalid UTF-8"))?;
                    self.tape.buf.push_str(text);
                }
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, JsonError> {
        let mut v = 0u32;
        for k in 0..4 {
            let d = match self.b.get(at + k) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => {
                    self.i = at + k;
                    return Err(self.err("invalid \\u escape"));
                }
            };
            v = v * 16 + u32::from(d);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> serde_json::Value {
        let mut t = Tape::default();
        let d = t.parse(s).unwrap();
        to_value(&d, 0)
    }

    fn to_value(d: &Doc, i: u32) -> serde_json::Value {
        use serde_json::Value;
        match d.tok(i) {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(b),
            Tok::Num(..) => serde_json::from_str(d.num(i).unwrap()).unwrap(),
            Tok::Str(..) | Tok::Esc(..) => Value::String(d.str(i).unwrap().to_string()),
            Tok::Arr(_) => Value::Array(d.items(i).map(|v| to_value(d, v)).collect()),
            Tok::Obj(_) => Value::Object(
                d.members(i)
                    .map(|(k, v)| (k.to_string(), to_value(d, v)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn parses_like_serde_json() {
        for s in [
            r#"{"a":[1,2.5,-3e2,{"b":null}],"c":"x\"y\\u00e9\ud83d\ude00","d":true,"e":false,"f":{}}"#,
            r#" [ ] "#,
            r#""plain""#,
            r#"{"k\n":"caf\u00e9 ok"}"#,
        ] {
            assert_eq!(
                roundtrip(s),
                serde_json::from_str::<serde_json::Value>(s).unwrap(),
                "{s}"
            );
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for s in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "\"\\x\"",
            "\"a",
            "nul",
            "{} x",
            "\"\\ud800\"",
            "{\"a\" 1}",
            "\"\u{1}\"",
        ] {
            let mut t = Tape::default();
            assert!(t.parse(s).is_err(), "{s:?} should fail");
            assert!(
                serde_json::from_str::<serde_json::Value>(s).is_err(),
                "{s:?} serde agrees"
            );
        }
    }

    #[test]
    fn strings_with_specials_at_every_position() {
        for pos in 0..20 {
            for special in ["\\\"", "\\\\", "\\n", "\\u00e9", "é", "\\ud83d\\ude00"] {
                let text = format!("{}{special}{}", "a".repeat(pos), "b".repeat(19 - pos));
                let s = format!("[\"{text}\",\"{}\"]", "c".repeat(pos));
                assert_eq!(
                    roundtrip(&s),
                    serde_json::from_str::<serde_json::Value>(&s).unwrap(),
                    "{s}"
                );
            }
            let raw_control = format!("\"{}\u{1f}{}\"", "a".repeat(pos), "b".repeat(9));
            assert!(
                Tape::default().parse(&raw_control).is_err(),
                "{raw_control:?}"
            );
            let unterminated = format!("\"{}", "a".repeat(pos + 8));
            assert!(Tape::default().parse(&unterminated).is_err());
        }
    }

    #[test]
    fn keeps_number_text() {
        let mut t = Tape::default();
        let d = t.parse(r#"[28.104000000000003, 1.50]"#).unwrap();
        assert_eq!(d.num(1), Some("28.104000000000003"));
        assert_eq!(d.num(2), Some("1.50"));
    }
}
