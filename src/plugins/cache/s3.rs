//! The s3 driver: entries are objects under `keyPrefix` in the database's store (or another
//! bucket reached with the same credentials), gzipped, shared by every runner of the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{CacheDriver, CacheStats, Settings};
use crate::db::codec::encode;
use crate::manifest::model::StorageClass;
use crate::store::{list_all, DynStore, PutMode, PutOptions};

pub struct S3Cache {
    store: DynStore,
    prefix: String,
    settings: Settings,
    options: PutOptions,
    stats: Arc<CacheStats>,
    writes: AtomicU64,
}

/// A store for another bucket, reached like the database's (same endpoint and credentials).
pub async fn store_for_bucket(
    store: &DynStore,
    bucket: &str,
) -> Result<DynStore, super::CacheError> {
    let Some(mut location) = store.s3_location() else {
        return Err(super::CacheError::BucketNeedsS3 {
            database: store.describe(),
        });
    };
    location.bucket = bucket.to_string();
    location.prefix = String::new();
    Ok(std::sync::Arc::new(
        crate::store::s3::S3Store::connect(location).await,
    ))
}

impl S3Cache {
    pub fn new(
        store: DynStore,
        prefix: &str,
        settings: &Settings,
        storage_class: Option<StorageClass>,
        stats: Arc<CacheStats>,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            store,
            prefix: if prefix.is_empty() {
                "cache".into()
            } else {
                prefix.to_string()
            },
            settings: settings.clone(),
            options: PutOptions {
                storage_class: storage_class
                    .and_then(|c| serde_json::to_value(c).ok())
                    .and_then(|v| v.as_str().map(str::to_string)),
                ..Default::default()
            },
            stats,
            writes: AtomicU64::new(0),
        }
    }

    fn object_key(&self, key: &str) -> String {
        let segments: Vec<String> = key.split('/').map(encode).collect();
        format!("{}/{}", self.prefix, segments.join("/"))
    }

    async fn evict(&self) {
        let Ok(objects) = list_all(self.store.as_ref(), &format!("{}/", self.prefix)).await else {
            return;
        };
        let max = usize::try_from(self.settings.max_size).unwrap_or(usize::MAX);
        if objects.len() <= max {
            return;
        }
        // Expiry is set at write time with one TTL, so the earliest to expire was written first.
        let mut dated = Vec::new();
        for o in objects {
            if let Ok(Some(obj)) = self.store.get(&o.key).await {
                dated.push((expiry(&obj.body), o.key));
            }
        }
        dated.sort();
        let excess = dated.len().saturating_sub(max);
        for (_, key) in dated.into_iter().take(excess) {
            if self.store.delete(&key, None).await.is_ok() {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn expiry(entry: &[u8]) -> u64 {
    let nl = entry.iter().position(|b| *b == b'\n').unwrap_or(0);
    serde_json::from_slice::<serde_json::Value>(&entry[..nl])
        .ok()
        .and_then(|v| v.get("exp").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

#[async_trait]
impl CacheDriver for S3Cache {
    fn name(&self) -> &'static str {
        "s3"
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let object_key = self.object_key(key);
        let obj = self.store.get(&object_key).await.ok()??;
        match self.settings.open(&obj.body) {
            Ok(payload) => Some(Bytes::from(payload)),
            Err(()) => {
                let _ = self.store.delete(&object_key, None).await;
                None
            }
        }
    }

    async fn set(&self, key: &str, value: Bytes) {
        let (sealed, saved) = self.settings.seal(&value);
        self.stats
            .compression_saved
            .fetch_add(saved, Ordering::Relaxed);
        if let Err(e) = self
            .store
            .put(
                &self.object_key(key),
                sealed,
                PutMode::Overwrite,
                &self.options,
            )
            .await
        {
            tracing::warn!(key, error = %e, "could not write a cache entry");
            return;
        }
        let every = (self.settings.max_size / 10).max(1);
        if every == 1 || self.writes.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            self.evict().await;
        }
    }

    async fn delete(&self, key: &str) {
        let _ = self.store.delete(&self.object_key(key), None).await;
    }

    async fn delete_prefix(&self, prefix: &str) {
        let full = self.object_key(prefix.trim_end_matches('/'));
        let full = if prefix.ends_with('/') {
            format!("{full}/")
        } else {
            full
        };
        if let Ok(objects) = list_all(self.store.as_ref(), &full).await {
            for o in objects {
                let _ = self.store.delete(&o.key, None).await;
            }
        }
    }

    async fn clear(&self) {
        if let Ok(objects) = list_all(self.store.as_ref(), &format!("{}/", self.prefix)).await {
            for o in objects {
                let _ = self.store.delete(&o.key, None).await;
            }
        }
    }

    async fn usage(&self) -> (u64, u64) {
        match list_all(self.store.as_ref(), &format!("{}/", self.prefix)).await {
            Ok(objects) => (objects.len() as u64, objects.iter().map(|o| o.size).sum()),
            Err(_) => (0, 0),
        }
    }
}
