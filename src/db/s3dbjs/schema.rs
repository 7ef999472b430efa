//! s3db.js's `s3db.json`: resources with versions, each version's attribute tree, and the
//! schema registry that gives every attribute path its short metadata key.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::values::key_of;

/// Whether `s3db.json`'s content is s3db.js's (it has a `version` and resources with a
/// `currentVersion`, and not the native `formatVersion`).
pub fn is_s3dbjs(metadata: &Value) -> bool {
    metadata.get("formatVersion").is_none()
        && metadata.get("s3dbVersion").is_some()
        && metadata.get("version").is_some()
}

/// What happens to values past S3's 2 KB of metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    UserManaged,
    BodyOverflow,
    BodyOnly,
    TruncateData,
    EnforceLimits,
}

impl Behavior {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "user-managed" => Behavior::UserManaged,
            "body-overflow" => Behavior::BodyOverflow,
            "body-only" => Behavior::BodyOnly,
            "truncate-data" => Behavior::TruncateData,
            "enforce-limits" => Behavior::EnforceLimits,
            _ => return None,
        })
    }
}

/// How a value is stored, from its attribute's definition (as s3db.js's `generateAutoHooks`
/// and `mapper` choose).
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    String,
    /// `number` with `integer`: base 62 of the integer part.
    Integer,
    /// Any other `number`: base-62 integer part and decimal digits.
    Decimal,
    Boolean,
    StringArray,
    IntegerArray,
    DecimalArray,
    /// An `array` without `items`: JSON text.
    JsonArray,
    Embedding,
    /// `json` and `object`: JSON text.
    Json,
    Uuid,
    DateTime,
    DateOnly,
    Secret,
    /// `money` (2 decimals), `money:N`, `crypto` (8): `$` and base 62 of the scaled integer.
    Money(u32),
    /// `decimal` (2 decimals), `decimal:N`: fixed point, `^` and base 62.
    DecimalFixed(u32),
    /// `timeonly`, `mac`, `cidr`, `semver`, `phone`, `color`, `duration`, `ean`: packed
    /// into base 62 by s3db.js's mapper.
    Packed(Packing),
    /// `ip4` and `ip6`: the address's bytes in base64.
    Ip4,
    Ip6,
    /// `geo:lat`, `geo:lon`, `geo:point` (with their decimal places): `~` and base 62.
    Geo(super::encoders::Geo),
    /// `buffer`, `bits` and `bits:N` (N bits exactly): base64 of the bytes.
    Binary(Option<u32>),
    /// `text`: raw deflate behind `z:`/`z85:` once past the threshold.
    Text(super::encoders::TextCompression),
    /// `password`, `password:bcrypt` (false), `password:argon2id` (true): the compacted hash.
    Password(bool),
    /// A type s3db.js's schema does not know: read as the text stored, never written.
    Unsupported(String),
}

impl Kind {
    /// `bits` without a count takes any number of bytes.
    fn bits_or_any(self) -> Self {
        match self {
            Kind::Binary(Some(0)) => Kind::Binary(None),
            other => other,
        }
    }
}

/// `geo:lat[:P]`, `geo:lon[:P]`, `geo:point[:P]` (6 places unless P).
fn geo_of(type_name: &str, arg: Option<&str>) -> Option<super::encoders::Geo> {
    use super::encoders::Geo;
    let spec = match type_name.strip_prefix("geo-") {
        Some(which) => which.to_string(),
        None => arg?.to_string(),
    };
    let (which, places) = match spec.split_once(':') {
        Some((w, p)) => (w, p.parse().ok()?),
        None => (spec.as_str(), 6),
    };
    Some(match which {
        "lat" => Geo::Lat(places),
        "lon" => Geo::Lon(places),
        "point" => Geo::Point(places),
        _ => return None,
    })
}

/// The compression a `text` attribute asks for; None when `compress:false` or `compress:0`.
fn text_compression(rules: &HashMap<String, Value>) -> Option<super::encoders::TextCompression> {
    let mut c = super::encoders::TextCompression::default();
    match rules.get("compress") {
        Some(Value::Bool(false)) => return None,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return None,
        Some(Value::Number(n)) => c.level = n.as_f64().map_or(6, |n| n as u32),
        _ => {}
    }
    if let Some(t) = rules.get("threshold").and_then(Value::as_f64) {
        c.threshold = t as usize;
    }
    c.base85 = rules.get("encoding").and_then(Value::as_str) == Some("base85");
    Some(c)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    TimeOnly,
    Mac,
    Cidr,
    Semver,
    Phone,
    Color,
    Duration,
    Ean,
}

/// One leaf attribute: its dotted path, metadata key and rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub path: String,
    pub key: String,
    pub kind: Kind,
    /// The definition's type name (`string`, `email`, `embedding`…).
    pub type_name: String,
    pub optional: bool,
    /// Inside a nested object that may be absent: when it is, so is this value.
    pub in_optional_object: bool,
    /// `name:value` rules of the shorthand, and the object form's other keys.
    pub rules: HashMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub fields: Vec<Field>,
    by_key: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
}

impl Version {
    pub fn field_by_key(&self, key: &str) -> Option<&Field> {
        self.by_key.get(key).map(|&i| &self.fields[i])
    }

    pub fn field(&self, path: &str) -> Option<&Field> {
        self.by_path.get(path).map(|&i| &self.fields[i])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsResource {
    pub name: String,
    pub current: Arc<Version>,
    pub versions: HashMap<String, Arc<Version>>,
    pub behavior: Behavior,
    pub timestamps: bool,
    /// Partition name → field → type, as s3db.json has them.
    pub partitions: IndexMap<String, IndexMap<String, String>>,
}

impl JsResource {
    /// The version a record was written at (`_v`), or the current one.
    pub fn version(&self, v: Option<&str>) -> &Arc<Version> {
        v.and_then(|v| {
            let name = if v.starts_with('v') {
                v.to_string()
            } else {
                format!("v{v}")
            };
            self.versions.get(&name)
        })
        .unwrap_or(&self.current)
    }
}

/// Every resource of an s3db.js `s3db.json`.
pub fn parse(metadata: &Value) -> Result<IndexMap<String, JsResource>, String> {
    let mut out = IndexMap::new();
    let Some(resources) = metadata.get("resources").and_then(Value::as_object) else {
        return Ok(out);
    };
    for (name, def) in resources {
        out.insert(
            name.clone(),
            parse_resource(name, def).map_err(|e| format!("resource `{name}`: {e}"))?,
        );
    }
    Ok(out)
}

fn parse_resource(name: &str, def: &Value) -> Result<JsResource, String> {
    let current = def
        .get("currentVersion")
        .and_then(Value::as_str)
        .ok_or("no currentVersion")?;
    let versions_json = def
        .get("versions")
        .and_then(Value::as_object)
        .ok_or("no versions")?;
    let registry: HashMap<String, u64> = def
        .pointer("/schemaRegistry/mapping")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut versions = HashMap::new();
    let mut current_def = None;
    for (vname, vdef) in versions_json {
        let attributes = vdef
            .get("attributes")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("version {vname} has no attributes"))?;
        // Older releases kept a per-version map (path → key); newer ones the registry.
        let map: HashMap<String, String> = vdef
            .get("map")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let key_for = |path: &str| {
            map.get(path)
                .cloned()
                .or_else(|| registry.get(path).map(|&i| key_of(i)))
                .unwrap_or_else(|| path.to_string())
        };
        let mut fields = Vec::new();
        collect(attributes, "", false, &key_for, &mut fields);
        let by_key = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key.clone(), i))
            .collect();
        let by_path = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.clone(), i))
            .collect();
        let version = Arc::new(Version {
            name: vname.clone(),
            fields,
            by_key,
            by_path,
        });
        if vname == current {
            current_def = Some(vdef);
        }
        versions.insert(vname.clone(), version);
    }
    let current_version = versions
        .get(current)
        .cloned()
        .ok_or_else(|| format!("currentVersion {current} is not among its versions"))?;
    let vdef = current_def.unwrap_or(&Value::Null);
    let behavior_text = vdef
        .get("behavior")
        .or_else(|| def.get("behavior"))
        .and_then(Value::as_str)
        .unwrap_or("user-managed");
    let behavior = Behavior::parse(behavior_text)
        .ok_or_else(|| format!("behavior `{behavior_text}` is not one s3db.js has"))?;
    let partitions_json = vdef
        .get("partitions")
        .or_else(|| def.get("partitions"))
        .and_then(Value::as_object);
    let mut partitions = IndexMap::new();
    for (pname, p) in partitions_json.into_iter().flatten() {
        let fields = p
            .get("fields")
            .and_then(Value::as_object)
            .map(|f| {
                f.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("string").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        partitions.insert(pname.clone(), fields);
    }
    Ok(JsResource {
        name: name.to_string(),
        current: current_version,
        versions,
        behavior,
        timestamps: vdef
            .get("timestamps")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        partitions,
    })
}

/// Walks the attribute tree: strings and rule objects (`{type: …}`) are leaves; other objects
/// (with or without `$$type`) are nested objects whose leaves have dotted paths.
fn collect(
    attrs: &Map<String, Value>,
    prefix: &str,
    parent_optional: bool,
    key_for: &dyn Fn(&str) -> String,
    out: &mut Vec<Field>,
) {
    for (name, def) in attrs {
        if name.starts_with("$$") {
            continue;
        }
        let path = format!("{prefix}{name}");
        match def {
            Value::String(text) => out.push(leaf(&path, text, None, parent_optional, key_for)),
            Value::Object(obj) if obj.get("type").is_some_and(Value::is_string) => {
                let text = obj.get("type").and_then(Value::as_str).unwrap_or("any");
                out.push(leaf(&path, text, Some(obj), parent_optional, key_for));
            }
            Value::Object(obj) => {
                let own = obj
                    .get("$$type")
                    .and_then(Value::as_str)
                    .unwrap_or("object");
                // s3db.js makes nested objects optional by default (allNestedObjectsOptional).
                let optional = parent_optional || !own.contains("required");
                collect(obj, &format!("{path}."), optional, key_for, out);
            }
            _ => {}
        }
    }
}

fn leaf(
    path: &str,
    text: &str,
    object: Option<&Map<String, Value>>,
    parent_optional: bool,
    key_for: &dyn Fn(&str) -> String,
) -> Field {
    let mut parts = text.split('|').map(str::trim);
    let head = parts.next().unwrap_or("any");
    let (type_name, type_arg) = match head.split_once(':') {
        Some((t, a)) => (t.to_string(), Some(a.to_string())),
        None => (head.to_string(), None),
    };
    let mut rules: HashMap<String, Value> = HashMap::new();
    if let Some(a) = &type_arg {
        rules.insert("length".into(), rule_value(a));
    }
    for part in parts {
        match part.split_once(':') {
            Some((k, v)) => rules.insert(k.trim().to_string(), rule_value(v.trim())),
            None => rules.insert(part.to_string(), Value::Bool(true)),
        };
    }
    if let Some(obj) = object {
        for (k, v) in obj {
            if k != "type" {
                rules.insert(k.clone(), v.clone());
            }
        }
    }
    let flag = |name: &str| rules.get(name).is_some_and(|v| v == &Value::Bool(true));
    let optional = flag("optional");
    let items = rules
        .get("items")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let integer = flag("integer") || items.contains("integer");
    let kind = match type_name.as_str() {
        "string" | "email" | "url" | "enum" | "date" | "any" | "cron" | "locale" | "currency"
        | "country" => Kind::String,
        "number" if integer => Kind::Integer,
        "number" => Kind::Decimal,
        "boolean" | "bool" => Kind::Boolean,
        "embedding" => Kind::Embedding,
        "array" if items.contains("string") => Kind::StringArray,
        "array" if items.contains("number") && integer => Kind::IntegerArray,
        "array"
            if items.contains("number")
                && rules
                    .get("length")
                    .and_then(Value::as_f64)
                    .is_some_and(|n| n >= 256.0) =>
        {
            Kind::Embedding
        }
        "array" if items.contains("number") => Kind::DecimalArray,
        "array" => Kind::JsonArray,
        "json" | "object" => Kind::Json,
        "uuid" => Kind::Uuid,
        "datetime" => Kind::DateTime,
        "dateonly" => Kind::DateOnly,
        "secret" => Kind::Secret,
        "money" | "crypto" => Kind::Money(
            type_arg
                .as_deref()
                .and_then(|a| a.parse().ok())
                .unwrap_or(if type_name == "crypto" { 8 } else { 2 }),
        ),
        "decimal" => Kind::DecimalFixed(
            type_arg
                .as_deref()
                .and_then(|a| a.parse().ok())
                .unwrap_or(2),
        ),
        "ip4" => Kind::Ip4,
        "ip6" => Kind::Ip6,
        "timeonly" => Kind::Packed(Packing::TimeOnly),
        "mac" => Kind::Packed(Packing::Mac),
        "cidr" => Kind::Packed(Packing::Cidr),
        "semver" => Kind::Packed(Packing::Semver),
        "phone" => Kind::Packed(Packing::Phone),
        "color" => Kind::Packed(Packing::Color),
        "duration" => Kind::Packed(Packing::Duration),
        "ean" => Kind::Packed(Packing::Ean),
        "geo" | "geo-lat" | "geo-lon" | "geo-point" => {
            match geo_of(&type_name, type_arg.as_deref()) {
                Some(g) => Kind::Geo(g),
                None => Kind::Unsupported(text.to_string()),
            }
        }
        "buffer" => Kind::Binary(None),
        "bits" => Kind::Binary(Some(
            type_arg
                .as_deref()
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
        ))
        .bits_or_any(),
        "text" => text_compression(&rules).map_or(Kind::String, Kind::Text),
        "password" => Kind::Password(type_arg.as_deref() == Some("argon2id")),
        other => Kind::Unsupported(other.to_string()),
    };
    Field {
        path: path.to_string(),
        key: key_for(path),
        kind,
        type_name,
        optional,
        in_optional_object: parent_optional,
        rules,
    }
}

fn rule_value(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.to_string()), Value::Number),
    }
}

/// The `s3db.json` s3db.js 21 writes for a new database with these resources (the manifest's
/// attributes are s3db.js shorthand): each resource at version `v1`, its attributes numbered in
/// the schema registry in declaration order, timestamps as s3db.js adds them.
pub fn new_metadata(
    resources: &IndexMap<String, crate::db::schema::StoredResource>,
    writer: &str,
) -> Value {
    use sha2::Digest;
    let mut out = Map::new();
    for (name, def) in resources {
        let mut attributes: Map<String, Value> = def
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut partitions: Map<String, Value> = def
            .partitions
            .iter()
            .map(|(p, fields)| (p.clone(), serde_json::json!({ "fields": fields })))
            .collect();
        if def.timestamps {
            for field in ["createdAt", "updatedAt"] {
                attributes
                    .entry(field)
                    .or_insert_with(|| Value::String("datetime|optional".into()));
            }
            for (p, field) in [
                ("byCreatedDate", "createdAt"),
                ("byUpdatedDate", "updatedAt"),
            ] {
                partitions.entry(p).or_insert_with(
                    || serde_json::json!({ "fields": { field: "date|maxlength:10" } }),
                );
            }
        }
        let mapping: Map<String, Value> = attributes
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), Value::from(i)))
            .collect();
        let hash = sha2::Sha256::digest(Value::Object(attributes.clone()).to_string().as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        out.insert(
            name.clone(),
            serde_json::json!({
                "currentVersion": "v1",
                "partitions": partitions,
                "createdBy": writer,
                "versions": { "v1": {
                    "hash": format!("sha256:{hex}"),
                    "attributes": attributes,
                    "behavior": "user-managed",
                    "timestamps": def.timestamps,
                    "partitions": partitions,
                    "idSize": 22,
                    "idGenerator": "default",
                    "createdAt": crate::types::time::now_rfc3339(),
                } },
                "schemaRegistry": { "nextIndex": mapping.len(), "mapping": mapping, "burned": [] },
                "pluginSchemaRegistry": {},
            }),
        );
    }
    serde_json::json!({
        "version": "1",
        "s3dbVersion": writer,
        "lastUpdated": crate::types::time::now_rfc3339(),
        "resources": out,
    })
}
