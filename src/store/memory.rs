//! The in-memory backend: a sorted map per bucket. Stores opened with the same
//! `memory://BUCKET` share their objects within one process, as two clients of one S3 bucket
//! would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    validate_key, ETag, ListPage, Object, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult, UserMetadata,
};

type Bucket = Arc<Mutex<BTreeMap<String, (Bytes, UserMetadata)>>>;

fn buckets() -> &'static Mutex<HashMap<String, Bucket>> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Bucket>>> = OnceLock::new();
    BUCKETS.get_or_init(Default::default)
}

#[derive(Debug)]
pub struct MemoryStore {
    bucket_name: String,
    prefix: String,
    objects: Bucket,
}

impl MemoryStore {
    /// The store for `memory://bucket/prefix`, sharing the bucket with every other store of this
    /// process that names it.
    pub fn open(bucket: &str, prefix: &str) -> Self {
        let objects = buckets()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bucket.to_string())
            .or_default()
            .clone();
        Self {
            bucket_name: bucket.to_string(),
            prefix: normalize_prefix(prefix),
            objects,
        }
    }

    /// A store on a bucket of its own, shared with nobody.
    pub fn isolated() -> Self {
        Self {
            bucket_name: "(isolated)".into(),
            prefix: String::new(),
            objects: Arc::default(),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, UserMetadata)>> {
        // A panic while holding the lock cannot leave a half-written map: every mutation is a
        // single insert or remove.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

fn meta(key: &str, body: &Bytes) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        etag: ETag::of(body),
        size: body.len() as u64,
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        format!("memory://{}/{}", self.bucket_name, self.prefix)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        validate_key(key)?;
        Ok(self
            .lock()
            .get(&self.full(key))
            .map(|(body, metadata)| Object {
                meta: meta(key, body),
                body: body.clone(),
                metadata: metadata.clone(),
            }))
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        validate_key(key)?;
        Ok(self
            .lock()
            .get(&self.full(key))
            .map(|(body, _)| meta(key, body)))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        validate_key(key)?;
        let full = self.full(key);
        let etag = ETag::of(&body);
        let mut objects = self.lock();
        match (&mode, objects.get(&full)) {
            (PutMode::Create, Some(_)) => {
                return Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                })
            }
            (PutMode::Update(expected), current)
                if current.map(|(b, _)| ETag::of(b)).as_ref() != Some(expected) =>
            {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
        objects.insert(full, (body, options.metadata.clone()));
        Ok(etag)
    }

    async fn delete(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()> {
        validate_key(key)?;
        let full = self.full(key);
        let mut objects = self.lock();
        if let Some(expected) = if_match {
            match objects.get(&full) {
                None => {
                    return Err(StoreError::NotFound {
                        key: key.to_string(),
                    })
                }
                Some((b, _)) if &ETag::of(b) != expected => {
                    return Err(StoreError::PreconditionFailed {
                        key: key.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
        objects.remove(&full);
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage> {
        let full_prefix = self.full(prefix);
        let start = match token {
            Some(t) => std::ops::Bound::Excluded(self.full(t)),
            None => std::ops::Bound::Included(full_prefix.clone()),
        };
        let objects = self.lock();
        let mut page = ListPage::default();
        for (k, (body, _)) in objects.range((start, std::ops::Bound::Unbounded)) {
            if !k.starts_with(&full_prefix) {
                break;
            }
            if page.objects.len() == max_keys.max(1) {
                page.next = page.objects.last().map(|m| m.key.clone());
                break;
            }
            page.objects.push(meta(&k[self.prefix.len()..], body));
        }
        Ok(page)
    }
}
