//! A sick S3 between the runner and the test server: a proxy on loopback that stalls, answers
//! 503 or resets the connection. Timeouts end what would hang, retries ride out what passes,
//! `/readyz` follows the store, and a stuck runner still stops on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use s3db_run::store::connection::{RequestPolicy, S3Location};
use s3db_run::store::s3::{ensure_bucket, S3Store};
use s3db_run::store::{ObjectStore, PutMode, PutOptions};

use crate::support::proxy::{self, Fault};
use crate::support::s3;

/// A fresh bucket on the test server, and a location that reaches it through `endpoint`.
async fn bucket_through(endpoint: &str, requests: RequestPolicy) -> S3Location {
    let bucket = s3::bucket_name();
    let direct = S3Store::connect(s3::location(&bucket, "")).await;
    ensure_bucket(direct.client(), &bucket)
        .await
        .expect("create bucket");
    let mut location = s3::location(&bucket, "db");
    location.endpoint = Some(endpoint.to_string());
    location.requests = requests;
    location
}

fn quick(attempts: u32) -> RequestPolicy {
    RequestPolicy {
        connect_timeout: Some(Duration::from_millis(500)),
        read_timeout: Some(Duration::from_millis(500)),
        attempt_timeout: Some(Duration::from_secs(2)),
        timeout: Some(Duration::from_secs(20)),
        max_attempts: Some(attempts),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_until_the_store_recovers() {
    let (endpoint, control) = proxy::start_controlled(s3::endpoint(), Fault::None).await;
    let store = S3Store::connect(bucket_through(&endpoint, quick(10)).await).await;
    store
        .put("k", "v".into(), PutMode::Overwrite, &PutOptions::default())
        .await
        .unwrap();
    control.set(Fault::Unavailable);
    let before = control.requests.load(std::sync::atomic::Ordering::SeqCst);
    let get = tokio::spawn(async move { store.get("k").await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    control.set(Fault::None);
    let object = get
        .await
        .unwrap()
        .expect("retried until the server recovered");
    assert_eq!(&object.unwrap().body[..], b"v");
    let tried = control.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(tried >= 2, "the 503 was retried: {tried} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_connection_is_a_clear_error_and_the_next_request_works() {
    let (endpoint, control) = proxy::start_controlled(s3::endpoint(), Fault::None).await;
    let store = S3Store::connect(bucket_through(&endpoint, quick(2)).await).await;
    store
        .put("k", "v".into(), PutMode::Overwrite, &PutOptions::default())
        .await
        .unwrap();
    control.set(Fault::Reset);
    let error = store.get("k").await.unwrap_err().to_string();
    assert!(
        error.contains("GetObject") && error.contains(&endpoint),
        "{error}"
    );
    control.set(Fault::None);
    assert!(store.get("k").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_ends_at_the_timeout_with_the_operation_and_endpoint() {
    let (endpoint, control) = proxy::start_controlled(s3::endpoint(), Fault::None).await;
    let mut policy = quick(2);
    policy.timeout = Some(Duration::from_secs(3));
    let store = S3Store::connect(bucket_through(&endpoint, policy).await).await;
    control.set(Fault::Stall);
    let started = Instant::now();
    let error = store.head("k").await.unwrap_err().to_string();
    let took = started.elapsed();
    assert!(
        error.contains("HeadObject") && error.contains(&endpoint) && error.contains("timed out"),
        "{error}"
    );
    // Without timeouts the request waits for as long as the stall lasts (here: ever).
    assert!(took < Duration::from_secs(15), "{took:?}");
    control.set(Fault::None);
}

/// A folder whose manifest reaches a fresh bucket through `endpoint`, with short timeouts.
async fn project_through(endpoint: &str, requests: &str, extra: &str) -> tempfile::TempDir {
    let location = bucket_through(endpoint, RequestPolicy::default()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            "version: 1\n\
             database:\n  \
               connection: s3://testing:testing@{bucket}/db?region=us-east-1&endpoint={endpoint}&forcePathStyle=true\n  \
               requests: {requests}\n  \
               resources:\n    things: {{}}\n\
             {extra}",
            bucket = location.bucket
        ),
    )
    .unwrap();
    dir
}

fn s3db(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3db-run"));
    c.current_dir(dir)
        .env_remove("S3DB_CONNECTION")
        .stdin(Stdio::null());
    c
}

#[test]
fn db_get_on_a_stalled_store_fails_within_its_timeout() {
    let (endpoint, control) = proxy::start_in_background(s3::endpoint(), Fault::None);
    let dir = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(project_through(
            &endpoint,
            "{ connectTimeout: 500ms, readTimeout: 500ms, timeout: 2s, maxAttempts: 2 }",
            "",
        ));
    let put = s3db(dir.path())
        .args(["db", "put", "things", r#"{"id":"a","n":1}"#])
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    control.set(Fault::Stall);
    let started = Instant::now();
    let get = s3db(dir.path())
        .args(["db", "get", "things", "a"])
        .output()
        .unwrap();
    let took = started.elapsed();
    control.set(Fault::None);
    let stderr = String::from_utf8_lossy(&get.stderr);
    assert!(!get.status.success());
    assert!(
        stderr.contains("timed out") && stderr.contains(&endpoint),
        "{stderr}"
    );
    assert!(!stderr.contains("testing:testing"), "{stderr}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// The status `/readyz` answers, over a plain socket (the test runs outside any runtime).
fn readyz(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    socket
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 12];
    socket.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_for_readyz(port: u16, want: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if readyz(port) == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn readyz_follows_the_store_and_a_stuck_runner_still_stops_on_sigterm() {
    let (endpoint, control) = proxy::start_in_background(s3::endpoint(), Fault::None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let jobs = "jobs:\n  tick:\n    schedule: \"* * * * * *\"\n    action: { builtin: record.insert, with: { resource: things, data: { n: 1 } } }\n";
    let dir = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(project_through(
            &endpoint,
            // The default timeouts (a minute per operation): the shutdown's own bound, not a
            // short request timeout, must end the stuck requests.
            "{}",
            &format!("{jobs}server: {{ listen: \"127.0.0.1:{port}\" }}\n"),
        ));
    let child = s3db(dir.path())
        .args(["run", "s3db.yaml", "--grace", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = crate::support::Process(child);
    assert!(wait_for_readyz(port, 200, Duration::from_secs(30)));
    control.set(Fault::Stall);
    assert!(
        wait_for_readyz(port, 503, Duration::from_secs(15)),
        "/readyz turns 503 while the store does not answer"
    );
    control.set(Fault::None);
    assert!(
        wait_for_readyz(port, 200, Duration::from_secs(15)),
        "and 200 again when it does"
    );
    control.set(Fault::Stall);
    // Let the per-second job's requests get stuck.
    std::thread::sleep(Duration::from_secs(2));
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = signalled + Duration::from_secs(1 + 5);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline + Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = signalled.elapsed();
    control.set(Fault::None);
    assert!(status.is_some(), "the runner ignored SIGTERM");
    assert!(
        took <= Duration::from_secs(1 + 5),
        "exited {took:?} after SIGTERM, past grace (1 s) + 5 s"
    );
}

#[test]
fn a_store_that_ignores_conditional_writes_is_refused_at_start() {
    let (endpoint, _control) = proxy::start_in_background(s3::endpoint(), Fault::IgnoreConditions);
    let dir = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(project_through(
            &endpoint,
            "{}",
            "server: { enabled: false }\n",
        ));
    let out = s3db(dir.path())
        .args(["run", "s3db.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("If-None-Match") && stderr.contains("singleRunner"),
        "{stderr}"
    );
    // A single runner needs no such guarantee between runners, and may run on it.
    let manifest = std::fs::read_to_string(dir.path().join("s3db.yaml")).unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        manifest.replace("  requests: {}\n", "  requests: {}\n  singleRunner: true\n"),
    )
    .unwrap();
    let mut child = crate::support::Process(
        s3db(dir.path())
            .args(["run", "s3db.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "a single runner starts on it"
    );
}
