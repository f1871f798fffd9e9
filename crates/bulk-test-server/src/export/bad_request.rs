//! A client error at kick-off, answered with 400 and its diagnostic.

/// A client error at kick-off: 400 with this diagnostic.
#[derive(Debug)]
pub(crate) struct BadRequest {
    pub code: &'static str,
    pub message: String,
}

pub(super) fn bad(code: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        code,
        message: message.into(),
    }
}
