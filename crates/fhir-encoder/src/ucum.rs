//! UCUM canonicalisation of Quantity values, as Pathling stores it in
//! `_value_canonicalized` / `_code_canonicalized`.
//!
//! A unit code is parsed as a UCUM expression (`.`, `/`, exponents, leading
//! `/`, parentheses, annotations `{..}`, factors such as `10*3`), every atom
//! is reduced through the essence definitions to the seven base units, and
//! the quantity's value is multiplied by the resulting factor. The decimal
//! arithmetic reproduces the reference UCUM library that Pathling uses, digit
//! for digit, because the precision it tracks becomes the stored scale (so
//! `186 cm` is `1.8600000000000000 m` while `170.3 cm` is `1.703 m`).
//! The result is then fitted into Decimal128(38, 0) plus a scale as Pathling
//! does: rounded half-up to 38 significant digits when that keeps the scale
//! non-negative, otherwise absent.
//!
//! Special (non-linear) units such as `Cel`, `[degF]` and `[pH]` have no
//! multiplicative factor: like Pathling, their canonical code is known
//! (`K`, `K`, `m-3`) but the canonical value is absent; see
//! [`canonicalize_fields`].

mod convert;
mod decimal;
mod essence;
mod expr;
mod model;
mod table;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use decimal::Decimal;
use model::Model;

/// A quantity converted to canonical UCUM units: `unscaled * 10^-scale` in unit `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalQuantity {
    /// Unscaled digits of the canonical value (fits Decimal128(38, 0)).
    pub unscaled: i128,
    /// Decimal scale of the canonical value.
    pub scale: i32,
    /// Canonical unit code, e.g. `m`, `g.m-3`, `s-1`, `1`.
    pub code: String,
}

/// The two canonical columns separately, as Pathling fills them: the code
/// can be known while the value is not (special units such as `Cel`, or a
/// value that does not fit Decimal128(38, 0)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalFields {
    /// `(unscaled, scale)` of the canonical value.
    pub value: Option<(i128, i32)>,
    /// Canonical unit code.
    pub code: Option<String>,
}

/// Why a unit code or value could not be canonicalised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UcumError {
    /// The unit expression does not follow UCUM syntax.
    #[error("invalid UCUM expression: {0}")]
    Syntax(&'static str),
    /// An atom is neither a unit nor a prefixed metric unit.
    #[error("unknown UCUM unit '{0}'")]
    UnknownUnit(String),
    /// A special unit without a known canonical form.
    #[error("UCUM special unit '{0}' has no canonical form")]
    UnsupportedSpecialUnit(String),
    /// Unit definitions nest deeper than any valid definition does.
    #[error("UCUM unit definitions nest too deeply")]
    TooDeep,
    /// The value is not a decimal number.
    #[error("invalid decimal number")]
    InvalidNumber,
    /// A unit definition divides by zero (e.g. the factor `0` in a divisor).
    #[error("division by zero in UCUM expression")]
    DivisionByZero,
    /// An internal arithmetic invariant failed.
    #[error("decimal arithmetic failed")]
    Arithmetic,
    /// The built-in unit tables could not be loaded.
    #[error("UCUM tables unavailable")]
    Tables,
}

/// Code Pathling stores for a dimensionless canonical unit.
const NO_UNIT_CODE: &str = "1";
/// Decimal128 precision of `_value_canonicalized.value`.
const MAX_PRECISION: usize = 38;
/// Longest plain decimal text accepted for a value.
const MAX_VALUE_DIGITS: usize = 400;
/// Codes remembered per thread before the memo is reset.
const MEMO_CAPACITY: usize = 1024;

/// Canonicalises `value` (a FHIR JSON decimal literal, e.g. `"134.8"`) in UCUM unit `code`.
/// Returns `None` when the unit is unknown or not convertible.
pub fn canonicalize(value: &str, code: &str) -> Option<CanonicalQuantity> {
    let fields = canonicalize_fields(value, code);
    let (unscaled, scale) = fields.value?;
    Some(CanonicalQuantity {
        unscaled,
        scale,
        code: fields.code?,
    })
}

/// Canonicalises `value` in unit `code`, returning the canonical value and
/// code separately as Pathling stores them (`Cel` gives code `K` and no
/// value). Both are `None` when the code is empty, unknown or invalid, or the
/// value is not a decimal number.
pub fn canonicalize_fields(value: &str, code: &str) -> CanonicalFields {
    const NONE: CanonicalFields = CanonicalFields {
        value: None,
        code: None,
    };
    let memo = canonical_unit_memo(code);
    let Ok(unit) = memo.as_ref() else {
        return NONE;
    };
    let Some(plain) = plain_decimal(value) else {
        return NONE;
    };
    let Ok(value) = Decimal::parse(&plain) else {
        return NONE;
    };
    let canonical_value = match &unit.factor {
        Some(factor) => value
            .multiply(factor)
            .ok()
            .and_then(|v| fit_decimal128(&v.as_decimal())),
        None => None,
    };
    CanonicalFields {
        value: canonical_value,
        code: Some(unit.code.clone()),
    }
}

/// The canonical unit code of a UCUM expression (`"mg/dL"` → `"g.m-3"`,
/// `"{score}"` → `"1"`), or why it has none.
pub fn canonical_unit(code: &str) -> Result<String, UcumError> {
    match canonical_unit_memo(code).as_ref() {
        Ok(unit) => Ok(unit.code.clone()),
        Err(e) => Err(e.clone()),
    }
}

/// A unit's canonical factor and code.
struct CanonicalUnit {
    factor: Option<Decimal>,
    code: String,
}

fn canonical_unit_uncached(code: &str) -> Result<CanonicalUnit, UcumError> {
    // An absent code is no unit; the parser would read it as the factor 1.
    if code.is_empty() {
        return Err(UcumError::Syntax("empty unit code"));
    }
    let model = Model::get().ok_or(UcumError::Tables)?;
    let canonical = convert::canonicalise(model, code)?;
    let mut unit_code = canonical.code(model);
    if unit_code.is_empty() {
        unit_code = NO_UNIT_CODE.to_owned();
    }
    Ok(CanonicalUnit {
        factor: canonical.value,
        code: unit_code,
    })
}

/// Canonical units are reused across rows: a data set has few distinct codes.
fn canonical_unit_memo(code: &str) -> Rc<Result<CanonicalUnit, UcumError>> {
    thread_local! {
        static MEMO: RefCell<HashMap<String, Rc<Result<CanonicalUnit, UcumError>>>> =
            RefCell::new(HashMap::new());
    }
    MEMO.with(|memo| {
        if let Some(hit) = memo.borrow().get(code) {
            return Rc::clone(hit);
        }
        let result = Rc::new(canonical_unit_uncached(code));
        let mut memo = memo.borrow_mut();
        if memo.len() >= MEMO_CAPACITY {
            memo.clear();
        }
        memo.insert(code.to_owned(), Rc::clone(&result));
        result
    })
}

/// Rewrites a JSON decimal literal as Java's `BigDecimal.toPlainString` does
/// (Pathling hands that text to the UCUM library): exponent expanded, sign
/// and leading zeros normalised, trailing zeros kept.
fn plain_decimal(literal: &str) -> Option<String> {
    let bytes = literal.as_bytes();
    let (negative, rest) = match bytes.first()? {
        b'-' => (true, &bytes[1..]),
        b'+' => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mantissa, exponent) = match rest.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => {
            let text = std::str::from_utf8(&rest[i + 1..]).ok()?;
            let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            (&rest[..i], text.parse::<i64>().ok()?)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&c| c == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    if int_part.len() + frac_part.len() == 0
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return None;
    }
    let mut unscaled: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let first = unscaled.iter().position(|&c| c != b'0');
    match first {
        Some(i) => {
            unscaled.drain(..i);
        }
        None => unscaled = b"0".to_vec(),
    }
    let is_zero = first.is_none();
    let scale = i64::try_from(frac_part.len()).ok()?.checked_sub(exponent)?;
    let ulen = i64::try_from(unscaled.len()).ok()?;
    if scale.unsigned_abs() + unsigned(ulen) > MAX_VALUE_DIGITS as u64 {
        return None;
    }
    let mut out = String::with_capacity(literal.len() + 8);
    if negative && !is_zero {
        out.push('-');
    }
    let digits = std::str::from_utf8(&unscaled).ok()?;
    if scale <= 0 {
        out.push_str(digits);
        if !is_zero {
            out.extend(std::iter::repeat_n('0', usize::try_from(-scale).ok()?));
        }
    } else {
        let point = ulen - scale;
        if point > 0 {
            let point = usize::try_from(point).ok()?;
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', usize::try_from(-point).ok()?));
            out.push_str(digits);
        }
    }
    Some(out)
}

fn unsigned(v: i64) -> u64 {
    v.unsigned_abs()
}

/// Fits plain decimal text into Decimal128(38, 0) plus scale the way
/// Pathling's flexible decimal does: more than 38 significant digits are
/// rounded half-up by reducing the scale, and a value that would need a
/// negative scale is absent.
fn fit_decimal128(text: &str) -> Option<(i128, i32)> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = body.split_once('.').unwrap_or((body, ""));
    let mut digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut scale = i64::try_from(frac_part.len()).ok()?;
    let first = digits
        .iter()
        .position(|&c| c != b'0')
        .unwrap_or(digits.len() - 1);
    digits.drain(..first);
    if digits.len() > MAX_PRECISION {
        let excess = digits.len() - MAX_PRECISION;
        scale -= i64::try_from(excess).ok()?;
        if scale < 0 {
            return None;
        }
        let round_up = digits[MAX_PRECISION] >= b'5';
        digits.truncate(MAX_PRECISION);
        if round_up {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    // Carried past 38 nines: 10^38 does not fit Decimal128(38, 0).
                    return None;
                }
                i -= 1;
                if digits[i] == b'9' {
                    digits[i] = b'0';
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
    }
    let magnitude: i128 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    let unscaled = if negative { -magnitude } else { magnitude };
    Some((unscaled, i32::try_from(scale).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(value: &str, code: &str) -> Option<(i128, i32, String)> {
        canonicalize(value, code).map(|c| (c.unscaled, c.scale, c.code))
    }

    fn some(unscaled: i128, scale: i32, code: &str) -> Option<(i128, i32, String)> {
        Some((unscaled, scale, code.to_owned()))
    }

    #[test]
    fn tables_load() {
        assert!(Model::get().is_some());
        for unit in table::UNITS {
            assert!(
                Model::get().and_then(|m| m.unit(unit.code)).is_some(),
                "{}",
                unit.code
            );
        }
    }

    #[test]
    fn golden_examples() {
        assert_eq!(q("0.64", "mg/dL"), some(64, 1, "g.m-3"));
        assert_eq!(q("170.3", "cm"), some(1703, 3, "m"));
        assert_eq!(q("134.8", "cm"), some(1348, 3, "m"));
        assert_eq!(q("186", "cm"), some(18600000000000000, 16, "m"));
        assert_eq!(q("15", "/min"), some(255, 3, "s-1"));
        assert_eq!(q("81.8", "kg"), some(81800, 0, "g"));
        assert_eq!(
            q("87", "mm[Hg]"),
            some(115990140000000000000000, 16, "g.m-1.s-2")
        );
        assert_eq!(
            q("107.17", "mmol/L"),
            some(64539239013900000000000000, 0, "m-3")
        );
        assert_eq!(q("3", "{score}"), some(3, 0, "1"));
        assert_eq!(q("39.346", "%"), some(39346, 5, "1"));
        assert_eq!(q("92.934", "fL"), some(92934, 21, "m3"));
        assert_eq!(
            q("68.184", "mL/min"),
            some(11364000000000000000000022728, 34, "m3.s-1")
        );
        assert_eq!(
            q("24.24", "mL/min/{1.73_m2}"),
            some(404000000000000000000000808, 33, "m3.s-1")
        );
        assert_eq!(q("6.6415", "pH"), some(66415, 13, "C-2.g.m2"));
        assert_eq!(q("-3.1981", "{T-score}"), some(-31981, 4, "1"));
    }

    #[test]
    fn golden_code_mappings() {
        for (code, canonical) in [
            ("mg/dL", "g.m-3"),
            ("/min", "s-1"),
            ("mmol/L", "m-3"),
            ("cm", "m"),
            ("{score}", "1"),
            ("kg", "g"),
            ("kg/m2", "g.m-2"),
            ("%", "1"),
            ("fL", "m3"),
            ("g/dL", "g.m-3"),
            ("10*3/uL", "m-3"),
            ("U/L", "m-3.s-1"),
            ("pg", "g"),
            ("10*6/uL", "m-3"),
            ("kU/L", "m-3.s-1"),
            ("g/L", "g.m-3"),
            ("mL/min", "m3.s-1"),
            ("Cel", "K"),
            ("mL/min/{1.73_m2}", "m3.s-1"),
            ("mg/g", "1"),
            ("{count}", "1"),
            ("ng/mL", "g.m-3"),
            ("mm", "m"),
            ("{T-score}", "1"),
            ("{nominal}", "1"),
            ("mm[Hg]", "g.m-1.s-2"),
            // Read as pico-henry, as the reference parser does.
            ("pH", "C-2.g.m2"),
        ] {
            assert_eq!(canonical_unit(code).as_deref(), Ok(canonical), "{code}");
        }
        assert!(canonical_unit("(score)").is_err());
        assert!(canonical_unit("units").is_err());
    }

    #[test]
    fn special_units_have_code_but_no_value() {
        let cel = canonicalize_fields("37.99", "Cel");
        assert_eq!(cel.code.as_deref(), Some("K"));
        assert_eq!(cel.value, None);
        assert_eq!(canonicalize("37.99", "Cel"), None);
        assert_eq!(canonical_unit("[degF]").as_deref(), Ok("K"));
        assert_eq!(canonical_unit("[pH]").as_deref(), Ok("m-3"));
        assert!(canonical_unit("[degRe]").is_err());
    }

    #[test]
    fn invalid_codes_are_none() {
        for code in [
            "(score)",
            "",
            "units",
            "mg/",
            "m]",
            "[m",
            "{open",
            "m..g",
            "x",
            "mg/dL)x",
            "µg",
            "m 2",
            "m2147483648",
            "m-2147483648",
            "m99",
        ] {
            assert_eq!(canonicalize_fields("1", code).code, None, "{code}");
        }
    }

    #[test]
    fn invalid_values_are_none() {
        for value in [
            "",
            "-",
            "abc",
            "1..2",
            "1e",
            "1e+",
            "0x10",
            "1,5",
            "1e99999",
            "1e-9223372036854775808",
            "1e9223372036854775807",
            "1e99999999999999999999",
        ] {
            assert_eq!(canonicalize(value, "mg"), None, "{value}");
        }
    }

    #[test]
    fn parser_cases() {
        let unit = |c: &str| canonical_unit(c).ok();
        assert_eq!(unit("kg.m/s2").as_deref(), Some("g.m.s-2"));
        assert_eq!(unit("N").as_deref(), Some("g.m.s-2"));
        assert_eq!(unit("/s").as_deref(), Some("s-1"));
        assert_eq!(unit("m2/s").as_deref(), Some("m2.s-1"));
        assert_eq!(unit("m-2").as_deref(), Some("m-2"));
        assert_eq!(unit("m+2").as_deref(), Some("m2"));
        // Exponents apply to atoms only, not to parenthesised terms.
        assert_eq!(unit("(m/s)2"), None);
        assert_eq!(unit("(m/s).s").as_deref(), Some("m"));
        assert_eq!(unit("kg/(m.s2)").as_deref(), Some("g.m-1.s-2"));
        assert_eq!(unit("10*3/uL").as_deref(), Some("m-3"));
        assert_eq!(unit("10^3").as_deref(), Some("1"));
        assert_eq!(unit("mg{creat}/dL").as_deref(), Some("g.m-3"));
        assert_eq!(unit("{cells}/uL").as_deref(), Some("m-3"));
        assert_eq!(unit("[IU]/L").as_deref(), Some("m-3"));
        assert_eq!(unit("U/L").as_deref(), Some("m-3.s-1"));
        assert_eq!(unit("m.m/m").as_deref(), Some("m"));
        assert_eq!(unit("s/s").as_deref(), Some("1"));
        assert_eq!(unit("[in_i]").as_deref(), Some("m"));
        assert_eq!(unit("[lb_av]").as_deref(), Some("g"));
        assert_eq!(unit("cm[H2O]").as_deref(), Some("g.m-1.s-2"));
        assert_eq!(unit("kat").as_deref(), Some("s-1"));
        assert_eq!(unit("J").as_deref(), Some("g.m2.s-2"));
        assert_eq!(unit("cal").as_deref(), Some("g.m2.s-2"));
        assert_eq!(unit("[drp]").as_deref(), Some("m3"));
        assert_eq!(unit("mo").as_deref(), Some("s"));
        assert_eq!(unit("dam").as_deref(), Some("m"));
        assert_eq!(unit("cd").as_deref(), Some("cd"));
        assert_eq!(unit("Pa").as_deref(), Some("g.m-1.s-2"));
    }

    #[test]
    fn conversion_factors() {
        assert_eq!(q("2", "[in_i]"), some(508, 4, "m"));
        assert_eq!(q("1", "h"), some(3600, 0, "s"));
        // Multiplication never rounds; it only drops surplus trailing zeros.
        assert_eq!(q("1.0", "[lb_av]"), some(45359237, 5, "g"));
        assert_eq!(q("1", "kPa"), some(1000000, 0, "g.m-1.s-2"));
        assert_eq!(q("0", "mg"), some(0, 0, "g"));
        // Whole numbers count as exact, so the prefix's precision of 24 shows.
        assert_eq!(q("1.5e2", "mg"), some(150000000000000000000000, 24, "g"));
        assert_eq!(q("-2.50", "kg"), some(-2500, 0, "g"));
    }

    #[test]
    fn plain_decimal_matches_big_decimal() {
        assert_eq!(plain_decimal("0.640").as_deref(), Some("0.640"));
        assert_eq!(plain_decimal("1e2").as_deref(), Some("100"));
        assert_eq!(plain_decimal("1.0e-2").as_deref(), Some("0.010"));
        assert_eq!(plain_decimal("123e-1").as_deref(), Some("12.3"));
        assert_eq!(plain_decimal("-0.0").as_deref(), Some("0.0"));
        assert_eq!(plain_decimal("-007").as_deref(), Some("-7"));
        assert_eq!(plain_decimal("0E+3").as_deref(), Some("0"));
        assert_eq!(plain_decimal(".5").as_deref(), Some("0.5"));
        assert_eq!(plain_decimal("5.").as_deref(), Some("5"));
    }

    #[test]
    fn fits_decimal128_like_pathling() {
        assert_eq!(fit_decimal128("0.64"), Some((64, 2)));
        assert_eq!(fit_decimal128("123000"), Some((123000, 0)));
        assert_eq!(
            fit_decimal128("0.010000000000000000000000000000000000000000000"),
            Some((10000000000000000000000000000000000000, 39))
        );
        assert_eq!(
            fit_decimal128(
                "0.01555555555555555555555555555555555555555555555555555555555555555555555555"
            ),
            Some((15555555555555555555555555555555555556, 39))
        );
        assert_eq!(fit_decimal128(&format!("1{}", "0".repeat(38))), None);
        assert_eq!(
            fit_decimal128(&format!("9{}", "0".repeat(37))),
            Some((9 * 10i128.pow(37), 0))
        );
        assert_eq!(fit_decimal128(&format!("0.{}", "9".repeat(40))), None);
    }

    /// A value comes only with a code, and a code is `1` or a product of base-unit powers.
    fn assert_canonical(fields: &CanonicalFields) {
        let Some(code) = &fields.code else {
            assert_eq!(fields.value, None);
            return;
        };
        if code == "1" {
            return;
        }
        for factor in code.split('.') {
            let base = factor.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            assert!(
                table::BASE_UNITS.contains(&base),
                "{code:?} is not a product of base units"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_gives_a_canonical_form_or_none(value in "\\PC{0,24}", code in "\\PC{0,24}") {
            assert_canonical(&canonicalize_fields(&value, &code));
        }

        #[test]
        fn unit_like_codes_give_a_canonical_form_or_none(
            value in "-?[0-9]{0,12}(\\.[0-9]{1,12})?([eE][-+]?[0-9]{1,3})?",
            code in "[-+/.()\\[\\]{}0-9a-zA-Z%*^'_]{0,20}",
        ) {
            assert_canonical(&canonicalize_fields(&value, &code));
        }

        #[test]
        fn expressions_of_real_atoms_reduce_to_base_units(
            parts in proptest::collection::vec(
                (0usize..table::UNITS.len(), 0usize..30, -3i32..4, proptest::bool::ANY),
                1..5,
            ),
            value in "-?[0-9]{1,6}(\\.[0-9]{1,6})?",
        ) {
            let mut code = String::new();
            for (i, &(unit, prefix, exponent, divide)) in parts.iter().enumerate() {
                if i > 0 || divide {
                    code.push(if divide { '/' } else { '.' });
                }
                if let Some(p) = table::PREFIXES.get(prefix) {
                    code.push_str(p.code);
                }
                code.push_str(table::UNITS[unit].code);
                if exponent != 1 {
                    code.push_str(&exponent.to_string());
                }
            }
            let fields = canonicalize_fields(&value, &code);
            if let Some(canonical) = fields.code {
                for atom in canonical.split('.') {
                    let base = atom.trim_end_matches(|c: char| c == '-' || c.is_ascii_digit());
                    proptest::prop_assert!(
                        base.is_empty() || table::BASE_UNITS.contains(&base),
                        "{code} -> {canonical}"
                    );
                }
            } else {
                proptest::prop_assert!(fields.value.is_none());
            }
        }

        #[test]
        fn prefixes_scale_exactly(mantissa in 1u32..1_000_000, frac in 0usize..4) {
            // k and m are exact powers of ten: kg and mg stay proportional to g.
            let text = if frac == 0 {
                mantissa.to_string()
            } else {
                let s = format!("{:0>width$}", mantissa, width = frac + 1);
                format!("{}.{}", &s[..s.len() - frac], &s[s.len() - frac..])
            };
            let g = canonicalize(&text, "g").unwrap();
            let kg = canonicalize(&text, "kg").unwrap();
            let as_f = |c: &CanonicalQuantity| c.unscaled as f64 / 10f64.powi(c.scale);
            proptest::prop_assert!((as_f(&kg) - 1000.0 * as_f(&g)).abs() <= 1e-9 * as_f(&kg).abs());
        }
    }
}
