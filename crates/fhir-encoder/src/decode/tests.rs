use std::sync::Arc;

use arrow_array::{Int32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::write::{write_decimal, write_instant, write_str};
use super::*;
use crate::values::{parse_decimal, parse_instant};
use crate::{BatchLimits, Encoder, EncoderOptions, LineRef};

fn encode(options: EncoderOptions, resource_type: &str, lines: &[Value]) -> RecordBatch {
    let lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    let (batch, warnings) = encode_text(options, resource_type, &lines);
    assert!(warnings.is_empty(), "{warnings:?}");
    batch
}

fn encode_text(
    options: EncoderOptions,
    resource_type: &str,
    lines: &[String],
) -> (RecordBatch, Vec<crate::Warning>) {
    let encoder = Encoder::new(options);
    let mut b = encoder
        .batch_builder(resource_type, BatchLimits::default())
        .expect("supported type");
    let mut warnings = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let w = b
            .push_line(l.as_bytes(), &LineRef::new("t", i as u64 + 1))
            .expect("valid resource");
        warnings.extend(w);
    }
    (b.finish().expect("batch"), warnings)
}

fn decode(resource_type: &str, batch: &RecordBatch) -> Vec<Value> {
    decode_batch(resource_type, batch)
        .expect("decodes")
        .iter()
        .map(|s| serde_json::from_str(s).expect("valid JSON"))
        .collect()
}

fn with_extensions() -> EncoderOptions {
    EncoderOptions {
        enable_extensions: true,
        ..EncoderOptions::default()
    }
}

#[test]
fn extensions_come_back_on_their_elements_and_nested() {
    let patient = json!({
        "resourceType": "Patient", "id": "p1",
        "extension": [
            {"url": "http://a", "valueString": "x"},
            {"url": "http://geo", "extension": [
                {"url": "latitude", "valueDecimal": 42.50},
                {"url": "longitude", "valueDecimal": -71.0000001}
            ]},
            {"url": "http://coded", "valueCoding": {
                "system": "s", "code": "c",
                "extension": [{"url": "http://on-coding", "valueBoolean": true}]
            }}
        ],
        "name": [{"extension": [{"url": "http://n", "valueInteger": 3}], "given": ["A"]}],
        "gender": "female"
    });
    // Written with its trailing zero, which the decoder keeps.
    let text = patient.to_string().replace("42.5", "42.50");
    let (batch, warnings) = encode_text(with_extensions(), "Patient", &[text]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let decoded = decode("Patient", &batch);
    let mut expected = patient.clone();
    // Seven places are rounded to six.
    expected["extension"][1]["extension"][1]["valueDecimal"] = json!(-71.0);
    assert_eq!(decoded, vec![expected]);
    let text = decode_batch("Patient", &batch).expect("decodes");
    assert!(text[0].contains("\"valueDecimal\":42.50}"), "{}", text[0]);
    assert!(
        text[0].contains("\"valueDecimal\":-71.000000}"),
        "{}",
        text[0]
    );

    let off = encode(EncoderOptions::default(), "Patient", &[patient]);
    let decoder = Decoder::new("Patient", off.schema_ref()).expect("schema");
    assert!(!decoder.has_extensions());
    assert!(!decoder.keeps("Patient.extension"));
    assert!(!decoder.keeps("name.extension.url"));
    assert_eq!(
        decode("Patient", &off),
        vec![
            json!({"resourceType": "Patient", "id": "p1", "name": [{"given": ["A"]}], "gender": "female"})
        ]
    );
    let on = Decoder::new("Patient", batch.schema_ref()).expect("schema");
    assert!(on.has_extensions());
    assert!(on.keeps("Patient.extension.valueString"));
    assert!(on.keeps("name.extension.extension.url"));
    assert!(!on.keeps("extension.valueAge"), "not an open type");
}

#[test]
fn paths_past_the_nesting_level_are_not_kept_nor_written() {
    let item = |inner: Option<Value>| {
        let mut v = json!({"linkId": "l", "type": "group"});
        if let Some(i) = inner {
            v["item"] = json!([i]);
        }
        v
    };
    let deep = item(Some(item(Some(item(Some(item(None)))))));
    let q = json!({"resourceType": "Questionnaire", "id": "q", "status": "draft", "item": [deep]});
    let options = EncoderOptions {
        max_nesting_level: 1,
        ..EncoderOptions::default()
    };
    let (batch, warnings) = encode_text(options, "Questionnaire", &[q.to_string()]);
    let paths: Vec<&str> = warnings.iter().map(|w| &*w.path).collect();
    assert_eq!(paths, ["Questionnaire.item.item.item"]);
    let decoder = Decoder::new("Questionnaire", batch.schema_ref()).expect("schema");
    assert!(decoder.keeps("Questionnaire.item.item.linkId"));
    assert!(!decoder.keeps("Questionnaire.item.item.item"));
    assert!(decoder.keeps("item.enableWhen.answer[x]"));
    assert!(decoder.keeps("item.enableWhen.answerQuantity.value"));
    assert!(!decoder.keeps("item.enableWhen.answerQuantity.nothing"));
    assert!(!decoder.keeps("contained"));
    assert!(!decoder.keeps("modifierExtension"));
    let two = item(Some(item(None)));
    assert_eq!(
        decode("Questionnaire", &batch),
        vec![json!({"resourceType": "Questionnaire", "id": "q", "status": "draft", "item": [two]})]
    );
}

#[test]
fn absent_values_empty_groups_and_null_items_are_left_out() {
    let p = json!({
        "resourceType": "Patient", "id": "p\"1\\\n",
        "name": [{"given": ["A", null, "B"], "_given": [null, {"id": "x"}, null]}, {}],
        "photo": [{"data": "aGVsbG8="}],
        "meta": {"lastUpdated": "2013-09-23T15:38:27.139-04:00"},
        "multipleBirthInteger": 2, "active": false, "_gender": {"id": "g"}
    });
    let batch = encode(EncoderOptions::default(), "Patient", &[p]);
    assert_eq!(
        decode("Patient", &batch),
        vec![json!({
            "resourceType": "Patient", "id": "p\"1\\\n",
            "meta": {"lastUpdated": "2013-09-23T19:38:27.139Z"},
            "active": false,
            "name": [{"given": ["A", "B"]}],
            "multipleBirthInteger": 2,
            "photo": [{"data": "aGVsbG8="}]
        })]
    );
}

#[test]
fn sliced_batches_decode_their_own_rows() {
    let lines: Vec<Value> = (0..5)
        .map(|i| {
            json!({"resourceType": "Observation", "id": format!("o{i}"), "status": "final",
            "code": {"text": "t"}, "valueQuantity": {"value": i, "unit": "mg"}})
        })
        .collect();
    let batch = encode(EncoderOptions::default(), "Observation", &lines);
    let decoded = decode("Observation", &batch.slice(2, 2));
    assert_eq!(decoded, lines[2..4].to_vec());
}

#[test]
fn foreign_schemas_and_batches_are_refused_with_a_reason() {
    let bad = Arc::new(Schema::new(vec![Field::new(
        "when",
        DataType::Time64(TimeUnit::Microsecond),
        true,
    )]));
    let e = Decoder::new("Patient", &bad).expect_err("unsupported type");
    assert!(e.to_string().contains("`when`"), "{e}");

    let batch = encode(EncoderOptions::default(), "Patient", &[]);
    let decoder = Decoder::new("Patient", batch.schema_ref()).expect("schema");
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true)])),
        vec![Arc::new(Int32Array::from(vec![1]))],
    )
    .expect("batch");
    assert!(matches!(
        decoder.rows(&other),
        Err(DecodeError::SchemaMismatch(_))
    ));
    let mut rows = decoder.rows(&batch).expect("bound");
    assert!(matches!(
        rows.write_json(0, &mut String::new()),
        Err(DecodeError::RowOutOfRange { row: 0, len: 0 })
    ));
}

#[test]
fn decimals_keep_their_scale_up_to_six_places() {
    let d = |u: i128, s: Option<i32>| {
        let mut out = String::new();
        write_decimal(u, 6, s, &mut out);
        out
    };
    assert_eq!(d(28_104_000, Some(15)), "28.104000");
    assert_eq!(d(640_000, Some(2)), "0.64");
    assert_eq!(d(12_000_000, Some(0)), "12");
    assert_eq!(d(-1_500_000, Some(1)), "-1.5");
    assert_eq!(d(-500_000, Some(3)), "-0.500");
    assert_eq!(d(1, Some(7)), "0.000001");
    assert_eq!(d(1_250_000, None), "1.25");
    // A scale that contradicts the value keeps the value's digits.
    assert_eq!(d(1_250_000, Some(0)), "1.25");
}

#[test]
fn instants_are_utc_with_the_precision_they_have() {
    let i = |v: i64, unit: TimeUnit| {
        let mut out = String::new();
        assert!(write_instant(v, unit, &mut out));
        out
    };
    let us = TimeUnit::Microsecond;
    assert_eq!(i(0, us), "\"1970-01-01T00:00:00Z\"");
    assert_eq!(i(1_379_965_107_139_000, us), "\"2013-09-23T19:38:27.139Z\"");
    assert_eq!(
        i(1_379_965_107_139_001, us),
        "\"2013-09-23T19:38:27.139001Z\""
    );
    assert_eq!(i(-1, us), "\"1969-12-31T23:59:59.999999Z\"");
    assert_eq!(
        i(5, TimeUnit::Nanosecond),
        "\"1970-01-01T00:00:00.000000005Z\""
    );
    assert_eq!(
        i(-2_208_988_800, TimeUnit::Second),
        "\"1900-01-01T00:00:00Z\""
    );
    assert!(!write_instant(
        i64::MAX,
        TimeUnit::Second,
        &mut String::new()
    ));
}

proptest! {
    #[test]
    fn strings_round_trip_through_json(s in "\\PC*|[\\x00-\\x20\"\\\\]{0,8}") {
        let mut out = String::new();
        write_str(&s, &mut out);
        prop_assert_eq!(serde_json::from_str::<String>(&out).expect("valid JSON"), s);
    }

    /// A decimal with up to six places reads back as written; with more, as the encoder's
    /// rounding to six places.
    #[test]
    fn decimals_round_trip_through_the_encoders_parser(
        neg in any::<bool>(), int in "0|[1-9][0-9]{0,20}", frac in "[0-9]{0,12}",
    ) {
        let text = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if frac.is_empty() { "" } else { "." });
        let parsed = parse_decimal(&text).expect("fits");
        let mut out = String::new();
        write_decimal(parsed.unscaled, 6, Some(parsed.scale), &mut out);
        let back = parse_decimal(&out).expect("fits");
        prop_assert_eq!(back.unscaled, parsed.unscaled);
        if frac.len() <= 6 {
            // `-0.00` is written without its sign.
            let zero = parsed.unscaled == 0;
            prop_assert_eq!(&out, if zero { text.trim_start_matches('-') } else { &text });
        } else {
            prop_assert_eq!(back.scale, 6);
        }
    }

    /// Any instant with any offset reads back as the same moment, in UTC.
    #[test]
    fn instants_round_trip_through_the_encoders_parser(
        secs in -2_208_988_800i64..4_102_444_800, micros in 0u32..1_000_000,
        digits in 0usize..7, offset_min in -14 * 60i32..=14 * 60,
    ) {
        let micros = micros - micros % 10u32.pow(6 - digits as u32);
        let offset = chrono::FixedOffset::east_opt(offset_min * 60).expect("offset");
        let t = chrono::DateTime::from_timestamp(secs, micros * 1000).expect("in range").with_timezone(&offset);
        let text = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let v = parse_instant(&text).expect("instant");
        let mut out = String::new();
        prop_assert!(write_instant(v, TimeUnit::Microsecond, &mut out));
        let out = out.trim_matches('"');
        prop_assert!(out.ends_with('Z'));
        prop_assert_eq!(parse_instant(out), Ok(v));
        let places = out.find('.').map_or(0, |dot| out.len() - dot - 2);
        prop_assert!([0, 3, 6].contains(&places), "{}", out);
    }
}

#[test]
fn a_table_that_kept_the_original_json_gives_it_back_exactly() {
    let line = r#"{"resourceType":"Patient","id":"p","extension":[{"url":"http://x","valueString":"y"}],"_birthDate":{"extension":[{"url":"u","valueCode":"c"}]},"birthDate":"1970","contained":[{"resourceType":"Organization","id":"o"}]}"#;
    let options = EncoderOptions {
        keep_json: true,
        ..EncoderOptions::default()
    };
    let lines = [serde_json::from_str::<Value>(line).expect("JSON")];
    let batch = encode(options, "Patient", &lines);
    let last = batch.schema().fields().last().map(|f| f.name().clone());
    assert_eq!(last.as_deref(), Some(crate::JSON_COLUMN));
    let decoder = Decoder::new("Patient", batch.schema_ref()).expect("decoder");
    assert!(decoder.has_original_json() && decoder.keeps("Patient.contained"));
    assert_eq!(decode("Patient", &batch), lines.to_vec());
    // Without it, what the encoding leaves out is gone.
    let plain = encode(EncoderOptions::default(), "Patient", &lines);
    let decoded = decode("Patient", &plain);
    assert!(decoded[0].get("extension").is_none() && decoded[0].get("contained").is_none());
}
