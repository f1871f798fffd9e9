//! Streaming FHIR R4 NDJSON to Arrow encoder in the Pathling Parquet encoding.
//!
//! ```no_run
//! use fhir_encoder::{BatchLimits, Encoder, EncoderOptions, LineRef};
//! let encoder = Encoder::new(EncoderOptions::default());
//! let mut builder = encoder.batch_builder("Patient", BatchLimits::default())?;
//! let line = br#"{"resourceType":"Patient","id":"p1","gender":"female"}"#;
//! let warnings = builder.push_line(line, &LineRef::new("Patient.ndjson", 1)).expect("valid");
//! assert!(warnings.is_empty());
//! let batch = builder.finish()?;
//! assert_eq!(batch.num_rows(), 1);
//! # Ok::<(), fhir_encoder::EncodeError>(())
//! ```
//!
//! See `docs/encoding.md` for the encoding rules and how bad input is handled.
mod batch;
mod builder;
mod decode;
mod encode;
mod encoder;
mod error;
pub mod json;
mod model;
mod options;
mod reader;
mod scan;
mod schema;
pub mod ucum;
mod values;

pub use batch::{BatchBuilder, BatchLimits};
pub use decode::{DecodeError, Decoder, Rows, decode_batch};
pub use encoder::Encoder;
pub use error::{EncodeError, LineRef, Reject, Warning};
pub use options::{DEFAULT_OPEN_TYPES, EncoderOptions, JSON_COLUMN};
pub use reader::{DEFAULT_MAX_LINE_BYTES, NdjsonBatches, Observer};
pub use scan::{LineHeader, scan_header};
pub use schema::UNSUPPORTED_TYPES;
pub use values::decode_base64;
