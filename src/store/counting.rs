//! A store that counts the requests it passes on: for benchmarks ("requests per transition")
//! and for the runner's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BulkPut, DynStore, ETag, ListPage, Object, ObjectMeta, ObjectStore, PutMode, PutOptions,
    StoreResult,
};

#[derive(Debug, Default)]
pub struct RequestCounts {
    pub gets: AtomicU64,
    pub heads: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
}

impl RequestCounts {
    /// (reads, writes, lists) so far: gets and heads are reads, puts and deletes writes.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.gets.load(Ordering::Relaxed) + self.heads.load(Ordering::Relaxed),
            self.puts.load(Ordering::Relaxed) + self.deletes.load(Ordering::Relaxed),
            self.lists.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
pub struct CountingStore {
    inner: DynStore,
    pub counts: Arc<RequestCounts>,
}

impl CountingStore {
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn s3_location(&self) -> Option<super::connection::S3Location> {
        self.inner.s3_location()
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        self.counts.gets.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        self.counts.heads.fetch_add(1, Ordering::Relaxed);
        self.inner.head(key).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        self.counts.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, body, mode, options).await
    }

    async fn delete(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()> {
        self.counts.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(key, if_match).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage> {
        self.counts.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix, token, max_keys).await
    }

    async fn sync(&self) -> StoreResult<()> {
        self.inner.sync().await
    }

    fn writes_batches(&self) -> bool {
        self.inner.writes_batches()
    }

    async fn put_bulk(&self, items: Vec<BulkPut>) -> StoreResult<Vec<bool>> {
        let n = items.len() as u64;
        self.counts.puts.fetch_add(n, Ordering::Relaxed);
        self.inner.put_bulk(items).await
    }
}
