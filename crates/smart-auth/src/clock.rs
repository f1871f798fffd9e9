//! Time as the token cache sees it: the real clock, or a clock that tests move by hand so that
//! tokens expire without waiting.
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A waiting future, as [`Clock::sleep`] returns it.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A monotonic clock and a way to wait on it.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
    /// Waits until `delay` has passed on this clock.
    fn sleep(&self, delay: Duration) -> Sleep;
}

/// The real clock (Tokio's timer for waiting).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, delay: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(delay))
    }
}

/// A clock that moves only when told to, for tests: [`ManualClock::advance`] moves it, and a
/// sleep on it moves it by the time slept and returns at once. Clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep(&self, delay: Duration) -> Sleep {
        self.advance(delay);
        Box::pin(tokio::task::yield_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let shared = clock.clone();
        let start = clock.now();
        assert_eq!(clock.now(), start);
        shared.advance(Duration::from_secs(5));
        assert_eq!(clock.now() - start, Duration::from_secs(5));
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(shared.now() - start, Duration::from_millis(6500));
    }
}
