//! `Retry-After` parsing: delta-seconds, HTTP-date, and the bare epoch timestamps (seconds or
//! milliseconds) some servers send instead.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Numbers at or above this are read as an epoch timestamp in seconds (2001-09-09), not a delay.
const EPOCH_SECONDS_FLOOR: u64 = 1_000_000_000;
/// Numbers at or above this are read as an epoch timestamp in milliseconds.
const EPOCH_MILLIS_FLOOR: u64 = 1_000_000_000_000;

/// Parses a `Retry-After` value into a delay relative to `now`. Absolute times in the past give
/// a zero delay. Returns `None` when the value is not understood.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings overflow u64: no sane server sends them.
        let n: u64 = value.parse().ok()?;
        return Some(if n >= EPOCH_MILLIS_FLOOR {
            until(UNIX_EPOCH + Duration::from_millis(n), now)
        } else if n >= EPOCH_SECONDS_FLOOR {
            until(UNIX_EPOCH + Duration::from_secs(n), now)
        } else {
            Duration::from_secs(n)
        });
    }
    // Fractional seconds ("1.5") are outside the RFC but harmless to honour.
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0 && secs < EPOCH_SECONDS_FLOOR as f64)
            .then(|| Duration::from_secs_f64(secs));
    }
    httpdate::parse_http_date(value)
        .ok()
        .map(|at| until(at, now))
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn http_date() {
        let at = now() + Duration::from_secs(30);
        let text = httpdate::fmt_http_date(at);
        assert_eq!(
            parse_retry_after(&text, now()),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now()), Some(Duration::ZERO));
        // Obsolete RFC 850 and asctime forms are accepted by httpdate as well.
        assert!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now()).is_some());
    }

    #[test]
    fn epoch_seconds_and_millis() {
        assert_eq!(
            parse_retry_after("1700000045", now()),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("1700000002500", now()),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("1600000000", now()), Some(Duration::ZERO));
    }

    #[test]
    fn garbage() {
        for v in [
            "",
            "soon",
            "-5",
            "1e400",
            "NaN",
            "inf",
            "99999999999999999999999",
            "12 s",
        ] {
            assert_eq!(parse_retry_after(v, now()), None, "{v:?}");
        }
    }

    proptest! {
        #[test]
        fn any_small_integer_is_a_delay(n in 0u64..EPOCH_SECONDS_FLOOR) {
            prop_assert_eq!(parse_retry_after(&n.to_string(), now()), Some(Duration::from_secs(n)));
        }

        #[test]
        fn epoch_seconds_round_trip(offset in 0u64..1_000_000) {
            let at = 1_700_000_000 + offset;
            prop_assert_eq!(parse_retry_after(&at.to_string(), now()), Some(Duration::from_secs(offset)));
        }

        #[test]
        fn epoch_millis_round_trip(offset in 0u64..1_000_000_000) {
            let at = 1_700_000_000_000 + offset;
            prop_assert_eq!(parse_retry_after(&at.to_string(), now()), Some(Duration::from_millis(offset)));
        }

        #[test]
        fn http_date_round_trip(offset in 0u64..10_000_000) {
            let text = httpdate::fmt_http_date(now() + Duration::from_secs(offset));
            prop_assert_eq!(parse_retry_after(&text, now()), Some(Duration::from_secs(offset)));
        }

        /// Only numbers and HTTP dates are understood; anything else gives no delay.
        #[test]
        fn only_numbers_and_dates_are_read(s in "\\PC{0,40}") {
            if parse_retry_after(&s, now()).is_some() {
                let t = s.trim();
                prop_assert!(
                    t.parse::<f64>().is_ok() || httpdate::parse_http_date(t).is_ok(),
                    "{:?} read as a delay", s
                );
            }
            if !s.bytes().any(|b| b.is_ascii_digit()) {
                prop_assert_eq!(parse_retry_after(&s, now()), None);
            }
        }
    }
}
