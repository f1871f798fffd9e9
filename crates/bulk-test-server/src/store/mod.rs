//! The server's resources: an immutable base (bundled, directory or synthetic data) plus an
//! in-memory overlay of mutations (upserts and deletions) made by tests.
mod base;
mod handle;
mod memory;

pub(crate) use base::{Base, push_index};
pub(crate) use handle::{Mutation, Overlay, StoreInner};
pub use handle::{StoreError, StoreHandle};
