//! Any bytes as an NDJSON line, for every supported resource type and through the mixed-type
//! reader: never a panic, and a batch that always assembles.
#![no_main]
use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, LineRef, NdjsonBatches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let encoder = Encoder::new(EncoderOptions {
        enable_extensions: data.first() == Some(&b'{'),
        ..Default::default()
    });
    for rt in ["Patient", "Observation", "Questionnaire"] {
        let mut b = encoder
            .batch_builder(rt, BatchLimits::default())
            .expect("supported type");
        let _ = b.push_line(data, &LineRef::new("fuzz", 1));
        b.finish().expect("batch assembles");
    }
    for item in NdjsonBatches::new(encoder, data, "fuzz", BatchLimits::default()) {
        item.expect("in-memory input cannot fail");
    }
});
