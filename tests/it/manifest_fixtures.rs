//! The broken-manifest fixtures: each one's exact diagnostics (codes, line:column, messages) are
//! snapshotted, and together they exercise every rule the validator has.

use std::collections::BTreeSet;

use crate::support::{invalid_fixtures, load, render, repo};

#[test]
fn every_invalid_fixture_reports_its_exact_diagnostics() {
    insta::glob!("../fixtures", "invalid/*.{yaml,toml}", |path| {
        let relative = path.strip_prefix(repo()).expect("fixture inside the repo");
        let loaded = crate::support::load(relative);
        assert!(
            !loaded.report.diagnostics.is_empty(),
            "{} reports nothing",
            path.display()
        );
        insta::assert_snapshot!(render(&loaded));
    });
}

#[test]
fn there_are_at_least_forty_fixtures_in_both_syntaxes() {
    let files = invalid_fixtures();
    assert!(files.len() >= 40, "only {} fixtures", files.len());
    let toml = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .count();
    assert!(toml >= 5, "only {toml} TOML fixtures");
}

#[test]
fn a_manifest_with_five_independent_errors_reports_all_five() {
    let loaded = load(&repo().join("tests/fixtures/invalid/five-errors.yaml"));
    let errors: Vec<_> = loaded
        .report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    let codes: BTreeSet<&str> = errors.iter().map(|d| d.code).collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_eq!(
        codes,
        BTreeSet::from([
            "manifest::missing_env",
            "manifest::unknown_state",
            "manifest::cron_never_fires",
            "manifest::unknown_key",
            "manifest::invalid_value",
        ])
    );
    assert!(loaded.manifest.is_none());
}

/// Every rule code that appears in the validator's source is produced by some fixture, so a new
/// rule without a fixture fails here.
#[test]
fn every_rule_code_in_the_source_has_a_fixture() {
    let mut in_source = BTreeSet::new();
    for dir in ["src/manifest", "src/plugins", "src/db", "src/hooks"] {
        collect_codes(&repo().join(dir), &mut in_source);
    }
    let mut produced = BTreeSet::new();
    for file in invalid_fixtures() {
        for d in load(&file).report.diagnostics {
            produced.insert(d.code.to_string());
        }
    }
    let missing: Vec<_> = in_source.difference(&produced).collect();
    assert!(missing.is_empty(), "rules without a fixture: {missing:?}");
}

fn collect_codes(dir: &std::path::Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_codes(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            for piece in text.split("\"manifest::").skip(1) {
                let code: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if piece[code.len()..].starts_with('"') {
                    out.insert(format!("manifest::{code}"));
                }
            }
        }
    }
}
