//! fhirsync: the sync layer that ties the Bulk Data client, the FHIR encoder and the Delta sink
//! together, plus the pieces shared by the `fhirsync` binary's subcommands.
//!
//! Modules depend on each other in one direction only: `run`, `files`, `state`, `memory` and
//! `compartment` on none of the others; `schedule`, `metrics` and `progress` on `run`; `logging`
//! on `progress`; `health` on `run` and `state`; `encode` on `files`; `config` on `schedule`;
//! `tables` on `config` and `files`; `sync` and `daemon` on those below them, never on each
//! other.
pub mod check;
mod compartment;
pub mod config;
pub mod daemon;
mod encode;
pub mod error_line;
pub mod files;
pub mod health;
pub mod logging;
pub mod memory;
mod metrics;
pub mod panics;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod state;
pub mod sync;
pub mod tables;
pub mod views;
