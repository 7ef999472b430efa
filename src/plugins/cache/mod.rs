//! The cache plugin: resource reads (get, list, count, partition listings) kept in a `memory`,
//! `filesystem` or `s3` driver. The database invalidates what each of its writes affects, so a
//! read after a write in the same process never sees stale data; between processes, staleness is
//! bounded by the TTL (a filesystem or S3 cache shared by several processes is also invalidated by
//! their writes, since they share the driver). Plugin internals that compare-and-swap (state
//! machines, scheduler claims) read around the cache.

pub mod filesystem;
pub mod memory;
pub mod s3;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{BuildContext, Component};
use crate::manifest::model::{CacheBackend, CacheConfig, EvictionPolicy, Manifest};
use crate::store::DynStore;
use crate::types::Clock;

/// Where entries are kept. Keys are `/`-separated paths; values are opaque bytes. A driver
/// treats an unreadable entry as absent and removes it.
#[async_trait]
pub trait CacheDriver: Send + Sync {
    fn name(&self) -> &'static str;
    async fn get(&self, key: &str) -> Option<Bytes>;
    async fn set(&self, key: &str, value: Bytes);
    async fn delete(&self, key: &str);
    /// Removes every entry whose key starts with `prefix`.
    async fn delete_prefix(&self, prefix: &str);
    async fn clear(&self);
    /// Entries and bytes held.
    async fn usage(&self) -> (u64, u64);
}

/// Why a cache driver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the cache folder {path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("`cache.config.bucket` needs an s3:// database (this one is {database}); leave it out to cache in the database's store")]
    BucketNeedsS3 { database: String },
    #[error("the cache section was not checked (its driver options are incomplete)")]
    Unchecked,
}

/// Counters of this process.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub sets: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
    /// Bytes saved by compression (uncompressed minus stored).
    pub compression_saved: AtomicU64,
}

/// What `cache stats` and `GET /api/v1/cache` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CacheReport {
    /// `memory`, `filesystem` or `s3`.
    pub driver: String,
    /// Entries and bytes the driver holds now (for s3, what its listing counts).
    pub entries: u64,
    pub bytes: u64,
    /// This process's counters since it started.
    pub process: StatsSnapshot,
}

/// What `cache clear` and `POST /api/v1/cache/clear` answer: what the cache held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cleared {
    pub cleared: bool,
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub driver: String,
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub evictions: u64,
    pub invalidations: u64,
    pub hit_rate: f64,
    pub compression_saved_bytes: u64,
}

/// The settings a driver runs with, after the driver's `config` overrode the plugin's.
#[derive(Clone)]
pub struct Settings {
    pub ttl: Duration,
    pub max_size: u64,
    pub compression: Option<usize>,
    pub eviction: EvictionPolicy,
    pub include_partitions: bool,
    /// What entries expire by.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("ttl", &self.ttl)
            .field("max_size", &self.max_size)
            .field("compression", &self.compression)
            .field("eviction", &self.eviction)
            .field("include_partitions", &self.include_partitions)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings on the system clock.
    pub fn new(ttl: Duration, max_size: u64) -> Self {
        Self {
            ttl,
            max_size,
            compression: None,
            eviction: EvictionPolicy::default(),
            include_partitions: true,
            clock: Arc::new(crate::types::SystemClock),
        }
    }

    /// Milliseconds since the Unix epoch, by this cache's clock.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    /// Wraps a payload in its envelope: expiry, and gzip when at least `compression` bytes.
    pub(crate) fn seal(&self, payload: &[u8]) -> (Bytes, u64) {
        seal(payload, self.ttl, self.compression, self.now_ms())
    }

    /// The payload of an unexpired entry.
    pub(crate) fn open(&self, entry: &[u8]) -> Result<Vec<u8>, ()> {
        open(entry, self.now_ms())
    }
}

/// Entries are stored in an envelope: when they expire, and whether the payload is gzipped.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Expiry, milliseconds since the Unix epoch.
    exp: u64,
    /// Gzipped payload.
    gz: bool,
}

/// `{"exp":…,"gz":…}\n` followed by the payload.
fn seal(payload: &[u8], ttl: Duration, compress_from: Option<usize>, now_ms: u64) -> (Bytes, u64) {
    let gz = compress_from.is_some_and(|t| payload.len() >= t);
    let body = if gz {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = enc.write_all(payload);
        enc.finish().unwrap_or_default()
    } else {
        payload.to_vec()
    };
    let saved = if gz {
        payload.len().saturating_sub(body.len()) as u64
    } else {
        0
    };
    let exp = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let mut out = serde_json::to_vec(&Envelope { exp, gz }).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&body);
    (Bytes::from(out), saved)
}

/// The payload of an entry; Err(()) when it is expired or unreadable.
fn open(entry: &[u8], now_ms: u64) -> Result<Vec<u8>, ()> {
    let nl = entry.iter().position(|b| *b == b'\n').ok_or(())?;
    let env: Envelope = serde_json::from_slice(&entry[..nl]).map_err(|_| ())?;
    if env.exp <= now_ms {
        return Err(());
    }
    let body = &entry[nl + 1..];
    if env.gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|_| ())?;
        Ok(out)
    } else {
        Ok(body.to_vec())
    }
}

/// The cache: a driver, its settings and this process's counters.
pub struct Cache {
    /// The driver and its settings; a reload swaps in new ones (`prepare` + `swap`).
    active: std::sync::RwLock<Arc<Active>>,
    pub stats: Arc<CacheStats>,
    /// Reads always miss (`--no-cache`); writes still invalidate.
    write_only: bool,
}

struct Active {
    driver: Box<dyn CacheDriver>,
    settings: Settings,
}

/// A driver built from a new configuration, ready to be swapped in.
pub struct PreparedCache(Active);

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cache({})", self.active().driver.name())
    }
}

/// The configured driver. The database's store is the `s3` driver's default home; relative
/// folders start at the manifest's folder; entries expire by the context's clock.
impl Component for Cache {
    type Config<'a> = &'a CacheConfig;
    type Error = CacheError;

    fn section(m: &Manifest) -> Option<&CacheConfig> {
        m.cache.as_ref()
    }

    async fn build<'a>(config: &'a CacheConfig, ctx: &'a BuildContext) -> Result<Self, CacheError> {
        let stats = Arc::new(CacheStats::default());
        let active = Self::build_active(
            config,
            ctx.db.store(),
            &ctx.base_dir,
            ctx.clock.clone(),
            stats.clone(),
        )
        .await?;
        Ok(Self {
            active: std::sync::RwLock::new(Arc::new(active)),
            stats,
            write_only: false,
        })
    }
}

impl Cache {
    /// Builds the driver of a new configuration (a reload) without touching the running one.
    pub async fn prepare(
        &self,
        config: &CacheConfig,
        store: &DynStore,
        base_dir: &Path,
    ) -> Result<PreparedCache, CacheError> {
        let clock = self.active().settings.clock.clone();
        Self::build_active(config, store, base_dir, clock, self.stats.clone())
            .await
            .map(PreparedCache)
    }

    /// Puts a prepared driver in place; the old one's entries are dropped with it.
    pub fn swap(&self, prepared: PreparedCache) {
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(prepared.0);
    }

    fn active(&self) -> Arc<Active> {
        self.active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.active().settings.clone()
    }

    async fn build_active(
        config: &CacheConfig,
        store: &DynStore,
        base_dir: &Path,
        clock: Arc<dyn Clock>,
        stats: Arc<CacheStats>,
    ) -> Result<Active, CacheError> {
        let target = config.target.as_ref().ok_or(CacheError::Unchecked)?;
        let threshold = |from: &Option<u64>| from.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        let settings = Settings {
            ttl: target.ttl.as_std(),
            max_size: target.max_size,
            compression: match &target.backend {
                CacheBackend::Memory { compress_from, .. }
                | CacheBackend::Filesystem { compress_from, .. } => threshold(compress_from),
                // Cache objects are always gzipped: they cross the network.
                CacheBackend::S3 { .. } => Some(0),
            },
            eviction: match &target.backend {
                CacheBackend::Memory { eviction, .. } => *eviction,
                _ => EvictionPolicy::default(),
            },
            include_partitions: target.include_partitions,
            clock,
        };
        let driver: Box<dyn CacheDriver> = match &target.backend {
            CacheBackend::Memory { log_evictions, .. } => Box::new(memory::MemoryCache::new(
                &settings,
                stats.clone(),
                *log_evictions,
            )),
            CacheBackend::Filesystem {
                directory,
                prefix,
                layout,
                ..
            } => {
                let dir = base_dir.join(directory);
                let root = match prefix {
                    Some(p) => dir.join(p),
                    None => dir,
                };
                Box::new(filesystem::FsCache::new(
                    root,
                    &settings,
                    *layout,
                    stats.clone(),
                )?)
            }
            CacheBackend::S3 {
                bucket,
                key_prefix,
                storage_class,
            } => {
                let target = match bucket {
                    None => store.clone(),
                    Some(bucket) => s3::store_for_bucket(store, bucket).await?,
                };
                Box::new(s3::S3Cache::new(
                    target,
                    key_prefix,
                    &settings,
                    *storage_class,
                    stats.clone(),
                ))
            }
        };
        Ok(Active { driver, settings })
    }

    /// A memory cache with these settings (tests, benchmarks).
    pub fn memory(settings: Settings) -> Self {
        let stats = Arc::new(CacheStats::default());
        Self {
            active: std::sync::RwLock::new(Arc::new(Active {
                driver: Box::new(memory::MemoryCache::new(&settings, stats.clone(), false)),
                settings,
            })),
            stats,
            write_only: false,
        }
    }

    pub fn with_driver(
        driver: Box<dyn CacheDriver>,
        settings: Settings,
        stats: Arc<CacheStats>,
    ) -> Self {
        Self {
            active: std::sync::RwLock::new(Arc::new(Active { driver, settings })),
            stats,
            write_only: false,
        }
    }

    /// This cache, read around: every read misses, every invalidation still happens.
    pub fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }

    pub fn driver_name(&self) -> &'static str {
        self.active().driver.name()
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if self.write_only {
            return None;
        }
        let found = self.active().driver.get(key).await;
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub async fn set(&self, key: &str, value: Bytes) {
        if self.write_only {
            return;
        }
        self.stats.sets.fetch_add(1, Ordering::Relaxed);
        self.active().driver.set(key, value).await;
    }

    pub async fn delete(&self, key: &str) {
        self.active().driver.delete(key).await;
    }

    pub async fn invalidate_prefix(&self, prefix: &str) {
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        self.active().driver.delete_prefix(prefix).await;
    }

    pub async fn clear(&self) {
        self.active().driver.clear().await;
    }

    /// Empties the cache and says what it held: what `cache clear` and
    /// `POST /api/v1/cache/clear` answer.
    pub async fn clear_reporting(&self) -> Cleared {
        let (entries, bytes) = self.usage().await;
        self.clear().await;
        Cleared {
            cleared: true,
            entries,
            bytes,
        }
    }

    pub async fn usage(&self) -> (u64, u64) {
        self.active().driver.usage().await
    }

    /// What `cache stats` and `GET /api/v1/cache` show: the driver's entries and bytes and this
    /// process's counters.
    pub async fn report(&self) -> CacheReport {
        let (entries, bytes) = self.usage().await;
        let process = self.snapshot();
        CacheReport {
            driver: process.driver.clone(),
            entries,
            bytes,
            process,
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        let hits = s.hits.load(Ordering::Relaxed);
        let misses = s.misses.load(Ordering::Relaxed);
        StatsSnapshot {
            driver: self.active().driver.name().into(),
            hits,
            misses,
            sets: s.sets.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            invalidations: s.invalidations.load(Ordering::Relaxed),
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            compression_saved_bytes: s.compression_saved.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl crate::db::ReadCache for Cache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        Cache::get(self, key).await
    }

    async fn set(&self, key: &str, value: Bytes) {
        Cache::set(self, key, value).await
    }

    async fn delete(&self, key: &str) {
        Cache::delete(self, key).await
    }

    async fn invalidate_prefix(&self, prefix: &str) {
        Cache::invalidate_prefix(self, prefix).await
    }

    fn include_partitions(&self) -> bool {
        self.settings().include_partitions
    }
}
