//! Durations as people write them: milliseconds (as s3db.js does) or `5m`, `1h 30m`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::coded_error;

/// A length of time: an integer number of milliseconds (as s3db.js writes them) or a string
/// such as `500ms`, `30s`, `5m`, `1h 30m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration ({reason})")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| DurationError {
            text: s.to_string(),
            reason,
        };
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| fail(e.to_string()));
        }
        humantime::parse_duration(t)
            .map(Duration)
            .map_err(|e| fail(e.to_string()))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: milliseconds, or a string such as `30s` or `5m`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v).map(Duration::from_millis).map_err(|_| {
                    coded_error(
                        "manifest::invalid_duration",
                        &format!("a duration cannot be negative ({v})"),
                        Some("write a positive number of milliseconds, or a string such as `5m`"),
                    )
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(|e: DurationError| {
                    coded_error(
                        "manifest::invalid_duration",
                        &e.to_string(),
                        Some("write milliseconds (`300000`) or a number with a unit: ms, s, m, h, d, w (`5m`, `1h 30m`)"),
                    )
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The units humantime accepts, longest first so the alternation matches whole words.
const DURATION_PATTERN: &str = "^\\s*(([0-9]+\\s*(nsec|ns|usec|us|µs|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)\\s*)+|[0-9]+\\s*)$";

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: milliseconds as an integer (as in s3db.js), or a string with units such as `500ms`, `30s`, `5m`, `1h 30m`, `7d`.",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": DURATION_PATTERN }
            ],
            "examples": ["5m", 300000]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_millis_and_units() {
        assert_eq!(
            "300000".parse::<Duration>().unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!("5m".parse::<Duration>().unwrap(), Duration::from_secs(300));
        assert_eq!(
            "1h 30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert!("5 parsecs".parse::<Duration>().is_err());
        assert!("".parse::<Duration>().is_err());
    }
}
