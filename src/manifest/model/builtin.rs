//! A built-in hook as the manifest declares it, typed: `builtin: NAME` with its `with:`
//! parameters read once, at load, into the variant of that built-in. Values that may be `{{…}}`
//! templates stay text (or a [`Param`]) and are rendered when the hook runs; everything else
//! (durations, flags, counts, levels) is already its type.

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::types::Duration;

/// Text that may hold `{{…}}` templates. Numbers and booleans are read as their text, so
/// `id: 42` names the record `42`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected text, got {}",
                kind_of(&other)
            ))),
        }
    }
}

/// A typed parameter given either as its value or as a `{{…}}` template whose rendered value is
/// read as the type when the hook runs (a lone `{{context.n}}` keeps the number's type).
#[derive(Debug, Clone, PartialEq)]
pub enum Param<T> {
    Value(T),
    Template(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if s.contains("{{") => Ok(Param::Template(s)),
            // `${VAR}` leaves text where a number or a flag belongs: read it as one.
            Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
                Ok(scalar @ (Value::Bool(_) | Value::Number(_))) => T::deserialize(scalar),
                _ => T::deserialize(Value::String(s)),
            }
            .map(Param::Value)
            .map_err(serde::de::Error::custom),
            other => T::deserialize(other)
                .map(Param::Value)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl<T: Default> Default for Param<T> {
    fn default() -> Self {
        Param::Value(T::default())
    }
}

/// The level of a `log` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    #[serde(alias = "warning")]
    Warn,
    Error,
}

/// A built-in with its parameters. The variant names follow the built-ins' names
/// (`record.update` is `RecordUpdate`); `where`, `set`, `data`, `context` and `fields` are
/// JSON whose strings are rendered as templates when the hook runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "builtin", content = "with", deny_unknown_fields)]
pub enum BuiltinCall {
    #[serde(rename = "always")]
    Always {},
    #[serde(rename = "never")]
    Never { reason: Option<Text> },
    #[serde(rename = "context.matches")]
    ContextMatches {
        #[serde(rename = "where")]
        filter: Map<String, Value>,
        reason: Option<Text>,
    },
    #[serde(rename = "record.check")]
    RecordCheck {
        resource: Text,
        id: Text,
        #[serde(rename = "where")]
        filter: Option<Map<String, Value>>,
        reason: Option<Text>,
    },
    #[serde(rename = "log")]
    Log {
        message: Option<Text>,
        #[serde(default)]
        level: Param<LogLevel>,
        #[serde(default)]
        fields: Value,
    },
    #[serde(rename = "record.insert")]
    RecordInsert {
        resource: Text,
        data: Map<String, Value>,
        id: Option<Text>,
    },
    #[serde(rename = "record.update")]
    RecordUpdate {
        resource: Text,
        id: Text,
        set: Map<String, Value>,
        #[serde(default)]
        upsert: Param<bool>,
    },
    #[serde(rename = "record.delete")]
    RecordDelete { resource: Text, id: Text },
    #[serde(rename = "resource.deleteWhere")]
    DeleteWhere {
        resource: Text,
        #[serde(rename = "where")]
        filter: Map<String, Value>,
        limit: Option<Param<u64>>,
    },
    #[serde(rename = "machine.send")]
    MachineSend {
        machine: Text,
        entity: Text,
        event: Text,
        context: Option<Map<String, Value>>,
    },
    #[serde(rename = "machine.sendAll")]
    MachineSendAll {
        machine: Text,
        state: Text,
        event: Text,
        #[serde(rename = "olderThan")]
        older_than: Option<Duration>,
        context: Option<Map<String, Value>>,
    },
    #[serde(rename = "backup.run")]
    BackupRun {
        #[serde(rename = "type")]
        kind: Option<Text>,
        resources: Option<Vec<Text>>,
    },
    #[serde(rename = "backup.prune")]
    BackupPrune {
        #[serde(default, rename = "dryRun")]
        dry_run: Param<bool>,
    },
    #[serde(rename = "webhook")]
    Webhook {
        url: Text,
        #[serde(default)]
        headers: IndexMap<String, Text>,
        timeout: Option<Duration>,
        retries: Option<Param<u32>>,
    },
}

impl BuiltinCall {
    /// Reads built-in `name` with parameters `with` (none is the same as `{}`).
    pub fn parse(name: &str, with: Option<&Map<String, Value>>) -> serde_json::Result<Self> {
        let mut call = Map::new();
        call.insert("builtin".into(), Value::String(name.into()));
        call.insert(
            "with".into(),
            Value::Object(with.cloned().unwrap_or_default()),
        );
        serde_json::from_value(Value::Object(call))
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(name: &str, with: Value) -> Result<BuiltinCall, String> {
        BuiltinCall::parse(name, with.as_object()).map_err(|e| e.to_string())
    }

    #[test]
    fn parameters_are_read_into_their_types() {
        assert_eq!(
            parse(
                "record.update",
                json!({ "resource": "orders", "id": 42, "set": { "n": 1 }, "upsert": true })
            )
            .unwrap(),
            BuiltinCall::RecordUpdate {
                resource: Text("orders".into()),
                id: Text("42".into()),
                set: json!({ "n": 1 }).as_object().unwrap().clone(),
                upsert: Param::Value(true),
            }
        );
        let BuiltinCall::MachineSendAll { older_than, .. } = parse(
            "machine.sendAll",
            json!({ "machine": "m", "state": "s", "event": "e", "olderThan": "2h" }),
        )
        .unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(older_than.unwrap().as_std().as_secs(), 7200);
        assert_eq!(
            parse("log", json!({ "level": "warning" })).unwrap(),
            BuiltinCall::Log {
                message: None,
                level: Param::Value(LogLevel::Warn),
                fields: Value::Null
            }
        );
        assert_eq!(
            parse("backup.prune", json!({ "dryRun": "{{context.dry}}" })).unwrap(),
            BuiltinCall::BackupPrune {
                dry_run: Param::Template("{{context.dry}}".into())
            }
        );
        assert_eq!(
            parse("always", Value::Null).unwrap(),
            BuiltinCall::Always {}
        );
        // What `${UPSERT}` and `${LIMIT}` leave behind.
        let BuiltinCall::RecordUpdate { upsert, .. } = parse(
            "record.update",
            json!({ "resource": "o", "id": "1", "set": {}, "upsert": "true" }),
        )
        .unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(upsert, Param::Value(true));
    }

    #[test]
    fn wrong_unknown_and_missing_parameters_are_errors() {
        let e = parse(
            "record.update",
            json!({ "resource": "o", "id": "1", "sett": {} }),
        )
        .unwrap_err();
        assert!(e.contains("sett"), "{e}");
        assert!(parse("record.update", json!({ "resource": "o", "id": "1" })).is_err());
        let e = parse(
            "record.update",
            json!({ "resource": "o", "id": "1", "set": {}, "upsert": "maybe" }),
        )
        .unwrap_err();
        assert!(e.contains("boolean"), "{e}");
        assert!(parse("log", json!({ "level": "loud" })).is_err());
        assert!(parse("webhook", json!({ "url": "http://x", "timeout": "soon" })).is_err());
        assert!(parse("no.such", json!({})).is_err());
    }
}
