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
    /// A resource the manifest declares with an attribute s3db.js's definition lacks.
    #[error("resource `{resource}` is declared with attribute `{attribute}`, which the s3db.js definition in s3db.json does not have")]
    ContradictsS3dbjs { resource: String, attribute: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Connection(#[from] crate::store::connection::ConnectionError),
}

pub type DbResult<T> = Result<T, DbError>;

/// How to connect to a database that may be s3db.js's.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The passphrase of s3db.js `secret` attributes; s3db.js's default (`secret`) without one.
    pub passphrase: Option<String>,
    /// On a prefix without `s3db.json`, create one in s3db.js's format with the declared
    /// resources (the manifest's `format: s3dbjs`), so s3db.js can open the new database.
    pub create_s3dbjs: bool,
}

/// A connected database. Cheap to clone: clones share the store and the schemas.
#[derive(Clone)]
pub struct Database {
    store: DynStore,
    schemas: Arc<RwLock<IndexMap<String, Arc<ResourceSchema>>>>,
    concurrency: usize,
    cache: Option<Arc<dyn ReadCache>>,
    /// Set when s3db.js wrote `s3db.json`: its content, as read at connect time.
    s3dbjs: Arc<RwLock<Option<Arc<serde_json::Value>>>>,
    passphrase: Arc<str>,
}

/// Where s3db-run keeps the definitions of its own resources on a database whose `s3db.json`
/// belongs to s3db.js (which is never rewritten by s3db-run).
pub const OWN_METADATA_KEY: &str = "s3db-run.json";

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
        Self::connect_with(store, declared, &ConnectOptions::default()).await
    }

    /// `connect`, with the options of s3db.js databases. An `s3db.json` that s3db.js wrote is
    /// recognised and kept as it is: its resources are read and written in s3db.js's layout.
    pub async fn connect_with(
        store: DynStore,
        declared: &IndexMap<String, StoredResource>,
        options: &ConnectOptions,
    ) -> DbResult<Self> {
        let db = Self {
            store,
            schemas: Arc::default(),
            concurrency: DEFAULT_CONCURRENCY,
            cache: None,
            s3dbjs: Arc::default(),
            passphrase: Arc::from(
                options
                    .passphrase
                    .as_deref()
                    .unwrap_or(s3dbjs::DEFAULT_PASSPHRASE),
            ),
        };
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            match db.store.get(codec::METADATA_KEY).await? {
                Some(obj) => {
                    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&obj.body) {
                        if s3dbjs::is_s3dbjs(&value) {
                            db.adopt_s3dbjs(value)?;
                        }
                    }
                    break;
                }
                None if options.create_s3dbjs => {
                    let metadata = s3dbjs::schema::new_metadata(
                        declared,
                        concat!("s3db-run/", env!("CARGO_PKG_VERSION")),
                    );
                    let body = bytes::Bytes::from(
                        serde_json::to_vec_pretty(&metadata).unwrap_or_default(),
                    );
                    match db
                        .store
                        .put(
                            codec::METADATA_KEY,
                            body,
                            PutMode::Create,
                            &PutOptions::default(),
                        )
                        .await
                    {
                        Ok(_) => {
                            db.adopt_s3dbjs(metadata)?;
                            break;
                        }
                        // Another runner created it first: read theirs.
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                None => break,
            }
        }
        db.register(declared).await?;
        Ok(db)
    }

    /// Reads this database as one s3db.js defined by `metadata` (its `s3db.json`).
    pub fn adopt_s3dbjs(&self, metadata: serde_json::Value) -> DbResult<()> {
        s3dbjs::schema::parse(&metadata).map_err(|e| DbError::Corrupt {
            key: codec::METADATA_KEY.into(),
            message: format!("s3db.js metadata: {e}"),
        })?;
        *self.s3dbjs.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(metadata));
        Ok(())
    }

    /// `s3db.json` as s3db.js wrote it, when it did.
    pub fn s3dbjs_metadata(&self) -> Option<Arc<serde_json::Value>> {
        self.s3dbjs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// Where the native resources' definitions live: `s3db.json`, or `s3db-run.json` beside
    /// s3db.js's.
    pub fn metadata_key(&self) -> &'static str {
        if self.s3dbjs_metadata().is_some() {
            OWN_METADATA_KEY
        } else {
            codec::METADATA_KEY
        }
    }

    /// Registers resources at run time (the plugins' own: entity states, job history…).
    pub async fn register(&self, declared: &IndexMap<String, StoredResource>) -> DbResult<()> {
        let mut schemas = IndexMap::new();
        let mut own = declared.clone();
        if let Some(js) = self.s3dbjs_metadata() {
            let resources = s3dbjs::schema::parse(&js).map_err(DbError::Schema)?;
            for (name, res) in resources {
                if let Some(def) = own.shift_remove(&name) {
                    check_declared(&name, &def, &res)?;
                }
                let schema =
                    ResourceSchema::from_s3dbjs(res).map_err(|e| DbError::Schema(e.message))?;
                schemas.insert(name, Arc::new(schema));
            }
        }
        let metadata = self.update_metadata(&own).await?;
        for (name, stored) in &metadata.resources {
            if schemas.contains_key(name) {
                continue;
            }
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
        let key = self.metadata_key();
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let current = self.store.get(key).await?;
            let (mut metadata, mode) = match current {
                None => (Metadata::new(), PutMode::Create),
                Some(obj) => {
                    let metadata: Metadata =
                        serde_json::from_slice(&obj.body).map_err(|e| DbError::Corrupt {
                            key: key.into(),
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
                .put(key, body, mode, &PutOptions::default())
                .await
            {
                Ok(_) => return Ok(metadata),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DbError::Store(StoreError::PreconditionFailed {
            key: key.into(),
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

/// A resource the manifest declares on a database where s3db.js defined it: s3db.js's
/// definition is the one used, so every declared attribute must be one it has.
fn check_declared(
    name: &str,
    declared: &StoredResource,
    theirs: &s3dbjs::JsResource,
) -> DbResult<()> {
    let known = |attr: &str| {
        theirs
            .current
            .fields
            .iter()
            .any(|f| f.path == attr || f.path.starts_with(&format!("{attr}.")))
    };
    if let Some(missing) = declared.attributes.keys().find(|a| !known(a)) {
        return Err(DbError::ContradictsS3dbjs {
            resource: name.to_string(),
            attribute: missing.clone(),
        });
    }
    Ok(())
}
