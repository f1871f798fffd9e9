//! Column builders mirroring an encoding plan.
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Decimal128Builder, Int32Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, MapArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Fields};

use crate::schema::{Col, StructPlan};

/// A column under construction.
pub(crate) enum ColBuilder {
    Utf8(StringBuilder),
    Bool(BooleanBuilder),
    Int32(Int32Builder),
    Decimal(Decimal128Builder, u8, i8),
    Timestamp(TimestampMicrosecondBuilder),
    Binary(BinaryBuilder),
    Struct(StructCols),
    List(Box<ListCols>),
    Map(Box<MapCols>),
}

/// What a row of a group holds when it is written without content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// A null group: every column null.
    Null,
    /// A present group without elements (see [`EmptyAs`]).
    Empty,
}

/// What a column holds in an empty row of its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EmptyAs {
    Null,
    /// A valid empty list.
    EmptyList,
    /// A valid group, itself empty.
    EmptyStruct,
    /// A valid empty map.
    EmptyMap,
}

pub(crate) struct StructCols {
    pub fields: Fields,
    pub cols: Vec<ColBuilder>,
    pub nulls: NullBufferBuilder,
    /// Rows of the group, including those its columns have not caught up with yet.
    pub len: usize,
    /// Trailing rows (all of kind `lag_fill`) not yet written to the columns. Most groups of
    /// a 600-column schema are absent from most rows: an absent group costs O(1), and its
    /// columns catch up in bulk when the group is next written or at `finish`.
    lag: usize,
    lag_fill: Fill,
    /// Per column: its value in an empty row (set from the plan by [`init_fill`]).
    empty_as: Vec<EmptyAs>,
}

pub(crate) struct ListCols {
    pub field: Arc<Field>,
    pub offsets: Vec<i32>,
    pub nulls: NullBufferBuilder,
    pub child: ColBuilder,
}

pub(crate) struct MapCols {
    pub entries: Arc<Field>,
    pub offsets: Vec<i32>,
    pub nulls: NullBufferBuilder,
    pub keys: Int32Builder,
    pub values: ListCols,
}

impl StructCols {
    pub fn new(fields: &Fields) -> StructCols {
        StructCols {
            fields: fields.clone(),
            cols: fields
                .iter()
                .map(|f| ColBuilder::new(f.data_type()))
                .collect(),
            nulls: NullBufferBuilder::new(0),
            len: 0,
            lag: 0,
            lag_fill: Fill::Null,
            empty_as: vec![EmptyAs::Null; fields.len()],
        }
    }

    /// Marks one row (the columns have each been appended to once, after [`flush`](Self::flush)).
    #[inline]
    pub fn row(&mut self, valid: bool) {
        debug_assert_eq!(self.lag, 0);
        self.nulls.append(valid);
        self.len += 1;
    }

    /// Appends `n` rows without content, written to the columns later.
    #[inline]
    pub fn add_rows(&mut self, n: usize, fill: Fill) {
        if self.lag > 0 && self.lag_fill != fill {
            self.flush();
        }
        self.lag += n;
        self.lag_fill = fill;
        match fill {
            Fill::Null => self.nulls.append_n_nulls(n),
            Fill::Empty => self.nulls.append_n_non_nulls(n),
        }
        self.len += n;
    }

    /// Brings the columns up to date; required before appending to them directly.
    #[inline]
    pub fn flush(&mut self) {
        if self.lag > 0 {
            self.flush_lag();
        }
    }

    #[cold]
    fn flush_lag(&mut self) {
        let n = std::mem::take(&mut self.lag);
        match self.lag_fill {
            Fill::Null => self.cols.iter_mut().for_each(|c| c.nulls(n)),
            Fill::Empty => {
                for (c, e) in self.cols.iter_mut().zip(&self.empty_as) {
                    c.empties(n, *e);
                }
            }
        }
    }

    pub fn finish(&mut self) -> Result<StructArray, ArrowError> {
        self.flush();
        let arrays = self
            .cols
            .iter_mut()
            .map(ColBuilder::finish)
            .collect::<Result<Vec<_>, _>>()?;
        let nulls = self.nulls.finish();
        let len = std::mem::take(&mut self.len);
        if arrays.is_empty() {
            return Ok(StructArray::new_empty_fields(len, nulls));
        }
        StructArray::try_new(self.fields.clone(), arrays, nulls)
    }
}

/// Sets, for every group of `cols`, what its columns hold in an empty row (from `plan`).
pub(crate) fn init_fill(plan: &StructPlan, cols: &mut StructCols) {
    for (i, (col, b)) in plan.cols.iter().zip(cols.cols.iter_mut()).enumerate() {
        let e = match (col, b) {
            (Col::Prim { list: true, .. }, ColBuilder::List(_)) => EmptyAs::EmptyList,
            (
                Col::Struct {
                    plan: child,
                    list: true,
                    ..
                },
                ColBuilder::List(l),
            ) => {
                if let ColBuilder::Struct(s) = &mut l.child {
                    init_fill(child, s);
                }
                EmptyAs::EmptyList
            }
            (
                Col::Struct {
                    plan: child,
                    choice,
                    ..
                },
                ColBuilder::Struct(s),
            ) => {
                init_fill(child, s);
                if *choice {
                    EmptyAs::Null
                } else {
                    EmptyAs::EmptyStruct
                }
            }
            (Col::Extensions { plan: ext }, ColBuilder::Map(m)) => {
                if let ColBuilder::Struct(s) = &mut m.values.child {
                    init_fill(ext, s);
                }
                EmptyAs::EmptyMap
            }
            _ => EmptyAs::Null,
        };
        if let Some(slot) = cols.empty_as.get_mut(i) {
            *slot = e;
        }
    }
}

impl ListCols {
    fn new(field: &Arc<Field>) -> ListCols {
        ListCols {
            field: field.clone(),
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
            child: ColBuilder::new(field.data_type()),
        }
    }

    /// Closes the current list; its items were appended to the child.
    #[inline]
    pub fn close(&mut self, child_len: usize, valid: bool) {
        self.offsets.push(child_len as i32);
        self.nulls.append(valid);
    }

    #[inline]
    pub fn last_offset(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0) as usize
    }

    fn finish(&mut self) -> Result<ListArray, ArrowError> {
        let values = self.child.finish()?;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        ListArray::try_new(self.field.clone(), offsets, values, self.nulls.finish())
    }
}

impl ColBuilder {
    pub fn new(dt: &DataType) -> ColBuilder {
        match dt {
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::new()),
            DataType::Int32 => ColBuilder::Int32(Int32Builder::new()),
            DataType::Decimal128(p, s) => ColBuilder::Decimal(Decimal128Builder::new(), *p, *s),
            DataType::Timestamp(_, _) => ColBuilder::Timestamp(TimestampMicrosecondBuilder::new()),
            DataType::Binary => ColBuilder::Binary(BinaryBuilder::new()),
            DataType::Struct(fields) => ColBuilder::Struct(StructCols::new(fields)),
            DataType::List(f) => ColBuilder::List(Box::new(ListCols::new(f))),
            DataType::Map(entries, _) => {
                let values = match entries.data_type() {
                    DataType::Struct(kv) if kv.len() == 2 => kv[1].clone(),
                    _ => entries.clone(),
                };
                let item = match values.data_type() {
                    DataType::List(item) => item.clone(),
                    _ => Arc::new(Field::new("element", DataType::Null, true)),
                };
                ColBuilder::Map(Box::new(MapCols {
                    entries: entries.clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                    keys: Int32Builder::new(),
                    values: ListCols::new(&item),
                }))
            }
            _ => ColBuilder::Utf8(StringBuilder::new()),
        }
    }

    #[inline]
    pub fn push_str(&mut self, v: &str) {
        match self {
            ColBuilder::Utf8(b) => b.append_value(v),
            other => other.null(),
        }
    }

    #[inline]
    pub fn push_bool(&mut self, v: bool) {
        match self {
            ColBuilder::Bool(b) => b.append_value(v),
            other => other.null(),
        }
    }

    #[inline]
    pub fn push_i32(&mut self, v: i32) {
        match self {
            ColBuilder::Int32(b) => b.append_value(v),
            other => other.null(),
        }
    }

    #[inline]
    pub fn push_i128(&mut self, v: i128) {
        match self {
            ColBuilder::Decimal(b, ..) => b.append_value(v),
            other => other.null(),
        }
    }

    #[inline]
    pub fn push_i64(&mut self, v: i64) {
        match self {
            ColBuilder::Timestamp(b) => b.append_value(v),
            other => other.null(),
        }
    }

    #[inline]
    pub fn push_bytes(&mut self, v: &[u8]) {
        match self {
            ColBuilder::Binary(b) => b.append_value(v),
            other => other.null(),
        }
    }

    /// Number of values appended so far.
    pub fn len(&self) -> usize {
        use arrow_array::builder::ArrayBuilder;
        match self {
            ColBuilder::Utf8(b) => b.len(),
            ColBuilder::Bool(b) => b.len(),
            ColBuilder::Int32(b) => b.len(),
            ColBuilder::Decimal(b, ..) => b.len(),
            ColBuilder::Timestamp(b) => b.len(),
            ColBuilder::Binary(b) => b.len(),
            ColBuilder::Struct(s) => s.len,
            ColBuilder::List(l) => l.offsets.len() - 1,
            ColBuilder::Map(m) => m.offsets.len() - 1,
        }
    }

    /// Appends a null (a group's columns get their slots later, see [`StructCols::add_rows`]).
    #[inline]
    pub fn null(&mut self) {
        match self {
            ColBuilder::Utf8(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Int32(b) => b.append_null(),
            ColBuilder::Decimal(b, ..) => b.append_null(),
            ColBuilder::Timestamp(b) => b.append_null(),
            ColBuilder::Binary(b) => b.append_null(),
            ColBuilder::Struct(s) => s.add_rows(1, Fill::Null),
            ColBuilder::List(l) => {
                let n = l.last_offset();
                l.close(n, false);
            }
            ColBuilder::Map(m) => {
                let n = m.offsets.last().copied().unwrap_or(0);
                m.offsets.push(n);
                m.nulls.append(false);
            }
        }
    }

    /// Appends `n` nulls.
    pub fn nulls(&mut self, n: usize) {
        match self {
            ColBuilder::Utf8(b) => b.append_nulls(n),
            ColBuilder::Bool(b) => b.append_nulls(n),
            ColBuilder::Int32(b) => b.append_nulls(n),
            ColBuilder::Decimal(b, ..) => b.append_nulls(n),
            ColBuilder::Timestamp(b) => b.append_nulls(n),
            ColBuilder::Binary(b) => b.append_nulls(n),
            ColBuilder::Struct(s) => s.add_rows(n, Fill::Null),
            ColBuilder::List(l) => {
                let last = l.last_offset() as i32;
                l.offsets.resize(l.offsets.len() + n, last);
                l.nulls.append_n_nulls(n);
            }
            ColBuilder::Map(m) => {
                let last = m.offsets.last().copied().unwrap_or(0);
                m.offsets.resize(m.offsets.len() + n, last);
                m.nulls.append_n_nulls(n);
            }
        }
    }

    /// Appends `n` values of an empty row of the parent group.
    fn empties(&mut self, n: usize, e: EmptyAs) {
        match (e, self) {
            (EmptyAs::EmptyList, ColBuilder::List(l)) => {
                let last = l.last_offset() as i32;
                l.offsets.resize(l.offsets.len() + n, last);
                l.nulls.append_n_non_nulls(n);
            }
            (EmptyAs::EmptyStruct, ColBuilder::Struct(s)) => s.add_rows(n, Fill::Empty),
            (EmptyAs::EmptyMap, ColBuilder::Map(m)) => {
                let last = m.offsets.last().copied().unwrap_or(0);
                m.offsets.resize(m.offsets.len() + n, last);
                m.nulls.append_n_non_nulls(n);
            }
            (_, b) => b.nulls(n),
        }
    }

    pub fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            ColBuilder::Utf8(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Int32(b) => Arc::new(b.finish()),
            ColBuilder::Decimal(b, p, s) => Arc::new(b.finish().with_precision_and_scale(*p, *s)?),
            ColBuilder::Timestamp(b) => Arc::new(b.finish().with_timezone("UTC")),
            ColBuilder::Binary(b) => Arc::new(b.finish()),
            ColBuilder::Struct(s) => Arc::new(s.finish()?),
            ColBuilder::List(l) => Arc::new(l.finish()?),
            ColBuilder::Map(m) => {
                let keys: ArrayRef = Arc::new(m.keys.finish());
                let values: ArrayRef = Arc::new(m.values.finish()?);
                let fields = match m.entries.data_type() {
                    DataType::Struct(f) => f.clone(),
                    _ => {
                        return Err(ArrowError::SchemaError(
                            "map entries are not a struct".into(),
                        ));
                    }
                };
                let entries = StructArray::try_new(fields, vec![keys, values], None)?;
                let offsets = std::mem::replace(&mut m.offsets, vec![0]);
                Arc::new(MapArray::try_new(
                    m.entries.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    entries,
                    m.nulls.finish(),
                    false,
                )?)
            }
        })
    }
}
