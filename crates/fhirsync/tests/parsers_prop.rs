//! Property tests for the value parsers: no input panics, valid inputs mean what they say.
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};
use fhirsync::config::{parse_duration, parse_instant};
use fhirsync::schedule::Schedule;
use proptest::prelude::*;

/// An accepted schedule's next run (if any) is after the instant asked about; a refused one
/// says why.
fn schedule_means_what_it_accepts(s: &str) -> Result<(), TestCaseError> {
    match Schedule::parse(s) {
        Ok(schedule) => {
            let after = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
            if let Some(next) = schedule.next_after(after, chrono_tz::UTC) {
                prop_assert!(next > after, "{s:?}: {next} is not after {after}");
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #[test]
    fn parsers_never_panic_and_mean_what_they_accept(s in "\\PC{0,40}") {
        // Accepted: the value means the same when written back; refused: a message to show.
        match parse_duration(&s) {
            Ok(d) => prop_assert_eq!(parse_duration(&humantime::format_duration(d).to_string()), Ok(d)),
            Err(e) => prop_assert!(!e.is_empty()),
        }
        match parse_instant(&s) {
            Ok(t) => prop_assert_eq!(parse_instant(&t.to_rfc3339()), Ok(t)),
            Err(e) => prop_assert!(e.contains("RFC 3339"), "{}", e),
        }
        schedule_means_what_it_accepts(&s)?;
    }

    #[test]
    fn cron_like_garbage_never_panics(fields in proptest::collection::vec("[0-9*/,LW#-]{1,6}", 0..8)) {
        schedule_means_what_it_accepts(&fields.join(" "))?;
    }

    #[test]
    fn durations_round_trip(secs in 0u64..10_000_000) {
        prop_assert_eq!(parse_duration(&secs.to_string()), Ok(Duration::from_secs(secs)));
        let text = humantime::format_duration(Duration::from_secs(secs)).to_string();
        prop_assert_eq!(parse_duration(&text), Ok(Duration::from_secs(secs)));
    }

    #[test]
    fn a_date_means_midnight_utc(days in 0u64..200_000) {
        let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Days::new(days);
        let t = parse_instant(&date.format("%Y-%m-%d").to_string()).unwrap();
        prop_assert_eq!(t.offset().local_minus_utc(), 0);
        prop_assert_eq!(t.date_naive(), date);
        prop_assert_eq!((t.hour(), t.minute(), t.second()), (0, 0, 0));
    }

    #[test]
    fn rfc3339_instants_round_trip(secs in 0i64..4_000_000_000, offset_minutes in -720i32..=840) {
        let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
        prop_assert_eq!(parse_instant(&t.to_rfc3339()), Ok(t));
    }

    #[test]
    fn next_run_is_later_and_matches_the_fields(
        minute in 0u32..60,
        hour in 0u32..24,
        start in 0i64..2_000_000_000,
        tz_index in 0usize..4,
    ) {
        let tz = [chrono_tz::UTC, chrono_tz::Europe::Berlin, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe][tz_index];
        let s = Schedule::parse(&format!("{minute} {hour} * * *")).unwrap();
        let after = DateTime::<Utc>::from_timestamp(start, 0).unwrap();
        let next = s.next_after(after, tz).unwrap();
        prop_assert!(next > after);
        // At most a day and a bit later (a DST gap can push it past 24 h).
        prop_assert!(next - after <= chrono::Duration::hours(26));
        let local = next.with_timezone(&tz);
        // Either the wall-clock time matches, or it was in a DST gap and runs right after it.
        let exact = local.hour() == hour && local.minute() == minute;
        let in_gap = tz.with_ymd_and_hms(local.year(), local.month(), local.day(), hour, minute, 0).single().is_none();
        prop_assert!(exact || in_gap, "{} -> {}", after, local);
    }
}
