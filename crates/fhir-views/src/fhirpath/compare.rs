//! Equality and order of primitive values: numbers numerically, strings exactly, and dates,
//! dateTimes and times by FHIRPath's precision rules (different precision → unknown).

use std::cmp::Ordering;

use super::decimal::Dec as Decimal;
use super::value::Prim;

/// A date, dateTime or time split into its parts; `None` parts are beyond its precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    pub year: Option<i32>,
    pub month: Option<u32>,
    pub day: Option<u32>,
    pub hour: Option<u32>,
    pub minute: Option<u32>,
    pub second: Option<u32>,
    /// Fraction of a second as (digits value, digit count).
    pub frac: Option<(u32, u32)>,
    /// Offset from UTC in minutes.
    pub tz: Option<i32>,
}

/// Reads exactly `n` ASCII digits at the start of `s`.
fn digits(s: &str, n: usize) -> Option<(u32, &str)> {
    let head = s.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[n..]))
}

fn date_part(s: &str) -> Option<(Parts, &str)> {
    let mut p = Parts::default();
    let (y, mut rest) = digits(s, 4)?;
    p.year = Some(i32::try_from(y).ok()?);
    if let Some(r) = rest.strip_prefix('-') {
        let (m, r) = digits(r, 2)?;
        (1..=12).contains(&m).then_some(())?;
        p.month = Some(m);
        rest = r;
        if let Some(r) = rest.strip_prefix('-') {
            let (d, r) = digits(r, 2)?;
            (1..=days_in_month(y as i32, m))
                .contains(&d)
                .then_some(())?;
            p.day = Some(d);
            rest = r;
        }
    }
    Some((p, rest))
}

/// Reads `hh(:mm(:ss(.fff)?)?)?` into `p`.
fn time_part<'s>(s: &'s str, p: &mut Parts) -> Option<&'s str> {
    let (h, mut rest) = digits(s, 2)?;
    (h < 24).then_some(())?;
    p.hour = Some(h);
    if let Some(r) = rest.strip_prefix(':') {
        let (m, r) = digits(r, 2)?;
        (m < 60).then_some(())?;
        p.minute = Some(m);
        rest = r;
        if let Some(r) = rest.strip_prefix(':') {
            let (sec, r) = digits(r, 2)?;
            (sec < 60).then_some(())?;
            p.second = Some(sec);
            rest = r;
            if let Some(r) = rest.strip_prefix('.') {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                (1..=9).contains(&n).then_some(())?;
                let (f, r) = digits(r, n)?;
                p.frac = Some((f, n as u32));
                rest = r;
            }
        }
    }
    Some(rest)
}

pub(crate) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// `YYYY(-MM(-DD)?)?`
pub(crate) fn parse_date(s: &str) -> Option<Parts> {
    let (p, rest) = date_part(s)?;
    rest.is_empty().then_some(p)
}

/// A date, optionally followed by `T` and a (partial) time and a zone (`Z`, `+hh:mm`).
pub(crate) fn parse_datetime(s: &str) -> Option<Parts> {
    let (mut p, rest) = date_part(s)?;
    let Some(time) = rest.strip_prefix('T') else {
        return rest.is_empty().then_some(p);
    };
    if time.is_empty() {
        return Some(p);
    }
    let rest = time_part(time, &mut p)?;
    p.tz = match rest.as_bytes().first() {
        None => None,
        Some(b'Z') if rest.len() == 1 => Some(0),
        Some(sign @ (b'+' | b'-')) => {
            let (h, r) = digits(&rest[1..], 2)?;
            let (m, r) = digits(r.strip_prefix(':')?, 2)?;
            (r.is_empty() && h <= 14 && m < 60).then_some(())?;
            let minutes = i32::try_from(h * 60 + m).ok()?;
            Some(if *sign == b'-' { -minutes } else { minutes })
        }
        Some(_) => return None,
    };
    Some(p)
}

/// `hh(:mm(:ss(.fff)?)?)?`
pub(crate) fn parse_time(s: &str) -> Option<Parts> {
    let mut p = Parts::default();
    time_part(s, &mut p)?.is_empty().then_some(p)
}

impl Parts {
    /// The parts in order of precision, seconds with their fraction as milliseconds-like
    /// decimal (FHIRPath treats seconds and fractions as one precision).
    fn ladder(&self) -> [Option<i64>; 6] {
        let second = self.second.map(|s| {
            let (f, n) = self.frac.unwrap_or((0, 0));
            // nanoseconds: seconds × 1e9 + fraction scaled to 9 digits.
            i64::from(s) * 1_000_000_000 + i64::from(f) * 10i64.pow(9 - n.min(9))
        });
        [
            self.year.map(i64::from),
            self.month.map(i64::from),
            self.day.map(i64::from),
            self.hour.map(i64::from),
            self.minute.map(i64::from),
            second,
        ]
    }

    /// Shifted to UTC when it has a zone and a time (dates carry no zone).
    fn to_utc(self) -> Parts {
        let (Some(tz), Some(y), Some(mo), Some(d), Some(h)) =
            (self.tz, self.year, self.month, self.day, self.hour)
        else {
            return self;
        };
        let Some(local) = chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, self.minute.unwrap_or(0), 0))
        else {
            return self;
        };
        let utc = local - chrono::Duration::minutes(i64::from(tz));
        use chrono::{Datelike, Timelike};
        Parts {
            year: Some(utc.year()),
            month: Some(utc.month()),
            day: Some(utc.day()),
            hour: Some(utc.hour()),
            minute: self.minute.map(|_| utc.minute()),
            tz: Some(0),
            ..self
        }
    }
}

/// Order of two date/time values: `None` when their precisions differ before a part that
/// decides (FHIRPath's empty result).
pub(crate) fn cmp_parts(a: Parts, b: Parts) -> Option<Ordering> {
    let (a, b) = if a.tz.is_some() && b.tz.is_some() {
        (a.to_utc(), b.to_utc())
    } else {
        (a, b)
    };
    // Times have no date parts: the ladder starts at the first part either value has.
    let mut started = false;
    for (x, y) in a.ladder().into_iter().zip(b.ladder()) {
        match (x, y) {
            (Some(x), Some(y)) if x != y => return Some(x.cmp(&y)),
            (Some(_), Some(_)) => started = true,
            (None, None) if !started => {}
            (None, None) => return Some(Ordering::Equal),
            _ => return None,
        }
    }
    Some(Ordering::Equal)
}

/// How two primitives compare: `Some(Some(ord))` ordered, `Some(None)` unknown (different
/// date precision), `None` not comparable (different kinds).
pub(crate) fn compare(a: Prim<'_>, b: Prim<'_>) -> Option<Option<Ordering>> {
    use Prim::*;
    let num = |p: Prim<'_>| match p {
        Int(i) => Some(Decimal::from_i64(i)),
        Dec(s) => Decimal::parse(s),
        _ => None,
    };
    match (a, b) {
        (Int(x), Int(y)) => Some(Some(x.cmp(&y))),
        (Int(_) | Dec(_), Int(_) | Dec(_)) => Some(Some(num(a)?.cmp(num(b)?))),
        (Str(x), Str(y)) => Some(Some(x.cmp(y))),
        (Bool(x), Bool(y)) => Some(Some(x.cmp(&y))),
        (Time(x), Time(y)) | (Time(x), Str(y)) | (Str(x), Time(y)) => {
            Some(cmp_parts(parse_time(x)?, parse_time(y)?))
        }
        (Date(x) | DateTime(x), Date(y) | DateTime(y) | Str(y))
        | (Str(x), Date(y) | DateTime(y)) => {
            Some(cmp_parts(parse_datetime(x)?, parse_datetime(y)?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partial_dates_and_times() {
        assert_eq!(parse_date("1970-06").and_then(|p| p.month), Some(6));
        assert!(parse_date("1970-13").is_none());
        assert!(parse_date("1970-02-30").is_none());
        assert!(parse_date("2000-02-29").is_some());
        assert!(parse_date("1900-02-29").is_none());
        assert!(parse_date("70-01").is_none());
        let p = parse_datetime("2015-02-07T13:28:17.239+02:00");
        assert_eq!(p.and_then(|p| p.tz), Some(120));
        assert_eq!(p.and_then(|p| p.frac), Some((239, 3)));
        assert!(parse_datetime("2015-02-07T").is_some());
        assert!(parse_datetime("2015-02-07T25:00").is_none());
        assert!(parse_datetime("2015-02-07T10:00+2").is_none());
        assert!(parse_time("12:34:00.5").is_some());
        assert!(parse_time("12:3").is_none());
        assert!(parse_time("ü").is_none());
    }

    #[test]
    fn date_precision_rules() {
        let dt = |s: &str| parse_datetime(s).expect("valid");
        assert_eq!(
            cmp_parts(dt("2016-11-12"), dt("2016-11-12")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp_parts(dt("2016-11-12"), dt("2023-02-08")),
            Some(Ordering::Less)
        );
        assert_eq!(cmp_parts(dt("2016-11"), dt("2016-11-12")), None);
        assert_eq!(
            cmp_parts(dt("2016-10"), dt("2016-11-12")),
            Some(Ordering::Less)
        );
        assert_eq!(
            cmp_parts(
                dt("2015-02-07T13:28:17.239+02:00"),
                dt("2015-02-07T11:28:17.239Z")
            ),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp_parts(
                dt("2015-02-07T13:28:17+02:00"),
                dt("2015-02-07T13:28:17.000+02:00")
            ),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp_parts(dt("2015-01-01T00:30:00+01:00"), dt("2014-12-31T23:30:00Z")),
            Some(Ordering::Equal)
        );
    }

    #[test]
    fn compares_across_kinds() {
        use Prim::*;
        assert_eq!(compare(Int(1), Dec("1.0")), Some(Some(Ordering::Equal)));
        assert_eq!(
            compare(Dec("1.8"), Dec("1.2")),
            Some(Some(Ordering::Greater))
        );
        assert_eq!(
            compare(Str("1978-03-12"), Date("1978-03-12")),
            Some(Some(Ordering::Equal))
        );
        assert_eq!(
            compare(Time("18:12:00"), Time("18:32:00")),
            Some(Some(Ordering::Less))
        );
        assert_eq!(compare(Str("a"), Int(1)), None);
        assert_eq!(compare(Str("not a date"), Date("2020")), None);
    }
}
