//! IANA time zones, with a suggestion for a misspelt one.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};

use super::coded_error;
use super::suggest::did_you_mean;

/// An IANA time zone such as `Europe/Berlin` or `UTC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(pub chrono_tz::Tz);

impl Default for TimeZone {
    fn default() -> Self {
        Self(chrono_tz::UTC)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl FromStr for TimeZone {
    type Err = (String, Option<String>);

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(tz) = s.parse::<chrono_tz::Tz>() {
            return Ok(Self(tz));
        }
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        let suggestion = match chrono_tz::Tz::from_str_insensitive(s) {
            Ok(tz) => Some(format!("did you mean `{}`?", tz.name())),
            Err(_) => did_you_mean(s, names),
        };
        Err((format!("`{s}` is not an IANA time zone"), suggestion))
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|(message, suggestion): (String, Option<String>)| {
                let help = suggestion.unwrap_or_else(|| {
                    "use a name from the IANA database, such as `Europe/Berlin` or `UTC`".into()
                });
                coded_error("manifest::invalid_timezone", &message, Some(&help))
            })
    }
}

impl JsonSchema for TimeZone {
    fn schema_name() -> Cow<'static, str> {
        "TimeZone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect();
        json_schema!({
            "description": "An IANA time zone name.",
            "type": "string",
            "enum": names,
            "examples": ["UTC", "America/Sao_Paulo", "Europe/Berlin"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_suggests_close_names() {
        let (_, help) = "Europe/Berln".parse::<TimeZone>().unwrap_err();
        assert_eq!(help.as_deref(), Some("did you mean `Europe/Berlin`?"));
        let (_, help) = "europe/berlin".parse::<TimeZone>().unwrap_err();
        assert_eq!(help.as_deref(), Some("did you mean `Europe/Berlin`?"));
    }
}
