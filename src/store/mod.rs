//! Object storage: one small trait with explicit semantics, and three backends (`fs`, the
//! embedded default; `memory`; `s3`). Everything the database keeps goes through it, so the
//! guarantees here (atomic writes, create-only and compare-and-swap puts) are what make several
//! runners on one bucket safe. A backend never knows which plugin calls it.

pub mod connection;
pub mod counting;
pub mod fs;
pub mod memory;
pub mod s3;
pub mod s3_metrics;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use connection::Connection;

/// An object's version tag. Compare-and-swap writes name the version they replace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ETag(pub String);

impl ETag {
    /// The content hash the `fs` and `memory` backends use: hex of the first 16 bytes of
    /// SHA-256, quoted like S3's.
    pub fn of(body: &[u8]) -> Self {
        let digest = Sha256::digest(body);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("\"{hex}\""))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing or a head tells about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub etag: ETag,
    pub size: u64,
}

/// An object's user metadata (S3's `x-amz-meta-*`), keys in lower case. s3db.js keeps a
/// record's values there; the native format leaves it empty.
pub type UserMetadata = std::collections::BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub meta: ObjectMeta,
    pub body: Bytes,
    pub metadata: UserMetadata,
}

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Only if no object has the key (S3 `If-None-Match: *`).
    Create,
    /// Only if the object's current version is this one (S3 `If-Match`).
    Update(ETag),
    /// Unconditionally.
    Overwrite,
}

/// Server-side encryption for backends that have it (S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSideEncryption {
    Aes256,
    Kms { key_id: Option<String> },
}

/// Options a caller may ask for; backends without the feature ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub storage_class: Option<String>,
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub content_type: Option<String>,
    /// User metadata to store with the object. A backend that cannot keep it (the filesystem)
    /// refuses a put that carries some rather than dropping it.
    pub metadata: UserMetadata,
    /// One write of a bulk load (a restore), which calls `sync` when done. The filesystem
    /// store then makes data durable for many writes at once (one `syncfs` per group rather
    /// than two `fsync`s per object): an object is still old or new at any crash, never torn,
    /// though a new one may be missing until `sync` returns.
    pub bulk: bool,
}

/// One object of a bulk load (`ObjectStore::put_bulk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkPut {
    pub key: String,
    pub body: Bytes,
    /// Replace an object the key already has; without it that object is kept as it is.
    pub overwrite: bool,
    pub options: PutOptions,
}

/// One page of a listing, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Pass back to get the next page; None on the last page.
    pub next: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("object `{key}` already exists")]
    AlreadyExists { key: String },
    #[error("object `{key}` changed since it was read (or no longer exists)")]
    PreconditionFailed { key: String },
    #[error("object `{key}` not found")]
    NotFound { key: String },
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    /// Compare-and-swap needs the version an S3-compatible server must return; an empty one
    /// sent as `If-Match` would match nothing or, on a lax server, everything.
    #[error("the storage server returned no ETag for `{key}` ({operation}); compare-and-swap cannot work without one: check that the server is S3-compatible")]
    MissingEtag {
        key: String,
        operation: &'static str,
    },
    #[error("{backend} storage error on `{key}`: {message}")]
    Backend {
        backend: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    pub fn backend(backend: &'static str, key: &str, message: impl fmt::Display) -> Self {
        StoreError::Backend {
            backend,
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// A conditional write lost to another writer.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::AlreadyExists { .. } | StoreError::PreconditionFailed { .. }
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Object storage with S3's semantics. Keys are relative to the store's root (the connection's
/// prefix), use `/` as separator and never start with `/`.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where the store is, with credentials redacted.
    fn describe(&self) -> String;

    /// For S3 stores, where they are (so a plugin can reach another bucket the same way).
    fn s3_location(&self) -> Option<connection::S3Location> {
        None
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>>;

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>>;

    /// Writes the object; returns its new version. `Create` fails with `AlreadyExists`,
    /// `Update` with `PreconditionFailed`, when another writer got there first.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        options: &PutOptions,
    ) -> StoreResult<ETag>;

    /// Deletes the object. Without `if_match`, deleting a missing object succeeds; with it, the
    /// object must exist at that version (`PreconditionFailed` otherwise).
    async fn delete(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()>;

    /// Up to `max_keys` objects whose key starts with `prefix`, after `token`.
    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage>;

    /// Makes every `bulk` put so far durable (their folders included).
    async fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Whether `put_bulk` writes a batch faster than as many concurrent `put`s do. A bulk load
    /// (a restore) hands such a store whole batches, and others concurrent puts.
    fn writes_batches(&self) -> bool {
        false
    }

    /// Writes a batch of a bulk load in its order, durable once `sync` returns (like `bulk`
    /// puts: an object is old or new at any crash, never torn). Answers, for each, whether it
    /// was written: false when the key had an object and `overwrite` was not set.
    async fn put_bulk(&self, items: Vec<BulkPut>) -> StoreResult<Vec<bool>> {
        let mut written = Vec::with_capacity(items.len());
        for item in items {
            let mode = match item.overwrite {
                true => PutMode::Overwrite,
                false => PutMode::Create,
            };
            match self.put(&item.key, item.body, mode, &item.options).await {
                Ok(_) => written.push(true),
                Err(StoreError::AlreadyExists { .. }) => written.push(false),
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }
}

pub type DynStore = Arc<dyn ObjectStore>;

/// Every object under `prefix`, following pagination.
pub async fn list_all(store: &dyn ObjectStore, prefix: &str) -> StoreResult<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store.list(prefix, token.as_deref(), 1000).await?;
        out.extend(page.objects);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(out),
        }
    }
}

/// Checks a key against the rules every backend shares.
pub fn validate_key(key: &str) -> StoreResult<()> {
    let invalid = |reason: &str| {
        Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        })
    };
    if key.is_empty() {
        return invalid("a key cannot be empty");
    }
    if key.len() > 1024 {
        return invalid("a key is at most 1024 bytes");
    }
    if key.starts_with('/') {
        return invalid("a key cannot start with `/`");
    }
    if key.contains('\0') {
        return invalid("a key cannot contain NUL");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return invalid("a key cannot have empty, `.` or `..` segments");
        }
        if segment.len() > 255 {
            return invalid("a key segment is at most 255 bytes");
        }
    }
    if key.starts_with(".s3db-") {
        return invalid("keys starting with `.s3db-` are reserved");
    }
    Ok(())
}

/// What a store does wrong with conditional writes, found by [`verify_conditional_writes`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionalWriteProblem {
    #[error(
        "the store accepted a second create-only write of one key (it ignores `If-None-Match: *`)"
    )]
    CreateTwice,
    #[error("the store accepted a write naming a version the object does not have (it ignores `If-Match`)")]
    StaleUpdate,
    #[error("the probe could not run: {0}")]
    Store(String),
}

/// Checks, with a throwaway object, that the store refuses what exactly-once depends on: a
/// second create-only put of one key, and a put naming a stale version. Some S3-compatible
/// servers accept both, which would let two runners run one slot or lose an update silently.
pub async fn verify_conditional_writes(
    store: &dyn ObjectStore,
) -> Result<(), ConditionalWriteProblem> {
    let key = format!("plugin=runner/probes/{}", crate::types::id::token(16));
    let fail = |e: StoreError| ConditionalWriteProblem::Store(e.to_string());
    let first = store
        .put(
            &key,
            Bytes::from_static(b"1"),
            PutMode::Create,
            &PutOptions::default(),
        )
        .await
        .map_err(fail)?;
    let verdict = async {
        match store
            .put(
                &key,
                Bytes::from_static(b"2"),
                PutMode::Create,
                &PutOptions::default(),
            )
            .await
        {
            Err(StoreError::AlreadyExists { .. }) => {}
            Ok(_) => return Err(ConditionalWriteProblem::CreateTwice),
            Err(e) => return Err(fail(e)),
        }
        let stale = ETag(format!("\"{}-stale\"", first.0.trim_matches('"')));
        match store
            .put(
                &key,
                Bytes::from_static(b"3"),
                PutMode::Update(stale),
                &PutOptions::default(),
            )
            .await
        {
            Err(StoreError::PreconditionFailed { .. }) => Ok(()),
            Ok(_) => Err(ConditionalWriteProblem::StaleUpdate),
            Err(e) => Err(fail(e)),
        }
    }
    .await;
    let _ = store.delete(&key, None).await;
    verdict
}
