//! The packings s3db.js's mapper applies to some string types, and its money and fixed-point
//! decimals: each value in base 62, read back in s3db.js's canonical form.

use serde_json::Value;

use super::schema::Packing;
use super::values::{from_base62, js_number, to_base62};

fn js_round(x: f64) -> f64 {
    (x + 0.5).floor()
}

/// `encodeMoney`: `$` and the value in minor units; None for what s3db.js keeps as it is.
pub fn encode_money(value: &Value, decimals: u32) -> Option<String> {
    let n = value.as_f64()?;
    Some(format!(
        "${}",
        to_base62(js_round(n * 10f64.powi(decimals as i32)))
    ))
}

pub fn decode_money(text: &str, decimals: u32) -> Option<Value> {
    let n = from_base62(text.strip_prefix('$')?)?;
    Some(js_number(n / 10f64.powi(decimals as i32)))
}

/// `encodeFixedPoint`.
pub fn encode_fixed(value: &Value, precision: u32) -> Option<String> {
    let n = value.as_f64()?;
    let scaled = js_round(n * 10f64.powi(precision as i32));
    if scaled == 0.0 {
        return Some("^0".into());
    }
    Some(format!("^{}", to_base62(scaled)))
}

pub fn decode_fixed(text: &str, precision: u32) -> Option<Value> {
    let n = from_base62(text.strip_prefix('^')?)?;
    Some(js_number(n / 10f64.powi(precision as i32)))
}

/// The packed text, or None when s3db.js stores the value as it is.
pub fn pack(p: Packing, value: &Value) -> Option<String> {
    if p == Packing::Duration {
        if let Some(n) = value.as_f64().filter(|n| n.is_finite() && *n >= 0.0) {
            return Some(to_base62(js_round(n)));
        }
    }
    let s = value.as_str().filter(|s| !s.is_empty())?;
    match p {
        Packing::TimeOnly => {
            let (hms, ms) = match s.split_once('.') {
                Some((a, b)) if (1..=3).contains(&b.len()) => {
                    (a, format!("{b:0<3}").parse::<f64>().ok()?)
                }
                Some(_) => return None,
                None => (s, 0.0),
            };
            let parts: Vec<&str> = hms.split(':').collect();
            if !(2..=3).contains(&parts.len())
                || parts
                    .iter()
                    .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            if parts.len() == 2 && ms != 0.0 {
                return None;
            }
            let n = |i: usize| {
                parts
                    .get(i)
                    .and_then(|p| p.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            Some(to_base62(
                (n(0) * 3600.0 + n(1) * 60.0 + n(2)) * 1000.0 + ms,
            ))
        }
        Packing::Mac => {
            let hex: String = s.chars().filter(|&c| c != ':').collect();
            (hex.len() == 12)
                .then(|| u64::from_str_radix(&hex, 16).ok())
                .flatten()
                .map(|n| format!("{:0>9}", to_base62(n as f64)))
        }
        Packing::Cidr => {
            let (ip, prefix) = s.split_once('/')?;
            let parts: Vec<u32> = ip.split('.').map(|p| p.parse().unwrap_or(0)).collect();
            let get = |i: usize| parts.get(i).copied().unwrap_or(0) & 0xff;
            let n = (get(0) << 24) | (get(1) << 16) | (get(2) << 8) | get(3);
            let prefix: f64 = prefix.parse().ok()?;
            Some(format!(
                "{:0>6}{}",
                to_base62(f64::from(n)),
                to_base62(prefix)
            ))
        }
        Packing::Semver => {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 3
                || parts
                    .iter()
                    .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return None;
            }
            let n = |i: usize| parts[i].parse::<f64>().unwrap_or(0.0);
            Some(to_base62(n(0) * 1_000_000.0 + n(1) * 1000.0 + n(2)))
        }
        Packing::Phone => {
            let digits: String = s
                .strip_prefix('+')?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some(to_base62(digits.parse::<f64>().ok()?))
        }
        Packing::Color => {
            let hex = s.strip_prefix('#')?;
            (hex.len() == 6)
                .then(|| u32::from_str_radix(hex, 16).ok())
                .flatten()
                .map(|n| format!("{:0>5}", to_base62(f64::from(n))))
        }
        Packing::Duration => duration_ms(s).map(to_base62),
        Packing::Ean => {
            if !(8..=14).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let prefix = match s.len() {
                8 => "0",
                12 => "2",
                13 => "1",
                14 => "3",
                _ => return None,
            };
            Some(format!("{prefix}{}", to_base62(s.parse::<f64>().ok()?)))
        }
    }
}

/// ISO 8601 (`P1DT2H3M4.5S`) or shorthand (`1h30m`, `250ms`) durations, in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    if let Some(rest) = s.strip_prefix('P') {
        if rest.is_empty() || rest == "T" {
            return None;
        }
        let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
        let mut total = 0.0;
        let days = date.strip_suffix('D');
        if !date.is_empty() {
            total += days?.parse::<f64>().ok()? * 86_400.0;
        }
        let mut num = String::new();
        for c in time.chars() {
            match c {
                'H' => total += std::mem::take(&mut num).parse::<f64>().ok()? * 3600.0,
                'M' => total += std::mem::take(&mut num).parse::<f64>().ok()? * 60.0,
                'S' => total += std::mem::take(&mut num).parse::<f64>().ok()?,
                c => num.push(c),
            }
        }
        if !num.is_empty() {
            return None;
        }
        return Some(js_round(total * 1000.0));
    }
    let lower = s.to_lowercase();
    let grab = |text: &str, unit: &str| -> Option<f64> {
        let at = text.find(unit)?;
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map_or(0, |i| i + 1);
        text[start..at].parse().ok()
    };
    let mut total = 0.0;
    let mut matched = false;
    let ms = grab(&lower, "ms");
    if let Some(v) = ms {
        total += v.trunc();
        matched = true;
    }
    let clean = match ms {
        Some(_) => lower.replace(&format!("{}ms", ms.unwrap_or(0.0) as u64), ""),
        None => lower.clone(),
    };
    for (unit, factor) in [
        ("d", 86_400_000.0),
        ("h", 3_600_000.0),
        ("m", 60_000.0),
        ("s", 1000.0),
    ] {
        if let Some(v) = grab(&clean, unit) {
            total += v * factor;
            matched = true;
        }
    }
    matched.then(|| js_round(total))
}

/// The value s3db.js's unmapper gives back for a packed text.
pub fn unpack(p: Packing, text: &str) -> Option<Value> {
    let s = |v: String| Some(Value::String(v));
    match p {
        Packing::TimeOnly => {
            let total = from_base62(text)? as u64;
            let (ms, secs) = (total % 1000, total / 1000);
            s(format!(
                "{:02}:{:02}:{:02}.{ms:03}",
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            ))
        }
        Packing::Mac if text.len() == 9 && !text.contains(':') => {
            let hex = format!("{:012x}", from_base62(text)? as u64);
            s(hex
                .as_bytes()
                .chunks(2)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(":"))
        }
        Packing::Cidr if text.len() == 7 && !text.contains('.') => {
            let ip = from_base62(&text[..6])? as u32;
            let prefix = from_base62(&text[6..])?;
            s(format!(
                "{}.{}.{}.{}/{prefix}",
                ip >> 24,
                (ip >> 16) & 0xff,
                (ip >> 8) & 0xff,
                ip & 0xff
            ))
        }
        Packing::Semver if !text.contains('.') => {
            let n = from_base62(text)? as u64;
            s(format!(
                "{}.{}.{}",
                n / 1_000_000,
                (n % 1_000_000) / 1000,
                n % 1000
            ))
        }
        Packing::Phone if !text.starts_with('+') => s(format!("+{}", from_base62(text)? as u64)),
        Packing::Color if text.len() == 5 && !text.starts_with('#') => {
            s(format!("#{:06x}", from_base62(text)? as u64))
        }
        Packing::Duration if !text.starts_with('P') => {
            let ms = from_base62(text)? as u64;
            let (days, hours, minutes, seconds, millis) = (
                ms / 86_400_000,
                (ms % 86_400_000) / 3_600_000,
                (ms % 3_600_000) / 60_000,
                (ms % 60_000) / 1000,
                ms % 1000,
            );
            let mut out = String::from("P");
            if days > 0 {
                out.push_str(&format!("{days}D"));
            }
            if hours + minutes + seconds + millis > 0 {
                out.push('T');
                if hours > 0 {
                    out.push_str(&format!("{hours}H"));
                }
                if minutes > 0 {
                    out.push_str(&format!("{minutes}M"));
                }
                match (seconds, millis) {
                    (0, 0) => {}
                    (s, 0) => out.push_str(&format!("{s}S")),
                    (s, m) => out.push_str(&format!("{s}.{m:03}S")),
                }
            }
            s(if out == "P" { "PT0S".into() } else { out })
        }
        Packing::Ean
            if text.starts_with(['0', '1', '2', '3'])
                && !(text.bytes().all(|b| b.is_ascii_digit())
                    && (8..=14).contains(&text.len())) =>
        {
            let len = match &text[..1] {
                "0" => 8,
                "1" => 13,
                "2" => 12,
                _ => 14,
            };
            s(format!("{:0>len$}", from_base62(&text[1..])? as u64))
        }
        _ => s(text.to_string()),
    }
}

/// `encodeIPv4`: the four octets in base64; None for what is not an IPv4 address.
pub fn encode_ip4(text: &str) -> Option<String> {
    use base64::Engine;
    let ip: std::net::Ipv4Addr = text.parse().ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(ip.octets()))
}

pub fn decode_ip4(text: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let octets: [u8; 4] = bytes.try_into().ok()?;
    Some(std::net::Ipv4Addr::from(octets).to_string())
}

/// `encodeIPv6`: the sixteen bytes in base64.
pub fn encode_ip6(text: &str) -> Option<String> {
    use base64::Engine;
    let ip: std::net::Ipv6Addr = text.parse().ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(ip.octets()))
}

/// `decodeIPv6`, compressed as s3db.js compresses it (the longest run of two or more zero
/// groups, the first of equals, becomes `::`).
pub fn decode_ip6(text: &str) -> Option<String> {
    use base64::Engine;
    if text.len() != 24 {
        if let Ok(ip) = text.parse::<std::net::Ipv6Addr>() {
            return Some(compress_ip6(&ip.segments()).unwrap_or_else(|| text.to_string()));
        }
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    compress_ip6(&std::net::Ipv6Addr::from(bytes).segments())
}

fn compress_ip6(groups: &[u16; 8]) -> Option<String> {
    let hex: Vec<String> = groups.iter().map(|g| format!("{g:x}")).collect();
    let (mut best, mut run): ((usize, usize), (usize, usize)) = ((0, 0), (0, 0));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            if run.1 == 0 {
                run = (i, 1);
            } else {
                run.1 += 1;
            }
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    if best.1 < 2 {
        return Some(hex.join(":"));
    }
    let before = hex[..best.0].join(":");
    let after = hex[best.0 + best.1..].join(":");
    Some(format!("{before}::{after}"))
}
