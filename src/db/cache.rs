//! What the database needs of a cache of reads: get, set and invalidate by key. The cache plugin
//! implements it; the database never knows which driver, or that it is a plugin.

use async_trait::async_trait;
use bytes::Bytes;

#[async_trait]
pub trait ReadCache: Send + Sync {
    async fn get(&self, key: &str) -> Option<Bytes>;
    async fn set(&self, key: &str, value: Bytes);
    async fn delete(&self, key: &str);
    async fn invalidate_prefix(&self, prefix: &str);
    /// Whether a partition's listings are kept under the partition's own key, so they can be
    /// told apart (`includePartitions`).
    fn include_partitions(&self) -> bool;
}
