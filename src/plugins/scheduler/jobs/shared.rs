//! Job state every runner shares through the database: whether a job is enabled, as the API
//! and `job enable|disable` last set it. One small object, written by compare-and-swap and
//! read by every runner when its ETag changes, so that the cost of following it does not grow
//! with the number of jobs or runs, and a restart keeps what was set.

use super::*;
use crate::store::{PutMode, PutOptions, StoreError};

/// The shared state's key in the database's store.
pub const STATE_KEY: &str = "plugin=scheduler/jobs.json";

impl Scheduler {
    /// Reads the shared state when it changed since the last read, and applies it. Costs one
    /// HEAD when nothing changed; an error means the store does not answer.
    pub async fn refresh_shared_state(&self) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let Some(meta) = store.head(STATE_KEY).await? else {
            return Ok(());
        };
        let seen = self
            .inner
            .shared_etag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if seen.as_ref() == Some(&meta.etag) {
            return Ok(());
        }
        let Some(object) = store.get(STATE_KEY).await? else {
            return Ok(());
        };
        self.apply_shared(&read_state(&object.body));
        *self
            .inner
            .shared_etag
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(object.meta.etag);
        Ok(())
    }

    fn apply_shared(&self, state: &Map<String, Value>) {
        let mut events = Vec::new();
        {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            for (name, j) in jobs.iter_mut() {
                let Some(enabled) = state
                    .get(name)
                    .and_then(|s| s.get("enabled"))
                    .and_then(Value::as_bool)
                else {
                    continue;
                };
                if j.enabled != enabled {
                    j.enabled = enabled;
                    events.push(if enabled {
                        JobEvent::JobEnabled { job: name.clone() }
                    } else {
                        JobEvent::JobDisabled { job: name.clone() }
                    });
                }
            }
        }
        if !events.is_empty() {
            self.inner.changed.notify_one();
        }
        for e in events {
            self.emit(e);
        }
    }

    /// Records `enabled` for `job` in the shared state, for every runner and across restarts.
    pub(super) async fn write_enabled(&self, job: &str, enabled: bool) -> Result<(), JobError> {
        let store = &self.inner.store;
        let fail = |source| JobError::Lease {
            job: job.into(),
            source,
        };
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let current = store.get(STATE_KEY).await.map_err(fail)?;
            let (mut state, mode) = match &current {
                Some(o) => (read_state(&o.body), PutMode::Update(o.meta.etag.clone())),
                None => (Map::new(), PutMode::Create),
            };
            state.insert(
                job.to_string(),
                json!({ "enabled": enabled, "at": text(self.inner.clock.now()) }),
            );
            let body = json!({ "jobs": state }).to_string();
            match store
                .put(STATE_KEY, body.into(), mode, &PutOptions::default())
                .await
            {
                Ok(etag) => {
                    self.apply_shared(&state);
                    *self
                        .inner
                        .shared_etag
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(etag);
                    return Ok(());
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(fail(e)),
            }
        }
        Err(fail(StoreError::PreconditionFailed {
            key: STATE_KEY.into(),
        }))
    }
}

fn read_state(body: &[u8]) -> Map<String, Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("jobs").and_then(Value::as_object).cloned())
        .unwrap_or_default()
}
