//! The database: resources of JSON records on an object store, with validation, partitions,
//! queries and optimistic concurrency. Plugins keep all their state through it; it knows
//! nothing about plugins, and nothing about YAML.

pub mod attribute;
pub mod cache;
pub mod codec;
pub mod lease;
pub mod query;
pub mod resource;
pub mod s3dbjs;
pub mod schema;

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use indexmap::IndexMap;

use crate::store::{DynStore, PutMode, PutOptions, StoreError};
pub use cache::ReadCache;
pub use resource::{ListOptions, Record, Resource};
use schema::{Metadata, ResourceSchema, StoredResource};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("resource `{0}` does not exist")]
    UnknownResource(String),
    #[error("{resource}.{field}: {message}")]
    Validation {
        resource: String,
        field: String,
        message: String,
    },
    #[error("{resource}/{id} already exists")]
    AlreadyExists { resource: String, id: String },
    #[error("{resource}/{id} not found")]
    NotFound { resource: String, id: String },
    #[error("{resource}/{id} changed since it was read (expected version {expected})")]
    Conflict {
        resource: String,
        id: String,
        expected: String,
    },
    #[error("invalid id `{id}`: {reason}")]
    InvalidId { id: String, reason: String },
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error("stored object `{key}` is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("resource definition: {0}")]
    Schema(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Connection(#[from] crate::store::connection::ConnectionError),
}

pub type DbResult<T> = Result<T, DbError>;

/// A connected database. Cheap to clone: clones share the store and the schemas.
#[derive(Clone)]
pub struct Database {
    store: DynStore,
    schemas: Arc<RwLock<IndexMap<String, Arc<ResourceSchema>>>>,
    concurrency: usize,
    cache: Option<Arc<dyn ReadCache>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.store.describe())
    }
}

/// How many objects a listing reads at once, unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 32;

impl Database {
    /// Reads `s3db.json` (creating it on a fresh store), adds the declared resources to it, and
    /// loads every resource's schema. Two runners connecting at once both succeed and neither
    /// loses the other's resources: every write is create-only or compare-and-swap.
    pub async fn connect(
        store: DynStore,
        declared: &IndexMap<String, StoredResource>,
    ) -> DbResult<Self> {
        let db = Self {
            store,
            schemas: Arc::default(),
            concurrency: DEFAULT_CONCURRENCY,
            cache: None,
        };
        db.register(declared).await?;
        Ok(db)
    }

    /// Registers resources at run time (the plugins' own: entity states, job history…).
    pub async fn register(&self, declared: &IndexMap<String, StoredResource>) -> DbResult<()> {
        let metadata = self.update_metadata(declared).await?;
        let mut schemas = IndexMap::new();
        for (name, stored) in &metadata.resources {
            let schema =
                ResourceSchema::parse(name, stored).map_err(|e| DbError::Schema(e.message))?;
            schemas.insert(name.clone(), Arc::new(schema));
        }
        *self.schemas.write().unwrap_or_else(|e| e.into_inner()) = schemas;
        Ok(())
    }

    async fn update_metadata(
        &self,
        declared: &IndexMap<String, StoredResource>,
    ) -> DbResult<Metadata> {
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let current = self.store.get(codec::METADATA_KEY).await?;
            let (mut metadata, mode) = match current {
                None => (Metadata::new(), PutMode::Create),
                Some(obj) => {
                    let metadata: Metadata =
                        serde_json::from_slice(&obj.body).map_err(|e| DbError::Corrupt {
                            key: codec::METADATA_KEY.into(),
                            message: e.to_string(),
                        })?;
                    if metadata.format_version > schema::FORMAT_VERSION {
                        return Err(DbError::Schema(format!(
                            "the database was written by a newer s3db-run (format {}; this one reads {})",
                            metadata.format_version,
                            schema::FORMAT_VERSION
                        )));
                    }
                    (metadata, PutMode::Update(obj.meta.etag))
                }
            };
            let changed = metadata.merge(declared);
            if !changed && mode != PutMode::Create {
                return Ok(metadata);
            }
            let body = Bytes::from(serde_json::to_vec_pretty(&metadata).unwrap_or_default());
            match self
                .store
                .put(codec::METADATA_KEY, body, mode, &PutOptions::default())
                .await
            {
                Ok(_) => return Ok(metadata),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DbError::Store(StoreError::PreconditionFailed {
            key: codec::METADATA_KEY.into(),
        }))
    }

    /// The same database, reading `n` objects at once in listings.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The same database, with reads through `cached_*` kept in `cache` and every write
    /// invalidating what it affects.
    pub fn with_cache(mut self, cache: Arc<dyn ReadCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn cache(&self) -> Option<&Arc<dyn ReadCache>> {
        self.cache.as_ref()
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The names of every resource, in declaration order.
    pub fn resource_names(&self) -> Vec<String> {
        self.schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn resource(&self, name: &str) -> DbResult<Resource> {
        let schema = self
            .schemas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| DbError::UnknownResource(name.to_string()))?;
        Ok(Resource::new(self.clone(), schema))
    }
}
