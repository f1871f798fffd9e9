//! fhirsync: the sync layer that ties the Bulk Data client, the FHIR encoder and the Delta sink
//! together, plus the pieces shared by the `fhirsync` binary's subcommands.
pub mod logging;
pub mod state;
pub mod config;
pub mod daemon;
pub mod health;
pub mod metrics;
pub mod schedule;
pub mod encode;
pub mod sync;
pub mod tables;
pub mod progress;
