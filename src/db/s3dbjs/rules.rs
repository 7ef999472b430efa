//! The validation s3db.js applies on write (fastest-validator with its shorthand): a value it
//! would refuse is refused here, with the field's path.

use serde_json::{Map, Value};

use super::encoders::Geo;
use super::record::lookup;
use super::schema::{Field, Kind, Version};

/// The first field that s3db.js would refuse, and why.
pub fn validate(version: &Version, data: &Map<String, Value>) -> Result<(), (String, String)> {
    for f in &version.fields {
        if f.in_optional_object {
            if let Some((parent, _)) = f.path.rsplit_once('.') {
                if lookup(data, parent).is_none_or(Value::is_null) {
                    continue;
                }
            }
        }
        let value = lookup(data, &f.path);
        match value {
            None | Some(Value::Null) => {
                if !f.optional {
                    return Err((f.path.clone(), "is required".into()));
                }
            }
            Some(v) => check(f, v).map_err(|m| (f.path.clone(), m))?,
        }
    }
    Ok(())
}

fn num(f: &Field, rule: &str) -> Option<f64> {
    f.rules.get(rule).and_then(Value::as_f64)
}

fn flag(f: &Field, rule: &str) -> bool {
    f.rules.get(rule) == Some(&Value::Bool(true))
}

fn check(f: &Field, v: &Value) -> Result<(), String> {
    match f.type_name.as_str() {
        "geo" | "geo-lat" | "geo-lon" => {
            let (lo, hi) = match f.kind {
                Kind::Geo(Geo::Lat(_)) => (-90.0, 90.0),
                Kind::Geo(Geo::Lon(_)) => (-180.0, 180.0),
                _ => return Ok(()),
            };
            let n = v.as_f64().ok_or("must be a number")?;
            let min = num(f, "min").unwrap_or(lo);
            let max = num(f, "max").unwrap_or(hi);
            if n < min {
                return Err(format!("must be at least {min}"));
            }
            if n > max {
                return Err(format!("must be at most {max}"));
            }
            Ok(())
        }
        "cron" | "locale" | "currency" | "country" => v
            .as_str()
            .and_then(|s| normalize(&f.type_name, s))
            .map(|_| ())
            .ok_or_else(|| format!("must be a valid {}", f.type_name)),
        "string" | "secret" | "text" | "password" => {
            let s = v.as_str().ok_or("must be a string")?;
            text_rules(f, s)?;
            if let Some(Value::Array(allowed)) = f.rules.get("enum") {
                if !allowed.iter().any(|a| a == v) {
                    return Err(format!("must be one of {}", Value::Array(allowed.clone())));
                }
            }
            Ok(())
        }
        "enum" => {
            let allowed = f
                .rules
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if allowed.iter().any(|a| a == v) {
                Ok(())
            } else {
                Err(format!("must be one of {}", Value::Array(allowed)))
            }
        }
        "email" => {
            let s = v.as_str().ok_or("must be a string")?;
            let ok = s.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty()
                    && !user.contains(char::is_whitespace)
                    && host.contains('.')
                    && !host.starts_with('.')
                    && !host.ends_with('.')
                    && !host.contains(['@', ' '])
            });
            if ok {
                Ok(())
            } else {
                Err("must be a valid e-mail address".into())
            }
        }
        "url" => {
            let s = v.as_str().ok_or("must be a string")?;
            let rest = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .ok_or("must be a valid URL")?;
            if rest.is_empty() || rest.starts_with(['/', '.']) || rest.contains(' ') {
                return Err("must be a valid URL".into());
            }
            Ok(())
        }
        "uuid" => {
            let s = v.as_str().ok_or("must be a string")?;
            let groups: Vec<&str> = s.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            if lens == [8, 4, 4, 4, 12]
                && groups
                    .iter()
                    .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
            {
                Ok(())
            } else {
                Err("must be a valid UUID".into())
            }
        }
        "money" | "crypto" => match v.as_f64() {
            Some(n) if n >= 0.0 => Ok(()),
            Some(_) => Err("must be greater than or equal to 0".into()),
            None => Err("must be a number".into()),
        },
        "decimal" => v
            .is_number()
            .then_some(())
            .ok_or_else(|| "must be a number".into()),
        "number" => {
            // fastest-validator converts numeric text, as s3db.js configures it.
            let n = match v {
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
                other => other.as_f64(),
            }
            .ok_or("must be a number")?;
            if flag(f, "integer") && n.fract() != 0.0 {
                return Err("must be an integer".into());
            }
            if flag(f, "positive") && n <= 0.0 {
                return Err("must be a positive number".into());
            }
            if flag(f, "negative") && n >= 0.0 {
                return Err("must be a negative number".into());
            }
            if let Some(min) = num(f, "min").filter(|&m| n < m) {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = num(f, "max").filter(|&m| n > m) {
                return Err(format!("must be at most {max}"));
            }
            Ok(())
        }
        "boolean" | "bool" => {
            let converts = matches!(v, Value::Bool(_))
                || matches!(
                    v.as_str(),
                    Some("true" | "false" | "1" | "0" | "on" | "off")
                )
                || matches!(v.as_f64(), Some(n) if n == 0.0 || n == 1.0);
            converts
                .then_some(())
                .ok_or_else(|| "must be a boolean".into())
        }
        "array" => {
            let items = v.as_array().ok_or("must be an array")?;
            length_rules(f, items.len(), "items")?;
            if f.rules.get("empty") == Some(&Value::Bool(false)) && items.is_empty() {
                return Err("must not be empty".into());
            }
            let kind = f.rules.get("items").and_then(Value::as_str).unwrap_or("");
            for item in items {
                if kind.starts_with("string") && !item.is_string() {
                    return Err("items must be strings".into());
                }
                if kind.starts_with("number") && !item.is_number() {
                    return Err("items must be numbers".into());
                }
            }
            Ok(())
        }
        "embedding" => {
            let items = v.as_array().ok_or("must be an array of numbers")?;
            if !items.iter().all(Value::is_number) {
                return Err("must be an array of numbers".into());
            }
            if let Some(n) = num(f, "length").filter(|&n| items.len() as f64 != n) {
                return Err(format!("must have exactly {n} dimensions"));
            }
            Ok(())
        }
        "datetime" | "date" | "dateonly" => {
            let s = v.as_str().ok_or("must be a date")?;
            super::values::parse_time_ms(s)
                .map(|_| ())
                .ok_or_else(|| "must be a date".into())
        }
        "object" => v
            .is_object()
            .then_some(())
            .ok_or_else(|| "must be an object".into()),
        _ => Ok(()),
    }
}

fn text_rules(f: &Field, s: &str) -> Result<(), String> {
    if f.rules.get("empty") == Some(&Value::Bool(false)) && s.is_empty() {
        return Err("must not be empty".into());
    }
    let n = s.chars().count();
    length_rules(f, n, "characters")?;
    for (rule, op) in [("minlength", true), ("maxlength", false)] {
        if let Some(limit) = num(f, rule) {
            if (op && (n as f64) < limit) || (!op && (n as f64) > limit) {
                return Err(format!("`{rule}:{limit}` is not met ({n} characters)"));
            }
        }
    }
    Ok(())
}

fn length_rules(f: &Field, n: usize, what: &str) -> Result<(), String> {
    let n = n as f64;
    if let Some(min) = num(f, "min").filter(|&m| n < m) {
        return Err(format!("must have at least {min} {what}"));
    }
    if let Some(max) = num(f, "max").filter(|&m| n > m) {
        return Err(format!("must have at most {max} {what}"));
    }
    if f.type_name != "embedding" {
        if let Some(len) = num(f, "length").filter(|&l| n != l) {
            return Err(format!("must have exactly {len} {what}"));
        }
    }
    Ok(())
}

/// The value s3db.js stores for its string types that normalise (`cron` spacing, `locale`
/// case, `currency` and `country` upper case); None when it refuses the value.
pub fn normalize(type_name: &str, s: &str) -> Option<String> {
    let letters = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_alphabetic());
    match type_name {
        "cron" => {
            let parts: Vec<&str> = s.split_whitespace().collect();
            (parts.len() == 5 && parts.iter().all(|p| cron_field(p))).then(|| parts.join(" "))
        }
        "locale" => match s.split_once(['-', '_']) {
            Some((l, c)) if letters(l, 2) && letters(c, 2) => Some(format!(
                "{}-{}",
                l.to_ascii_lowercase(),
                c.to_ascii_uppercase()
            )),
            None if letters(s, 2) => Some(s.to_ascii_lowercase()),
            _ => None,
        },
        "currency" => letters(s, 3).then(|| s.to_ascii_uppercase()),
        "country" => letters(s, 2).then(|| s.to_ascii_uppercase()),
        _ => Some(s.to_string()),
    }
}

/// One field of s3db.js's cron check: `*`, `*/N`, or a list of `N`, `N-M`, `N/S`, `N-M/S`.
fn cron_field(p: &str) -> bool {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if p == "*" {
        return true;
    }
    if let Some(step) = p.strip_prefix("*/") {
        return digits(step);
    }
    p.split(',').all(|item| {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let range_ok = match range.split_once('-') {
            Some((a, b)) => digits(a) && digits(b),
            None => digits(range),
        };
        range_ok && step.is_none_or(digits)
    })
}
