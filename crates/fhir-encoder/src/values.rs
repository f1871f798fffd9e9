//! Conversions of FHIR primitive values to their stored form.

/// A decimal rounded half-up to 6 places, as `unscaled * 10^-6`, and its original scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dec {
    pub unscaled: i128,
    pub scale: i32,
}

/// Largest magnitude + 1 of a DECIMAL(32, 6) unscaled value.
const DEC32_LIMIT: i128 = 10i128.pow(32);

/// Parses a JSON number literal as a decimal (32, 6). `Err` explains why it does not fit.
pub(crate) fn parse_decimal(text: &str) -> Result<Dec, &'static str> {
    let b = text.as_bytes();
    let mut i = 0;
    let neg = b.first() == Some(&b'-');
    if neg {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &b[int_start..i];
    let mut frac_digits: &[u8] = &[];
    if i < b.len() && b[i] == b'.' {
        let s = i + 1;
        i = s;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &b[s..i];
    }
    let mut exp: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let e = std::str::from_utf8(&b[i + 1..]).map_err(|_| "not a number")?;
        exp = e
            .trim_start_matches('+')
            .parse::<i64>()
            .map_err(|_| "exponent out of range")?;
        i = b.len();
    }
    if i != b.len() || int_digits.is_empty() {
        return Err("not a number");
    }
    if exp.abs() > 10_000 {
        return Err("exponent out of range");
    }
    // Digits d_0 d_1 ... with the decimal point after `point` digits.
    let digits = int_digits.iter().chain(frac_digits.iter()).copied();
    let n = (int_digits.len() + frac_digits.len()) as i64;
    let point = int_digits.len() as i64 + exp;
    let scale = (frac_digits.len() as i64 - exp).clamp(0, i32::MAX as i64) as i32;
    // Keep digits up to 6 places after the point; round half-up on the first dropped digit.
    let keep = point + 6;
    let mut unscaled: i128 = 0;
    let mut round_up = false;
    for (k, d) in digits.enumerate() {
        let k = k as i64;
        let d = i128::from(d - b'0');
        if k < keep {
            unscaled = unscaled
                .checked_mul(10)
                .and_then(|u| u.checked_add(d))
                .ok_or(TOO_LARGE)?;
            if unscaled >= DEC32_LIMIT {
                return Err(TOO_LARGE);
            }
        } else {
            round_up = k == keep && d >= 5;
            break;
        }
    }
    // Pad with zeros when there are fewer digits than places.
    let mut missing = keep - n;
    while missing > 0 {
        unscaled = unscaled.checked_mul(10).ok_or(TOO_LARGE)?;
        if unscaled >= DEC32_LIMIT {
            return Err(TOO_LARGE);
        }
        missing -= 1;
    }
    if keep < 0 {
        // Smaller than half of 10^-6 in magnitude.
        round_up = false;
        unscaled = 0;
    }
    if round_up {
        unscaled += 1;
    }
    if unscaled >= DEC32_LIMIT {
        return Err(TOO_LARGE);
    }
    Ok(Dec {
        unscaled: if neg { -unscaled } else { unscaled },
        scale,
    })
}

const TOO_LARGE: &str = "decimal has more than 26 integer digits (does not fit DECIMAL(32,6))";

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Validates `YYYY`, `YYYY-MM` or `YYYY-MM-DD`; returns the length consumed.
fn date_prefix(b: &[u8]) -> Result<usize, &'static str> {
    let y = digits(b, 0, 4).ok_or("expected a year YYYY")?;
    if b.len() == 4 || b[4] != b'-' {
        return Ok(4);
    }
    let m = digits(b, 5, 2).ok_or("expected a month MM")?;
    if !(1..=12).contains(&m) {
        return Err("month out of range");
    }
    if b.len() == 7 || b[7] != b'-' {
        return Ok(7);
    }
    let d = digits(b, 8, 2).ok_or("expected a day DD")?;
    if d < 1 || d > days_in_month(y, m) {
        return Err("day does not exist in that month");
    }
    Ok(10)
}

/// Validates `hh:mm:ss(.fraction)?`; returns the length consumed.
fn time_prefix(b: &[u8]) -> Result<usize, &'static str> {
    let h = digits(b, 0, 2).ok_or("expected hh:mm:ss")?;
    let m = (b.get(2) == Some(&b':'))
        .then(|| digits(b, 3, 2))
        .flatten()
        .ok_or("expected hh:mm:ss")?;
    let s = (b.get(5) == Some(&b':'))
        .then(|| digits(b, 6, 2))
        .flatten()
        .ok_or("expected hh:mm:ss")?;
    // FHIR allows 24:00:00 only implicitly; leap second 60 is allowed.
    if h > 23 || m > 59 || s > 60 {
        return Err("time out of range");
    }
    let mut n = 8;
    if b.get(8) == Some(&b'.') {
        n = 9;
        while b.get(n).is_some_and(u8::is_ascii_digit) {
            n += 1;
        }
        if n == 9 {
            return Err("empty fraction of a second");
        }
    }
    Ok(n)
}

fn zone(b: &[u8]) -> Result<(), &'static str> {
    match b {
        [b'Z'] => Ok(()),
        [b'+' | b'-', ..] if b.len() == 6 && b[3] == b':' => {
            let h = digits(b, 1, 2).ok_or("invalid time zone")?;
            let m = digits(b, 4, 2).ok_or("invalid time zone")?;
            if h > 14 || m > 59 {
                Err("time zone out of range")
            } else {
                Ok(())
            }
        }
        _ => Err("invalid or missing time zone"),
    }
}

pub(crate) fn check_date(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if date_prefix(b)? == b.len() {
        Ok(())
    } else {
        Err("not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)")
    }
}

pub(crate) fn check_date_time(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    let n = date_prefix(b)?;
    if n == b.len() {
        return Ok(());
    }
    if n != 10 || b[10] != b'T' {
        return Err("not a FHIR dateTime");
    }
    let t = time_prefix(&b[11..])?;
    zone(&b[11 + t..])
}

pub(crate) fn check_time(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    if time_prefix(b)? == b.len() {
        Ok(())
    } else {
        Err("not a FHIR time (hh:mm:ss)")
    }
}

/// Parses a FHIR instant to microseconds since the epoch (UTC; sub-microsecond digits dropped).
pub(crate) fn parse_instant(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if date_prefix(b)? != 10 || b.get(10) != Some(&b'T') {
        return Err("not a FHIR instant (YYYY-MM-DDThh:mm:ss[.fff](Z|+hh:mm))");
    }
    let t = time_prefix(&b[11..])?;
    zone(&b[11 + t..])?;
    let dt = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| "not a valid instant")?;
    Ok(dt.timestamp_micros())
}

/// Decodes FHIR `base64Binary` text: standard base64, padding optional, whitespace ignored
/// (as XML-origin data has it).
pub fn decode_base64(s: &str, out: &mut Vec<u8>) -> Result<(), &'static str> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    out.clear();
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    ENGINE
        .decode_vec(compact, out)
        .map_err(|_| "invalid base64")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> (i128, i32) {
        let d = parse_decimal(s).unwrap();
        (d.unscaled, d.scale)
    }

    #[test]
    fn decimals_round_half_up_and_keep_scale() {
        assert_eq!(dec("28.104000000000003"), (28_104_000, 15));
        assert_eq!(dec("0.64"), (640_000, 2));
        assert_eq!(dec("1.0000005"), (1_000_001, 7));
        assert_eq!(dec("-1.0000005"), (-1_000_001, 7));
        assert_eq!(dec("1.0000004999"), (1_000_000, 10));
        assert_eq!(dec("12"), (12_000_000, 0));
        assert_eq!(dec("0"), (0, 0));
        assert_eq!(dec("1.5e2"), (150_000_000, 0));
        assert_eq!(dec("15e-1"), (1_500_000, 1));
        assert_eq!(dec("5e-7"), (1, 7));
        assert_eq!(dec("4e-7"), (0, 7));
        assert_eq!(dec("1e-20"), (0, 20));
        assert_eq!(
            dec("99999999999999999999999999.9999994"),
            (99_999_999_999_999_999_999_999_999_999_999, 7)
        );
        assert!(parse_decimal("99999999999999999999999999.9999996").is_err());
        assert!(parse_decimal("123456789012345678901234567").is_err());
        assert!(parse_decimal("1e400").is_err());
    }

    #[test]
    fn dates() {
        for ok in ["2020", "2020-02", "2020-02-29", "2019-12-31"] {
            check_date(ok).unwrap();
            check_date_time(ok).unwrap();
        }
        for bad in [
            "2020-02-30",
            "2019-02-29",
            "2020-13",
            "20",
            "2020-1-01",
            "2020-01-01T",
        ] {
            assert!(check_date(bad).is_err(), "{bad}");
        }
        check_date_time("2013-09-23T15:38:27.139-04:00").unwrap();
        check_date_time("2013-09-23T15:38:27Z").unwrap();
        assert!(check_date_time("2013-09-23T15:38:27").is_err());
        assert!(check_date_time("2013-09-23T25:38:27Z").is_err());
        check_time("10:00:00").unwrap();
        check_time("10:00:00.5").unwrap();
        assert!(check_time("10:00").is_err());
    }

    #[test]
    fn instants_convert_to_utc() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_instant("1970-01-01T00:00:01.5+01:00"),
            Ok(-3_598_500_000)
        );
        assert_eq!(
            parse_instant("2013-09-23T15:38:27.139-04:00"),
            Ok(1_379_965_107_139_000)
        );
        assert!(parse_instant("2013-09-23").is_err());
        assert!(parse_instant("2013-02-30T00:00:00Z").is_err());
        assert!(parse_instant("2013-09-23T15:38:27").is_err());
    }

    #[test]
    fn base64() {
        let mut out = Vec::new();
        decode_base64("aGVsbG8=", &mut out).unwrap();
        assert_eq!(out, b"hello");
        decode_base64("aGVsbG8", &mut out).unwrap();
        assert_eq!(out, b"hello");
        decode_base64("", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(decode_base64("a", &mut out).is_err());
        assert!(decode_base64("a*b=", &mut out).is_err());
    }
}
