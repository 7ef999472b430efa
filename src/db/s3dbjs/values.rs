//! s3db.js's value encodings, byte for byte: base62 numbers (`42` → `G`), decimals (`3.14`),
//! fixed-point embeddings (`^[q0U,-Q1O]`), `|`-joined arrays with `\` escapes, compact uuids and
//! timestamps, AES-GCM secrets, and the transport layer every metadata value passes through
//! (`u:` URL-encoded and `b:` base64 text, `d:` dictionary codes).
//!
//! JavaScript numbers are doubles: the arithmetic here is done on `f64` wherever s3db.js does
//! it on numbers, so the results (rounding included) are the ones s3db.js produces.

use base64::Engine;
use serde_json::Value;

const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const KEY_ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn digits(mut n: f64, alphabet: &[u8]) -> String {
    let base = alphabet.len() as f64;
    if n == 0.0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n >= 1.0 {
        out.push(alphabet[(n % base) as usize]);
        n = (n / base).floor();
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// `toBase62`: the integer part (JavaScript's `Math.floor`) in base 62, `-` for negatives.
pub fn to_base62(n: f64) -> String {
    if !n.is_finite() {
        return "undefined".into();
    }
    if n < 0.0 {
        return format!("-{}", digits(-n.floor(), ALPHABET));
    }
    digits(n.floor(), ALPHABET)
}

/// `fromBase62`; None for a character outside the alphabet.
pub fn from_base62(s: &str) -> Option<f64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut r = 0f64;
    for c in digits.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as f64;
        r = r * 62.0 + v;
    }
    Some(if negative { -r } else { r })
}

/// The metadata key of the attribute with registry index `n` (base 36: S3 lower-cases keys).
pub fn key_of(n: u64) -> String {
    digits(n as f64, KEY_ALPHABET)
}

/// JavaScript's `Number.prototype.toString` for the numbers a record holds.
pub fn js_number_text(n: f64) -> String {
    if n == n.trunc() && n.abs() < 1e21 {
        format!("{}", n as i128)
    } else {
        format!("{n}")
    }
}

/// A number as JSON, an integer when it is one (as `JSON.stringify` prints it).
pub fn js_number(n: f64) -> Value {
    if n == n.trunc() && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// `encodeDecimal`: base-62 integer part, the decimals as JavaScript prints them.
pub fn encode_decimal(n: f64) -> String {
    if !n.is_finite() {
        return "undefined".into();
    }
    let text = js_number_text(n.abs());
    let (int, dec) = match text.split_once('.') {
        Some((i, d)) => (i, Some(d)),
        None => (text.as_str(), None),
    };
    let int = to_base62(int.parse::<f64>().unwrap_or(0.0));
    let sign = if n < 0.0 { "-" } else { "" };
    match dec {
        Some(d) => format!("{sign}{int}.{d}"),
        None => format!("{sign}{int}"),
    }
}

pub fn decode_decimal(s: &str) -> Option<f64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, dec) = match rest.split_once('.') {
        Some((i, d)) => (i, Some(d)),
        None => (rest, None),
    };
    let int = from_base62(int)?;
    let n = match dec {
        Some(d) => format!("{}.{d}", js_number_text(int)).parse::<f64>().ok()?,
        None => int,
    };
    Some(if negative { -n } else { n })
}

/// JavaScript's `Math.round` (halves go up).
fn js_round(x: f64) -> f64 {
    (x + 0.5).floor()
}

/// `encodeFixedPointBatch` with s3db.js's precision of 6 decimals.
pub fn encode_embedding(values: &[f64]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|&n| {
            if !n.is_finite() {
                return String::new();
            }
            let scaled = js_round(n * 1e6);
            if scaled == 0.0 {
                return "0".into();
            }
            let sign = if scaled < 0.0 { "-" } else { "" };
            format!("{sign}{}", digits(scaled.abs(), ALPHABET))
        })
        .collect();
    format!("^[{}]", items.join(","))
}

pub fn decode_embedding(s: &str) -> Option<Vec<f64>> {
    let inner = s.strip_prefix("^[")?.strip_suffix(']')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner
        .split(',')
        .map(|part| from_base62(part).map(|r| r / 1e6))
        .collect()
}

/// `fromArray`: items joined with `|`, a `\` or `|` inside an item escaped with `\`.
pub fn join_array(items: &[String]) -> String {
    items
        .iter()
        .map(|i| i.replace('\\', "\\\\").replace('|', "\\|"))
        .collect::<Vec<_>>()
        .join("|")
}

/// `toArray`: the inverse of `join_array` (an empty text is an empty array).
pub fn split_array(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some() => current.extend(chars.next()),
            '|' => items.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    items.push(current);
    items
}

/// A uuid as four 6-character base-62 groups; None when it is not 32 hex digits.
pub fn encode_uuid(value: &str) -> Option<String> {
    let hex: String = value.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = String::new();
    for i in [0, 8, 16, 24] {
        let n = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        out.push_str(&format!("{:0>6}", to_base62(f64::from(n))));
    }
    Some(out)
}

pub fn decode_uuid(value: &str) -> Option<String> {
    if value.len() != 24 || value.contains('-') || !value.is_ascii() {
        return None;
    }
    let mut hex = String::new();
    for i in [0, 6, 12, 18] {
        let n = from_base62(&value[i..i + 6])?;
        hex.push_str(&format!("{:08x}", n as u64));
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Milliseconds since the epoch of an ISO 8601 time (what `new Date(text)` accepts of it).
pub fn parse_time_ms(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    None
}

/// `new Date(ms).toISOString()`.
pub fn iso_of_ms(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

const URL_PREFIXES: &[(&str, &str)] = &[
    ("/api/v1/", "@1"),
    ("/api/v2/", "@2"),
    ("/api/v3/", "@3"),
    ("/api/", "@a"),
    ("https://api.example.com/", "@A"),
    ("https://api.", "@H"),
    ("https://www.", "@W"),
    ("https://", "@h"),
    ("http://", "@t"),
    ("https://s3.amazonaws.com/", "@s"),
    ("https://s3-", "@S"),
    ("http://localhost:", "@L"),
    ("http://localhost", "@l"),
    ("/v1/", "@v"),
    ("/users/", "@u"),
    ("/products/", "@p"),
];

/// Whole values with a one-letter code (content types, then status words).
const EXACT: &[(&str, &str)] = &[
    ("application/json", "j"),
    ("application/xml", "X"),
    ("application/ld+json", "J"),
    ("text/html", "H"),
    ("text/plain", "T"),
    ("text/css", "C"),
    ("text/javascript", "V"),
    ("text/csv", "v"),
    ("image/png", "P"),
    ("image/jpeg", "I"),
    ("image/gif", "G"),
    ("image/svg+xml", "S"),
    ("image/webp", "W"),
    ("application/pdf", "Q"),
    ("application/zip", "z"),
    ("application/octet-stream", "o"),
    ("application/x-www-form-urlencoded", "u"),
    ("multipart/form-data", "F"),
    ("font/woff", "w"),
    ("font/woff2", "f"),
    ("processing", "p"),
    ("completed", "c"),
    ("succeeded", "s"),
    ("failed", "f"),
    ("cancelled", "x"),
    ("timeout", "t"),
    ("retrying", "r"),
    ("authorized", "a"),
    ("captured", "K"),
    ("refunded", "R"),
    ("declined", "d"),
    ("shipped", "h"),
    ("delivered", "D"),
    ("returned", "e"),
    ("in_transit", "i"),
    ("initialized", "n"),
    ("terminated", "m"),
];

fn dictionary_encode(value: &str) -> Option<String> {
    if let Some((_, code)) = EXACT.iter().rev().find(|(v, _)| *v == value) {
        let encoded = format!("d:{code}");
        return (encoded.len() < value.len()).then_some(encoded);
    }
    let mut prefixes: Vec<&(&str, &str)> = URL_PREFIXES.iter().collect();
    // Longest first; equal lengths keep their declared order (JavaScript's sort is stable).
    prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let (prefix, code) = prefixes.into_iter().find(|(p, _)| value.starts_with(p))?;
    let encoded = format!("d:{code}{}", &value[prefix.len()..]);
    (encoded.len() < value.len()).then_some(encoded)
}

fn dictionary_decode(value: &str) -> Option<String> {
    let payload = value.strip_prefix("d:")?;
    if payload.chars().count() == 1 {
        // The content-type code wins where a status word shares it, as in s3db.js's table.
        if let Some((v, _)) = EXACT.iter().rev().find(|(_, c)| *c == payload) {
            return Some((*v).to_string());
        }
    }
    if payload.starts_with('@') && payload.len() >= 2 && payload.is_char_boundary(2) {
        let (code, rest) = payload.split_at(2);
        if let Some((p, _)) = URL_PREFIXES.iter().find(|(_, c)| *c == code) {
            return Some(format!("{p}{rest}"));
        }
    }
    None
}

/// `encodeURIComponent`.
fn uri_component(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

fn b64(s: &str) -> String {
    format!(
        "b:{}",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

/// `metadataEncode`: how the s3db.js client writes a value into an S3 metadata header.
pub fn transport_encode(value: &str) -> String {
    if ["d:", "u:", "b:", "z:", "z85:"]
        .iter()
        .any(|p| value.starts_with(p))
    {
        return b64(value);
    }
    if let Some(d) = dictionary_encode(value) {
        return d;
    }
    let (mut ascii, mut latin1, mut multibyte) = (0usize, 0usize, 0usize);
    let units: Vec<u16> = value.encode_utf16().collect();
    for &c in &units {
        match c {
            0x20..=0x7e => ascii += 1,
            0x80..=0xff => latin1 += 1,
            _ => multibyte += 1,
        }
    }
    let _ = ascii;
    let len = units.len().max(1) as f64;
    if latin1 == 0 && multibyte == 0 {
        value.to_string()
    } else if multibyte > 0 {
        if multibyte as f64 / len > 0.3 {
            b64(value)
        } else {
            format!("u:{}", uri_component(value))
        }
    } else if latin1 as f64 / len > 0.5 {
        b64(value)
    } else {
        format!("u:{}", uri_component(value))
    }
}

/// `metadataDecode`. `null`/`undefined` come back as None (the value is absent).
pub fn transport_decode(value: &str) -> Option<String> {
    if value == "null" || value == "undefined" {
        return None;
    }
    if value.starts_with("d:") {
        if let Some(d) = dictionary_decode(value) {
            return Some(d);
        }
    }
    if value.len() > 2 {
        if let Some(rest) = value.strip_prefix("u:") {
            return Some(
                percent_encoding::percent_decode_str(rest)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .unwrap_or_else(|_| value.to_string()),
            );
        }
        if let Some(rest) = value.strip_prefix("b:") {
            return Some(
                base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| value.to_string()),
            );
        }
    }
    Some(value.to_string())
}

/// s3db.js's `secret` encryption: PBKDF2-SHA256 (100,000 rounds, 16-byte salt) into an
/// AES-256-GCM key, 12-byte nonce; base64 of salt, nonce and sealed text.
pub mod secret {
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    use base64::Engine;
    use rand::RngCore;

    const ROUNDS: u32 = 100_000;

    fn key(passphrase: &str, salt: &[u8]) -> Aes256Gcm {
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), salt, ROUNDS, &mut key);
        Aes256Gcm::new(&key.into())
    }

    pub fn encrypt(plain: &str, passphrase: &str) -> String {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut salt);
        rand::rng().fill_bytes(&mut nonce);
        let sealed = key(passphrase, &salt)
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(28 + sealed.len());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// None when the text is not a secret sealed with this passphrase.
    pub fn decrypt(sealed: &str, passphrase: &str) -> Option<String> {
        let data = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if data.len() < 28 + 16 {
            return None;
        }
        let (salt, rest) = data.split_at(16);
        let (nonce, sealed) = rest.split_at(12);
        let plain = key(passphrase, salt)
            .decrypt(Nonce::from_slice(nonce), sealed)
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_encode_as_s3db_js_writes_them() {
        assert_eq!(to_base62(42.0), "G");
        assert_eq!(to_base62(0.0), "0");
        assert_eq!(encode_decimal(-7.0), "-7");
        assert_eq!(encode_decimal(2.71), "2.71");
        assert_eq!(encode_decimal(62.5), "10.5");
        assert_eq!(decode_decimal("10.5"), Some(62.5));
        assert_eq!(decode_decimal("-G"), Some(-42.0));
        assert_eq!(key_of(21), "l");
        assert_eq!(key_of(36), "10");
        assert_eq!(js_number(2.0), Value::from(2));
    }

    #[test]
    fn embeddings_uuids_and_arrays_match_the_real_package() {
        // Values observed on S3 after s3db.js 21.6.2 wrote them.
        assert_eq!(
            encode_embedding(&[0.1, -0.2, 0.3, 1.0]),
            "^[q0U,-Q1O,1g2I,4c92]"
        );
        assert_eq!(
            decode_embedding("^[q0U,-Q1O,1g2I,4c92]"),
            Some(vec![0.1, -0.2, 0.3, 1.0])
        );
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(
            encode_uuid(uuid).as_deref(),
            Some("0kIf1d4g6oxB30AzXg0mOiNa")
        );
        assert_eq!(
            decode_uuid("0kIf1d4g6oxB30AzXg0mOiNa").as_deref(),
            Some(uuid)
        );
        let items = vec!["a|b".to_string(), "c\\d".into(), String::new()];
        assert_eq!(join_array(&items), "a\\|b|c\\\\d|");
        assert_eq!(split_array(&join_array(&items)), items);
        assert_eq!(split_array(""), Vec::<String>::new());
    }

    #[test]
    fn the_transport_layer_matches_the_real_package() {
        assert_eq!(transport_encode("Zoë | pipe"), "u:Zo%C3%AB%20%7C%20pipe");
        assert_eq!(transport_encode("é"), "b:w6k=");
        assert_eq!(transport_encode("https://e.x"), "d:@he.x");
        assert_eq!(transport_encode("processing"), "d:p");
        assert_eq!(transport_encode("plain"), "plain");
        assert_eq!(transport_encode("u:x"), "b:dTp4");
        for v in [
            "Zoë | pipe",
            "é",
            "https://e.x",
            "processing",
            "u:x",
            "日本語",
        ] {
            assert_eq!(transport_decode(&transport_encode(v)).as_deref(), Some(v));
        }
        assert_eq!(transport_decode("null"), None);
    }

    #[test]
    fn secrets_round_trip_and_fail_closed() {
        let sealed = secret::encrypt("hunter2", "sekret");
        assert_eq!(
            secret::decrypt(&sealed, "sekret").as_deref(),
            Some("hunter2")
        );
        assert_eq!(secret::decrypt(&sealed, "other"), None);
        // Sealed by s3db.js 21.6.2 with its default passphrase, `secret`.
        let theirs = "F6mAeaRXr8wADugXDRajj+BpvYeeQZVvmbZlIHUCytfKPT7/x6tMrFRlXuf1iDY+kZfu";
        assert_eq!(
            secret::decrypt(theirs, "secret").as_deref(),
            Some("hunter2")
        );
        assert_eq!(secret::decrypt(theirs, "sekret"), None);
    }

    #[test]
    fn times_are_milliseconds_in_base62() {
        let ms = parse_time_ms("2024-01-02T03:04:05.000Z").unwrap();
        assert_eq!(to_base62(ms as f64), "u0aFb6g");
        assert_eq!(iso_of_ms(ms).as_deref(), Some("2024-01-02T03:04:05.000Z"));
    }
}
