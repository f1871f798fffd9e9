//! A view's constants: `%name` → a typed value read from the constant's `valueX`.

use std::borrow::Cow;
use std::collections::HashMap;

use super::Item;
use super::compare::{parse_date, parse_datetime, parse_time};
use super::decimal::Dec;

/// The constants of a view, owned (they outlive every resource).
#[derive(Clone, Debug, Default)]
pub struct Constants {
    values: HashMap<String, (Item<'static>, &'static str)>,
}

/// A constant that cannot be used: `path` names it (`constant[2]` or `%name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConstantError {
    pub path: String,
    pub message: String,
}

impl Constants {
    pub fn new() -> Constants {
        Constants::default()
    }

    /// Reads a view's `constant` entries (`{"name": .., "valueX": ..}`).
    pub fn from_view_json(entries: &[serde_json::Value]) -> Result<Constants, ConstantError> {
        let mut constants = Constants::new();
        for (i, entry) in entries.iter().enumerate() {
            let err = |message: String| ConstantError {
                path: format!("constant[{i}]"),
                message,
            };
            let obj = entry
                .as_object()
                .ok_or_else(|| err("a constant must be an object".to_owned()))?;
            let name = obj
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| err("a constant needs a string 'name'".to_owned()))?;
            let mut values = obj
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("value")?, v)))
                .filter(|(t, _)| t.starts_with(|c: char| c.is_ascii_uppercase()));
            let (value_type, value) = values
                .next()
                .ok_or_else(|| err(format!("constant '{name}' has no value[x]")))?;
            if values.next().is_some() {
                return Err(err(format!("constant '{name}' has more than one value[x]")));
            }
            if constants.contains(name) {
                return Err(err(format!("constant '{name}' is defined twice")));
            }
            constants
                .insert(name, value_type, value)
                .map_err(|e| err(e.message))?;
        }
        Ok(constants)
    }

    /// Adds `%name` from a `valueX` of type `value_type` (`"Date"`, `"Integer"`, `"String"`...).
    pub fn insert(
        &mut self,
        name: &str,
        value_type: &str,
        value: &serde_json::Value,
    ) -> Result<(), ConstantError> {
        let err = |message: String| ConstantError {
            path: format!("%{name}"),
            message: format!("value{value_type}: {message}"),
        };
        let text = || {
            value
                .as_str()
                .ok_or_else(|| err(format!("expected a string, found {value}")))
        };
        let (item, fhir_type) = match value_type {
            "Boolean" => (
                Item::Bool(
                    value
                        .as_bool()
                        .ok_or_else(|| err(format!("expected a boolean, found {value}")))?,
                ),
                "boolean",
            ),
            "Integer" | "PositiveInt" | "UnsignedInt" | "Integer64" => {
                // integer64 is a JSON string in FHIR.
                let i = value
                    .as_i64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| err(format!("expected an integer, found {value}")))?;
                let (min, t) = match value_type {
                    "PositiveInt" => (1, "positiveInt"),
                    "UnsignedInt" => (0, "unsignedInt"),
                    "Integer64" => (i64::MIN, "integer64"),
                    _ => (i64::MIN, "integer"),
                };
                if i < min {
                    return Err(err(format!("{i} is below {min}")));
                }
                (Item::Integer(i), t)
            }
            "Decimal" => {
                let t = match value {
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    _ => return Err(err(format!("expected a number, found {value}"))),
                };
                if Dec::parse(&t).is_none() {
                    return Err(err(format!("'{t}' is not a decimal")));
                }
                (Item::Decimal(t), "decimal")
            }
            "Date" => {
                let t = text()?;
                parse_date(t).ok_or_else(|| err(format!("'{t}' is not a date")))?;
                (Item::Date(t.to_owned()), "date")
            }
            "DateTime" | "Instant" => {
                let t = text()?;
                parse_datetime(t).ok_or_else(|| err(format!("'{t}' is not a dateTime")))?;
                let ft = if value_type == "Instant" {
                    "instant"
                } else {
                    "dateTime"
                };
                (Item::DateTime(t.to_owned()), ft)
            }
            "Time" => {
                let t = text()?;
                parse_time(t).ok_or_else(|| err(format!("'{t}' is not a time")))?;
                (Item::Time(t.to_owned()), "time")
            }
            other => match super::types::from_suffix(other) {
                Some(t) if super::types::is_string_like(t) => {
                    (Item::String(Cow::Owned(text()?.to_owned())), t)
                }
                _ => return Err(err("unsupported constant type".to_owned())),
            },
        };
        self.values.insert(name.to_owned(), (item, fhir_type));
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The value of `%name`.
    pub fn get(&self, name: &str) -> Option<&Item<'static>> {
        self.values.get(name).map(|(item, _)| item)
    }

    /// The FHIR type of `%name`'s `valueX` (`"uuid"`, `"positiveInt"`, ...).
    pub fn fhir_type(&self, name: &str) -> Option<&'static str> {
        self.values.get(name).map(|(_, t)| *t)
    }
}
