//! Local input files: listing a directory, finding its NDJSON files, opening them (gunzipping
//! `.gz` ones). Shared by `sync`, `import`, `encode` and the table listing.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Names of files read as NDJSON (`.gz`: gzip-compressed).
const NDJSON_SUFFIXES: [&str; 4] = [".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz"];

/// Large reads: NDJSON files are read front to back, often gigabytes of them.
const READ_BUFFER: usize = 1 << 20;

/// The entries of `dir`, sorted by path.
pub(crate) fn dir_entries(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let listing = || format!("listing {}", dir.display());
    let mut paths = std::fs::read_dir(dir)
        .with_context(listing)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(listing)?;
    paths.sort();
    Ok(paths)
}

/// The file name of `path` as text (lossy), or "" when it has none.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `path` names an NDJSON file (by its suffix).
fn is_ndjson(path: &Path) -> bool {
    let name = file_name(path);
    NDJSON_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The NDJSON files directly in `dir`, sorted by name; an error when there are none.
pub fn ndjson_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let files: Vec<PathBuf> = dir_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file() && is_ndjson(p))
        .collect();
    if files.is_empty() {
        bail!(
            "{} holds no {} files",
            dir.display(),
            NDJSON_SUFFIXES.join(", ")
        );
    }
    Ok(files)
}

/// Opens an NDJSON file, gunzipping `.gz` files.
pub fn open_ndjson(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::read::MultiGzDecoder::new(f),
        ))
    } else {
        Box::new(BufReader::with_capacity(READ_BUFFER, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ndjson_files_are_found_by_suffix_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.ndjson",
            "a.ndjson.gz",
            "c.jsonl",
            "d.jsonl.gz",
            "manifest.json",
            "d.txt",
            "E.NDJSON",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("e.ndjson")).unwrap();
        let names: Vec<String> = ndjson_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| file_name(p))
            .collect();
        assert_eq!(names, ["a.ndjson.gz", "b.ndjson", "c.jsonl", "d.jsonl.gz"]);
    }

    #[test]
    fn a_directory_without_ndjson_files_is_an_error_that_says_what_it_looks_for() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let e = ndjson_files(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds no .ndjson, .ndjson.gz, .jsonl, .jsonl.gz files"),
            "{e}"
        );
        let e = ndjson_files(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }

    #[test]
    fn gzipped_and_plain_files_read_the_same_lines() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"a\":1}\n{\"b\":2}\n";
        std::fs::write(dir.path().join("x.ndjson"), text).unwrap();
        let gz = File::create(dir.path().join("x.ndjson.gz")).unwrap();
        let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        for name in ["x.ndjson", "x.ndjson.gz"] {
            let lines: Vec<String> = open_ndjson(&dir.path().join(name))
                .unwrap()
                .lines()
                .map(Result::unwrap)
                .collect();
            assert_eq!(lines, ["{\"a\":1}", "{\"b\":2}"], "{name}");
        }
    }
}
