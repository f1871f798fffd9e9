//! Property tests: arbitrary input never panics; valid resources keep their ids.
use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, LineRef, NdjsonBatches};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-zA-Z0-9 :.+-]{0,12}".prop_map(Value::String),
        Just(json!("2020-02-30")),
        Just(json!("2013-09-23T15:38:27.139-04:00")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("id".to_string()),
                        Just("value".to_string()),
                        Just("code".to_string()),
                        Just("system".to_string()),
                        Just("coding".to_string()),
                        Just("extension".to_string()),
                        Just("valueQuantity".to_string()),
                        Just("item".to_string()),
                        "[a-z]{1,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const TYPES: [&str; 6] = [
    "Patient",
    "Observation",
    "Questionnaire",
    "ExplanationOfBenefit",
    "Claim",
    "Condition",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_elements_keep_the_row_and_its_id(
        t in 0..TYPES.len(),
        id in "[A-Za-z0-9.-]{1,64}",
        fields in prop::collection::vec(("[a-zA-Z]{1,12}", arb_json()), 0..8),
        ext in any::<bool>(),
    ) {
        let rt = TYPES[t];
        let mut obj = serde_json::Map::new();
        for (k, v) in fields {
            obj.insert(k, v);
        }
        obj.insert("resourceType".into(), json!(rt));
        obj.insert("id".into(), json!(id));
        let line = serde_json::to_vec(&Value::Object(obj)).unwrap();
        let encoder = Encoder::new(EncoderOptions { enable_extensions: ext, ..Default::default() });
        let mut b = encoder.batch_builder(rt, BatchLimits::default()).unwrap();
        let pushed = b.push_line(&line, &LineRef::new("p", 1));
        prop_assert!(pushed.is_ok(), "{:?}", pushed.err());
        let batch = b.finish().unwrap();
        prop_assert_eq!(batch.num_rows(), 1);
        let ids = batch.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
        prop_assert_eq!(ids.value(0), id.as_str());
    }

    #[test]
    fn arbitrary_bytes_are_read_without_error(lines in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let mut input = Vec::new();
        for l in &lines {
            input.extend_from_slice(l);
            input.push(b'\n');
        }
        let reader = NdjsonBatches::new(Encoder::new(EncoderOptions::default()), &input[..], "bytes", BatchLimits::default());
        for item in reader {
            prop_assert!(item.is_ok());
        }
    }

    #[test]
    fn mangled_resources_are_rows_or_rejects(cut in 0usize..400, byte in any::<u8>()) {
        let line = br#"{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"1"}]},"valueQuantity":{"value":1.25,"system":"http://unitsofmeasure.org","code":"mg"},"issued":"2020-01-01T00:00:00Z"}"#;
        let mut m = line.to_vec();
        let at = cut % m.len();
        m[at] = byte;
        let encoder = Encoder::new(EncoderOptions::default());
        let mut b = encoder.batch_builder("Observation", BatchLimits::default()).unwrap();
        let whole = b.push_line(&m, &LineRef::new("m", 1));
        // Cut before its closing brace, the line is never a resource.
        let cut = b.push_line(&m[..at], &LineRef::new("m", 2));
        prop_assert!(cut.as_ref().is_err_and(|r| r.line == 2 && !r.reason.is_empty()), "{:?}", cut);
        if let Err(r) = &whole {
            prop_assert_eq!(r.line, 1);
        }
        let batch = b.finish().unwrap();
        prop_assert_eq!(batch.num_rows(), usize::from(whole.is_ok()));
    }
}
