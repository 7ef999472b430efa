//! The JSON Schema of the manifest, generated from the model and then sharpened where a type
//! alone cannot say it: a `${VAR}` string is accepted wherever the loader accepts one, each
//! built-in's `with:` takes exactly its parameters, and each driver's `config:` exactly its
//! options, so an editor flags `sett:` in `record.update` or `storageClass` on the filesystem
//! backup driver.

use serde_json::{json, Map, Value};

use super::model::{BackupDriver, CacheDriver, Manifest};
use crate::hooks::builtins::BUILTINS;

/// The JSON Schema of the manifest (draft 2020-12), generated from the model.
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(Manifest);
    schema.insert(
        "$id".into(),
        "https://s3db-run.dev/schemas/s3db.schema.json".into(),
    );
    let mut value = schema.to_value();
    if let Some(defs) = value.get_mut("$defs").and_then(Value::as_object_mut) {
        sharpen_definitions(defs);
    }
    accept_interpolation(&mut value);
    if let Some(defs) = value.get_mut("$defs").and_then(|d| d.as_object_mut()) {
        defs.insert(
            INTERPOLATED.into(),
            json!({
                "description": "A `${VAR}`, `${VAR:-default}` or `${VAR:?message}` reference, resolved from the environment when the manifest is loaded and then read as the value this field takes.",
                "type": "string",
                "pattern": "\\$\\{[A-Za-z_][A-Za-z0-9_]*(:[-?][^}]*)?\\}"
            }),
        );
    }
    value
}

/// The name of the schema definition of a `${VAR}` string.
const INTERPOLATED: &str = "Interpolated";

/// Keywords that constrain a value (moved inside `anyOf` when a `${VAR}` string is allowed
/// instead); the rest (description, examples, default) stay where an editor shows them.
const VALIDATION_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "format",
    "minLength",
    "maxLength",
];

/// Lets every typed scalar (number, boolean, enumerated or patterned string) also be written as
/// a `${VAR}` string, as the loader accepts: interpolation happens before the value is read.
/// Walks only the keywords that hold schemas, never examples or defaults.
fn accept_interpolation(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    // An enumeration written as `oneOf` constants (documented variants): a `${VAR}` string
    // is one more alternative of the whole, not of each constant (it would match them all).
    let enumeration = ["oneOf", "anyOf"].iter().find(|k| {
        obj.get(**k)
            .and_then(|m| m.as_array())
            .is_some_and(|members| {
                !members.is_empty()
                    && members
                        .iter()
                        .all(|m| m.get("const").is_some() || m.get("enum").is_some())
            })
    });
    if let Some(key) = enumeration {
        let members = obj.remove(*key).unwrap_or_default();
        obj.insert(
            "anyOf".into(),
            json!([{ *key: members }, { "$ref": format!("#/$defs/{INTERPOLATED}") }]),
        );
        return;
    }
    for key in ["properties", "$defs", "patternProperties"] {
        if let Some(children) = obj.get_mut(key).and_then(|c| c.as_object_mut()) {
            children.values_mut().for_each(accept_interpolation);
        }
    }
    for key in ["additionalProperties", "items", "not"] {
        if let Some(child) = obj.get_mut(key) {
            accept_interpolation(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(children) = obj.get_mut(key).and_then(|c| c.as_array_mut()) {
            children.iter_mut().for_each(accept_interpolation);
        }
    }
    let typed_scalar = match obj.get("type") {
        Some(Value::String(t)) => {
            matches!(t.as_str(), "integer" | "number" | "boolean")
                || (t == "string" && (obj.contains_key("enum") || obj.contains_key("pattern")))
        }
        Some(Value::Array(types)) => types
            .iter()
            .any(|t| matches!(t.as_str(), Some("integer" | "number" | "boolean"))),
        None => obj.contains_key("enum") || obj.contains_key("const"),
        _ => false,
    };
    if !typed_scalar {
        return;
    }
    let mut inner = Map::new();
    for key in VALIDATION_KEYWORDS {
        if let Some(v) = obj.remove(*key) {
            inner.insert((*key).to_string(), v);
        }
    }
    obj.insert(
        "anyOf".into(),
        json!([inner, { "$ref": format!("#/$defs/{INTERPOLATED}") }]),
    );
}

/// The schema as committed in `schemas/s3db.schema.json`: pretty JSON with a final newline.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Adds the per-builtin and per-driver rules to the generated definitions.
fn sharpen_definitions(defs: &mut Map<String, Value>) {
    if let Some(hook) = defs.get_mut("HookDef").and_then(Value::as_object_mut) {
        let rules: Vec<Value> = BUILTINS
            .iter()
            .map(|b| {
                let properties: Map<String, Value> = b
                    .params()
                    .map(|p| (p.to_string(), parameter_schema(p)))
                    .collect();
                json!({
                    "if": { "required": ["builtin"], "properties": { "builtin": { "const": b.name } } },
                    "then": { "properties": { "with": {
                        "type": "object",
                        "description": format!("Parameters of `{}`: {}.", b.name, b.summary),
                        "properties": properties,
                        "required": b.required,
                        "additionalProperties": false
                    } } }
                })
            })
            .collect();
        hook.insert("allOf".into(), Value::Array(rules));
    }
    let backup = |d: BackupDriver| (d.name(), d == BackupDriver::default(), d.options());
    let backup_rules: Vec<_> = BackupDriver::ALL.into_iter().map(backup).collect();
    for def in ["BackupConfig", "BackupDestination"] {
        // A destination names its driver; the section's defaults to `filesystem`.
        let default_applies = def == "BackupConfig";
        if let Some(obj) = defs.get_mut(def).and_then(Value::as_object_mut) {
            obj.insert("allOf".into(), driver_rules(&backup_rules, default_applies));
        }
    }
    let cache_rules: Vec<_> = CacheDriver::ALL
        .into_iter()
        .map(|d| (d.name(), d == CacheDriver::default(), d.options()))
        .collect();
    if let Some(obj) = defs.get_mut("CacheConfig").and_then(Value::as_object_mut) {
        obj.insert("allOf".into(), driver_rules(&cache_rules, true));
    }
}

/// `if driver is X then config takes only X's options`, for each driver.
fn driver_rules(drivers: &[(&str, bool, &[&str])], default_applies: bool) -> Value {
    Value::Array(
        drivers
            .iter()
            .map(|(name, is_default, options)| {
                // The default driver's rule also holds when `driver` is left out.
                let condition = if *is_default && default_applies {
                    json!({ "properties": { "driver": { "const": name } } })
                } else {
                    json!({ "required": ["driver"], "properties": { "driver": { "const": name } } })
                };
                json!({
                    "if": condition,
                    "then": { "properties": { "config": {
                        "propertyNames": {
                            "enum": options,
                            "description": format!("the options of the `{name}` driver")
                        }
                    } } }
                })
            })
            .collect(),
    )
}

/// What a built-in parameter holds. Strings may carry `{{…}}` templates, so a typed parameter
/// also takes a string (a template rendered when the hook runs).
fn parameter_schema(name: &str) -> Value {
    let template = json!({ "type": "string", "pattern": "\\{\\{" });
    match name {
        "set" | "where" | "data" | "fields" | "context" | "headers" => {
            json!({ "anyOf": [{ "type": "object" }, template] })
        }
        "upsert" | "dryRun" => json!({ "anyOf": [{ "type": "boolean" }, template] }),
        "limit" | "retries" => json!({ "anyOf": [{ "type": "integer", "minimum": 0 }, template] }),
        "timeout" | "olderThan" => json!({ "$ref": "#/$defs/Duration" }),
        "resources" => json!({ "type": "array", "items": { "type": "string" } }),
        "type" => json!({ "type": "string", "examples": ["full", "incremental"] }),
        "level" => json!({ "anyOf": [
            { "enum": ["debug", "info", "warn", "warning", "error"] },
            template
        ] }),
        // Ids and names: numbers are read as their text.
        _ => json!({ "type": ["string", "number"] }),
    }
}
