//! FHIR type names: choice-element suffixes (`valueDateTime` → `dateTime`) and `ofType` tests.

/// FHIR R4 primitive types (lower-case first letter, as in `ofType(dateTime)`).
const PRIMITIVES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "integer64",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

/// FHIR R4 complex data types that a choice element can hold.
const COMPLEX: &[&str] = &[
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "Dosage",
    "Duration",
    "Expression",
    "HumanName",
    "Identifier",
    "Meta",
    "Money",
    "ParameterDefinition",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
];

/// Primitive types whose JSON form is a string and whose FHIRPath type is String.
const STRING_LIKE: &[&str] = &[
    "string",
    "code",
    "id",
    "uri",
    "url",
    "canonical",
    "oid",
    "uuid",
    "markdown",
    "base64Binary",
    "xhtml",
];

/// The FHIR type a choice key suffix names (`DateTime` → `dateTime`, `Quantity` → `Quantity`).
pub(crate) fn from_suffix(suffix: &str) -> Option<&'static str> {
    let first = suffix.chars().next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    if let Some(t) = COMPLEX.iter().find(|t| **t == suffix) {
        return Some(t);
    }
    PRIMITIVES.iter().copied().find(|t| {
        t.len() == suffix.len()
            && t.as_bytes()[0].eq_ignore_ascii_case(&suffix.as_bytes()[0])
            && t.as_bytes()[1..] == suffix.as_bytes()[1..]
    })
}

/// The canonical FHIR type for a name written in an expression (`FHIR.string`, `dateTime`,
/// `Quantity`), or the System type (`System.String` → `String`).
pub(crate) fn canonical(name: &str) -> Option<&'static str> {
    let name = name.strip_prefix("FHIR.").unwrap_or(name);
    if let Some(system) = name.strip_prefix("System.") {
        return SYSTEM.iter().copied().find(|t| *t == system);
    }
    PRIMITIVES
        .iter()
        .chain(COMPLEX)
        .chain(SYSTEM)
        .copied()
        .find(|t| *t == name)
}

/// FHIRPath System types.
const SYSTEM: &[&str] = &[
    "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity",
];

pub(crate) fn is_string_like(fhir_type: &str) -> bool {
    STRING_LIKE.contains(&fhir_type)
}

pub(crate) fn is_primitive(fhir_type: &str) -> bool {
    PRIMITIVES.contains(&fhir_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_name_types() {
        assert_eq!(from_suffix("DateTime"), Some("dateTime"));
        assert_eq!(from_suffix("Quantity"), Some("Quantity"));
        assert_eq!(from_suffix("String"), Some("string"));
        assert_eq!(from_suffix("Base64Binary"), Some("base64Binary"));
        assert_eq!(from_suffix("string"), None);
        assert_eq!(from_suffix("Set"), None);
        assert_eq!(from_suffix(""), None);
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("FHIR.string"), Some("string"));
        assert_eq!(canonical("System.String"), Some("String"));
        assert_eq!(canonical("Coding"), Some("Coding"));
        assert_eq!(canonical("Nope"), None);
    }
}
