//! Any text as the TOML config file, resolved as `sync` and as `daemon` resolve it: never a
//! panic; a refusal is one line; an accepted configuration's durations can all be waited for
//! (added to the clock without overflow) and each job's schedule has its next run ahead.
#![no_main]
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use fhirsync::config::{ConfigFile, DaemonArgs, FileOptions, NoEnv, SyncArgs, SyncOptions};
use libfuzzer_sys::fuzz_target;

/// Secrets from files and commands are not read while fuzzing: a path or a command could be
/// anything.
fn without_secret_sources(options: &mut FileOptions) {
    if let Some(auth) = &mut options.auth {
        auth.client_id_file = None;
        auth.private_key_file = None;
        auth.private_key_command = None;
        auth.client_secret_file = None;
        auth.client_secret_command = None;
    }
}

fn waitable(d: Duration, what: &str) {
    assert!(
        Instant::now().checked_add(d).is_some(),
        "{what} {d:?} overflows the clock"
    );
}

fn check_sync(opts: &SyncOptions) {
    if let Some(t) = opts.timeout {
        waitable(t, "timeout");
    }
    waitable(opts.auth.token_expiry_tolerance, "token_expiry_tolerance");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut file = match ConfigFile::parse(text, Path::new("fuzz.toml")) {
        Ok(file) => file,
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("fuzz.toml"), "{message}");
            return;
        }
    };
    without_secret_sources(&mut file.options);
    file.jobs.iter_mut().for_each(without_secret_sources);

    match SyncArgs::default().resolve(&NoEnv, Some(&file.options)) {
        Ok(opts) => check_sync(&opts),
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
    let now: DateTime<Utc> = DateTime::from_timestamp(1_711_846_800, 0).expect("an instant");
    match DaemonArgs::default().resolve_with(&NoEnv, file, None) {
        Ok(config) => {
            waitable(config.stale_after, "stale_after");
            waitable(config.grace_period, "grace_period");
            for job in &config.jobs {
                check_sync(&job.sync);
                waitable(job.schedule.jitter, "jitter");
                let schedules = [&job.schedule.incremental, &job.schedule.full_refresh];
                for s in schedules.into_iter().flatten() {
                    if let Some(next) = s.next_after(now, job.schedule.timezone) {
                        assert!(next > now, "{s}: next run {next} is not after {now}");
                    }
                }
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
    }
});
