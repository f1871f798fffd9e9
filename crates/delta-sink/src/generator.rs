//! Synthetic resources in the Pathling encoding, for tests and benchmarks.
//!
//! The schema mirrors an encoded `Observation`: `id`, `id_versioned`, `meta` struct,
//! coded values (list of structs), a reference, a timestamp, a `Decimal128(32,6)` with
//! its `_scale` companion and free text, about 1 KB per row.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Decimal128Array, Int32Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use rand::Rng;
use rand::seq::IndexedRandom;

/// One resource version to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    /// Resource id.
    pub id: String,
    /// `meta.versionId` (`None` leaves it null).
    pub version_id: Option<String>,
    /// `meta.lastUpdated` in epoch microseconds (`None` leaves it null).
    pub last_updated: Option<i64>,
}

impl RowSpec {
    /// A row with version and lastUpdated set.
    pub fn new(id: impl Into<String>, version: u64, last_updated_us: i64) -> Self {
        Self {
            id: id.into(),
            version_id: Some(version.to_string()),
            last_updated: Some(last_updated_us),
        }
    }
}

fn utc_ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn coding_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("system", DataType::Utf8, true),
        Field::new("version", DataType::Utf8, true),
        Field::new("code", DataType::Utf8, true),
        Field::new("display", DataType::Utf8, true),
        Field::new("userSelected", DataType::Boolean, true),
    ])
}

fn meta_fields() -> Fields {
    Fields::from(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("versionId", DataType::Utf8, true),
        Field::new("versionId_versioned", DataType::Utf8, true),
        Field::new("lastUpdated", utc_ts(), true),
        Field::new("source", DataType::Utf8, true),
    ])
}

fn quantity_fields() -> Fields {
    Fields::from(vec![
        Field::new("value", DataType::Decimal128(32, 6), true),
        Field::new("value_scale", DataType::Int32, true),
        Field::new("unit", DataType::Utf8, true),
        Field::new("system", DataType::Utf8, true),
        Field::new("code", DataType::Utf8, true),
    ])
}

fn reference_fields() -> Fields {
    Fields::from(vec![
        Field::new("reference", DataType::Utf8, true),
        Field::new("display", DataType::Utf8, true),
    ])
}

fn note_fields() -> Fields {
    Fields::from(vec![Field::new("text", DataType::Utf8, true)])
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(fields),
        true,
    )))
}

/// The Observation-like schema.
pub fn observation_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("id_versioned", DataType::Utf8, true),
        Field::new("meta", DataType::Struct(meta_fields()), true),
        Field::new("status", DataType::Utf8, true),
        Field::new(
            "code",
            DataType::Struct(Fields::from(vec![
                Field::new("coding", list_of(coding_fields()), true),
                Field::new("text", DataType::Utf8, true),
            ])),
            true,
        ),
        Field::new("subject", DataType::Struct(reference_fields()), true),
        Field::new("effectiveDateTime", DataType::Utf8, true),
        Field::new("issued", utc_ts(), true),
        Field::new("valueQuantity", DataType::Struct(quantity_fields()), true),
        Field::new("note", list_of(note_fields()), true),
        Field::new("_fid", DataType::Int32, true),
    ]))
}

/// `n` random UUID ids.
pub fn random_ids(n: usize) -> Vec<String> {
    (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect()
}

const LOINC: &[(&str, &str, &str)] = &[
    ("8302-2", "Body Height", "cm"),
    ("29463-7", "Body Weight", "kg"),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
    ("8867-4", "Heart rate", "/min"),
    ("9279-1", "Respiratory rate", "/min"),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL"),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL"),
];

const WORDS: &[&str] = &[
    "patient",
    "reports",
    "no",
    "acute",
    "distress",
    "follow",
    "up",
    "in",
    "two",
    "weeks",
    "measurement",
    "taken",
    "after",
    "rest",
    "stable",
    "trend",
    "compared",
    "with",
    "previous",
    "visit",
    "within",
    "normal",
    "limits",
    "repeat",
    "if",
    "symptoms",
    "persist",
];

/// A batch of encoded Observations for `rows`.
pub fn observation_batch(rows: &[RowSpec], rng: &mut impl Rng) -> RecordBatch {
    let n = rows.len();
    let schema = observation_schema();
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.id.as_str()),
    ));
    let id_versioned: ArrayRef = Arc::new(StringArray::from_iter(rows.iter().map(|r| {
        Some(format!(
            "Observation/{}/_history/{}",
            r.id,
            r.version_id.as_deref().unwrap_or("1")
        ))
    })));

    let meta = StructArray::new(
        meta_fields(),
        vec![
            Arc::new(StringArray::new_null(n)),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.version_id.clone()),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| {
                r.version_id
                    .as_ref()
                    .map(|v| format!("Observation/{}/_history/{v}", r.id))
            }))),
            Arc::new(
                TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.last_updated))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| "urn:fhirsync:synthetic".to_string()),
            )),
        ],
        None,
    );

    let picks: Vec<&(&str, &str, &str)> = (0..n)
        .map(|_| LOINC.choose(rng).unwrap_or(&LOINC[0]))
        .collect();
    // Two codings per observation.
    let coding_len = n * 2;
    let coding = StructArray::new(
        coding_fields(),
        vec![
            Arc::new(StringArray::new_null(coding_len)),
            Arc::new(StringArray::from_iter_values((0..coding_len).map(|i| {
                if i % 2 == 0 {
                    "http://loinc.org"
                } else {
                    "http://snomed.info/sct"
                }
            }))),
            Arc::new(StringArray::new_null(coding_len)),
            Arc::new(StringArray::from_iter_values((0..coding_len).map(|i| {
                if i % 2 == 0 {
                    picks[i / 2].0.to_string()
                } else {
                    format!("{}", 100000 + i % 9973)
                }
            }))),
            Arc::new(StringArray::from_iter_values(
                (0..coding_len).map(|i| picks[i / 2].1),
            )),
            Arc::new(arrow::array::BooleanArray::new_null(coding_len)),
        ],
        None,
    );
    let coding_list = ListArray::new(
        Arc::new(Field::new(
            "element",
            DataType::Struct(coding_fields()),
            true,
        )),
        OffsetBuffer::from_lengths(std::iter::repeat_n(2, n)),
        Arc::new(coding),
        None,
    );
    let code = StructArray::new(
        Fields::from(vec![
            Field::new("coding", list_of(coding_fields()), true),
            Field::new("text", DataType::Utf8, true),
        ]),
        vec![
            Arc::new(coding_list),
            Arc::new(StringArray::from_iter_values(picks.iter().map(|p| p.1))),
        ],
        None,
    );
    let subject = StructArray::new(
        reference_fields(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| format!("Patient/{}", uuid::Uuid::new_v4())),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("Synthetic Patient {}", i % 1000)),
            )),
        ],
        None,
    );
    let effective: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|_| {
        format!(
            "20{:02}-{:02}-{:02}T{:02}:{:02}:00+00:00",
            rng.random_range(10..26),
            rng.random_range(1..13),
            rng.random_range(1..29),
            rng.random_range(0..24),
            rng.random_range(0..60)
        )
    })));
    let issued: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..n).map(|_| rng.random_range(1_300_000_000_000_000i64..1_760_000_000_000_000)),
        )
        .with_timezone("UTC"),
    );
    let values: Vec<i128> = (0..n)
        .map(|_| rng.random_range(0..500_000_000i128))
        .collect();
    let quantity = StructArray::new(
        quantity_fields(),
        vec![
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(32, 6)
                    .unwrap_or_else(|_| Decimal128Array::new_null(n)),
            ),
            Arc::new(Int32Array::from_iter_values((0..n).map(|_| 2))),
            Arc::new(StringArray::from_iter_values(picks.iter().map(|p| p.2))),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| "http://unitsofmeasure.org"),
            )),
            Arc::new(StringArray::from_iter_values(picks.iter().map(|p| p.2))),
        ],
        None,
    );
    // Free text makes the row ~1 KB, the size of a typical encoded Observation.
    let note_text = StringArray::from_iter_values((0..n).map(|_| {
        let mut s = String::with_capacity(520);
        while s.len() < 480 {
            s.push_str(WORDS.choose(rng).unwrap_or(&"note"));
            s.push(' ');
        }
        s
    }));
    let notes = ListArray::new(
        Arc::new(Field::new("element", DataType::Struct(note_fields()), true)),
        OffsetBuffer::from_lengths(std::iter::repeat_n(1, n)),
        Arc::new(StructArray::new(
            note_fields(),
            vec![Arc::new(note_text)],
            None,
        )),
        None,
    );
    let fid: ArrayRef = Arc::new(Int32Array::from_iter_values((0..n).map(|i| i as i32)));

    let columns: Vec<ArrayRef> = vec![
        ids,
        id_versioned,
        Arc::new(meta),
        Arc::new(StringArray::from_iter_values((0..n).map(|_| "final"))),
        Arc::new(code),
        Arc::new(subject),
        effective,
        issued,
        Arc::new(quantity),
        Arc::new(notes),
        fid,
    ];
    RecordBatch::try_new(schema, columns).unwrap_or_else(|e| {
        // The arrays above are built to match the schema; this is unreachable short of a
        // bug in this module.
        panic!("generator produced an invalid batch: {e}")
    })
}
