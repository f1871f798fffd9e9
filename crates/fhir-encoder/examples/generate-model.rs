//! Reduces the official FHIR R4 StructureDefinitions to the compact model the encoder builds
//! its schemas from (`src/generated/r4_model.json`, committed so builds need no definitions).
//!
//! Run from the crate directory: `cargo run -p fhir-encoder --example generate-model`.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Elements this copy of the definitions adds from later FHIR versions, which FHIR 4.0.1 (and
/// so the Pathling R4 encoding) does not have. Their children go with them.
const NOT_IN_R4: [&str; 17] = [
    "ResearchStudy.objective.description",
    "Binary.url",
    "DeviceDefinition.classification",
    "DeviceDefinition.bodySite",
    "ResearchStudy.name",
    "ResearchStudy.label",
    "ResearchStudy.studyDesign",
    "ResearchStudy.region",
    "ResearchStudy.descriptionSummary",
    "ResearchStudy.classifier",
    "ResearchStudy.associatedParty",
    "ResearchStudy.progressStatus",
    "ResearchStudy.whyStopped",
    "ResearchStudy.recruitment",
    "ResearchStudy.comparisonGroup",
    "ResearchStudy.outcomeMeasure",
    "ResearchStudy.result",
];

const FHIR_TYPE_EXT: &str = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    let defs = root.join("definitions/fhir-r4");
    let mut types = BTreeMap::new();
    let mut primitives = Vec::new();
    for file in ["profiles-types.json.gz", "profiles-resources.json.gz"] {
        for sd in structure_definitions(&defs.join(file))? {
            let id = sd["id"]
                .as_str()
                .ok_or("StructureDefinition without id")?
                .to_string();
            let kind = sd["kind"].as_str().unwrap_or_default();
            let is_abstract = sd["abstract"].as_bool().unwrap_or(false);
            // The bundle also carries a few later-version definitions (e.g. R4B's
            // SubscriptionStatus): keep FHIR 4.0.1 only.
            if sd["fhirVersion"] != "4.0.1" {
                continue;
            }
            match kind {
                "primitive-type" => primitives.push(id),
                "complex-type" if sd["derivation"] == "specialization" && !is_abstract => {
                    types.insert(id, json!({"kind": "complex", "elements": elements(&sd)?}));
                }
                "resource" if sd["derivation"] == "specialization" && !is_abstract => {
                    types.insert(id, json!({"kind": "resource", "elements": elements(&sd)?}));
                }
                _ => {}
            }
        }
    }
    // This copy replaces `EvidenceVariable.characteristic` with its FHIR R5 form; restore the
    // FHIR 4.0.1 definition.
    if let Some(ev) = types.get_mut("EvidenceVariable") {
        let elements = ev["elements"]
            .as_array_mut()
            .ok_or("EvidenceVariable without elements")?;
        if let Some(c) = elements.iter_mut().find(|e| e["name"] == "characteristic") {
            c["children"] = json!([
                {"name": "id", "types": ["string"]},
                {"name": "extension", "array": true, "types": ["Extension"]},
                {"name": "modifierExtension", "array": true, "types": ["Extension"]},
                {"name": "description", "types": ["string"]},
                {"name": "definition", "choice": true, "types": ["Reference", "canonical", "CodeableConcept", "Expression", "DataRequirement", "TriggerDefinition"]},
                {"name": "usageContext", "array": true, "types": ["UsageContext"]},
                {"name": "exclude", "types": ["boolean"]},
                {"name": "participantEffective", "choice": true, "types": ["dateTime", "Period", "Duration", "Timing"]},
                {"name": "timeFromStart", "types": ["Duration"]},
                {"name": "groupMeasure", "types": ["code"]}
            ]);
        }
    }
    let model = json!({"fhirVersion": "4.0.1", "primitives": primitives, "types": types});
    let out = root.join("src/generated/r4_model.json");
    let mut f = File::create(&out)?;
    // One type per line: small diffs, still compact.
    writeln!(
        f,
        "{{\"fhirVersion\":\"4.0.1\",\"primitives\":{},\"types\":{{",
        model["primitives"]
    )?;
    let n = types.len();
    for (i, (name, def)) in types.iter().enumerate() {
        let sep = if i + 1 < n { "," } else { "" };
        writeln!(f, "{}:{}{sep}", Value::String(name.clone()), def)?;
    }
    writeln!(f, "}}}}")?;
    println!("wrote {} types to {}", n, out.display());
    Ok(())
}

fn structure_definitions(path: &Path) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let bundle: Value = serde_json::from_reader(flate2::read::GzDecoder::new(BufReader::new(
        File::open(path)?,
    )))?;
    Ok(bundle["entry"]
        .as_array()
        .ok_or("bundle without entries")?
        .iter()
        .map(|e| e["resource"].clone())
        .filter(|r| r["resourceType"] == "StructureDefinition")
        .collect())
}

/// Elements of a definition as a tree in definition order.
fn elements(sd: &Value) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    let snapshot = sd["snapshot"]["element"].as_array().ok_or("no snapshot")?;
    // path -> (element json, children paths)
    let mut nodes: Vec<(String, Map<String, Value>)> = Vec::new();
    for el in snapshot.iter().skip(1) {
        // Elements without `isModifier` are additions of the definitions' distributor (e.g.
        // `Meta.project`), not FHIR 4.0.1: every official element states it.
        if el.get("isModifier").is_none() {
            continue;
        }
        let path = el["path"]
            .as_str()
            .ok_or("element without path")?
            .to_string();
        if NOT_IN_R4
            .iter()
            .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
        {
            continue;
        }
        let last = path.rsplit('.').next().unwrap_or_default();
        let (name, choice) = match last.strip_suffix("[x]") {
            Some(n) => (n.to_string(), true),
            None => (last.to_string(), false),
        };
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        if choice {
            m.insert("choice".into(), json!(true));
        }
        if el["max"] == "*" || el["base"]["max"] == "*" {
            m.insert("array".into(), json!(true));
        }
        if let Some(cr) = el["contentReference"].as_str() {
            m.insert("ref".into(), json!(cr.trim_start_matches('#')));
        } else {
            let mut codes = Vec::new();
            for t in el["type"]
                .as_array()
                .ok_or_else(|| format!("{path}: no type"))?
            {
                let code = t["code"].as_str().ok_or("type without code")?;
                let code = if code.starts_with("http://hl7.org/fhirpath/System.") {
                    t["extension"]
                        .as_array()
                        .and_then(|exts| exts.iter().find(|e| e["url"] == FHIR_TYPE_EXT))
                        .and_then(|e| e["valueUrl"].as_str())
                        .unwrap_or("string")
                } else {
                    code
                };
                codes.push(json!(code));
            }
            let backbone = codes.len() == 1
                && (codes[0] == "BackboneElement" || codes[0] == "Element")
                && snapshot.iter().any(|c| {
                    c["path"].as_str().is_some_and(|p| {
                        p.strip_prefix(path.as_str())
                            .is_some_and(|rest| rest.starts_with('.'))
                    })
                });
            if backbone {
                m.insert("path".into(), json!(path));
                m.insert("children".into(), json!([]));
            }
            m.insert("types".into(), Value::Array(codes));
        }
        nodes.push((path, m));
    }
    // Attach children to parents, deepest first so each node is complete when moved.
    let root_path = sd["snapshot"]["element"][0]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut roots = Vec::new();
    while let Some((path, node)) = nodes.pop() {
        let parent = &path[..path.rfind('.').unwrap_or(0)];
        if parent == root_path {
            roots.push(Value::Object(node));
        } else {
            let p = nodes
                .iter_mut()
                .rev()
                .find(|(pp, _)| pp == parent)
                .ok_or_else(|| format!("{path}: parent missing"))?;
            p.1.get_mut("children")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| format!("{parent}: not a group"))?
                .push(Value::Object(node));
        }
    }
    roots.reverse();
    fn reverse_children(v: &mut Value) {
        if let Some(children) = v.get_mut("children").and_then(Value::as_array_mut) {
            children.reverse();
            children.iter_mut().for_each(reverse_children);
        }
    }
    roots.iter_mut().for_each(reverse_children);
    Ok(roots)
}
