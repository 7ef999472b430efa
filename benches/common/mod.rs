//! What the benches share: an S3 server on loopback, the raw-SDK floor.

// Each bench is its own crate and uses a part of this module.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use s3db_run::store::connection::S3Location;
use s3db_run::store::s3::S3Store;
use s3db_run::types::Secret;

/// A prefix of a bucket on the bench's S3 server.
pub fn location(endpoint: &str, bucket: &str, prefix: &str) -> S3Location {
    S3Location {
        bucket: bucket.to_string(),
        prefix: prefix.into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        force_path_style: true,
        credentials: Some(("testing".into(), Secret::new("testing"))),
        requests: Default::default(),
    }
}

/// Every key under `prefix`, listed with the SDK directly.
pub async fn list_keys(store: &S3Store, prefix: &str) -> Vec<String> {
    let client = store.client();
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .list_objects_v2()
            .bucket(store.bucket())
            .prefix(store.full_key(prefix))
            .set_continuation_token(token)
            .send()
            .await
            .expect("list");
        keys.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return keys;
        }
    }
}

/// The S3 endpoint: `S3DB_TEST_S3_ENDPOINT` when set, else a `.venv/bin/moto_server` started
/// here (stop the returned child when done).
pub fn moto() -> (String, Option<Child>) {
    if let Ok(e) = std::env::var("S3DB_TEST_S3_ENDPOINT") {
        return (e, None);
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    // scripts/moto-atomic: moto_server with S3's atomic conditional writes.
    let child = Command::new(".venv/bin/python")
        .args([
            "scripts/moto-atomic",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start .venv/bin/moto_server (run scripts/test once to install it)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (format!("http://127.0.0.1:{port}"), Some(child))
}

/// The floor: list the same keys and GET them with the SDK directly, at the same concurrency.
pub async fn raw_list_then_get(
    store: &S3Store,
    prefix: &str,
    concurrency: usize,
) -> (Duration, usize) {
    let client = store.client().clone();
    let bucket = store.bucket().to_string();
    let t = Instant::now();
    let keys = list_keys(store, prefix).await;
    let bodies: Vec<usize> = futures::stream::iter(keys.into_iter().map(|k| {
        let client = client.clone();
        let bucket = bucket.clone();
        async move {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(k)
                .send()
                .await
                .expect("get");
            out.body.collect().await.expect("body").into_bytes().len()
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    (t.elapsed(), bodies.len())
}
