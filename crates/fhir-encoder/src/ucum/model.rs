//! The UCUM model built once from the essence tables: prefix factors as
//! decimals and a code index over base and defined units.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::UcumError;
use super::decimal::Decimal;
use super::essence::{Definition, UnitDef};
use super::table::{BASE_UNITS, PREFIXES, UNITS};

/// A unit found by code: a base unit or a defined unit (index into its table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnitRef {
    Base(usize),
    Defined(usize),
}

/// A defined unit's value as the reference reads it from the essence: text
/// with a decimal point is exact (precision 24); other text keeps the
/// precision it shows. Special units carry no value.
pub(super) enum UnitValue {
    Linear { unit: &'static str, value: Decimal },
    Special { units: Option<&'static str> },
}

pub(super) struct Model {
    prefixes: Vec<Decimal>,
    index: HashMap<&'static str, UnitRef>,
    values: Vec<UnitValue>,
}

/// Exact constants are read with this precision, as in the reference.
const EXACT_PRECISION: i32 = 24;

impl Model {
    fn build() -> Result<Model, UcumError> {
        let prefixes = PREFIXES
            .iter()
            .map(|p| Decimal::parse_with_precision(p.value, EXACT_PRECISION))
            .collect::<Result<Vec<_>, _>>()?;
        let mut index = HashMap::with_capacity(BASE_UNITS.len() + UNITS.len());
        for (i, code) in BASE_UNITS.iter().enumerate() {
            index.insert(*code, UnitRef::Base(i));
        }
        for (i, unit) in UNITS.iter().enumerate() {
            index.entry(unit.code).or_insert(UnitRef::Defined(i));
        }
        let values = UNITS
            .iter()
            .map(|u| match u.definition {
                Definition::Linear { unit, value } => {
                    let value = if value.contains('.') {
                        Decimal::parse_with_precision(value, EXACT_PRECISION)?
                    } else {
                        Decimal::parse(value)?
                    };
                    Ok(UnitValue::Linear { unit, value })
                }
                Definition::Special { units } => Ok(UnitValue::Special { units }),
            })
            .collect::<Result<Vec<_>, UcumError>>()?;
        Ok(Model {
            prefixes,
            index,
            values,
        })
    }

    /// The shared model; `None` only if the built-in tables were malformed,
    /// which the tests rule out.
    pub(super) fn get() -> Option<&'static Model> {
        static MODEL: OnceLock<Option<Model>> = OnceLock::new();
        MODEL.get_or_init(|| Model::build().ok()).as_ref()
    }

    pub(super) fn unit(&self, code: &str) -> Option<UnitRef> {
        self.index.get(code).copied()
    }

    fn is_prefixable(&self, unit: UnitRef) -> bool {
        match unit {
            UnitRef::Base(_) => true,
            UnitRef::Defined(i) => UNITS.get(i).is_some_and(|u| u.metric),
        }
    }

    /// Splits `sym` into the first prefix (in essence order) whose remainder
    /// is a base or metric unit.
    pub(super) fn split_prefix(&self, sym: &str) -> Option<(usize, UnitRef)> {
        PREFIXES.iter().enumerate().find_map(|(i, p)| {
            let rest = sym.strip_prefix(p.code)?;
            let unit = self.unit(rest)?;
            self.is_prefixable(unit).then_some((i, unit))
        })
    }

    pub(super) fn prefix_value(&self, prefix: usize) -> Option<&Decimal> {
        self.prefixes.get(prefix)
    }

    pub(super) fn base_code(&self, base: usize) -> &'static str {
        BASE_UNITS.get(base).copied().unwrap_or("")
    }

    pub(super) fn defined(&self, i: usize) -> Option<(&'static UnitDef, &UnitValue)> {
        Some((UNITS.get(i)?, self.values.get(i)?))
    }
}
