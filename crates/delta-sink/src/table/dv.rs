//! Deletion vectors (the Delta protocol's "Deletion Vector Format"): reading the ones a
//! table's files carry, writing the ones a merge produces, and enabling them on a table.
//!
//! With deletion vectors a merge marks the replaced rows of a stored file as deleted
//! instead of rewriting the file: the file stays, its `add` action gains a descriptor of
//! a RoaringBitmapArray of deleted row positions. delta-rs applies them when reading but
//! does not write them, so this module writes them with the kernel's writer.

use std::collections::HashMap;
use std::sync::Arc;

use delta_kernel::actions::deletion_vector_writer::{
    DeletionVector, StreamingDeletionVectorWriter,
};
use deltalake::kernel::{Add, DeletionVectorDescriptor, LogicalFileView, StorageType};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{ObjectStore, TableProperty};
use futures::{StreamExt, TryStreamExt};
use roaring::RoaringTreemap;
use serde_json::Value;
use url::Url;

use super::ResourceTable;
use crate::error::{Result, SinkError};

impl ResourceTable {
    /// The rows each file's deletion vector marks deleted (`None` for files without one).
    pub(crate) async fn read_deletion_vectors(
        &self,
        files: &[LogicalFileView],
    ) -> Result<Vec<Option<RoaringTreemap>>> {
        let store = self.table.object_store();
        let root = self.table.table_url().clone();
        futures::stream::iter(files.iter().map(|f| {
            let (store, root) = (store.clone(), root.clone());
            async move {
                let Some(d) = f.deletion_vector_descriptor() else {
                    return Ok(None);
                };
                read(&store, &root, &d).await.map(Some).map_err(|detail| {
                    SinkError::invalid(
                        &self.name,
                        format!("deletion vector of {}: {detail}", f.path()),
                    )
                })
            }
        }))
        .buffered(8)
        .try_collect()
        .await
    }

    pub(crate) fn deletion_vectors_enabled(&self) -> Result<bool> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        Ok(snapshot.table_config().enable_deletion_vectors == Some(true))
    }

    /// Sets `delta.enableDeletionVectors` (upgrading the table's protocol) in a commit of
    /// its own.
    pub(crate) async fn enable_deletion_vectors(&mut self) -> Result<()> {
        tracing::info!(table = %self.name, "enabling deletion vectors");
        self.table = self
            .table
            .clone()
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                TableProperty::EnableDeletionVectors.as_ref().to_string(),
                "true".to_string(),
            )]))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes the vectors of `marks` into one new file and returns the add actions that
    /// keep the marked files with their new vectors.
    pub(crate) async fn mark_rows(
        &self,
        marks: Vec<(LogicalFileView, RoaringTreemap)>,
    ) -> Result<Vec<Add>> {
        if marks.is_empty() {
            return Ok(Vec::new());
        }
        let (files, vectors): (Vec<_>, Vec<_>) = marks.into_iter().unzip();
        let descriptors = write(&self.table.object_store(), vectors)
            .await
            .map_err(|d| {
                SinkError::invalid(&self.name, format!("writing deletion vectors: {d}"))
            })?;
        Ok(files
            .iter()
            .zip(descriptors)
            .map(|(f, d)| {
                #[allow(deprecated)]
                let add = f.add_action();
                marked_add(add, d)
            })
            .collect())
    }
}

/// A stored file's add action re-added with a new deletion vector.
fn marked_add(mut add: Add, vector: DeletionVectorDescriptor) -> Add {
    add.deletion_vector = Some(vector);
    add.data_change = true;
    add.stats = add.stats.as_deref().map(wide_bounds);
    add
}

/// File statistics marked as no longer tight: min/max and null counts were taken over rows
/// of which some are now deleted (the Delta protocol's `tightBounds`, which readers take as
/// true when absent).
fn wide_bounds(stats: &str) -> String {
    match serde_json::from_str::<Value>(stats) {
        Ok(Value::Object(mut fields)) => {
            fields.insert("tightBounds".into(), Value::Bool(false));
            Value::Object(fields).to_string()
        }
        _ => stats.to_string(),
    }
}

/// The "portable" RoaringBitmapArray serialization's magic number.
const PORTABLE_MAGIC: u32 = 1681511377;

/// Deleted row positions of one file.
struct Rows(RoaringTreemap);

impl DeletionVector for Rows {
    type IndexIterator = roaring::treemap::IntoIter;

    fn into_iter(self) -> Self::IndexIterator {
        self.0.into_iter()
    }

    fn cardinality(&self) -> u64 {
        self.0.len()
    }
}

/// Reads the deleted row positions a descriptor points at. `store` is rooted at the
/// table (`root`); `'u'` vectors live in the table directory, `'p'` ones must too.
async fn read(
    store: &Arc<dyn ObjectStore>,
    root: &Url,
    dv: &DeletionVectorDescriptor,
) -> Result<RoaringTreemap, String> {
    let size = usize::try_from(dv.size_in_bytes)
        .map_err(|_| format!("negative size {}", dv.size_in_bytes))?;
    let relative = match dv.storage_type {
        StorageType::Inline => {
            let bytes = z85::decode(&dv.path_or_inline_dv)
                .map_err(|e| format!("inline vector is not z85: {e}"))?;
            return parse_bitmap(bytes.get(..size).unwrap_or(&bytes));
        }
        StorageType::UuidRelativePath => relative_path(&dv.path_or_inline_dv)?,
        StorageType::AbsolutePath => {
            let url = Url::parse(&dv.path_or_inline_dv)
                .map_err(|e| format!("bad path {:?}: {e}", dv.path_or_inline_dv))?;
            let root = root.as_str().trim_end_matches('/');
            url.as_str()
                .strip_prefix(root)
                .map(|p| p.trim_start_matches('/').to_string())
                .ok_or_else(|| format!("{url} is outside the table"))?
        }
    };
    // Layout at `offset`: size (u32 BE) | magic (u32 LE) + bitmap (`size` bytes) | CRC-32
    // of magic + bitmap (u32 BE).
    let start = usize::try_from(dv.offset.unwrap_or(1)).map_err(|_| "negative offset")?;
    let path = deltalake::Path::from(relative.as_str());
    let bytes = store
        .get_range(&path, (start as u64)..(start + 8 + size) as u64)
        .await
        .map_err(|e| format!("reading {relative}: {e}"))?;
    let stored_size = u32::from_be_bytes(word(&bytes, 0)?) as usize;
    if stored_size != size {
        return Err(format!(
            "{relative}: the log says {size} bytes, the file {stored_size}"
        ));
    }
    let body = &bytes[4..4 + size];
    let crc = u32::from_be_bytes(word(&bytes, 4 + size)?);
    let expected = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body);
    if crc != expected {
        return Err(format!("{relative}: CRC mismatch"));
    }
    parse_bitmap(body)
}

fn word(bytes: &[u8], at: usize) -> Result<[u8; 4], String> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "truncated deletion vector".to_string())
}

/// Magic number followed by a portable RoaringTreemap.
fn parse_bitmap(body: &[u8]) -> Result<RoaringTreemap, String> {
    let magic = u32::from_le_bytes(word(body, 0)?);
    if magic != PORTABLE_MAGIC {
        return Err(format!("unsupported bitmap format (magic {magic})"));
    }
    RoaringTreemap::deserialize_from(&body[4..]).map_err(|e| format!("bad bitmap: {e}"))
}

/// `<prefix><z85 uuid>` → `<prefix>/deletion_vector_<uuid>.bin`.
fn relative_path(encoded: &str) -> Result<String, String> {
    let split = encoded
        .len()
        .checked_sub(20)
        .filter(|s| encoded.is_char_boundary(*s))
        .ok_or_else(|| format!("bad vector path {encoded:?}"))?;
    let (prefix, id) = encoded.split_at(split);
    let uuid = z85::decode(id)
        .ok()
        .and_then(|b| uuid::Uuid::from_slice(&b).ok())
        .ok_or_else(|| format!("bad vector path {encoded:?}"))?;
    Ok(if prefix.is_empty() {
        format!("deletion_vector_{uuid}.bin")
    } else {
        format!("{prefix}/deletion_vector_{uuid}.bin")
    })
}

/// Writes `vectors` into one new deletion-vector file in the table directory and returns
/// their descriptors, in order.
async fn write(
    store: &Arc<dyn ObjectStore>,
    vectors: Vec<RoaringTreemap>,
) -> Result<Vec<DeletionVectorDescriptor>, String> {
    let uuid = uuid::Uuid::new_v4();
    let mut buf = Vec::new();
    let mut descriptors = Vec::with_capacity(vectors.len());
    {
        let mut writer = StreamingDeletionVectorWriter::new(&mut buf);
        for rows in vectors {
            let written = writer
                .write_deletion_vector(Rows(rows))
                .map_err(|e| e.to_string())?;
            descriptors.push(DeletionVectorDescriptor {
                storage_type: StorageType::UuidRelativePath,
                path_or_inline_dv: z85::encode(uuid.as_bytes()),
                offset: Some(written.offset),
                size_in_bytes: written.size_in_bytes,
                cardinality: written.cardinality,
            });
        }
        writer.finalize().map_err(|e| e.to_string())?;
    }
    let path = deltalake::Path::from(format!("deletion_vector_{uuid}.bin"));
    store
        .put(&path, buf.into())
        .await
        .map_err(|e| format!("writing {path}: {e}"))?;
    Ok(descriptors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_files_are_re_added_with_the_vector_and_loose_statistics() {
        let vector = DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: "ab".into(),
            offset: Some(1),
            size_in_bytes: 30,
            cardinality: 2,
        };
        let add = Add {
            path: "part-0.parquet".into(),
            data_change: false,
            stats: Some(r#"{"numRecords":10,"tightBounds":true}"#.into()),
            ..Add::default()
        };
        let marked = marked_add(add, vector.clone());
        assert_eq!(marked.path, "part-0.parquet");
        assert!(marked.data_change);
        assert_eq!(marked.deletion_vector, Some(vector.clone()));
        let stats: Value = serde_json::from_str(marked.stats.as_deref().unwrap()).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({"numRecords": 10, "tightBounds": false})
        );
        // Statistics that are not a JSON object are left as they are; none stay none.
        assert_eq!(wide_bounds("not json"), "not json");
        assert_eq!(marked_add(Add::default(), vector).stats, None);
    }

    #[tokio::test]
    async fn written_vectors_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(
            deltalake::logstore::object_store::local::LocalFileSystem::new_with_prefix(dir.path())
                .unwrap(),
        );
        let root = Url::from_directory_path(dir.path()).unwrap();
        let a: RoaringTreemap = [0u64, 5, 70_000, 1 << 33].into_iter().collect();
        let b: RoaringTreemap = (10u64..2000).collect();
        let descs = write(&store, vec![a.clone(), b.clone()]).await.unwrap();
        assert_eq!(descs.len(), 2);
        assert_eq!(descs[0].offset, Some(1));
        assert_eq!(descs[1].cardinality, 1990);
        assert_eq!(read(&store, &root, &descs[0]).await.unwrap(), a);
        assert_eq!(read(&store, &root, &descs[1]).await.unwrap(), b);
        // The kernel's reader (what delta-rs scans with) agrees.
        let kernel = delta_kernel::actions::deletion_vector::DeletionVectorDescriptor::try_new(
            delta_kernel::actions::deletion_vector::DeletionVectorStorageType::PersistedRelative,
            descs[1].path_or_inline_dv.clone(),
            descs[1].offset,
            descs[1].size_in_bytes,
            descs[1].cardinality,
        )
        .unwrap();
        let file = kernel.absolute_path(&root).unwrap().unwrap();
        assert!(file.to_file_path().unwrap().exists());
        // A damaged file is refused, not misread.
        let mut bad = descs[0].clone();
        bad.size_in_bytes += 1;
        assert!(read(&store, &root, &bad).await.is_err());
    }

    #[test]
    fn vector_paths_decode_with_and_without_prefix() {
        let uuid = uuid::Uuid::new_v4();
        let id = z85::encode(uuid.as_bytes());
        assert_eq!(
            relative_path(&id).unwrap(),
            format!("deletion_vector_{uuid}.bin")
        );
        assert_eq!(
            relative_path(&format!("ab{id}")).unwrap(),
            format!("ab/deletion_vector_{uuid}.bin")
        );
        assert!(relative_path("short").is_err());
    }
}
