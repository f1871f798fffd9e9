//! The inverse of the encoder: rows of a table in the Pathling encoding back to FHIR JSON, so
//! that views can be computed from tables already synced.
//!
//! ```no_run
//! # fn run(batch: &arrow_array::RecordBatch) -> Result<(), fhir_encoder::DecodeError> {
//! use fhir_encoder::Decoder;
//! let decoder = Decoder::new("Patient", batch.schema_ref())?;
//! let mut rows = decoder.rows(batch)?;
//! let mut json = String::new();
//! for row in 0..rows.len() {
//!     json.clear();
//!     rows.write_json(row, &mut json)?;
//! }
//! # Ok(()) }
//! ```
//!
//! The decoder works from the Arrow schema alone, so it reads any table the encoder wrote,
//! whatever its options. What the encoding does not keep cannot come back (`docs/encoding.md`
//! lists it): `contained`, `modifierExtension`, primitive extensions (`_birthDate`); `extension`
//! unless the table was encoded with extensions ([`Decoder::has_extensions`]), and then only
//! extension values of the configured open types; elements nested deeper than the maximum
//! nesting level; the time zone of instants (written in UTC) and their digits below a
//! microsecond; the digits of decimals past the 6th place (a decimal whose original scale is
//! over 6 is written rounded to 6 places, `28.104000000000003` → `28.104000`; up to 6 places it
//! is exact, trailing zeros included); values the encoder stored as null with a warning. Use
//! [`Decoder::keeps`] to tell whether a path can have values at all.
mod plan;
mod write;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};

use plan::{ExtPlan, GroupPlan};
use write::{Ctx, Exts, Group};

/// Errors of the decoder: a schema it cannot read, or a batch that does not match it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A column of an Arrow type the encoding does not produce.
    #[error("column `{path}` has type {data_type}, which the Pathling encoding does not use")]
    UnsupportedColumn { path: String, data_type: String },
    /// The batch's schema is not the one the decoder was built for.
    #[error("the batch does not match the decoder's schema: {0}")]
    SchemaMismatch(String),
    /// A row index past the end of the batch.
    #[error("row {row} is out of range: the batch has {len} rows")]
    RowOutOfRange { row: usize, len: usize },
}

/// Decodes batches of one resource type and one schema; build it once per schema.
#[derive(Debug)]
pub struct Decoder {
    schema: SchemaRef,
    root: GroupPlan,
    ext: Option<ExtPlan>,
    /// The column of the original JSON, when the table kept it.
    json: Option<usize>,
    /// `{"resourceType":"<type>"`.
    open: String,
}

impl Decoder {
    /// A decoder of rows of `resource_type` in tables of `schema`.
    pub fn new(resource_type: &str, schema: &SchemaRef) -> Result<Decoder, DecodeError> {
        let (root, ext) = plan::root_plan(schema.fields())?;
        let mut open = String::from("{\"resourceType\":");
        write::write_str(resource_type, &mut open);
        let json = schema
            .fields()
            .find(crate::options::JSON_COLUMN)
            .filter(|(_, f)| {
                matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
            .map(|(i, _)| i);
        Ok(Decoder {
            schema: schema.clone(),
            root,
            ext,
            json,
            open,
        })
    }

    /// Whether the table kept each resource's original JSON (`keep_json`): its rows are
    /// written as they were read, whatever the encoding keeps.
    pub fn has_original_json(&self) -> bool {
        self.json.is_some()
    }

    /// Whether the table was encoded with extensions (it has the `_extension` map). Without
    /// them, no resource read back has an `extension`, whatever the original had.
    pub fn has_extensions(&self) -> bool {
        self.ext.is_some()
    }

    /// Whether the table stores the element at `path`: dot-separated element names, with or
    /// without the resource type first (`Patient.name.given`, `item.item.linkId`). A choice
    /// element is named by its base name (`value`, `value[x]`: kept when any of its types is)
    /// or a typed name (`valueQuantity`). `extension` is kept only with extensions encoded;
    /// elements past the maximum nesting level, `contained`, `modifierExtension` and unknown
    /// elements are not kept.
    pub fn keeps(&self, path: &str) -> bool {
        if self.json.is_some() {
            return true;
        }
        let segs: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        let resource_type = &self.open["{\"resourceType\":\"".len()..self.open.len() - 1];
        let segs = match segs.split_first() {
            Some((first, rest)) if *first == resource_type => rest,
            _ => &segs[..],
        };
        self.root.keeps(segs, self.ext.as_ref())
    }

    /// The schema the decoder reads.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Binds the decoder to a batch, whose schema must be the decoder's.
    pub fn rows<'a>(&'a self, batch: &'a RecordBatch) -> Result<Rows<'a>, DecodeError> {
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(DecodeError::SchemaMismatch(
                "its columns differ from those the decoder was built for".into(),
            ));
        }
        let root = write::bind_group(&self.root, None, batch.columns())?;
        let exts = match &self.ext {
            Some(e) => Some(write::bind_exts(e, batch.columns())?),
            None => None,
        };
        let json = match self.json {
            Some(col) => Some(write::bind_str(batch.column(col))?),
            None => None,
        };
        Ok(Rows {
            open: &self.open,
            len: batch.num_rows(),
            root,
            exts,
            json,
            index: Vec::new(),
        })
    }
}

/// A batch bound to a [`Decoder`]: writes any of its rows as FHIR JSON.
pub struct Rows<'a> {
    open: &'a str,
    len: usize,
    root: Group<'a>,
    exts: Option<Exts<'a>>,
    json: Option<&'a dyn write::StrValues>,
    /// The current row's extensions by fid (reused between rows).
    index: Vec<(i32, u32)>,
}

impl Rows<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends row `row` as one line of FHIR JSON (no line break) to `out`.
    pub fn write_json(&mut self, row: usize, out: &mut String) -> Result<(), DecodeError> {
        if row >= self.len {
            return Err(DecodeError::RowOutOfRange { row, len: self.len });
        }
        if let Some(text) = self.json.and_then(|j| j.get(row)) {
            out.push_str(text);
            return Ok(());
        }
        match &self.exts {
            Some(e) => e.index_row(row, &mut self.index),
            None => self.index.clear(),
        }
        let ctx = Ctx {
            exts: self.exts.as_ref(),
            index: &self.index,
        };
        ctx.write_group(&self.root, row, out, self.open);
        Ok(())
    }
}

/// Decodes every row of a batch of `resource_type` (one string of JSON per row). For many
/// batches of one schema, build a [`Decoder`] once instead.
pub fn decode_batch(resource_type: &str, batch: &RecordBatch) -> Result<Vec<String>, DecodeError> {
    let decoder = Decoder::new(resource_type, batch.schema_ref())?;
    let mut rows = decoder.rows(batch)?;
    (0..rows.len())
        .map(|r| {
            let mut s = String::new();
            rows.write_json(r, &mut s).map(|()| s)
        })
        .collect()
}

#[cfg(test)]
mod tests;
