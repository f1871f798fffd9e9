//! A spec-faithful FHIR Bulk Data test server with fault injection, SMART auth and a synthetic
//! data generator.
//!
//! URL layout (base path `/fhir` by default):
//! - `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export`: kick-off
//!   (`Accept: application/fhir+json` and `Prefer: respond-async` required).
//! - `GET [base]/bulkstatus/[job]`: 202 + `X-Progress` + `Retry-After` while in progress, then
//!   the manifest (`?page=N` for partial manifests); `DELETE` cancels and removes the job.
//! - `GET|HEAD /files/[job]/[n].ndjson`: output, deleted and error files (gzip on request,
//!   `Range`); on a second listener with [`FileServing::OtherOrigin`]; with
//!   [`ServerConfig::redirect_files`] the manifest lists `/redirect/files/...` URLs that answer
//!   307 to the real location.
//! - `GET [base]/[type]/[id]`: the current version of a resource (clients read a Group's
//!   members this way), with the same bearer token checks as the kick-off.
//! - `GET [base]/metadata`, `GET [base]/.well-known/smart-configuration`,
//!   `POST [base]/auth/token`.
//!
//! A Group's members are those of the Group resource when its export is kicked off: upsert the
//! Group through [`StoreHandle`] to change them. The `patient` parameter of a POST kick-off is
//! accepted at the Patient and Group level, or where [`ServerConfig::patient_parameter`] says.
//!
//! Vendor profiles ([`ServerConfig::profile`]) reproduce real servers' departures from the IG:
//! - [`Profile::Spec`] (default): the IG as written.
//! - [`Profile::Hapi`]: status at `$export-poll-status?_jobId=`, files as FHIR `Binary` unless
//!   `Accept: application/fhir+ndjson`, identical kick-offs reuse the earlier job unless
//!   `Cache-Control: no-cache`, jobs and files purged after a retention period
//!   ([`TestServer::advance_clock`]), fixed `Retry-After`, no `deleted` or `error` arrays.
//! - [`Profile::Firely`]: status at `$exportstatus?_id=`, files at
//!   `$exportfilerequest/?_id=&filename=` only with `Accept: application/fhir+ndjson` (else
//!   406), 410 Gone for a cancelled job.
//! - [`Profile::Epic`]: Group export only, `_since` refused, resources without
//!   `meta.lastUpdated`, one export per client and Group until it is deleted (else 429), a
//!   token endpoint that answers a bare 400 now and then (seeded), `Retry-After` in minutes.
//! - [`Profile::Oracle`]: Group and Patient export only, a repeated `_type` refused (join with
//!   commas), files answer 307 to a second listener that refuses an `Authorization` header,
//!   `Retry-After` in hours, every server error sent as 500.
//! - [`Profile::Medplum`]: `deleted` always present and empty; a kick-off without `_type` is
//!   never answered while the server runs.
//!
//! Every resource carries `meta.versionId` and `meta.lastUpdated`; an export includes
//! resources with `_since < lastUpdated <= transactionTime` (and `<= _until`). Changes made
//! through [`StoreHandle`] after a kick-off are not part of that export.
//!
//! ```no_run
//! # async fn demo() -> Result<(), bulk_test_server::ServerError> {
//! use bulk_test_server::{DataSource, ServerConfig, TestServer};
//! let server = TestServer::start(ServerConfig {
//!     data: DataSource::Synthetic { patients: 10, seed: 7 },
//!     ..ServerConfig::default()
//! })
//! .await?;
//! println!("{}", server.base_url()); // http://127.0.0.1:PORT/fhir
//! server.shutdown().await;
//! # Ok(()) }
//! ```
pub mod smart;

mod body;
mod config;
mod export;
mod faults;
mod form;
mod http;
mod output_store;
mod profiles;
mod resource;
mod server;
mod store;
mod synthetic;

pub use config::{
    DataSource, FileServing, OutputStore, PatientParameter, ServerConfig, ServerError,
};
pub use faults::{
    Fault, FaultHandle, FaultRequest, FaultRule, FaultSource, FaultTarget, RetryAfter,
};
pub use http::{Origin, RequestRecord};
pub use profiles::{Epic, Hapi, Oracle, Profile, UnknownProfile};
pub use server::TestServer;
pub use store::{StoreError, StoreHandle};
