//! A record in s3db.js's layout: values in the object's metadata under short keys (`0`, `1`,
//! … `_v`), encoded per attribute type, with the body used as each behavior decides.

use bytes::Bytes;
use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::schema::{Behavior, Field, JsResource, Kind, Version};
use super::values as v;
use crate::store::UserMetadata;

/// S3's limit on a request's user metadata, as s3db.js counts it.
const METADATA_LIMIT: usize = 2047;

/// The record's fields, read from an object s3db.js (or s3db-run) wrote.
pub fn decode(
    res: &JsResource,
    passphrase: &str,
    id: &str,
    metadata: &UserMetadata,
    body: &[u8],
) -> Map<String, Value> {
    let version = res.version(metadata.get("_v").map(String::as_str));
    let mut out = Map::new();
    // The body first (overflowed or whole mapped values, or the plain record s3db.js's
    // user-managed update writes), then the metadata, which wins, as in s3db.js's handleGet.
    if !body.is_empty() {
        if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) {
            for (k, value) in fields {
                if k.starts_with('_') || k.starts_with('$') {
                    continue;
                }
                match (version.field_by_key(&k), &value) {
                    (Some(f), Value::String(text)) => {
                        if let Some(x) = unmap(f, text, passphrase) {
                            set_path(&mut out, &f.path, x);
                        }
                    }
                    (Some(f), other) => set_path(&mut out, &f.path, other.clone()),
                    (None, _) => {
                        out.insert(k, value);
                    }
                }
            }
        }
    }
    for (k, raw) in metadata {
        // `undefined` is an absent value; `null` a null one.
        if k.starts_with('_') || k.starts_with('$') || raw == "undefined" {
            continue;
        }
        let Some(text) = v::transport_decode(raw) else {
            match version.field_by_key(k) {
                Some(f) => set_path(&mut out, &f.path, Value::Null),
                None => {
                    out.insert(k.clone(), Value::Null);
                }
            }
            continue;
        };
        match version.field_by_key(k) {
            Some(f) => {
                if let Some(x) = unmap(f, &text, passphrase) {
                    set_path(&mut out, &f.path, x);
                }
            }
            None => {
                out.insert(k.clone(), parse_json_like(&text));
            }
        }
    }
    out.insert("id".into(), Value::String(id.to_string()));
    out
}

/// What s3db.js's unmapper does to any text that looks like JSON.
fn parse_json_like(text: &str) -> Value {
    if text == "[object Object]" {
        return Value::Object(Map::new());
    }
    if text.starts_with('{') || text.starts_with('[') {
        if let Ok(v) = serde_json::from_str(text) {
            return v;
        }
    }
    Value::String(text.to_string())
}

fn unmap(f: &Field, text: &str, passphrase: &str) -> Option<Value> {
    let numbers = |decode: &dyn Fn(&str) -> Option<f64>| {
        if text.is_empty() {
            return Value::Array(Vec::new());
        }
        if text.starts_with('[') {
            if let Ok(v @ Value::Array(_)) = serde_json::from_str(text) {
                return v;
            }
        }
        Value::Array(
            v::split_array(text)
                .iter()
                .map(|i| decode(i).map_or(Value::Null, v::js_number))
                .collect(),
        )
    };
    Some(match &f.kind {
        Kind::String | Kind::Unsupported(_) => parse_json_like(text),
        Kind::Integer => {
            if text.is_empty() {
                return Some(Value::String(String::new()));
            }
            v::js_number(v::from_base62(text)?)
        }
        Kind::Decimal => {
            if text.is_empty() {
                return Some(Value::String(String::new()));
            }
            v::js_number(v::decode_decimal(text)?)
        }
        Kind::Boolean => Value::Bool(matches!(text, "true" | "1" | "yes" | "y")),
        Kind::StringArray => {
            if text.trim_start().starts_with('[') {
                if let Ok(v @ Value::Array(_)) = serde_json::from_str(text) {
                    return Some(v);
                }
            }
            Value::Array(
                v::split_array(text)
                    .into_iter()
                    .map(Value::String)
                    .collect(),
            )
        }
        Kind::IntegerArray => numbers(&v::from_base62),
        Kind::DecimalArray => numbers(&v::decode_decimal),
        Kind::JsonArray | Kind::Json => parse_json_like(text),
        Kind::Embedding => {
            if text.is_empty() || text == "^[]" {
                Value::Array(Vec::new())
            } else if let Some(items) = v::decode_embedding(text) {
                Value::Array(items.into_iter().map(v::js_number).collect())
            } else {
                parse_json_like(text)
            }
        }
        Kind::Uuid => Value::String(v::decode_uuid(text).unwrap_or_else(|| text.to_string())),
        Kind::DateTime => match v::from_base62(text).and_then(|ms| v::iso_of_ms(ms as i64)) {
            Some(iso) if !text.is_empty() => Value::String(iso),
            _ => Value::String(text.to_string()),
        },
        Kind::DateOnly => {
            match v::from_base62(text).and_then(|days| v::iso_of_ms((days * 86_400_000.0) as i64)) {
                Some(iso) if !text.is_empty() => Value::String(iso[..10].to_string()),
                _ => Value::String(text.to_string()),
            }
        }
        Kind::Money(d) => {
            super::packed::decode_money(text, *d).unwrap_or_else(|| parse_json_like(text))
        }
        Kind::DecimalFixed(p) => {
            super::packed::decode_fixed(text, *p).unwrap_or_else(|| parse_json_like(text))
        }
        Kind::Packed(p) if !text.is_empty() => {
            super::packed::unpack(*p, text).unwrap_or_else(|| parse_json_like(text))
        }
        Kind::Packed(_) => Value::String(String::new()),
        Kind::Ip4 => {
            Value::String(super::packed::decode_ip4(text).unwrap_or_else(|| text.to_string()))
        }
        Kind::Ip6 => {
            Value::String(super::packed::decode_ip6(text).unwrap_or_else(|| text.to_string()))
        }
        Kind::Geo(g) => {
            super::encoders::decode_geo(*g, text).unwrap_or_else(|| parse_json_like(text))
        }
        Kind::Binary(bits) => {
            let bytes = super::encoders::decode_binary(text);
            match bits {
                // s3db.js keeps the text when the bitmap's size is not the declared one.
                Some(n) if bytes.len() != (*n as usize).div_ceil(8) => {
                    Value::String(text.to_string())
                }
                _ => super::encoders::buffer_value(&bytes),
            }
        }
        Kind::Text(_) if text.starts_with("z:") || text.starts_with("z85:") => {
            super::encoders::decompress_text(text)
                .map_or_else(|| Value::String(text.to_string()), Value::String)
        }
        Kind::Text(_) | Kind::Password(_) => parse_json_like(text),
        Kind::Secret => match v::secret::decrypt(text, passphrase).as_deref() {
            // s3db.js seals an absent value as the text `undefined`.
            Some("undefined") => return None,
            Some("null") => Value::Null,
            Some(plain) => Value::String(plain.to_string()),
            None => Value::String(text.to_string()),
        },
    })
}

fn set_path(out: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut node = out;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            node.insert(part.to_string(), value);
            return;
        }
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else { return };
        node = next;
    }
}

pub fn lookup<'a>(data: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = data.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("`{field}` has type `{kind}`, which s3db.js's schema does not know: s3db-run reads it as stored text and does not write it")]
    Unsupported { field: String, kind: String },
    #[error("`{field}` {reason}")]
    Invalid { field: String, reason: String },
    #[error("the record's metadata is {size} bytes, over the {limit} the `enforce-limits` behavior allows")]
    TooLarge { size: usize, limit: usize },
    #[error("the record's metadata is {size} bytes, over {limit}: cutting values down (`truncate-data`) is not written by s3db-run yet")]
    Truncation { size: usize, limit: usize },
}

/// The object s3db.js would write for `data`: its body and its metadata (transport-encoded).
/// The body always changes with the content, so the object's ETag does too and
/// compare-and-swap works (s3db.js reads a plain body as the record, which it is).
pub fn encode(
    res: &JsResource,
    passphrase: &str,
    data: &Map<String, Value>,
) -> Result<(Bytes, UserMetadata), EncodeError> {
    let version = &res.current;
    let mapped = map(version, passphrase, data)?;
    let id = data.get("id").and_then(Value::as_str).unwrap_or_default();
    let limit = METADATA_LIMIT.saturating_sub(overhead(&version.name, res.timestamps, id));
    let total: usize = mapped.iter().map(|(k, v)| k.len() + v.len()).sum();
    // The record as s3db.js's own update writes it, secrets sealed as in the metadata.
    let plain = {
        let mut plain = data.clone();
        let sealed = |k: &Kind| matches!(k, Kind::Secret | Kind::Password(_));
        for f in version.fields.iter().filter(|f| sealed(&f.kind)) {
            if let Some(sealed) = mapped.get(&f.key) {
                set_path(&mut plain, &f.path, Value::String(sealed.clone()));
            }
        }
        Bytes::from(serde_json::to_vec(&plain).unwrap_or_default())
    };
    let plain_body = || plain.clone();
    let mapped_body =
        |m: &IndexMap<String, String>| Bytes::from(serde_json::to_vec(m).unwrap_or_default());
    let only_version = || {
        let mut m = IndexMap::new();
        m.insert("_v".to_string(), version.name.clone());
        m
    };
    let (metadata, body) = match res.behavior {
        Behavior::UserManaged if total > limit => (only_version(), mapped_body(&mapped)),
        Behavior::UserManaged => (mapped, plain_body()),
        Behavior::EnforceLimits if total > limit => {
            return Err(EncodeError::TooLarge { size: total, limit })
        }
        Behavior::TruncateData if total > limit => {
            return Err(EncodeError::Truncation { size: total, limit })
        }
        Behavior::EnforceLimits | Behavior::TruncateData => (mapped, plain_body()),
        Behavior::BodyOnly => {
            let mut m = only_version();
            let map: IndexMap<&str, &str> = version
                .fields
                .iter()
                .map(|f| (f.path.as_str(), f.key.as_str()))
                .collect();
            m.insert(
                "_map".into(),
                serde_json::to_string(&map).unwrap_or_default(),
            );
            (m, mapped_body(&mapped))
        }
        Behavior::BodyOverflow => {
            let flag = "$overflow".len() + "true".len();
            let mut fields: Vec<(&String, &String)> =
                mapped.iter().filter(|(k, _)| *k != "_v").collect();
            fields.sort_by_key(|(_, v)| v.len());
            let mut meta = only_version();
            let mut rest = IndexMap::new();
            let mut size = version.name.len();
            let mut reserved = limit;
            let mut overflow = false;
            for (k, val) in fields {
                if !overflow && size + val.len() > limit {
                    reserved = reserved.saturating_sub(flag);
                    overflow = true;
                }
                if !overflow && size + val.len() <= reserved {
                    meta.insert(k.clone(), val.clone());
                    size += val.len();
                } else {
                    rest.insert(k.clone(), val.clone());
                    overflow = true;
                }
            }
            if overflow {
                // The s3db.js client turns `$` into `_` in metadata keys.
                meta.insert("_overflow".into(), "true".into());
            }
            if rest.is_empty() {
                (meta, plain_body())
            } else {
                (meta, mapped_body(&rest))
            }
        }
    };
    let metadata = metadata
        .into_iter()
        .map(|(k, val)| (k, v::transport_encode(&val)))
        .collect();
    Ok((body, metadata))
}

/// The size of what s3db.js reserves for its own fields.
fn overhead(version: &str, timestamps: bool, id: &str) -> usize {
    let mut n = "_v".len() + version.len();
    if timestamps {
        n += 2 * ("createdAt".len() + 24);
    }
    if !id.is_empty() {
        n += "id".len() + id.len();
    }
    n
}

/// s3db.js's mapper: each attribute's value encoded under its key, plus `_v`.
fn map(
    version: &Version,
    passphrase: &str,
    data: &Map<String, Value>,
) -> Result<IndexMap<String, String>, EncodeError> {
    let mut out = IndexMap::new();
    for f in &version.fields {
        let Some(value) = lookup(data, &f.path) else {
            continue;
        };
        if let Some(text) = map_value(f, value, passphrase)? {
            out.insert(f.key.clone(), text);
        }
    }
    // Fields outside the schema are kept under their own (sanitised) names, as s3db.js does.
    for (k, value) in data {
        if k == "id"
            || version
                .fields
                .iter()
                .any(|f| f.path == *k || f.path.starts_with(&format!("{k}.")))
        {
            continue;
        }
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        out.insert(key, text_of(value));
    }
    out.insert("_v".into(), version.name.clone());
    Ok(out)
}

/// `String(value)` for scalars, JSON for the rest.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map(v::js_number_text).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn map_value(f: &Field, value: &Value, passphrase: &str) -> Result<Option<String>, EncodeError> {
    if value.is_null() {
        return Ok(Some("null".into()));
    }
    let items = || value.as_array().cloned().unwrap_or_default();
    Ok(Some(match &f.kind {
        Kind::Unsupported(kind) => {
            return Err(EncodeError::Unsupported {
                field: f.path.clone(),
                kind: kind.clone(),
            })
        }
        Kind::String => {
            let text = text_of(value);
            super::rules::normalize(&f.type_name, &text).unwrap_or(text)
        }
        Kind::Integer => as_number(value).map_or_else(|| text_of(value), v::to_base62),
        Kind::Decimal => as_number(value).map_or_else(|| text_of(value), v::encode_decimal),
        Kind::Boolean => {
            let truthy = matches!(value, Value::Bool(true))
                || value.as_f64() == Some(1.0)
                || matches!(value.as_str(), Some("true" | "1" | "yes" | "y" | "on"));
            (if truthy { "1" } else { "0" }).to_string()
        }
        Kind::StringArray if value.is_array() => {
            v::join_array(&items().iter().map(text_of).collect::<Vec<_>>())
        }
        Kind::IntegerArray if value.is_array() => items()
            .iter()
            .map(|i| as_number(i).map(v::to_base62).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|"),
        Kind::DecimalArray if value.is_array() => items()
            .iter()
            .map(|i| as_number(i).map(v::encode_decimal).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|"),
        Kind::Embedding if value.is_array() => v::encode_embedding(
            &items()
                .iter()
                .map(|i| as_number(i).unwrap_or(f64::NAN))
                .collect::<Vec<_>>(),
        ),
        Kind::StringArray | Kind::IntegerArray | Kind::DecimalArray | Kind::Embedding => {
            text_of(value)
        }
        Kind::JsonArray | Kind::Json => match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Kind::Uuid => {
            let text = text_of(value);
            v::encode_uuid(&text).unwrap_or(text)
        }
        Kind::DateTime => {
            let text = text_of(value);
            v::parse_time_ms(&text).map_or(text, |ms| v::to_base62(ms as f64))
        }
        Kind::DateOnly => {
            let text = text_of(value);
            v::parse_time_ms(&text)
                .map_or(text, |ms| v::to_base62((ms as f64 / 86_400_000.0).floor()))
        }
        Kind::Money(d) => super::packed::encode_money(value, *d).unwrap_or_else(|| text_of(value)),
        Kind::DecimalFixed(p) => {
            super::packed::encode_fixed(value, *p).unwrap_or_else(|| text_of(value))
        }
        Kind::Packed(p) => super::packed::pack(*p, value).unwrap_or_else(|| text_of(value)),
        Kind::Ip4 => {
            let text = text_of(value);
            super::packed::encode_ip4(&text).unwrap_or(text)
        }
        Kind::Ip6 => {
            let text = text_of(value);
            super::packed::encode_ip6(&text).unwrap_or(text)
        }
        Kind::Geo(g) => super::encoders::encode_geo(*g, value).unwrap_or_else(|| text_of(value)),
        Kind::Binary(bits) => {
            let invalid = |reason: String| EncodeError::Invalid {
                field: f.path.clone(),
                reason,
            };
            let bytes = super::encoders::buffer_bytes(value).ok_or_else(|| {
                invalid(r#"must be binary: {"type":"Buffer","data":[bytes…]}, as JSON.stringify writes a Node Buffer"#.into())
            })?;
            if let Some(n) = bits.filter(|n| bytes.len() != (*n as usize).div_ceil(8)) {
                return Err(invalid(format!(
                    "must hold {} bytes ({n} bits), not {}",
                    (n as usize).div_ceil(8),
                    bytes.len()
                )));
            }
            super::encoders::encode_binary(&bytes)
        }
        Kind::Text(c) => super::encoders::compress_text(&text_of(value), *c),
        Kind::Password(argon2id) => {
            let text = text_of(value);
            if super::encoders::is_password_hash(&text) {
                text
            } else {
                super::encoders::hash_password(&text, *argon2id).map_err(|reason| {
                    EncodeError::Invalid {
                        field: f.path.clone(),
                        reason,
                    }
                })?
            }
        }
        Kind::Secret => {
            let text = text_of(value);
            if v::secret::decrypt(&text, passphrase).is_some() {
                text
            } else {
                v::secret::encrypt(&text, passphrase)
            }
        }
    }))
}
