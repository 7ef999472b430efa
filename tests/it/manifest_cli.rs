//! The `validate`, `schema`, `init` and `completions` commands, run as a user runs them.

use std::process::{Command, Output, Stdio};

use crate::support::{repo, walk};

fn s3db_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(args)
        .current_dir(repo())
        .env_remove("S3DB_CONNECTION")
        .output()
        .expect("binary runs")
}

#[test]
fn validate_exits_zero_on_valid_one_on_invalid_two_on_unreadable() {
    assert_eq!(
        s3db_run(&["validate", "manifests/s3db.yaml", "manifests/s3db.toml"])
            .status
            .code(),
        Some(0)
    );
    let invalid = s3db_run(&["validate", "tests/fixtures/invalid/unknown-guard.yaml"]);
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("manifest::unknown_hook"), "{stderr}");
    assert!(stderr.contains("did you mean `inStock`?"), "{stderr}");
    assert!(!stderr.contains("\u{1b}["), "colour on a pipe: {stderr}");
    assert_eq!(
        s3db_run(&["validate", "does/not/exist.yaml"]).status.code(),
        Some(2)
    );
    assert_eq!(
        s3db_run(&["validate", "--format", "xml", "manifests/s3db.yaml"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn validate_json_prints_one_object_per_diagnostic() {
    let out = s3db_run(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/invalid/unknown-transition-target.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["code", "severity", "file", "line", "column", "message", "help"]
        );
    }
    assert_eq!(lines[0]["code"], "manifest::unknown_state");
    assert_eq!(
        (lines[0]["line"].as_u64(), lines[0]["column"].as_u64()),
        (Some(8), Some(33))
    );
}

#[test]
fn validate_reads_standard_input_in_either_syntax() {
    let run = |text: &str, syntax: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(["validate", "--input-format", syntax, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait").status.code()
    };
    assert_eq!(
        run(
            "version: 1\ndatabase: { connection: memory://b/p }\n",
            "yaml"
        ),
        Some(0)
    );
    assert_eq!(
        run(
            "version = 1\n[database]\nconnection = \"memory://b/p\"\n",
            "toml"
        ),
        Some(0)
    );
    assert_eq!(
        run(
            "version = 1\n[database]\nconection = \"memory://b/p\"\n",
            "toml"
        ),
        Some(1)
    );
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = s3db_run(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read(repo().join("schemas/s3db.schema.json")).expect("committed");
    assert_eq!(out.stdout, committed);
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("project");
    let target_s = target.to_string_lossy().to_string();
    assert_eq!(s3db_run(&["init", &target_s]).status.code(), Some(0));
    let manifest = target.join("s3db.yaml");
    let text = std::fs::read_to_string(&manifest).expect("written");
    assert!(text.starts_with("# yaml-language-server: $schema=./s3db.schema.json"));
    assert!(target.join("s3db.schema.json").exists());
    let check = s3db_run(&["validate", &manifest.to_string_lossy()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    std::fs::write(&manifest, "# mine\n").expect("edit");
    assert_eq!(s3db_run(&["init", &target_s]).status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&manifest).expect("kept"),
        "# mine\n"
    );
}

/// What bash's completion function offers for a command line typed up to its end, run in a
/// real bash that sourced `s3db-run completions bash`.
fn bash_completes(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let program = r#"source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
prev=""; [ "$COMP_CWORD" -gt 0 ] && prev="${COMP_WORDS[COMP_CWORD-1]}"
_s3db__run s3db-run "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .arg("-c")
        .arg(program)
        .arg("bash")
        .arg(script)
        .args(words)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_options() {
    let out = s3db_run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s3db-run.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    assert_eq!(bash_completes(&script, &["s3db-run", "ba"]), ["backup"]);
    let backup = bash_completes(&script, &["s3db-run", "backup", "--"]);
    for option in ["--dry-run", "--output", "--manifest", "--read-data"] {
        assert!(backup.contains(&option.to_string()), "{backup:?}");
    }
    assert_eq!(
        bash_completes(&script, &["s3db-run", "validate", "--for"]),
        ["--format"]
    );
    let db_list = bash_completes(&script, &["s3db-run", "db", "list", "--"]);
    assert!(db_list.contains(&"--limit".to_string()), "{db_list:?}");
}

#[test]
fn zsh_and_fish_completions_offer_each_subcommands_options() {
    let zsh = String::from_utf8(s3db_run(&["completions", "zsh"]).stdout).unwrap();
    assert!(zsh.starts_with("#compdef s3db-run"), "{zsh}");
    assert!(zsh.contains("'--dry-run[Verify the backup"), "{zsh}");
    let fish = String::from_utf8(s3db_run(&["completions", "fish"]).stdout).unwrap();
    assert!(
        fish.contains(r#"-n "__fish_s3db_run_using_subcommand restore" -l dry-run"#),
        "{fish}"
    );
}

#[test]
fn help_is_written_for_people() {
    let out = s3db_run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["validate", "schema", "init", "Examples:"] {
        assert!(help.contains(needle), "{help}");
    }
}

#[test]
fn version_names_the_commit_and_its_date() {
    let out = s3db_run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(crate::support::repo())
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(
        text.starts_with(&format!("s3db-run {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // Built from this checkout: the commit is the one checked out (or one before it, when the
    // build predates the last commit).
    let named = text
        .split("commit ")
        .nth(1)
        .unwrap_or("")
        .split(',')
        .next()
        .unwrap_or("");
    assert_eq!(named.len(), 12, "{text}");
    assert!(
        !head.is_empty() && named.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    let date = text
        .trim()
        .trim_end_matches(')')
        .rsplit(", ")
        .next()
        .unwrap_or("");
    assert!(
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
        "{text}"
    );
}

/// The README's walkthrough, command by command, as a new user types it (with the built
/// binary in place of `cargo run -q --`), in a copy of `manifests/`.
#[test]
fn the_readme_walkthrough_works_as_written() {
    let readme = std::fs::read_to_string(crate::support::repo().join("README.md")).unwrap();
    let block = readme
        .split("```sh\ncd manifests\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's walkthrough block");
    let dir = tempfile::tempdir().unwrap();
    let src = crate::support::repo().join("manifests");
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        if rel.starts_with("data") || rel.starts_with("backups") {
            continue;
        }
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_s3db-run");
    let mut ran = 0;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let command = line.split("  #").next().unwrap().trim();
        let command = command.replace("cargo run -q --", &format!("'{bin}'"));
        let out = std::process::Command::new("sh")
            .args(["-c", &command])
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .env_remove("BACKUP_KEY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{line}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 8, "{ran} commands");
}

/// Every command that prints data takes `--output json` (and `--format json`, the other
/// spelling) and prints JSON a script can parse.
#[test]
fn every_data_command_takes_output_json_in_either_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .output()
            .expect("binary runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["init"]);
    let manifest = dir.path().join("s3db.yaml");
    let starter = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{starter}\ncache: {{ driver: memory }}\n"),
    )
    .unwrap();
    let commands: [&[&str]; 7] = [
        &["db", "resources"],
        &["job", "list"],
        &["machine", "list"],
        // `--local`: a runner of another test could listen on the starter's port.
        &["cache", "stats", "--local"],
        &["backup", "list"],
        &["diff", "s3db.yaml", "s3db.yaml"],
        &["validate", "s3db.yaml"],
    ];
    for command in commands {
        for spelling in ["--output", "--format"] {
            let mut args = command.to_vec();
            args.extend([spelling, "json"]);
            let text = run(&args);
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("{args:?} printed non-JSON {line:?}: {e}"));
            }
            if command[0] != "validate" {
                assert!(!text.trim().is_empty(), "{args:?} printed nothing");
            }
        }
    }
    let jobs: serde_json::Value =
        serde_json::from_str(&run(&["job", "list", "--output", "json"])).unwrap();
    assert_eq!(jobs[0]["name"], "nightly_backup");
    let machines: serde_json::Value =
        serde_json::from_str(&run(&["machine", "list", "--output", "json"])).unwrap();
    assert_eq!(machines[0]["initialState"], "pending");
    let resources: serde_json::Value =
        serde_json::from_str(&run(&["db", "resources", "--output", "json"])).unwrap();
    assert_eq!(resources[0], "orders");
}
