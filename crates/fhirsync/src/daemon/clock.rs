//! The daemon's wall clock: cron schedules are computed from it, and health and metrics judge
//! ages by it. Timers are tokio's; a test pauses tokio's time and gives the daemon a clock
//! that follows it, so schedules fire without waiting for real time to pass.
use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
