//! Round trip on the Synthea fixture: every resource encoded (default options and with
//! extensions), decoded, and compared with its original after normalising exactly the losses
//! the encoding documents.
mod common;

use std::collections::BTreeMap;

use arrow_schema::{DataType, Fields};
use common::{encode_file, gz_lines, synthea_dir};
use fhir_encoder::json::{Doc, Tape, Tok};
use fhir_encoder::{Decoder, Encoder, EncoderOptions};

/// JSON with numbers kept as written (decimals are compared by their text).
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

fn parse(text: &str) -> J {
    let mut tape = Tape::default();
    let doc = tape.parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    to_j(&doc, 0)
}

fn to_j(doc: &Doc, i: u32) -> J {
    match doc.tok(i) {
        Tok::Null => J::Null,
        Tok::Bool(b) => J::Bool(b),
        Tok::Num(..) => J::Num(doc.num(i).expect("number").to_string()),
        Tok::Str(..) | Tok::Esc(..) => J::Str(doc.str(i).expect("string").to_string()),
        Tok::Arr(_) => J::Arr(doc.items(i).map(|j| to_j(doc, j)).collect()),
        Tok::Obj(_) => J::Obj(
            doc.members(i)
                .map(|(k, v)| (k.to_string(), to_j(doc, v)))
                .collect(),
        ),
    }
}

/// What normalising took away or changed, by kind.
#[derive(Debug, Default)]
struct Stats {
    primitive_extensions: usize,
    contained_or_modifier: usize,
    extensions: usize,
    not_in_schema: Vec<String>,
    emptied: usize,
    decimals_rounded: usize,
    instants: usize,
}

impl Stats {
    fn removed_nothing(&self) -> bool {
        self.primitive_extensions == 0
            && self.contained_or_modifier == 0
            && self.extensions == 0
            && self.not_in_schema.is_empty()
            && self.emptied == 0
            && self.decimals_rounded == 0
    }
}

struct Norm<'a> {
    /// The Extension group of `_extension`, when extensions are encoded.
    ext: Option<&'a Fields>,
    stats: Stats,
}

fn is_empty(v: &J) -> bool {
    match v {
        J::Null => true,
        J::Arr(a) => a.is_empty(),
        J::Obj(o) => o.is_empty(),
        _ => false,
    }
}

impl Norm<'_> {
    fn group(&mut self, path: &str, obj: &mut BTreeMap<String, J>, fields: &Fields, root: bool) {
        let mut keep = BTreeMap::new();
        for (k, mut v) in std::mem::take(obj) {
            if k.starts_with('_') {
                self.stats.primitive_extensions += 1;
                continue;
            }
            if k == "contained" || k == "modifierExtension" {
                self.stats.contained_or_modifier += 1;
                continue;
            }
            if root && k == "resourceType" {
                keep.insert(k, v);
                continue;
            }
            let path = format!("{path}.{k}");
            if k == "extension" {
                match self.ext {
                    Some(ext) if fields.find("_fid").is_some() => {
                        let dt = DataType::List(std::sync::Arc::new(arrow_schema::Field::new(
                            "element",
                            DataType::Struct(ext.clone()),
                            true,
                        )));
                        self.value(&path, &mut v, &dt);
                    }
                    _ => {
                        self.stats.extensions += 1;
                        continue;
                    }
                }
            } else {
                let Some((_, f)) = fields.find(&k) else {
                    self.stats.not_in_schema.push(path);
                    continue;
                };
                self.value(&path, &mut v, f.data_type());
            }
            if is_empty(&v) {
                self.stats.emptied += 1;
                continue;
            }
            keep.insert(k, v);
        }
        *obj = keep;
    }

    fn value(&mut self, path: &str, v: &mut J, dt: &DataType) {
        match (v, dt) {
            (J::Arr(items), DataType::List(item)) => {
                for i in items.iter_mut() {
                    self.value(path, i, item.data_type());
                }
                let before = items.len();
                items.retain(|i| !is_empty(i));
                self.stats.emptied += before - items.len();
            }
            (J::Obj(o), DataType::Struct(fields)) => self.group(path, o, fields, false),
            (J::Num(text), DataType::Decimal128(..)) => {
                let rounded = round6(text);
                if rounded != *text {
                    self.stats.decimals_rounded += 1;
                    *text = rounded;
                }
            }
            (J::Str(text), DataType::Timestamp(..)) => {
                let t = chrono::DateTime::parse_from_rfc3339(text)
                    .unwrap_or_else(|e| panic!("{path}: {text}: {e}"));
                *text = format!("@{}", t.timestamp_micros());
                self.stats.instants += 1;
            }
            _ => {}
        }
    }
}

/// A decimal's text as the encoding keeps it: rounded half-up (away from zero) to 6 places
/// when it has more, and without the sign of a zero.
fn round6(text: &str) -> String {
    assert!(!text.contains(['e', 'E']), "exponent in {text}");
    let (neg, abs) = match text.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, text),
    };
    let (int, frac) = abs.split_once('.').unwrap_or((abs, ""));
    let zero = abs.bytes().all(|b| b == b'0' || b == b'.');
    if frac.len() <= 6 {
        return if zero {
            abs.to_string()
        } else {
            text.to_string()
        };
    }
    let mut n: u128 = format!("{int}{}", &frac[..6]).parse().expect("digits");
    if frac.as_bytes()[6] >= b'5' {
        n += 1;
    }
    let sign = if neg && n != 0 { "-" } else { "" };
    format!("{sign}{}.{:06}", n / 1_000_000, n % 1_000_000)
}

fn synthea_types() -> Vec<String> {
    let mut types: Vec<String> = std::fs::read_dir(synthea_dir())
        .expect("fixture directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".ndjson.gz").map(str::to_string))
        .collect();
    types.sort();
    types
}

/// Per configuration: resources compared, resources that differ from their original before
/// normalisation, and what normalising the originals took away.
fn round_trip(options: EncoderOptions) -> (usize, usize, Stats) {
    let extensions = options.enable_extensions;
    let encoder = Encoder::new(options);
    let mut compared = 0;
    let mut differ_raw = 0;
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for rt in synthea_types() {
        let path = synthea_dir().join(format!("{rt}.ndjson.gz"));
        let (batches, warnings, rejects) = encode_file(&encoder, &rt, &path);
        assert!(rejects.is_empty(), "{rejects:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        let originals: Vec<Vec<u8>> = gz_lines(&path)
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect();
        let schema = batches[0].schema();
        let decoder = Decoder::new(&rt, &schema).expect("decoder");
        assert_eq!(decoder.has_extensions(), extensions);
        let ext_fields = match schema.field_with_name("_extension").map(|f| f.data_type()) {
            Ok(DataType::Map(entries, _)) => match entries.data_type() {
                DataType::Struct(kv) => match kv[1].data_type() {
                    DataType::List(item) => match item.data_type() {
                        DataType::Struct(f) => Some(f.clone()),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        assert_eq!(ext_fields.is_some(), extensions);
        let mut decoded = Vec::new();
        let mut line = String::new();
        for batch in &batches {
            let mut rows = decoder.rows(batch).expect("bound");
            for r in 0..rows.len() {
                line.clear();
                rows.write_json(r, &mut line).expect("row");
                decoded.push(line.clone());
            }
        }
        assert_eq!(decoded.len(), originals.len(), "{rt}");
        for (orig, dec) in originals.iter().zip(&decoded) {
            let orig = parse(std::str::from_utf8(orig).expect("UTF-8"));
            let dec_raw = parse(dec);
            if orig != dec_raw {
                differ_raw += 1;
            }
            let mut norm = Norm {
                ext: ext_fields.as_ref(),
                stats: Stats::default(),
            };
            let (J::Obj(mut o), J::Obj(mut d)) = (orig, dec_raw) else {
                panic!("{rt}: not objects");
            };
            norm.group(&rt, &mut o, schema.fields(), true);
            let mut check = Norm {
                ext: ext_fields.as_ref(),
                stats: Stats::default(),
            };
            check.group(&rt, &mut d, schema.fields(), true);
            assert!(
                check.stats.removed_nothing(),
                "{rt}: the decoder wrote what the encoding cannot have: {:?}\n{dec}",
                check.stats
            );
            assert!(
                !dec.contains("_fid") && !dec.contains("_scale") && !dec.contains("_versioned")
            );
            if o != d && failures.len() < 5 {
                failures.push(format!("{rt}: original {o:?}\n  decoded {d:?}"));
            }
            compared += 1;
            let s = norm.stats;
            total.primitive_extensions += s.primitive_extensions;
            total.contained_or_modifier += s.contained_or_modifier;
            total.extensions += s.extensions;
            total.not_in_schema.extend(s.not_in_schema);
            total.emptied += s.emptied;
            total.decimals_rounded += s.decimals_rounded;
            total.instants += s.instants;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    (compared, differ_raw, total)
}

#[test]
fn synthea_round_trips_with_default_options() {
    let (compared, differ_raw, stats) = round_trip(EncoderOptions::default());
    println!(
        "default options: {compared} compared, {differ_raw} differ before normalising, {stats:?}"
    );
    assert_eq!(compared, 38_483);
    // Extensions (Patient, ...) and `contained` (ExplanationOfBenefit) are lost without
    // extensions; decimals with 15 places are rounded; instants have offsets.
    assert!(differ_raw > 10_000, "{differ_raw}");
    assert!(stats.extensions > 100, "{stats:?}");
    assert!(stats.contained_or_modifier > 100, "{stats:?}");
    assert!(stats.decimals_rounded > 0, "{stats:?}");
    assert!(stats.instants > 1_000, "{stats:?}");
    assert!(stats.not_in_schema.is_empty(), "{:?}", stats.not_in_schema);
}

#[test]
fn synthea_round_trips_with_extensions() {
    let options = EncoderOptions {
        enable_extensions: true,
        ..EncoderOptions::default()
    };
    let (compared, differ_raw, stats) = round_trip(options);
    println!("extensions: {compared} compared, {differ_raw} differ before normalising, {stats:?}");
    assert_eq!(compared, 38_483);
    assert!(differ_raw > 1_000, "{differ_raw}");
    assert_eq!(stats.extensions, 0, "every extension is kept");
    assert!(stats.contained_or_modifier > 100, "{stats:?}");
    assert!(stats.not_in_schema.is_empty(), "{:?}", stats.not_in_schema);
}

#[test]
fn rounding_to_six_places_matches_the_encoder() {
    assert_eq!(round6("28.104000000000003"), "28.104000");
    assert_eq!(round6("0.0000005"), "0.000001");
    assert_eq!(round6("-0.0000004"), "0.000000");
    assert_eq!(round6("-1.9999995"), "-2.000000");
    assert_eq!(round6("12.50"), "12.50");
    assert_eq!(round6("-0.0"), "0.0");
}
