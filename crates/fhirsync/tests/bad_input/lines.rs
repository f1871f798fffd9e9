//! Bad NDJSON lines through `fhirsync import`. Each bad line stands between two good Patients
//! in `Patient.ndjson` (line 2 unless said otherwise), beside a good `Observation.ndjson`.
//!
//! The rules decided here are those of docs/encoding.md: a line that is not a JSON object of a
//! supported type with a string id is rejected; an element that cannot be encoded is stored as
//! null (the resource is kept, as it is in Pathling, which keeps what HAPI parses); unknown
//! elements are ignored.
use fhirsync::config::SaveMode;
use fhirsync::sync::{ImportRequest, run_import};

use crate::harness::{Case, Expect, run_family};

const BEFORE: &str = r#"{"resourceType":"Patient","id":"before","gender":"female"}"#;
const AFTER: &str = r#"{"resourceType":"Patient","id":"after","gender":"male"}"#;
const OBSERVATION: &str =
    r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"}}"#;
const NEIGHBOURS: [(&str, &str); 3] = [
    ("Patient", "before"),
    ("Patient", "after"),
    ("Observation", "o1"),
];

/// The longest line the import reads (the encoder's default limit).
const MAX_LINE: usize = fhir_encoder::DEFAULT_MAX_LINE_BYTES;

/// `Patient.ndjson` holding `text` as it is, beside the good Observation file.
fn patients(kind: &'static str, decided: &'static str, text: Vec<u8>, expect: Expect) -> Case {
    Case::new(kind, decided, expect)
        .file("Patient.ndjson", text)
        .file("Observation.ndjson", format!("{OBSERVATION}\n"))
        .neighbours(&NEIGHBOURS)
}

/// The bad line as line 2 of `Patient.ndjson`.
fn line(kind: &'static str, decided: &'static str, bad: impl AsRef<[u8]>, expect: Expect) -> Case {
    let mut text = format!("{BEFORE}\n").into_bytes();
    text.extend_from_slice(bad.as_ref());
    text.extend_from_slice(format!("\n{AFTER}\n").as_bytes());
    patients(kind, decided, text, expect)
}

/// A Patient `id` with `members` added (JSON text, without braces).
fn patient(id: &str, members: &str) -> String {
    format!(r#"{{"resourceType":"Patient","id":"{id}",{members}}}"#)
}

fn rejected(reason: &'static str) -> Expect {
    Expect::Rejected {
        file: "Patient.ndjson",
        line: 2,
        reason,
    }
}

/// The resource `table/id` is kept and `expr` over its row answers `want`.
fn kept_with(table: &'static str, id: &'static str, checks: &[(&str, &'static str)]) -> Expect {
    Expect::Kept {
        table,
        id,
        checks: checks
            .iter()
            .map(|(expr, want)| {
                (
                    format!("SELECT {expr} FROM {table} WHERE id = '{id}'"),
                    *want,
                )
            })
            .collect(),
    }
}

fn kept(id: &'static str, checks: &[(&str, &'static str)]) -> Expect {
    kept_with("Patient", id, checks)
}

/// The Observation `id` with `members` added.
fn observation(id: &str, members: &str) -> String {
    format!(
        r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"x"}},{members}}}"#
    )
}

/// `depth` nested arrays in an unknown element of a Patient.
fn nested(id: &str, depth: usize) -> String {
    patient(
        id,
        &format!(r#""unknown":{}1{}"#, "[".repeat(depth), "]".repeat(depth)),
    )
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    const INVALID: &str = "invalid JSON";
    const NOT_OBJECT: &str = "not a JSON object";
    const NO_TYPE: &str = "no resourceType";
    const NO_ID: &str = "no id";
    const NOT_UTF8: &str = "not valid UTF-8";
    const SURROGATE: &str = "unpaired surrogate";
    vec![
        // JSON syntax: the line is rejected, its neighbours kept.
        line("invalid JSON: cut off", "rejected", r#"{"resourceType":"Patient","id":"cut","gender":"fem"#, rejected(INVALID)),
        line("invalid JSON: trailing comma", "rejected", r#"{"resourceType":"Patient","id":"comma",}"#, rejected(INVALID)),
        line("invalid JSON: single quotes", "rejected", "{'resourceType':'Patient','id':'q'}", rejected(INVALID)),
        line("invalid JSON: a bare word", "rejected", "undefined", rejected(INVALID)),
        line("invalid JSON: two objects on one line", "rejected: a line is one JSON text", format!("{} {}", patient("two-a", r#""gender":"male""#), patient("two-b", r#""gender":"male""#)), rejected(INVALID)),
        line("invalid JSON: unescaped control character in a string", "rejected: JSON requires control characters to be escaped", "{\"resourceType\":\"Patient\",\"id\":\"tab\",\"gender\":\"ma\tle\"}", rejected(INVALID)),
        line("invalid JSON: raw NUL byte in a string", "rejected", b"{\"resourceType\":\"Patient\",\"id\":\"nul\",\"gender\":\"ma\0le\"}", rejected(INVALID)),
        line("NUL bytes for a line (a file padded after a crash)", "rejected", [0u8; 64], rejected(INVALID)),
        // Not an object.
        line("not an object: an array of a resource", "rejected", format!("[{}]", patient("arr", r#""gender":"male""#)), rejected(NOT_OBJECT)),
        line("not an object: a string", "rejected", r#""Patient""#, rejected(NOT_OBJECT)),
        line("not an object: null", "rejected", "null", rejected(NOT_OBJECT)),
        line("not an object: a number", "rejected", "42", rejected(NOT_OBJECT)),
        // resourceType.
        line("resourceType missing", "rejected", r#"{"id":"no-type","gender":"male"}"#, rejected(NO_TYPE)),
        line("resourceType not a string", "rejected", r#"{"resourceType":7,"id":"seven"}"#, rejected(NO_TYPE)),
        line("resourceType null", "rejected", r#"{"resourceType":null,"id":"null-type"}"#, rejected(NO_TYPE)),
        line("resourceType unknown", "rejected", r#"{"resourceType":"Pateint","id":"typo"}"#, rejected(r#"unknown resourceType "Pateint""#)),
        line("resourceType in lower case", "rejected: type names are case-sensitive", r#"{"resourceType":"patient","id":"lower"}"#, rejected(r#"unknown resourceType "patient""#)),
        line("resourceType empty", "rejected", r#"{"resourceType":"","id":"empty-type"}"#, rejected(r#"unknown resourceType """#)),
        line("resourceType not supported by the encoding (Bundle)", "rejected, as Pathling refuses it", r#"{"resourceType":"Bundle","id":"b1","type":"collection"}"#, rejected("not supported by the Pathling encoding")),
        line("resourceType of another type than the file's name", "kept in its own type's table: an import's files are not typed", observation("in-patient-file", r#""valueString":"x""#), kept_with("Observation", "in-patient-file", &[])),
        line("resourceType given twice", "the first value wins, as for every duplicated key", r#"{"resourceType":"Patient","resourceType":"Observation","id":"twice-type"}"#, kept("twice-type", &[])),
        // id.
        line("id missing", "rejected: the tables merge by id", patient("x", r#""gender":"male""#).replace(r#""id":"x","#, ""), rejected(NO_ID)),
        line("id empty", "rejected", patient("", r#""gender":"male""#), rejected("empty id")),
        line("id a number", "rejected: ids are strings", r#"{"resourceType":"Patient","id":42}"#, rejected(NO_ID)),
        line("id null", "rejected", r#"{"resourceType":"Patient","id":null}"#, rejected(NO_ID)),
        line("id an object", "rejected", r#"{"resourceType":"Patient","id":{"value":"x"}}"#, rejected(NO_ID)),
        line("id over 64 characters", "kept as given: the id is only the merge key", patient(&"l".repeat(200), r#""gender":"male""#), kept(long_id(), &[])),
        line("id with characters FHIR does not allow", "kept as given, quotes and all", patient(r#"a b/c'\u00fc"#, r#""gender":"male""#), kept(ILLEGAL_ID, &[])),
        // Encoding.
        line("invalid UTF-8 (a Latin-1 byte)", "rejected", b"{\"resourceType\":\"Patient\",\"id\":\"latin1\",\"name\":[{\"family\":\"M\xfcller\"}]}", rejected(NOT_UTF8)),
        line("invalid UTF-8 (an overlong encoding)", "rejected", b"{\"resourceType\":\"Patient\",\"id\":\"overlong\",\"gender\":\"\xc0\xafmale\"}", rejected(NOT_UTF8)),
        line("unpaired high surrogate", "rejected", patient("hi", r#""name":[{"family":"\ud800"}]"#), rejected(SURROGATE)),
        line("unpaired low surrogate", "rejected", patient("lo", r#""name":[{"family":"\udc00x"}]"#), rejected(SURROGATE)),
        line("high surrogate followed by a non-surrogate escape", "rejected", patient("hi-a", r#""name":[{"family":"\ud800\u0041"}]"#), rejected(SURROGATE)),
        line("escaped NUL and a surrogate pair in a string", "kept exactly: both are valid JSON", patient("escapes", r#""name":[{"family":"a\u0000b\ud83d\ude00"}]"#), kept("escapes", &[("name[1]['family'] = concat('a', chr(0), 'b', chr(128512))", "true")])),
        // Nesting.
        line("nesting bomb: 100,000 nested arrays", "rejected without exhausting the stack", nested("bomb", 100_000), rejected("nesting too deep")),
        line("nesting bomb: 100,000 nested objects", "rejected without exhausting the stack", patient("obj-bomb", &format!(r#""unknown":{}1{}"#, r#"{"a":"#.repeat(100_000), "}".repeat(100_000))), rejected("nesting too deep")),
        line("deep but allowed nesting (200 levels) in an unknown element", "kept, the element ignored", nested("deep", 200), kept("deep", &[])),
        // Line framing.
        line("line over the length limit", "rejected with its line number, without holding the line in memory", patient("huge", &format!(r#""text":{{"div":"{}"}}"#, "x".repeat(MAX_LINE))), rejected("over the limit")),
        patients("byte order mark at the start of the file", "ignored: the line is read (RFC 8259 lets parsers ignore a BOM)", format!("\u{feff}{BEFORE}\n{AFTER}\n").into_bytes(), Expect::Skipped),
        patients("byte order mark at the start of a later line (files concatenated)", "ignored, as at the start of the file", format!("{BEFORE}\n\u{feff}{AFTER}\n").into_bytes(), Expect::Skipped),
        patients("CRLF line endings", "accepted", format!("{BEFORE}\r\n{AFTER}\r\n").into_bytes(), Expect::Skipped),
        patients("no newline after the last line", "the last line is read", format!("{BEFORE}\n{AFTER}").into_bytes(), Expect::Skipped),
        patients("blank and whitespace-only lines", "skipped; they still count in later lines' numbers", format!("\n{BEFORE}\n\n  \t \r\n{}\n{AFTER}\n\n", patient("x", "\"gender\":\"male\"").replace(r#""id":"x","#, "")).into_bytes(), Expect::Rejected { file: "Patient.ndjson", line: 5, reason: NO_ID }),
        // Values that cannot be encoded: the resource is kept, the element stored as null.
        line("impossible date", "kept, the date stored as null", patient("feb30", r#""birthDate":"2020-02-30""#), kept("feb30", &[(r#""birthDate" IS NULL"#, "true")])),
        line("date in another format", "kept, the date stored as null", patient("us-date", r#""birthDate":"01/02/2020""#), kept("us-date", &[(r#""birthDate" IS NULL"#, "true")])),
        line("dateTime with a time but no time zone", "kept, stored as null", patient("no-zone", r#""deceasedDateTime":"2020-01-01T10:00:00""#), kept("no-zone", &[(r#""deceasedDateTime" IS NULL"#, "true")])),
        line("instant that is not a time", "kept, stored as null", patient("yesterday", r#""meta":{"lastUpdated":"yesterday"}"#), kept("yesterday", &[("meta['lastUpdated'] IS NULL", "true")])),
        line("instant without a time zone", "kept, stored as null", patient("local", r#""meta":{"lastUpdated":"2020-01-01T10:00:00"}"#), kept("local", &[("meta['lastUpdated'] IS NULL", "true")])),
        line("instant with an offset out of range", "kept, stored as null", patient("plus25", r#""meta":{"lastUpdated":"2020-01-01T10:00:00+25:00"}"#), kept("plus25", &[("meta['lastUpdated'] IS NULL", "true")])),
        line("instant before 1900", "kept exactly", patient("old", r#""meta":{"lastUpdated":"1850-06-01T12:00:00+01:00"}"#), kept("old", &[("CAST(meta['lastUpdated'] AS BIGINT)", "-3773739600000000")])),
        line("decimal too large for DECIMAL(32,6)", "kept, stored as null", observation("big", r#""valueQuantity":{"value":1e40}"#), kept_with("Observation", "big", &[("\"valueQuantity\"['value'] IS NULL", "true")])),
        line("decimal with a huge exponent", "kept, stored as null, at once", observation("exp", r#""valueQuantity":{"value":1e999999999}"#), kept_with("Observation", "exp", &[("\"valueQuantity\"['value'] IS NULL", "true")])),
        line("decimal with 100,000 digits", "kept, stored as null, at once", observation("digits", &format!(r#""valueQuantity":{{"value":{}}}"#, "9".repeat(100_000))), kept_with("Observation", "digits", &[("\"valueQuantity\"['value'] IS NULL", "true")])),
        line("integer out of 32-bit range", "kept, stored as null", patient("int", r#""multipleBirthInteger":3000000000"#), kept("int", &[(r#""multipleBirthInteger" IS NULL"#, "true")])),
        line("integer with a fraction", "kept, stored as null", patient("frac", r#""multipleBirthInteger":1.5"#), kept("frac", &[(r#""multipleBirthInteger" IS NULL"#, "true")])),
        line("negative unsignedInt", "kept, stored as null", patient("neg", r#""photo":[{"size":-1}]"#), kept("neg", &[("photo[1]['size'] IS NULL", "true")])),
        line("base64Binary that is not base64", "kept, stored as null", patient("b64", r#""photo":[{"data":"***"}]"#), kept("b64", &[("photo[1]['data'] IS NULL", "true")])),
        // Elements of the wrong JSON type.
        line("boolean given as a string", "kept, stored as null", patient("bool", r#""active":"true""#), kept("bool", &[("active IS NULL", "true")])),
        line("string given as a number", "kept, stored as null", patient("num", r#""gender":1"#), kept("num", &[("gender IS NULL", "true")])),
        line("array given as an object", "kept, stored as an empty list", patient("obj", r#""name":{"family":"x"}"#), kept("obj", &[("cardinality(name)", "0")])),
        line("object given as a string", "kept, stored as an empty group", patient("str", r#""maritalStatus":"M""#), kept("str", &[(r#""maritalStatus"['text'] IS NULL"#, "true")])),
        line("object given as an array", "kept, stored as an empty group", patient("arr-obj", r#""maritalStatus":[{"text":"M"}]"#), kept("arr-obj", &[(r#""maritalStatus"['text'] IS NULL"#, "true")])),
        // Choice, duplicate and unknown elements.
        line("two values of one choice element", "kept with the first value in the line; the other stored as null", patient("choice", r#""deceasedBoolean":true,"deceasedDateTime":"2020-01-01""#), kept("choice", &[(r#""deceasedBoolean" IS NOT NULL AND "deceasedDateTime" IS NULL"#, "true")])),
        line("duplicate key", "the first value is kept", patient("dup", r#""gender":"female","gender":"male""#), kept("dup", &[("gender", "female")])),
        line("unknown element", "kept, the element ignored", patient("unknown", r#""favouriteColour":"blue","gender":"male""#), kept("unknown", &[("gender", "male")])),
        line("element named like a derived column", "ignored: derived columns are computed, never read", patient("derived", r#""id_versioned":"Patient/evil","_fid":7,"gender":"male""#), kept("derived", &[("id_versioned", "Patient/derived")])),
        line("primitive extension (_birthDate)", "ignored; the value kept", patient("ext", r#""birthDate":"2001-02-03","_birthDate":{"extension":[{"url":"x","valueString":"y"}]}"#), kept("ext", &[(r#""birthDate""#, "2001-02-03")])),
        line("huge array: 100,000 identifiers", "kept whole", patient("many", &format!(r#""identifier":[{}]"#, vec![r#"{"value":"v"}"#; 100_000].join(","))), kept("many", &[("cardinality(identifier)", "100000")])),
    ]
}

/// A 200-character id.
fn long_id() -> &'static str {
    Box::leak("l".repeat(200).into_boxed_str())
}

const ILLEGAL_ID: &str = "a b/c'\u{fc}";

fn import(input: std::path::PathBuf, delta: std::path::PathBuf) -> ImportRequest {
    ImportRequest {
        input,
        delta_path: delta.display().to_string(),
        save_mode: SaveMode::Merge,
        resource_types: None,
        max_rejects: None,
        max_nesting_level: 3,
        extensions: false,
        keep_json: false,
        deletion_vectors: false,
        events: Default::default(),
    }
}

/// Runs `cases` through `fhirsync import`.
pub fn run_imports(family: &str, cases: Vec<Case>) {
    run_family(family, cases, |input, delta| async move {
        run_import(&import(input, delta)).await
    });
}

#[test]
fn bad_lines_are_rejected_or_kept_as_decided_and_their_neighbours_land() {
    run_imports("lines", cases());
}
