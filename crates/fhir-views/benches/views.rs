//! View throughput: resources parsed and run through SQL on FHIR views into Arrow batches, on
//! the Synthea fixture (38,483 resources, 49 MB) and on a larger input made by streaming the
//! fixture again and again (`FHIR_VIEWS_BENCH_BYTES`, default 1 GiB; memory stays flat).
//!
//! `cargo bench -p fhir-views --bench views`. Single-threaded: the figures are per core.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fhir_encoder::json::Tape;
use fhir_views::{RowBatchBuilder, ViewDefinition};
use serde_json::json;

/// Rows gathered per Arrow batch (as the sync does).
const BATCH_ROWS: usize = 4096;

fn views() -> Vec<ViewDefinition> {
    let defs = [
        json!({"name": "patient_demographics", "resource": "Patient", "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "gender", "path": "gender"},
                {"name": "birth_date", "path": "birthDate", "type": "date"},
                {"name": "deceased", "path": "deceased.exists()", "type": "boolean"}]},
            {"forEachOrNull": "name.where(use = 'official').first()", "column": [
                {"name": "family", "path": "family"},
                {"name": "given", "path": "given.join(' ')"}]},
            {"forEachOrNull": "address.first()", "column": [
                {"name": "city", "path": "city"},
                {"name": "postal_code", "path": "postalCode"}]}]}),
        json!({"name": "observation_values", "resource": "Observation",
            "where": [{"path": "value.ofType(Quantity).exists()"}], "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                {"name": "unit", "path": "value.ofType(Quantity).code"}]},
            {"forEach": "code.coding", "column": [
                {"name": "system", "path": "system"},
                {"name": "code", "path": "code"}]}]}),
        json!({"name": "condition_codes", "resource": "Condition", "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                {"name": "onset", "path": "onset.ofType(dateTime)"},
                {"name": "active", "path": "clinicalStatus.coding.exists(code = 'active')", "type": "boolean"}]},
            {"forEach": "code.coding", "column": [
                {"name": "code", "path": "code"},
                {"name": "display", "path": "display"}]}]}),
        json!({"name": "eob_items", "resource": "ExplanationOfBenefit", "select": [
            {"column": [
                {"name": "id", "path": "getResourceKey()"},
                {"name": "patient", "path": "patient.getReferenceKey(Patient)"}]},
            {"forEach": "item", "column": [
                {"name": "sequence", "path": "sequence", "type": "positiveInt"},
                {"name": "service", "path": "productOrService.coding.code.first()"},
                {"name": "net", "path": "net.value", "type": "decimal"}],
             "select": [{"forEachOrNull": "adjudication", "column": [
                {"name": "category", "path": "category.coding.code.first()"},
                {"name": "amount", "path": "amount.value", "type": "decimal"}]}]}]}),
    ];
    defs.iter()
        .map(|d| ViewDefinition::from_json(d).expect("a valid view"))
        .collect()
}

fn fixture_lines() -> Vec<String> {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../bulk-test-server/data/synthea-100");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .collect();
    names.sort();
    let mut lines = Vec::new();
    for p in names {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&p).expect("open"))
            .read_to_string(&mut text)
            .expect("gunzip");
        lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
    }
    lines
}

#[derive(Default)]
struct Tally {
    resources: u64,
    bytes: u64,
    rows: u64,
    time: Duration,
}

/// Runs every view over `lines` (each line given to the views of its type), `rounds` times.
fn run(views: &[ViewDefinition], lines: &[String], rounds: u64) -> BTreeMap<String, Tally> {
    let mut builders: Vec<RowBatchBuilder> = views.iter().map(RowBatchBuilder::new).collect();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut tape = Tape::default();
    for _ in 0..rounds {
        for line in lines {
            let start = Instant::now();
            let doc = tape.parse(line).expect("JSON");
            let rt = doc.get(0, "resourceType").and_then(|t| doc.str(t));
            for (view, builder) in views.iter().zip(builders.iter_mut()) {
                if rt != Some(view.resource.as_str()) {
                    continue;
                }
                let rows = view.rows(doc).expect("rows");
                for row in &rows {
                    builder.push(row).expect("row fits");
                }
                if builder.len() >= BATCH_ROWS {
                    builder.finish().expect("batch");
                }
                let t = tallies
                    .entry(view.name.clone().unwrap_or_default())
                    .or_default();
                t.resources += 1;
                t.bytes += line.len() as u64;
                t.rows += rows.len() as u64;
                t.time += start.elapsed();
            }
        }
    }
    for b in &mut builders {
        b.finish().expect("batch");
    }
    tallies
}

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn report(title: &str, tallies: &BTreeMap<String, Tally>) {
    println!("\n{title}");
    println!(
        "{:<22} {:>11} {:>9} {:>11} {:>8} {:>13} {:>9}",
        "view", "resources", "MB", "rows", "s", "rows/s", "MB/s"
    );
    let mut total = Tally::default();
    for (name, t) in tallies {
        let s = t.time.as_secs_f64();
        println!(
            "{:<22} {:>11} {:>9.1} {:>11} {:>8.3} {:>13.0} {:>9.1}",
            name,
            t.resources,
            t.bytes as f64 / 1e6,
            t.rows,
            s,
            t.rows as f64 / s,
            t.bytes as f64 / 1e6 / s
        );
        total.resources += t.resources;
        total.bytes += t.bytes;
        total.rows += t.rows;
        total.time += t.time;
    }
    let s = total.time.as_secs_f64();
    println!(
        "{:<22} {:>11} {:>9.1} {:>11} {:>8.3} {:>13.0} {:>9.1}",
        "all four",
        total.resources,
        total.bytes as f64 / 1e6,
        total.rows,
        s,
        total.rows as f64 / s,
        total.bytes as f64 / 1e6 / s
    );
}

fn main() {
    let views = views();
    let lines = fixture_lines();
    let fixture_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    println!(
        "fixture: {} resources, {:.1} MB; peak RSS after loading it: {}",
        lines.len(),
        fixture_bytes as f64 / 1e6,
        vm_hwm()
    );
    // A warm-up round, then the measured one.
    run(&views, &lines, 1);
    report(
        "Synthea fixture (parse + view rows + Arrow batches)",
        &run(&views, &lines, 1),
    );
    let target: u64 = std::env::var("FHIR_VIEWS_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let rounds = target.div_ceil(fixture_bytes).max(1);
    let title = format!(
        "{:.2} GB: the fixture streamed {rounds} times (all 19 types read, views on 4)",
        (rounds * fixture_bytes) as f64 / 1e9
    );
    let wall = Instant::now();
    let tallies = run(&views, &lines, rounds);
    report(&title, &tallies);
    println!(
        "wall time over all {:.2} GB, other types' lines parsed too: {:.2} s; peak RSS {}",
        (rounds * fixture_bytes) as f64 / 1e9,
        wall.elapsed().as_secs_f64(),
        vm_hwm()
    );
}
