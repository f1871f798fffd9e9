//! Exact decimals as scaled `i128`s: FHIRPath Decimal arithmetic without floating point.

use std::cmp::Ordering;
use std::fmt;

/// `mant × 10^-scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dec {
    pub mant: i128,
    pub scale: u32,
}

/// Digits kept after the point by division (FHIRPath asks for at least 8).
const DIV_SCALE: u32 = 8;
/// Largest scale kept; `i128` holds 38 digits.
const MAX_SCALE: u32 = 30;

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl Dec {
    pub(crate) fn from_i64(i: i64) -> Dec {
        Dec {
            mant: i128::from(i),
            scale: 0,
        }
    }

    /// Parses JSON/FHIRPath number text (`-1.50`, `2`, `1e-3`); `None` if it is not one or
    /// does not fit.
    pub(crate) fn parse(text: &str) -> Option<Dec> {
        let (neg, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (num, exp) = match rest.find(['e', 'E']) {
            Some(p) => (&rest[..p], rest[p + 1..].parse::<i32>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if num.contains('.') && frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut mant: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mant = mant.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        let mut scale = i64::try_from(frac.len()).ok()? - i64::from(exp);
        if scale < 0 {
            mant = mant.checked_mul(pow10(u32::try_from(-scale).ok()?)?)?;
            scale = 0;
        }
        let scale = u32::try_from(scale).ok().filter(|s| *s <= 38)?;
        Some(Dec {
            mant: if neg { -mant } else { mant },
            scale,
        })
    }

    /// The same value with `scale` digits after the point (`scale` ≥ the current one).
    pub(crate) fn rescale(self, scale: u32) -> Option<Dec> {
        let factor = pow10(scale.checked_sub(self.scale)?)?;
        Some(Dec {
            mant: self.mant.checked_mul(factor)?,
            scale,
        })
    }

    fn aligned(self, other: Dec) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        Some((self.rescale(scale)?.mant, other.rescale(scale)?.mant, scale))
    }

    pub(crate) fn add(self, other: Dec) -> Option<Dec> {
        let (a, b, scale) = self.aligned(other)?;
        Some(Dec {
            mant: a.checked_add(b)?,
            scale,
        })
    }

    pub(crate) fn sub(self, other: Dec) -> Option<Dec> {
        self.add(Dec {
            mant: other.mant.checked_neg()?,
            scale: other.scale,
        })
    }

    pub(crate) fn mul(self, other: Dec) -> Option<Dec> {
        let d = Dec {
            mant: self.mant.checked_mul(other.mant)?,
            scale: self.scale + other.scale,
        };
        if d.scale > MAX_SCALE {
            return d.round(MAX_SCALE);
        }
        Some(d)
    }

    /// `self / other` with at least 8 digits after the point, trailing zeros removed;
    /// `Some(None)` for division by zero (FHIRPath gives empty), `None` on overflow.
    pub(crate) fn div(self, other: Dec) -> Option<Option<Dec>> {
        if other.mant == 0 {
            return Some(None);
        }
        let scale = DIV_SCALE.max(self.scale).max(other.scale).min(MAX_SCALE);
        // self/other = (a / b) × 10^(other.scale - self.scale); one extra digit to round.
        let shift = i64::from(scale) + 1 + i64::from(other.scale) - i64::from(self.scale);
        let num = self.mant.checked_mul(pow10(u32::try_from(shift).ok()?)?)?;
        let q = num / other.mant;
        let rounded = Dec {
            mant: q,
            scale: scale + 1,
        }
        .round(scale)?;
        Some(Some(rounded.trim()))
    }

    /// Truncated division (`div`); `Some(None)` for division by zero.
    pub(crate) fn int_div(self, other: Dec) -> Option<Option<i128>> {
        if other.mant == 0 {
            return Some(None);
        }
        let (a, b, _) = self.aligned(other)?;
        Some(Some(a / b))
    }

    /// Remainder of truncated division (`mod`); `Some(None)` for division by zero.
    pub(crate) fn modulo(self, other: Dec) -> Option<Option<Dec>> {
        if other.mant == 0 {
            return Some(None);
        }
        let (a, b, scale) = self.aligned(other)?;
        Some(Some(Dec { mant: a % b, scale }))
    }

    /// Rounded half away from zero to `scale` digits (`scale` ≤ the current one).
    fn round(self, scale: u32) -> Option<Dec> {
        let factor = pow10(self.scale.checked_sub(scale)?)?;
        let q = self.mant / factor;
        let r = self.mant % factor;
        let q = if r.unsigned_abs() * 2 >= factor.unsigned_abs() {
            q + self.mant.signum()
        } else {
            q
        };
        Some(Dec { mant: q, scale })
    }

    /// Without trailing zeros after the point.
    pub(crate) fn trim(mut self) -> Dec {
        while self.scale > 0 && self.mant % 10 == 0 {
            self.mant /= 10;
            self.scale -= 1;
        }
        self
    }

    /// Numeric order; exact where the values align in `i128`, else by their magnitudes.
    pub(crate) fn cmp(self, other: Dec) -> Ordering {
        match self.aligned(other) {
            Some((a, b, _)) => a.cmp(&b),
            None => {
                let f = |d: Dec| d.mant as f64 / 10f64.powi(d.scale as i32);
                f(self).partial_cmp(&f(other)).unwrap_or(Ordering::Equal)
            }
        }
    }
}

impl fmt::Display for Dec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mant.unsigned_abs().to_string();
        let sign = if self.mant < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (i, d) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{i}.{d}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dec {
        Dec::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn parses_and_prints_exactly() {
        for s in ["1.50", "0.05", "-0.95", "2", "-12.000", "0"] {
            assert_eq!(d(s).to_string(), s);
        }
        assert_eq!(d("1e2").to_string(), "100");
        assert_eq!(d("1.5E-2").to_string(), "0.015");
        for bad in [
            "",
            "-",
            "1.",
            ".5",
            "1..2",
            "a",
            "1e",
            "--1",
            "1e99999999999",
        ] {
            assert_eq!(Dec::parse(bad), None, "{bad}");
        }
        assert_eq!(Dec::parse("1e400"), None);
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(d("2").add(d("3")).map(|x| x.to_string()), Some("5".into()));
        assert_eq!(
            d("0.1").add(d("0.2")).map(|x| x.to_string()),
            Some("0.3".into())
        );
        assert_eq!(
            d("3").sub(d("2.50")).map(|x| x.to_string()),
            Some("0.50".into())
        );
        assert_eq!(
            d("1.5").mul(d("-2")).map(|x| x.to_string()),
            Some("-3.0".into())
        );
        let div = |a: &str, b: &str| d(a).div(d(b)).flatten().map(|x| x.to_string());
        assert_eq!(div("3", "2"), Some("1.5".into()));
        assert_eq!(div("1", "3"), Some("0.33333333".into()));
        assert_eq!(div("2", "3"), Some("0.66666667".into()));
        assert_eq!(div("-2", "3"), Some("-0.66666667".into()));
        assert_eq!(div("6", "3"), Some("2".into()));
        assert_eq!(d("1").div(d("0.0")), Some(None));
        assert_eq!(d("7").int_div(d("2")), Some(Some(3)));
        assert_eq!(d("-7").int_div(d("2")), Some(Some(-3)));
        assert_eq!(
            d("7.5").modulo(d("2")).flatten().map(|x| x.to_string()),
            Some("1.5".into())
        );
        let big = Dec {
            mant: i128::MAX,
            scale: 0,
        };
        assert_eq!(big.add(big), None);
    }

    #[test]
    fn compares_numerically() {
        assert_eq!(d("1.5").cmp(d("1.50")), Ordering::Equal);
        assert_eq!(d("1.49").cmp(d("1.5")), Ordering::Less);
        assert_eq!(d("-1").cmp(d("-2")), Ordering::Greater);
        let big = Dec {
            mant: i128::MAX,
            scale: 0,
        };
        let small = Dec { mant: 1, scale: 30 };
        assert_eq!(big.cmp(small), Ordering::Greater);
    }
}
