//! Key records partitioned by id bucket into one anonymous temporary file, so that an input
//! too large to index at once is read once and then matched one bucket at a time.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::keys::Recency;

/// Bytes a bucket buffers before its chunk is appended to the file.
const CHUNK_BYTES: usize = 64 * 1024;

const HAS_LAST_UPDATED: u8 = 1;
const HAS_VERSION: u8 = 2;
const FLAGGED: u8 = 4;

/// One row's key: id, recency, position, and one flag for the caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRecord {
    pub(crate) id: Box<str>,
    pub(crate) recency: Recency,
    pub(crate) file: u32,
    pub(crate) row: u32,
    pub(crate) flag: bool,
}

/// Appends key records by bucket; each bucket's records read back in the order written.
pub(crate) struct Spill {
    file: File,
    len: u64,
    chunk_bytes: usize,
    buffers: Vec<Vec<u8>>,
    chunks: Vec<Vec<(u64, u32)>>,
}

impl Spill {
    /// A spill of `buckets` buckets in an unnamed file in `dir` (gone when dropped, or
    /// when the process dies).
    pub(crate) fn new(dir: &Path, buckets: usize) -> io::Result<Self> {
        Ok(Self {
            file: tempfile::tempfile_in(dir)?,
            len: 0,
            chunk_bytes: CHUNK_BYTES,
            buffers: vec![Vec::new(); buckets],
            chunks: vec![Vec::new(); buckets],
        })
    }

    /// Adds a record with fields borrowed from a batch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        bucket: usize,
        id: &str,
        last_updated: Option<i64>,
        version_id: Option<&str>,
        file: u32,
        row: u32,
        flag: bool,
    ) -> io::Result<()> {
        let buf = &mut self.buffers[bucket];
        let mut tag = 0;
        if last_updated.is_some() {
            tag |= HAS_LAST_UPDATED;
        }
        if version_id.is_some() {
            tag |= HAS_VERSION;
        }
        if flag {
            tag |= FLAGGED;
        }
        buf.push(tag);
        put_str(buf, id);
        if let Some(lu) = last_updated {
            buf.extend_from_slice(&lu.to_le_bytes());
        }
        if let Some(v) = version_id {
            put_str(buf, v);
        }
        buf.extend_from_slice(&file.to_le_bytes());
        buf.extend_from_slice(&row.to_le_bytes());
        if buf.len() >= self.chunk_bytes {
            self.flush_bucket(bucket)?;
        }
        Ok(())
    }

    fn flush_bucket(&mut self, bucket: usize) -> io::Result<()> {
        let buf = &mut self.buffers[bucket];
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(buf)?;
        let len = u32::try_from(buf.len()).map_err(io::Error::other)?;
        self.chunks[bucket].push((self.len, len));
        self.len += u64::from(len);
        buf.clear();
        Ok(())
    }

    /// Writes out every bucket's buffered records; call once all are pushed.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        for b in 0..self.buffers.len() {
            self.flush_bucket(b)?;
            self.buffers[b] = Vec::new();
        }
        self.file.flush()
    }

    /// Calls `f` with every record of `bucket`, in the order pushed.
    pub(crate) fn for_each(
        &mut self,
        bucket: usize,
        mut f: impl FnMut(KeyRecord),
    ) -> io::Result<()> {
        let mut chunk = Vec::new();
        for &(offset, len) in &self.chunks[bucket] {
            chunk.resize(len as usize, 0);
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.read_exact(&mut chunk)?;
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                f(decode(&mut rest)?);
            }
        }
        Ok(())
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Ids are at most 64 characters and version ids short; a u32 length is still used so
    // nothing is ever cut.
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if rest.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "spill record cut short",
        ));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn take_u32(rest: &mut &[u8]) -> io::Result<u32> {
    let b = take(rest, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_str(rest: &mut &[u8]) -> io::Result<Box<str>> {
    let n = take_u32(rest)? as usize;
    std::str::from_utf8(take(rest, n)?)
        .map(Box::from)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn decode(rest: &mut &[u8]) -> io::Result<KeyRecord> {
    let tag = take(rest, 1)?[0];
    let id = take_str(rest)?;
    let last_updated = if tag & HAS_LAST_UPDATED != 0 {
        let b = take(rest, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_le_bytes(a))
    } else {
        None
    };
    let version_id = if tag & HAS_VERSION != 0 {
        Some(take_str(rest)?)
    } else {
        None
    };
    Ok(KeyRecord {
        id,
        recency: Recency {
            last_updated,
            version_id,
        },
        file: take_u32(rest)?,
        row: take_u32(rest)?,
        flag: tag & FLAGGED != 0,
    })
}

/// A fixed-size membership filter over id fingerprints (one hash, no false negatives):
/// lets a scan skip spilling stored rows whose id is surely not in the input.
pub(crate) struct FingerprintFilter {
    bits: Vec<u64>,
}

impl FingerprintFilter {
    /// 2^26 bits (8 MiB): under 5% false positives up to ~3M ids.
    pub(crate) fn new() -> Self {
        Self {
            bits: vec![0; 1 << 20],
        }
    }

    fn slot(&self, fp: u64) -> (usize, u64) {
        // The high bits: the bucket of a fingerprint comes from its low bits (`% count`).
        let bit = (fp >> 38) as usize % (self.bits.len() * 64);
        (bit / 64, 1 << (bit % 64))
    }

    pub(crate) fn insert(&mut self, fp: u64) {
        let (w, m) = self.slot(fp);
        self.bits[w] |= m;
    }

    pub(crate) fn may_contain(&self, fp: u64) -> bool {
        let (w, m) = self.slot(fp);
        self.bits[w] & m != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn records_come_back_by_bucket_in_order(
            recs in proptest::collection::vec(
                (0usize..5, "\\PC{0,40}", proptest::option::of(any::<i64>()),
                 proptest::option::of("[0-9a-z]{0,12}"), any::<u32>(), any::<u32>(), any::<bool>()),
                0..400),
            chunk_bytes in 1usize..2000
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut spill = Spill::new(dir.path(), 5).unwrap();
            // Small chunks: buckets interleave in the file.
            spill.chunk_bytes = chunk_bytes;
            for (b, id, lu, v, f, r, flag) in &recs {
                spill.push(*b, id, *lu, v.as_deref(), *f, *r, *flag).unwrap();
            }
            spill.finish().unwrap();
            for b in 0..5 {
                let mut got = Vec::new();
                spill.for_each(b, |r| got.push(r)).unwrap();
                let want: Vec<KeyRecord> = recs
                    .iter()
                    .filter(|r| r.0 == b)
                    .map(|(_, id, lu, v, f, r, flag)| KeyRecord {
                        id: id.as_str().into(),
                        recency: Recency { last_updated: *lu, version_id: v.as_deref().map(Box::from) },
                        file: *f,
                        row: *r,
                        flag: *flag,
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn the_filter_has_no_false_negatives() {
        let mut f = FingerprintFilter::new();
        let fps: Vec<u64> = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for fp in &fps {
            f.insert(*fp);
        }
        assert!(fps.iter().all(|fp| f.may_contain(*fp)));
        let misses = (10_000..20_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .filter(|fp| f.may_contain(*fp))
            .count();
        assert!(misses < 100, "{misses} false positives in 10,000");
    }
}
