//! The shape of the UCUM essence tables (`table.rs`, generated from the essence). Special units
//! carry the canonical unit expression the reference library assigns them instead of their
//! conversion functions. Values are kept as the exact decimal text of the essence because the
//! precision of that text decides the precision of canonical values.

/// A prefix: code and exact factor text (always read with precision 24).
pub(super) struct PrefixDef {
    pub code: &'static str,
    pub value: &'static str,
}

/// How a defined unit reduces to other units.
pub(super) enum Definition {
    /// `value` times the unit expression `unit`.
    Linear {
        unit: &'static str,
        value: &'static str,
    },
    /// A non-linear unit (Cel, [degF], [pH], B, ...). `units` is the unit
    /// expression whose canonical form names it, when one is known; its value
    /// has no multiplicative factor, so canonical values are absent.
    Special { units: Option<&'static str> },
}

/// A defined (non-base) unit.
pub(super) struct UnitDef {
    pub code: &'static str,
    pub metric: bool,
    pub definition: Definition,
}
