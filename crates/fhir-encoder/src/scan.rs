//! A lenient look into a line the parser refused: its top-level `resourceType` and `id`
//! string values, read as far as the line is still JSON in structure.
//!
//! A rejected resource whose id is known can still be told apart from one whose id is not:
//! a full refresh must not remove a row only because the server's copy of it was unreadable.
//!
//! One pass over the bytes, no recursion; it ends at the first byte where the structure stops
//! being JSON (a bracket, colon or comma out of place, an unterminated string, nesting deeper
//! than the parser allows), and nothing after that point is trusted. Damage that leaves the
//! structure readable (a bad escape, invalid UTF-8 or an odd number in some value) does not
//! end it, since the boundaries of every value are still known.

use crate::json::MAX_DEPTH;

/// The `resourceType` and `id` of a line, as far as they could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineHeader {
    pub resource_type: Option<String>,
    pub id: Option<String>,
}

/// Finds the top-level `"resourceType"` and `"id"` members of `line` (an object, possibly cut
/// short or broken) whose values are strings. As with a valid line, the first member of each
/// name decides: when its value is not a readable string, the value is `None`. A member counts
/// only when its value's closing quote comes before the point where the line breaks.
pub fn scan_header(line: &[u8]) -> LineHeader {
    let mut s = Scanner { b: line, i: 0 };
    // `None`: not seen yet; `Some(None)`: seen, but not a readable string.
    let (mut resource_type, mut id): (Option<Option<String>>, Option<Option<String>>) =
        (None, None);
    s.bom();
    s.ws();
    if s.peek() != Some(b'{') {
        return LineHeader::default();
    }
    s.i += 1;
    // The containers open inside the top-level object: true for an object.
    let mut open: Vec<bool> = Vec::new();
    let mut expect = Expect::Key { first: true };
    while resource_type.is_none() || id.is_none() {
        s.ws();
        let Some(c) = s.peek() else { break };
        let in_object = open.last().copied().unwrap_or(true);
        match expect {
            Expect::Key { first } => match c {
                b'"' => {
                    let Some(key) = s.string() else { break };
                    s.ws();
                    if s.peek() != Some(b':') {
                        break;
                    }
                    s.i += 1;
                    let target = match (open.is_empty(), decode(key).as_deref()) {
                        (true, Some("resourceType")) if resource_type.is_none() => {
                            Target::ResourceType
                        }
                        (true, Some("id")) if id.is_none() => Target::Id,
                        _ => Target::Other,
                    };
                    expect = Expect::Value(target);
                }
                b'}' if first => {
                    s.i += 1;
                    if open.pop().is_none() {
                        break;
                    }
                    expect = Expect::Next;
                }
                _ => break,
            },
            Expect::Item { first } => {
                if c == b']' && first {
                    s.i += 1;
                    open.pop();
                    expect = Expect::Next;
                } else {
                    expect = Expect::Value(Target::Other);
                }
            }
            Expect::Value(target) => {
                let slot = match target {
                    Target::ResourceType => Some(&mut resource_type),
                    Target::Id => Some(&mut id),
                    Target::Other => None,
                };
                let value = match c {
                    b'"' => {
                        let Some(raw) = s.string() else { break };
                        expect = Expect::Next;
                        decode(raw)
                    }
                    b'{' | b'[' => {
                        if open.len() + 1 >= MAX_DEPTH {
                            break;
                        }
                        s.i += 1;
                        open.push(c == b'{');
                        expect = if c == b'{' {
                            Expect::Key { first: true }
                        } else {
                            Expect::Item { first: true }
                        };
                        None
                    }
                    _ => {
                        if !s.scalar() {
                            break;
                        }
                        expect = Expect::Next;
                        None
                    }
                };
                if let Some(slot) = slot {
                    *slot = Some(value);
                }
            }
            Expect::Next => match c {
                b',' => {
                    s.i += 1;
                    expect = if in_object {
                        Expect::Key { first: false }
                    } else {
                        Expect::Item { first: false }
                    };
                }
                b'}' if in_object => {
                    s.i += 1;
                    if open.pop().is_none() {
                        break;
                    }
                }
                b']' if !in_object => {
                    s.i += 1;
                    open.pop();
                }
                _ => break,
            },
        }
    }
    LineHeader {
        resource_type: resource_type.flatten(),
        id: id.flatten(),
    }
}

/// What comes next in the structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A member's key, or the end of an empty object (`first`).
    Key { first: bool },
    /// An array's item, or the end of an empty array (`first`).
    Item { first: bool },
    /// The value of the member (or item) just begun.
    Value(Target),
    /// `,` or the end of the container.
    Next,
}

/// Which header value a member's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    ResourceType,
    Id,
    Other,
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bom(&mut self) {
        if self.b.starts_with(b"\xEF\xBB\xBF") {
            self.i = 3;
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    /// Skips the string at the opening quote; its raw contents, or `None` when it does not end.
    fn string(&mut self) -> Option<&'a [u8]> {
        let start = self.i + 1;
        let mut i = start;
        loop {
            match self.b.get(i)? {
                b'"' => {
                    self.i = i + 1;
                    return self.b.get(start..i);
                }
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
    }

    /// Skips a number or a literal; false when there is none here.
    fn scalar(&mut self) -> bool {
        let rest = self.b.get(self.i..).unwrap_or_default();
        for lit in [&b"true"[..], b"false", b"null"] {
            if rest.starts_with(lit) {
                self.i += lit.len();
                return true;
            }
        }
        let n = rest
            .iter()
            .take_while(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .count();
        self.i += n;
        n > 0
    }
}

/// The text of a string's raw contents; `None` when an escape, a control character or the
/// UTF-8 is invalid.
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut k = 0;
    while let Some(&c) = raw.get(k) {
        k += 1;
        match c {
            b'\\' => {
                let e = *raw.get(k)?;
                k += 1;
                let ch = match e {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = hex4(raw, k)?;
                        k += 4;
                        let cp = if (0xD800..0xDC00).contains(&hi) {
                            if raw.get(k..k + 2) != Some(b"\\u") {
                                return None;
                            }
                            let lo = hex4(raw, k + 2)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return None;
                            }
                            k += 6;
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            hi
                        };
                        char::from_u32(cp)?
                    }
                    _ => return None,
                };
                let mut utf8 = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
            c if c < 0x20 => return None,
            c => out.push(c),
        }
    }
    String::from_utf8(out).ok()
}

fn hex4(raw: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(raw.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn scan(line: &str) -> (Option<String>, Option<String>) {
        let h = scan_header(line.as_bytes());
        (h.resource_type, h.id)
    }

    fn both(rt: &str, id: &str) -> (Option<String>, Option<String>) {
        (Some(rt.into()), Some(id.into()))
    }

    #[test]
    fn a_bad_value_elsewhere_leaves_the_header_readable() {
        let unpaired = r#"{"resourceType":"Patient","id":"r2","name":[{"family":"\ud800"}]}"#;
        assert_eq!(scan(unpaired), both("Patient", "r2"));
        let after = r#"{"resourceType":"Patient","name":[{"family":"\ud800"}],"id":"r2"}"#;
        assert_eq!(scan(after), both("Patient", "r2"), "structure intact");
        let bytes = b"{\"resourceType\":\"Patient\",\"text\":\"\xff\xfe\",\"id\":\"r3\"}";
        let h = scan_header(bytes);
        assert_eq!(h.id.as_deref(), Some("r3"));
        assert_eq!(
            scan(r#"{"resourceType":"Patient","n":01.2.3,"id":"r4"}"#),
            both("Patient", "r4")
        );
    }

    #[test]
    fn keys_of_nested_objects_and_arrays_do_not_count() {
        assert_eq!(
            scan(r#"{"contained":[{"resourceType":"Org","id":"o1"}],"resourceType":"Patient"}"#),
            (Some("Patient".into()), None)
        );
        assert_eq!(
            scan(r#"{"meta":{"id":"m"},"x":["id","q"],"id":"p"}"#),
            (None, Some("p".into()))
        );
        assert_eq!(scan(r#"{"a":{"b":{"id":"deep"}}}"#), (None, None));
    }

    #[test]
    fn quotes_and_keys_inside_strings_are_text() {
        let line = r#"{"note":"say \"id\":\"x\", then }","id":"y","resourceType":"Patient"}"#;
        assert_eq!(scan(line), both("Patient", "y"));
        assert_eq!(scan(r#"{"id":"a\"b\\"}"#), (None, Some(r#"a"b\"#.into())));
        assert_eq!(
            scan(r#"{"\u0069d":"esc","resourceType":"P"}"#),
            both("P", "esc")
        );
        assert_eq!(scan(r#"{"id":"\ud83d\ude00"}"#).1.as_deref(), Some("😀"));
    }

    #[test]
    fn nothing_after_the_break_point_counts() {
        // A stray bracket, a missing colon, a trailing comma: the id comes after each.
        for line in [
            r#"{"resourceType":"Patient","a":[1,},"id":"x"}"#,
            r#"{"resourceType":"Patient","a" 1,"id":"x"}"#,
            r#"{"resourceType":"Patient","a":[1,],"id":"x"}"#,
            r#"{"resourceType":"Patient","a":tru,"id":"x"}"#,
            r#"{"resourceType":"Patient","a":"unterminated,"id":"x"}"#,
        ] {
            assert_eq!(scan(line), (Some("Patient".into()), None), "{line}");
        }
        // The test server's bad lines: cut off inside the id, a trailing comma after it.
        assert_eq!(
            scan(r#"{"resourceType":"Patient","id":"#),
            (Some("Patient".into()), None)
        );
        assert_eq!(
            scan(r#"{"resourceType":"Patient","id":"bad-1",}"#),
            both("Patient", "bad-1")
        );
        assert_eq!(
            scan(r#"{"resourceType":"Patient","id":"r2"#),
            (Some("Patient".into()), None)
        );
        assert_eq!(
            scan(r#"{"resourceType":"Patient","id":"r2""#),
            both("Patient", "r2")
        );
    }

    #[test]
    fn the_first_member_of_a_name_decides() {
        assert_eq!(scan(r#"{"id":7,"id":"later"}"#), (None, None));
        assert_eq!(
            scan(r#"{"id":"first","id":"later"}"#).1.as_deref(),
            Some("first")
        );
        assert_eq!(scan(r#"{"id":{"x":"y"},"id":"later"}"#), (None, None));
        assert_eq!(
            scan(r#"{"id":"bad\q","resourceType":"P"}"#),
            (Some("P".into()), None)
        );
        assert_eq!(
            scan(r#"{"id":"\udc00"}"#),
            (None, None),
            "a lone low surrogate"
        );
        assert_eq!(
            scan("{\"id\":\"tab\tin\"}"),
            (None, None),
            "a raw control character"
        );
    }

    #[test]
    fn lines_that_are_no_object_have_no_header() {
        for line in [
            "",
            "   ",
            "[]",
            r#"["id","x"]"#,
            r#""id""#,
            "42",
            "null",
            "}{",
        ] {
            assert_eq!(scan(line), (None, None), "{line:?}");
        }
        assert_eq!(
            scan("\u{feff} {\"resourceType\":\"Patient\",\"id\":\"bom\"}"),
            both("Patient", "bom")
        );
        assert_eq!(
            scan(r#"{} {"id":"x"}"#),
            (None, None),
            "after the object ends"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            r#"{{"resourceType":"Patient","a":{}{},"id":"x"}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(scan(&deep), (Some("Patient".into()), None));
        let shallow = format!(
            r#"{{"a":{}{},"id":"x"}}"#,
            "[".repeat(MAX_DEPTH - 2),
            "]".repeat(MAX_DEPTH - 2)
        );
        assert_eq!(scan(&shallow).1.as_deref(), Some("x"));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            Just(json!("id")),
            Just(json!("\"id\":\"x\"")),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (prop_oneof![Just("id".to_string()), any::<String>()], inner),
                    0..4
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Members before and after the id (never named `id` or `resourceType`).
    fn arb_members() -> impl Strategy<Value = Vec<(String, Value)>> {
        prop::collection::vec(
            (
                any::<String>()
                    .prop_filter("not a header key", |k| k != "id" && k != "resourceType"),
                arb_value(),
            ),
            0..4,
        )
    }

    fn member_text(members: &[(String, Value)]) -> String {
        members
            .iter()
            .map(|(k, v)| format!("{}:{v},", Value::String(k.clone())))
            .collect()
    }

    /// A line with `before`, then the id, then `after`; and where the id's value ends.
    fn line_with(before: &str, id: &str, after: &str) -> (String, usize) {
        let head = format!(r#"{{{before}"resourceType":"Patient","id":{}"#, json!(id));
        let end = head.len();
        (format!("{head},{after}\"z\":0}}"), end)
    }

    proptest! {
        #[test]
        fn never_panics(line in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = scan_header(&line);
        }

        /// On a valid line, the header of `serde_json` (whose objects have no duplicate keys).
        #[test]
        fn valid_lines_read_as_serde_json_reads_them(
            members in prop::collection::vec(
                (prop_oneof![Just("id".to_string()), Just("resourceType".to_string()), any::<String>()], arb_value()),
                0..6,
            ),
        ) {
            let object: serde_json::Map<String, Value> = members.into_iter().collect();
            let line = Value::Object(object.clone()).to_string();
            let string = |k: &str| object.get(k).and_then(Value::as_str).map(str::to_owned);
            prop_assert_eq!(scan(&line), (string("resourceType"), string("id")));
        }

        /// Cut anywhere: the id is read exactly when its closing quote is before the cut, and
        /// never as another value.
        #[test]
        fn a_cut_line_gives_its_id_only_when_the_id_is_whole(
            before in arb_members(),
            after in arb_members(),
            id in "[A-Za-z0-9.-]{1,64}|\\PC{0,8}",
            cut in any::<prop::sample::Index>(),
        ) {
            let (line, end) = line_with(&member_text(&before), &id, &member_text(&after));
            let at = cut.index(line.len() + 1);
            let h = scan_header(&line.as_bytes()[..at]);
            if at >= end {
                prop_assert_eq!(h.id.as_deref(), Some(id.as_str()));
                prop_assert_eq!(h.resource_type.as_deref(), Some("Patient"));
            } else {
                prop_assert_eq!(h.id, None);
            }
        }

        /// Whatever replaces the text after the id, the id stays; a break before it hides it.
        #[test]
        fn damage_after_the_id_does_not_hide_it_and_damage_before_does(
            before in arb_members(),
            id in "[A-Za-z0-9.-]{1,64}",
            garbage in prop::collection::vec(any::<u8>(), 0..40),
            breaker in prop_oneof![Just("]"), Just("}}"), Just(",,"), Just("\"x\" 1,"), Just(":")],
        ) {
            let (line, end) = line_with(&member_text(&before), &id, "");
            let mut damaged = line.as_bytes()[..end].to_vec();
            damaged.extend_from_slice(&garbage);
            prop_assert_eq!(scan_header(&damaged).id, Some(id.clone()));
            let (broken, _) = line_with(&format!("{}{breaker}", member_text(&before)), &id, "");
            prop_assert_eq!(scan_header(broken.as_bytes()).id, None);
        }
    }
}
