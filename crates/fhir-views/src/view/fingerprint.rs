//! A stable fingerprint of a view's JSON: FNV-1a (128 bits) over a canonical text (object keys
//! sorted, no whitespace), so it does not change with key order, formatting, the process or
//! the platform (std's hashers are seeded per process).
use serde_json::Value;

const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

/// 32 lower-case hex digits.
pub(crate) fn of(v: &Value) -> String {
    let mut text = String::new();
    canonical(v, &mut text);
    format!("{:032x}", fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// Compact JSON with object keys in byte order, whatever order `serde_json::Map` keeps.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(text: &str) -> String {
        of(&serde_json::from_str(text).expect("test JSON"))
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a = fp(r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}"#);
        let b = fp(
            r#"{ "select": [ { "column": [ { "path": "id", "name": "id" } ] } ],
                 "resource": "Patient" }"#,
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn any_change_of_content_changes_it() {
        let base =
            fp(r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]}]}"#);
        for changed in [
            r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id.x"}]}]}"#,
            r#"{"resource":"Patient","select":[{"column":[{"name":"ix","path":"id"}]}]}"#,
            r#"{"resource":"Person","select":[{"column":[{"name":"id","path":"id"}]}]}"#,
            r#"{"resource":"Patient","select":[{"column":[{"name":"id","path":"id"}]},{}]}"#,
        ] {
            assert_ne!(fp(changed), base, "{changed}");
        }
    }

    #[test]
    fn known_values_are_stable_across_runs_and_platforms() {
        // The published FNV-1a 128 test vector for "a", then the canonical text "{}".
        assert_eq!(
            format!("{:032x}", fnv1a(b"a")),
            "d228cb696f1a8caf78912b704e4a8964"
        );
        assert_eq!(fp("{ }"), "0880955dd2ab1be95aa0733055c655b5");
    }
}
