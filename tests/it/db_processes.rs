//! The database through the `s3db-run db` command, in real processes: several writers of one
//! folder at once, and a writer killed in the middle of its writes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A folder with a manifest whose database (in `data/`) has one schemaless resource.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        "version: 1\ndatabase:\n  connection: file://./data\n  resources:\n    things: {}\n",
    )
    .unwrap();
    dir
}

fn command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3db-run"));
    c.arg("db").current_dir(dir).env_remove("S3DB_CONNECTION");
    c
}

fn db(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run s3db-run db")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn eight_processes_inserting_one_id_leave_exactly_one_winner() {
    let dir = project();
    let children: Vec<_> = (0..8)
        .map(|i| {
            command(dir.path())
                .args(["put", "things"])
                .arg(format!("{{\"id\":\"same\",\"writer\":{i}}}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<&Output> = outputs.iter().filter(|o| o.status.success()).collect();
    let losers: Vec<String> = outputs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(winners.len(), 1, "losers said: {losers:?}");
    assert!(
        losers.iter().all(|e| e.contains("already exists")),
        "{losers:?}"
    );
    let stored: serde_json::Value =
        serde_json::from_str(stdout(&db(dir.path(), &["get", "things", "same"])).trim()).unwrap();
    let winner: serde_json::Value = serde_json::from_str(stdout(winners[0]).trim()).unwrap();
    assert_eq!(stored, winner);
}

#[test]
fn import_export_list_count_and_delete_through_the_command() {
    let dir = project();
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        "{\"id\":\"a\",\"n\":1}\n{\"id\":\"b\",\"n\":2}\n\n{\"id\":\"c\",\"n\":3}\n",
    )
    .unwrap();
    assert!(
        db(dir.path(), &["import", "things", &file.to_string_lossy()])
            .status
            .success()
    );
    assert_eq!(stdout(&db(dir.path(), &["count", "things"])).trim(), "3");
    assert_eq!(
        stdout(&db(
            dir.path(),
            &["count", "things", "--where", "{\"n\":{\"$gte\":2}}"]
        ))
        .trim(),
        "2"
    );
    let listed = stdout(&db(dir.path(), &["list", "things", "--limit", "2"]));
    assert_eq!(listed.lines().count(), 2);
    assert!(listed.lines().next().unwrap().contains("\"id\":\"a\""));
    let again = db(dir.path(), &["import", "things", &file.to_string_lossy()]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "ids exist: a plain import fails"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("line 1"));
    assert!(db(
        dir.path(),
        &["import", "things", "--upsert", &file.to_string_lossy()]
    )
    .status
    .success());
    assert!(db(dir.path(), &["delete", "things", "b"]).status.success());
    assert_eq!(
        db(dir.path(), &["delete", "things", "b"]).status.code(),
        Some(1)
    );
    let exported = stdout(&db(dir.path(), &["export", "things"]));
    let ids: Vec<String> = exported
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(
        db(dir.path(), &["get", "things", "b"]).status.code(),
        Some(1)
    );
    assert_eq!(
        db(
            dir.path(),
            &["list", "things", "--where", "{\"n\":{\"$bad\":1}}"]
        )
        .status
        .code(),
        Some(2)
    );
}

/// A writer killed at a random point leaves every record either at its old or its new content,
/// never torn: the fs backend writes a temporary file and renames it.
#[test]
fn a_writer_killed_mid_write_leaves_every_record_old_or_new() {
    let dir = project();
    let big = "x".repeat(64 * 1024);
    let write_all = |version: &str| {
        let lines: String = (0..200)
            .map(|i| {
                format!("{{\"id\":\"r{i:03}\",\"version\":\"{version}\",\"pad\":\"{big}\"}}\n")
            })
            .collect();
        let file = dir.path().join(format!("{version}.jsonl"));
        std::fs::write(&file, lines).unwrap();
        file
    };
    let old = write_all("old");
    assert!(
        db(dir.path(), &["import", "things", &old.to_string_lossy()])
            .status
            .success()
    );
    let mut interrupted = 0;
    for round in 0..6 {
        let new = write_all(&format!("new{round}"));
        let mut child = command(dir.path())
            .args([
                "--concurrency",
                "4",
                "import",
                "things",
                "--upsert",
                &new.to_string_lossy(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rand::random_range(0..150)));
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let exported = stdout(&db(dir.path(), &["export", "things"]));
        let mut count = 0;
        for line in exported.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("every record is whole JSON");
            let version = v["version"].as_str().unwrap();
            assert!(version == "old" || version.starts_with("new"), "{version}");
            assert_eq!(
                v["pad"].as_str().map(str::len),
                Some(big.len()),
                "torn record"
            );
            count += 1;
        }
        assert_eq!(count, 200, "round {round}: no record lost");
    }
    assert!(
        interrupted > 0,
        "the writer always finished before the kill: nothing was tested"
    );
}
