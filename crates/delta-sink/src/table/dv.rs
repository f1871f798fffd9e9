//! Deletion vectors (the Delta protocol's "Deletion Vector Format"): reading the ones a
//! table's files carry, writing the ones a merge produces, whether a table may have them,
//! and the actions that enable them in the commit that writes the first.
//!
//! With deletion vectors a merge marks the replaced rows of a stored file as deleted
//! instead of rewriting the file: the file stays, its `add` action gains a descriptor of
//! a RoaringBitmapArray of deleted row positions. delta-rs applies them when reading but
//! does not write them, so this module writes them with the kernel's writer.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use delta_kernel::actions::deletion_vector_writer::{
    DeletionVector, StreamingDeletionVectorWriter,
};
use deltalake::ObjectStore;
use deltalake::kernel::{
    Action, Add, DeletionVectorDescriptor, LogicalFileView, MetadataExt as _, Protocol, StorageType,
};
use deltalake::logstore::object_store::ObjectStoreExt;
use futures::{StreamExt, TryStreamExt};
use roaring::RoaringTreemap;
use serde_json::Value;
use url::Url;

use super::ResourceTable;
use crate::error::{Result, SinkError};
use crate::location::table_label;

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

    /// Whether a commit to the table marks the rows that go from stored files in deletion
    /// vectors (else it rewrites the files); see [`VectorUse::of`]. Where the table's owner
    /// turned them off against the sink's option, says so once per sink and table.
    pub(crate) fn marks_rows(&self) -> Result<bool> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let property = snapshot.metadata().configuration().get(ENABLE_KEY);
        match VectorUse::of(self.config.deletion_vectors, property.map(String::as_str)) {
            VectorUse::Mark => Ok(true),
            VectorUse::Rewrite => Ok(false),
            VectorUse::Refused(value) => {
                if self.warned.first(&self.name) {
                    let table = table_label(&self.url);
                    tracing::warn!(table = %self.name,
                        "{ENABLE_KEY} is {value} on {table}; merging by rewriting files");
                }
                Ok(false)
            }
        }
    }

    /// The actions that turn deletion vectors on, for the commit that writes the table's
    /// first vector: the protocol with the `deletionVectors` feature and the metadata with
    /// `delta.enableDeletionVectors=true`, each only where the table lacks it.
    pub(crate) fn enabling_actions(&self) -> Result<Vec<Action>> {
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let mut actions = Vec::new();
        let protocol = with_deletion_vectors(snapshot.protocol()).map_err(|d| {
            SinkError::invalid(&self.name, format!("protocol for deletion vectors: {d}"))
        })?;
        if &protocol != snapshot.protocol() {
            actions.push(Action::Protocol(protocol));
        }
        let metadata = snapshot.metadata();
        if !is_true(metadata.configuration().get(ENABLE_KEY).map(String::as_str)) {
            tracing::info!(table = %self.name, "enabling deletion vectors");
            let metadata = metadata
                .clone()
                .add_config_key(ENABLE_KEY.to_string(), "true".to_string())
                .map_err(|e| {
                    SinkError::invalid(&self.name, format!("setting {ENABLE_KEY}: {e}"))
                })?;
            actions.push(Action::Metadata(metadata));
        }
        Ok(actions)
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

/// The table property that enables deletion vectors.
const ENABLE_KEY: &str = "delta.enableDeletionVectors";

/// Whether a commit to an existing table marks rows in deletion vectors or rewrites files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VectorUse {
    /// Marks rows; the commit that writes a vector enables them where the table has not.
    Mark,
    /// Rewrites files.
    Rewrite,
    /// Rewrites files although the sink's option asks for vectors: the table's owner set
    /// `delta.enableDeletionVectors` to this value, and the option does not override it.
    Refused(String),
}

impl VectorUse {
    /// From the sink's option and the table's `delta.enableDeletionVectors` (`None`: not
    /// set). A table with the property true is marked either way (whoever enabled them); one
    /// without it only with the option; one whose owner set it otherwise never.
    pub(crate) fn of(option: bool, property: Option<&str>) -> Self {
        match property {
            _ if is_true(property) => VectorUse::Mark,
            None if option => VectorUse::Mark,
            Some(v) if option => VectorUse::Refused(v.to_string()),
            _ => VectorUse::Rewrite,
        }
    }
}

/// Whether a boolean table property is set and true (as Delta engines parse them).
fn is_true(property: Option<&str>) -> bool {
    property.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Tables a sink has warned about (a sync builds one sink per run): each warning once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Warned(Arc<Mutex<HashSet<String>>>);

impl Warned {
    /// True the first time it is asked about `table`.
    fn first(&self, table: &str) -> bool {
        self.0
            .lock()
            .map_or(true, |mut tables| tables.insert(table.to_string()))
    }
}

/// The writer features a legacy writer version implies (the Delta protocol's table of
/// features by version), which a table-features protocol must list to keep them.
fn legacy_writer_features(version: i64) -> Vec<&'static str> {
    [
        (2, "appendOnly"),
        (2, "invariants"),
        (3, "checkConstraints"),
        (4, "changeDataFeed"),
        (4, "generatedColumns"),
        (5, "columnMapping"),
        (6, "identityColumns"),
    ]
    .into_iter()
    .filter(|(since, _)| version >= *since)
    .map(|(_, feature)| feature)
    .collect()
}

/// `protocol` with the `deletionVectors` reader and writer feature: a table-features
/// protocol (reader 3, writer 7) that lists the features the legacy versions implied. (What
/// delta-rs' `set_tbl_properties` does, which it offers only as a commit of its own.)
fn with_deletion_vectors(protocol: &Protocol) -> Result<Protocol, String> {
    const DV: &str = "deletionVectors";
    let value = serde_json::to_value(protocol).map_err(|e| e.to_string())?;
    let version = |key: &str| value.get(key).and_then(Value::as_i64).unwrap_or(1);
    let listed = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect()
    };
    let (reader, writer) = (version("minReaderVersion"), version("minWriterVersion"));
    let mut readers = match reader {
        3.. => listed("readerFeatures"),
        2 => vec!["columnMapping".to_string()],
        _ => Vec::new(),
    };
    let mut writers = match writer {
        7.. => listed("writerFeatures"),
        _ => legacy_writer_features(writer)
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    for features in [&mut readers, &mut writers] {
        if !features.iter().any(|f| f == DV) {
            features.push(DV.to_string());
        }
    }
    serde_json::from_value(serde_json::json!({
        "minReaderVersion": 3,
        "minWriterVersion": 7,
        "readerFeatures": readers,
        "writerFeatures": writers,
    }))
    .map_err(|e| e.to_string())
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
    fn an_owner_who_set_the_property_false_is_not_overridden() {
        use VectorUse::*;
        assert_eq!(
            VectorUse::of(true, None),
            Mark,
            "absent: the option may enable"
        );
        assert_eq!(VectorUse::of(false, None), Rewrite);
        assert_eq!(VectorUse::of(true, Some("true")), Mark);
        assert_eq!(
            VectorUse::of(false, Some("TRUE")),
            Mark,
            "enabled by others"
        );
        assert_eq!(VectorUse::of(true, Some("false")), Refused("false".into()));
        assert_eq!(VectorUse::of(true, Some("nope")), Refused("nope".into()));
        assert_eq!(VectorUse::of(false, Some("false")), Rewrite);
    }

    #[test]
    fn each_table_is_warned_about_once_per_sink() {
        let warned = Warned::default();
        let same_sink = warned.clone();
        assert!(warned.first("a"));
        assert!(!same_sink.first("a"));
        assert!(warned.first("b"));
        assert!(Warned::default().first("a"), "another sink warns again");
    }

    fn protocol(value: serde_json::Value) -> Protocol {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_protocol_gains_deletion_vectors_and_keeps_what_it_had() {
        let upgraded = |p| serde_json::to_value(with_deletion_vectors(&p).unwrap()).unwrap();
        let sorted = |v: &Value, key: &str| {
            let mut f: Vec<String> = serde_json::from_value(v[key].clone()).unwrap();
            f.sort();
            f
        };
        // The legacy protocol fhirsync creates tables with.
        let p = upgraded(protocol(serde_json::json!({
            "minReaderVersion": 1, "minWriterVersion": 2
        })));
        assert_eq!(
            (&p["minReaderVersion"], &p["minWriterVersion"]),
            (&3.into(), &7.into())
        );
        assert_eq!(sorted(&p, "readerFeatures"), ["deletionVectors"]);
        assert_eq!(
            sorted(&p, "writerFeatures"),
            ["appendOnly", "deletionVectors", "invariants"]
        );
        let p = upgraded(protocol(serde_json::json!({
            "minReaderVersion": 2, "minWriterVersion": 5
        })));
        assert_eq!(
            sorted(&p, "readerFeatures"),
            ["columnMapping", "deletionVectors"]
        );
        assert_eq!(
            sorted(&p, "writerFeatures"),
            [
                "appendOnly",
                "changeDataFeed",
                "checkConstraints",
                "columnMapping",
                "deletionVectors",
                "generatedColumns",
                "invariants"
            ]
        );
        // A table-features protocol keeps its lists; one with the feature is unchanged.
        let modern = protocol(serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz"]
        }));
        let p = upgraded(modern);
        assert_eq!(
            sorted(&p, "readerFeatures"),
            ["deletionVectors", "timestampNtz"]
        );
        assert_eq!(
            sorted(&p, "writerFeatures"),
            ["deletionVectors", "timestampNtz"]
        );
        let done = protocol(p);
        assert_eq!(with_deletion_vectors(&done).unwrap(), done);
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
