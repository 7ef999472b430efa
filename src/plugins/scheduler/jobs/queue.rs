//! `overlap: queue` across runners: a waiting run holds a ticket, an object keyed by its slot
//! time under `plugin=scheduler/queue/job=NAME/`, so a listing gives the waiters in slot order.
//! Only the head of the queue tries to take the job's run lease, so queued runs start one at a
//! time and oldest slot first, whichever runner each is on. A ticket carries an expiry its
//! waiter renews; a killed waiter's ticket expires and the next waiter removes it.

use bytes::Bytes;

use super::*;
use crate::store::{DynStore, PutMode, PutOptions, StoreError};

/// How often a waiter looks at the head of the queue.
pub(super) const QUEUE_POLL: Duration = Duration::from_millis(500);

/// A waiting run's place in the job's queue.
pub(super) struct Ticket {
    store: DynStore,
    key: String,
    prefix: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    renewed: Mutex<DateTime<Utc>>,
}

fn queue_prefix(job: &str) -> String {
    format!(
        "plugin=scheduler/queue/job={}/",
        crate::db::codec::encode(job)
    )
}

impl Ticket {
    /// Whether another run of `job` is queued before a slot at `at`: a newcomer must not pass
    /// the runs waiting since earlier slots when the lease comes free.
    pub(super) async fn others_waiting(
        store: &DynStore,
        job: &str,
        clock: &dyn Clock,
    ) -> Result<bool, StoreError> {
        let prefix = queue_prefix(job);
        loop {
            let page = store.list(&prefix, None, 1).await?;
            let Some(head) = page.objects.first() else {
                return Ok(false);
            };
            if !Self::expired(store, &head.key, clock).await? {
                return Ok(true);
            }
            // A killed waiter's ticket: remove it (only that version) and look again.
            let _ = store.delete(&head.key, Some(&head.etag)).await;
        }
    }

    /// Joins the queue for a run at `at`.
    pub(super) async fn take(
        store: DynStore,
        job: &str,
        at: DateTime<Utc>,
        run: &str,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let prefix = queue_prefix(job);
        let key = format!(
            "{prefix}{}/{}",
            crate::types::time::rfc3339(at),
            crate::types::id::token(6)
        );
        let ticket = Self {
            store,
            key,
            prefix,
            ttl,
            renewed: Mutex::new(clock.now()),
            clock,
        };
        ticket.write(run).await?;
        Ok(ticket)
    }

    async fn write(&self, run: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let body = json!({ "run": run, "expiresAt": crate::types::time::rfc3339(until) });
        self.store
            .put(
                &self.key,
                Bytes::from(body.to_string()),
                PutMode::Overwrite,
                &PutOptions::default(),
            )
            .await?;
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(())
    }

    async fn expired(store: &DynStore, key: &str, clock: &dyn Clock) -> Result<bool, StoreError> {
        let Some(obj) = store.get(key).await? else {
            return Ok(true);
        };
        let until = serde_json::from_slice::<Value>(&obj.body)
            .ok()
            .and_then(|v| v["expiresAt"].as_str().map(str::to_string))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        Ok(until.is_none_or(|t| t.with_timezone(&Utc) <= clock.now()))
    }

    /// Whether this ticket is at the head of the queue (expired tickets before it are
    /// removed). Renews the ticket when a third of its lifetime has passed.
    pub(super) async fn at_head(&self, run: &str) -> Result<bool, StoreError> {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        let third = chrono::Duration::from_std(self.ttl / 3).unwrap_or_default();
        if self.clock.now() - renewed >= third {
            self.write(run).await?;
        }
        loop {
            let page = self.store.list(&self.prefix, None, 1).await?;
            let Some(head) = page.objects.first() else {
                // Our own ticket is gone (removed as expired by another waiter while this
                // runner was stalled): write it again, in its place by slot time.
                self.write(run).await?;
                continue;
            };
            if head.key == self.key {
                return Ok(true);
            }
            if head.key > self.key {
                self.write(run).await?;
                continue;
            }
            if !Self::expired(&self.store, &head.key, self.clock.as_ref()).await? {
                return Ok(false);
            }
            let _ = self.store.delete(&head.key, Some(&head.etag)).await;
        }
    }

    /// Leaves the queue (the run got the lease, or gave up).
    pub(super) async fn leave(self) {
        if let Err(e) = self.store.delete(&self.key, None).await {
            tracing::debug!(key = %self.key, error = %e, "could not remove a queue ticket (it expires)");
        }
    }
}
