//! When to try again: the backoff policy (defined with the token provider, the lowest crate
//! that retries, and re-exported here) and how the client reads `Retry-After` on requests and
//! status polls.
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;
use tokio::time::Instant;

pub use smart_auth::{Backoff, Jitter};

use crate::config::{ClientConfig, PollConfig};
use crate::retry_after::parse_retry_after;

/// The delay before retry number `attempt` (1-based): the server's `Retry-After` when given
/// (clamped), else the retry backoff.
pub(crate) fn retry_delay(cfg: &ClientConfig, hint: Option<Duration>, attempt: u32) -> Duration {
    match hint {
        Some(d) => d.clamp(
            cfg.poll.min_delay.min(cfg.retry.max_backoff),
            cfg.retry.max_backoff.max(cfg.poll.max_delay),
        ),
        None => cfg.retry.backoff().delay(attempt),
    }
}

/// The wait after status poll number `polls` (0-based) answered "in progress".
pub(crate) fn poll_delay(cfg: &PollConfig, hint: Option<Duration>, polls: u32) -> Duration {
    match hint {
        Some(d) => hinted_poll_delay(cfg, d, polls),
        None => poll_backoff(cfg, polls),
    }
}

/// The wait after status poll number `polls` was refused with 429: polling too often is not a
/// failure of the export, so the server's hint is taken within the poll bounds.
pub(crate) fn throttled_poll_delay(
    cfg: &PollConfig,
    hint: Option<Duration>,
    polls: u32,
) -> Duration {
    hint.map(|d| d.clamp(cfg.min_delay, cfg.max_retry_after.max(cfg.min_delay)))
        .unwrap_or_else(|| poll_backoff(cfg, polls))
}

/// A status `Retry-After` within `[floor, max_retry_after]`, where the floor rises from a tenth
/// of `min_delay` by half each poll up to `min_delay`: an export that is ready almost at once
/// (the server asking for 0 s) is fetched without a second's wait per poll, and a server
/// that keeps asking for 0 s is still not polled in a tight loop.
fn hinted_poll_delay(cfg: &PollConfig, hint: Duration, polls: u32) -> Duration {
    let floor = Backoff::exponential(cfg.min_delay / 10, cfg.min_delay)
        .with_factor(1.5)
        .delay(polls.saturating_add(1));
    hint.clamp(floor, cfg.max_retry_after.max(floor))
}

fn poll_backoff(cfg: &PollConfig, polls: u32) -> Duration {
    cfg.backoff()
        .delay(polls.saturating_add(1))
        .max(cfg.min_delay)
}

/// Sleeps `delay`, or until `deadline` if that comes first.
pub(crate) async fn sleep_until_deadline(delay: Duration, deadline: Instant) {
    let wake = (Instant::now() + delay).min(deadline);
    tokio::time::sleep_until(wake).await;
}

/// The response's `Retry-After`, as a delay from now.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..RetryConfig::default()
        };
        let (i, m) = (cfg.initial_backoff, cfg.max_backoff);
        for attempt in 1..30 {
            let d = cfg.backoff().delay(attempt);
            let full = i.saturating_mul(1 << (attempt - 1).min(20)).min(m);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn hints_are_clamped_between_the_poll_and_retry_bounds() {
        let mut cfg = ClientConfig::new("http://127.0.0.1/fhir".parse().unwrap());
        cfg.poll.min_delay = Duration::from_millis(50);
        cfg.poll.max_delay = Duration::from_secs(10);
        cfg.retry.max_backoff = Duration::from_secs(60);
        let hint = |s: f64| retry_delay(&cfg, Some(Duration::from_secs_f64(s)), 1);
        assert_eq!(hint(0.0), Duration::from_millis(50));
        assert_eq!(hint(5.0), Duration::from_secs(5));
        assert_eq!(hint(3600.0), Duration::from_secs(60));
    }

    #[test]
    fn poll_backoff_is_clamped() {
        let cfg = PollConfig {
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(3),
            initial_delay: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(poll_delay(&cfg, None, 0), Duration::from_millis(50));
        assert_eq!(poll_delay(&cfg, None, 100), Duration::from_secs(1));
        assert_eq!(
            throttled_poll_delay(&cfg, None, 100),
            Duration::from_secs(1)
        );
        assert_eq!(
            throttled_poll_delay(&cfg, Some(Duration::ZERO), 0),
            Duration::from_millis(50)
        );
        // A 429's hint above max_delay is honoured, up to max_retry_after.
        assert_eq!(
            throttled_poll_delay(&cfg, Some(Duration::from_secs(2)), 0),
            Duration::from_secs(2)
        );
        assert_eq!(
            throttled_poll_delay(&cfg, Some(Duration::from_secs(3600)), 0),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn short_retry_after_hints_are_honoured_only_for_the_first_polls() {
        let cfg = PollConfig::default();
        let zero = Duration::ZERO;
        assert_eq!(hinted_poll_delay(&cfg, zero, 0), Duration::from_millis(100));
        assert_eq!(hinted_poll_delay(&cfg, zero, 1), Duration::from_millis(150));
        let floors: Vec<Duration> = (0..20).map(|p| hinted_poll_delay(&cfg, zero, p)).collect();
        assert!(floors.windows(2).all(|w| w[0] <= w[1]), "{floors:?}");
        assert_eq!(floors[19], cfg.min_delay);
        // Longer hints are taken as given, minutes included, up to max_retry_after (1 h):
        // a server asking for five hours is polled hourly.
        for secs in [5, 120, 300, 3600] {
            let d = Duration::from_secs(secs);
            assert_eq!(hinted_poll_delay(&cfg, d, 0), d);
        }
        assert_eq!(
            hinted_poll_delay(&cfg, Duration::from_secs(5 * 3600), 3),
            Duration::from_secs(3600)
        );
    }
}
