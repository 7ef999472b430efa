//! Several runner processes on one S3 database behave as one runner: overlap policies hold
//! across them and the CLI, through each job's run lease in the database.

use std::path::Path;

use futures::StreamExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{s3, Process};

/// A folder with a manifest on a fresh bucket: one job `slow` (5 s of work, every 2 s, with
/// `overlap`) whose runs append `start NANOS PID SLOT` and `end NANOS PID` lines to `runs.log`.
fn project(overlap: &str, schedule: &str) -> tempfile::TempDir {
    let connection = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(s3::connection_string());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("runs.log");
    let script = dir.path().join("slow.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"start $(date +%s%N) $$ $S3DB_SCHEDULED_TIME\" >> {log}\nsleep 5\necho \"end $(date +%s%N) $$\" >> {log}\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            "version: 1\n\
             database:\n  connection: {connection}\n\
             jobs:\n  slow:\n    schedule: \"{schedule}\"\n    overlap: {overlap}\n    timeout: 30s\n    retries: 0\n    action: {{ run: [./slow.sh] }}\n\
             scheduler: {{ leaseTtl: 3s }}\n\
             server: {{ enabled: false }}\n"
        ),
    )
    .unwrap();
    dir
}

fn runner(dir: &Path) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(["run", "s3db.yaml", "--grace", "10s"])
            .current_dir(dir)
            .env_remove("S3DB_CONNECTION")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn stop(mut runners: Vec<Process>) {
    for r in &runners {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for r in &mut runners {
        let _ = r.0.wait();
    }
}

/// Each run's (start, end) in nanoseconds, by the shell's pid.
fn runs(dir: &Path) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(dir.join("runs.log")).unwrap_or_default();
    let mut starts = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (Some(kind), Some(at), Some(pid)) = (parts.first(), parts.get(1), parts.get(2)) else {
            continue;
        };
        let at: u128 = at.parse().unwrap();
        match *kind {
            "start" => {
                starts.insert(pid.to_string(), at);
            }
            _ => {
                if let Some(s) = starts.remove(*pid) {
                    out.push((s, at));
                }
            }
        }
    }
    out.sort();
    out
}

/// Three runners run the 5 s job every 2 s for `secs` with `overlap`; no two runs overlap.
fn three_runners_never_overlap(overlap: &str, secs: u64) -> tempfile::TempDir {
    let dir = project(overlap, "*/2 * * * * *");
    let runners: Vec<Process> = (0..3).map(|_| runner(dir.path())).collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop(runners);
    let runs = runs(dir.path());
    assert!(runs.len() >= 2, "the job ran: {runs:?}");
    for pair in runs.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two runs overlapped across runners: {pair:?}"
        );
    }
    dir
}

#[test]
fn overlap_skip_holds_across_three_runners() {
    three_runners_never_overlap("skip", 16);
}

#[test]
fn the_cli_refuses_a_run_beside_a_running_one() {
    // Every minute: the slot is due at most a minute out; the test waits for the first run.
    let dir = project("skip", "*/2 * * * * *");
    let runners = vec![runner(dir.path())];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.path().join("runs.log"))
        .unwrap_or_default()
        .contains("start")
    {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cli(dir.path(), &["job", "run", "slow"]);
    stop(runners);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the CLI ran it beside the runner's run"
    );
    assert!(stderr.contains("running"), "{stderr}");
    let runs = runs(dir.path());
    for pair in runs.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "overlapped: {pair:?}");
    }
}

#[test]
fn overlap_queue_runs_one_at_a_time_in_slot_order_across_runners() {
    let dir = three_runners_never_overlap("queue", 21);
    // The slots of the runs, in the order they started: each waited for the one before it,
    // whichever runner held it.
    let text = std::fs::read_to_string(dir.path().join("runs.log")).unwrap_or_default();
    let slots: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("start"))
        .filter_map(|l| l.split(' ').nth(3))
        .collect();
    assert!(slots.len() >= 3, "{text}");
    for pair in slots.windows(2) {
        assert!(
            pair[0] < pair[1],
            "queued slots started out of order: {slots:?}"
        );
    }
    // Nothing skipped: slot after slot, every 2 s, since the first.
    for pair in slots.windows(2) {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
        assert_eq!((at(pair[1]) - at(pair[0])).num_seconds(), 2, "{slots:?}");
    }
}

#[test]
fn overlap_replace_cancels_the_other_runners_run() {
    let dir = project("replace", "*/3 * * * * *");
    let runners: Vec<Process> = (0..2).map(|_| runner(dir.path())).collect();
    std::thread::sleep(Duration::from_secs(14));
    stop(runners);
    let text = std::fs::read_to_string(dir.path().join("runs.log")).unwrap_or_default();
    let starts = text.lines().filter(|l| l.starts_with("start")).count();
    let ends = text.lines().filter(|l| l.starts_with("end")).count();
    // Each 5 s run is replaced by the next slot 3 s later, whichever runner claims it: the
    // replaced run is stopped within a lease renewal (1 s here) and never reaches its end.
    assert!(starts >= 3, "{text}");
    assert!(ends < starts - 1, "runs were not replaced: {text}");
    for pair in runs(dir.path()).windows(2) {
        let overlap = pair[0].1.saturating_sub(pair[1].0);
        assert!(
            overlap < 2_000_000_000,
            "ran side by side for {overlap} ns: {pair:?}"
        );
    }
}

/// `s3db-run ARGS…` in `dir`, to its end.
fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(args)
        .current_dir(dir)
        .env_remove("S3DB_CONNECTION")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn starts_since(dir: &Path, since: u128) -> usize {
    runs_started(dir)
        .into_iter()
        .filter(|t| *t >= since)
        .count()
}

fn runs_started(dir: &Path) -> Vec<u128> {
    std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("start "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn disabling_from_the_cli_stops_the_job_on_every_runner_and_survives_a_restart() {
    let dir = project("allow", "* * * * * *");
    let mut runners: Vec<Process> = (0..3).map(|_| runner(dir.path())).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runs_started(dir.path()).len() < 2 {
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cli(dir.path(), &["job", "disable", "slow"]);
    assert!(out.status.success(), "{out:?}");
    // Every runner follows the shared state within its probe interval (2 s).
    let settled = now_nanos() + 3_000_000_000;
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        starts_since(dir.path(), settled),
        0,
        "a runner still ran the disabled job"
    );
    // A runner started now reads the state at start.
    runners.push(runner(dir.path()));
    let restarted = now_nanos();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        starts_since(dir.path(), restarted),
        0,
        "a restart forgot it"
    );
    let out = cli(dir.path(), &["job", "enable", "slow"]);
    assert!(out.status.success(), "{out:?}");
    let enabled = now_nanos();
    let deadline = Instant::now() + Duration::from_secs(10);
    while starts_since(dir.path(), enabled) == 0 {
        assert!(Instant::now() < deadline, "enabling did not resume the job");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(runners);
}

/// A folder whose manifest has a machine `order`: `waiting` moves to `expired` 3 s after it is
/// entered; `done` is final.
fn machine_project() -> tempfile::TempDir {
    let connection = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(s3::connection_string());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            "version: 1\n\
             database:\n  connection: {connection}\n\
             machines:\n  order:\n    initialState: waiting\n    states:\n      waiting: {{ after: {{ 3s: expired }}, on: {{ FINISH: done }} }}\n      expired: {{ type: final }}\n      done: {{ type: final }}\n\
             server: {{ enabled: false }}\n"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn a_deadline_set_from_the_cli_fires_on_time_on_a_runner() {
    let dir = machine_project();
    let runners: Vec<Process> = (0..2).map(|_| runner(dir.path())).collect();
    // Let the runners start (and make their start-up scan) before the entity exists.
    std::thread::sleep(Duration::from_secs(3));
    let out = cli(dir.path(), &["machine", "init", "order", "o1"]);
    assert!(out.status.success(), "{out:?}");
    let initialised = Instant::now();
    let state = loop {
        let out = cli(dir.path(), &["machine", "state", "order", "o1"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["state"] == "expired" || initialised.elapsed() > Duration::from_secs(20) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = initialised.elapsed();
    stop(runners);
    assert_eq!(state["state"], "expired", "{state}");
    // Due 3 s after `init`: fired within 2 s of it (a poll of the index), not at a rescan.
    assert!(
        took < Duration::from_secs(3 + 2),
        "fired {took:?} after init"
    );
}

#[test]
fn a_per_second_job_runs_every_slot_once_while_a_runner_restarts_twice() {
    let dir = project("allow", "* * * * * *");
    // The job's own effect is not needed here: a quick action, so slots never overlap.
    let manifest = std::fs::read_to_string(dir.path().join("s3db.yaml")).unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        manifest.replace(
            "{ run: [./slow.sh] }",
            "{ builtin: log, with: { level: debug } }",
        ),
    )
    .unwrap();
    let steady = runner(dir.path());
    let mut restarting = runner(dir.path());
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        stop(vec![restarting]);
        restarting = runner(dir.path());
    }
    std::thread::sleep(Duration::from_secs(3));
    stop(vec![steady, restarting]);
    let out = cli(dir.path(), &["job", "history", "slow", "--limit", "1000"]);
    assert!(out.status.success(), "{out:?}");
    let history = String::from_utf8_lossy(&out.stdout).to_string();
    let mut slots: Vec<(i64, String)> = history
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| {
            let slot = chrono::DateTime::parse_from_rfc3339(r["slot"].as_str()?).ok()?;
            Some((slot.timestamp(), r["status"].as_str()?.to_string()))
        })
        .collect();
    slots.sort();
    assert!(slots.len() >= 8, "{slots:?}");
    // One record per slot by construction (its id is the slot); what matters is that none is
    // missing and each ran.
    for pair in slots.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1, "a slot was missed: {slots:?}");
    }
    assert!(
        slots.iter().all(|(_, status)| status == "success"),
        "{history}"
    );
}

/// Requests an idle runner makes in `window`, counted by the proxy it reaches S3 through.
fn idle_requests(dir: &Path, control: &crate::support::proxy::Control, window: Duration) -> usize {
    let r = runner(dir);
    // Past the start-up: connecting, the conditional-write probe, the first upkeep.
    std::thread::sleep(Duration::from_secs(6));
    let before = control.requests.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(window);
    let made = control.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    stop(vec![r]);
    made
}

#[test]
fn finished_entities_add_no_idle_requests() {
    use crate::support::proxy::{self, Fault};
    let (endpoint, control) = proxy::start_in_background(s3::endpoint(), Fault::None);
    let dir = machine_project();
    // The same database, reached through the counting proxy.
    let manifest = std::fs::read_to_string(dir.path().join("s3db.yaml")).unwrap();
    let direct = s3::endpoint();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        manifest.replace(
            &format!("endpoint={direct}"),
            &format!("endpoint={endpoint}"),
        ),
    )
    .unwrap();
    let window = Duration::from_secs(8);
    let empty = idle_requests(dir.path(), &control, window);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let loaded =
            s3db_run::manifest::load_path(&dir.path().join("s3db.yaml"), None, &|_: &str| None)
                .unwrap();
        let rt = s3db_run::runtime::Runtime::build(&loaded.manifest.unwrap(), None)
            .await
            .unwrap();
        let machines = rt.machines.clone().unwrap();
        futures::stream::iter(0..300)
            .for_each_concurrent(16, |i| {
                let machines = machines.clone();
                async move {
                    let id = format!("o{i}");
                    machines
                        .initialize("order", &id, serde_json::Value::Null)
                        .await
                        .unwrap();
                    machines
                        .send("order", &id, "FINISH", serde_json::Value::Null, None)
                        .await
                        .unwrap();
                }
            })
            .await;
    });
    let with_300 = idle_requests(dir.path(), &control, window);
    // The same few requests a second (the store probe, the deadline index's head), with or
    // without them; a scan would add hundreds.
    assert!(
        with_300 <= empty + 3,
        "idle requests in {window:?}: {empty} with no entities, {with_300} with 300 finished ones"
    );
}

#[test]
fn the_api_of_any_runner_shows_a_run_going_on_another() {
    let dir = project("skip", "*/2 * * * * *");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    // Runner B serves the API and has the job disabled in its manifest: only A runs it.
    let manifest = std::fs::read_to_string(dir.path().join("s3db.yaml")).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        manifest
            .replace(
                "    overlap: skip\n",
                "    overlap: skip\n    enabled: false\n",
            )
            .replace(
                "server: { enabled: false }",
                &format!("server: {{ listen: \"127.0.0.1:{port}\" }}"),
            ),
    )
    .unwrap();
    let b = Process(
        Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(["run", "b.yaml", "--grace", "10s"])
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let a = runner(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(dir.path().join("runs.log"))
        .unwrap_or_default()
        .contains("start")
    {
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = http_get_json(port, "/api/v1/jobs/slow");
    stop(vec![a, b]);
    assert_eq!(status["running"], true, "{status}");
    assert!(
        status["run"]["holder"]
            .as_str()
            .is_some_and(|h| h.starts_with("run slow:")),
        "{status}"
    );
}

/// A GET on the local API, its body as JSON (a plain socket: the test runs outside a runtime).
fn http_get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{answer}: {e}"))
}
