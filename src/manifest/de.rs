//! A serde `Deserializer` over the span tree. The model types derive `Deserialize` as usual; this
//! deserializer is what lets their errors carry a span and a rule code. Unknown keys in a struct
//! are recorded as diagnostics (with a suggestion) and skipped instead of stopping, so one pass
//! reports all of them.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::diagnostic::{Diagnostic, Span};
use super::tree::{Key, Node, Value};
use crate::types::suggest::did_you_mean;
use crate::types::CODED;

/// An error raised while reading the tree into the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    pub span: Option<Span>,
}

impl DeError {
    fn new(code: &'static str, message: String, help: Option<String>) -> Self {
        Self {
            code,
            message,
            help,
            span: None,
        }
    }

    /// Attaches the span of the innermost node the error came from.
    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    pub fn into_diagnostic(self, fallback: Span) -> Diagnostic {
        Diagnostic::error(self.code, self.span.unwrap_or(fallback), self.message)
            .with_optional_help(self.help)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

/// Rule codes that model types may raise through `coded_error`.
const TYPE_CODES: &[&str] = &[
    "manifest::invalid_duration",
    "manifest::invalid_timezone",
    "manifest::hook_command",
    "manifest::invalid_value",
    "manifest::invalid_cron",
    "manifest::cron_never_fires",
];

/// "struct JobDef" and the like are Rust names; say what the author writes instead.
fn expected_words(exp: &dyn de::Expected) -> String {
    let e = exp.to_string();
    if e.starts_with("struct ") || e.starts_with("a map") || e == "map" {
        "a mapping".into()
    } else if e.starts_with("a sequence") || e == "sequence" {
        "a list".into()
    } else if e.starts_with("u8")
        || e.starts_with("u16")
        || e.starts_with("u32")
        || e.starts_with("u64")
        || e.starts_with("usize")
    {
        "a whole number (0 or more)".into()
    } else if e.starts_with("i32") || e.starts_with("i64") {
        "a whole number".into()
    } else if e.starts_with("f64") || e.starts_with("f32") {
        "a number".into()
    } else if e.starts_with("enum ") {
        "one of the allowed values".into()
    } else {
        e
    }
}

fn found_words(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(s) => format!("the string `{s}`"),
        de::Unexpected::Signed(i) => format!("the number {i}"),
        de::Unexpected::Unsigned(i) => format!("the number {i}"),
        de::Unexpected::Float(f) => format!("the number {f}"),
        de::Unexpected::Bool(b) => format!("the boolean {b}"),
        de::Unexpected::Unit => "nothing (null)".into(),
        de::Unexpected::Map => "a mapping".into(),
        de::Unexpected::Seq => "a list".into(),
        other => other.to_string(),
    }
}

fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let msg = msg.to_string();
        if let Some(rest) = msg.strip_prefix(CODED) {
            let mut parts = rest.splitn(3, CODED);
            let code = parts.next().unwrap_or_default();
            let message = parts.next().unwrap_or_default().to_string();
            let help = parts.next().filter(|h| !h.is_empty()).map(str::to_string);
            let code = TYPE_CODES
                .iter()
                .find(|c| **c == code)
                .copied()
                .unwrap_or("manifest::invalid_value");
            return Self::new(code, message, help);
        }
        Self::new("manifest::invalid_value", msg, None)
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let expected = expected_words(exp);
        Self::new(
            "manifest::wrong_type",
            format!("expected {expected}, found {}", found_words(&unexp)),
            Some(format!("write {expected} here")),
        )
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        let expected = expected_words(exp);
        Self::new(
            "manifest::invalid_value",
            format!("expected {expected}, found {}", found_words(&unexp)),
            Some(format!("write {expected} here")),
        )
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(
            "manifest::invalid_value",
            format!("`{variant}` is not one of {}", one_of(expected)),
            did_you_mean(variant, expected.iter().copied())
                .or_else(|| Some(format!("use one of {}", one_of(expected)))),
        )
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(
            "manifest::unknown_key",
            format!("unknown key `{field}`"),
            did_you_mean(field, expected.iter().copied())
                .or_else(|| Some(format!("the keys allowed here are {}", one_of(expected)))),
        )
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(
            "manifest::missing_key",
            format!("missing required key `{field}`"),
            Some(format!("add `{field}` to this mapping")),
        )
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Self::new(
            "manifest::wrong_type",
            format!("expected {}, found {len} elements", expected_words(exp)),
            None,
        )
    }
}

/// Diagnostics that do not stop deserialization (unknown keys).
pub type Sink = RefCell<Vec<Diagnostic>>;

/// Deserializes one node of the tree.
#[derive(Clone, Copy)]
pub struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    pub fn new(node: &'a Node, sink: &'a Sink) -> Self {
        Self { node, sink }
    }

    fn any<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str { text, .. } => visitor.visit_str(text),
            Value::Seq(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                sink: self.sink,
            }),
            Value::Map(entries) => visitor.visit_map(MapDe {
                entries: entries.iter().collect::<Vec<_>>().into_iter(),
                value: None,
                sink: self.sink,
            }),
        }
    }

    /// A string produced by `${…}` is read as the scalar the model wants, when it parses as one.
    fn coerced(self) -> Option<Value> {
        match &self.node.value {
            Value::Str {
                text,
                interpolated: true,
            } => super::tree::resolve_plain(text.trim()),
            _ => None,
        }
    }

    fn scalar<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.coerced() {
            Some(Value::Bool(b)) => visitor.visit_bool(b),
            Some(Value::Int(i)) => visitor.visit_i64(i),
            Some(Value::Float(f)) => visitor.visit_f64(f),
            _ => self.any(visitor),
        }
    }
}

macro_rules! scalar_methods {
    ($($m:ident),*) => {$(
        fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let span = self.node.span;
            self.scalar(visitor).map_err(|e| e.at(span))
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    scalar_methods!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64
    );

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        self.any(visitor).map_err(|e| e.at(span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(span))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        let Value::Map(entries) = &self.node.value else {
            return self.any(visitor).map_err(|e| e.at(span));
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            if fields.contains(&entry.0.name.as_str()) {
                known.push(entry);
            } else {
                let e = <DeError as de::Error>::unknown_field(&entry.0.name, fields);
                self.sink.borrow_mut().push(e.into_diagnostic(entry.0.span));
            }
        }
        visitor
            .visit_map(MapDe {
                entries: known.into_iter(),
                value: None,
                sink: self.sink,
            })
            .map_err(|e| e.at(span))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let span = self.node.span;
        match &self.node.value {
            Value::Str { text, .. } => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => self.any(visitor),
        }
        .map_err(|e| e.at(span))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map identifier
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    sink: &'a Sink,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe::new(node, self.sink))
                .map(Some)
                .map_err(|e| e.at(node.span)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::vec::IntoIter<&'a (Key, Node)>,
    value: Option<&'a Node>,
    sink: &'a Sink,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDe(key))
                    .map(Some)
                    .map_err(|e| e.at(key.span))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed
                .deserialize(NodeDe::new(node, self.sink))
                .map_err(|e| e.at(node.span)),
            None => Err(<DeError as de::Error>::custom(
                "a value was read before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Mapping keys are always strings in the manifest.
struct KeyDe<'a>(&'a Key);

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_str(&self.0.name)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// Reads built-in `name` with its `with:` node (absent is `{}`) into its typed parameters, so
/// that an error names the parameter's own span and rule code.
pub fn read_builtin(
    name: &str,
    with: Option<&Node>,
    sink: &Sink,
) -> Result<super::model::BuiltinCall, DeError> {
    struct Tagged<'a> {
        name: &'a str,
        with: Option<&'a Node>,
        sink: &'a Sink,
        step: u8,
    }
    impl<'de> de::MapAccess<'de> for Tagged<'_> {
        type Error = DeError;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, DeError> {
            self.step += 1;
            let key = match self.step {
                1 => "builtin",
                2 => "with",
                _ => return Ok(None),
            };
            seed.deserialize(key.into_deserializer()).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, DeError> {
            match (self.step, self.with) {
                (1, _) => seed.deserialize(self.name.into_deserializer()),
                (_, Some(node)) => seed
                    .deserialize(NodeDe::new(node, self.sink))
                    .map_err(|e| e.at(node.span)),
                (_, None) => seed.deserialize(de::value::MapDeserializer::<
                    std::iter::Empty<(&str, &str)>,
                    DeError,
                >::new(std::iter::empty())),
            }
        }
    }
    use serde::Deserialize;
    super::model::BuiltinCall::deserialize(de::value::MapAccessDeserializer::new(Tagged {
        name,
        with,
        sink,
        step: 0,
    }))
}
