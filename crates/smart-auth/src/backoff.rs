//! How long to wait before trying again: one policy for every retry loop of the workspace
//! (token requests here; the Bulk Data client's requests, downloads and status polls re-export
//! it from `fhir_bulk`).
use std::time::Duration;

use rand::Rng;

/// Growth stops after this many steps: the cap has long been reached by then, and the factor
/// stays a finite number.
const MAX_STEPS: u32 = 64;

/// How much of a delay is random, so that many clients do not retry in lockstep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// The delay as computed.
    #[default]
    None,
    /// Half fixed, half random: a delay `d` becomes one in `[d/2, d]`.
    Equal,
    /// All random: a delay `d` becomes one in `[0, d)`.
    Full,
}

impl Jitter {
    /// `delay` with this much randomness.
    pub fn apply(self, delay: Duration) -> Duration {
        let r = rand::rng().random::<f64>();
        match self {
            Jitter::None => delay,
            Jitter::Equal => {
                let half = delay / 2;
                half + half.mul_f64(r)
            }
            Jitter::Full => delay.mul_f64(r),
        }
    }
}

/// A delay that starts at `initial` and grows by `factor` with each attempt, up to `max`, with
/// `jitter` applied last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, without jitter.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            factor: 2.0,
            max,
            jitter: Jitter::None,
        }
    }

    pub const fn with_factor(self, factor: f64) -> Self {
        Backoff { factor, ..self }
    }

    pub const fn with_jitter(self, jitter: Jitter) -> Self {
        Backoff { jitter, ..self }
    }

    /// The delay before attempt `attempt` (1 = the first retry), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.jitter.apply(self.ceiling(attempt))
    }

    /// The delay before attempt `attempt` without jitter: `initial * factor^(attempt - 1)`, at
    /// most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let steps = attempt.saturating_sub(1).min(MAX_STEPS);
        // Whole nanoseconds keep the usual cases (milliseconds times powers of 2 or 1.5) exact.
        let nanos = self.initial.as_nanos() as f64 * self.factor.powi(steps as i32);
        if nanos.is_nan() || nanos >= self.max.as_nanos() as f64 {
            return self.max;
        }
        Duration::from_nanos(nanos as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubling_is_capped() {
        let b = Backoff::exponential(Duration::from_millis(500), Duration::from_secs(3));
        let delays: Vec<u64> = (1..=6).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 3000, 3000, 3000]);
        // Attempt 0 is read as the first.
        assert_eq!(b.delay(0), Duration::from_millis(500));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(3));
    }

    #[test]
    fn other_factors_are_exact_for_whole_milliseconds() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(60))
            .with_factor(1.5);
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(150));
        assert_eq!(b.delay(3), Duration::from_millis(225));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_its_range(
            initial_ms in 0u64..10_000,
            max_ms in 0u64..100_000,
            attempt in 0u32..100,
        ) {
            let base = Backoff::exponential(Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let full = base.ceiling(attempt);
            prop_assert!(full <= base.max);
            let equal = base.with_jitter(Jitter::Equal).delay(attempt);
            prop_assert!(equal >= full / 2 && equal <= full, "{equal:?} vs {full:?}");
            let any = base.with_jitter(Jitter::Full).delay(attempt);
            prop_assert!(any <= full, "{any:?} vs {full:?}");
            prop_assert_eq!(base.delay(attempt), full);
        }
    }
}
