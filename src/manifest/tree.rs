//! The span tree: a manifest parsed from YAML or TOML into plain values that each carry the byte
//! range they came from. Everything after parsing (env interpolation, deserialization into the
//! model, semantic checks) works on this tree, so every diagnostic can point at a line and column
//! whichever format the user wrote. This module must never interpret what the keys mean.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use super::diagnostic::{Diagnostic, Span};

/// Deepest nesting accepted; deeper documents are rejected instead of risking the stack.
const MAX_DEPTH: usize = 128;
/// Alias expansion budget (nodes), so a "billion laughs" document cannot exhaust memory.
const MAX_ALIAS_NODES: usize = 100_000;

/// A parsed value with the byte range of its text in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

/// A mapping key with the span of the key text.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// `interpolated` is set when the text came from `${…}` substitution: such a string may be
    /// read as a number or boolean where the model asks for one, since the author could not
    /// write the value unquoted.
    Str {
        text: String,
        interpolated: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    pub fn new(span: Span, value: Value) -> Self {
        Self { span, value }
    }

    pub fn str(span: Span, text: impl Into<String>) -> Self {
        Self::new(
            span,
            Value::Str {
                text: text.into(),
                interpolated: false,
            },
        )
    }

    /// The value under `key` when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, n)| n)
    }

    pub fn entry(&self, key: &str) -> Option<(&Key, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, n)| (k, n)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[(Key, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The kind of value, in the words a manifest author uses.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A JSON rendering, for the schema checks and for built-in parameters.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str { text, .. } => J::String(text.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Parses a YAML document into a span tree. Anchors and aliases are expanded; tags other than the
/// core schema's, several documents in one file, and duplicate keys are errors.
pub fn parse_yaml(text: &str) -> Result<Node, Box<Diagnostic>> {
    let chars = CharOffsets::new(text);
    let mut builder = YamlBuilder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        root: None,
        documents: 0,
        alias_nodes: 0,
    };
    let parser = Parser::new_from_str(text);
    for event in parser {
        let (event, span) = event.map_err(|e| Box::new(scan_error(&chars, &e)))?;
        let span = Span::new(chars.byte(span.start.index()), chars.byte(span.end.index()));
        builder.on_event(event, span)?;
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Node::new(Span::new(0, 0), Value::Null)))
}

fn scan_error(chars: &CharOffsets, e: &ScanError) -> Diagnostic {
    let at = chars.byte(e.marker().index());
    Diagnostic::error(
        "manifest::syntax",
        Span::new(at, at),
        format!("YAML syntax error: {}", e.info()),
    )
    .with_help("check the indentation and quoting around this position")
}

/// Maps the parser's character indices to byte offsets.
struct CharOffsets {
    /// Byte offset of each char; empty when the text is ASCII (then index == byte).
    offsets: Vec<usize>,
    len: usize,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let offsets = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices().map(|(b, _)| b).collect()
        };
        Self {
            offsets,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.offsets.is_empty() {
            char_index.min(self.len)
        } else {
            self.offsets.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

enum Frame {
    Seq {
        start: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        /// Key → position, built once a mapping is large enough that scanning it for duplicates
        /// would make parsing quadratic.
        index: Option<HashMap<String, usize>>,
    },
}

struct YamlBuilder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    alias_nodes: usize,
}

impl YamlBuilder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Box<Diagnostic>> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Box::new(
                        Diagnostic::error(
                            "manifest::syntax",
                            span,
                            "a manifest is one YAML document, but this file holds several",
                        )
                        .with_help("remove the `---` separator and merge the documents"),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(text, style, tag.as_deref(), span)?;
                self.push(Node::new(span, value), anchor)?;
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), span)?;
                self.open(span)?;
                self.stack.push(Frame::Seq {
                    start: span.start,
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), span)?;
                self.open(span)?;
                self.stack.push(Frame::Map {
                    start: span.start,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                    index: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        start,
                        anchor,
                        items,
                    }) => {
                        let end = items.last().map_or(span.end, |n| n.span.end.max(span.end));
                        (Node::new(Span::new(start, end), Value::Seq(items)), anchor)
                    }
                    Some(Frame::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    }) => {
                        let end = entries
                            .last()
                            .map_or(span.end, |(_, n)| n.span.end.max(span.end));
                        (
                            Node::new(Span::new(start, end), Value::Map(entries)),
                            anchor,
                        )
                    }
                    None => return Ok(()),
                };
                self.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Box::new(Diagnostic::error(
                        "manifest::syntax",
                        span,
                        "this alias refers to an anchor that is not defined before it",
                    )));
                };
                self.alias_nodes += count_nodes(target);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(Box::new(
                        Diagnostic::error(
                            "manifest::syntax",
                            span,
                            "aliases expand to too many nodes",
                        )
                        .with_help("a manifest may expand at most 100000 nodes through aliases"),
                    ));
                }
                let mut copy = target.clone();
                copy.span = span;
                self.push(copy, 0)?;
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn open(&self, span: Span) -> Result<(), Box<Diagnostic>> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Box::new(Diagnostic::error(
                "manifest::syntax",
                span,
                format!("the document nests deeper than {MAX_DEPTH} levels"),
            )));
        }
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), Box<Diagnostic>> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                index,
                ..
            }) => match pending_key.take() {
                None => {
                    let span = node.span;
                    let name = match node.value {
                        Value::Str { text, .. } => text,
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Box::new(Diagnostic::error(
                                "manifest::syntax",
                                span,
                                "a mapping key must be a plain value, not a list or mapping",
                            )))
                        }
                    };
                    const SCAN_LIMIT: usize = 16;
                    if index.is_none() && entries.len() >= SCAN_LIMIT {
                        *index = Some(
                            entries
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.name.clone(), i))
                                .collect(),
                        );
                    }
                    let previous = match index {
                        Some(index) => index.get(&name).map(|&i| &entries[i].0),
                        None => entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k),
                    };
                    if let Some(first) = previous {
                        return Err(Box::new(
                            Diagnostic::error(
                                "manifest::duplicate_key",
                                span,
                                format!("the key `{name}` appears twice in this mapping"),
                            )
                            .with_label("defined again here")
                            .with_related(first.span, "first defined here")
                            .with_help("remove one of them; YAML keeps only one value per key"),
                        ));
                    }
                    *pending_key = Some(Key { name, span });
                }
                Some(key) => {
                    if let Some(index) = index {
                        index.insert(key.name.clone(), entries.len());
                    }
                    entries.push((key, node));
                }
            },
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries.iter().map(|(_, n)| count_nodes(n)).sum(),
        _ => 0,
    }
}

fn check_collection_tag(
    tag: Option<&saphyr_parser::Tag>,
    span: Span,
) -> Result<(), Box<Diagnostic>> {
    match tag {
        None => Ok(()),
        Some(t)
            if t.handle == "tag:yaml.org,2002:" && matches!(t.suffix.as_str(), "map" | "seq") =>
        {
            Ok(())
        }
        Some(t) => Err(Box::new(unsupported_tag(t, span))),
    }
}

fn unsupported_tag(tag: &saphyr_parser::Tag, span: Span) -> Diagnostic {
    Diagnostic::error(
        "manifest::syntax",
        span,
        format!(
            "the YAML tag `{}{}` is not supported",
            tag.handle, tag.suffix
        ),
    )
    .with_help("remove the tag; values are typed by the manifest schema")
}

/// Resolves a scalar with the YAML 1.2 core schema: only plain scalars become null, booleans or
/// numbers, so `"1"` stays a string.
fn resolve_scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    span: Span,
) -> Result<Value, Box<Diagnostic>> {
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" {
            return Ok(Value::Str {
                text: text.into_owned(),
                interpolated: false,
            });
        }
        if !(tag.handle == "tag:yaml.org,2002:"
            && matches!(tag.suffix.as_str(), "int" | "float" | "bool" | "null"))
        {
            return Err(Box::new(unsupported_tag(tag, span)));
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Str {
            text: text.into_owned(),
            interpolated: false,
        });
    }
    Ok(resolve_plain(&text).unwrap_or_else(|| Value::Str {
        text: text.into_owned(),
        interpolated: false,
    }))
}

/// The core schema's reading of a plain scalar, or None for a string.
pub fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    let bytes = text.as_bytes();
    let digits = bytes
        .strip_prefix(b"-")
        .or_else(|| bytes.strip_prefix(b"+"))
        .unwrap_or(bytes);
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        return text
            .parse::<i64>()
            .ok()
            .map(Value::Int)
            .or_else(|| text.parse().ok().map(Value::Float));
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(Value::Int);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(Value::Int);
    }
    let looks_numeric = digits
        .first()
        .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        && digits
            .iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_numeric {
        return text.parse::<f64>().ok().map(Value::Float);
    }
    None
}

/// Parses a TOML document into a span tree.
pub fn parse_toml(text: &str) -> Result<Node, Box<Diagnostic>> {
    let table = toml::de::DeTable::parse(text).map_err(|e| -> Box<Diagnostic> {
        let span = e
            .span()
            .map_or(Span::new(0, 0), |r| Span::new(r.start, r.end));
        Box::new(
            Diagnostic::error(
                "manifest::syntax",
                span,
                format!("TOML syntax error: {}", e.message().trim()),
            )
            .with_help("check the quoting and the table headers around this position"),
        )
    })?;
    let span = table.span();
    Ok(toml_table(
        table.into_inner(),
        Span::new(span.start, span.end),
    ))
}

fn toml_table(table: toml::de::DeTable<'_>, span: Span) -> Node {
    let entries = table
        .into_iter()
        .map(|(k, v)| {
            let ks = k.span();
            let key = Key {
                name: k.into_inner().into_owned(),
                span: Span::new(ks.start, ks.end),
            };
            (key, toml_value(v))
        })
        .collect();
    Node::new(span, Value::Map(entries))
}

fn toml_value(value: toml::Spanned<toml::de::DeValue<'_>>) -> Node {
    use toml::de::DeValue;
    let r = value.span();
    let span = Span::new(r.start, r.end);
    match value.into_inner() {
        DeValue::String(s) => Node::str(span, s.into_owned()),
        DeValue::Integer(i) => {
            let parsed = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok();
            match parsed {
                Some(n) => Node::new(span, Value::Int(n)),
                None => Node::str(span, i.as_str().to_string()),
            }
        }
        DeValue::Float(f) => {
            let parsed = f.as_str().replace('_', "").parse::<f64>().ok();
            match parsed {
                Some(n) => Node::new(span, Value::Float(n)),
                None => Node::str(span, f.as_str().to_string()),
            }
        }
        DeValue::Boolean(b) => Node::new(span, Value::Bool(b)),
        DeValue::Datetime(d) => Node::str(span, d.to_string()),
        DeValue::Array(items) => Node::new(
            span,
            Value::Seq(items.into_iter().map(toml_value).collect()),
        ),
        DeValue::Table(t) => toml_table(t, span),
    }
}
