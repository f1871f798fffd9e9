//! Reduction of a parsed unit term to a factor times a product of base-unit
//! powers, in the reference converter's order of operations (the order
//! decides the precision of the factor).

use super::UcumError;
use super::decimal::Decimal;
use super::expr::{self, Component, Operator, Term};
use super::model::{Model, UnitRef, UnitValue};

/// Deepest chain of unit definitions followed; the essence needs fewer than 10.
const MAX_DEPTH: u32 = 32;

/// `value` times the product of `base^exponent`. `value` is `None` when a
/// special (non-linear) unit took part: such units have no factor.
#[derive(Clone, Debug)]
pub(super) struct Canonical {
    pub value: Option<Decimal>,
    /// (base unit index, exponent), sorted by base unit code, no zero exponents.
    pub units: Vec<(usize, i32)>,
}

impl Canonical {
    fn one() -> Canonical {
        Canonical {
            value: Some(Decimal::from_int(1)),
            units: Vec::new(),
        }
    }

    fn multiply_value(&mut self, by: Option<&Decimal>) -> Result<(), UcumError> {
        self.value = match (&self.value, by) {
            (Some(v), Some(by)) => Some(v.multiply(by)?),
            _ => None,
        };
        Ok(())
    }

    fn divide_value(&mut self, by: Option<&Decimal>) -> Result<(), UcumError> {
        self.value = match (&self.value, by) {
            (Some(v), Some(by)) => Some(v.divide(by)?),
            _ => None,
        };
        Ok(())
    }

    /// The canonical unit code: base codes with exponents joined by `.`,
    /// empty for a dimensionless unit.
    pub(super) fn code(&self, model: &Model) -> String {
        let mut out = String::new();
        for (i, &(base, exponent)) in self.units.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(model.base_code(base));
            if exponent != 1 {
                out.push_str(&exponent.to_string());
            }
        }
        out
    }
}

pub(super) fn canonicalise(model: &Model, code: &str) -> Result<Canonical, UcumError> {
    let term = expr::parse(model, code)?;
    normalise_term(model, &term, 0)
}

fn normalise_term(model: &Model, term: &Term, depth: u32) -> Result<Canonical, UcumError> {
    if depth > MAX_DEPTH {
        return Err(UcumError::TooDeep);
    }
    let mut result = Canonical::one();
    let mut div = false;
    let mut t = Some(term);
    while let Some(current) = t {
        match &current.comp {
            Some(Component::Term(inner)) => {
                let temp = normalise_term(model, inner, depth + 1)?;
                absorb(&mut result, temp, div)?;
            }
            Some(Component::Factor(f)) => {
                let f = Decimal::from_int(i64::from(*f));
                if div {
                    result.divide_value(Some(&f))?;
                } else {
                    result.multiply_value(Some(&f))?;
                }
            }
            Some(Component::Symbol {
                prefix,
                unit,
                exponent,
            }) => {
                let temp = normalise_symbol(model, *prefix, *unit, *exponent, depth)?;
                absorb(&mut result, temp, div)?;
            }
            None => {}
        }
        div = current.op == Some(Operator::Division);
        t = current.term.as_deref();
    }

    // Merge repeated bases into their first occurrence, drop zero powers, and
    // order by code.
    let mut merged: Vec<(usize, i32)> = Vec::with_capacity(result.units.len());
    for &(base, exponent) in &result.units {
        match merged.iter_mut().find(|(b, _)| *b == base) {
            Some(entry) => entry.1 += exponent,
            None => merged.push((base, exponent)),
        }
    }
    merged.retain(|&(_, e)| e != 0);
    merged.sort_by(|a, b| model.base_code(a.0).cmp(model.base_code(b.0)));
    result.units = merged;
    Ok(result)
}

fn absorb(result: &mut Canonical, mut temp: Canonical, div: bool) -> Result<(), UcumError> {
    if div {
        result.divide_value(temp.value.as_ref())?;
        for unit in &mut temp.units {
            unit.1 = -unit.1;
        }
    } else {
        result.multiply_value(temp.value.as_ref())?;
    }
    result.units.extend(temp.units);
    Ok(())
}

fn normalise_symbol(
    model: &Model,
    prefix: Option<usize>,
    unit: UnitRef,
    exponent: i32,
    depth: u32,
) -> Result<Canonical, UcumError> {
    let mut result = Canonical::one();
    match unit {
        UnitRef::Base(base) => result.units.push((base, exponent)),
        UnitRef::Defined(i) => {
            let can = expand_defined_unit(model, i, depth)?;
            result
                .units
                .extend(can.units.iter().map(|&(b, e)| (b, e * exponent)));
            repeat(&mut result, can.value.as_ref(), exponent)?;
        }
    }
    if let Some(prefix) = prefix {
        let value = model.prefix_value(prefix).ok_or(UcumError::Arithmetic)?;
        repeat(&mut result, Some(value), exponent)?;
    }
    Ok(result)
}

/// Multiplies by `value^exponent` one factor at a time (dividing for
/// negative exponents), as the reference does.
fn repeat(result: &mut Canonical, value: Option<&Decimal>, exponent: i32) -> Result<(), UcumError> {
    for _ in 0..exponent.unsigned_abs() {
        if exponent > 0 {
            result.multiply_value(value)?;
        } else {
            result.divide_value(value)?;
        }
    }
    Ok(())
}

fn expand_defined_unit(model: &Model, i: usize, depth: u32) -> Result<Canonical, UcumError> {
    let (def, value) = model.defined(i).ok_or(UcumError::Arithmetic)?;
    let (unit, factor) = match value {
        UnitValue::Linear { unit, value } => (*unit, Some(value)),
        UnitValue::Special { units: Some(units) } => (*units, None),
        UnitValue::Special { units: None } => {
            return Err(UcumError::UnsupportedSpecialUnit(def.code.to_owned()));
        }
    };
    let term = expr::parse(model, unit)?;
    let mut result = normalise_term(model, &term, depth + 1)?;
    result.multiply_value(factor)?;
    Ok(result)
}
