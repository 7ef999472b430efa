//! Writing records back from a backup: exactly as the backup holds them, as a bulk load.

use serde_json::{Map, Value};

use super::Resource;
use crate::db::DbResult;
use crate::store::{BulkPut, PutMode, PutOptions, StoreError};

impl Resource {
    /// Writes a record exactly as a backup holds it (timestamps included, not re-validated: the
    /// backup is the truth). Without `overwrite` an existing record is kept and false is
    /// returned. The caller drops cached reads afterwards (`invalidate_all`).
    pub async fn restore(
        &self,
        id: &str,
        data: Map<String, Value>,
        overwrite: bool,
    ) -> DbResult<bool> {
        let (refs, record) = self.restore_puts(id, data, overwrite)?;
        let store = self.db.store();
        futures::future::try_join_all(
            refs.iter()
                .map(|r| store.put(&r.key, r.body.clone(), PutMode::Overwrite, &r.options)),
        )
        .await?;
        let mode = match overwrite {
            true => PutMode::Overwrite,
            false => PutMode::Create,
        };
        match store
            .put(&record.key, record.body, mode, &record.options)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `restore` of a batch of records in one bulk write (`ObjectStore::put_bulk`): answers,
    /// for each, whether it was written.
    pub async fn restore_many(
        &self,
        records: Vec<(String, Map<String, Value>)>,
        overwrite: bool,
    ) -> DbResult<Vec<bool>> {
        let mut puts = Vec::with_capacity(records.len());
        let mut refs = Vec::new();
        for (id, data) in records {
            let (r, record) = self.restore_puts(&id, data, overwrite)?;
            refs.extend(r);
            puts.push(record);
        }
        // The references first, in the batch's order of renames: a crash between them leaves
        // a reference without its record (which readers skip), never the other way round.
        let n = refs.len();
        refs.extend(puts);
        let mut written = self.db.store().put_bulk(refs).await?;
        Ok(written.split_off(n))
    }

    /// A restored record's writes: its partition references, then the record. They are bulk
    /// writes: the store may make many durable at once (the restore syncs it when done).
    fn restore_puts(
        &self,
        id: &str,
        mut data: Map<String, Value>,
        overwrite: bool,
    ) -> DbResult<(Vec<BulkPut>, BulkPut)> {
        Self::check_id(id)?;
        data.insert("id".into(), Value::String(id.to_string()));
        let (body, mut options) = self.encode(&data)?;
        options.bulk = true;
        let refs = self.refs(&data, id).into_iter().map(|key| BulkPut {
            key,
            body: bytes::Bytes::new(),
            overwrite: true,
            options: PutOptions {
                bulk: true,
                ..Default::default()
            },
        });
        let record = BulkPut {
            key: self.key(id),
            body,
            overwrite,
            options,
        };
        Ok((refs.collect(), record))
    }
}
