//! Checks UCUM canonicalisation against Pathling's encoding of the Synthea
//! fixture: every Quantity in every golden row must get the same
//! `_value_canonicalized` and `_code_canonicalized`.
//!
//! Golden values are Spark decimal(32,6) numbers with `value_scale` capped at
//! 6, so the original literal is rebuilt from value and scale, and taken from
//! the source NDJSON when the scale may have been capped.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fhir_encoder::ucum::{CanonicalFields, canonicalize, canonicalize_fields};
use flate2::read::GzDecoder;
use serde_json::value::RawValue;

const UCUM_SYSTEM: &str = "http://unitsofmeasure.org";

fn crate_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

fn golden_files() -> Vec<PathBuf> {
    let dir = crate_dir().join("tests/golden/rows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    files.sort();
    assert!(files.len() >= 19, "expected the golden rows of 19 types");
    files
}

fn gz_lines(path: &Path) -> impl Iterator<Item = String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(GzDecoder::new(file))
        .lines()
        .map(|l| l.unwrap())
}

type Object = BTreeMap<String, Box<RawValue>>;

fn as_object(raw: &RawValue) -> Option<Object> {
    raw.get()
        .starts_with('{')
        .then(|| serde_json::from_str(raw.get()).unwrap())
}

fn as_string(raw: &RawValue) -> String {
    serde_json::from_str(raw.get()).unwrap()
}

/// A Quantity as Pathling encoded it.
#[derive(Debug)]
struct GoldenQuantity {
    resource_type: String,
    id: String,
    /// Decimal text as Spark printed it, e.g. `0.640000`.
    value: String,
    value_scale: u32,
    code: String,
    expected: CanonicalFields,
}

fn collect(raw: &RawValue, resource_type: &str, id: &str, out: &mut Vec<GoldenQuantity>) {
    let text = raw.get();
    // Every Quantity carries `value_scale`; skip subtrees without one.
    if !text.contains("value_scale") {
        return;
    }
    if text.starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).unwrap();
        for item in &items {
            collect(item, resource_type, id, out);
        }
        return;
    }
    let Some(object) = as_object(raw) else { return };
    let canonical_keys =
        object.contains_key("_code_canonicalized") || object.contains_key("_value_canonicalized");
    let quantity_shaped = object.contains_key("value_scale") && object.contains_key("code");
    if canonical_keys || quantity_shaped {
        let system = object.get("system").map(|s| as_string(s));
        assert_eq!(system.as_deref(), Some(UCUM_SYSTEM), "{resource_type}/{id}");
        if let (Some(value), Some(scale), Some(code)) = (
            object.get("value"),
            object.get("value_scale"),
            object.get("code"),
        ) {
            let value_canonical = object.get("_value_canonicalized").map(|v| {
                let v = as_object(v).unwrap();
                let unscaled: i128 = v["value"].get().parse().unwrap();
                let scale: i32 = v["scale"].get().parse().unwrap();
                (unscaled, scale)
            });
            out.push(GoldenQuantity {
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
                value: value.get().to_owned(),
                value_scale: scale.get().parse().unwrap(),
                code: as_string(code),
                expected: CanonicalFields {
                    value: value_canonical,
                    code: object.get("_code_canonicalized").map(|c| as_string(c)),
                },
            });
        }
    }
    for value in object.values() {
        collect(value, resource_type, id, out);
    }
}

fn golden_quantities() -> &'static [GoldenQuantity] {
    static QUANTITIES: OnceLock<Vec<GoldenQuantity>> = OnceLock::new();
    QUANTITIES.get_or_init(read_golden_quantities)
}

fn read_golden_quantities() -> Vec<GoldenQuantity> {
    let mut out = Vec::new();
    for path in golden_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let resource_type = name.trim_end_matches(".jsonl.gz").to_owned();
        for line in gz_lines(&path) {
            let row: Object = serde_json::from_str(&line).unwrap();
            let id = as_string(&row["id"]);
            for value in row.values() {
                collect(value, &resource_type, &id, &mut out);
            }
        }
    }
    out
}

/// Every `"value":<number>` literal in each source resource, by type and id.
fn source_literals(types: &[&str]) -> HashMap<(String, String), Vec<String>> {
    let dir = crate_dir().join("../bulk-test-server/data/synthea-100");
    let mut map = HashMap::new();
    for resource_type in types {
        let path = dir.join(format!("{resource_type}.ndjson.gz"));
        for line in gz_lines(&path) {
            let row: Object = serde_json::from_str(&line).unwrap();
            let id = as_string(&row["id"]);
            let literals = line
                .match_indices("\"value\":")
                .map(|(i, m)| {
                    line[i + m.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
                        .collect::<String>()
                })
                .filter(|l| !l.is_empty())
                .collect();
            map.insert((resource_type.to_string(), id), literals);
        }
    }
    map
}

/// The literal Spark's decimal(32,6) text stands for at `scale` places.
fn literal_at_scale(value: &str, scale: u32) -> String {
    let (int_part, frac) = value.split_once('.').unwrap_or((value, ""));
    let frac: String = frac.chars().take(scale as usize).collect();
    assert!(
        frac.len() == scale as usize,
        "{value} has fewer than {scale} places"
    );
    if scale == 0 {
        int_part.to_owned()
    } else {
        format!("{int_part}.{frac}")
    }
}

#[test]
fn every_golden_quantity_matches_pathling() {
    let quantities = golden_quantities();
    assert!(
        quantities.len() > 16_000,
        "found only {} quantities",
        quantities.len()
    );

    // A scale of 6 may be the cap: take those literals from the source.
    let capped_types: Vec<&str> = {
        let mut t: Vec<&str> = quantities
            .iter()
            .filter(|q| q.value_scale >= 6)
            .map(|q| q.resource_type.as_str())
            .collect();
        t.sort();
        t.dedup();
        t
    };
    let sources = source_literals(&capped_types);

    let mut mismatches = Vec::new();
    let mut with_value = 0usize;
    let mut codes_only = 0usize;
    for q in quantities {
        let literal = if q.value_scale >= 6 {
            let golden: f64 = q.value.parse().unwrap();
            let candidates = &sources[&(q.resource_type.clone(), q.id.clone())];
            candidates
                .iter()
                .find(|l| (l.parse::<f64>().unwrap() - golden).abs() <= 5.000_001e-7)
                .unwrap_or_else(|| panic!("no source literal for {q:?}"))
                .clone()
        } else {
            literal_at_scale(&q.value, q.value_scale)
        };
        let actual = canonicalize_fields(&literal, &q.code);
        if actual != q.expected {
            mismatches.push(format!(
                "{}/{}: {literal} {:?} -> {actual:?}, Pathling {:?}",
                q.resource_type, q.id, q.code, q.expected
            ));
        }
        // The combined form is present exactly when both columns are.
        let combined = canonicalize(&literal, &q.code);
        assert_eq!(
            combined.is_some(),
            q.expected.value.is_some() && q.expected.code.is_some()
        );
        match (&q.expected.value, &q.expected.code) {
            (Some(_), Some(_)) => with_value += 1,
            (None, Some(_)) => codes_only += 1,
            _ => {}
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} quantities differ from Pathling:\n{}",
        mismatches.len(),
        quantities.len(),
        mismatches[..mismatches.len().min(40)].join("\n")
    );
    // Guard against a walk that silently finds nothing of interest.
    assert!(with_value > 16_000, "{with_value}");
    assert!(codes_only > 0, "special units (Cel) not exercised");
    println!(
        "{} quantities checked: {with_value} with value and code, {codes_only} code only, {} neither",
        quantities.len(),
        quantities.len() - with_value - codes_only
    );
}

#[test]
fn every_distinct_golden_unit_is_exercised() {
    let mut codes: Vec<&str> = golden_quantities()
        .iter()
        .map(|q| q.code.as_str())
        .collect();
    codes.sort();
    codes.dedup();
    for code in [
        "mg/dL",
        "mm[Hg]",
        "/min",
        "mmol/L",
        "cm",
        "{score}",
        "kg",
        "kg/m2",
        "%",
        "fL",
        "g/dL",
        "10*3/uL",
        "U/L",
        "pg",
        "10*6/uL",
        "kU/L",
        "g/L",
        "mL/min",
        "Cel",
        "mL/min/{1.73_m2}",
        "mg/g",
        "{count}",
        "ng/mL",
        "mm",
        "{T-score}",
        "{nominal}",
        "pH",
        "(score)",
        "units",
    ] {
        assert!(codes.contains(&code), "{code} missing from golden rows");
    }
}
