//! Bad input files and directories through `fhirsync import`: each beside a good
//! `Observation.ndjson` whose resource must land whatever happens to the bad file.
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use crate::harness::{Case, Entry, Expect};
use crate::lines::run_imports;

const PATIENTS: &str =
    "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n";
const OBSERVATION: &str = "{\"resourceType\":\"Observation\",\"id\":\"o1\",\"status\":\"final\",\"code\":{\"text\":\"x\"}}\n";

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text).expect("gzip in memory");
    enc.finish().expect("gzip in memory")
}

/// Many Patients, so that a cut gzip file breaks after some lines were read.
fn many_patients() -> String {
    (0..2000)
        .map(|i| format!("{{\"resourceType\":\"Patient\",\"id\":\"m{i}\",\"gender\":\"male\"}}\n"))
        .collect()
}

fn many_ids() -> &'static [&'static str] {
    let ids: Vec<&'static str> = (0..2000)
        .map(|i| &*Box::leak(format!("m{i}").into_boxed_str()))
        .collect();
    Box::leak(ids.into_boxed_slice())
}

/// A case whose input is `Observation.ndjson` (good) plus what it adds.
fn beside(kind: &'static str, decided: &'static str, expect: Expect) -> Case {
    Case::new(kind, decided, expect)
        .file("Observation.ndjson", OBSERVATION)
        .neighbours(&[("Observation", "o1")])
}

/// One case a line: a table.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let cut = {
        let gz = gzip(many_patients().as_bytes());
        gz[..gz.len() / 2].to_vec()
    };
    let two_members = [
        gzip(b"{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n"),
        gzip(b"{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n"),
    ]
    .concat();
    let with_garbage = [
        gzip(PATIENTS.as_bytes()),
        b"garbage after the gzip stream".to_vec(),
    ]
    .concat();
    let no_newline_blob: Vec<u8> = (0..=255u8)
        .filter(|b| *b != b'\n')
        .cycle()
        .take(1 << 20)
        .collect();
    vec![
        beside("empty file", "read as no lines", Expect::Skipped).file("Patient.ndjson", ""),
        beside("file of blank lines only", "read as no resources", Expect::Skipped).file("Patient.ndjson", "\n\n  \n\r\n"),
        beside("gzip file cut in the middle", "the other files land; the file is rejected by name, or the run refuses having written nothing", Expect::FileFails { file: "Patient.ndjson.gz", reason: "", partial: many_ids() })
            .file("Patient.ndjson.gz", cut),
        beside("file named .gz that is not gzip", "as a cut gzip file", Expect::FileFails { file: "Patient.ndjson.gz", reason: "", partial: &[] })
            .file("Patient.ndjson.gz", PATIENTS),
        beside("gzip file with garbage after its stream", "as a cut gzip file: the file is corrupt", Expect::FileFails { file: "Patient.ndjson.gz", reason: "", partial: &["p1", "p2"] })
            .file("Patient.ndjson.gz", with_garbage),
        beside("unreadable file (an I/O error while reading)", "as a cut gzip file", Expect::FileFails { file: "Patient.ndjson", reason: "", partial: &[] })
            .entry("Patient.ndjson", Entry::Link("/proc/self/mem")),
        beside("gzip file with a bad line", "the reject names the .gz file and the line", Expect::Rejected { file: "Patient.ndjson.gz", line: 2, reason: "no id" })
            .file("Patient.ndjson.gz", gzip(b"{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\"}\n{\"resourceType\":\"Patient\",\"id\":\"p2\"}\n"))
            .neighbours(&[("Patient", "p1"), ("Patient", "p2")]),
        beside("two gzip members concatenated (cat a.gz b.gz)", "every member is read", Expect::Skipped)
            .file("Patient.ndjson.gz", two_members)
            .neighbours(&[("Patient", "p1"), ("Patient", "p2")]),
        beside("JSON Lines file (.jsonl)", "read", Expect::Skipped)
            .file("Patient.jsonl", PATIENTS)
            .neighbours(&[("Patient", "p1"), ("Patient", "p2")]),
        beside("gzipped JSON Lines file (.jsonl.gz)", "read, like .ndjson.gz", Expect::Skipped)
            .file("Patient.jsonl.gz", gzip(PATIENTS.as_bytes()))
            .neighbours(&[("Patient", "p1"), ("Patient", "p2")]),
        beside("unexpected name: .json", "not input: only .ndjson, .ndjson.gz, .jsonl and .jsonl.gz files are read", Expect::Skipped).file("Patient.json", PATIENTS),
        beside("unexpected name: upper-case suffix", "not input: suffixes are matched as written", Expect::Skipped).file("Patient.NDJSON", PATIENTS),
        beside("unexpected name: a directory named like a file", "not input", Expect::Skipped).entry("Patient.ndjson", Entry::Dir).file("Patient.ndjson/inner.ndjson", PATIENTS),
        beside("unexpected name: a dangling link", "not input", Expect::Skipped).entry("Patient.ndjson", Entry::Link("/nonexistent/fhirsync-bad-input")),
        beside("unexpected name: not UTF-8", "read; rejects name the file with the invalid bytes replaced", Expect::Rejected { file: "P\u{fffd}tient.ndjson", line: 2, reason: "no id" })
            .file(std::ffi::OsStr::from_bytes(b"P\xfftient.ndjson"), "{\"resourceType\":\"Patient\",\"id\":\"p1\"}\n{\"resourceType\":\"Patient\"}\n")
            .neighbours(&[("Patient", "p1")]),
        beside("binary file without a newline (1 MiB)", "rejected as one line", Expect::Rejected { file: "Patient.ndjson", line: 1, reason: "not valid UTF-8" })
            .file("Patient.ndjson", no_newline_blob),
        Case::new("empty input directory", "refused", Expect::Refused { reason: "holds no .ndjson" }),
        Case::new("only files of unexpected names", "refused, naming what is read", Expect::Refused { reason: "holds no .ndjson" }).file("Patient.json", PATIENTS),
        beside("manifest.json that is not JSON", "refused before anything is written", Expect::Refused { reason: "is not JSON" }).file("manifest.json", "{transactionTime"),
        beside("manifest.json without transactionTime", "refused before anything is written", Expect::Refused { reason: "has no transactionTime" }).file("manifest.json", "{\"request\":\"x\",\"output\":[]}"),
        beside("manifest.json with a transactionTime that is not an instant", "refused before anything is written", Expect::Refused { reason: "transactionTime" }).file("manifest.json", "{\"transactionTime\":\"yesterday\"}"),
        beside("deletion file with a line that is not a Bundle", "refused before anything is written", Expect::Refused { reason: "not a JSON Bundle" }).file("deleted/Patient.ndjson", "not json\n"),
        beside("deletion entry with an id FHIR does not allow", "the entry is ignored with a warning; the rest is applied", Expect::Skipped)
            .file("deleted/Patient.ndjson", "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"request\":{\"method\":\"DELETE\",\"url\":\"Patient/a b\"}}]}\n")
            .file("Patient.ndjson", PATIENTS)
            .neighbours(&[("Patient", "p1"), ("Patient", "p2")]),
    ]
}

#[test]
fn bad_files_are_rejected_or_refused_and_the_other_files_land() {
    run_imports("files", cases());
}
