//! The S3 test server: moto_server on a free loopback port, one per test process, and a fresh
//! bucket per test. `scripts/test` installs moto into `.venv` and starts one server for the
//! whole run (`S3DB_TEST_S3_ENDPOINT`); run alone, a test process starts its own, which stops
//! when the process ends. A missing server is a failure, never a skipped test.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use s3db_run::store::connection::S3Location;
use s3db_run::store::s3::{ensure_bucket, S3Store};
use s3db_run::store::DynStore;

use super::repo;

pub fn endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            if let Ok(e) = std::env::var("S3DB_TEST_S3_ENDPOINT") {
                return e;
            }
            start_moto()
        })
        .clone()
}

// The watcher shell is never waited for: it outlives nothing (it ends with this process), and
// waiting would block the tests.
#[allow(clippy::zombie_processes)]
fn start_moto() -> String {
    let bin = repo().join(".venv/bin/moto_server");
    assert!(
        bin.exists(),
        "moto_server is not installed at {}: run scripts/test, which installs it",
        bin.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // The shell watches this test process and stops the server when it is gone, so no server
    // outlives the tests even though a static is never dropped.
    // scripts/moto-atomic: moto_server with S3's atomic conditional writes.
    let script = format!(
        "\"$0\" \"$1\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & server=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $server",
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(repo().join(".venv/bin/python"))
        .arg(repo().join("scripts/moto-atomic"))
        .stdin(Stdio::null())
        // Not the test's pipes: the watcher outlives the test, and a child holding them makes
        // the test runner report the test as leaking.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("http://127.0.0.1:{port}")
}

/// A bucket of its own for one test.
pub fn bucket_name() -> String {
    format!("t-{:016x}", rand::random::<u64>())
}

pub fn location(bucket: &str, prefix: &str) -> S3Location {
    S3Location {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint()),
        force_path_style: true,
        credentials: Some(("testing".into(), s3db_run::types::Secret::new("testing"))),
        requests: Default::default(),
    }
}

/// The connection string of a fresh bucket on the test server.
pub async fn connection_string() -> String {
    let bucket = bucket_name();
    let store = S3Store::connect(location(&bucket, "")).await;
    ensure_bucket(store.client(), &bucket)
        .await
        .expect("create bucket");
    format!(
        "s3://testing:testing@{bucket}/db?region=us-east-1&endpoint={}&forcePathStyle=true",
        endpoint()
    )
}

/// A second S3 server (always a moto_server of this test process), for copies to another
/// account or provider.
pub fn second_endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(start_moto).clone()
}

/// A fresh bucket on the second server, and its connection string with these credentials.
pub async fn second_connection_string(key: &str, secret: &str) -> (String, String) {
    let bucket = bucket_name();
    let mut location = location(&bucket, "");
    location.endpoint = Some(second_endpoint());
    location.credentials = Some((key.into(), s3db_run::types::Secret::new(secret)));
    let store = S3Store::connect(location).await;
    ensure_bucket(store.client(), &bucket)
        .await
        .expect("create bucket");
    let conn = format!(
        "s3://{key}:{secret}@{bucket}/db?region=us-east-1&endpoint={}&forcePathStyle=true",
        second_endpoint()
    );
    (bucket, conn)
}

/// A store on a fresh bucket of the test server.
pub async fn store() -> DynStore {
    let bucket = bucket_name();
    let store = S3Store::connect(location(&bucket, "db")).await;
    ensure_bucket(store.client(), &bucket)
        .await
        .expect("create bucket");
    std::sync::Arc::new(store)
}
