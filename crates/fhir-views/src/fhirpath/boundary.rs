//! `lowBoundary()` and `highBoundary()`: the least and greatest value a number, date,
//! dateTime or time of limited precision could stand for (`1.0` → 0.95 .. 1.05, `1970-06` →
//! 1970-06-01 .. 1970-06-30, a dateTime without offset spans +14:00 .. -12:00).

use super::compare::{Parts, days_in_month, parse_date, parse_datetime, parse_time};
use super::decimal::Dec;
use super::value::Prim;
use super::{EvalError, Item};

/// Digits after the point of a decimal boundary when no precision is asked for.
const DEFAULT_DECIMAL_PRECISION: u32 = 8;

pub(crate) fn boundary<'a>(
    item: &Item<'a>,
    precision: Option<i64>,
    high: bool,
) -> Result<Option<Item<'a>>, EvalError> {
    let fail = |message: String| EvalError::Function {
        function: if high { "highBoundary" } else { "lowBoundary" },
        message,
    };
    let precision = precision
        .map(|p| u32::try_from(p).map_err(|_| fail(format!("precision {p} is negative"))))
        .transpose()?;
    Ok(match item.prim() {
        Prim::Int(i) => decimal(Dec::from_i64(i), precision, high),
        Prim::Dec(text) => match Dec::parse(text) {
            Some(d) => decimal(d, precision, high),
            None => None,
        },
        Prim::Date(text) => parse_date(text).and_then(|p| date(p, precision, high)),
        Prim::DateTime(text) => parse_datetime(text).and_then(|p| date_time(p, precision, high)),
        Prim::Time(text) => parse_time(text).and_then(|p| time(p, precision, high)),
        // A string of unknown FHIR type: its form says which it is.
        Prim::Str(text) => {
            if text.contains('T') {
                parse_datetime(text).and_then(|p| date_time(p, precision, high))
            } else if text.contains(':') {
                parse_time(text).and_then(|p| time(p, precision, high))
            } else {
                parse_date(text).and_then(|p| date(p, precision, high))
            }
        }
        Prim::Bool(_) | Prim::Complex => None,
    })
}

/// Half a unit of the last digit below or above, then cut to `precision` digits (down for the
/// low boundary, up for the high one).
fn decimal<'a>(d: Dec, precision: Option<u32>, high: bool) -> Option<Item<'a>> {
    let finer = Dec {
        mant: d.mant.checked_mul(10)?,
        scale: d.scale + 1,
    };
    let half = Dec {
        mant: 5,
        scale: finer.scale,
    };
    let bound = if high {
        finer.add(half)?
    } else {
        finer.sub(half)?
    };
    let precision = precision.unwrap_or(DEFAULT_DECIMAL_PRECISION);
    let bound = if precision >= bound.scale {
        bound
    } else {
        let factor = 10i128.checked_pow(bound.scale - precision)?;
        let (q, r) = (bound.mant.div_euclid(factor), bound.mant.rem_euclid(factor));
        let q = if high && r != 0 { q + 1 } else { q };
        Dec {
            mant: q,
            scale: precision,
        }
    };
    Some(Item::Decimal(bound.trim().to_string()))
}

/// The first or last day within the date's precision, to day precision (or `precision`
/// digits: 4 year, 6 month, 8 day).
fn date<'a>(p: Parts, precision: Option<u32>, high: bool) -> Option<Item<'a>> {
    let (year, month, day) = date_parts(&p, high)?;
    Some(Item::Date(match precision {
        Some(4) => format!("{year:04}"),
        Some(6) => format!("{year:04}-{month:02}"),
        None | Some(8) => format!("{year:04}-{month:02}-{day:02}"),
        Some(_) => return None,
    }))
}

fn date_parts(p: &Parts, high: bool) -> Option<(i32, u32, u32)> {
    let year = p.year?;
    let month = p.month.unwrap_or(if high { 12 } else { 1 });
    let day = p
        .day
        .unwrap_or(if high { days_in_month(year, month) } else { 1 });
    Some((year, month, day))
}

/// The earliest or latest instant within the dateTime's precision, to milliseconds; without
/// an offset, the earliest is at +14:00 and the latest at -12:00 (every zone in use).
fn date_time<'a>(p: Parts, precision: Option<u32>, high: bool) -> Option<Item<'a>> {
    if precision.is_some_and(|n| n != 17) {
        return None;
    }
    let (year, month, day) = date_parts(&p, high)?;
    let clock = clock(&p, high);
    let tz = match p.tz {
        Some(0) => "Z".to_owned(),
        Some(m) => offset(m),
        None if high => "-12:00".to_owned(),
        None => "+14:00".to_owned(),
    };
    Some(Item::DateTime(format!(
        "{year:04}-{month:02}-{day:02}T{clock}{tz}"
    )))
}

fn time<'a>(p: Parts, precision: Option<u32>, high: bool) -> Option<Item<'a>> {
    if precision.is_some_and(|n| n != 9) {
        return None;
    }
    Some(Item::Time(clock(&p, high)))
}

/// `hh:mm:ss.fff` with the parts beyond the value's precision at their least or greatest.
fn clock(p: &Parts, high: bool) -> String {
    let hour = p.hour.unwrap_or(if high { 23 } else { 0 });
    let minute = p.minute.unwrap_or(if high { 59 } else { 0 });
    let second = p.second.unwrap_or(if high { 59 } else { 0 });
    let millis = match p.frac {
        Some((value, digits)) if digits >= 3 => value / 10u32.pow(digits - 3),
        Some((value, digits)) => {
            let scaled = value * 10u32.pow(3 - digits);
            if high {
                scaled + 10u32.pow(3 - digits) - 1
            } else {
                scaled
            }
        }
        None if high => 999,
        None => 0,
    };
    format!("{hour:02}:{minute:02}:{second:02}.{millis:03}")
}

fn offset(minutes: i32) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.unsigned_abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(item: Option<Item<'_>>) -> Option<String> {
        item.and_then(|i| i.as_text().map(|t| t.into_owned()))
    }

    fn low(item: Item<'_>) -> Option<String> {
        text(boundary(&item, None, false).ok().flatten())
    }

    fn high(item: Item<'_>) -> Option<String> {
        text(boundary(&item, None, true).ok().flatten())
    }

    #[test]
    fn numbers() {
        assert_eq!(low(Item::Decimal("1.0".into())).as_deref(), Some("0.95"));
        assert_eq!(high(Item::Decimal("1.0".into())).as_deref(), Some("1.05"));
        assert_eq!(low(Item::Decimal("-1.0".into())).as_deref(), Some("-1.05"));
        assert_eq!(low(Item::Integer(1)).as_deref(), Some("0.5"));
        let cut = |p, h| {
            text(
                boundary(&Item::Decimal("1.587".into()), Some(p), h)
                    .ok()
                    .flatten(),
            )
        };
        assert_eq!(cut(2, false).as_deref(), Some("1.58"));
        assert_eq!(cut(2, true).as_deref(), Some("1.59"));
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(
            low(Item::Date("1970-06".into())).as_deref(),
            Some("1970-06-01")
        );
        assert_eq!(
            high(Item::Date("1970-06".into())).as_deref(),
            Some("1970-06-30")
        );
        assert_eq!(
            high(Item::Date("2000-02".into())).as_deref(),
            Some("2000-02-29")
        );
        assert_eq!(
            low(Item::DateTime("2010-10-10".into())).as_deref(),
            Some("2010-10-10T00:00:00.000+14:00")
        );
        assert_eq!(
            high(Item::DateTime("2010-10-10".into())).as_deref(),
            Some("2010-10-10T23:59:59.999-12:00")
        );
        assert_eq!(
            high(Item::DateTime("2010-10-10T10:30+02:00".into())).as_deref(),
            Some("2010-10-10T10:30:59.999+02:00")
        );
        assert_eq!(
            low(Item::Time("12:34:00".into())).as_deref(),
            Some("12:34:00.000")
        );
        assert_eq!(
            high(Item::Time("12:34".into())).as_deref(),
            Some("12:34:59.999")
        );
        assert_eq!(
            high(Item::Time("12:34:00.5".into())).as_deref(),
            Some("12:34:00.599")
        );
    }
}
