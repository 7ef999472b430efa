//! Value types the manifest is made of that serde and schemars do not provide: durations written
//! as milliseconds or `5m`, IANA time zones, secrets that never print, connection strings whose
//! credentials never print, and "one name or a list". Each owns its parsing, its schema and its
//! redaction, so the rest of the code never handles their raw text.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::types::coded_error;
use crate::types::redact_userinfo;

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
    use crate::types::Secret;

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
}
