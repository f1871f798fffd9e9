//! Cron schedules of the daemon: parsing, next-run computation in a time zone, and the choice
//! between an incremental and a full-refresh run.
//!
//! Expressions have 5 fields (minute granularity) or 6 (leading seconds field), or are one of the
//! `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` nicknames. They are evaluated in an IANA time
//! zone; across DST changes a run that falls into a skipped hour happens right after the gap, and a
//! fixed-time run in a repeated hour happens once (the rules of Vixie cron, as implemented by
//! `croner`).
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::Deserialize;

use crate::run::RunKind;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron expression {expr:?}: {message}")]
pub struct ScheduleError {
    pub expr: String,
    pub message: String,
}

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let expr = expr.trim();
        let err = |message: String| ScheduleError {
            expr: expr.to_owned(),
            message,
        };
        if !expr.starts_with('@') {
            let fields = expr.split_whitespace().count();
            if !(5..=6).contains(&fields) {
                return Err(err(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 \
                     (with leading seconds), got {fields}"
                )));
            }
            // croner takes an empty list item (`,`) as a field no value matches.
            if let Some(f) = expr
                .split_whitespace()
                .find(|f| f.split(',').any(str::is_empty))
            {
                return Err(err(format!("field {f:?} has an empty list item")));
            }
        }
        let cron = Cron::from_str(expr).map_err(|e| err(e.to_string()))?;
        // An expression no date matches (30 February) would leave a job that never runs. The
        // calendar repeats its dates and weekdays within 28 years inside a century, so a search
        // of the 30 years before croner's limit (year 5000) answers at once whether any does.
        let probe = Utc.with_ymd_and_hms(4970, 1, 1, 0, 0, 0).single();
        if probe.is_some_and(|p| cron.find_next_occurrence(&p, true).is_err()) {
            return Err(err("no date matches it, so it would never run".into()));
        }
        Ok(Self {
            expr: expr.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first run strictly after `after`, with the expression read in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.expr).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

/// What a tick does while the job's previous sync is still running.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// Drop the tick (logged and counted in `fhirsync_ticks_skipped_total`).
    #[default]
    Skip,
    /// Run once more right after the current sync (at most one queued run).
    Queue,
}

/// When and how a job runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    pub incremental: Option<Schedule>,
    pub full_refresh: Option<Schedule>,
    pub timezone: Tz,
    /// Each run is delayed by a random amount in `[0, jitter)` (spreads load across many clients).
    pub jitter: Duration,
    pub run_on_start: bool,
    pub on_overlap: OverlapPolicy,
}

impl ScheduleConfig {
    /// The next due run strictly after `after`; a full refresh wins over an incremental sync due
    /// at the same instant.
    pub(crate) fn next_run(&self, after: DateTime<Utc>) -> Option<(DateTime<Utc>, RunKind)> {
        let inc = self
            .incremental
            .as_ref()
            .and_then(|s| s.next_after(after, self.timezone));
        let full = self
            .full_refresh
            .as_ref()
            .and_then(|s| s.next_after(after, self.timezone));
        match (inc, full) {
            (Some(i), Some(f)) if f <= i => Some((f, RunKind::FullRefresh)),
            (Some(i), _) => Some((i, RunKind::Incremental)),
            (None, Some(f)) => Some((f, RunKind::FullRefresh)),
            (None, None) => None,
        }
    }

    /// A random delay in `[0, jitter)`.
    pub(crate) fn jitter_delay(&self) -> Duration {
        fhir_bulk::Jitter::Full.apply(self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields_and_nicknames_parse() {
        assert!(Schedule::parse("15 * * * *").is_ok());
        assert!(Schedule::parse("*/10 15 * * * *").is_ok());
        assert!(Schedule::parse("0 3 * * SUN").is_ok());
        assert!(Schedule::parse("@hourly").is_ok());
    }

    #[test]
    fn bad_expressions_are_rejected_with_the_reason() {
        let e = Schedule::parse("* * *").unwrap_err();
        assert!(e.to_string().contains("expected 5 fields"), "{e}");
        let e = Schedule::parse("0 0 0 * * * 2030").unwrap_err();
        assert!(e.to_string().contains("got 7"), "{e}");
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("0 3 * * FUNDAY").is_err());
        assert!(Schedule::parse("").is_err());
        for empty in [", 0 * ? * *", "0 1,,2 * * *", "0 0 * * 1,"] {
            let e = Schedule::parse(empty).unwrap_err();
            assert!(e.to_string().contains("empty list item"), "{empty}: {e}");
        }
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 31 2 *"] {
            let e = Schedule::parse(never).unwrap_err();
            assert!(e.to_string().contains("would never run"), "{never}: {e}");
        }
        // Rare dates still run.
        let leap = Schedule::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(utc("2025-01-01T00:00:00Z"), Tz::UTC),
            Some(utc("2028-02-29T00:00:00Z"))
        );
        assert!(Schedule::parse("0 0 * * 5#5").is_ok());
    }

    #[test]
    fn next_run_in_utc() {
        let s = Schedule::parse("15 * * * *").unwrap();
        assert_eq!(
            s.next_after(utc("2024-05-01T10:15:00Z"), Tz::UTC),
            Some(utc("2024-05-01T11:15:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2024-05-01T10:14:59Z"), Tz::UTC),
            Some(utc("2024-05-01T10:15:00Z"))
        );
    }

    #[test]
    fn next_run_respects_the_time_zone() {
        // 03:00 in Berlin is 01:00 UTC in summer and 02:00 UTC in winter.
        let s = Schedule::parse("0 3 * * *").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            s.next_after(utc("2024-07-01T12:00:00Z"), berlin),
            Some(utc("2024-07-02T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2024-12-01T12:00:00Z"), berlin),
            Some(utc("2024-12-02T02:00:00Z"))
        );
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            s.next_after(utc("2024-12-01T12:00:00Z"), ny),
            Some(utc("2024-12-02T08:00:00Z"))
        );
    }

    #[test]
    fn a_run_in_the_spring_forward_gap_happens_right_after_it() {
        // Berlin, 2024-03-31: 02:00 local jumps to 03:00 (01:00 UTC). 02:30 does not exist.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        let next = s.next_after(utc("2024-03-30T12:00:00Z"), berlin).unwrap();
        assert_eq!(
            next,
            utc("2024-03-31T01:00:00Z"),
            "first instant after the gap"
        );
        // And the day after it is back to 02:30 local (00:30 UTC, summer time).
        let after = s.next_after(next, berlin).unwrap();
        assert_eq!(after, utc("2024-04-01T00:30:00Z"));
    }

    #[test]
    fn a_fixed_time_run_in_the_fall_back_hour_happens_once() {
        // Berlin, 2024-10-27: 03:00 local goes back to 02:00, so 02:30 occurs twice.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        let first = s.next_after(utc("2024-10-26T12:00:00Z"), berlin).unwrap();
        assert_eq!(
            first,
            utc("2024-10-27T00:30:00Z"),
            "the earlier 02:30 (summer time)"
        );
        let second = s.next_after(first, berlin).unwrap();
        assert_eq!(
            second,
            utc("2024-10-28T01:30:00Z"),
            "next day, not the repeated hour"
        );
    }

    #[test]
    fn an_hourly_schedule_keeps_running_through_the_fall_back_hour() {
        // Interval-style jobs run in both copies of the repeated hour: every real hour counts.
        let s = Schedule::parse("15 * * * *").unwrap();
        let berlin = chrono_tz::Europe::Berlin;
        let mut t = utc("2024-10-26T23:00:00Z");
        let mut runs = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t, berlin).unwrap();
            runs.push(t);
        }
        assert_eq!(
            runs,
            vec![
                utc("2024-10-26T23:15:00Z"),
                utc("2024-10-27T00:15:00Z"),
                utc("2024-10-27T01:15:00Z"),
                utc("2024-10-27T02:15:00Z"),
            ]
        );
    }

    #[test]
    fn sunday_is_0_or_7_or_sun() {
        let berlin = chrono_tz::Europe::Berlin;
        let from = utc("2024-05-01T00:00:00Z"); // a Wednesday
        let expected = berlin
            .with_ymd_and_hms(2024, 5, 5, 3, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        for e in ["0 3 * * SUN", "0 3 * * 0", "0 3 * * 7"] {
            let s = Schedule::parse(e).unwrap();
            assert_eq!(s.next_after(from, berlin), Some(expected), "{e}");
        }
    }

    fn config(inc: Option<&str>, full: Option<&str>) -> ScheduleConfig {
        ScheduleConfig {
            incremental: inc.map(|s| Schedule::parse(s).unwrap()),
            full_refresh: full.map(|s| Schedule::parse(s).unwrap()),
            timezone: Tz::UTC,
            jitter: Duration::ZERO,
            run_on_start: false,
            on_overlap: OverlapPolicy::Skip,
        }
    }

    #[test]
    fn full_refresh_takes_precedence_when_both_are_due() {
        let c = config(Some("0 * * * *"), Some("0 3 * * SUN"));
        // Sunday 2024-05-05 02:30 UTC: both are due at 03:00.
        assert_eq!(
            c.next_run(utc("2024-05-05T02:30:00Z")),
            Some((utc("2024-05-05T03:00:00Z"), RunKind::FullRefresh))
        );
        assert_eq!(
            c.next_run(utc("2024-05-05T03:00:00Z")),
            Some((utc("2024-05-05T04:00:00Z"), RunKind::Incremental))
        );
        assert_eq!(
            config(None, Some("0 3 * * *")).next_run(utc("2024-05-05T03:00:00Z")),
            Some((utc("2024-05-06T03:00:00Z"), RunKind::FullRefresh))
        );
        assert_eq!(
            config(None, None).next_run(utc("2024-05-05T03:00:00Z")),
            None
        );
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let mut c = config(Some("* * * * *"), None);
        assert_eq!(c.jitter_delay(), Duration::ZERO);
        c.jitter = Duration::from_millis(50);
        for _ in 0..200 {
            assert!(c.jitter_delay() < Duration::from_millis(50));
        }
    }
}
