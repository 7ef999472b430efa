//! The native storage layout and the encoding of a record, in one place so that a second codec
//! (s3db.js's metadata form) can be added beside it:
//!
//! - `s3db.json`: the database's metadata;
//! - `resource=NAME/data/id=ID`: one JSON object per record, in the body so the ETag covers the
//!   content;
//! - `resource=NAME/partition=P/FIELD=VALUE/…/id=ID`: partition references (empty bodies).
//!
//! Ids and values are percent-encoded in keys, so any string is safe in them.

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

pub const METADATA_KEY: &str = "s3db.json";

/// Everything but the URL "unreserved" characters is encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

pub fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

pub fn data_prefix(resource: &str) -> String {
    format!("resource={}/data/", encode(resource))
}

pub fn record_key(resource: &str, id: &str) -> String {
    format!("{}id={}", data_prefix(resource), encode(id))
}

/// The id in a record or partition-reference key.
pub fn id_from_key(key: &str) -> Option<String> {
    key.rsplit('/').next()?.strip_prefix("id=").map(decode)
}

pub fn partition_root(resource: &str, partition: &str) -> String {
    format!(
        "resource={}/partition={}/",
        encode(resource),
        encode(partition)
    )
}

/// The key prefix of a partition for the leading `values` (fields in declaration order).
pub fn partition_prefix(resource: &str, partition: &str, values: &[(&str, String)]) -> String {
    let mut key = partition_root(resource, partition);
    for (field, value) in values {
        key.push_str(&format!("{}={}/", encode(field), encode(value)));
    }
    key
}

pub fn partition_key(
    resource: &str,
    partition: &str,
    values: &[(&str, String)],
    id: &str,
) -> String {
    format!(
        "{}id={}",
        partition_prefix(resource, partition, values),
        encode(id)
    )
}

/// A record's body: the JSON object with its `id`.
pub fn encode_record(data: &Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(data).unwrap_or_else(|_| b"{}".to_vec()))
}

pub fn decode_record(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "a record body must be a JSON object, found {}",
            kind(&other)
        )),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_native_layout_and_round_trip_ids() {
        assert_eq!(
            record_key("orders", "a/b c"),
            "resource=orders/data/id=a%2Fb%20c"
        );
        assert_eq!(
            id_from_key(&record_key("orders", "a/b c")).as_deref(),
            Some("a/b c")
        );
        let values = [("status", "paid".to_string())];
        assert_eq!(
            partition_key("orders", "byStatus", &values, "x1"),
            "resource=orders/partition=byStatus/status=paid/id=x1"
        );
    }
}
