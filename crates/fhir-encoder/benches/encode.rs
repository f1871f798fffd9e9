//! Encoding throughput and peak memory on the Synthea fixture and on a large generated input.
//!
//! `cargo bench -p fhir-encoder` (set `FHIR_ENCODER_BENCH_BYTES` to size the large input,
//! default 1 GiB). Single-threaded: the MB/s figures are per core.
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::Instant;

use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, NdjsonBatches};

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

/// CPU time (user + system) of this process in seconds, from `/proc/self/stat` (ticks of
/// 1/100 s): throughput per core that does not depend on what else the machine runs.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

fn fixture_lines() -> Vec<Vec<u8>> {
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
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&p).expect("open"))
            .read_to_end(&mut text)
            .expect("gunzip");
        lines.extend(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| l.to_vec()),
        );
    }
    lines
}

/// Streams the fixture's lines over and over with fresh ids until `limit` bytes.
struct Repeat {
    lines: Vec<Vec<u8>>,
    next: usize,
    round: u64,
    produced: u64,
    limit: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Repeat {
    fn refill(&mut self) {
        self.buf.clear();
        self.pos = 0;
        while self.buf.len() < 1 << 20 && self.produced < self.limit {
            let line = &self.lines[self.next];
            let before = self.buf.len();
            // Make the id unique per round: `"id":"abc"` -> `"id":"abc-r<round>"`.
            let at = line
                .windows(6)
                .position(|w| w == b"\"id\":\"")
                .map(|p| p + 6);
            match at.and_then(|a| line[a..].iter().position(|b| *b == b'"').map(|e| a + e)) {
                Some(end) => {
                    self.buf.extend_from_slice(&line[..end]);
                    self.buf
                        .extend_from_slice(format!("-r{}", self.round).as_bytes());
                    self.buf.extend_from_slice(&line[end..]);
                }
                None => self.buf.extend_from_slice(line),
            }
            self.buf.push(b'\n');
            self.produced += (self.buf.len() - before) as u64;
            self.next += 1;
            if self.next == self.lines.len() {
                self.next = 0;
                self.round += 1;
            }
        }
    }
}

impl Read for Repeat {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Repeat {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.buf.len() {
            self.refill();
        }
        Ok(&self.buf[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

fn run(name: &str, input: impl BufRead, bytes: u64) {
    let encoder = Encoder::new(EncoderOptions::default());
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let mut reader = NdjsonBatches::new(encoder, input, name, BatchLimits::default());
    let mut batches = 0u64;
    let mut rows = 0u64;
    let mut rejects = 0usize;
    for item in reader.by_ref() {
        let (_, batch) = item.expect("batch");
        rows += batch.num_rows() as u64;
        batches += 1;
    }
    rejects += reader.take_rejects().len();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "{name}: {:.1} MB NDJSON, {rows} resources, {batches} batches, {rejects} rejects; wall {secs:.2} s ({:.0} MB/s), CPU {cpu:.2} s: {:.0} MB/s and {:.0} resources/s per core; peak RSS (VmHWM) {}",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        bytes as f64 / 1e6 / cpu,
        rows as f64 / cpu,
        vm_hwm()
    );
}

fn main() {
    let lines = fixture_lines();
    let fixture_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    println!("after loading the fixture: peak RSS {}", vm_hwm());
    let mut all = Vec::with_capacity(fixture_bytes as usize);
    for l in &lines {
        all.extend_from_slice(l);
        all.push(b'\n');
    }
    run("synthea-100", &all[..], fixture_bytes);
    run("synthea-100 (2nd run)", &all[..], fixture_bytes);
    drop(all);
    let limit: u64 = std::env::var("FHIR_ENCODER_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let repeat = Repeat {
        lines,
        next: 0,
        round: 0,
        produced: 0,
        limit,
        buf: Vec::new(),
        pos: 0,
    };
    run("generated (fixture repeated, streamed)", repeat, limit);
}
