//! The run loop: the next slot of every enabled job, catch-up of missed slots at start, and what shutdown waits for.

use super::*;

impl Scheduler {
    /// The slot catch-up runs at start: the latest slot before `now`, if a job's `catchUp` is
    /// `latest` and the slot is within its starting deadline (default: one schedule interval).
    pub fn missed_slot(
        &self,
        job: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let (catch_up, deadline, schedule, tz) = {
            let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
            let j = jobs.get(job)?;
            (
                j.def.catch_up,
                j.def.starting_deadline,
                j.schedule.clone(),
                j.tz,
            )
        };
        if catch_up == CatchUp::None {
            return None;
        }
        let slot = schedule
            .latest_at_or_before(&now.with_timezone(&tz), &tz)?
            .with_timezone(&Utc);
        if slot < since {
            return None;
        }
        let window = match deadline {
            Some(d) => chrono::Duration::from_std(d.as_std()).ok()?,
            None => self.next_slot(job, slot)? - slot,
        };
        (now - slot <= window).then_some(slot)
    }

    /// Fires every enabled job at each of its slots until `stop`; each slot is claimed first,
    /// so several runners share the work without running a slot twice.
    pub async fn run(&self, stop: CancellationToken) {
        let clock = self.inner.clock.clone();
        let mut after = clock.now();
        loop {
            let due = {
                let names: Vec<String> = self
                    .inner
                    .jobs
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .filter(|(_, j)| j.enabled)
                    .map(|(n, _)| n.clone())
                    .collect();
                names
                    .into_iter()
                    .filter_map(|n| self.next_slot(&n, after).map(|t| (t, n)))
                    .min()
            };
            let Some((slot, _)) = due else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.inner.changed.notified() => { after = clock.now(); continue; }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => { after = clock.now(); continue; }
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.changed.notified() => continue,
                _ = clock.sleep_until(slot) => {}
            }
            let names: Vec<(String, OverlapPolicy, bool, Duration)> = self
                .inner
                .jobs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, j)| j.enabled)
                .map(|(n, j)| {
                    (
                        n.clone(),
                        j.def.overlap,
                        j.running > 0,
                        jitter_for(n, j.def.jitter),
                    )
                })
                .collect();
            for (name, overlap, running, jitter) in names {
                if self.next_slot(&name, after) != Some(slot) {
                    continue;
                }
                match (overlap, running) {
                    (OverlapPolicy::Skip, true) => {
                        tracing::info!(job = %name, "slot skipped: the previous run is still going");
                        continue;
                    }
                    (OverlapPolicy::Replace, true) => {
                        for (_, t) in self
                            .inner
                            .tasks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&name)
                            .into_iter()
                            .flatten()
                        {
                            t.cancel();
                        }
                    }
                    _ => {}
                }
                let this = self.clone();
                let queue = overlap == OverlapPolicy::Queue && running;
                // Taken before the task exists, so a shutdown right after this sees it.
                let in_flight = self.in_flight();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    let wait = async {
                        if !jitter.is_zero() {
                            tokio::time::sleep(jitter).await;
                        }
                        if queue {
                            while this.status(&name).is_ok_and(|s| s.running) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    };
                    // A slot still waiting for its jitter or its queue has not started, and a
                    // shutdown takes no new work. Biased: a slot with nothing to wait for runs
                    // even if the stop came with it.
                    tokio::select! {
                        biased;
                        _ = wait => {}
                        _ = stop.cancelled() => return,
                    }
                    if let Err(e) = this.run_slot(&name, slot).await {
                        tracing::warn!(job = %name, error = %e, "job run failed");
                    }
                });
            }
            after = slot;
        }
    }

    /// Counts a slot run as in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.inner.clone())
    }

    /// Whether any run is in flight: waiting to start, claiming its slot, or running.
    pub fn busy(&self) -> bool {
        self.inner.in_flight.load(Ordering::SeqCst) > 0
            || self.all_status().iter().any(|s| s.running)
    }

    /// Stops every run in flight, and any whose claim is still under way; their history
    /// records say `interrupted`.
    pub fn interrupt_all(&self) {
        self.inner.interrupted.cancel();
        for tokens in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            for (_, t) in tokens {
                t.cancel();
            }
        }
    }
}
