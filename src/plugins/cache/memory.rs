//! The memory driver on moka: bounded by entry count with LRU eviction, entries expire after the
//! TTL, values above the threshold are gzipped when compression is on.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use moka::future::Cache as Moka;
use moka::notification::RemovalCause;

use super::{CacheDriver, CacheStats, Settings};

pub struct MemoryCache {
    entries: Moka<String, Bytes>,
    settings: Settings,
    stats: Arc<CacheStats>,
}

impl MemoryCache {
    pub fn new(settings: &Settings, stats: Arc<CacheStats>, log_evictions: bool) -> Self {
        let counter = stats.clone();
        // moka offers LRU and TinyLFU; `fifo` is served by LRU, the closest it has.
        let entries = Moka::builder()
            .max_capacity(settings.max_size)
            .time_to_live(settings.ttl)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |key: Arc<String>, _v, cause| {
                if cause == RemovalCause::Size {
                    counter.evictions.fetch_add(1, Ordering::Relaxed);
                    if log_evictions {
                        tracing::info!(key = %key, "cache entry evicted");
                    }
                }
            })
            .build();
        Self {
            entries,
            settings: settings.clone(),
            stats,
        }
    }
}

#[async_trait]
impl CacheDriver for MemoryCache {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let entry = self.entries.get(key).await?;
        match self.settings.open(&entry) {
            Ok(payload) => Some(Bytes::from(payload)),
            Err(()) => {
                self.entries.invalidate(key).await;
                None
            }
        }
    }

    async fn set(&self, key: &str, value: Bytes) {
        let (sealed, saved) = self.settings.seal(&value);
        self.stats
            .compression_saved
            .fetch_add(saved, Ordering::Relaxed);
        self.entries.insert(key.to_string(), sealed).await;
        // Size-based eviction happens in moka's maintenance; running it now keeps the bound
        // (and the eviction counter) exact at every step.
        self.entries.run_pending_tasks().await;
    }

    async fn delete(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    async fn delete_prefix(&self, prefix: &str) {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in keys {
            self.entries.invalidate(&k).await;
        }
    }

    async fn clear(&self) {
        self.entries.invalidate_all();
        self.entries.run_pending_tasks().await;
    }

    async fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        let bytes = self.entries.iter().map(|(_, v)| v.len() as u64).sum();
        (self.entries.entry_count(), bytes)
    }
}
