//! Benchmark: list + get of N records in s3db.js's format (values in the objects' metadata)
//! against the same records in the native format, and against the floor for metadata records: a
//! plain aws-sdk-s3 loop that lists the keys and HEADs each (HEAD returns the metadata), all at
//! the same concurrency, interleaved in one run on one moto_server.
//!
//!   cargo bench --bench s3dbjs -- [--records 10000] [--concurrency 32] [--rounds 3]
//!
//! S3 uses `S3DB_TEST_S3_ENDPOINT` when set, else starts `.venv/bin/moto_server` (installed by
//! scripts/test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::{ConnectOptions, Database};
use s3db_run::store::s3::{ensure_bucket, S3Store};
use serde_json::{json, Map, Value};

mod common;
use common::{list_keys, location, moto};

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn record(i: usize) -> Map<String, Value> {
    json!({
        "name": format!("item {i} — ünïcode"),
        "n": i,
        "price": i as f64 / 7.0,
        "ok": i.is_multiple_of(2),
        "tags": ["a|b", format!("t{}", i % 10)],
        "at": "2024-01-02T03:04:05.000Z",
        "note": "x".repeat(400),
    })
    .as_object()
    .cloned()
    .expect("object")
}

/// The same resource in each format's shorthand (the native one has no `items:` or `datetime`).
fn declared(s3dbjs: bool) -> IndexMap<String, StoredResource> {
    let attributes = [
        ("name", "string"),
        (
            "n",
            if s3dbjs {
                "number|integer:true"
            } else {
                "number|integer"
            },
        ),
        ("price", "number"),
        ("ok", "boolean"),
        (
            "tags",
            if s3dbjs {
                "array|items:string"
            } else {
                "array"
            },
        ),
        ("at", if s3dbjs { "datetime" } else { "string" }),
        ("note", "string"),
    ];
    let mut d = IndexMap::new();
    d.insert(
        "items".to_string(),
        StoredResource {
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            partitions: Default::default(),
            timestamps: false,
        },
    );
    d
}

async fn floor_list_head(store: &S3Store, prefix: &str, concurrency: usize) -> (Duration, usize) {
    let client = store.client().clone();
    let bucket = store.bucket().to_string();
    let t = Instant::now();
    let keys = list_keys(store, prefix).await;
    let heads: Vec<usize> = futures::stream::iter(keys.into_iter().map(|k| {
        let client = client.clone();
        let bucket = bucket.clone();
        async move {
            let out = client
                .head_object()
                .bucket(bucket)
                .key(k)
                .send()
                .await
                .expect("head");
            out.metadata().map_or(0, |m| m.len())
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    (t.elapsed(), heads.len())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let records = arg("--records", 10_000);
    let concurrency = arg("--concurrency", 32);
    let rounds = arg("--rounds", 3);
    let (endpoint, child) = moto();
    let bucket = format!("bench-{:x}", rand::random::<u32>());
    let js_store = Arc::new(S3Store::connect(location(&endpoint, &bucket, "js")).await);
    ensure_bucket(js_store.client(), &bucket)
        .await
        .expect("bucket");
    let native_store = Arc::new(S3Store::connect(location(&endpoint, &bucket, "native")).await);
    let js = Database::connect_with(
        js_store.clone(),
        &declared(true),
        &ConnectOptions {
            passphrase: None,
            create_s3dbjs: true,
        },
    )
    .await
    .expect("s3db.js database")
    .with_concurrency(concurrency);
    let native = Database::connect(native_store, &declared(false))
        .await
        .expect("native database")
        .with_concurrency(concurrency);
    for db in [&js, &native] {
        let res = db.resource("items").expect("items");
        futures::stream::iter((0..records).map(|i| {
            let res = res.clone();
            async move {
                res.insert(record(i), Some(&format!("r{i:06}")))
                    .await
                    .expect("insert")
            }
        }))
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    }
    let (mut t_js, mut t_native, mut t_floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (d, n) = floor_list_head(&js_store, "resource=items/data/", concurrency).await;
        assert_eq!(n, records);
        t_floor.push(d);
        for (db, times) in [(&js, &mut t_js), (&native, &mut t_native)] {
            let t = Instant::now();
            let got = db
                .resource("items")
                .expect("items")
                .list(Default::default())
                .await
                .expect("list");
            assert_eq!(got.len(), records);
            times.push(t.elapsed());
        }
    }
    let (js, native, floor) = (median(t_js), median(t_native), median(t_floor));
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!("{records} records, concurrency {concurrency}, median of {rounds} rounds");
    println!(
        "  list + HEAD (SDK floor)   {:>8.0} ms  {:>7.0} records/s",
        floor.as_secs_f64() * 1e3,
        rate(floor)
    );
    println!(
        "  list + get, s3db.js       {:>8.0} ms  {:>7.0} records/s  {:.2}x the floor",
        js.as_secs_f64() * 1e3,
        rate(js),
        js.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  list + get, native        {:>8.0} ms  {:>7.0} records/s  {:.2}x the floor",
        native.as_secs_f64() * 1e3,
        rate(native),
        native.as_secs_f64() / floor.as_secs_f64()
    );
    if let Some(mut c) = child {
        let _ = c.kill();
    }
}
