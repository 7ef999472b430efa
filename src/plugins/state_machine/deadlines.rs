//! `after` deadlines: tracked in memory, and written to an index in the store keyed by due
//! time (`plugin=stateMachine/deadlines/DUE/MACHINE/ENTITY/SEQ`, an empty object each), so every
//! runner finds what is due by listing the head of the index: its idle cost is one LIST per
//! poll, whatever the number of entities, and final states cost nothing. Firing is a
//! compare-and-swap on the entity, so a deadline fires once whichever runners see it; the index
//! entry is deleted once fired or stale. A database whose deadlines predate the index is
//! scanned once, at the first start, and indexed.

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

use super::*;
use crate::store::{PutMode, PutOptions};
use bytes::Bytes;

const INDEX_PREFIX: &str = "plugin=stateMachine/deadlines/";

/// Present once every entity's pending deadline is in the index (written after the one full
/// scan of a database that predates the index).
const INDEXED_MARKER: &str = "plugin=stateMachine/deadlines-indexed.json";

/// How far ahead of now the index is read, so a deadline due just after a poll is not late by
/// a whole poll.
const LOOKAHEAD: Duration = Duration::from_secs(2);

fn index_key(at: &str, machine: &str, entity: &str, seq: u64) -> String {
    format!(
        "{INDEX_PREFIX}{at}/{}/{}/{seq}",
        utf8_percent_encode(machine, NON_ALPHANUMERIC),
        utf8_percent_encode(entity, NON_ALPHANUMERIC)
    )
}

/// (due, machine, entity, seq) of an index key.
fn parse_index_key(key: &str) -> Option<(String, String, String, u64)> {
    let rest = key.strip_prefix(INDEX_PREFIX)?;
    let mut parts = rest.split('/');
    let at = parts.next()?.to_string();
    let machine = percent_decode_str(parts.next()?)
        .decode_utf8()
        .ok()?
        .into_owned();
    let entity = percent_decode_str(parts.next()?)
        .decode_utf8()
        .ok()?
        .into_owned();
    let seq = parts.next()?.parse().ok()?;
    Some((at, machine, entity, seq))
}

pub(super) fn deadline_due(d: &Deadline, now: DateTime<Utc>) -> bool {
    DateTime::parse_from_rfc3339(&d.at)
        .map(|t| t.with_timezone(&Utc) <= now)
        .unwrap_or(false)
}

impl StateMachines {
    pub(super) fn track_deadline(&self, machine: &str, entity: &str, d: &Deadline) {
        self.inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (d.at.clone(), machine.to_string(), entity.to_string()),
                d.seq,
            );
        self.inner.deadline_added.notify_one();
    }

    /// Loads every pending deadline from the entities themselves, and indexes it: for a
    /// database whose deadlines were set before the index existed. Reads every entity, so it
    /// runs once per database (`INDEXED_MARKER` records that it did).
    pub async fn scan_deadlines(&self) -> Result<usize, MachineError> {
        let mut n = 0;
        for machine in self.machine_names() {
            let ids = self
                .inner
                .states
                .ids_with_prefix(&format!("{machine}:"))
                .await?;
            for rec in self.inner.states.get_many(&ids).await? {
                let Ok(rec) = EntityRecord::parse(rec) else {
                    continue;
                };
                if let Some(d) = rec.deadline.as_ref().filter(|d| d.seq == rec.seq) {
                    self.set_deadline(&machine, rec.text("entity"), d).await;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Tracks a deadline this process set, and writes it to the index for the other runners
    /// (and for this one after a restart).
    pub(super) async fn set_deadline(&self, machine: &str, entity: &str, d: &Deadline) {
        self.track_deadline(machine, entity, d);
        let key = index_key(&d.at, machine, entity, d.seq);
        if let Err(e) = self
            .inner
            .store
            .put(
                &key,
                Bytes::new(),
                PutMode::Overwrite,
                &PutOptions::default(),
            )
            .await
        {
            tracing::warn!(machine, entity, error = %e, "could not index a deadline: only this runner will fire it, and not after a restart");
        }
    }

    /// Removes the index entry of the deadline an entity had in the state it just left, so
    /// that no runner reads it later to find it stale (one delete now instead of a read and a
    /// delete by every runner then).
    pub(super) async fn left_deadline(&self, rec: &EntityRecord) {
        let Some(d) = rec.deadline.as_ref().filter(|d| d.seq == rec.seq) else {
            return;
        };
        let entity = rec.text("entity");
        let machine = rec.text("machine");
        let key = index_key(&d.at, machine, entity, d.seq);
        if let Err(e) = self.inner.store.delete(&key, None).await {
            tracing::debug!(machine, entity, error = %e, "could not remove a deadline's index entry (the next poll finds it stale)");
        }
    }

    /// Tracks the index entries due by `now + LOOKAHEAD`. Reads only the head of the index:
    /// entries are listed in due order, so the first one past the horizon ends the read.
    pub async fn poll_deadline_index(&self) -> Result<usize, MachineError> {
        let horizon = crate::types::time::rfc3339(
            self.inner.clock.now() + chrono::Duration::from_std(LOOKAHEAD).unwrap_or_default(),
        );
        let mut token: Option<String> = None;
        let mut n = 0;
        loop {
            let page = self
                .inner
                .store
                .list(INDEX_PREFIX, token.as_deref(), 100)
                .await
                .map_err(DbError::from)?;
            for object in &page.objects {
                let Some((at, machine, entity, seq)) = parse_index_key(&object.key) else {
                    continue;
                };
                if at > horizon {
                    return Ok(n);
                }
                let d = Deadline {
                    at,
                    target: String::new(),
                    after: String::new(),
                    seq,
                };
                self.track_deadline(&machine, &entity, &d);
                n += 1;
            }
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(n),
            }
        }
    }

    /// Whether the entity still waits for its deadline `seq` (and tracks it again if so).
    async fn still_pending(&self, machine: &str, entity: &str, seq: u64) -> bool {
        let Ok(rec) = self.read(machine, entity).await else {
            return false;
        };
        match rec.deadline.filter(|d| d.seq == rec.seq && rec.seq == seq) {
            Some(d) => {
                self.track_deadline(machine, entity, &d);
                true
            }
            None => false,
        }
    }

    /// Fires `after` transitions when they are due, until `stop` is cancelled. Deadlines set by
    /// this process are picked up at once, those of other processes at the next `poll` of the
    /// index.
    pub async fn run_deadlines(&self, stop: CancellationToken, poll: Duration) {
        match self.inner.store.head(INDEXED_MARKER).await {
            Ok(Some(_)) => {}
            Ok(None) => match self.scan_deadlines().await {
                Ok(n) => {
                    tracing::info!(
                        deadlines = n,
                        "indexed the pending deadlines of every entity"
                    );
                    let marked = self
                        .inner
                        .store
                        .put(
                            INDEXED_MARKER,
                            Bytes::from_static(b"{}"),
                            PutMode::Overwrite,
                            &PutOptions::default(),
                        )
                        .await;
                    if let Err(e) = marked {
                        tracing::warn!(error = %e, "could not record that the deadlines are indexed (the next start scans again)");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scanning state machine deadlines failed"),
            },
            Err(e) => tracing::warn!(error = %e, "could not read the deadline index marker"),
        }
        let mut next_poll = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_poll {
                if let Err(e) = self.poll_deadline_index().await {
                    tracing::warn!(error = %e, "reading the deadline index failed");
                }
                next_poll = tokio::time::Instant::now() + poll;
            }
            let due = self.take_due();
            for (at, machine, entity, seq) in due {
                match self.fire_deadline(&machine, &entity, seq).await {
                    // Not due by this runner's clock (another runner's clock is ahead): keep
                    // the entry, and come back when it is due here.
                    Ok(None) if self.still_pending(&machine, &entity, seq).await => {}
                    // Fired here or elsewhere, or stale: the index entry has done its work.
                    Ok(_) => {
                        let key = index_key(&at, &machine, &entity, seq);
                        if let Err(e) = self.inner.store.delete(&key, None).await {
                            tracing::debug!(machine, entity, error = %e, "could not remove a deadline's index entry");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(machine, entity, error = %e, "delayed transition failed")
                    }
                }
            }
            let wait = self
                .next_deadline_in()
                .unwrap_or(poll)
                .min(next_poll.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.deadline_added.notified() => {}
            }
        }
    }

    pub(super) fn take_due(&self) -> Vec<(String, String, String, u64)> {
        let now = crate::types::time::rfc3339(self.inner.clock.now());
        let mut deadlines = self
            .inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due: Vec<_> = deadlines
            .range(..(now.clone(), String::new(), String::new()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        due.into_iter()
            .map(|(k, seq)| {
                deadlines.remove(&k);
                (k.0, k.1, k.2, seq)
            })
            .collect()
    }

    pub(super) fn next_deadline_in(&self) -> Option<Duration> {
        let deadlines = self
            .inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (at, _, _) = deadlines.keys().next()?;
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some(
            (at - self.inner.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Applies a due `after` transition, unless the entity has left the state since.
    pub async fn fire_deadline(
        &self,
        machine: &str,
        entity: &str,
        seq: u64,
    ) -> Result<Option<TransitionResult>, MachineError> {
        let mut attempts = crate::types::cas::Attempts::new();
        while attempts.next().await {
            let def = self.definition(machine)?;
            let rec = self.read(machine, entity).await?;
            let Some(d) = rec.deadline.clone().filter(|d| {
                d.seq == rec.seq && rec.seq == seq && deadline_due(d, self.inner.clock.now())
            }) else {
                return Ok(None);
            };
            match self
                .commit(
                    &def,
                    &rec,
                    &d.target,
                    &format!("after({})", d.after),
                    &Value::Null,
                    None,
                )
                .await?
            {
                Commit::Done(r) => return Ok(Some(*r)),
                Commit::Lost => continue,
            }
        }
        Err(MachineError::Contention {
            machine: machine.into(),
            entity: entity.into(),
        })
    }
}
