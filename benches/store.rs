//! Benchmark: insert, get, and list-then-get of N records of 1 KiB on each backend, at a given
//! concurrency. On S3 (moto_server on loopback), list-then-get is compared in the same run with a
//! plain aws-sdk-s3 loop that lists the same keys and GETs them at the same concurrency.
//!
//!   cargo bench --bench store -- [--records 10000] [--concurrency 32] [--backends fs,memory,s3]
//!
//! S3 uses `S3DB_TEST_S3_ENDPOINT` when set, else starts `.venv/bin/moto_server` (installed by
//! scripts/test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::{Database, ListOptions};
use s3db_run::store::connection::S3Location;
use s3db_run::store::s3::{ensure_bucket, S3Store};
use s3db_run::store::DynStore;
use s3db_run::types::Secret;
use serde_json::{json, Map, Value};

mod common;
use common::{moto, raw_list_then_get};

struct Args {
    records: usize,
    concurrency: usize,
    backends: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        records: 10_000,
        concurrency: 32,
        backends: vec!["memory".into(), "fs".into(), "s3".into()],
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--records" => a.records = value.parse().expect("--records N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--backends" => a.backends = value.split(',').map(str::to_string).collect(),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn record(i: usize) -> Map<String, Value> {
    let pad = "x".repeat(1024 - 60);
    json!({ "id": format!("r{i:06}"), "n": i, "pad": pad })
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{:>8.1} ms ({:>8.0} records/s)",
        d.as_secs_f64() * 1e3,
        n as f64 / d.as_secs_f64()
    )
}

async fn run_db(name: &str, store: DynStore, a: &Args) -> Duration {
    let mut declared = IndexMap::new();
    declared.insert("bench".to_string(), StoredResource::default());
    let db = Database::connect(store, &declared)
        .await
        .expect("connect")
        .with_concurrency(a.concurrency);
    let res = db.resource("bench").expect("resource");
    let t = Instant::now();
    futures::stream::iter((0..a.records).map(|i| {
        let res = res.clone();
        async move { res.insert(record(i), None).await.map(|_| ()) }
    }))
    .buffer_unordered(a.concurrency)
    .try_collect::<Vec<()>>()
    .await
    .expect("insert");
    let insert = t.elapsed();
    // Key listings: the first after the writes, then again (what a store can remember).
    let mut ids = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        assert_eq!(res.ids().await.expect("ids").len(), a.records);
        ids.push(t.elapsed());
    }
    let t = Instant::now();
    futures::stream::iter((0..a.records).map(|i| {
        let res = res.clone();
        async move { res.get(&format!("r{i:06}")).await.map(|r| r.is_some()) }
    }))
    .buffer_unordered(a.concurrency)
    .try_collect::<Vec<bool>>()
    .await
    .expect("get");
    let get = t.elapsed();
    let t = Instant::now();
    let all = res.list(ListOptions::default()).await.expect("list");
    let list = t.elapsed();
    assert_eq!(all.len(), a.records);
    println!("{name:<7} insert {}", rate(a.records, insert));
    println!("{name:<7} ids    {}", rate(a.records, ids[0]));
    println!("{name:<7} ids 2nd {}", rate(a.records, ids[1]));
    println!("{name:<7} get    {}", rate(a.records, get));
    println!("{name:<7} list+get {}", rate(a.records, list));
    list
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    println!(
        "{} records of 1 KiB, concurrency {}",
        a.records, a.concurrency
    );
    for backend in &a.backends {
        match backend.as_str() {
            "memory" => {
                let store: DynStore = Arc::new(s3db_run::store::memory::MemoryStore::isolated());
                run_db("memory", store, &a).await;
            }
            "fs" => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store: DynStore =
                    Arc::new(s3db_run::store::fs::FsStore::open(dir.path()).expect("fs"));
                run_db("fs", store, &a).await;
            }
            "s3" => {
                let (endpoint, mut child) = moto();
                let bucket = format!("bench-{:08x}", rand::random::<u32>());
                let location = S3Location {
                    bucket: bucket.clone(),
                    prefix: "db".into(),
                    region: Some("us-east-1".into()),
                    endpoint: Some(endpoint),
                    force_path_style: true,
                    credentials: Some(("testing".into(), Secret::new("testing"))),
                    requests: Default::default(),
                };
                let store = Arc::new(S3Store::connect(location).await);
                ensure_bucket(store.client(), &bucket)
                    .await
                    .expect("bucket");
                let ours = run_db("s3", store.clone(), &a).await;
                let prefix = s3db_run::db::codec::data_prefix("bench");
                let (raw, n) = raw_list_then_get(&store, &prefix, a.concurrency).await;
                assert_eq!(n, a.records);
                // Once more each, in the other order, so warm-up does not favour either side.
                let (raw2, _) = raw_list_then_get(&store, &prefix, a.concurrency).await;
                let t = Instant::now();
                let db = Database::connect(store.clone() as DynStore, &IndexMap::new())
                    .await
                    .expect("connect")
                    .with_concurrency(a.concurrency);
                db.resource("bench")
                    .expect("bench")
                    .list(ListOptions::default())
                    .await
                    .expect("list");
                let ours2 = t.elapsed();
                let (ours_best, raw_best) = (ours.min(ours2), raw.min(raw2));
                println!("s3      raw sdk list+get {}", rate(a.records, raw_best));
                println!(
                    "s3      list+get ratio ours/raw = {:.2} (best of 2 each: {:.0} ms / {:.0} ms; target <= 1.3)",
                    ours_best.as_secs_f64() / raw_best.as_secs_f64(),
                    ours_best.as_secs_f64() * 1e3,
                    raw_best.as_secs_f64() * 1e3
                );
                if let Some(c) = child.as_mut() {
                    let _ = c.kill();
                }
            }
            other => eprintln!("unknown backend {other}"),
        }
    }
}
