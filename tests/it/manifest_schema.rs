//! The committed JSON Schema: generated from the model, accepted by an independent validator for
//! every example, and rejecting every fixture whose mistake is one of shape.

use s3db_run::manifest::{self, tree, Format};

use crate::support::{example_manifests, invalid_fixtures, repo};

fn validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(repo().join("schemas/s3db.schema.json")).expect("committed schema");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

/// The document as an editor's language server sees it: the raw tree, before interpolation.
fn as_json(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).expect("readable");
    let node = match Format::from_path(path) {
        Format::Yaml => tree::parse_yaml(&text),
        Format::Toml => tree::parse_toml(&text),
    }
    .map_err(|d| d.message)?;
    Ok(node.to_json())
}

#[test]
fn committed_schema_is_what_the_code_generates() {
    let committed =
        std::fs::read_to_string(repo().join("schemas/s3db.schema.json")).expect("committed schema");
    assert!(
        committed == manifest::json_schema_text(),
        "schemas/s3db.schema.json is stale: run `cargo run -- schema -o schemas/s3db.schema.json`"
    );
}

#[test]
fn schema_is_draft_2020_12_with_descriptions_defaults_and_enums() {
    let schema = manifest::json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let defs = &schema["$defs"];
    assert!(defs["JobDef"]["properties"]["schedule"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("Cron")));
    assert_eq!(
        defs["SchedulerConfig"]["properties"]["defaultRetries"]["default"],
        1
    );
    assert_eq!(
        defs["BackupConfig"]["properties"]["compression"]["default"],
        "gzip"
    );
    assert!(defs["TimeZone"]["anyOf"][0]["enum"]
        .as_array()
        .is_some_and(|zones| zones.iter().any(|z| z == "Australia/Lord_Howe")));
    assert!(defs["JobDef"]["properties"]["schedule"]["examples"].is_array());
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn schema_accepts_every_example() {
    let v = validator();
    for file in example_manifests() {
        let doc = as_json(&file).expect("example parses");
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn schema_rejects_every_shape_fixture() {
    let v = validator();
    let shape: Vec<_> = invalid_fixtures()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("shape-"))
        })
        .collect();
    assert!(shape.len() >= 10, "only {} shape fixtures", shape.len());
    for file in shape {
        let doc = as_json(&file).expect("shape fixtures are well-formed");
        assert!(!v.is_valid(&doc), "{} passes the schema", file.display());
    }
}

fn yaml_json(text: &str) -> serde_json::Value {
    tree::parse_yaml(text).expect("well-formed").to_json()
}

#[test]
fn schema_accepts_interpolation_wherever_the_loader_does() {
    let v = validator();
    let doc = yaml_json(
        r#"
version: 1
database: { connection: "${S3DB_CONNECTION:-file://./data}" }
scheduler: { timezone: "${TZ:-UTC}", defaultRetries: "${RETRIES:-2}", defaultTimeout: "${TIMEOUT}" }
jobs:
  j:
    schedule: "${CRON:-0 3 * * *}"
    enabled: "${ENABLED:-true}"
    retries: "${RETRIES:-2}"
    overlap: "${OVERLAP:-skip}"
    action: { run: ["true"] }
backup:
  driver: filesystem
  config: { path: ./backups/ }
  compression: "${COMPRESSION:-gzip}"
  verification: "${VERIFY}"
"#,
    );
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The loader agrees: with the variables set, the same document is a valid manifest.
    let env = |name: &str| match name {
        "TIMEOUT" => Some("5m".to_string()),
        "VERIFY" => Some("false".to_string()),
        _ => None,
    };
    let loaded = manifest::load_str(
        "i.yaml",
        serde_json::to_string(&doc).expect("json"),
        Format::Yaml,
        &repo(),
        &env,
    );
    assert!(
        loaded.manifest.is_some(),
        "{:#?}",
        loaded.report.diagnostics
    );
}

#[test]
fn schema_still_rejects_plain_strings_where_values_are_typed() {
    let v = validator();
    for (field, value) in [
        ("retries", "many"),
        ("enabled", "yes-please"),
        ("overlap", "skp"),
        ("timeout", "3x"),
        ("timezone", "Mars/Olympus"),
    ] {
        let doc = yaml_json(&format!(
            "version: 1\ndatabase: {{ connection: file://./d }}\njobs:\n  j: {{ schedule: '@daily', action: {{ run: ['true'] }}, {field}: '{value}' }}\n"
        ));
        assert!(!v.is_valid(&doc), "{field}: {value} passes the schema");
    }
}

#[test]
fn schema_knows_each_builtin_s_parameters_and_each_driver_s_options() {
    let v = validator();
    let with_hook = |hook: &str| {
        yaml_json(&format!(
            "version: 1\ndatabase: {{ connection: file://./d, resources: {{ inventory: {{ attributes: {{ q: number }} }} }} }}\nactions:\n  a: {hook}\n"
        ))
    };
    let good = with_hook(
        "{ builtin: record.update, with: { resource: inventory, id: \"{{context.id}}\", set: { q: 1 }, upsert: true } }",
    );
    let errors: Vec<String> = v.iter_errors(&good).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    for bad in [
        // A misspelt parameter, a missing required one, a wrong type.
        "{ builtin: record.update, with: { resource: inventory, id: x, sett: { q: 1 } } }",
        "{ builtin: record.update, with: { resource: inventory, set: { q: 1 } } }",
        "{ builtin: record.update, with: { resource: inventory, id: x, set: 5 } }",
        "{ builtin: webhook, with: { url: \"http://x\", retries: many } }",
    ] {
        assert!(!v.is_valid(&with_hook(bad)), "passes the schema: {bad}");
    }
    let backup = |section: &str| {
        yaml_json(&format!(
            "version: 1\ndatabase: {{ connection: file://./d }}\n{section}\n"
        ))
    };
    for good in [
        "backup: { driver: filesystem, config: { path: ./b/, permissions: \"0600\" } }",
        "backup: { config: { path: ./b/ } }",
        "backup: { driver: s3, config: { bucket: b, storageClass: STANDARD_IA } }",
        "backup: { driver: multi, config: { destinations: [{ driver: s3, config: { storageClass: GLACIER } }] } }",
        "cache: { driver: memory, config: { maxSize: 10 } }",
    ] {
        let errors: Vec<String> = v.iter_errors(&backup(good)).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{good}: {errors:#?}");
    }
    for bad in [
        "backup: { driver: filesystem, config: { path: ./b/, storageClass: STANDARD_IA } }",
        "backup: { config: { path: ./b/, bucket: b } }",
        "backup: { driver: multi, config: { destinations: [{ driver: filesystem, config: { path: ./x, storageClass: GLACIER } }] } }",
        "cache: { driver: memory, config: { directory: ./c } }",
        "cache: { config: { directory: ./c } }",
    ] {
        assert!(!v.is_valid(&backup(bad)), "passes the schema: {bad}");
    }
}
