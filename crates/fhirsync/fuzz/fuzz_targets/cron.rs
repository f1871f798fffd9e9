//! Any text as a cron expression: never a panic or a hang; an accepted expression reads back
//! the same from its text, has a next run, and in every time zone (DST changes, half- and
//! quarter-hour offsets included) each next run is strictly after the one before.
#![no_main]
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use fhirsync::schedule::Schedule;
use libfuzzer_sys::fuzz_target;

const ZONES: [Tz; 6] = [
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::Pacific__Chatham,
    Tz::Asia__Kathmandu,
];

/// Just before the spring DST change in Berlin, and an ordinary afternoon.
const STARTS: [i64; 2] = [1_711_846_700, 1_700_000_000];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let schedule = match Schedule::parse(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "{e}");
            return;
        }
    };
    assert_eq!(Schedule::parse(schedule.as_str()).as_ref(), Ok(&schedule));
    // A zone and a start from the input, so that each input is quick and all are tried.
    let tz = ZONES[data.len() % ZONES.len()];
    let start = STARTS[usize::from(data.first().copied().unwrap_or(0)) % STARTS.len()];
    let mut at: DateTime<Utc> = DateTime::from_timestamp(start, 0).expect("an instant");
    for step in 0..3 {
        let next = schedule.next_after(at, tz);
        // Only an expression some date matches is accepted.
        let Some(next) = next else {
            assert!(step > 0, "{schedule} in {tz}: no run after {at}");
            break;
        };
        assert!(next > at, "{schedule} in {tz}: {next} is not after {at}");
        at = next;
    }
});
