//! Leases: one object in the store that at most one process holds at a time. Taken with a
//! create-only put, renewed with compare-and-swap puts before it expires, released by a
//! conditional delete; a holder that dies stops renewing, and the next taker removes its
//! expired lease (conditionally, so two takers cannot both win). Used by the backup plugin (one
//! backup, prune or restore per database) and the scheduler (one run of a job across runners).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::DateTime;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::store::{DynStore, ETag, PutMode, PutOptions, StoreError};
use crate::types::clock::Clock;

/// Why a lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("held by {holder} until {until}")]
    Held { holder: String, until: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who holds a lease and until when, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub until: String,
    /// Extra fields the holder wrote.
    pub details: Value,
}

/// A lease's place in the store and how long a renewal lasts.
#[derive(Clone)]
pub struct LeaseSpec {
    pub store: DynStore,
    pub key: String,
    pub ttl: Duration,
    pub clock: Arc<dyn Clock>,
}

impl LeaseSpec {
    fn body(&self, holder: &str, details: &Value) -> Bytes {
        let until = self.clock.now() + chrono::Duration::from_std(self.ttl).unwrap_or_default();
        let mut v = json!({ "holder": holder, "expiresAt": crate::types::time::rfc3339(until) });
        if let (Some(map), Value::Object(extra)) = (v.as_object_mut(), details) {
            for (k, x) in extra {
                map.entry(k.clone()).or_insert(x.clone());
            }
        }
        Bytes::from(v.to_string())
    }

    /// The current holder, if the lease is held and not expired.
    pub async fn holder(&self) -> Result<Option<Holder>, StoreError> {
        let Some(current) = self.store.get(&self.key).await? else {
            return Ok(None);
        };
        let (holder, expired) = self.read(&current.body);
        Ok((!expired).then_some(holder))
    }

    fn read(&self, body: &[u8]) -> (Holder, bool) {
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        let until = v["expiresAt"].as_str().unwrap_or_default().to_string();
        let expired = DateTime::parse_from_rfc3339(&until)
            .map(|t| t < self.clock.now())
            .unwrap_or(true);
        (
            Holder {
                holder: v["holder"].as_str().unwrap_or("unknown").to_string(),
                until,
                details: v,
            },
            expired,
        )
    }

    /// Takes the lease for `holder` even when another holds it: the holder's next renewal
    /// finds it changed and cancels its `lost` token, which stops what it guards.
    pub async fn take_over(&self, holder: &str, details: Value) -> Result<LeaseGuard, LeaseError> {
        for _ in 0..5 {
            let mode = match self.store.head(&self.key).await? {
                Some(current) => PutMode::Update(current.etag),
                None => PutMode::Create,
            };
            match self
                .store
                .put(
                    &self.key,
                    self.body(holder, &details),
                    mode,
                    &PutOptions::default(),
                )
                .await
            {
                Ok(etag) => return Ok(self.guard(etag, holder, details)),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Held {
            holder: "unknown (contended)".into(),
            until: String::new(),
        })
    }

    fn guard(&self, etag: ETag, holder: &str, details: Value) -> LeaseGuard {
        let lease = Arc::new(Lease {
            spec: self.clone(),
            etag: Mutex::new(etag),
            stop: CancellationToken::new(),
            lost: CancellationToken::new(),
        });
        tokio::spawn(lease.clone().renew(holder.to_string(), details));
        LeaseGuard {
            lease,
            released: false,
        }
    }

    /// Takes the lease for `holder`, or fails with who holds it; renews it in the background
    /// until the guard is released or dropped.
    pub async fn acquire(&self, holder: &str, details: Value) -> Result<LeaseGuard, LeaseError> {
        // A few rounds: each lost round means another taker moved the lease meanwhile.
        for _ in 0..5 {
            match self
                .store
                .put(
                    &self.key,
                    self.body(holder, &details),
                    PutMode::Create,
                    &PutOptions::default(),
                )
                .await
            {
                Ok(etag) => return Ok(self.guard(etag, holder, details)),
                Err(e) if e.is_conflict() => {
                    let Some(current) = self.store.get(&self.key).await? else {
                        continue;
                    };
                    let (held, expired) = self.read(&current.body);
                    if expired {
                        // A dead holder's lease: remove it, unless someone else just did.
                        let _ = self.store.delete(&self.key, Some(&current.meta.etag)).await;
                        continue;
                    }
                    return Err(LeaseError::Held {
                        holder: held.holder,
                        until: held.until,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LeaseError::Held {
            holder: "unknown (contended)".into(),
            until: String::new(),
        })
    }
}

struct Lease {
    spec: LeaseSpec,
    etag: Mutex<ETag>,
    stop: CancellationToken,
    lost: CancellationToken,
}

impl Lease {
    async fn renew(self: Arc<Self>, holder: String, details: Value) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.spec.ttl / 3) => {}
            }
            let etag = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match self
                .spec
                .store
                .put(
                    &self.spec.key,
                    self.spec.body(&holder, &details),
                    PutMode::Update(etag),
                    &PutOptions::default(),
                )
                .await
            {
                Ok(new) => *self.etag.lock().unwrap_or_else(|e| e.into_inner()) = new,
                Err(e) if e.is_conflict() => {
                    tracing::error!(key = %self.spec.key, error = %e, "lost a lease (it expired and was taken over)");
                    self.lost.cancel();
                    return;
                }
                // A failed renewal is tried again at the next round; the lease lasts three.
                Err(e) => {
                    tracing::warn!(key = %self.spec.key, error = %e, "could not renew a lease; trying again")
                }
            }
        }
    }

    async fn release(&self) {
        self.stop.cancel();
        let etag = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = self.spec.store.delete(&self.spec.key, Some(&etag)).await {
            tracing::warn!(key = %self.spec.key, error = %e, "could not release a lease (it expires by itself)");
        }
    }
}

/// A held lease. Dropped without `release` (its operation's future was dropped), it still
/// stops renewing and deletes the lease in the background, so the lease never outlives its
/// operation by more than that.
pub struct LeaseGuard {
    lease: Arc<Lease>,
    released: bool,
}

impl LeaseGuard {
    /// Cancelled when the lease was lost to another holder.
    pub fn lost(&self) -> CancellationToken {
        self.lease.lost.clone()
    }

    pub async fn release(mut self) {
        self.released = true;
        self.lease.release().await;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.lease.stop.cancel();
        let lease = self.lease.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { lease.release().await });
        }
    }
}
