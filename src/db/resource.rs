//! A resource's operations: insert, get, exists, update (partial, with operators and
//! compare-and-swap), upsert, delete, deleteMany, list, count and partition listings.
//!
//! Partition references are written before the record and removed after it, so a crash leaves at
//! most a stale reference, never a record missing from its partition; listings check each
//! record's current values and drop stale references.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};

use super::codec;
use super::query::{apply_update, Filter};
use super::schema::{Partition, ResourceSchema};
use super::{Database, DbError, DbResult};
use crate::store::{list_all, ETag, PutMode, PutOptions, StoreError};

mod restore;

/// A record with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    /// The record's fields, `id` included.
    pub data: Map<String, Value>,
    pub etag: ETag,
}

impl Record {
    pub fn to_json(&self) -> Value {
        Value::Object(self.data.clone())
    }
}

/// Which records a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub filter: Option<Filter>,
    pub limit: Option<usize>,
    pub offset: usize,
    /// A partition and the values of its leading fields.
    pub partition: Option<(String, Vec<(String, String)>)>,
}

#[derive(Clone)]
pub struct Resource {
    db: Database,
    schema: Arc<ResourceSchema>,
}

impl Resource {
    pub(super) fn new(db: Database, schema: Arc<ResourceSchema>) -> Self {
        Self { db, schema }
    }

    pub fn name(&self) -> &str {
        &self.schema.name
    }

    pub fn schema(&self) -> &ResourceSchema {
        &self.schema
    }

    /// A new id: 22 URL-safe characters (128 random bits).
    pub fn generate_id() -> String {
        crate::types::id::record_id()
    }

    fn check_id(id: &str) -> DbResult<()> {
        let reason = if id.is_empty() {
            "an id cannot be empty"
        } else if id.len() > 200 {
            "an id is at most 200 bytes"
        } else if id.chars().any(char::is_control) {
            "an id cannot contain control characters"
        } else {
            return Ok(());
        };
        Err(DbError::InvalidId {
            id: id.chars().take(40).collect(),
            reason: reason.into(),
        })
    }

    fn key(&self, id: &str) -> String {
        codec::record_key(&self.schema.name, id)
    }

    fn validate(&self, data: &Map<String, Value>) -> DbResult<()> {
        let outcome = match &self.schema.s3dbjs {
            Some(js) => super::s3dbjs::rules::validate(&js.current, data),
            None => self
                .schema
                .validate(data)
                .map_err(|(field, problem)| (field, problem.to_string())),
        };
        outcome.map_err(|(field, message)| DbError::Validation {
            resource: self.schema.name.clone(),
            field,
            message,
        })
    }

    /// The object a record is stored as: its body and the options carrying its metadata.
    fn encode(&self, data: &Map<String, Value>) -> DbResult<(bytes::Bytes, PutOptions)> {
        match &self.schema.s3dbjs {
            None => Ok((codec::encode_record(data), PutOptions::default())),
            Some(js) => {
                let (body, metadata) =
                    super::s3dbjs::record::encode(js, self.db.passphrase(), data).map_err(|e| {
                        DbError::Validation {
                            resource: self.schema.name.clone(),
                            field: "(record)".into(),
                            message: e.to_string(),
                        }
                    })?;
                Ok((
                    body,
                    PutOptions {
                        metadata,
                        ..Default::default()
                    },
                ))
            }
        }
    }

    fn apply_defaults(&self, data: &mut Map<String, Value>) {
        match &self.schema.s3dbjs {
            None => self.schema.apply_defaults(data),
            Some(js) => {
                for f in &js.current.fields {
                    if let Some(default) = f.rules.get("default") {
                        if !f.path.contains('.') && data.get(&f.path).is_none_or(Value::is_null) {
                            data.insert(f.path.clone(), default.clone());
                        }
                    }
                }
            }
        }
    }

    fn now() -> Value {
        Value::String(crate::types::time::now_rfc3339())
    }

    fn decode(&self, key: &str, id: &str, obj: &crate::store::Object) -> DbResult<Record> {
        self.decode_with(key, id, obj, Some(self.db.passphrase()))
    }

    /// A stored object as a record; without a passphrase, s3db.js secrets stay sealed (what a
    /// backup keeps).
    pub fn decode_with(
        &self,
        key: &str,
        id: &str,
        obj: &crate::store::Object,
        passphrase: Option<&str>,
    ) -> DbResult<Record> {
        let etag = obj.meta.etag.clone();
        let data = match &self.schema.s3dbjs {
            Some(js) => super::s3dbjs::record::decode(
                js,
                passphrase.unwrap_or(""),
                id,
                &obj.metadata,
                &obj.body,
            ),
            None => codec::decode_record(&obj.body).map_err(|message| DbError::Corrupt {
                key: key.to_string(),
                message,
            })?,
        };
        Ok(Record {
            id: id.to_string(),
            data,
            etag,
        })
    }

    fn refs(&self, data: &Map<String, Value>, id: &str) -> Vec<String> {
        // s3db.js's `byVersion` partition (versioning on) files a record under the schema
        // version it was written at, a field the record itself does not carry.
        let versioned;
        let data = match &self.schema.s3dbjs {
            Some(js) if !data.contains_key("_v") => {
                let mut with = data.clone();
                with.insert("_v".into(), Value::String(js.current.name.clone()));
                versioned = with;
                &versioned
            }
            _ => data,
        };
        self.schema
            .partitions
            .iter()
            .filter_map(|p| {
                p.values(data)
                    .map(|v| codec::partition_key(&self.schema.name, &p.name, &v, id))
            })
            .collect()
    }

    async fn put_refs(&self, keys: &[String]) -> DbResult<()> {
        let store = self.db.store();
        let options = PutOptions::default();
        futures::future::try_join_all(
            keys.iter()
                .map(|k| store.put(k, bytes::Bytes::new(), PutMode::Overwrite, &options)),
        )
        .await?;
        Ok(())
    }

    async fn delete_refs(&self, keys: &[String]) -> DbResult<()> {
        let store = self.db.store();
        futures::future::try_join_all(keys.iter().map(|k| store.delete(k, None))).await?;
        Ok(())
    }

    /// Inserts a record; fails with `AlreadyExists` if the id is taken. Without an id (in the
    /// argument or in `data.id`) one is generated.
    pub async fn insert(&self, mut data: Map<String, Value>, id: Option<&str>) -> DbResult<Record> {
        let id = match (id, data.get("id")) {
            (Some(id), _) => id.to_string(),
            (None, Some(Value::String(id))) => id.clone(),
            (None, Some(other)) => other.to_string(),
            (None, None) => Self::generate_id(),
        };
        Self::check_id(&id)?;
        data.insert("id".into(), Value::String(id.clone()));
        self.apply_defaults(&mut data);
        if self.schema.timestamps {
            let now = Self::now();
            data.insert("createdAt".into(), now.clone());
            data.insert("updatedAt".into(), now);
        }
        self.validate(&data)?;
        let (body, options) = self.encode(&data)?;
        self.put_refs(&self.refs(&data, &id)).await?;
        let key = self.key(&id);
        match self
            .db
            .store()
            .put(&key, body, PutMode::Create, &options)
            .await
        {
            Ok(etag) => {
                self.invalidate(&id).await;
                Ok(Record { id, data, etag })
            }
            Err(StoreError::AlreadyExists { .. }) => Err(DbError::AlreadyExists {
                resource: self.schema.name.clone(),
                id,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Inserts a record that several processes race to create (a job slot's claim): the
    /// create-only put comes first, so a loser writes nothing but its refused put, and the
    /// winner then writes the partition references. A crash between the two leaves the record
    /// out of its partition listings (it is still read by id).
    pub async fn claim(&self, mut data: Map<String, Value>, id: &str) -> DbResult<Record> {
        Self::check_id(id)?;
        data.insert("id".into(), Value::String(id.to_string()));
        self.apply_defaults(&mut data);
        self.validate(&data)?;
        let (body, options) = self.encode(&data)?;
        let etag = match self
            .db
            .store()
            .put(&self.key(id), body, PutMode::Create, &options)
            .await
        {
            Ok(etag) => etag,
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(DbError::AlreadyExists {
                    resource: self.schema.name.clone(),
                    id: id.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        self.invalidate(id).await;
        self.put_refs(&self.refs(&data, id)).await?;
        Ok(Record {
            id: id.to_string(),
            data,
            etag,
        })
    }

    pub async fn get(&self, id: &str) -> DbResult<Option<Record>> {
        Self::check_id(id)?;
        let key = self.key(id);
        match self.db.store().get(&key).await? {
            None => Ok(None),
            Some(obj) => self.decode(&key, id, &obj).map(Some),
        }
    }

    pub async fn exists(&self, id: &str) -> DbResult<bool> {
        Self::check_id(id)?;
        Ok(self.db.store().head(&self.key(id)).await?.is_some())
    }

    /// Applies a partial update (plain values, `$increment`, `$decrement`, `$set`, `$unset`).
    /// With `expected`, the record must still be at that version (`Conflict` otherwise); without
    /// it, a lost race is retried against the newer version, so concurrent updates all apply.
    pub async fn update(
        &self,
        id: &str,
        patch: &Map<String, Value>,
        expected: Option<&ETag>,
    ) -> DbResult<Record> {
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let current = self.get(id).await?.ok_or_else(|| DbError::NotFound {
                resource: self.schema.name.clone(),
                id: id.to_string(),
            })?;
            if let Some(expected) = expected {
                if &current.etag != expected {
                    return Err(self.conflict(id, expected));
                }
            }
            let mut data = current.data.clone();
            apply_update(&mut data, patch)?;
            match self.replace(&current, data).await {
                Err(DbError::Conflict { .. }) => match expected {
                    Some(expected) => return Err(self.conflict(id, expected)),
                    None => continue,
                },
                other => return other,
            }
        }
        Err(self.conflict(id, &ETag("(retries exhausted)".into())))
    }

    /// Writes `data` as the new content of a record read as `current`, only if the record is
    /// still at that version (`Conflict` otherwise). One write, no read: for callers that hold
    /// the record they change.
    pub async fn replace(
        &self,
        current: &Record,
        mut data: Map<String, Value>,
    ) -> DbResult<Record> {
        data.insert("id".into(), Value::String(current.id.clone()));
        if self.schema.timestamps {
            data.insert("updatedAt".into(), Self::now());
        }
        self.validate(&data)?;
        let old_refs = self.refs(&current.data, &current.id);
        let new_refs = self.refs(&data, &current.id);
        let added: Vec<String> = new_refs
            .iter()
            .filter(|k| !old_refs.contains(k))
            .cloned()
            .collect();
        let (body, options) = self.encode(&data)?;
        self.put_refs(&added).await?;
        let put = self
            .db
            .store()
            .put(
                &self.key(&current.id),
                body,
                PutMode::Update(current.etag.clone()),
                &options,
            )
            .await;
        match put {
            Ok(etag) => {
                self.invalidate(&current.id).await;
                let removed: Vec<String> = old_refs
                    .into_iter()
                    .filter(|k| !new_refs.contains(k))
                    .collect();
                self.delete_refs(&removed).await?;
                Ok(Record {
                    id: current.id.clone(),
                    data,
                    etag,
                })
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                Err(self.conflict(&current.id, &current.etag))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A read that owns its arguments. Streams of reads are built from these: futures that borrow
    /// from the closure that makes them trip up the compiler's `Send` inference once they are
    /// awaited inside other `Send` futures (the hook runner calls the state machines, which list).
    fn owned_get(
        &self,
        id: String,
    ) -> impl std::future::Future<Output = DbResult<Option<Record>>> + Send + 'static {
        let this = self.clone();
        async move { this.get(&id).await }
    }

    /// The records with these ids that exist, in the given order, read `concurrency` at a time.
    pub async fn get_many(&self, ids: &[String]) -> DbResult<Vec<Record>> {
        let records: Vec<Option<Record>> =
            futures::stream::iter(ids.iter().cloned().map(|id| self.owned_get(id)))
                .buffered(self.db.concurrency())
                .try_collect()
                .await?;
        Ok(records.into_iter().flatten().collect())
    }

    fn conflict(&self, id: &str, expected: &ETag) -> DbError {
        DbError::Conflict {
            resource: self.schema.name.clone(),
            id: id.to_string(),
            expected: expected.to_string(),
        }
    }

    /// Inserts the record, or updates the existing one with `data`'s fields.
    pub async fn upsert(&self, id: &str, data: Map<String, Value>) -> DbResult<Record> {
        let mut patch = data.clone();
        patch.remove("id");
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            if self.exists(id).await? {
                match self.update(id, &patch, None).await {
                    Err(DbError::NotFound { .. }) => continue,
                    other => return other,
                }
            }
            match self.insert(data.clone(), Some(id)).await {
                Err(DbError::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
        Err(self.conflict(id, &ETag("(retries exhausted)".into())))
    }

    /// Deletes a record; returns whether it existed. With `expected`, only at that version.
    pub async fn delete(&self, id: &str, expected: Option<&ETag>) -> DbResult<bool> {
        let Some(current) = self.get(id).await? else {
            return match expected {
                Some(e) => Err(self.conflict(id, e)),
                None => Ok(false),
            };
        };
        if let Some(e) = expected {
            if e != &current.etag {
                return Err(self.conflict(id, e));
            }
        }
        match self
            .db
            .store()
            .delete(&self.key(id), Some(&current.etag))
            .await
        {
            Ok(()) => {}
            Err(StoreError::PreconditionFailed { .. }) if expected.is_some() => {
                return Err(self.conflict(id, &current.etag))
            }
            // Changed or deleted meanwhile: delete whatever is there now.
            Err(StoreError::PreconditionFailed { .. } | StoreError::NotFound { .. }) => {
                self.db.store().delete(&self.key(id), None).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.invalidate(id).await;
        self.delete_refs(&self.refs(&current.data, id)).await?;
        Ok(true)
    }

    fn cache_key(&self, kind: &str, rest: &str) -> String {
        format!("{}/{kind}/{rest}", codec::encode(&self.schema.name))
    }

    /// Drops what a write of `id` makes stale: that record, and every cached query of the
    /// resource.
    pub async fn invalidate(&self, id: &str) {
        if let Some(cache) = self.db.cache() {
            cache
                .delete(&self.cache_key("get", &codec::encode(id)))
                .await;
            cache
                .invalidate_prefix(&format!("{}/q/", codec::encode(&self.schema.name)))
                .await;
        }
    }

    /// Drops everything cached for this resource (after a restore).
    pub async fn invalidate_all(&self) {
        if let Some(cache) = self.db.cache() {
            cache
                .invalidate_prefix(&format!("{}/", codec::encode(&self.schema.name)))
                .await;
        }
    }

    /// `get`, through the cache when the database has one.
    pub async fn get_cached(&self, id: &str) -> DbResult<Option<Record>> {
        let Some(cache) = self.db.cache() else {
            return self.get(id).await;
        };
        let key = self.cache_key("get", &codec::encode(id));
        if let Some(hit) = cache.get(&key).await.and_then(|b| decode_cached(&b)) {
            return Ok(hit.into_iter().next());
        }
        let record = self.get(id).await?;
        if let Some(r) = &record {
            cache
                .set(&key, encode_cached(std::slice::from_ref(r)))
                .await;
        }
        Ok(record)
    }

    /// `list`, through the cache when the database has one. Partition values are part of the
    /// key (`includePartitions`), so a partition's listings can be told apart in the cache.
    pub async fn list_cached(&self, options: ListOptions) -> DbResult<Vec<Record>> {
        let Some(cache) = self.db.cache() else {
            return self.list(options).await;
        };
        let digest = query_digest(&format!("{options:?}"));
        let key = match (&options.partition, cache.include_partitions()) {
            (Some((name, values)), true) => {
                let values: Vec<String> = values
                    .iter()
                    .map(|(f, v)| format!("{}={}", codec::encode(f), codec::encode(v)))
                    .collect();
                self.cache_key(
                    "q",
                    &format!(
                        "partition={}/{}/list-{digest}",
                        codec::encode(name),
                        values.join("/")
                    ),
                )
            }
            _ => self.cache_key("q", &format!("list-{digest}")),
        };
        if let Some(hit) = cache.get(&key).await.and_then(|b| decode_cached(&b)) {
            return Ok(hit);
        }
        let records = self.list(options).await?;
        cache.set(&key, encode_cached(&records)).await;
        Ok(records)
    }

    /// `count`, through the cache when the database has one.
    pub async fn count_cached(&self, filter: Option<Filter>) -> DbResult<usize> {
        let Some(cache) = self.db.cache() else {
            return self.count(filter).await;
        };
        let key = self.cache_key(
            "q",
            &format!("count-{}", query_digest(&format!("{filter:?}"))),
        );
        if let Some(n) = cache
            .get(&key)
            .await
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        {
            return Ok(n);
        }
        let n = self.count(filter).await?;
        cache.set(&key, bytes::Bytes::from(n.to_string())).await;
        Ok(n)
    }

    /// Deletes the records with these ids; returns how many existed.
    pub async fn delete_many(&self, ids: &[String]) -> DbResult<usize> {
        let deleted: Vec<bool> = futures::stream::iter(ids.iter().cloned().map(|id| {
            let this = self.clone();
            async move { this.delete(&id, None).await }
        }))
        .buffer_unordered(self.db.concurrency())
        .try_collect()
        .await?;
        Ok(deleted.into_iter().filter(|d| *d).count())
    }

    /// Deletes every record that matches; returns how many.
    pub async fn delete_where(&self, filter: Filter) -> DbResult<usize> {
        let ids: Vec<String> = self
            .list(ListOptions {
                filter: Some(filter),
                ..Default::default()
            })
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        self.delete_many(&ids).await
    }

    /// The ids that start with `prefix`, in key order (no record is read). Ids built as
    /// `parent:child` make this a listing of a parent's records without a partition.
    pub async fn ids_with_prefix(&self, prefix: &str) -> DbResult<Vec<String>> {
        let key_prefix = format!(
            "{}id={}",
            codec::data_prefix(&self.schema.name),
            codec::encode(prefix)
        );
        let objects = list_all(self.db.store().as_ref(), &key_prefix).await?;
        Ok(objects
            .iter()
            .filter_map(|o| codec::id_from_key(&o.key))
            .collect())
    }

    /// The ids of every record, in key order (no record is read).
    pub async fn ids(&self) -> DbResult<Vec<String>> {
        let objects = list_all(
            self.db.store().as_ref(),
            &codec::data_prefix(&self.schema.name),
        )
        .await?;
        Ok(objects
            .iter()
            .filter_map(|o| codec::id_from_key(&o.key))
            .collect())
    }

    /// The ids of every record in key order, listed a page at a time: memory stays flat
    /// however many records there are.
    pub fn id_stream(&self) -> impl futures::Stream<Item = DbResult<String>> + Send + 'static {
        let store = self.db.store().clone();
        let prefix = codec::data_prefix(&self.schema.name);
        futures::stream::try_unfold(Some(None), move |state: Option<Option<String>>| {
            let (store, prefix) = (store.clone(), prefix.clone());
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = store.list(&prefix, token.as_deref(), 1000).await?;
                let ids: Vec<DbResult<String>> = page
                    .objects
                    .iter()
                    .filter_map(|o| codec::id_from_key(&o.key))
                    .map(Ok)
                    .collect();
                Ok::<_, DbError>(Some((futures::stream::iter(ids), page.next.map(Some))))
            }
        })
        .try_flatten()
    }

    /// Every record (matching `filter`) in id order, read `concurrency` at a time while the
    /// listing goes on page by page.
    pub fn stream(
        &self,
        filter: Option<Filter>,
    ) -> impl futures::Stream<Item = DbResult<Record>> + Send + 'static {
        let this = self.clone();
        let filter = filter.filter(|f| !f.is_empty());
        self.id_stream()
            .map_ok(move |id| this.owned_get(id))
            .try_buffered(self.db.concurrency())
            .try_filter_map(move |r| {
                let keep = r.filter(|r| filter.as_ref().is_none_or(|f| f.matches(&r.data)));
                futures::future::ready(Ok(keep))
            })
    }

    fn partition_and_values<'a>(
        &'a self,
        name: &str,
        values: &'a [(String, String)],
    ) -> DbResult<(&'a Partition, Vec<(&'a str, String)>)> {
        let partition = self.schema.partition(name).ok_or_else(|| {
            DbError::Query(super::query::QueryError(format!(
                "resource `{}` has no partition `{name}`",
                self.schema.name
            )))
        })?;
        // Values for a leading run of the partition's fields narrow the listing.
        let mut ordered = Vec::new();
        for field in &partition.fields {
            match values.iter().find(|(f, _)| f == &field.name) {
                Some((_, v)) => {
                    let v = match field.max_length {
                        Some(n) => v.chars().take(n).collect(),
                        None => v.clone(),
                    };
                    ordered.push((field.name.as_str(), v));
                }
                None => break,
            }
        }
        if let Some((f, _)) = values
            .iter()
            .find(|(f, _)| !partition.fields.iter().any(|pf| &pf.name == f))
        {
            return Err(DbError::Query(super::query::QueryError(format!(
                "partition `{name}` has no field `{f}`"
            ))));
        }
        Ok((partition, ordered))
    }

    /// Records, in id order, optionally from a partition, filtered, with offset and limit.
    /// Records are read `concurrency` at a time; a listing without filter reads only the records
    /// it returns.
    pub async fn list(&self, options: ListOptions) -> DbResult<Vec<Record>> {
        let limit = options.limit.unwrap_or(usize::MAX);
        let Some((name, values)) = &options.partition else {
            // Ids and records both stream: only the page asked for is kept.
            let filter = options.filter.clone().filter(|f| !f.is_empty());
            if filter.is_none() {
                let this = self.clone();
                return self
                    .id_stream()
                    .skip(options.offset)
                    .take(limit)
                    .map_ok(move |id| this.owned_get(id))
                    .try_buffered(self.db.concurrency())
                    .try_filter_map(|r| futures::future::ready(Ok(r)))
                    .try_collect()
                    .await;
            }
            return self
                .stream(filter)
                .skip(options.offset)
                .take(limit)
                .try_collect()
                .await;
        };
        let (partition, ordered) = self.partition_and_values(name, values)?;
        let prefix = codec::partition_prefix(&self.schema.name, name, &ordered);
        let objects = list_all(self.db.store().as_ref(), &prefix).await?;
        let mut ids: Vec<String> = objects
            .iter()
            .filter_map(|o| codec::id_from_key(&o.key))
            .collect();
        ids.sort();
        ids.dedup();
        let wanted: Vec<(String, String)> = ordered
            .iter()
            .map(|(f, v)| (f.to_string(), v.clone()))
            .collect();
        let partition_check = Some((partition, wanted));
        let filter = options.filter.as_ref().filter(|f| !f.is_empty());
        let mut stream = futures::stream::iter(ids.iter().cloned().map(|id| self.owned_get(id)))
            .buffered(self.db.concurrency());
        let mut out = Vec::new();
        let mut skipped = 0;
        while let Some(record) = stream.next().await {
            let Some(record) = record? else { continue };
            if let Some((partition, wanted)) = &partition_check {
                let current = partition.values(&record.data).unwrap_or_default();
                let still_in = wanted
                    .iter()
                    .all(|(f, v)| current.iter().any(|(cf, cv)| cf == f && cv == v));
                if !still_in {
                    continue;
                }
            }
            if filter.is_some_and(|f| !f.matches(&record.data)) {
                continue;
            }
            if skipped < options.offset {
                skipped += 1;
                continue;
            }
            out.push(record);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// How many records match (without a filter, counting keys reads no record). Nothing is
    /// kept but the count.
    pub async fn count(&self, filter: Option<Filter>) -> DbResult<usize> {
        match filter.filter(|f| !f.is_empty()) {
            None => {
                self.id_stream()
                    .try_fold(0usize, |n, _| futures::future::ready(Ok(n + 1)))
                    .await
            }
            Some(f) => {
                self.stream(Some(f))
                    .try_fold(0usize, |n, _| futures::future::ready(Ok(n + 1)))
                    .await
            }
        }
    }
}

fn query_digest(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode_cached(records: &[Record]) -> bytes::Bytes {
    let items: Vec<Value> = records
        .iter()
        .map(|r| serde_json::json!({ "id": r.id, "etag": r.etag.0, "data": r.data }))
        .collect();
    bytes::Bytes::from(serde_json::to_vec(&items).unwrap_or_default())
}

/// None when the entry is not what `encode_cached` wrote: a corrupt entry is a miss.
fn decode_cached(bytes: &[u8]) -> Option<Vec<Record>> {
    let items: Vec<Value> = serde_json::from_slice(bytes).ok()?;
    items
        .into_iter()
        .map(|v| {
            Some(Record {
                id: v.get("id")?.as_str()?.to_string(),
                etag: ETag(v.get("etag")?.as_str()?.to_string()),
                data: v.get("data")?.as_object()?.clone(),
            })
        })
        .collect()
}
