//! Helpers shared by the integration tests: golden files and Arrow → Spark JSON conversion.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_schema::{DataType, Field};
use serde_json::{Value, json};

/// Read at run time: a test binary reused from a build cache shared with another checkout
/// still carries that checkout's path in `env!`.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

pub fn golden_dir() -> PathBuf {
    crate_dir().join("tests/golden")
}

pub fn synthea_dir() -> PathBuf {
    crate_dir().join("../bulk-test-server/data/synthea-100")
}

pub fn read_gz(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn gz_lines(path: &Path) -> Vec<Vec<u8>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    BufReader::new(flate2::read::GzDecoder::new(f))
        .split(b'\n')
        .map(|l| l.unwrap())
        .collect()
}

/// The Spark JSON type of an Arrow data type (as Spark's `StructType.json` prints it).
pub fn spark_type(dt: &DataType) -> Value {
    match dt {
        DataType::Utf8 => json!("string"),
        DataType::Boolean => json!("boolean"),
        DataType::Int32 => json!("integer"),
        DataType::Decimal128(p, s) => json!(format!("decimal({p},{s})")),
        DataType::Timestamp(_, _) => json!("timestamp"),
        DataType::Binary => json!("binary"),
        DataType::List(f) => {
            json!({"type": "array", "elementType": spark_type(f.data_type()), "containsNull": f.is_nullable()})
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => json!({
                "type": "map",
                "keyType": spark_type(kv[0].data_type()),
                "valueType": spark_type(kv[1].data_type()),
                "valueContainsNull": kv[1].is_nullable(),
            }),
            other => panic!("map entries {other}"),
        },
        DataType::Struct(fields) => {
            json!({"type": "struct", "fields": fields.iter().map(|f| spark_field(f)).collect::<Vec<_>>()})
        }
        other => panic!("no Spark type for {other}"),
    }
}

pub fn spark_field(f: &Field) -> Value {
    json!({"name": f.name(), "type": spark_type(f.data_type()), "nullable": f.is_nullable(), "metadata": {}})
}

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, TimestampMicrosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};

/// Encodes a whole NDJSON file with one batch builder; returns batches, warnings and rejects.
pub fn encode_file(
    encoder: &fhir_encoder::Encoder,
    resource_type: &str,
    path: &Path,
) -> (
    Vec<RecordBatch>,
    Vec<fhir_encoder::Warning>,
    Vec<fhir_encoder::Reject>,
) {
    let mut b = encoder
        .batch_builder(resource_type, fhir_encoder::BatchLimits::default())
        .unwrap();
    let mut batches = Vec::new();
    let mut warnings = Vec::new();
    let mut rejects = Vec::new();
    for (i, line) in gz_lines(path).iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let src = fhir_encoder::LineRef::new(path.display().to_string(), i as u64 + 1);
        match b.push_line(line, &src) {
            Ok(w) => warnings.extend(w),
            Err(r) => rejects.push(r),
        }
        if b.is_full() {
            batches.push(b.finish().unwrap());
        }
    }
    batches.push(b.finish().unwrap());
    (batches, warnings, rejects)
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Whether a group is a Reference (the specification's form).
pub fn is_reference(fields: &arrow_schema::Fields) -> bool {
    let has = |n: &str| fields.iter().any(|f| f.name() == n);
    has("reference") && has("display") && has("identifier") && has("type")
}

/// Compares row `row` of our column `arr` with Pathling's value (Spark `toJSON`, nulls omitted),
/// applying the known version differences: Reference as `{reference, display}` and `_scale`
/// capped at 6.
pub fn compare(
    name: &str,
    arr: &ArrayRef,
    row: usize,
    golden: Option<&Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let golden = golden.filter(|g| !g.is_null());
    if arr.is_null(row) {
        if let Some(g) = golden {
            out.push(format!("{path}: ours null, golden {g}"));
        }
        return;
    }
    let Some(g) = golden else {
        out.push(format!("{path}: ours {}, golden absent", render(arr, row)));
        return;
    };
    let ok = match arr.data_type() {
        DataType::Utf8 => g.as_str() == Some(arr.as_string::<i32>().value(row)),
        DataType::Boolean => g.as_bool() == Some(arr.as_boolean().value(row)),
        DataType::Int32 => {
            let v = arr.as_primitive::<Int32Type>().value(row);
            let v = if name.ends_with("_scale") {
                v.min(6)
            } else {
                v
            };
            g.as_i64() == Some(i64::from(v))
        }
        DataType::Decimal128(_, s) => {
            let v =
                arr.as_primitive::<Decimal128Type>().value(row) as f64 / 10f64.powi(i32::from(*s));
            g.as_f64()
                .is_some_and(|x| (x - v).abs() <= 1e-9 * v.abs().max(1.0))
        }
        DataType::Timestamp(..) => {
            let v = arr.as_primitive::<TimestampMicrosecondType>().value(row);
            g.as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t.timestamp_micros() == v)
        }
        DataType::Binary => g.as_str() == Some(b64(arr.as_binary::<i32>().value(row)).as_str()),
        DataType::List(_) => {
            let l = arr.as_list::<i32>();
            let items = l.value(row);
            match g.as_array() {
                Some(ga) if ga.len() == items.len() => {
                    for (i, gi) in ga.iter().enumerate() {
                        compare(name, &items, i, Some(gi), &format!("{path}[{i}]"), out);
                    }
                    true
                }
                _ => false,
            }
        }
        DataType::Struct(fields) => {
            let s = arr.as_struct();
            let Some(go) = g.as_object() else {
                out.push(format!("{path}: golden {g} is not an object"));
                return;
            };
            let reference = is_reference(fields);
            for (f, col) in fields.iter().zip(s.columns()) {
                if reference && matches!(f.name().as_str(), "id" | "type" | "identifier") {
                    continue;
                }
                compare(
                    f.name(),
                    col,
                    row,
                    go.get(f.name()),
                    &format!("{path}.{}", f.name()),
                    out,
                );
            }
            for k in go.keys() {
                if !fields.iter().any(|f| f.name() == k) {
                    out.push(format!("{path}.{k}: golden has it, ours has no such field"));
                }
            }
            true
        }
        other => panic!("unexpected type {other}"),
    };
    if !ok {
        out.push(format!("{path}: ours {}, golden {g}", render(arr, row)));
    }
}

fn render(arr: &ArrayRef, row: usize) -> String {
    let s = arr.slice(row, 1);
    format!("{s:?}").chars().take(300).collect()
}

/// Row `row` of `arr` as JSON, nulls omitted (like Spark's `toJSON`); decimals as strings
/// `"<unscaled>e-<scale>"`-free plain text, timestamps as microseconds.
pub fn to_json(arr: &ArrayRef, row: usize) -> Value {
    if arr.is_null(row) {
        return Value::Null;
    }
    match arr.data_type() {
        DataType::Utf8 => json!(arr.as_string::<i32>().value(row)),
        DataType::Boolean => json!(arr.as_boolean().value(row)),
        DataType::Int32 => json!(arr.as_primitive::<Int32Type>().value(row)),
        DataType::Decimal128(_, _) => {
            let a = arr.as_primitive::<Decimal128Type>();
            json!(a.value_as_string(row))
        }
        DataType::Timestamp(..) => json!(arr.as_primitive::<TimestampMicrosecondType>().value(row)),
        DataType::Binary => json!(b64(arr.as_binary::<i32>().value(row))),
        DataType::List(_) => {
            let items = arr.as_list::<i32>().value(row);
            Value::Array((0..items.len()).map(|i| to_json(&items, i)).collect())
        }
        DataType::Map(..) => {
            let m = arr.as_map();
            let entries = m.value(row);
            let keys: ArrayRef = entries.column(0).clone();
            let values: ArrayRef = entries.column(1).clone();
            Value::Object(
                (0..entries.len())
                    .map(|i| (to_json(&keys, i).to_string(), to_json(&values, i)))
                    .collect(),
            )
        }
        DataType::Struct(fields) => {
            let s = arr.as_struct();
            let mut m = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                let v = to_json(col, row);
                if !v.is_null() {
                    m.insert(f.name().clone(), v);
                }
            }
            Value::Object(m)
        }
        other => panic!("unexpected type {other}"),
    }
}

/// All rows of a batch as JSON.
pub fn batch_json(batch: &RecordBatch) -> Vec<Value> {
    let root: ArrayRef = std::sync::Arc::new(arrow_array::StructArray::from(batch.clone()));
    (0..batch.num_rows()).map(|r| to_json(&root, r)).collect()
}
