//! Benchmark: a full backup and a restore of N records of 1 KiB on S3 (moto_server on loopback),
//! gzip + AES-256-GCM, each compared in the same run with the raw floor: a plain aws-sdk-s3
//! list + parallel GET of the same objects (backup) and a parallel PUT of as many objects
//! (restore), at the same concurrency. Also: peak RSS of each phase, and the record-body GETs of
//! an incremental with no changes (must be 0).
//!
//!   cargo bench --bench backup -- [--records 100000] [--concurrency 32]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::Database;
use s3db_run::plugins::backup::{Backup, RestoreOptions};
use s3db_run::plugins::{BuildContext, Component};
use s3db_run::store::counting::CountingStore;
use s3db_run::store::s3::{ensure_bucket, S3Store};
use s3db_run::store::DynStore;
use serde_json::json;

mod common;
use common::{location, moto, raw_list_then_get};

// The allocator of the s3db-run binary, so memory figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the peak-RSS mark, so each phase reports its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn declared() -> IndexMap<String, StoredResource> {
    let mut m = IndexMap::new();
    m.insert(
        "bench".to_string(),
        StoredResource {
            attributes: [("payload".to_string(), "string".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    );
    m
}

async fn raw_put_all(store: &S3Store, n: usize, body: &[u8], concurrency: usize) -> Duration {
    let client = store.client().clone();
    let bucket = store.bucket().to_string();
    let body = bytes::Bytes::copy_from_slice(body);
    let t = Instant::now();
    futures::stream::iter((0..n).map(|i| {
        let (client, bucket, body) = (client.clone(), bucket.clone(), body.clone());
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(format!("raw/{i:08}"))
                .if_none_match("*")
                .body(body.into())
                .send()
                .await
                .expect("put");
        }
    }))
    .buffer_unordered(concurrency)
    .count()
    .await;
    t.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (records, concurrency) = (arg("--records", 100_000), arg("--concurrency", 32));
    println!("{records} records of 1 KiB on S3 (moto), concurrency {concurrency}");
    let (endpoint, mut child) = moto();
    let bucket = format!("bench-{:08x}", rand::random::<u32>());
    let s3 = Arc::new(S3Store::connect(location(&endpoint, &bucket, "db")).await);
    ensure_bucket(s3.client(), &bucket).await.expect("bucket");
    let counting = Arc::new(CountingStore::new(s3.clone() as DynStore));
    let counts = counting.counts.clone();
    let db = Database::connect(counting as DynStore, &declared())
        .await
        .expect("connect")
        .with_concurrency(concurrency);
    let payload = "x".repeat(1000);
    let res = db.resource("bench").expect("resource");
    let t = Instant::now();
    futures::stream::iter((0..records).map(|i| {
        let (res, payload) = (res.clone(), payload.clone());
        async move {
            res.insert(
                json!({ "payload": payload })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                Some(&format!("r{i:08}")),
            )
            .await
            .expect("insert");
        }
    }))
    .buffer_unordered(concurrency)
    .count()
    .await;
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().expect("tempdir");
    let text = "version: 1\ndatabase: { connection: \"file://./x\" }\nbackup:\n  driver: s3\n  config: { path: \"backups/{date}/\" }\n  compression: gzip\n  encryption: { algorithm: AES-256-GCM, key: \"bench passphrase\" }\n";
    let loaded = s3db_run::manifest::load_str(
        "bench.yaml",
        text.into(),
        s3db_run::manifest::Format::Yaml,
        dir.path(),
        &|_: &str| None,
    );
    let manifest = loaded.manifest.expect("manifest").manifest;
    let config = manifest.backup.as_ref().expect("backup");
    let backup = Backup::build(
        config,
        &BuildContext::for_manifest(&manifest, db.clone(), dir.path()),
    )
    .await
    .expect("plugin");

    reset_peak();
    let base_backup = rss_mib();
    let t = Instant::now();
    let info = backup.backup("full", None).await.expect("backup");
    let ours = t.elapsed();
    let rss_backup = peak_rss_mib();
    let (raw, n) = raw_list_then_get(&s3, "resource=bench/data/", concurrency).await;
    assert_eq!(n, records);
    println!(
        "full backup: {:.1} s, {:.0} records/s, archive {:.1} MiB, peak RSS {:.0} MiB ({:.0} MiB before it)",
        ours.as_secs_f64(),
        records as f64 / ours.as_secs_f64(),
        info.size as f64 / 1048576.0,
        rss_backup,
        base_backup
    );
    println!(
        "raw list + parallel GET: {:.1} s; ratio ours/raw = {:.2} (target <= 1.5)",
        raw.as_secs_f64(),
        ours.as_secs_f64() / raw.as_secs_f64()
    );

    let before = counts.gets.load(std::sync::atomic::Ordering::Relaxed);
    let inc = backup
        .backup("incremental", None)
        .await
        .expect("incremental");
    let gets = counts.gets.load(std::sync::atomic::Ordering::Relaxed) - before;
    println!(
        "incremental, nothing changed: {} records, {gets} GETs in all (s3db.json and lock only; 0 record bodies)",
        inc.records.values().sum::<u64>()
    );

    // Restore into an empty database beside it (same bucket, another prefix).
    let target = Arc::new(S3Store::connect(location(&endpoint, &bucket, "restored")).await);
    let db2 = Database::connect(target as DynStore, &IndexMap::new())
        .await
        .expect("connect")
        .with_concurrency(concurrency);
    let restorer = Backup::build(
        config,
        &BuildContext::for_manifest(&manifest, db2.clone(), dir.path()),
    )
    .await
    .expect("plugin");
    reset_peak();
    let base_restore = rss_mib();
    let t = Instant::now();
    let stats = restorer
        .restore(&info.id, RestoreOptions::default())
        .await
        .expect("restore");
    let ours = t.elapsed();
    let rss_restore = peak_rss_mib();
    assert_eq!(stats.records as usize, records);
    let raw = raw_put_all(&s3, records, payload.as_bytes(), concurrency).await;
    println!(
        "restore: {:.1} s, {:.0} records/s, peak RSS {:.0} MiB ({:.0} MiB before it)",
        ours.as_secs_f64(),
        records as f64 / ours.as_secs_f64(),
        rss_restore,
        base_restore
    );
    println!(
        "raw parallel PUT: {:.1} s; ratio ours/raw = {:.2} (target <= 1.5)",
        raw.as_secs_f64(),
        ours.as_secs_f64() / raw.as_secs_f64()
    );
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
    }
}
