//! Every resource type's schema against the schemas Pathling 6.3.1 produced, in both
//! configurations. Known, intended differences (the current specification's Reference) are
//! normalised explicitly; anything else fails.
mod common;

use common::*;
use fhir_encoder::{EncodeError, Encoder, EncoderOptions, UNSUPPORTED_TYPES};
use serde_json::Value;

/// 6.3.1's Reference is `{reference, display}`; the specification's also has `id`, `type` and
/// `identifier` (without `assigner`). Drop those from our Reference groups before comparing.
fn normalise_reference(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("type") == Some(&Value::String("struct".into()))
                && let Some(Value::Array(fields)) = m.get_mut("fields")
            {
                {
                    let names: Vec<&str> =
                        fields.iter().filter_map(|f| f["name"].as_str()).collect();
                    let is_reference = names.contains(&"reference")
                        && names.contains(&"display")
                        && names.contains(&"identifier")
                        && names.contains(&"type");
                    if is_reference {
                        fields.retain(|f| {
                            !matches!(f["name"].as_str(), Some("id" | "type" | "identifier"))
                        });
                    }
                }
            }
            m.values_mut().for_each(normalise_reference);
        }
        Value::Array(a) => a.iter_mut().for_each(normalise_reference),
        _ => {}
    }
}

/// Fields of Pathling 6.3.1's schemas that are not FHIR R4 elements: HAPI's shared
/// `MetadataResource` class gives these resources `name`, `title`, `experimental` etc. that their
/// R4 definitions lack. No valid R4 resource has them, so the encoding leaves them out.
const HAPI_ONLY: [(&str, &[&str]); 10] = [
    ("ChargeItemDefinition", &["name"]),
    ("CompartmentDefinition", &["title", "jurisdiction"]),
    ("EffectEvidenceSynthesis", &["experimental"]),
    ("Evidence", &["experimental"]),
    ("EvidenceVariable", &["experimental"]),
    ("ExampleScenario", &["title", "description"]),
    ("GraphDefinition", &["title"]),
    ("NamingSystem", &["url", "version", "title", "experimental"]),
    ("RiskEvidenceSynthesis", &["experimental"]),
    ("SearchParameter", &["title"]),
];

fn normalise_golden(rt: &str, golden: &mut Value) {
    if let Some((_, names)) = HAPI_ONLY.iter().find(|(t, _)| *t == rt) {
        golden["fields"]
            .as_array_mut()
            .unwrap()
            .retain(|f| !names.contains(&f["name"].as_str().unwrap()));
    }
}

/// 6.3.1 leaves out the recursive `ValueSet.expansion.contains.contains` (a content reference)
/// although it nests other recursive elements (`Questionnaire.item.item`) to the maximum
/// level; the specification's rule nests it like the others.
fn normalise_ours(rt: &str, ours: &mut Value) {
    if rt != "ValueSet" {
        return;
    }
    let contains = ours["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "expansion")
        .unwrap()["type"]["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "contains")
        .unwrap();
    contains["type"]["elementType"]["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "contains");
}

/// Differences between two Spark types, as `path: message` lines.
fn diff(path: &str, ours: &Value, golden: &Value, out: &mut Vec<String>) {
    match (ours, golden) {
        (Value::String(a), Value::String(b)) => {
            if a != b {
                out.push(format!("{path}: type {a} != golden {b}"));
            }
        }
        (Value::Object(a), Value::Object(b)) if a.get("type") == b.get("type") => {
            match a["type"].as_str() {
                Some("struct") => {
                    let fa = a["fields"].as_array().unwrap();
                    let fb = b["fields"].as_array().unwrap();
                    let na: Vec<&str> = fa.iter().map(|f| f["name"].as_str().unwrap()).collect();
                    let nb: Vec<&str> = fb.iter().map(|f| f["name"].as_str().unwrap()).collect();
                    if na != nb {
                        let extra: Vec<_> = na.iter().filter(|n| !nb.contains(n)).collect();
                        let missing: Vec<_> = nb.iter().filter(|n| !na.contains(n)).collect();
                        out.push(format!("{path}: fields differ; extra {extra:?}, missing {missing:?}, ours {na:?}, golden {nb:?}"));
                        return;
                    }
                    for (x, y) in fa.iter().zip(fb) {
                        let p = format!("{path}.{}", x["name"].as_str().unwrap());
                        if x["nullable"] != y["nullable"] {
                            out.push(format!(
                                "{p}: nullable {} != golden {}",
                                x["nullable"], y["nullable"]
                            ));
                        }
                        diff(&p, &x["type"], &y["type"], out);
                    }
                }
                Some("array") => {
                    if a["containsNull"] != b["containsNull"] {
                        out.push(format!("{path}: containsNull differs"));
                    }
                    diff(
                        &format!("{path}[]"),
                        &a["elementType"],
                        &b["elementType"],
                        out,
                    );
                }
                Some("map") => {
                    if a["valueContainsNull"] != b["valueContainsNull"] {
                        out.push(format!("{path}: valueContainsNull differs"));
                    }
                    diff(&format!("{path}{{key}}"), &a["keyType"], &b["keyType"], out);
                    diff(
                        &format!("{path}{{value}}"),
                        &a["valueType"],
                        &b["valueType"],
                        out,
                    );
                }
                _ => out.push(format!("{path}: unexpected type {a:?}")),
            }
        }
        _ => out.push(format!("{path}: {ours} != golden {golden}")),
    }
}

fn check(config: &str, options: EncoderOptions) {
    let encoder = Encoder::new(options);
    let dir = golden_dir().join("schemas").join(config);
    let mut problems = Vec::new();
    let mut compared = 0;
    for rt in encoder.supported_types() {
        let path = dir.join(format!("{rt}.schema.json.gz"));
        let mut golden: Value = serde_json::from_slice(&read_gz(&path)).unwrap();
        normalise_golden(rt, &mut golden);
        let schema = encoder.schema(rt).unwrap();
        let mut ours = spark_type(&arrow_schema::DataType::Struct(schema.fields().clone()));
        normalise_reference(&mut ours);
        normalise_ours(rt, &mut ours);
        diff(rt, &ours, &golden, &mut problems);
        compared += 1;
    }
    // Every golden schema has a supported type, and the refused ones are refused.
    assert!(
        problems.is_empty(),
        "{} differences from Pathling 6.3.1 ({config}):\n{}",
        problems.len(),
        problems.join("\n")
    );
    let golden_count = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".schema.json.gz")
        })
        .count();
    assert_eq!(compared, golden_count, "types with a golden schema");
    assert_eq!(compared, 141);
    for rt in UNSUPPORTED_TYPES {
        assert!(
            matches!(
                encoder.schema(rt),
                Err(EncodeError::UnsupportedResourceType(_))
            ),
            "{rt}"
        );
    }
}

#[test]
fn default_configuration_matches_pathling() {
    check("default", EncoderOptions::default());
}

#[test]
fn extensions_configuration_matches_pathling() {
    check(
        "extensions",
        EncoderOptions {
            enable_extensions: true,
            ..EncoderOptions::default()
        },
    );
}
