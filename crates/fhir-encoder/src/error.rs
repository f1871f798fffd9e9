//! Error, warning and reject types.
use std::fmt;

/// Errors of the encoder's API (as opposed to problems with individual resources, which are
/// [`Reject`]s and [`Warning`]s).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Not a FHIR R4 resource type.
    #[error("unknown resource type {0:?}")]
    UnknownResourceType(String),
    /// A FHIR R4 resource type the Pathling encoding does not support.
    #[error("resource type {0} is not supported by the Pathling encoding")]
    UnsupportedResourceType(String),
    /// An open type that is not a FHIR R4 data type.
    #[error("invalid open type {0:?}: not a FHIR R4 data type")]
    InvalidOpenType(String),
    /// Reading the input failed.
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Assembling Arrow arrays failed (a defect, reported rather than panicking).
    #[error("cannot assemble the Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// Where a line came from: the file (as given by the caller) and its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineRef {
    pub file: std::sync::Arc<str>,
    pub line: u64,
}

impl LineRef {
    pub fn new(file: impl Into<std::sync::Arc<str>>, line: u64) -> Self {
        LineRef {
            file: file.into(),
            line,
        }
    }
}

/// A resource that was not encoded, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reject {
    /// `resourceType` of the line, when it could be read.
    pub resource_type: Option<String>,
    /// `id` of the resource, when it could be read.
    pub id: Option<String>,
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(t) = &self.resource_type {
            write!(f, "{t}")?;
            if let Some(id) = &self.id {
                write!(f, "/{id}")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.reason)
    }
}

/// A resource that was encoded, but one of its elements could not be and was stored as null
/// (or an unknown element was ignored).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub resource_type: String,
    pub id: String,
    pub file: String,
    pub line: u64,
    /// FHIR path of the element, e.g. `Patient.birthDate`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}/{}: {}: {}",
            self.file, self.line, self.resource_type, self.id, self.path, self.message
        )
    }
}
