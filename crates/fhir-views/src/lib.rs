//! SQL on FHIR v2 `ViewDefinition`s run over FHIR R4 resources, one resource at a time, into
//! rows and Arrow record batches. A view is read and checked once ([`ViewDefinition`]); each
//! resource's JSON (parsed into a [`fhir_encoder::json::Doc`], numbers keeping their exact
//! text) then gives its rows. Nothing here reads files or tables: callers feed resources as
//! they arrive from an export, or as they are read back from a table.
pub mod fhirpath;
pub mod view;

pub use view::{
    Cell, Column, Row, RowBatchBuilder, RowError, ViewDefinition, ViewError, ViewErrorKind,
};
