//! Benchmark: 10,000 reads over 1,000 hot records, with and without the memory cache: store
//! requests in each case (target: none on hits), and get latency p50/p99.
//! Run with `cargo bench --bench cache`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::Database;
use s3db_run::manifest::model::EvictionPolicy;
use s3db_run::plugins::cache::{Cache, Settings};
use s3db_run::store::counting::CountingStore;
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for cached in [false, true] {
        let counting = Arc::new(CountingStore::new(Arc::new(
            s3db_run::store::memory::MemoryStore::isolated(),
        )));
        let counts = counting.counts.clone();
        let mut declared = IndexMap::new();
        declared.insert("hot".to_string(), StoredResource::default());
        let mut db = Database::connect(counting, &declared).await.expect("db");
        if cached {
            db = db.with_cache(Arc::new(Cache::memory(Settings {
                eviction: EvictionPolicy::Lru,
                ..Settings::new(Duration::from_secs(300), 2000)
            })));
        }
        let hot = db.resource("hot").expect("resource");
        let pad = "x".repeat(900);
        for i in 0..1000 {
            hot.insert(
                json!({ "n": i, "pad": pad }).as_object().cloned().unwrap(),
                Some(&format!("r{i:04}")),
            )
            .await
            .expect("insert");
        }
        // Warm: one read of each record fills the cache.
        for i in 0..1000 {
            hot.get_cached(&format!("r{i:04}")).await.expect("get");
        }
        let before = counts.snapshot();
        let mut samples = Vec::with_capacity(10_000);
        for k in 0..10_000u64 {
            let id = format!("r{:04}", (k * 7919) % 1000);
            let t = Instant::now();
            let r = hot.get_cached(&id).await.expect("get");
            samples.push(t.elapsed());
            assert!(r.is_some());
        }
        let after = counts.snapshot();
        samples.sort();
        println!(
            "{:<14} 10000 reads over 1000 hot records: store reads {:>5}, p50 {:>6.1} µs, p99 {:>6.1} µs",
            if cached { "memory cache" } else { "no cache" },
            after.0 - before.0,
            pct(&samples, 0.5),
            pct(&samples, 0.99)
        );
    }
}
