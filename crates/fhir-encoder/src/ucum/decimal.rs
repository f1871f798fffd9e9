// Ported from `Decimal.java` of the UCUM reference library ucum-java
// (https://github.com/FHIR/Ucum-java, `src/main/java/org/fhir/ucum/Decimal.java`), which
// carries this notice:
//
// BSD 3-Clause License
//
// Copyright (c) 2006+, Health Intersections Pty Ltd
// All rights reserved.
//
// Redistribution and use in source and binary forms, with or without
// modification, are permitted provided that the following conditions are met:
//
// * Redistributions of source code must retain the above copyright notice, this
//   list of conditions and the following disclaimer.
//
// * Redistributions in binary form must reproduce the above copyright notice,
//   this list of conditions and the following disclaimer in the documentation
//   and/or other materials provided with the distribution.
//
// * Neither the name of the copyright holder nor the names of its
//   contributors may be used to endorse or promote products derived from
//   this software without specific prior written permission.
//
// THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
// AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
// IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
// DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
// FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
// DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
// SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
// CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
// OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
// OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.

//! Precision-aware decimal arithmetic with the exact semantics of the UCUM
//! reference implementation's `Decimal` (ucum-java), which Pathling uses to
//! compute canonical values.
//!
//! The digits and the precision a result carries (including accumulated
//! trailing zeros and its rounding of non-terminating quotients) are part of
//! the stored value's scale, so this follows that algorithm step by step
//! rather than using a general-purpose big decimal.

use super::UcumError;

/// A decimal number: `0.<digits> * 10^decimal`, with a tracked precision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Decimal {
    /// Significant digits the value is known to (may exceed `digits.len()`).
    precision: i32,
    negative: bool,
    /// ASCII digits without the decimal point.
    digits: Vec<u8>,
    /// Position of the decimal point relative to the start of `digits`.
    decimal: i32,
}

fn zeros(n: i32) -> Vec<u8> {
    vec![b'0'; n.max(0) as usize]
}

fn all_zeros(s: &[u8], start: usize) -> bool {
    s.iter().skip(start).all(|&c| c == b'0')
}

fn len(s: &[u8]) -> i32 {
    // Lengths are bounded by the input limits of the caller, far below i32::MAX.
    i32::try_from(s.len()).unwrap_or(i32::MAX)
}

/// Adds two equal-length digit strings; a final carry is dropped, as the
/// callers only add values that cannot carry out.
fn string_addition(s1: &[u8], s2: &[u8]) -> Vec<u8> {
    let mut result = vec![b'0'; s2.len()];
    let mut c = 0u32;
    for i in (0..s1.len().min(s2.len())).rev() {
        let t = c + u32::from(s1[i] - b'0') + u32::from(s2[i] - b'0');
        result[i] = b'0' + (t % 10) as u8;
        c = t / 10;
    }
    result
}

/// Subtracts equal-length digit strings, `s1 >= s2`.
fn string_subtraction(s1: &[u8], s2: &[u8]) -> Result<Vec<u8>, UcumError> {
    // Digits may transiently be -1 while borrowing, as in the reference.
    let mut a: Vec<i32> = s1.iter().map(|&c| i32::from(c) - i32::from(b'0')).collect();
    let mut result = vec![b'0'; s2.len()];
    for i in (0..a.len().min(s2.len())).rev() {
        let mut t = a[i] - (i32::from(s2[i]) - i32::from(b'0'));
        if t < 0 {
            t += 10;
            if i == 0 {
                return Err(UcumError::Arithmetic);
            }
            a[i - 1] -= 1;
        }
        result[i] = b'0' + u8::try_from(t).map_err(|_| UcumError::Arithmetic)?;
    }
    Ok(result)
}

fn trim_leading_zeros(s: &[u8]) -> Vec<u8> {
    match s.iter().position(|&c| c != b'0') {
        Some(i) => s[i..].to_vec(),
        None => b"0".to_vec(),
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

impl Decimal {
    fn empty() -> Decimal {
        Decimal {
            precision: 0,
            negative: false,
            digits: Vec::new(),
            decimal: 0,
        }
    }

    /// Parses plain (`"12.30"`) or scientific (`"1.5e-3"`) text.
    pub(super) fn parse(text: &str) -> Result<Decimal, UcumError> {
        let mut d = Decimal::empty();
        if text.contains(['e', 'E']) {
            d.set_value_scientific(&text.to_ascii_lowercase())?;
        } else {
            d.set_value_decimal(text.as_bytes())?;
        }
        Ok(d)
    }

    /// Parses `text` but records the given precision, as the reference does
    /// for exact constants such as prefixes.
    pub(super) fn parse_with_precision(text: &str, precision: i32) -> Result<Decimal, UcumError> {
        let mut d = Decimal::parse(text)?;
        d.precision = precision;
        Ok(d)
    }

    pub(super) fn from_int(i: i64) -> Decimal {
        let mut d = Decimal::empty();
        // Integer text is always a valid decimal.
        let _ = d.set_value_decimal(i.to_string().as_bytes());
        d
    }

    fn zero() -> Decimal {
        Decimal::from_int(0)
    }

    fn set_value_decimal(&mut self, value: &[u8]) -> Result<(), UcumError> {
        let mut value = value;
        let mut dec: i32 = -1;
        self.negative = value.first() == Some(&b'-');
        if self.negative {
            value = &value[1..];
        }
        while value.len() > 1 && value[0] == b'0' {
            value = &value[1..];
        }
        for (i, &c) in value.iter().enumerate() {
            if c == b'.' && dec == -1 {
                dec = len(&value[..i]);
            } else if !c.is_ascii_digit() {
                return Err(UcumError::InvalidNumber);
            }
        }
        if dec == -1 {
            self.precision = len(value);
            self.decimal = len(value);
            self.digits = value.to_vec();
        } else if dec == len(value) - 1 {
            return Err(UcumError::InvalidNumber);
        } else {
            self.decimal = dec;
            self.precision = if all_zeros(value, 1) {
                len(value) - 1
            } else {
                count_significants(value)
            };
            let d = dec as usize;
            self.digits = cat(&[&value[..d], &value[d + 1..]]);
            if all_zeros(&self.digits, 0) {
                self.precision += 1;
            } else {
                let leading = self.digits.iter().take_while(|&&c| c == b'0').count();
                self.digits.drain(..leading);
                self.decimal -= i32::try_from(leading).unwrap_or(i32::MAX);
            }
        }
        Ok(())
    }

    fn set_value_scientific(&mut self, value: &str) -> Result<(), UcumError> {
        let (mantissa, exponent) = value.split_once('e').ok_or(UcumError::InvalidNumber)?;
        if mantissa.is_empty() || mantissa == "-" {
            return Err(UcumError::InvalidNumber);
        }
        let exponent: i32 = exponent.parse().map_err(|_| UcumError::InvalidNumber)?;
        self.set_value_decimal(mantissa.as_bytes())?;
        self.decimal = self
            .decimal
            .checked_add(exponent)
            .ok_or(UcumError::InvalidNumber)?;
        Ok(())
    }

    fn is_zero(&self) -> bool {
        all_zeros(&self.digits, 0)
    }

    /// Whether the plain text has no decimal point.
    fn is_whole_number(&self) -> bool {
        self.decimal >= len(&self.digits)
    }

    /// Plain decimal text, e.g. `"0.0100"`, `"81800"`, `"-1.5"`.
    pub(super) fn as_decimal(&self) -> String {
        let digits = &self.digits;
        let n = len(digits);
        let mut result: Vec<u8> = digits.clone();
        if self.decimal != n {
            if self.decimal < 0 {
                result = cat(&[b"0.", &zeros(-self.decimal), digits]);
            } else if self.decimal < n {
                if self.decimal == 0 {
                    result = cat(&[b"0.", digits]);
                } else {
                    let d = self.decimal as usize;
                    result = cat(&[&digits[..d], b".", &digits[d..]]);
                }
            } else {
                result = cat(&[digits, &zeros(self.decimal - n)]);
            }
        }
        if self.negative && !all_zeros(&result, 0) {
            result.insert(0, b'-');
        }
        // Only ASCII digits, '.', and '-' are ever written.
        String::from_utf8(result).unwrap_or_default()
    }

    pub(super) fn multiply(&self, other: &Decimal) -> Result<Decimal, UcumError> {
        if self.is_zero() || other.is_zero() {
            return Ok(Decimal::zero());
        }
        // The reference aligns both operands around the decimal point, pads
        // each to n digits (at least one leading zero) and writes the product
        // to 2n-1 digits before dropping leading zeros. The same digits come
        // from multiplying the significant digits and appending both
        // right-paddings as zeros.
        let max = self.decimal.max(other.decimal);
        let left_len = |x: &Decimal| max - x.decimal + 1 + len(&x.digits);
        let n = left_len(self).max(left_len(other));
        let right_pad = (n - left_len(self)) + (n - left_len(other));
        let mut acc = vec![0u32; self.digits.len() + other.digits.len()];
        for (i, &a) in self.digits.iter().enumerate() {
            let a = u32::from(a - b'0');
            if a == 0 {
                continue;
            }
            for (j, &b) in other.digits.iter().enumerate() {
                // Index i + j + 1 is the place of this digit pair's product.
                acc[i + j + 1] += a * u32::from(b - b'0');
            }
        }
        let mut product = vec![b'0'; acc.len()];
        let mut carry = 0u32;
        for k in (0..acc.len()).rev() {
            let t = acc[k] + carry;
            product[k] = b'0' + (t % 10) as u8;
            carry = t / 10;
        }
        if carry > 0 {
            return Err(UcumError::Arithmetic);
        }
        let first = product
            .iter()
            .position(|&c| c != b'0')
            .ok_or(UcumError::Arithmetic)?;
        let mut res = product[first..].to_vec();
        res.resize(
            res.len() + usize::try_from(right_pad).map_err(|_| UcumError::Arithmetic)?,
            b'0',
        );
        let dec = len(&res) - 2 * (n - (max + 1));

        let prec = match (self.is_whole_number(), other.is_whole_number()) {
            (true, true) => (self.digits.len().max(other.digits.len()) as i32)
                .max(self.precision.min(other.precision)),
            (true, false) => other.precision,
            (false, true) => self.precision,
            (false, false) => self.precision.min(other.precision),
        };
        while len(&res) > prec && res.last() == Some(&b'0') {
            res.pop();
        }
        // `res` is bare digits without leading zeros: it is the digit string.
        Ok(Decimal {
            precision: prec,
            negative: self.negative != other.negative,
            digits: res,
            decimal: dec,
        })
    }

    pub(super) fn divide(&self, other: &Decimal) -> Result<Decimal, UcumError> {
        if self.is_zero() {
            return Ok(Decimal::zero());
        }
        if other.is_zero() {
            return Err(UcumError::DivisionByZero);
        }
        let s = cat(&[b"0", &other.digits]);
        let m = len(&self.digits).max(len(&other.digits)) + 40;
        let mut tens: Vec<Vec<u8>> = Vec::with_capacity(10);
        tens.push(string_addition(&zeros(len(&s)), &s));
        for i in 1..10 {
            let next = string_addition(&tens[i - 1], &s);
            tens.push(next);
        }
        let width = tens[0].len();
        let mut v = self.digits.clone();
        let mut r: Vec<u8> = Vec::new();
        let mut l: i32 = 0;
        let mut d: i32 =
            (len(&self.digits) - self.decimal + 1) - (len(&other.digits) - other.decimal + 1);
        while v.len() < width {
            v.push(b'0');
            d += 1;
        }
        let od = other.digits.len();
        let mut w: Vec<u8>;
        let mut vi: usize;
        if v[..od] < other.digits[..] {
            if v.len() == width {
                v.push(b'0');
                d += 1;
            }
            w = v[..od + 1].to_vec();
            vi = w.len();
        } else {
            w = cat(&[b"0", &v[..od]]);
            vi = w.len() - 1;
        }

        let done = |handled: bool, l: i32, vi: usize, v: &[u8], w: &[u8]| {
            handled && (l > m || (vi >= v.len() && (w.is_empty() || all_zeros(w, 0))))
        };
        let mut handled = false;
        while !done(handled, l, vi, &v, &w) {
            l += 1;
            handled = true;
            let mut proc = false;
            for i in (0..=8usize).rev() {
                if tens[i] <= w {
                    proc = true;
                    r.push(b'1' + i as u8);
                    w = trim_leading_zeros(&string_subtraction(&w, &tens[i])?);
                    if !done(handled, l, vi, &v, &w) {
                        if vi < v.len() {
                            w.push(v[vi]);
                            vi += 1;
                            handled = false;
                        } else {
                            w.push(b'0');
                            d += 1;
                        }
                        while w.len() < width {
                            w.insert(0, b'0');
                        }
                    }
                    break;
                }
            }
            if !proc {
                if !w.is_empty() {
                    w.remove(0);
                }
                r.push(b'0');
                if !done(handled, l, vi, &v, &w) {
                    if vi < v.len() {
                        w.push(v[vi]);
                        vi += 1;
                        handled = false;
                    } else {
                        w.push(b'0');
                        d += 1;
                    }
                    while w.len() < width {
                        w.insert(0, b'0');
                    }
                }
            }
        }

        let prec;
        let this_whole = self.is_whole_number();
        let other_whole = other.is_whole_number();
        if this_whole && other_whole && l < m {
            let mut i = 0;
            while i < d {
                if r.last() == Some(&b'0') {
                    r.pop();
                    d -= 1;
                }
                i += 1;
            }
            prec = 100;
        } else {
            prec = if this_whole && other_whole {
                len(&self.digits).max(len(&other.digits))
            } else if this_whole {
                other.precision.max(len(&r) - d)
            } else if other_whole {
                self.precision.max(len(&r) - d)
            } else {
                self.precision.min(other.precision).max(len(&r) - d)
            };
            while len(&r) > prec {
                let Some(last) = r.pop() else { break };
                let mut up = last > b'5';
                if up {
                    // The reference never carries into the first digit; it
                    // prepends a 1 instead.
                    let mut i = r.len().saturating_sub(1);
                    while up && i > 0 {
                        up = r[i] == b'9';
                        if up {
                            r[i] = b'0';
                        } else {
                            r[i] += 1;
                        }
                        i -= 1;
                    }
                    if up {
                        r.insert(0, b'1');
                        d += 1;
                    }
                }
                d -= 1;
            }
        }

        let mut result = Decimal::empty();
        result.set_value_decimal(&r)?;
        result.decimal = len(&r) - d;
        result.negative = self.negative != other.negative;
        result.precision = prec;
        Ok(result)
    }
}

fn count_significants(value: &[u8]) -> i32 {
    let digits: Vec<u8> = value.iter().copied().filter(|&c| c != b'.').collect();
    let start = digits
        .iter()
        .position(|&c| c != b'0')
        .unwrap_or(digits.len());
    len(&digits[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(d("0.640").as_decimal(), "0.640");
        assert_eq!(d("-12.5").as_decimal(), "-12.5");
        assert_eq!(d("007").as_decimal(), "7");
        assert_eq!(d("1e3").as_decimal(), "1000");
        assert_eq!(d("1e-2").as_decimal(), "0.01");
        assert_eq!(d("980665e-5").as_decimal(), "9.80665");
        assert_eq!(d("0.000").as_decimal(), "0.000");
        assert!(Decimal::parse("1.").is_err());
        assert!(Decimal::parse("1a").is_err());
        assert!(Decimal::parse("e5").is_err());
    }

    #[test]
    fn multiplication_keeps_reference_precision() {
        // Whole numbers are exact; otherwise the lower precision wins.
        assert_eq!(d("2").multiply(&d("2")).unwrap().as_decimal(), "4");
        assert_eq!(d("2.0").multiply(&d("2.0")).unwrap().as_decimal(), "4.0");
        assert_eq!(d("2.00").multiply(&d("2.0")).unwrap().as_decimal(), "4.0");
        assert_eq!(d("81.8").multiply(&d("1e3")).unwrap().as_decimal(), "81800");
        assert_eq!(d("-1.5").multiply(&d("2")).unwrap().as_decimal(), "-3.0");
    }

    /// Cases from the reference implementation's own decimal tests.
    #[test]
    fn reference_multiplication_cases() {
        for (a, b, expected) in [
            ("2", "2", "4"),
            ("2", "0.5", "1"),
            ("0", "0", "0"),
            ("0", "1", "0"),
            ("4", "4", "16"),
            ("20", "20", "400"),
            ("200", "20", "4000"),
            ("400", "400", "160000"),
            ("2.0", "2.0", "4.0"),
            ("2.00", "2.0", "4.0"),
            ("2.0", "0.2", "0.4"),
            ("2.0", "0.20", "0.40"),
            ("13", "13", "169"),
            ("12", "89", "1068"),
            ("1234", "6789", "8377626"),
            ("10000", "0.0001", "1"),
            ("10000", "0.00010", "1.0"),
            ("10000", "0.000100", "1.00"),
            ("10000", "0.0001000", "1.000"),
            ("10000", "0.00010000", "1.0000"),
            ("10000", "0.000100000", "1.00000"),
            ("10000.0", "0.000100000", "1.00000"),
            ("10000.0", "0.0001000000", "1.00000"),
            ("10000.0", "0.00010000000", "1.00000"),
            ("2", "-2", "-4"),
            ("-2", "2", "-4"),
            ("-2", "-2", "4"),
            (
                "35328734682734",
                "2349834295876423",
                "83016672387407213199375780482",
            ),
            (
                "35328734682734000000000",
                "2349834295876423000000000",
                "83016672387407213199375780482000000000000000000",
            ),
            (
                "3532873468.2734",
                "23498342958.76423",
                "83016672387407213199.375780482",
            ),
        ] {
            assert_eq!(
                d(a).multiply(&d(b)).unwrap().as_decimal(),
                expected,
                "{a} * {b}"
            );
        }
    }

    /// Cases from the reference implementation's own decimal tests.
    #[test]
    fn reference_division_cases() {
        for (a, b, expected) in [
            ("500", "4", "125"),
            ("1260257", "37", "34061"),
            ("127", "4", "31.75"),
            ("10", "10", "1"),
            ("1", "1", "1"),
            ("10", "3", "3.3"),
            ("10.0", "3", "3.33"),
            ("10.00", "3", "3.333"),
            ("10.00", "3.0", "3.3"),
            ("100", "1", "100"),
            ("1000", "10", "100"),
            ("100001", "10", "10000.1"),
            ("100", "10", "10"),
            ("1", "10", "0.1"),
            ("1", "15", "0.067"),
            ("1.0", "15", "0.067"),
            ("1.00", "15.0", "0.0667"),
            ("1", "0.1", "10"),
            ("1", "0.10", "10"),
            ("1", "0.010", "100"),
            ("1", "1.5", "0.67"),
            ("1.0", "1.5", "0.67"),
            ("10", "1.5", "6.7"),
            ("-1", "1", "-1"),
            ("1", "-1", "-1"),
            ("-1", "-1", "1"),
            ("2", "2", "1"),
            ("20", "2", "10"),
            ("22", "2", "11"),
            (
                "83016672387407213199375780482",
                "2349834295876423",
                "35328734682734",
            ),
            (
                "83016672387407213199375780482000000000000000000",
                "2349834295876423000000000",
                "35328734682734000000000",
            ),
            (
                "83016672387407213199.375780482",
                "23498342958.76423",
                "3532873468.2734",
            ),
        ] {
            assert_eq!(
                d(a).divide(&d(b)).unwrap().as_decimal(),
                expected,
                "{a} / {b}"
            );
        }
    }

    /// Text round trips from the reference implementation's own tests.
    #[test]
    fn reference_text_cases() {
        for (text, expected) in [
            ("1e0", "1"),
            ("-0", "0"),
            ("0e0", "0"),
            ("1.0e1", "10"),
            ("-9.9e1", "-99"),
            ("1.11e1", "11.1"),
            ("00.1", "0.1"),
            (".1", "0.1"),
            ("-.1", "-0.1"),
            ("1.00e0", "1.00"),
            ("0.0e0", "0.0"),
            ("0.0000", "0.0000"),
            ("1.00e-1", "0.100"),
            ("1.00e2", "100"),
            ("000.0001", "0.0001"),
            ("1e-17", "0.00000000000000001"),
            ("1.000000000000001e14", "100000000000000.1"),
        ] {
            assert_eq!(d(text).as_decimal(), expected, "{text}");
        }
    }

    #[test]
    fn division_matches_reference_examples() {
        assert_eq!(d("10.0").divide(&d("3")).unwrap().as_decimal(), "3.33");
        assert_eq!(d("10.00").divide(&d("3")).unwrap().as_decimal(), "3.333");
        assert_eq!(d("10.00").divide(&d("3.0")).unwrap().as_decimal(), "3.3");
        assert_eq!(d("10").divide(&d("3.0")).unwrap().as_decimal(), "3.3");
        assert_eq!(d("1").divide(&d("60")).unwrap().as_decimal(), "0.017");
        assert_eq!(d("10").divide(&d("4")).unwrap().as_decimal(), "2.5");
        assert!(d("1").divide(&d("0")).is_err());
    }
}
