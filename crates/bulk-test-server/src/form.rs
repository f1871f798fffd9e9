//! Decoding of URL parts and form bodies, with the decoders of the `url` crate (and of
//! `percent-encoding`, the crate it decodes with).
use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// `application/x-www-form-urlencoded` pairs: a query string or a form body.
pub(crate) fn pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input).into_owned().collect()
}

/// One path segment, percent-decoded (in a path, `+` is a plus sign).
pub(crate) fn path_segment(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// One form-urlencoded value (`+` is a space), strictly: `None` for a malformed escape or for
/// bytes that do not decode to UTF-8, where a lenient decoder would keep or replace them.
pub(crate) fn value(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let escapes_well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_well_formed {
        return None;
    }
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_form_decoded_strictly() {
        assert_eq!(value("my+client").as_deref(), Some("my client"));
        assert_eq!(
            value("p%40ss%3Aw%2Brd%2F%C3%BC").as_deref(),
            Some("p@ss:w+rd/ü")
        );
        assert_eq!(value("bad%2"), None);
        assert_eq!(value("bad%zz"), None);
        assert_eq!(value("%ff"), None);
    }

    #[test]
    fn path_segments_keep_plus_signs() {
        assert_eq!(path_segment("a+b%20c%2Fd"), "a+b c/d");
        assert_eq!(path_segment("x&y=z"), "x&y=z");
    }

    #[test]
    fn pairs_decode_names_and_values() {
        assert_eq!(
            pairs(b"_type=Patient%2CObservation&_since=2024-01-01T00%3A00%3A00Z&a+b=c+d"),
            vec![
                ("_type".to_string(), "Patient,Observation".to_string()),
                ("_since".to_string(), "2024-01-01T00:00:00Z".to_string()),
                ("a b".to_string(), "c d".to_string()),
            ]
        );
    }
}
