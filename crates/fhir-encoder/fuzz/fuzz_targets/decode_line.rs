//! Any bytes as an NDJSON line, for every supported resource type and through the mixed-type
//! reader: never a panic, a batch that always assembles, and every line of the input either
//! encoded, rejected or blank (nothing lost, nothing counted twice).
#![no_main]
use std::cell::RefCell;
use std::sync::OnceLock;

use fhir_encoder::{BatchBuilder, BatchLimits, Encoder, EncoderOptions, LineRef, NdjsonBatches};
use libfuzzer_sys::fuzz_target;

/// Encoders with extensions off and on, built once: their plans are cached.
fn encoder(extensions: bool) -> &'static Encoder {
    static ENCODERS: OnceLock<[Encoder; 2]> = OnceLock::new();
    let [off, on] = ENCODERS.get_or_init(|| {
        [false, true].map(|enable_extensions| {
            Encoder::new(EncoderOptions {
                enable_extensions,
                ..Default::default()
            })
        })
    });
    if extensions { on } else { off }
}

/// Lines the reader must account for: those over `max_line` bytes and those with more than
/// white space and a byte order mark.
fn lines_to_account_for(data: &[u8], max_line: usize) -> u64 {
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .filter(|l| {
            let len = l.strip_suffix(b"\r").unwrap_or(l).len();
            let t = l.trim_ascii();
            let t = t.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(t).trim_ascii();
            len > max_line || !t.is_empty()
        })
        .count() as u64
}

thread_local! {
    /// One builder per type and extension setting, reused: `finish` starts a new batch.
    static BUILDERS: RefCell<Vec<(bool, BatchBuilder)>> = RefCell::new(
        [false, true]
            .into_iter()
            .flat_map(|ext| {
                ["Patient", "Observation", "Questionnaire"].map(|rt| {
                    let b = encoder(ext).batch_builder(rt, BatchLimits::default());
                    (ext, b.expect("supported type"))
                })
            })
            .collect(),
    );
}

fuzz_target!(|data: &[u8]| {
    let extensions = data.first() == Some(&b'{');
    let encoder = encoder(extensions);
    BUILDERS.with_borrow_mut(|builders| {
        for (_, b) in builders.iter_mut().filter(|(ext, _)| *ext == extensions) {
            let _ = b.push_line(data, &LineRef::new("fuzz", 1));
            let batch = b.finish().expect("batch assembles");
            assert!(batch.num_rows() <= 1);
        }
    });
    // A small line limit (from the input's last byte) reaches the over-long line path too.
    let max_line = data.last().map_or(64, |b| 16 + usize::from(*b));
    let limits = BatchLimits {
        max_rows: 3,
        max_bytes: 256,
    };
    let mut batches =
        NdjsonBatches::new(encoder.clone(), data, "fuzz", limits).with_max_line_bytes(max_line);
    let mut rows = 0u64;
    for item in batches.by_ref() {
        let (rt, batch) = item.expect("in-memory input cannot fail");
        assert_eq!(batch.schema(), encoder.schema(&rt).expect("a known type"));
        rows += batch.num_rows() as u64;
    }
    let rejects = batches.take_rejects().len() as u64;
    assert_eq!(rows, batches.rows_encoded());
    assert_eq!(
        rows + rejects,
        lines_to_account_for(data, max_line),
        "every line is encoded, rejected or blank"
    );
});
