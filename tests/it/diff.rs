//! `s3db-run diff OLD NEW`: what a manifest change would do, with secrets redacted.

use std::process::Command;

use crate::support::repo;

fn diff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .arg("diff")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn the_yaml_and_toml_twins_have_no_differences() {
    let out = diff(&["manifests/s3db.yaml", "manifests/s3db.toml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no changes\n");
}

#[test]
fn changes_are_listed_by_item_and_field_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("manifests/s3db.yaml")).unwrap();
    let changed = text
        .replace("schedule: \"0 1 * * *\"", "schedule: \"0 2 * * *\"")
        .replace("  weekly_report:", "  weekly_report_v2:")
        .replace("daily: 7, weekly: 4", "daily: 14, weekly: 4")
        .replace("token: ${S3DB_API_TOKEN:-}", "token: very-secret-token")
        .replace(
            "key: ${BACKUP_KEY:-dev-only-insecure-backup-key}",
            "key: another-secret-key",
        )
        .replace(
            "      shipped: { on: { DELIVER: delivered, RETURN: returned } }",
            "      shipped: { on: { DELIVER: delivered } }",
        );
    let new = dir.path().join("s3db.yaml");
    std::fs::write(&new, changed).unwrap();
    std::fs::create_dir_all(dir.path().join("hooks")).unwrap();
    let out = diff(&["manifests/s3db.yaml", &new.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "~ job nightly_backup\n    schedule: \"0 1 * * *\" -> \"0 2 * * *\"",
        "- job weekly_report\n",
        "+ job weekly_report_v2\n",
        "~ machine order_processing\n    states.shipped.on.RETURN: \"returned\" -> (absent)",
        "    retention.daily: 7 -> 14",
        "    token: (absent) -> \"***\"",
        "    encryption.key (secret): \"***\" -> \"***\"",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("very-secret-token") && !text.contains("another-secret-key"),
        "{text}"
    );
    let json = diff(&[
        "--format",
        "json",
        "manifests/s3db.yaml",
        &new.to_string_lossy(),
    ]);
    let changes: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let kinds: Vec<(String, String)> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("job".into(), "added".into()))
            && kinds.contains(&("job".into(), "removed".into()))
    );
    let json_text = String::from_utf8_lossy(&json.stdout);
    assert!(
        !json_text.contains("very-secret-token") && !json_text.contains("another-secret-key"),
        "{json_text}"
    );
}

#[test]
fn an_invalid_manifest_is_a_usage_error() {
    let out = diff(&[
        "manifests/s3db.yaml",
        "tests/fixtures/invalid/unknown-guard.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest::unknown_hook"));
}

#[test]
fn each_change_says_whether_it_applies_live_or_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.yaml");
    let new = dir.path().join("new.yaml");
    let base = "version: 1\ndatabase: { connection: file://./data }\njobs:\n  j: { schedule: \"@daily\", action: { builtin: log, with: { message: hi } } }\n";
    std::fs::write(&old, base).unwrap();
    std::fs::write(
        &new,
        base.replace("@daily", "@hourly")
            .replace("file://./data", "file://./elsewhere")
            + "stateMachine: { verbose: true }\n",
    )
    .unwrap();
    let (old, new) = (old.to_string_lossy(), new.to_string_lossy());
    let out = diff(&[&old, &new, "--format", "json"]);
    let changes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let apply = |kind: &str| {
        changes
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind)
            .map(|c| c["apply"].clone())
            .unwrap_or_default()
    };
    assert_eq!(apply("job"), "live", "{changes}");
    assert_eq!(apply("database"), "restart", "{changes}");
    assert_eq!(apply("stateMachine"), "restart", "{changes}");
    let human = String::from_utf8_lossy(&diff(&[&old, &new]).stdout).to_string();
    assert!(human.contains("~ job j\n"), "{human}");
    assert!(human.contains("~ database  (needs a restart)\n"), "{human}");
}
