//! The cache plugin per driver (memory, filesystem, s3): hits read nothing from the store,
//! entries expire and are evicted, every kind of write invalidates, compressed entries round
//! trip, and a corrupt entry is a miss that is removed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::{Database, ListOptions};
use s3db_run::manifest::model::CacheConfig;
use s3db_run::manifest::Format;
use s3db_run::plugins::cache::Cache;
use s3db_run::plugins::Component;
use s3db_run::store::counting::{CountingStore, RequestCounts};
use s3db_run::store::DynStore;
use s3db_run::types::ManualClock;
use serde_json::{json, Map, Value};

use crate::support::{context, load_text, walk, Backend};

#[derive(Clone, Copy, Debug)]
enum Driver {
    Memory,
    Filesystem,
    S3,
}

struct Setup {
    /// What entries expire by: moved by the tests, never waited for.
    clock: Arc<ManualClock>,
    db: Database,
    cache: Arc<Cache>,
    counts: Arc<RequestCounts>,
    dir: tempfile::TempDir,
    store: DynStore,
    _backend: Backend,
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn setup(driver: Driver, ttl: &str, max_size: u64) -> Setup {
    let backend = match driver {
        Driver::S3 => Backend::s3().await,
        _ => Backend::memory().await,
    };
    let counting = Arc::new(CountingStore::new(backend.store.clone()));
    let counts = counting.counts.clone();
    let store: DynStore = counting;
    let dir = tempfile::tempdir().unwrap();
    let (name, extra) = match driver {
        Driver::Memory => (
            "memory",
            "enableCompression: true, compressionThreshold: 256, enableStats: true",
        ),
        Driver::Filesystem => (
            "filesystem",
            "directory: ./cache, compressionThreshold: 256",
        ),
        Driver::S3 => ("s3", "keyPrefix: cache/"),
    };
    let yaml = format!("version: 1\ndatabase: {{ connection: \"memory://x/y\" }}\ncache: {{ driver: {name}, ttl: {ttl}, maxSize: {max_size}, config: {{ {extra} }} }}\n");
    let config: CacheConfig = load_text(&yaml, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest
        .cache
        .expect("cache");
    let clock = ManualClock::new(chrono::Utc::now());
    let ctx = context(&store, dir.path()).await.with_clock(clock.clone());
    let cache = Arc::new(Cache::build(&config, &ctx).await.expect("cache"));
    let mut declared = IndexMap::new();
    declared.insert(
        "items".to_string(),
        StoredResource {
            attributes: [("n".to_string(), "number".to_string())]
                .into_iter()
                .collect(),
            partitions: [(
                "byTag".to_string(),
                [("tag".to_string(), "string".to_string())]
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
            timestamps: false,
        },
    );
    let db = Database::connect(store.clone(), &declared)
        .await
        .unwrap()
        .with_cache(cache.clone());
    Setup {
        clock,
        db,
        cache,
        counts,
        dir,
        store,
        _backend: backend,
    }
}

fn reads(s: &Setup) -> u64 {
    s.counts.snapshot().0 + s.counts.snapshot().2
}

async fn hits_read_nothing_from_the_store(driver: Driver) {
    let s = setup(driver, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    items
        .insert(obj(json!({ "n": 1 })), Some("a"))
        .await
        .unwrap();
    let first = items.get_cached("a").await.unwrap().unwrap();
    let before = s.counts.gets.load(Ordering::Relaxed);
    let before_all = reads(&s);
    let again = items.get_cached("a").await.unwrap().unwrap();
    assert_eq!(first, again);
    let cache_reads = if matches!(driver, Driver::S3) { 1 } else { 0 };
    assert_eq!(
        s.counts.gets.load(Ordering::Relaxed) - before,
        cache_reads,
        "a hit reads only the cache entry"
    );
    assert_eq!(reads(&s) - before_all, cache_reads);
    assert_eq!(s.cache.snapshot().hits, 1);
    let list = items.list_cached(ListOptions::default()).await.unwrap();
    let before = reads(&s);
    assert_eq!(
        items.list_cached(ListOptions::default()).await.unwrap(),
        list
    );
    assert_eq!(items.count_cached(None).await.unwrap(), 1);
    assert_eq!(items.count_cached(None).await.unwrap(), 1);
    assert!(
        reads(&s) - before <= 3 * cache_reads + 1,
        "list and count hits skip the database"
    );
}

async fn entries_expire_after_the_ttl(driver: Driver) {
    let s = setup(driver, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    items
        .insert(obj(json!({ "n": 1 })), Some("a"))
        .await
        .unwrap();
    items.get_cached("a").await.unwrap();
    s.clock.advance(chrono::Duration::minutes(4));
    let hits = s.cache.snapshot().hits;
    items.get_cached("a").await.unwrap();
    assert_eq!(s.cache.snapshot().hits, hits + 1, "within the TTL: a hit");
    s.clock.advance(chrono::Duration::minutes(2));
    let misses = s.cache.snapshot().misses;
    items.get_cached("a").await.unwrap();
    assert_eq!(
        s.cache.snapshot().misses,
        misses + 1,
        "an expired entry is a miss"
    );
}

async fn the_oldest_entries_are_evicted_beyond_max_size(driver: Driver) {
    let s = setup(driver, "5m", 3).await;
    let items = s.db.resource("items").unwrap();
    for i in 0..6 {
        let id = format!("i{i}");
        items
            .insert(obj(json!({ "n": i })), Some(&id))
            .await
            .unwrap();
        items.get_cached(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let (entries, _) = s.cache.usage().await;
    assert!(entries <= 3, "{entries} entries");
    assert!(
        s.cache.snapshot().evictions >= 3,
        "{:?}",
        s.cache.snapshot()
    );
    let hits = s.cache.snapshot().hits;
    items.get_cached("i5").await.unwrap();
    assert_eq!(s.cache.snapshot().hits, hits + 1, "the newest entry stayed");
}

async fn every_kind_of_write_invalidates(driver: Driver) {
    let s = setup(driver, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    let ids = |rs: Vec<s3db_run::db::Record>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let list = || items.list_cached(ListOptions::default());
    items
        .insert(obj(json!({ "n": 1, "tag": "x" })), Some("a"))
        .await
        .unwrap();
    assert_eq!(ids(list().await.unwrap()), ["a"]);
    assert_eq!(items.count_cached(None).await.unwrap(), 1);
    let tagged = ListOptions {
        partition: Some(("byTag".into(), vec![("tag".into(), "x".into())])),
        ..Default::default()
    };
    assert_eq!(ids(items.list_cached(tagged.clone()).await.unwrap()), ["a"]);
    // insert
    items
        .insert(obj(json!({ "n": 2, "tag": "x" })), Some("b"))
        .await
        .unwrap();
    assert_eq!(ids(list().await.unwrap()), ["a", "b"]);
    assert_eq!(items.count_cached(None).await.unwrap(), 2);
    assert_eq!(
        ids(items.list_cached(tagged.clone()).await.unwrap()),
        ["a", "b"]
    );
    // update
    assert_eq!(items.get_cached("a").await.unwrap().unwrap().data["n"], 1);
    items
        .update(
            "a",
            &obj(json!({ "n": { "$increment": 10 }, "tag": "y" })),
            None,
        )
        .await
        .unwrap();
    assert_eq!(items.get_cached("a").await.unwrap().unwrap().data["n"], 11);
    assert_eq!(ids(items.list_cached(tagged.clone()).await.unwrap()), ["b"]);
    // upsert
    items.upsert("a", obj(json!({ "n": 20 }))).await.unwrap();
    assert_eq!(items.get_cached("a").await.unwrap().unwrap().data["n"], 20);
    // replace (compare-and-swap write)
    let current = items.get("a").await.unwrap().unwrap();
    items
        .replace(&current, obj(json!({ "n": 30 })))
        .await
        .unwrap();
    assert_eq!(items.get_cached("a").await.unwrap().unwrap().data["n"], 30);
    // delete
    items.delete("b", None).await.unwrap();
    assert!(items.get_cached("b").await.unwrap().is_none());
    assert_eq!(ids(list().await.unwrap()), ["a"]);
    assert_eq!(items.count_cached(None).await.unwrap(), 1);
    // restore (a write around the resource API) invalidates the whole resource
    items.get_cached("a").await.unwrap();
    let key = s3db_run::db::codec::record_key("items", "a");
    s.store
        .put(
            &key,
            bytes::Bytes::from_static(br#"{"id":"a","n":99}"#),
            s3db_run::store::PutMode::Overwrite,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        items.get_cached("a").await.unwrap().unwrap().data["n"],
        30,
        "still cached: the store was written behind the database's back"
    );
    items.invalidate_all().await;
    assert_eq!(items.get_cached("a").await.unwrap().unwrap().data["n"], 99);
}

async fn compressed_entries_round_trip(driver: Driver) {
    let s = setup(driver, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    let text = "lorem ipsum dolor sit amet ".repeat(200);
    items
        .insert(obj(json!({ "n": 1, "text": text })), Some("big"))
        .await
        .unwrap();
    let first = items.get_cached("big").await.unwrap().unwrap();
    let cached = items.get_cached("big").await.unwrap().unwrap();
    assert_eq!(first, cached);
    assert_eq!(cached.data["text"], text);
    assert!(
        s.cache.snapshot().compression_saved_bytes > 4000,
        "{:?}",
        s.cache.snapshot()
    );
}

async fn a_corrupt_entry_is_a_miss_and_is_removed(driver: Driver) {
    let s = setup(driver, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    items
        .insert(obj(json!({ "n": 7 })), Some("a"))
        .await
        .unwrap();
    items.get_cached("a").await.unwrap();
    let garbage = b"\x00\x01 not an entry";
    let corrupted = match driver {
        Driver::Filesystem => {
            let mut files = Vec::new();
            for entry in walk(&s.dir.path().join("cache")) {
                std::fs::write(&entry, garbage).unwrap();
                files.push(entry);
            }
            files.len()
        }
        Driver::S3 => {
            let objects = s3db_run::store::list_all(s.store.as_ref(), "cache/")
                .await
                .unwrap();
            for o in &objects {
                s.store
                    .put(
                        &o.key,
                        bytes::Bytes::from_static(garbage),
                        s3db_run::store::PutMode::Overwrite,
                        &Default::default(),
                    )
                    .await
                    .unwrap();
            }
            objects.len()
        }
        Driver::Memory => unreachable!("memory entries cannot be corrupted from outside"),
    };
    assert_eq!(corrupted, 1);
    let misses = s.cache.snapshot().misses;
    assert_eq!(
        items.get_cached("a").await.unwrap().unwrap().data["n"],
        7,
        "the record comes from the store"
    );
    assert_eq!(s.cache.snapshot().misses, misses + 1);
    // The corrupt entry was removed and a good one written in its place.
    let hits = s.cache.snapshot().hits;
    items.get_cached("a").await.unwrap();
    assert_eq!(s.cache.snapshot().hits, hits + 1);
}

macro_rules! per_driver {
    ($($name:ident),* $(,)?) => {
        mod memory { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Driver::Memory).await })* }
        mod filesystem { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Driver::Filesystem).await })* }
        mod s3 { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Driver::S3).await })* }
    };
}

per_driver!(
    hits_read_nothing_from_the_store,
    entries_expire_after_the_ttl,
    the_oldest_entries_are_evicted_beyond_max_size,
    every_kind_of_write_invalidates,
    compressed_entries_round_trip,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_filesystem_entry_is_a_miss_and_is_removed() {
    a_corrupt_entry_is_a_miss_and_is_removed(Driver::Filesystem).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_s3_entry_is_a_miss_and_is_removed() {
    a_corrupt_entry_is_a_miss_and_is_removed(Driver::S3).await
}

/// The filesystem cache is shared between runs of the command line; `--no-cache` reads around it.
#[test]
fn command_line_reads_share_the_filesystem_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        "version: 1\ndatabase:\n  connection: file://./data\n  resources:\n    things: {}\ncache: { driver: filesystem, config: { directory: ./cache } }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["db", "put", "things", r#"{"id":"a","n":1}"#]);
    run(&["db", "get", "--no-cache", "things", "a"]);
    let stats: Value = serde_json::from_str(&run(&["cache", "stats", "--format", "json"])).unwrap();
    assert_eq!(stats["entries"], 0, "--no-cache stores nothing");
    run(&["db", "get", "things", "a"]);
    run(&["db", "count", "things"]);
    let stats: Value = serde_json::from_str(&run(&["cache", "stats", "--format", "json"])).unwrap();
    assert_eq!(
        (stats["driver"].as_str(), stats["entries"].as_u64()),
        (Some("filesystem"), Some(2)),
        "{stats}"
    );
    // A write from another run invalidates the shared entries.
    run(&["db", "put", "--upsert", "things", r#"{"id":"a","n":2}"#]);
    assert!(run(&["db", "get", "things", "a"]).contains("\"n\":2"));
    assert_eq!(run(&["db", "count", "things"]).trim(), "1");
    run(&["cache", "clear"]);
    let stats: Value = serde_json::from_str(&run(&["cache", "stats", "--format", "json"])).unwrap();
    assert_eq!(stats["entries"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_driver_can_keep_entries_in_another_bucket() {
    let store = crate::support::s3::store().await;
    let other = crate::support::s3::bucket_name();
    let probe =
        s3db_run::store::s3::S3Store::connect(crate::support::s3::location(&other, "")).await;
    s3db_run::store::s3::ensure_bucket(probe.client(), &other)
        .await
        .unwrap();
    let yaml = format!("version: 1\ndatabase: {{ connection: \"memory://x/y\" }}\ncache: {{ driver: s3, config: {{ bucket: {other}, keyPrefix: c, storageClass: STANDARD_IA }} }}\n");
    let config: CacheConfig = load_text(&yaml, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest
        .cache
        .expect("cache");
    let cache = Arc::new(
        Cache::build(&config, &context(&store, std::path::Path::new(".")).await)
            .await
            .expect("cache"),
    );
    let mut declared = IndexMap::new();
    declared.insert("items".to_string(), StoredResource::default());
    let db = Database::connect(store.clone(), &declared)
        .await
        .unwrap()
        .with_cache(cache);
    let items = db.resource("items").unwrap();
    items
        .insert(obj(json!({ "n": 1 })), Some("a"))
        .await
        .unwrap();
    items.get_cached("a").await.unwrap();
    let listed = probe
        .client()
        .list_objects_v2()
        .bucket(&other)
        .prefix("c/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let head = probe
        .client()
        .head_object()
        .bucket(&other)
        .key(keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.storage_class().map(|c| c.as_str()),
        Some("STANDARD_IA")
    );
    let memory = Arc::new(s3db_run::store::memory::MemoryStore::isolated()) as DynStore;
    let err = Cache::build(&config, &context(&memory, std::path::Path::new(".")).await)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs an s3:// database"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconfigured_cache_takes_its_new_settings_and_starts_empty() {
    let s = setup(Driver::Memory, "5m", 100).await;
    let items = s.db.resource("items").unwrap();
    items
        .insert(obj(json!({ "n": 1 })), Some("a"))
        .await
        .unwrap();
    items.get_cached("a").await.unwrap();
    items.get_cached("a").await.unwrap();
    assert_eq!(s.cache.snapshot().hits, 1);
    let yaml = "version: 1\ndatabase: { connection: \"memory://x/y\" }\ncache: { driver: filesystem, ttl: 1m, maxSize: 10, config: { directory: ./other } }\n";
    let config: CacheConfig = load_text(yaml, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest
        .cache
        .expect("cache");
    let prepared = s
        .cache
        .prepare(&config, &s.store, s.dir.path())
        .await
        .unwrap();
    // Preparing changes nothing yet.
    assert_eq!(s.cache.driver_name(), "memory");
    s.cache.swap(prepared);
    assert_eq!(s.cache.driver_name(), "filesystem");
    assert_eq!(s.cache.settings().ttl, Duration::from_secs(60));
    let before = reads(&s);
    items.get_cached("a").await.unwrap();
    assert_eq!(
        reads(&s),
        before + 1,
        "the new driver starts empty: a miss reads the store"
    );
    items.get_cached("a").await.unwrap();
    assert_eq!(reads(&s), before + 1, "then it serves hits");
    assert!(s.dir.path().join("other").exists());
}
