//! fhirsync: the sync layer that ties the Bulk Data client, the FHIR encoder and the Delta sink
//! together, plus the pieces shared by the `fhirsync` binary's subcommands.
pub mod compartment;
pub mod config;
pub mod daemon;
pub mod encode;
pub mod health;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod state;
pub mod sync;
pub mod tables;
