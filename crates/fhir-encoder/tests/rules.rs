//! Hand-written resources through the encoder, one rule at a time.
mod common;

use common::*;
use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, LineRef, NdjsonBatches, Reject, Warning};
use serde_json::{Value, json};

fn encode_with(
    options: EncoderOptions,
    rt: &str,
    lines: &[&str],
) -> (Vec<Value>, Vec<Warning>, Vec<Reject>) {
    let encoder = Encoder::new(options);
    let mut b = encoder.batch_builder(rt, BatchLimits::default()).unwrap();
    let (mut warnings, mut rejects) = (Vec::new(), Vec::new());
    for (i, l) in lines.iter().enumerate() {
        match b.push_line(l.as_bytes(), &LineRef::new("test.ndjson", i as u64 + 1)) {
            Ok(w) => warnings.extend(w),
            Err(r) => rejects.push(r),
        }
    }
    let batch = b.finish().unwrap();
    assert_eq!(batch.schema(), encoder.schema(rt).unwrap());
    (batch_json(&batch), warnings, rejects)
}

fn encode(rt: &str, lines: &[&str]) -> (Vec<Value>, Vec<Warning>, Vec<Reject>) {
    encode_with(EncoderOptions::default(), rt, lines)
}

fn one(rt: &str, line: &str) -> (Value, Vec<Warning>) {
    let (rows, w, r) = encode(rt, &[line]);
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(rows.len(), 1);
    (rows.into_iter().next().unwrap(), w)
}

#[test]
fn ids_versioned_and_meta() {
    let (row, w) = one(
        "Patient",
        r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"2020-01-01T10:00:00.5+02:00"}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(row["id"], "p1");
    assert_eq!(row["id_versioned"], "Patient/p1/_history/3");
    assert_eq!(row["meta"]["versionId"], "3");
    assert_eq!(row["meta"]["versionId_versioned"], "3");
    // Instants are converted to UTC microseconds.
    assert_eq!(row["meta"]["lastUpdated"], json!(1_577_865_600_500_000i64));
    let (row, _) = one("Patient", r#"{"resourceType":"Patient","id":"p2"}"#);
    assert_eq!(row["id_versioned"], "Patient/p2");
}

#[test]
fn absent_elements_empty_groups_and_null_choices() {
    let (row, _) = one("Patient", r#"{"resourceType":"Patient","id":"p"}"#);
    // Absent arrays are empty lists, absent groups empty groups (recursively), absent
    // primitives and choices null (omitted here).
    assert_eq!(
        row["meta"],
        json!({"profile": [], "security": [], "tag": []})
    );
    assert_eq!(row["maritalStatus"], json!({"coding": []}));
    assert_eq!(row["name"], json!([]));
    assert!(row.get("gender").is_none());
    assert!(row.get("deceasedBoolean").is_none());
    assert!(row.get("deceasedDateTime").is_none());
}

#[test]
fn choice_types_flattened() {
    let (row, w) = one(
        "Patient",
        r#"{"resourceType":"Patient","id":"p","deceasedDateTime":"2020-05-01","multipleBirthInteger":2}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(row["deceasedDateTime"], "2020-05-01");
    assert_eq!(row["multipleBirthInteger"], 2);
    assert!(row.get("deceasedBoolean").is_none());
}

#[test]
fn a_choice_element_keeps_its_first_value_only() {
    // FHIR allows one type of a choice element; a second is dropped with a warning, as a
    // duplicate key is, whether it is a primitive or a group, and null values do not count.
    let (row, w) = one(
        "Patient",
        r#"{"resourceType":"Patient","id":"p","deceasedDateTime":null,"deceasedBoolean":true,"deceasedDateTime":"2020-05-01"}"#,
    );
    assert_eq!(row["deceasedBoolean"], true);
    assert!(row.get("deceasedDateTime").is_none());
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].path, "Patient.deceasedDateTime");
    let (row, w) = one(
        "Observation",
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{},"valueString":"a","valueQuantity":{"value":1},"effectiveDateTime":"2020-01-01"}"#,
    );
    assert_eq!(row["valueString"], "a");
    assert_eq!(row["valueQuantity"], Value::Null);
    assert_eq!(row["effectiveDateTime"], "2020-01-01");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].path, "Observation.valueQuantity");
}

#[test]
fn decimals_scale_and_quantity_canonical() {
    let (row, w) = one(
        "Observation",
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},"valueQuantity":{"value":28.104000000000003,"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    let q = &row["valueQuantity"];
    assert_eq!(q["value"], "28.104000");
    assert_eq!(q["value_scale"], 15);
    assert_eq!(q["_code_canonicalized"], "g.m-3");
    assert!(q["_value_canonicalized"].is_object());
    // Not UCUM: no canonical value or code.
    let (row, _) = one(
        "Observation",
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{},"valueQuantity":{"value":1.5,"code":"mg"}}"#,
    );
    assert_eq!(row["valueQuantity"]["value"], "1.500000");
    assert_eq!(row["valueQuantity"]["value_scale"], 1);
    assert!(row["valueQuantity"].get("_value_canonicalized").is_none());
    assert!(row["valueQuantity"].get("_code_canonicalized").is_none());
}

#[test]
fn references_keep_specification_fields_without_assigner() {
    let (row, w) = one(
        "Observation",
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{},"subject":{"reference":"Patient/1","type":"Patient","identifier":{"system":"s","value":"v"},"display":"d"}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    let s = &row["subject"];
    assert_eq!(s["reference"], "Patient/1");
    assert_eq!(s["type"], "Patient");
    assert_eq!(s["identifier"]["value"], "v");
    assert!(s["identifier"].get("assigner").is_none());
    let schema = Encoder::new(EncoderOptions::default())
        .schema("Observation")
        .unwrap();
    let subject = schema.field_with_name("subject").unwrap().to_string();
    assert!(!subject.contains("assigner"), "{subject}");
}

#[test]
fn dropped_elements_are_silent() {
    let (row, w) = one(
        "Patient",
        r#"{"resourceType":"Patient","id":"p","birthDate":"1970-01-01","_birthDate":{"extension":[]},"contained":[{"resourceType":"Organization","id":"o"}],"modifierExtension":[{"url":"u","valueBoolean":true}],"extension":[{"url":"u","valueString":"s"}]}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(row["birthDate"], "1970-01-01");
    assert!(row.get("contained").is_none());
}

#[test]
fn bad_elements_become_null_with_warnings() {
    let (row, w) = one(
        "Patient",
        r#"{"resourceType":"Patient","id":"p","birthDate":"2020-02-30","active":"yes","gender":7,"name":{"family":"x"},"unknownThing":1,"telecom":[{"rank":1.5}],"deceasedDateTime":"2020-01-01T10:00"}"#,
    );
    assert!(row.get("birthDate").is_none());
    assert!(row.get("active").is_none());
    assert!(row.get("gender").is_none());
    assert_eq!(row["name"], json!([]));
    assert!(row["telecom"][0].get("rank").is_none());
    assert!(row.get("deceasedDateTime").is_none());
    let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
    for p in [
        "Patient.birthDate",
        "Patient.active",
        "Patient.gender",
        "Patient.name",
        "Patient.unknownThing",
        "Patient.telecom.rank",
        "Patient.deceasedDateTime",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    assert!(
        w.iter()
            .all(|w| w.id == "p" && w.resource_type == "Patient" && w.line == 1)
    );
}

#[test]
fn oversized_decimal_and_instants() {
    let (row, w) = one(
        "Observation",
        r#"{"resourceType":"Observation","id":"o","status":"final","code":{},"valueQuantity":{"value":123456789012345678901234567.5},"issued":"1850-01-01T00:00:00Z","meta":{"lastUpdated":"not an instant"}}"#,
    );
    assert!(row["valueQuantity"].get("value").is_none());
    assert!(row["valueQuantity"].get("value_scale").is_none());
    // Instants before 1900 are kept (flagged); unparsable ones are null.
    assert_eq!(row["issued"], json!(-3_786_825_600_000_000i64));
    assert!(row["meta"].get("lastUpdated").is_none());
    let paths: Vec<&str> = w.iter().map(|w| w.path.as_str()).collect();
    assert!(
        paths.contains(&"Observation.valueQuantity.value"),
        "{paths:?}"
    );
    assert!(paths.contains(&"Observation.issued"), "{paths:?}");
    assert!(paths.contains(&"Observation.meta.lastUpdated"), "{paths:?}");
}

#[test]
fn rejected_lines_leave_the_batch_intact() {
    let (rows, _, rejects) = encode(
        "Patient",
        &[
            r#"{"resourceType":"Patient","id":"a"}"#,
            r#"{"resourceType":"Patient","id":"b","name":[{"family":"x"}"#,
            r#"{"resourceType":"Patient"}"#,
            r#"{"resourceType":"Observation","id":"o"}"#,
            r#"{"resourceType":"Nope","id":"n"}"#,
            r#"{"id":"x"}"#,
            r#"[1,2]"#,
            r#"{"resourceType":"Patient","id":"c","name":[{"family":"y"}]}"#,
        ],
    );
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(rows[1]["name"][0]["family"], "y");
    let lines: Vec<u64> = rejects.iter().map(|r| r.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
    assert!(
        rejects[0].reason.contains("invalid JSON"),
        "{}",
        rejects[0].reason
    );
    assert_eq!(rejects[1].resource_type.as_deref(), Some("Patient"));
    assert!(rejects[1].reason.contains("id"));
    assert_eq!(rejects[2].id.as_deref(), Some("o"));
    assert!(rejects[3].reason.contains("unknown resourceType"));
    assert!(rejects.iter().all(|r| r.file == "test.ndjson"));
}

#[test]
fn unsupported_types_are_refused() {
    let e = Encoder::new(EncoderOptions::default());
    for t in fhir_encoder::UNSUPPORTED_TYPES {
        let err = e.schema(t).unwrap_err().to_string();
        assert!(err.contains("not supported"), "{err}");
    }
    assert!(e.schema("Nope").is_err());
    assert_eq!(e.supported_types().len(), 141);
    for t in e.supported_types() {
        let s = e.schema(t).unwrap();
        assert_eq!(
            s.field_with_name("id").unwrap().data_type(),
            &arrow_schema::DataType::Utf8
        );
        let meta = s.field_with_name("meta").unwrap().to_string();
        assert!(
            meta.contains("lastUpdated") && meta.contains("versionId"),
            "{t}"
        );
    }
}

#[test]
fn nesting_level_cuts_recursion() {
    let item = |rest: &str| format!(r#"{{"linkId":"l","item":[{rest}]}}"#);
    let deep = item(&item(&item(&item(&item("")))));
    let line =
        format!(r#"{{"resourceType":"Questionnaire","id":"q","status":"active","item":[{deep}]}}"#);
    let (rows, w, _) = encode_with(
        EncoderOptions {
            max_nesting_level: 1,
            ..Default::default()
        },
        "Questionnaire",
        &[&line],
    );
    // Levels beyond the maximum are not encoded (and reported as unknown elements).
    assert_eq!(rows[0]["item"][0]["item"][0]["linkId"], "l");
    assert!(rows[0]["item"][0]["item"][0].get("item").is_none());
    assert!(!w.is_empty());
}

#[test]
fn extensions_go_to_the_map_keyed_by_fid() {
    let opts = EncoderOptions {
        enable_extensions: true,
        ..Default::default()
    };
    let (rows, w, r) = encode_with(
        opts,
        "Patient",
        &[
            r#"{"resourceType":"Patient","id":"p","extension":[{"url":"a","valueString":"s","extension":[{"url":"b","valueInteger":1}]}],"name":[{"family":"f","extension":[{"url":"c","valueBoolean":true}]}]}"#,
        ],
    );
    assert!(w.is_empty() && r.is_empty(), "{w:?} {r:?}");
    let row = &rows[0];
    let root_fid = row["_fid"].to_string();
    let name_fid = row["name"][0]["_fid"].to_string();
    let ext = &row["_extension"];
    assert_eq!(ext[&root_fid][0]["url"], "a");
    assert_eq!(ext[&root_fid][0]["valueString"], "s");
    let nested_fid = ext[&root_fid][0]["_fid"].to_string();
    assert_eq!(ext[&nested_fid][0]["valueInteger"], 1);
    assert_eq!(ext[&name_fid][0]["valueBoolean"], true);
}

#[test]
fn mixed_reader_routes_types_and_bounds_batches() {
    let mut input = String::new();
    for i in 0..25 {
        input.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\"}}\n"
        ));
        input.push_str(&format!("{{\"resourceType\":\"Observation\",\"id\":\"o{i}\",\"status\":\"final\",\"code\":{{}}}}\n"));
    }
    input.push_str("not json\n\n{\"resourceType\":\"Bundle\",\"id\":\"b\"}\n");
    let limits = BatchLimits {
        max_rows: 10,
        max_bytes: usize::MAX,
    };
    let mut reader = NdjsonBatches::new(
        Encoder::new(EncoderOptions::default()),
        input.as_bytes(),
        "mixed.ndjson",
        limits,
    );
    let mut counts = std::collections::BTreeMap::new();
    for item in reader.by_ref() {
        let (rt, batch) = item.unwrap();
        assert!(batch.num_rows() <= 10);
        *counts.entry(rt).or_insert(0) += batch.num_rows();
    }
    assert_eq!(counts["Patient"], 25);
    assert_eq!(counts["Observation"], 25);
    let rejects = reader.take_rejects();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[0].line, 51);
    assert_eq!(rejects[1].line, 53);
    assert!(rejects[1].reason.contains("not supported"));
}

#[test]
fn a_file_of_one_type_rejects_the_others_by_line() {
    let input = concat!(
        "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n",
        "\n",
        "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"status\":\"final\"}\n",
        "{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n",
    );
    let mut reader = NdjsonBatches::new(
        Encoder::new(EncoderOptions::default()),
        input.as_bytes(),
        "Patient.1.ndjson",
        BatchLimits::default(),
    )
    .expecting("Patient");
    let batches: Vec<_> = reader.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, "Patient");
    assert_eq!(batches[0].1.num_rows(), 2);
    let rejects = reader.take_rejects();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].line, 3, "blank lines count");
    assert_eq!(rejects[0].id.as_deref(), Some("o1"));
    assert_eq!(
        rejects[0].reason,
        "a Observation resource in a file of Patient resources"
    );
}

#[test]
fn byte_limit_bounds_pending_data() {
    let mut input = String::new();
    for i in 0..100 {
        input.push_str(&format!(
            "{{\"resourceType\":\"Patient\",\"id\":\"p{i}\",\"gender\":\"female\"}}\n"
        ));
    }
    let limits = BatchLimits {
        max_rows: 1000,
        max_bytes: 500,
    };
    let reader = NdjsonBatches::new(
        Encoder::new(EncoderOptions::default()),
        input.as_bytes(),
        "x",
        limits,
    );
    let sizes: Vec<usize> = reader.map(|b| b.unwrap().1.num_rows()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(sizes.len() >= 10, "{sizes:?}");
}
