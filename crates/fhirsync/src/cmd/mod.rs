//! One module per subcommand. Each exposes `Args` (clap) and `async fn run(Args, LogMode)`.
pub mod check;
pub mod daemon;
pub mod demo;
pub mod encode;
pub mod export;
pub mod health;
pub mod import;
pub mod maintain;
pub mod query;
pub mod serve_test;
pub mod status;
pub mod sync;
pub mod view;

/// Takes the lock a sync holds beside its state file (`state_file`, or the default one of a
/// local `delta_path`), so that commands writing the same tables do not run at once. `None`
/// for an object store path without a state file: nothing to lock.
pub fn lock_tables(
    delta_path: &str,
    state_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<fhirsync::state::SyncLock>> {
    Ok(
        match fhirsync::config::default_state_file(delta_path, state_file) {
            Some(state) => Some(fhirsync::state::SyncLock::try_acquire(
                &state.with_file_name("fhirsync.lock"),
            )?),
            None => None,
        },
    )
}
