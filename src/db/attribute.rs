//! Attribute definitions in the s3db.js shorthand (`string|required|maxlength:10`,
//! `number|min:1`, `boolean|default:false`): parsing here, validation of values on write in the
//! resource layer. The manifest validator uses the same parser, so a definition that validates is
//! one the database accepts.

use std::fmt;
use std::str::FromStr;

use crate::types::suggest::did_you_mean;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Number,
    Boolean,
    Json,
    Object,
    Array,
    Date,
    Any,
}

const TYPE_NAMES: &[&str] = &[
    "string", "number", "boolean", "json", "object", "array", "date", "any",
];
const RULE_NAMES: &[&str] = &[
    "required",
    "optional",
    "min",
    "max",
    "minlength",
    "maxlength",
    "default",
    "integer",
];

impl AttributeType {
    pub fn name(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Number => "number",
            AttributeType::Boolean => "boolean",
            AttributeType::Json => "json",
            AttributeType::Object => "object",
            AttributeType::Array => "array",
            AttributeType::Date => "date",
            AttributeType::Any => "any",
        }
    }
}

/// A parsed attribute definition.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeSpec {
    pub kind: AttributeType,
    pub required: bool,
    pub integer: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub default: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeError {
    pub message: String,
    pub help: String,
}

impl fmt::Display for AttributeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AttributeError {}

impl FromStr for AttributeSpec {
    type Err = AttributeError;

    fn from_str(text: &str) -> Result<Self, AttributeError> {
        let mut parts = text.split('|').map(str::trim);
        let type_name = parts.next().unwrap_or_default();
        let kind = match type_name {
            "string" => AttributeType::String,
            "number" => AttributeType::Number,
            "boolean" => AttributeType::Boolean,
            "json" => AttributeType::Json,
            "object" => AttributeType::Object,
            "array" => AttributeType::Array,
            "date" => AttributeType::Date,
            "any" => AttributeType::Any,
            other => {
                return Err(AttributeError {
                    message: format!("`{other}` is not an attribute type"),
                    help: did_you_mean(other, TYPE_NAMES.iter().copied())
                        .unwrap_or_else(|| format!("start with one of {}", TYPE_NAMES.join(", "))),
                })
            }
        };
        let mut spec = AttributeSpec {
            kind,
            required: false,
            integer: false,
            min: None,
            max: None,
            min_length: None,
            max_length: None,
            default: None,
        };
        for rule in parts {
            let (name, arg) = match rule.split_once(':') {
                Some((n, a)) => (n.trim(), Some(a.trim())),
                None => (rule, None),
            };
            let number = |what: &str| -> Result<f64, AttributeError> {
                arg.and_then(|a| a.parse::<f64>().ok())
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| AttributeError {
                        message: format!("`{rule}` needs a number"),
                        help: format!("write `{what}:N`"),
                    })
            };
            let count = |what: &str| -> Result<usize, AttributeError> {
                arg.and_then(|a| a.parse::<usize>().ok())
                    .ok_or_else(|| AttributeError {
                        message: format!("`{rule}` needs a whole number"),
                        help: format!("write `{what}:N`"),
                    })
            };
            match name {
                "required" => spec.required = true,
                "optional" => spec.required = false,
                "integer" => spec.integer = true,
                "min" => spec.min = Some(number("min")?),
                "max" => spec.max = Some(number("max")?),
                "minlength" => spec.min_length = Some(count("minlength")?),
                "maxlength" => spec.max_length = Some(count("maxlength")?),
                "default" => {
                    let raw = arg.unwrap_or_default();
                    spec.default =
                        Some(default_value(kind, raw).ok_or_else(|| AttributeError {
                            message: format!("`{raw}` is not a {} default", kind.name()),
                            help: format!("give a default of type {}", kind.name()),
                        })?);
                }
                other => {
                    return Err(AttributeError {
                        message: format!("`{other}` is not an attribute rule"),
                        help: did_you_mean(other, RULE_NAMES.iter().copied())
                            .unwrap_or_else(|| format!("the rules are {}", RULE_NAMES.join(", "))),
                    })
                }
            }
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max) {
            if min > max {
                return Err(AttributeError {
                    message: format!("`min:{min}` is greater than `max:{max}`"),
                    help: "swap the bounds".into(),
                });
            }
        }
        if let (Some(min), Some(max)) = (spec.min_length, spec.max_length) {
            if min > max {
                return Err(AttributeError {
                    message: format!("`minlength:{min}` is greater than `maxlength:{max}`"),
                    help: "swap the bounds".into(),
                });
            }
        }
        Ok(spec)
    }
}

fn default_value(kind: AttributeType, raw: &str) -> Option<serde_json::Value> {
    use serde_json::Value;
    match kind {
        AttributeType::String | AttributeType::Date => Some(Value::String(raw.to_string())),
        AttributeType::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .map(|v| match raw.parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => v,
            }),
        AttributeType::Boolean => raw.parse::<bool>().ok().map(Value::Bool),
        AttributeType::Json | AttributeType::Object | AttributeType::Array | AttributeType::Any => {
            serde_json::from_str(raw).ok()
        }
    }
}

/// How a value breaks its attribute's definition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Violation {
    #[error("is required")]
    Required,
    #[error("expected {expected}, got {got}")]
    Type { expected: &'static str, got: String },
    #[error("expected a whole number, got {0}")]
    NotWhole(f64),
    #[error("must be at least {min}, got {got}")]
    Below { min: f64, got: f64 },
    #[error("must be at most {max}, got {got}")]
    Above { max: f64, got: f64 },
    #[error("must have at least {min} characters, has {len}")]
    TooShort { min: usize, len: usize },
    #[error("must have at most {max} characters, has {len}")]
    TooLong { max: usize, len: usize },
}

impl AttributeSpec {
    /// Checks one value against the definition; the error says what was expected.
    pub fn check(&self, value: Option<&serde_json::Value>) -> Result<(), Violation> {
        use serde_json::Value;
        let value = match value {
            None | Some(Value::Null) => {
                return if self.required {
                    Err(Violation::Required)
                } else {
                    Ok(())
                };
            }
            Some(v) => v,
        };
        let kind_ok = match self.kind {
            AttributeType::String => value.is_string(),
            AttributeType::Number => value.is_number(),
            AttributeType::Boolean => value.is_boolean(),
            AttributeType::Object => value.is_object(),
            AttributeType::Array => value.is_array(),
            AttributeType::Date => value.as_str().is_some_and(is_date),
            AttributeType::Json | AttributeType::Any => true,
        };
        if !kind_ok {
            let expected = match self.kind {
                AttributeType::Date => "a date (YYYY-MM-DD or RFC 3339)",
                AttributeType::String => "a string",
                AttributeType::Number => "a number",
                AttributeType::Boolean => "a boolean",
                AttributeType::Object => "an object",
                AttributeType::Array => "an array",
                AttributeType::Json | AttributeType::Any => "a value",
            };
            return Err(Violation::Type {
                expected,
                got: value.to_string(),
            });
        }
        if let Some(n) = value.as_f64() {
            if self.integer && n.fract() != 0.0 {
                return Err(Violation::NotWhole(n));
            }
            if let Some(min) = self.min.filter(|m| n < *m) {
                return Err(Violation::Below { min, got: n });
            }
            if let Some(max) = self.max.filter(|m| n > *m) {
                return Err(Violation::Above { max, got: n });
            }
        }
        let len = match value {
            Value::String(s) => Some(s.chars().count()),
            Value::Array(a) => Some(a.len()),
            _ => None,
        };
        if let Some(len) = len {
            if let Some(min) = self.min_length.filter(|m| len < *m) {
                return Err(Violation::TooShort { min, len });
            }
            if let Some(max) = self.max_length.filter(|m| len > *m) {
                return Err(Violation::TooLong { max, len });
            }
        }
        Ok(())
    }
}

fn is_date(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shorthand() {
        let s: AttributeSpec = "string|required|maxlength:10".parse().unwrap();
        assert!(s.required);
        assert_eq!(s.max_length, Some(10));
        let n: AttributeSpec = "number|min:1|default:5".parse().unwrap();
        assert_eq!(n.min, Some(1.0));
        assert_eq!(n.default, Some(serde_json::json!(5)));
    }

    #[test]
    fn rejects_unknown_types_and_rules_with_suggestions() {
        let e = "strng|required".parse::<AttributeSpec>().unwrap_err();
        assert_eq!(e.help, "did you mean `string`?");
        let e = "number|requird".parse::<AttributeSpec>().unwrap_err();
        assert_eq!(e.help, "did you mean `required`?");
        assert!("number|min:x".parse::<AttributeSpec>().is_err());
        assert!("number|min:5|max:1".parse::<AttributeSpec>().is_err());
        assert!("boolean|default:maybe".parse::<AttributeSpec>().is_err());
    }
}
