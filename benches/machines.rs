//! Benchmark (S3 on loopback): sequential transitions per second for one entity, total
//! transitions per second for 100 entities at concurrency 16, and S3 requests per transition
//! (target: at most 1 read and 2 writes). Run with `cargo bench --bench machines`.
//! S3 uses `S3DB_TEST_S3_ENDPOINT` when set, else starts `.venv/bin/moto_server`.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use s3db_run::db::Database;
use s3db_run::manifest::{load_str, Format};
use s3db_run::plugins::state_machine::StateMachines;
use s3db_run::plugins::{BuildContext, Component};
use s3db_run::store::connection::S3Location;
use s3db_run::store::counting::CountingStore;
use s3db_run::store::s3::{ensure_bucket, S3Store};
use s3db_run::types::Secret;
use serde_json::Value;

mod common;
use common::moto;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (endpoint, mut child) = moto();
    let bucket = format!("bench-sm-{:08x}", rand::random::<u32>());
    let location = S3Location {
        bucket: bucket.clone(),
        prefix: "db".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint),
        force_path_style: true,
        credentials: Some(("testing".into(), Secret::new("testing"))),
        requests: Default::default(),
    };
    let s3 = S3Store::connect(location).await;
    ensure_bucket(s3.client(), &bucket).await.expect("bucket");
    let counting = Arc::new(CountingStore::new(Arc::new(s3)));
    let counts = counting.counts.clone();
    let text = "version: 1\ndatabase: { connection: \"memory://x/y\" }\nmachines:\n  toggle:\n    initialState: off\n    states:\n      off: { on: { TOGGLE: on } }\n      on: { on: { TOGGLE: off } }\n";
    let no_env = |_: &str| None;
    let manifest = load_str(
        "b.yaml",
        text.into(),
        Format::Yaml,
        std::path::Path::new("."),
        &no_env,
    )
    .manifest
    .expect("valid")
    .manifest;
    let db = Database::connect(counting.clone(), &Default::default())
        .await
        .expect("db");
    let ctx = BuildContext::for_manifest(&manifest, db.clone(), ".");
    let sm = StateMachines::build((&manifest.machines, &manifest.state_machine), &ctx)
        .await
        .expect("plugin");

    sm.initialize("toggle", "one", Value::Null)
        .await
        .expect("init");
    let n = 300;
    let before = counts.snapshot();
    let t = Instant::now();
    for _ in 0..n {
        sm.send("toggle", "one", "TOGGLE", Value::Null, None)
            .await
            .expect("send");
    }
    let elapsed = t.elapsed();
    let after = counts.snapshot();
    println!(
        "sequential, one entity: {n} transitions in {:.0} ms = {:.0} transitions/s",
        elapsed.as_secs_f64() * 1e3,
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  S3 requests per transition: {:.2} reads, {:.2} writes, {:.2} lists (target <= 1 read, 2 writes)",
        (after.0 - before.0) as f64 / n as f64,
        (after.1 - before.1) as f64 / n as f64,
        (after.2 - before.2) as f64 / n as f64
    );

    for i in 0..100 {
        sm.initialize("toggle", &format!("e{i}"), Value::Null)
            .await
            .expect("init");
    }
    let per_entity = 10;
    let before = counts.snapshot();
    let t = Instant::now();
    let results: Vec<_> = futures::stream::iter((0..100 * per_entity).map(|k| {
        let sm = sm.clone();
        async move {
            sm.send(
                "toggle",
                &format!("e{}", k % 100),
                "TOGGLE",
                Value::Null,
                None,
            )
            .await
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    let elapsed = t.elapsed();
    let after = counts.snapshot();
    let total = results.len();
    assert!(results.iter().all(Result::is_ok));
    println!(
        "100 entities, concurrency 16: {total} transitions in {:.0} ms = {:.0} transitions/s",
        elapsed.as_secs_f64() * 1e3,
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  S3 requests per transition: {:.2} reads, {:.2} writes (conflict retries included)",
        (after.0 - before.0) as f64 / total as f64,
        (after.1 - before.1) as f64 / total as f64
    );
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
    }
}
