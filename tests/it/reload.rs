//! Hot reload end to end: the runner as a process, its manifest changed on disk the ways editors,
//! Kubernetes and git change it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::Process;

use serde_json::Value;

struct Runner {
    _process: Process,
    base: String,
    port: u16,
    dir: tempfile::TempDir,
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A manifest with a per-second `tick` job (appending its slot to ticks.log) and `extra` jobs.
fn manifest(port: u16, extra: &str) -> String {
    format!(
        r#"version: 1
database: {{ connection: file://./data }}
jobs:
  tick: {{ schedule: "* * * * * *", action: {{ run: ["/bin/sh", "-c", "echo $S3DB_SCHEDULED_TIME >> ticks.log"] }} }}
{extra}
server: {{ listen: "127.0.0.1:{port}" }}
"#
    )
}

/// Starts the runner on `file` (relative to the folder), which `layout` has written.
fn start(layout: impl FnOnce(&Path, u16) -> PathBuf) -> Runner {
    let dir = tempfile::tempdir().unwrap();
    let port = port();
    let file = layout(dir.path(), port);
    let process = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .arg(&file)
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the runner did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Runner {
        _process: process,
        base,
        port,
        dir,
    }
}

/// Starts the runner on `s3db.yaml` with the text `manifest(port)`.
fn start_with(manifest: impl FnOnce(u16) -> String) -> Runner {
    start(|dir, port| {
        std::fs::write(dir.join("s3db.yaml"), manifest(port)).unwrap();
        dir.join("s3db.yaml")
    })
}

/// Rewrites the running manifest in place.
fn rewrite(r: &Runner, text: impl AsRef<[u8]>) {
    std::fs::write(r.dir.path().join("s3db.yaml"), text).unwrap();
}

/// Waits until the per-second `tick` job has fired once.
fn until_first_tick(r: &Runner) {
    let t = Instant::now();
    while ticks(r).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "tick never fired");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain HTTP/1.0 GET: the body.
fn fetch(r: &Runner, path: &str) -> String {
    request(r, "GET", path)
}

fn request(r: &Runner, method: &str, path: &str) -> String {
    request_with(r, method, path, "")
}

/// An HTTP/1.0 request with a JSON body: the answer's body.
fn request_with(r: &Runner, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let addr = r.base.trim_start_matches("http://");
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let _ = write!(
        conn,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{kind}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

fn get(r: &Runner, path: &str) -> Value {
    serde_json::from_str(&fetch(r, path)).unwrap_or(Value::Null)
}

fn jobs(r: &Runner) -> Vec<String> {
    get(r, "/api/v1/jobs")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|j| j["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `job` is listed; returns how long it took.
fn until_listed(r: &Runner, job: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while !jobs(r).iter().any(|j| j == job) {
        assert!(t.elapsed() < limit, "`{job}` not active after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

/// Waits (up to 5 s) until the last reload has this result; returns it.
fn until_reload(r: &Runner, result: &str) -> Value {
    let t = Instant::now();
    loop {
        let last = get(r, "/api/v1/reload");
        if last["result"] == result {
            return last;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no `{result}` reload: {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the `slow` job of a test has written to slow.log.
fn slow_log(r: &Runner) -> String {
    std::fs::read_to_string(r.dir.path().join("slow.log")).unwrap_or_default()
}

/// Waits (up to 10 s) until the `slow` job has started once.
fn until_slow_started(r: &Runner) {
    let t = Instant::now();
    while !slow_log(r).contains("start") {
        assert!(t.elapsed() < Duration::from_secs(10), "slow never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const NIGHTLY: &str =
    "  nightly: { schedule: \"0 3 * * *\", action: { builtin: log, with: { message: hi } } }\n";

#[test]
fn a_reload_by_in_place_write_takes_effect_within_a_second() {
    let r = start_with(|port| manifest(port, ""));
    let port = r.port;
    rewrite(&r, manifest(port, NIGHTLY));
    until_listed(&r, "nightly", Duration::from_secs(1));
    // The job is live a moment before the reload's result is recorded.
    until_reload(&r, "applied");
}

#[test]
fn a_reload_by_rename_takes_effect_within_a_second() {
    let r = start_with(|port| manifest(port, ""));
    let port = r.port;
    // As vim and most editors save: a new file, renamed over the old one.
    let tmp = r.dir.path().join(".s3db.yaml.swp");
    std::fs::write(&tmp, manifest(port, NIGHTLY)).unwrap();
    std::fs::rename(&tmp, r.dir.path().join("s3db.yaml")).unwrap();
    until_listed(&r, "nightly", Duration::from_secs(1));
}

#[test]
fn a_reload_by_configmap_symlink_swap_takes_effect_within_a_second() {
    // Kubernetes: s3db.yaml -> ..data/s3db.yaml, ..data -> ..2024_v1; an update writes a new
    // timestamped folder and renames a new ..data link over the old one.
    let r = start(|dir, port| {
        std::fs::create_dir(dir.join("..v1")).unwrap();
        std::fs::write(dir.join("..v1/s3db.yaml"), manifest(port, "")).unwrap();
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/s3db.yaml", dir.join("s3db.yaml")).unwrap();
        dir.join("s3db.yaml")
    });
    let port = r.port;
    let dir = r.dir.path();
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/s3db.yaml"), manifest(port, NIGHTLY)).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    until_listed(&r, "nightly", Duration::from_secs(1));
}

fn ticks(r: &Runner) -> Vec<String> {
    std::fs::read_to_string(r.dir.path().join("ticks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_broken_manifest_keeps_the_old_jobs_and_shows_its_diagnostics() {
    let r = start_with(|port| manifest(port, NIGHTLY));
    rewrite(&r, "version: 1\ndatabase: { connection: file://./data }\njobs:\n  tick: { schedule: \"every now and then\", action: { builtin: log } }\n",);
    let last = until_reload(&r, "failed");
    let codes: Vec<&str> = last["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(codes.iter().any(|c| c.starts_with("manifest::")), "{last}");
    assert!(last["diagnostics"][0]["line"].as_u64().unwrap() > 0);
    // The old configuration still runs: both jobs, and the ticks go on.
    assert_eq!(jobs(&r), ["tick", "nightly"]);
    let before = ticks(&r).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(ticks(&r).len() >= before + 2, "the old job stopped firing");
    let metrics = fetch(&r, "/metrics");
    assert!(
        metrics.contains("s3db_reloads_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_per_second_job_fires_exactly_once_per_slot_across_20_reloads() {
    let r = start_with(|port| manifest(port, ""));
    let port = r.port;
    // Wait for the first tick, so the count starts from a fired slot.
    until_first_tick(&r);
    for i in 0..20 {
        // Each reload changes another job; `tick` is unchanged and must keep its schedule.
        let other = format!(
            "  other: {{ schedule: \"0 3 * * *\", description: \"v{i}\", action: {{ builtin: log }} }}\n"
        );
        rewrite(&r, manifest(port, &other));
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let slots = ticks(&r);
    let mut unique = slots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), slots.len(), "a slot fired twice: {slots:?}");
    let times: Vec<i64> = unique
        .iter()
        .map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp())
        .collect();
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 1, "a slot was missed: {slots:?}");
    }
    assert!(times.len() >= 5, "{slots:?}");
    assert_eq!(get(&r, "/api/v1/reload")["result"], "applied");
}

#[test]
fn a_reload_reconfigures_backups_and_lists_what_needs_a_restart() {
    let backup = |folder: &str| {
        format!("backup: {{ driver: filesystem, config: {{ path: \"./{folder}/\" }} }}\n")
    };
    let r = start_with(|port| manifest(port, "") + &backup("first"));
    let port = r.port;
    rewrite(
        &r,
        manifest(port, "")
            + &backup("second")
            + "cache: { driver: memory }\nstateMachine: { verbose: true }\n",
    );
    let last = until_reload(&r, "applied");
    // Adding a cache section changes what the database holds: that needs a restart.
    assert_eq!(
        last["restartRequired"],
        serde_json::json!(["cache", "stateMachine"]),
        "{last}"
    );
    let started: Value = serde_json::from_str(&request(&r, "POST", "/api/v1/backups")).unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while !r.dir.path().join(format!("second/{id}.done")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the backup did not go to ./second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!r.dir.path().join("first").exists());
}

#[test]
fn a_reload_of_the_scheduler_time_zone_moves_every_job_s_next_run() {
    let r = start_with(|port| manifest(port, NIGHTLY));
    let next = |r: &Runner| {
        get(r, "/api/v1/jobs")
            .as_array()
            .and_then(|a| a.iter().find(|j| j["name"] == "nightly").cloned())
            .and_then(|j| j["nextRun"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    assert!(
        next(&r).contains("T03:00:00") && !next(&r).contains("+09:00"),
        "{}",
        next(&r)
    );
    let port = r.port;
    rewrite(
        &r,
        manifest(port, NIGHTLY) + "scheduler: { timezone: Asia/Tokyo }\n",
    );
    let t = Instant::now();
    // Next runs are shown in the job's zone.
    while !next(&r).ends_with("T03:00:00+09:00") {
        assert!(t.elapsed() < Duration::from_secs(5), "{}", next(&r));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        get(&r, "/api/v1/reload")["restartRequired"],
        serde_json::json!([])
    );
}

#[test]
fn a_reload_of_cache_settings_applies_without_a_restart() {
    let r = start_with(|port| manifest(port, "") + "cache: { driver: memory, ttl: 5m }\n");
    let port = r.port;
    rewrite(
        &r,
        manifest(port, "") + "cache: { driver: memory, ttl: 1m, maxSize: 50 }\n",
    );
    let last = until_reload(&r, "applied");
    assert_eq!(last["restartRequired"], serde_json::json!([]), "{last}");
    assert_eq!(last["changes"][0]["kind"], "cache", "{last}");
}

#[test]
fn new_machine_definitions_apply_to_the_next_event() {
    let machine = |extra: &str| {
        format!(
            "machines:\n  order:\n    initialState: pending\n    states:\n      pending: {{ on: {{ PAY: paid }} }}\n      paid: {{ on: {{ {extra} }} }}\n      shipped: {{ type: final }}\n"
        )
    };
    let r = start_with(|port| manifest(port, "") + &machine(""));
    let port = r.port;
    let events = "/api/v1/machines/order/entities/o1/events";
    request_with(&r, "POST", "/api/v1/machines/order/entities/o1", "{}");
    let paid: Value =
        serde_json::from_str(&request_with(&r, "POST", events, r#"{"event":"PAY"}"#)).unwrap();
    assert_eq!(paid["to"], "paid", "{paid}");
    let refused: Value =
        serde_json::from_str(&request_with(&r, "POST", events, r#"{"event":"SHIP"}"#)).unwrap();
    assert_eq!(refused["code"], "event_refused", "{refused}");
    rewrite(&r, manifest(port, "") + &machine("SHIP: shipped"));
    until_reload(&r, "applied");
    let shipped: Value =
        serde_json::from_str(&request_with(&r, "POST", events, r#"{"event":"SHIP"}"#)).unwrap();
    assert_eq!(shipped["to"], "shipped", "{shipped}");
}

#[test]
fn a_removed_job_finishes_its_running_execution_and_is_not_scheduled_again() {
    let slow = "  slow: { schedule: \"* * * * * *\", overlap: allow, action: { run: [\"/bin/sh\", \"-c\", \"echo start >> slow.log; sleep 1.5; echo end >> slow.log\"] } }\n";
    let r = start_with(|port| manifest(port, slow));
    let port = r.port;
    let log = slow_log;
    until_slow_started(&r);
    rewrite(&r, manifest(port, ""));
    until_reload(&r, "applied");
    assert!(!jobs(&r).contains(&"slow".to_string()));
    // A run whose slot fired just before the removal may still be starting its process.
    std::thread::sleep(Duration::from_millis(500));
    let started = log(&r).matches("start").count();
    std::thread::sleep(Duration::from_millis(3000));
    let after = log(&r);
    assert_eq!(
        after.matches("start").count(),
        started,
        "scheduled after removal: {after}"
    );
    assert_eq!(
        after.matches("end").count(),
        started,
        "a running execution was cut off: {after}"
    );
}

#[test]
fn a_changed_job_takes_its_new_schedule_from_its_next_slot() {
    let r = start_with(|port| manifest(port, ""));
    let port = r.port;
    until_first_tick(&r);
    // The same job, now daily at 03:00.
    let daily = manifest(port, "").replace("\"* * * * * *\"", "\"0 3 * * *\"");
    rewrite(&r, daily);
    until_reload(&r, "applied");
    let next = get(&r, "/api/v1/jobs/tick")["nextRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(next.contains("T03:00:00"), "{next}");
    let fired = ticks(&r).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(ticks(&r).len() <= fired + 1, "still firing every second");
}

#[test]
fn a_reload_moves_the_api_to_a_new_listen_address() {
    let mut r = start_with(|port| manifest(port, ""));
    let old_port = r.port;
    let new_port = port();
    rewrite(&r, manifest(new_port, ""));
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", new_port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "the API did not move");
        std::thread::sleep(Duration::from_millis(20));
    }
    r.base = format!("http://127.0.0.1:{new_port}");
    let last = until_reload(&r, "applied");
    assert_eq!(last["restartRequired"], serde_json::json!([]), "{last}");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", old_port)).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the old address still answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&r, "/healthz")["status"], "ok");
}

#[test]
fn a_changed_running_job_stays_running_and_overlap_skip_holds() {
    let slow = |description: &str| {
        format!("  slow: {{ schedule: \"* * * * * *\", description: \"{description}\", action: {{ run: [\"/bin/sh\", \"-c\", \"echo start >> slow.log; sleep 2.5; echo end >> slow.log\"] }} }}\n")
    };
    let r = start_with(|port| manifest(port, &slow("first")));
    let port = r.port;
    let log = slow_log;
    until_slow_started(&r);
    rewrite(&r, manifest(port, &slow("second")));
    until_reload(&r, "applied");
    let status = get(&r, "/api/v1/jobs/slow");
    assert_eq!(status["description"], "second", "{status}");
    if !log(&r).contains("end") {
        assert_eq!(status["running"], true, "{status}");
    }
    std::thread::sleep(Duration::from_millis(4000));
    // One at a time: every start is followed by its end before the next start.
    let lines: Vec<String> = log(&r).lines().map(str::to_string).collect();
    for pair in lines.windows(2) {
        assert!(
            !(pair[0] == "start" && pair[1] == "start"),
            "two copies ran at once: {lines:?}"
        );
    }
}

#[test]
fn a_reload_that_fails_to_build_changes_nothing() {
    let backup = "backup: { driver: filesystem, config: { path: \"./b/\" } }\n";
    let r = start_with(|port| manifest(port, "") + backup);
    let port = r.port;
    until_first_tick(&r);
    // A changed job, a new job and a backup whose key cannot be had: the backup is built
    // first and fails, so neither job change may be applied.
    let broken = manifest(port, NIGHTLY).replace("\"* * * * * *\"", "\"0 4 * * *\"")
        + "backup: { driver: filesystem, config: { path: \"./b/\" }, encryption: { algorithm: AES-256-GCM, keyCommand: [\"false\"] } }\n";
    rewrite(&r, broken);
    let last = until_reload(&r, "failed");
    assert!(
        last["error"].as_str().is_some_and(|e| e.contains("backup")),
        "{last}"
    );
    assert!(!jobs(&r).contains(&"nightly".to_string()), "{last}");
    let next = get(&r, "/api/v1/jobs/tick")["nextRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !next.contains("T04:00:00"),
        "the changed job was applied: {next}"
    );
    let fired = ticks(&r).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(ticks(&r).len() > fired, "tick stopped firing");
}

#[test]
fn the_api_shows_the_running_manifest_not_a_restart_pending_one() {
    let r = start_with(|port| manifest(port, ""));
    let port = r.port;
    rewrite(
        &r,
        manifest(port, NIGHTLY) + "stateMachine: { verbose: true }\n",
    );
    let last = until_reload(&r, "applied");
    assert_eq!(
        last["restartRequired"],
        serde_json::json!(["stateMachine"]),
        "{last}"
    );
    let shown = get(&r, "/api/v1/manifest");
    // The live change is shown; the one waiting for a restart is not.
    assert!(shown["manifest"]["jobs"]["nightly"].is_object(), "{shown}");
    assert_ne!(
        shown["manifest"]["stateMachine"]["verbose"], true,
        "{shown}"
    );
    // Still pending at the next reload, until a restart.
    rewrite(
        &r,
        manifest(port, NIGHTLY) + "stateMachine: { verbose: true }\n# touched\n",
    );
    let t = Instant::now();
    let again = loop {
        let again = get(&r, "/api/v1/reload");
        if again["at"] != last["at"] {
            break again;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no second reload");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        again["restartRequired"],
        serde_json::json!(["stateMachine"]),
        "{again}"
    );
}
