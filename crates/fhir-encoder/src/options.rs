//! Encoding options, with Pathling's defaults.

/// Encoding options, with Pathling's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderOptions {
    /// How many times a recursive type or backbone element may nest (e.g.
    /// `Questionnaire.item.item`); deeper levels are not encoded.
    pub max_nesting_level: usize,
    /// Encode extensions (`_fid` on every group, `_extension` map on the resource).
    pub enable_extensions: bool,
    /// Types kept for open-type choice elements such as `Extension.value[x]`.
    pub open_types: Vec<String>,
    /// Also keep each resource's original JSON line, in a last column [`JSON_COLUMN`]: what
    /// the encoding leaves out (extensions not encoded, elements past the nesting level,
    /// `contained`, ...) stays readable, e.g. for views built from the table later.
    pub keep_json: bool,
}

/// The column of the original JSON with [`EncoderOptions::keep_json`].
pub const JSON_COLUMN: &str = "_json";

/// Pathling's default open types.
pub const DEFAULT_OPEN_TYPES: [&str; 12] = [
    "boolean",
    "code",
    "date",
    "dateTime",
    "decimal",
    "integer",
    "string",
    "Coding",
    "CodeableConcept",
    "Address",
    "Identifier",
    "Reference",
];

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            max_nesting_level: 3,
            enable_extensions: false,
            open_types: DEFAULT_OPEN_TYPES.iter().map(|s| s.to_string()).collect(),
            keep_json: false,
        }
    }
}
