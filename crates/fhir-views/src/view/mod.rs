//! SQL on FHIR ViewDefinitions: reading and checking a view ([`ViewDefinition`]), the rows of
//! one resource ([`ViewDefinition::rows`]), the output schema and Arrow batches of rows
//! ([`RowBatchBuilder`]).
mod batch;
mod convert;
mod definition;
mod engine;
mod error;
mod fingerprint;
mod schema;
mod validate;

pub use batch::RowBatchBuilder;
pub use definition::ViewDefinition;
pub use engine::{Cell, Row};
pub use error::{RowError, ViewError, ViewErrorKind};
pub use schema::Column;
