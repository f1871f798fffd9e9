//! The buckets in memory: objects with generation numbers, and multipart uploads in progress.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// One stored object, as GCS keeps it.
#[derive(Debug, Clone)]
pub struct Object {
    pub data: Bytes,
    /// Changes on every write of the name; `0` is never used (it means "absent" in preconditions).
    pub generation: u64,
    pub etag: String,
    pub updated: DateTime<Utc>,
    /// The headers stored with the object and sent back with it (`content-type`,
    /// `cache-control`, `x-goog-meta-*`, ...).
    pub attributes: Vec<(String, String)>,
}

impl Object {
    fn new(data: Bytes, generation: u64, attributes: Vec<(String, String)>) -> Self {
        // GCS's ETag is the MD5 of the content; any content digest keeps its meaning.
        let digest = Sha256::digest(&data);
        let etag = format!(
            "\"{}\"",
            digest[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Self {
            data,
            generation,
            etag,
            updated: Utc::now(),
            attributes,
        }
    }
}

/// A multipart upload between `POST ?uploads` and its completion or abort.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bucket: String,
    pub name: String,
    pub attributes: Vec<(String, String)>,
    /// Part number → (ETag, data).
    pub parts: BTreeMap<u32, (String, Bytes)>,
}

/// Why a write was not done.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    /// The `x-goog-if-generation-match` precondition does not hold.
    PreconditionFailed,
    /// The completion names a part that was not uploaded, or with another ETag.
    InvalidPart(u32),
}

/// Every bucket, keyed by name; objects sorted by name (listing order).
#[derive(Debug, Default)]
pub struct Buckets {
    buckets: HashMap<String, BTreeMap<String, Object>>,
    /// Generations replaced or deleted, by (bucket, name, generation): readable with
    /// `?generation=`, as in a bucket with object versioning.
    noncurrent: HashMap<(String, String, u64), Object>,
    uploads: HashMap<String, Upload>,
    last_generation: u64,
    next_upload: u64,
}

impl Buckets {
    pub fn create_bucket(&mut self, name: &str) {
        self.buckets.entry(name.to_string()).or_default();
    }

    pub fn bucket(&self, name: &str) -> Option<&BTreeMap<String, Object>> {
        self.buckets.get(name)
    }

    pub fn get(&self, bucket: &str, name: &str) -> Result<&Object, WriteError> {
        self.buckets
            .get(bucket)
            .ok_or(WriteError::NoSuchBucket)?
            .get(name)
            .ok_or(WriteError::NoSuchKey)
    }

    /// A replaced or deleted generation of `name`.
    pub fn noncurrent(&self, bucket: &str, name: &str, generation: u64) -> Option<&Object> {
        self.noncurrent
            .get(&(bucket.to_string(), name.to_string(), generation))
    }

    fn generation(&mut self) -> u64 {
        // Microseconds since the epoch, as GCS's generations look, kept strictly increasing.
        let now = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(0);
        self.last_generation = now.max(self.last_generation + 1);
        self.last_generation
    }

    /// Writes `name`; `if_generation` is the `x-goog-if-generation-match` value (`0`: only
    /// when absent).
    pub fn put(
        &mut self,
        bucket: &str,
        name: &str,
        data: Bytes,
        attributes: Vec<(String, String)>,
        if_generation: Option<u64>,
    ) -> Result<&Object, WriteError> {
        let generation = self.generation();
        let objects = self
            .buckets
            .get_mut(bucket)
            .ok_or(WriteError::NoSuchBucket)?;
        let current = objects.get(name).map(|o| o.generation).unwrap_or(0);
        if if_generation.is_some_and(|g| g != current) {
            return Err(WriteError::PreconditionFailed);
        }
        let object = Object::new(data, generation, attributes);
        if let Some(old) = objects.insert(name.to_string(), object) {
            self.noncurrent
                .insert((bucket.to_string(), name.to_string(), old.generation), old);
        }
        Ok(&objects[name])
    }

    pub fn delete(&mut self, bucket: &str, name: &str) -> Result<(), WriteError> {
        let objects = self
            .buckets
            .get_mut(bucket)
            .ok_or(WriteError::NoSuchBucket)?;
        let old = objects.remove(name).ok_or(WriteError::NoSuchKey)?;
        self.noncurrent
            .insert((bucket.to_string(), name.to_string(), old.generation), old);
        Ok(())
    }

    /// Copies `from` (in the same or another bucket) to `to`, under the same precondition as
    /// [`Buckets::put`].
    pub fn copy(
        &mut self,
        (from_bucket, from): (&str, &str),
        (to_bucket, to): (&str, &str),
        if_generation: Option<u64>,
    ) -> Result<&Object, WriteError> {
        let source = self.get(from_bucket, from)?.clone();
        self.put(to_bucket, to, source.data, source.attributes, if_generation)
    }

    pub fn start_upload(
        &mut self,
        bucket: &str,
        name: &str,
        attributes: Vec<(String, String)>,
    ) -> Result<String, WriteError> {
        if !self.buckets.contains_key(bucket) {
            return Err(WriteError::NoSuchBucket);
        }
        self.next_upload += 1;
        let stamp = self.generation();
        let id = format!("upload-{}-{stamp}", self.next_upload);
        self.uploads.insert(
            id.clone(),
            Upload {
                bucket: bucket.to_string(),
                name: name.to_string(),
                attributes,
                parts: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    fn upload(&mut self, bucket: &str, name: &str, id: &str) -> Result<&mut Upload, WriteError> {
        self.uploads
            .get_mut(id)
            .filter(|u| u.bucket == bucket && u.name == name)
            .ok_or(WriteError::NoSuchUpload)
    }

    /// Stores one part; returns its ETag.
    pub fn put_part(
        &mut self,
        (bucket, name): (&str, &str),
        id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<String, WriteError> {
        let etag = Object::new(data.clone(), 0, Vec::new()).etag;
        self.upload(bucket, name, id)?
            .parts
            .insert(number, (etag.clone(), data));
        Ok(etag)
    }

    pub fn abort_upload(&mut self, bucket: &str, name: &str, id: &str) -> Result<(), WriteError> {
        self.upload(bucket, name, id)?;
        self.uploads.remove(id);
        Ok(())
    }

    /// Joins the named parts in the order given and writes the object.
    pub fn complete_upload(
        &mut self,
        (bucket, name): (&str, &str),
        id: &str,
        parts: &[(u32, String)],
    ) -> Result<&Object, WriteError> {
        let upload = self.upload(bucket, name, id)?;
        let mut data = Vec::new();
        for (number, etag) in parts {
            match upload.parts.get(number) {
                Some((stored, bytes)) if stored.trim_matches('"') == etag.trim_matches('"') => {
                    data.extend_from_slice(bytes)
                }
                _ => return Err(WriteError::InvalidPart(*number)),
            }
        }
        let Upload { attributes, .. } = self.uploads.remove(id).ok_or(WriteError::NoSuchUpload)?;
        self.put(bucket, name, data.into(), attributes, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_increase_and_guard_writes() {
        let mut b = Buckets::default();
        b.create_bucket("b");
        let g1 = b
            .put("b", "k", "1".into(), vec![], Some(0))
            .unwrap()
            .generation;
        assert_eq!(
            b.put("b", "k", "2".into(), vec![], Some(0)).unwrap_err(),
            WriteError::PreconditionFailed
        );
        let g2 = b
            .put("b", "k", "2".into(), vec![], Some(g1))
            .unwrap()
            .generation;
        assert!(g2 > g1);
        assert_eq!(b.get("b", "k").unwrap().data, Bytes::from("2"));
        assert_eq!(b.get("c", "k").unwrap_err(), WriteError::NoSuchBucket);
    }
}
