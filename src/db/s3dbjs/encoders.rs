//! s3db.js's encoders for coordinates, binary values, compressed text and password hashes
//! (`geo:*`, `buffer`, `bits:N`, `text`, `password`), byte for byte as 21.6.2 writes them.

use std::io::{Read, Write};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::values::{from_base62, js_number, to_base62};

/// Which coordinate a `geo:` attribute holds, and its decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geo {
    Lat(u32),
    Lon(u32),
    Point(u32),
}

/// `text` compression as the attribute declares it (`compress:`, `threshold:`, `encoding:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextCompression {
    pub level: u32,
    pub threshold: usize,
    pub base85: bool,
}

impl Default for TextCompression {
    fn default() -> Self {
        Self {
            level: 6,
            threshold: 100,
            base85: false,
        }
    }
}

fn scale(precision: u32) -> f64 {
    10f64.powi(precision as i32)
}

fn encode_coordinate(n: f64, offset: f64, precision: u32) -> Option<String> {
    if !n.is_finite() || n < -offset || n > offset {
        return None;
    }
    Some(format!(
        "~{}",
        to_base62(((n + offset) * scale(precision) + 0.5).floor())
    ))
}

fn decode_coordinate(text: &str, offset: f64, precision: u32) -> Option<f64> {
    Some(from_base62(text.strip_prefix('~')?)? / scale(precision) - offset)
}

fn point_of(value: &Value) -> Option<(f64, f64)> {
    match value {
        Value::Array(a) if a.len() == 2 => Some((a[0].as_f64()?, a[1].as_f64()?)),
        Value::Object(o) => {
            let pair = |a: &str, b: &str| Some((o.get(a)?.as_f64()?, o.get(b)?.as_f64()?));
            pair("lat", "lon").or_else(|| pair("latitude", "longitude"))
        }
        _ => None,
    }
}

/// The stored text of a coordinate; None for a value s3db.js stores as it is.
pub fn encode_geo(geo: Geo, value: &Value) -> Option<String> {
    match geo {
        Geo::Lat(p) => encode_coordinate(value.as_f64()?, 90.0, p),
        Geo::Lon(p) => encode_coordinate(value.as_f64()?, 180.0, p),
        Geo::Point(p) => {
            let (lat, lon) = point_of(value)?;
            Some(encode_coordinate(lat, 90.0, p)? + &encode_coordinate(lon, 180.0, p)?)
        }
    }
}

/// What s3db.js's `get` returns for a stored coordinate: a number, or for a point
/// `{latitude, longitude}`.
pub fn decode_geo(geo: Geo, text: &str) -> Option<Value> {
    match geo {
        Geo::Lat(p) => Some(js_number(decode_coordinate(text, 90.0, p)?)),
        Geo::Lon(p) => Some(js_number(decode_coordinate(text, 180.0, p)?)),
        Geo::Point(p) => {
            let parts: Vec<&str> = text.split('~').filter(|s| !s.is_empty()).collect();
            let [lat, lon] = parts.as_slice() else {
                return None;
            };
            Some(json!({
                "latitude": js_number(from_base62(lat)? / scale(p) - 90.0),
                "longitude": js_number(from_base62(lon)? / scale(p) - 180.0),
            }))
        }
    }
}

/// A Node `Buffer` as `JSON.stringify` writes it: `{"type":"Buffer","data":[…]}`. s3db-run
/// shows binary values in that shape, so what it prints is what an s3db.js application prints.
pub fn buffer_value(bytes: &[u8]) -> Value {
    json!({ "type": "Buffer", "data": bytes })
}

/// The bytes of a value in the Buffer shape; None for anything else.
pub fn buffer_bytes(value: &Value) -> Option<Vec<u8>> {
    let o: &Map<String, Value> = value.as_object()?;
    if o.get("type")?.as_str()? != "Buffer" {
        return None;
    }
    o.get("data")?
        .as_array()?
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

pub fn encode_binary(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Node's `Buffer.from(text, 'base64')`, which skips what is not base64 rather than failing.
pub fn decode_binary(text: &str) -> Vec<u8> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    let mut clean: String = text
        .chars()
        .filter_map(|c| match c {
            '-' => Some('+'),
            '_' => Some('/'),
            c if c.is_ascii_alphanumeric() || c == '+' || c == '/' => Some(c),
            _ => None,
        })
        .collect();
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    LENIENT.decode(clean).unwrap_or_default()
}

// Ninety characters, of which s3db.js's `% 85` only ever writes the first 85.
const BASE85: &[u8] =
    b"!#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_abcdefghijklmnopqrstuvwxyz{|}~";

// s3db.js's base-85 alphabet is neither Ascii85's nor Z85's, so no crate speaks it.
fn encode_base85(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 5 / 4 + 5);
    for chunk in bytes.chunks(4) {
        let mut group = [0u8; 4];
        group[..chunk.len()].copy_from_slice(chunk);
        let mut val = u32::from_be_bytes(group);
        let mut digits = [0u8; 5];
        for d in digits.iter_mut().rev() {
            *d = BASE85[(val % 85) as usize];
            val /= 85;
        }
        let keep = if chunk.len() == 4 { 5 } else { chunk.len() + 1 };
        out.extend(digits[..keep].iter().map(|&b| b as char));
    }
    out
}

fn decode_base85(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 4 / 5 + 4);
    for chunk in text.as_bytes().chunks(5) {
        let mut val: u64 = 0;
        for i in 0..5 {
            let digit = match chunk.get(i) {
                Some(c) => BASE85.iter().position(|b| b == c)? as u64,
                None => 84,
            };
            val = val * 85 + digit;
        }
        let bytes = (val as u32).to_be_bytes();
        let keep = if chunk.len() == 5 {
            4
        } else {
            chunk.len().checked_sub(1)?
        };
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

/// `compressText`: raw deflate behind `z:` (base64) or `z85:`, only when it is shorter.
pub fn compress_text(text: &str, c: TextCompression) -> String {
    if text.is_empty() || text.len() < c.threshold {
        return text.to_string();
    }
    let mut enc =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(c.level.min(9)));
    if enc.write_all(text.as_bytes()).is_err() {
        return text.to_string();
    }
    let Ok(deflated) = enc.finish() else {
        return text.to_string();
    };
    let encoded = if c.base85 {
        format!("z85:{}", encode_base85(&deflated))
    } else {
        format!("z:{}", STANDARD.encode(&deflated))
    };
    if encoded.len() >= text.len() {
        text.to_string()
    } else {
        encoded
    }
}

/// `decompressText`; None when a `z:` payload does not inflate (s3db.js then keeps the text).
pub fn decompress_text(text: &str) -> Option<String> {
    let deflated = if let Some(rest) = text.strip_prefix("z85:") {
        decode_base85(rest)?
    } else if let Some(rest) = text.strip_prefix("z:") {
        STANDARD.decode(rest).ok()?
    } else {
        return Some(text.to_string());
    };
    let mut out = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut out)
        .ok()?;
    Some(out)
}

/// Whether s3db.js takes `text` as a password hash already (full or compacted) and keeps it.
pub fn is_password_hash(text: &str) -> bool {
    let compact_bcrypt = text.starts_with('$')
        && !text.starts_with("$2")
        && !text.starts_with("$argon2")
        && text[1..].find('$').is_some_and(|i| i > 0);
    let compact_argon = text.starts_with('$') && text.contains('|');
    (text.starts_with("$2") && text.len() == 60)
        || compact_bcrypt
        || text.starts_with("$argon2")
        || compact_argon
}

/// The hash s3db.js's validator stores for a `password` attribute, compacted as it compacts
/// it: bcrypt cost 12 (`$` base-62 cost `$` salt and digest), or argon2id with its defaults
/// (64 MiB, 3 passes, 4 lanes; `$v|log2 m|t|p$salt$digest`).
pub fn hash_password(plain: &str, argon2id: bool) -> Result<String, String> {
    if plain.is_empty() {
        return Err("a password must not be empty".into());
    }
    if argon2id {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(65536, 3, 4, None).map_err(|e| e.to_string())?;
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = hasher
            .hash_password(plain.as_bytes(), &salt)
            .map_err(|e| e.to_string())?;
        let salt = hash.salt.map(|s| s.to_string()).unwrap_or_default();
        let digest = hash.hash.map(|h| h.to_string()).unwrap_or_default();
        return Ok(format!(
            "${}|{}|{}|{}${salt}${digest}",
            to_base62(19.0),
            to_base62(16.0),
            to_base62(3.0),
            to_base62(4.0)
        ));
    }
    let full = bcrypt::hash_with_result(plain, 12)
        .map_err(|e| e.to_string())?
        .format_for_version(bcrypt::Version::TwoB);
    let mut parts = full.splitn(4, '$').skip(2);
    let (Some(cost), Some(rest)) = (parts.next(), parts.next()) else {
        return Err("bcrypt returned an unexpected hash".into());
    };
    let cost: f64 = cost
        .parse()
        .map_err(|_| "bcrypt returned an unexpected cost")?;
    Ok(format!("${}${rest}", to_base62(cost)))
}

/// Checks `plain` against a stored (full or compacted) hash, as s3db.js's `verifyPassword`.
pub fn verify_password(plain: &str, stored: &str) -> bool {
    if let Some(rest) = stored
        .strip_prefix('$')
        .filter(|_| !stored.starts_with("$2") && !stored.starts_with("$argon2"))
    {
        if let Some((params, tail)) = rest.split_once('$') {
            if params.contains('|') {
                let p: Vec<f64> = params.split('|').filter_map(from_base62).collect();
                let [v, m, t, l] = p.as_slice() else {
                    return false;
                };
                let full = format!("$argon2id$v={v}$m={},t={t},p={l}${tail}", 2f64.powf(*m));
                return verify_argon(plain, &full);
            }
            let Some(cost) = from_base62(params) else {
                return false;
            };
            return bcrypt::verify(plain, &format!("$2b${:02}${tail}", cost as u32))
                .unwrap_or(false);
        }
        return false;
    }
    if stored.starts_with("$argon2") {
        return verify_argon(plain, stored);
    }
    bcrypt::verify(plain, stored).unwrap_or(false)
}

fn verify_argon(plain: &str, full: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(full)
        .and_then(|h| argon2::Argon2::default().verify_password(plain.as_bytes(), &h))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_encode_as_s3db_js_writes_them() {
        // Values the real package wrote (geo:lat, geo:lon, geo:point, 6 places).
        let lat = encode_geo(Geo::Lat(6), &json!(40.712776)).unwrap();
        assert!(lat.starts_with('~'));
        assert_eq!(
            decode_geo(Geo::Lat(6), &lat).unwrap().as_f64().unwrap(),
            from_base62(&lat[1..]).unwrap() / 1e6 - 90.0
        );
        assert_eq!(encode_geo(Geo::Lat(6), &json!(91)), None);
        let point = encode_geo(Geo::Point(4), &json!({"lat": -23.5505, "lon": -46.6333})).unwrap();
        assert_eq!(point.matches('~').count(), 2);
        let back = decode_geo(Geo::Point(4), &point).unwrap();
        assert!((back["latitude"].as_f64().unwrap() + 23.5505).abs() < 1e-9);
        assert!((back["longitude"].as_f64().unwrap() + 46.6333).abs() < 1e-9);
    }

    #[test]
    fn base85_round_trips_every_tail_length() {
        for n in 0..12u8 {
            let bytes: Vec<u8> = (0..n)
                .map(|i| i.wrapping_mul(97).wrapping_add(200))
                .collect();
            assert_eq!(decode_base85(&encode_base85(&bytes)).unwrap(), bytes, "{n}");
        }
    }

    #[test]
    fn text_compresses_only_when_it_pays() {
        let long = "the quick brown fox jumps over the lazy dog. ".repeat(10);
        for base85 in [false, true] {
            let c = TextCompression {
                base85,
                ..Default::default()
            };
            let z = compress_text(&long, c);
            assert!(z.starts_with(if base85 { "z85:" } else { "z:" }), "{z}");
            assert!(z.len() < long.len());
            assert_eq!(decompress_text(&z).unwrap(), long);
        }
        assert_eq!(compress_text("short", TextCompression::default()), "short");
    }

    #[test]
    fn binary_values_are_node_buffers() {
        let v = buffer_value(&[0, 1, 255]);
        assert_eq!(v, json!({"type": "Buffer", "data": [0, 1, 255]}));
        assert_eq!(buffer_bytes(&v).unwrap(), vec![0, 1, 255]);
        assert_eq!(
            decode_binary(&encode_binary(&[9, 8, 7, 6])),
            vec![9, 8, 7, 6]
        );
        assert_eq!(buffer_bytes(&json!("AAE=")), None);
    }

    #[test]
    fn password_hashes_are_compacted_and_verify() {
        let h = hash_password("hunter2", false).unwrap();
        assert!(h.starts_with("$c$"), "{h}");
        assert!(is_password_hash(&h));
        assert!(verify_password("hunter2", &h));
        assert!(!verify_password("hunter3", &h));
        assert!(!is_password_hash("hunter2"));
    }
}
