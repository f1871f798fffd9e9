//! The daemon's configuration: its own flags and `[daemon]` table, and the jobs it schedules
//! (one from flags, or the config file's `[[jobs]]`).
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::environment::{Environment, NoEnv};
use super::error::{ConfigError, invalid};
use super::file::{ConfigFile, FileOptions};
use super::options::{DEFAULT_GRACE_PERIOD, DEFAULT_STALE_AFTER, SyncOptions};
use super::parsers::parse_duration;
use super::sync_args::SyncArgs;
use crate::schedule::{OverlapPolicy, Schedule, ScheduleConfig};

/// One scheduled sync of the daemon.
#[derive(Clone, Debug, PartialEq)]
pub struct JobConfig {
    pub name: String,
    pub sync: SyncOptions,
    pub schedule: ScheduleConfig,
}

/// Everything the daemon runs with.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub stale_after: Duration,
    pub grace_period: Duration,
    pub jobs: Vec<JobConfig>,
    /// The file the configuration came from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
}

/// Flags of `fhirsync daemon`: the sync options of a single job plus scheduling and server.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Cron expression (5 or 6 fields, or @hourly/@daily) for incremental syncs
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,

    /// Cron expression for full refreshes (take precedence over an incremental sync due at the same time)
    #[arg(long, value_name = "CRON")]
    pub full_refresh_schedule: Option<String>,

    /// IANA time zone the cron expressions are read in, e.g. Europe/Berlin [default: UTC]
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,

    /// Delay each scheduled run by a random amount up to this (`30s`) [default: 0]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub jitter: Option<Duration>,

    /// Run an incremental sync as soon as the daemon starts [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub run_on_start: Option<bool>,

    /// What a tick does while the previous sync still runs [default: skip]
    #[arg(long, value_enum)]
    pub on_overlap: Option<OverlapPolicy>,

    /// Name of the job in logs, `/health` and metrics [default: default]
    #[arg(long, value_name = "NAME")]
    pub job_name: Option<String>,

    /// Address of the `/health` and `/metrics` server [default: 127.0.0.1:9464]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// `/health` turns unhealthy when the last successful sync is older than this [default: 2h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale_after: Option<Duration>,

    /// On shutdown, how long to wait for a cancelled sync to return [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace_period: Option<Duration>,
}

impl DaemonArgs {
    fn has_job_options(&self) -> bool {
        !self.sync.has_no_options()
            || self.schedule.is_some()
            || self.full_refresh_schedule.is_some()
            || self.timezone.is_some()
            || self.jitter.is_some()
            || self.run_on_start.is_some()
            || self.on_overlap.is_some()
            || self.job_name.is_some()
    }

    /// Resolves the daemon configuration from flags, the environment and the config file.
    pub fn resolve(&self, env: &dyn Environment) -> Result<DaemonConfig, ConfigError> {
        let config_file = self.sync.config_path(env);
        let file = match &config_file {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        self.resolve_with(env, file, config_file)
    }

    /// Like [`DaemonArgs::resolve`] with the config file already parsed.
    pub fn resolve_with(
        &self,
        env: &dyn Environment,
        file: ConfigFile,
        config_file: Option<PathBuf>,
    ) -> Result<DaemonConfig, ConfigError> {
        let listen = match (self.listen, &file.daemon.listen) {
            (Some(a), _) => a,
            (None, Some(a)) => SocketAddr::from_str(a.trim()).map_err(|e| {
                invalid(
                    "daemon listen",
                    format!("{e}: {a:?} (expected e.g. 127.0.0.1:9464)"),
                )
            })?,
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 9464)),
        };
        let stale_after = match (self.stale_after, &file.daemon.stale_after) {
            (Some(d), _) => d,
            (None, Some(d)) => d.get("daemon stale_after")?,
            (None, None) => DEFAULT_STALE_AFTER,
        };
        if stale_after.is_zero() {
            return Err(invalid("stale_after", "must be greater than zero"));
        }
        let grace_period = match (self.grace_period, &file.daemon.grace_period) {
            (Some(d), _) => d,
            (None, Some(d)) => d.get("daemon grace_period")?,
            (None, None) => DEFAULT_GRACE_PERIOD,
        };

        let jobs = if file.jobs.is_empty() {
            let mut fo = file.options.clone();
            // Flags win over the file's top level.
            if let Some(s) = &self.schedule {
                fo.schedule = Some(s.clone());
            }
            if let Some(s) = &self.full_refresh_schedule {
                fo.full_refresh_schedule = Some(s.clone());
            }
            if let Some(s) = &self.timezone {
                fo.timezone = Some(s.clone());
            }
            vec![resolve_job(
                &self.sync,
                env,
                &fo,
                self.job_name.clone(),
                self.jitter,
                self,
            )?]
        } else {
            if self.has_job_options() {
                return Err(ConfigError::Conflict(format!(
                    "{} defines [[jobs]]: set job options there, not as flags",
                    file.path.display()
                )));
            }
            let mut jobs = Vec::with_capacity(file.jobs.len());
            for (i, fo) in file.jobs.iter().enumerate() {
                let label = fo.name.clone().unwrap_or_else(|| format!("jobs[{i}]"));
                let job = resolve_job(
                    &SyncArgs::default(),
                    &NoEnv,
                    fo,
                    None,
                    None,
                    &DaemonArgs::default(),
                )
                .map_err(|e| ConfigError::FileSection {
                    path: file.path.clone(),
                    section: format!("job {label:?}"),
                    message: e.to_string(),
                })?;
                jobs.push(job);
            }
            jobs
        };
        check_jobs(&jobs)?;
        Ok(DaemonConfig {
            listen,
            stale_after,
            grace_period,
            jobs,
            config_file,
        })
    }
}

fn resolve_job(
    args: &SyncArgs,
    env: &dyn Environment,
    fo: &FileOptions,
    name_flag: Option<String>,
    jitter_flag: Option<Duration>,
    daemon_flags: &DaemonArgs,
) -> Result<JobConfig, ConfigError> {
    let sync = args.resolve(env, Some(fo))?;
    let name = name_flag
        .or_else(|| fo.name.clone())
        .unwrap_or_else(|| "default".to_owned());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "job name",
            format!("{name:?}: use letters, digits, '-', '_' or '.'"),
        ));
    }
    let incremental = fo
        .schedule
        .as_deref()
        .map(|s| Schedule::parse(s).map_err(|e| invalid("schedule", e)))
        .transpose()?;
    let full_refresh = fo
        .full_refresh_schedule
        .as_deref()
        .map(|s| Schedule::parse(s).map_err(|e| invalid("full_refresh_schedule", e)))
        .transpose()?;
    if incremental.is_none() && full_refresh.is_none() {
        return Err(ConfigError::Missing {
            option: "schedule",
            flag: "schedule",
            env: None,
        });
    }
    let timezone = match &fo.timezone {
        Some(tz) => chrono_tz::Tz::from_str(tz.trim()).map_err(|_| {
            invalid(
                "timezone",
                format!("{tz:?} is not an IANA time zone (e.g. Europe/Berlin)"),
            )
        })?,
        None => chrono_tz::Tz::UTC,
    };
    let jitter = match (jitter_flag, &fo.jitter) {
        (Some(j), _) => j,
        (None, Some(j)) => j.get("jitter")?,
        (None, None) => Duration::ZERO,
    };
    let schedule = ScheduleConfig {
        incremental,
        full_refresh,
        timezone,
        jitter,
        run_on_start: daemon_flags
            .run_on_start
            .or(fo.run_on_start)
            .unwrap_or(false),
        on_overlap: daemon_flags
            .on_overlap
            .or(fo.on_overlap)
            .unwrap_or_default(),
    };
    Ok(JobConfig {
        name,
        sync,
        schedule,
    })
}

fn check_jobs(jobs: &[JobConfig]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    let mut paths = BTreeMap::new();
    for job in jobs {
        if !names.insert(job.name.as_str()) {
            return Err(ConfigError::Conflict(format!(
                "two jobs are named {:?}",
                job.name
            )));
        }
        let key = job.sync.delta_path.trim_end_matches('/').to_owned();
        if let Some(other) = paths.insert(key, job.name.as_str()) {
            return Err(ConfigError::Conflict(format!(
                "jobs {other:?} and {:?} write to the same delta path {}",
                job.name, job.sync.delta_path
            )));
        }
    }
    Ok(())
}
