//! `after` deadlines: tracked in memory, found again by a scan at start and every so often, fired when due.

use super::*;

pub(super) fn deadline_due(d: &Deadline) -> bool {
    DateTime::parse_from_rfc3339(&d.at)
        .map(|t| t.with_timezone(&Utc) <= Utc::now())
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

    /// Loads every pending deadline from the database (after a restart, or set by other runners).
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
                if let Some(d) = rec.deadline.filter(|d| d.seq == rec.seq) {
                    let entity = rec
                        .record
                        .data
                        .get("entity")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    self.track_deadline(&machine, &entity, &d);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Fires `after` transitions when they are due, until `stop` is cancelled. Deadlines set by
    /// this process are picked up at once, those of other runners at each rescan.
    pub async fn run_deadlines(&self, stop: CancellationToken, rescan: Duration) {
        let mut next_scan = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_scan {
                if let Err(e) = self.scan_deadlines().await {
                    tracing::warn!(error = %e, "scanning state machine deadlines failed");
                }
                next_scan = tokio::time::Instant::now() + rescan;
            }
            let due = self.take_due();
            for (machine, entity, seq) in due {
                if let Err(e) = self.fire_deadline(&machine, &entity, seq).await {
                    tracing::warn!(machine, entity, error = %e, "delayed transition failed");
                }
            }
            let wait = self
                .next_deadline_in()
                .unwrap_or(rescan)
                .min(next_scan.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.deadline_added.notified() => {}
            }
        }
    }

    pub(super) fn take_due(&self) -> Vec<(String, String, u64)> {
        let now = now_text();
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
                (k.1, k.2, seq)
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
        Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
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
            let Some(d) = rec
                .deadline
                .clone()
                .filter(|d| d.seq == rec.seq && rec.seq == seq && deadline_due(d))
            else {
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
