//! Value types the manifest is made of that serde and schemars do not provide: durations written
//! as milliseconds or `5m`, IANA time zones, secrets that never print, connection strings whose
//! credentials never print, and "one name or a list". Each owns its parsing, its schema and its
//! redaction, so the rest of the code never handles their raw text.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::suggest::did_you_mean;

/// Marks a serde error message that carries a rule code and a help line, so types can raise
/// coded diagnostics through serde's error channel (see `de::DeError::custom`).
pub(crate) const CODED: char = '\u{1e}';

pub(crate) fn coded_error<E: de::Error>(code: &str, message: &str, help: Option<&str>) -> E {
    E::custom(format!(
        "{CODED}{code}{CODED}{message}{CODED}{}",
        help.unwrap_or("")
    ))
}

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

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| e.to_string());
        }
        humantime::parse_duration(t)
            .map(Duration)
            .map_err(|e| format!("`{s}` is not a duration ({e})"))
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
                v.parse().map_err(|e: String| {
                    coded_error(
                        "manifest::invalid_duration",
                        &e,
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

/// A secret value (API token, encryption key). It prints as `***` everywhere: Debug, Display and
/// serialization, so it cannot leak through logs, errors, the API or `diff`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A database connection string. Credentials in it (`s3://KEY:SECRET@bucket`) are replaced by
/// `***` in every Debug, Display and serialized form.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct ConnectionString(String);

impl ConnectionString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with any user-info part replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_userinfo(&self.0)
    }
}

/// Replaces `user:password@` in a URL-like string by `***@`.
pub fn redact_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &s[..scheme_end + 3], &rest[at..]),
        None => s.to_string(),
    }
}

impl Default for ConnectionString {
    fn default() -> Self {
        Self("file://./data".into())
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionString({})", self.redacted())
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for ConnectionString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// One name or a list of names (`entry: notify` or `entry: [reserve, notify]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct OneOrMany(pub Vec<String>);

impl OneOrMany {
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name or a list of names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(OneOrMany(names))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for OneOrMany {
    fn schema_name() -> Cow<'static, str> {
        "OneOrMany".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A hook name, or a list of hook names run in order.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}

/// A shell hook's command: a list is executed directly as argv; a string runs under `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Command {
    Argv(Vec<String>),
    Shell(String),
}

impl Command {
    /// The argv to execute: a list as is, a string under `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(argv) => argv.clone(),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command: a list of arguments, or a string for /bin/sh -c")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Command, E> {
                if v.trim().is_empty() {
                    return Err(coded_error(
                        "manifest::hook_command",
                        "the command is empty",
                        Some("write the program to run, e.g. `run: [\"./hooks/notify.sh\"]`"),
                    ));
                }
                Ok(Command::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(coded_error(
                        "manifest::hook_command",
                        "the command list is empty or starts with an empty program",
                        Some("the first element is the program, e.g. `run: [\"./hooks/notify.sh\", \"{{to}}\"]`"),
                    ));
                }
                Ok(Command::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Command {
    fn schema_name() -> Cow<'static, str> {
        "Command".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The program to run: a list is executed directly (each element one argument, templates allowed); a string runs under `/bin/sh -c`.",
            "anyOf": [
                { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                { "type": "string", "minLength": 1 }
            ],
            "examples": [["./hooks/notify.sh", "{{to}}"]]
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

    #[test]
    fn credentials_never_print() {
        let c = ConnectionString::new("s3://AKIA:s3cr3t@bucket/prefix?region=us-east-1");
        for shown in [
            format!("{c}"),
            format!("{c:?}"),
            serde_json::to_string(&c).unwrap(),
        ] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("AKIA"),
                "{shown}"
            );
            assert!(shown.contains("bucket/prefix"), "{shown}");
        }
        let s = Secret::new("hunter2");
        assert!(!format!("{s} {s:?} {}", serde_json::to_string(&s).unwrap()).contains("hunter2"));
    }

    #[test]
    fn time_zone_suggests_close_names() {
        let (_, help) = "Europe/Berln".parse::<TimeZone>().unwrap_err();
        assert_eq!(help.as_deref(), Some("did you mean `Europe/Berlin`?"));
        let (_, help) = "europe/berlin".parse::<TimeZone>().unwrap_err();
        assert_eq!(help.as_deref(), Some("did you mean `Europe/Berlin`?"));
    }
}
