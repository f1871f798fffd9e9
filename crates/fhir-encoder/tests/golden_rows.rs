//! The Synthea fixture encoded value by value against Pathling 6.3.1's encoding of it (all 19
//! resource types, default configuration).
mod common;

use std::collections::HashMap;

use arrow_array::ArrayRef;
use arrow_array::cast::AsArray;
use common::*;
use fhir_encoder::{Encoder, EncoderOptions};
use serde_json::Value;

#[test]
fn synthea_values_match_pathling() {
    let encoder = Encoder::new(EncoderOptions::default());
    let mut types: Vec<String> = std::fs::read_dir(synthea_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".ndjson.gz").map(str::to_string))
        .collect();
    types.sort();
    assert_eq!(types.len(), 19, "{types:?}");
    let mut report = Vec::new();
    let mut total = 0;
    for rt in &types {
        let (batches, warnings, rejects) =
            encode_file(&encoder, rt, &synthea_dir().join(format!("{rt}.ndjson.gz")));
        assert!(rejects.is_empty(), "{rt}: {rejects:?}");
        assert!(
            warnings.is_empty(),
            "{rt}: {:?}",
            &warnings[..warnings.len().min(5)]
        );
        let golden: HashMap<String, Value> =
            gz_lines(&golden_dir().join(format!("rows/{rt}.jsonl.gz")))
                .into_iter()
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let v: Value = serde_json::from_slice(&l).unwrap();
                    (v["id"].as_str().unwrap().to_string(), v)
                })
                .collect();
        let mut rows = 0;
        let mut diffs = Vec::new();
        for batch in &batches {
            let ids = batch
                .column_by_name("id")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let root: ArrayRef = std::sync::Arc::new(arrow_array::StructArray::from(batch.clone()));
            for r in 0..batch.num_rows() {
                let id = ids.value(r);
                let g = golden
                    .get(id)
                    .unwrap_or_else(|| panic!("{rt}/{id} not in golden rows"));
                compare("", &root, r, Some(g), &format!("{rt}/{id}"), &mut diffs);
                rows += 1;
            }
        }
        assert_eq!(rows, golden.len(), "{rt}: row count");
        total += rows;
        if !diffs.is_empty() {
            report.push(format!(
                "{rt}: {} differences, first: {}",
                diffs.len(),
                diffs[..diffs.len().min(8)].join("\n  ")
            ));
        }
    }
    assert_eq!(total, 38_483);
    assert!(report.is_empty(), "{}", report.join("\n"));
}
