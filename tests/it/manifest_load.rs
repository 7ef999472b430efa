//! Loading: the YAML and TOML twins agree, interpolation never adds structure, the legacy backup
//! form becomes `multi`, and secrets never print.

use s3db_run::manifest::model::{
    BackupDriver, CacheBackend, Destination, FilesystemDestination, KeySource, MultiStrategy,
    PartitionStrategy, S3Destination, ServerSide, StorageClass,
};
use s3db_run::manifest::Format;

use crate::support::{example_manifests, load, load_text, repo};

#[test]
fn every_example_is_valid_without_warnings() {
    for file in example_manifests() {
        let loaded = load(&file);
        assert!(
            loaded.report.diagnostics.is_empty(),
            "{}: {:#?}",
            file.display(),
            loaded.report.diagnostics
        );
        assert!(loaded.manifest.is_some());
    }
}

#[test]
fn yaml_and_toml_twins_load_to_the_same_manifest() {
    let yaml = load(&repo().join("manifests/s3db.yaml"))
        .manifest
        .expect("valid");
    let toml = load(&repo().join("manifests/s3db.toml"))
        .manifest
        .expect("valid");
    assert_eq!(yaml.manifest, toml.manifest);
}

#[test]
fn interpolated_values_cannot_inject_structure() {
    let env = |name: &str| {
        match name {
        "EVIL" => Some("x\njobs:\n  pwn: { schedule: \"* * * * *\", action: { run: [\"touch\", \"/tmp/pwned\"] } }".to_string()),
        _ => None,
    }
    };
    let text = "version: 1\ndatabase:\n  connection: file://./data\nactions:\n  a: { builtin: log, with: { message: \"${EVIL}\" } }\n";
    let loaded = s3db_run::manifest::load_str("t.yaml", text.into(), Format::Yaml, &repo(), &env);
    let m = loaded.manifest.expect("valid").manifest;
    assert!(m.jobs.is_empty());
    let message = &m.actions["a"].with.as_ref().expect("with")["message"];
    assert!(message.as_str().is_some_and(|s| s.starts_with("x\njobs:")));
}

#[test]
fn escaped_interpolation_stays_literal() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\nactions:\n  a: { builtin: log, with: { message: \"cost $${PRESENT} and ${PRESENT}\" } }\n";
    let m = load_text(text, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    assert_eq!(
        m.actions["a"].with.as_ref().expect("with")["message"],
        "cost ${PRESENT} and 3"
    );
}

#[test]
fn interpolated_numbers_are_read_as_numbers() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\njobs:\n  a: { schedule: \"@hourly\", action: log, retries: \"${PRESENT}\" }\n";
    let m = load_text(text, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    assert_eq!(m.jobs["a"].retries, Some(3));
}

#[test]
fn legacy_destinations_become_the_multi_driver() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\nbackup:\n  destinations:\n    - { type: filesystem, path: /backups/ }\n    - { type: s3, bucket: b, storageClass: GLACIER }\n";
    let m = load_text(text, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    let backup = m.backup.expect("backup");
    assert_eq!(backup.driver, BackupDriver::Multi);
    assert_eq!(backup.config.strategy, Some(MultiStrategy::All));
    let dests = backup.config.destinations.expect("destinations");
    assert_eq!(dests.len(), 2);
    assert_eq!(dests[0].driver, BackupDriver::Filesystem);
    assert_eq!(dests[0].config.path.as_deref(), Some("/backups/"));
    assert_eq!(dests[1].config.bucket.as_deref(), Some("b"));
    let target = backup.target.expect("typed target");
    assert_eq!(
        target.destinations,
        vec![
            Destination::Filesystem(FilesystemDestination {
                path: "/backups/".into(),
                file_mode: None,
                dir_mode: None,
            }),
            Destination::S3(S3Destination {
                path: None,
                bucket: Some("b".into()),
                location: None,
                storage_class: Some(StorageClass::GLACIER),
                server_side: None,
            }),
        ]
    );
}

#[test]
fn drivers_and_key_sources_are_typed_at_load() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\nbackup:\n  driver: s3\n  config: { bucket: b, serverSideEncryption: \"aws:kms\", kmsKeyId: k1, permissions: \"600\" }\n  encryption: { algorithm: AES-256-GCM, keyFile: ./key }\ncache:\n  driver: filesystem\n  ttl: 10s\n  partitionStrategy: flat\n  config: { path: ./c, maxSize: 7, partitionStrategy: temporal, enableCompression: false }\n";
    let m = load_text(text, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    let backup = m.backup.expect("backup");
    // `permissions` belongs to the filesystem driver: the checks flag it, and the typed s3
    // destination has no place for it.
    let target = backup.target.expect("typed target");
    assert_eq!(target.strategy, MultiStrategy::All);
    assert_eq!(
        target.destinations,
        vec![Destination::S3(S3Destination {
            path: None,
            bucket: Some("b".into()),
            location: None,
            storage_class: None,
            server_side: Some(ServerSide::Kms {
                key_id: Some("k1".into())
            }),
        })]
    );
    let enc = backup.encryption.expect("encryption");
    assert_eq!(enc.source, Some(KeySource::File("./key".into())));
    let cache = m.cache.expect("cache").target.expect("typed cache");
    assert_eq!(cache.max_size, 7);
    assert_eq!(cache.ttl.as_std(), std::time::Duration::from_secs(10));
    assert_eq!(
        cache.backend,
        CacheBackend::Filesystem {
            directory: "./c".into(),
            prefix: None,
            compress_from: None,
            layout: PartitionStrategy::Temporal,
        }
    );
}

#[test]
fn defaults_follow_the_reference() {
    let text = "version: 1\ndatabase:\n  connection: memory://bucket/db\nbackup: { config: { path: ./b/ } }\ncache: {}\n";
    let m = load_text(text, Format::Yaml);
    let m = m.manifest.expect("valid").manifest;
    assert_eq!(m.state_machine.transition_log_resource, "transitions");
    assert_eq!(m.state_machine.state_resource, "entity_states");
    assert!(m.state_machine.persist_transitions);
    assert_eq!(m.scheduler.default_timeout.as_millis(), 60_000);
    assert_eq!(m.scheduler.default_retries, 1);
    assert_eq!(m.scheduler.job_history_resource, "job_history");
    assert_eq!(m.scheduler.timezone.to_string(), "UTC");
    let cache = m.cache.expect("cache");
    assert_eq!(cache.ttl.as_millis(), 300_000);
    assert_eq!(cache.max_size, 1000);
    assert!(cache.include_partitions);
    let backup = m.backup.expect("backup");
    assert_eq!(backup.driver, BackupDriver::Filesystem);
    assert!(backup.verification);
    assert_eq!(backup.temp_dir, "./tmp/backups");
}

#[test]
fn secrets_never_appear_in_debug_output_or_diagnostics() {
    let text = "version: 1\ndatabase:\n  connection: s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/db?region=us-east-1\nserver: { token: tok-123-secret }\nbackup:\n  config: { path: ./b/ }\n  encryption: { algorithm: AES-256-GCM, key: super-secret-passphrase }\n";
    let loaded = load_text(text, Format::Yaml);
    let m = loaded.manifest.expect("valid");
    let shown = format!(
        "{:?} {}",
        m,
        serde_json::to_string(&m.manifest).expect("serializes")
    );
    for secret in [
        "wJalrXUtnFEMI",
        "AKIAEXAMPLE",
        "tok-123-secret",
        "super-secret-passphrase",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    let bad = "version: 1\ndatabase:\n  connection: ftp://user:hunter2@host/x\n";
    let report = load_text(bad, Format::Yaml).report;
    let rendered = format!("{} {:?}", report.render_human(false), report.records());
    assert!(!rendered.contains("hunter2"), "{rendered}");
}

#[test]
fn yaml_anchors_and_aliases_are_expanded() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\nx-retry: &retry { retries: 2, timeout: 5s }\n";
    // `x-retry` is not a manifest key: anchors are fine, unknown keys are not.
    let loaded = load_text(text, Format::Yaml);
    assert_eq!(loaded.report.diagnostics[0].code, "manifest::unknown_key");
    let text = "version: 1\ndatabase:\n  connection: file://./data\nactions:\n  a: &hook { run: [\"true\"], retries: 2 }\n  b: *hook\n";
    let m = load_text(text, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    assert_eq!(m.actions["a"], m.actions["b"]);
}

#[test]
fn the_readme_manifest_example_is_valid() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let block = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a yaml block");
    let loaded = load_text(block, Format::Yaml);
    let errors: Vec<_> = loaded
        .report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_kubernetes_example_s_configmap_manifest_is_valid() {
    let text = std::fs::read_to_string(repo().join("examples/deploy/kubernetes.yaml")).unwrap();
    let embedded = text
        .split("s3db.yaml: |\n")
        .nth(1)
        .and_then(|rest| rest.split("\n---").next())
        .unwrap();
    let manifest: String = embedded
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let env = |name: &str| match name {
        "S3DB_CONNECTION" => Some("s3://key:secret@bucket/db".to_string()),
        "S3DB_API_TOKEN" | "BACKUP_KEY" => Some("x".to_string()),
        _ => None,
    };
    let loaded = s3db_run::manifest::load_str("k8s.yaml", manifest, Format::Yaml, &repo(), &env);
    assert!(
        loaded.report.diagnostics.is_empty(),
        "{}",
        loaded.report.render_human(false)
    );
    let m = loaded.manifest.expect("valid").manifest;
    assert!(m.backup.is_some() && m.jobs.contains_key("nightly_backup"));
}

fn codes_and_lines(text: &str) -> Vec<(String, usize, String)> {
    let loaded = load_text(text, Format::Yaml);
    assert!(loaded.manifest.is_none(), "the manifest has errors");
    loaded
        .report
        .records()
        .into_iter()
        .map(|r| (r.code, r.line, r.message))
        .collect()
}

#[test]
fn every_bad_value_in_one_job_is_reported() {
    let text = "version: 1
database: { connection: \"file://./d\" }
jobs:
  j:
    schedule: \"0 25 * * *\"
    retries: many
    enabled: yes-please
    overlap: skp
    timeout: 3x
    timezone: Mars/Olympus
    action: { run: [\"true\"] }
";
    let found = codes_and_lines(text);
    let lines: Vec<usize> = found.iter().map(|(_, line, _)| *line).collect();
    for line in 5..=10 {
        assert!(
            lines.contains(&line),
            "line {line} not reported: {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|(code, _, _)| code == "manifest::missing_key"),
        "{found:#?}"
    );
}

#[test]
fn an_unknown_top_level_key_does_not_hide_other_errors() {
    let text = "version: 1
database: { connection: \"file://./d\" }
bogusTop: 1
machines:
  m:
    initialState: nope
    states:
      a: {}
";
    let found = codes_and_lines(text);
    let codes: Vec<&str> = found.iter().map(|(c, _, _)| c.as_str()).collect();
    assert!(codes.contains(&"manifest::unknown_key"), "{found:#?}");
    assert!(
        codes.contains(&"manifest::unknown_initial_state"),
        "{found:#?}"
    );
}

#[test]
fn human_and_json_columns_count_characters() {
    let text = "version: 1\ndatabase: { connection: \"file://./d\" }\nscheduler: { timezone: \"São Paulo\", bogus: 1 }\n";
    let loaded = load_text(text, Format::Yaml);
    let record = loaded
        .report
        .records()
        .into_iter()
        .find(|r| r.message.contains("bogus"))
        .expect("reported");
    let human = loaded.report.render_human(false);
    assert!(
        human.contains(&format!(":{}:{}]", record.line, record.column)),
        "JSON says {}:{}, human says:\n{human}",
        record.line,
        record.column
    );
}

#[test]
fn a_mistyped_connection_string_never_shows_its_secret() {
    for conn in [
        "s3:/KEY:SUPERSECRET@bucket/p",
        "s3://KEY:SUPERSECRET@",
        "s3:KEY:SUPERSECRET@bucket/p",
    ] {
        let text = format!("version: 1\ndatabase: {{ connection: \"{conn}\" }}\n");
        let loaded = load_text(&text, Format::Yaml);
        assert!(loaded.manifest.is_none(), "{conn} validated");
        let human = loaded.report.render_human(false);
        let json = serde_json::to_string(&loaded.report.records()).expect("json");
        assert!(!human.contains("SUPERSECRET"), "{human}");
        assert!(!json.contains("SUPERSECRET"), "{json}");
        assert!(json.contains("manifest::invalid_connection"), "{json}");
    }
}

#[test]
fn an_endpoint_that_is_not_a_url_is_refused() {
    let text = "version: 1\ndatabase: { connection: \"s3://bucket/p?endpoint=notaurl\" }\n";
    let found = codes_and_lines(text);
    assert!(
        found
            .iter()
            .any(|(code, _, m)| code == "manifest::invalid_connection" && m.contains("endpoint")),
        "{found:#?}"
    );
}

#[test]
fn a_huge_value_gets_no_suggestion_search() {
    let huge = "b".repeat(1_000_000);
    let text = format!(
        // An explicit key (`? `): YAML limits implicit keys to 1,024 characters.
        "version: 1\ndatabase: {{ connection: \"file://./d\" }}\nmachines:\n  m:\n    initialState: {huge}\n    states:\n      ? {huge}x\n      : {{}}\n"
    );
    let loaded = load_text(&text, Format::Yaml);
    let records = loaded.report.records();
    let state = records
        .iter()
        .find(|r| r.code == "manifest::unknown_initial_state")
        .expect("reported");
    assert!(
        state
            .help
            .as_deref()
            .is_none_or(|h| !h.contains("did you mean")),
        "{state:?}"
    );
}

/// Built-ins are typed at load wherever a hook is written: named, inline in a job, inline as a
/// callback (each reaches the model through a different deserializer path).
#[test]
fn every_built_in_is_typed_at_load_wherever_it_is_written() {
    use s3db_run::manifest::model::{BuiltinCall, HookRef};
    let loaded = crate::support::load_text(
        "version: 1\n\
         database: { connection: \"memory://x/y\" }\n\
         actions:\n  named: { builtin: log, with: { level: warn } }\n\
         scheduler: { onJobStart: { builtin: log } }\n\
         jobs:\n  j: { schedule: \"@daily\", action: { builtin: log, with: { level: debug } } }\n",
        s3db_run::manifest::Format::Yaml,
    );
    let m = loaded.manifest.expect("valid").manifest;
    let typed = |h: &HookRef| match h {
        HookRef::Inline(def) => def.call.clone(),
        HookRef::Named(_) => None,
    };
    assert!(matches!(
        m.actions["named"].call,
        Some(BuiltinCall::Log { .. })
    ));
    assert!(matches!(
        typed(&m.jobs["j"].action),
        Some(BuiltinCall::Log { .. })
    ));
    let on_start = m.scheduler.on_job_start.as_ref().expect("callback");
    assert!(matches!(typed(on_start), Some(BuiltinCall::Log { .. })));
}

/// A backup destination's own connection string is checked like the database's, and its
/// secret never shows, even when mistyped.
#[test]
fn a_backup_destination_s_connection_is_checked_without_showing_its_secret() {
    let text = "version: 1\ndatabase:\n  connection: file://./data\nbackup:\n  driver: s3\n  config:\n    connection: \"s3:/AKIA:TOPSECRET@bucket/p\"\n";
    let found = codes_and_lines(text);
    assert!(
        found
            .iter()
            .any(|(code, line, _)| code == "manifest::invalid_connection" && *line == 7),
        "{found:#?}"
    );
    assert!(!format!("{found:?}").contains("TOPSECRET"), "{found:#?}");
    let ok = "version: 1\ndatabase:\n  connection: file://./data\nbackup:\n  driver: s3\n  config:\n    connection: \"s3://AKIA:TOPSECRET@bucket/p?endpoint=http://127.0.0.1:9000\"\n";
    let loaded = load_text(ok, Format::Yaml);
    assert!(
        loaded.manifest.is_some(),
        "{:#?}",
        loaded.report.diagnostics
    );
}
