//! Exports: what a kick-off asks for, how a job is planned into files, and the files' bodies.
mod bad_request;
mod elements;
mod files;
mod filter;
mod job;
mod plan;
mod request;
mod types;

pub(crate) use bad_request::BadRequest;
pub(crate) use files::{FileKind, FileSpec, Plan};
pub(crate) use job::{Job, JobKey};
pub(crate) use plan::{PlanInput, plan};
pub(crate) use request::{GZIP_NDJSON, Level, parse_request};
