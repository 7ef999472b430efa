//! Running a job: claiming its slot, the attempts with retries and timeouts, the record of the run and the callbacks.

use super::queue::{Ticket, QUEUE_POLL};
use super::*;
use crate::db::lease::{LeaseError, LeaseGuard, LeaseSpec};
use crate::types::RunId;

/// Whether a run may start, as the job's lease says.
enum Start {
    Go(Option<LeaseGuard>),
    Held { holder: String, until: String },
}

impl Scheduler {
    /// Runs a job now (by hand). Refused while it runs, unless its overlap policy allows it.
    pub async fn run_now(&self, job: &str, context: Value) -> Result<Value, JobError> {
        let (running, policy) = {
            let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
            let j = jobs
                .get(job)
                .ok_or_else(|| JobError::Unknown(job.into(), String::new()))?;
            (j.running > 0, j.def.overlap)
        };
        if running && policy == OverlapPolicy::Skip {
            return Err(JobError::Running(job.into()));
        }
        let now = self.inner.clock.now();
        let id = crate::types::RunId::manual(job, now).into_string();
        let lease = match self.overlap_lease(job, policy, &id).await? {
            Start::Go(lease) => lease,
            Start::Held { holder, until } => {
                return Err(JobError::RunningElsewhere {
                    job: job.into(),
                    holder,
                    until,
                })
            }
        };
        self.execute(job, &id, None, context, lease, None).await
    }

    /// Who holds the job's run lease, on any runner or the CLI, if anyone does.
    pub async fn run_holder(
        &self,
        job: &str,
    ) -> Result<Option<crate::db::lease::Holder>, JobError> {
        self.status(job)?;
        self.lease_spec(job)
            .holder()
            .await
            .map_err(|source| JobError::Lease {
                job: job.into(),
                source,
            })
    }

    fn lease_spec(&self, job: &str) -> crate::db::lease::LeaseSpec {
        crate::db::lease::LeaseSpec {
            store: self.inner.store.clone(),
            key: format!("plugin=scheduler/leases/job={job}"),
            ttl: self.config().lease_ttl.as_std(),
            clock: self.inner.clock.clone(),
        }
    }

    /// The job's run lease as its overlap policy asks, shared by every runner and the CLI:
    /// `skip` takes it or gives up, `queue` waits for it, `replace` takes it from the holder
    /// (whose run is cancelled at its next renewal), `allow` needs none.
    async fn overlap_lease(
        &self,
        job: &str,
        policy: OverlapPolicy,
        run: &str,
    ) -> Result<Start, JobError> {
        let spec = self.lease_spec(job);
        let details = json!({ "run": run, "pid": std::process::id() });
        let store_error = |source| JobError::Lease {
            job: job.into(),
            source,
        };
        let holder = format!("run {run}");
        let taken = match policy {
            OverlapPolicy::Allow => return Ok(Start::Go(None)),
            OverlapPolicy::Queue => {
                return self.queued_lease(job, run, &spec, &holder, details).await
            }
            OverlapPolicy::Replace => spec.take_over(&holder, details).await,
            OverlapPolicy::Skip => spec.acquire(&holder, details).await,
        };
        match taken {
            Ok(guard) => Ok(Start::Go(Some(guard))),
            Err(LeaseError::Held { holder, until }) => Ok(Start::Held { holder, until }),
            Err(LeaseError::Store(e)) => Err(store_error(e)),
        }
    }

    /// `queue`: the lease at once when nobody waits; otherwise a ticket in the job's queue,
    /// and the lease when the ticket is at the head, so queued runs start in slot order
    /// across runners.
    async fn queued_lease(
        &self,
        job: &str,
        run: &str,
        spec: &LeaseSpec,
        holder: &str,
        details: Value,
    ) -> Result<Start, JobError> {
        let store_error = |source| JobError::Lease {
            job: job.into(),
            source,
        };
        let clock = self.inner.clock.clone();
        let waiting = Ticket::others_waiting(&spec.store, job, clock.as_ref())
            .await
            .map_err(store_error)?;
        if !waiting {
            match spec.acquire(holder, details.clone()).await {
                Ok(guard) => return Ok(Start::Go(Some(guard))),
                Err(LeaseError::Held { .. }) => {}
                Err(LeaseError::Store(e)) => return Err(store_error(e)),
            }
        }
        let at = RunId::split(run).map_or_else(|| clock.now(), |(_, t)| t);
        let ticket = Ticket::take(spec.store.clone(), job, at, run, spec.ttl, clock)
            .await
            .map_err(store_error)?;
        loop {
            tokio::select! {
                _ = self.inner.interrupted.cancelled() => {
                    ticket.leave().await;
                    return Ok(Start::Held { holder: "interrupted while queued".into(), until: String::new() });
                }
                _ = tokio::time::sleep(QUEUE_POLL) => {}
            }
            let turn = match ticket.at_head(run).await {
                Ok(false) => continue,
                Ok(true) => spec.acquire(holder, details.clone()).await,
                Err(e) => Err(LeaseError::Store(e)),
            };
            match turn {
                Ok(guard) => {
                    ticket.leave().await;
                    return Ok(Start::Go(Some(guard)));
                }
                Err(LeaseError::Held { .. }) => {}
                Err(LeaseError::Store(e)) => {
                    ticket.leave().await;
                    return Err(store_error(e));
                }
            }
        }
    }

    /// Claims a slot (create-only) and runs it. Ok(None) when another runner has the slot.
    pub async fn run_slot(
        &self,
        job: &str,
        slot: DateTime<Utc>,
    ) -> Result<Option<Value>, JobError> {
        let id = crate::types::RunId::slot(job, slot).into_string();
        self.to_sweep(job);
        let mut claimed = None;
        if let Some(history) = &self.inner.history {
            let claim = json!({ "job": job, "status": "running", "slot": text(slot), "date": text(slot), "startedAt": text(self.inner.clock.now()) });
            // Claim first: a runner that loses stops at its refused put.
            match history
                .claim(claim.as_object().cloned().unwrap_or_default(), &id)
                .await
            {
                Ok(record) => claimed = Some(record),
                Err(DbError::AlreadyExists { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let policy = self
            .inner
            .jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(job)
            .map_or(OverlapPolicy::Skip, |j| j.def.overlap);
        let lease = match self.overlap_lease(job, policy, &id).await {
            Ok(Start::Go(lease)) => lease,
            Ok(Start::Held { holder, until }) => {
                tracing::info!(job, slot = %text(slot), %holder, "slot skipped: the job is running elsewhere");
                self.record_skipped(job, &id, slot, &holder, &until).await;
                return Ok(None);
            }
            Err(e) => {
                // The claim stays `running` until the stale sweep; say why now.
                self.record_skipped(job, &id, slot, "unknown", &e.to_string())
                    .await;
                return Err(e);
            }
        };
        self.execute(job, &id, Some(slot), json!({}), lease, claimed)
            .await
            .map(Some)
    }

    /// Ends a claimed slot that did not run because the job ran elsewhere.
    async fn record_skipped(
        &self,
        job: &str,
        id: &str,
        slot: DateTime<Utc>,
        holder: &str,
        until: &str,
    ) {
        let Some(history) = &self.inner.history else {
            return;
        };
        self.to_prune(job);
        let now = text(self.inner.clock.now());
        let record = json!({
            "job": job, "status": "skipped", "slot": text(slot), "date": text(slot),
            "startedAt": now, "finishedAt": now, "durationMs": 0, "attempts": 0,
            "result": null, "error": format!("the previous run is still going ({holder}, until {until})"),
        });
        if let Err(e) = history
            .upsert(id, record.as_object().cloned().unwrap_or_default())
            .await
        {
            tracing::warn!(job, error = %e, "could not record a skipped slot");
        }
    }

    pub(super) async fn execute(
        &self,
        job: &str,
        id: &str,
        slot: Option<DateTime<Utc>>,
        context: Value,
        lease: Option<LeaseGuard>,
        claimed: Option<Record>,
    ) -> Result<Value, JobError> {
        let replaced = lease
            .as_ref()
            .map_or_else(CancellationToken::new, LeaseGuard::lost);
        let def = {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            let j = jobs
                .get_mut(job)
                .ok_or_else(|| JobError::Unknown(job.into(), String::new()))?;
            j.running += 1;
            j.def.clone()
        };
        let stop = self.inner.interrupted.child_token();
        let run_id = rand::random::<u64>();
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.into())
            .or_default()
            .push((run_id, stop.clone()));
        let started = self.inner.clock.now();
        let wall = std::time::Instant::now();
        self.emit(JobEvent::JobStart {
            job: job.into(),
            slot: slot.map(text),
        });
        self.callback(
            &self.config().on_job_start,
            job,
            slot,
            json!({ "event": "start" }),
        )
        .await;
        let policy = RetryPolicy::new(def.retries.unwrap_or(self.config().default_retries));
        let timeout = def
            .timeout
            .unwrap_or(self.config().default_timeout)
            .as_std();
        let mut attempt = 0;
        let (status, result, error) = loop {
            attempt += 1;
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout + ATTEMPT_GRACE, self.attempt(job, &def, Some(slot.unwrap_or(started)), attempt, &context, timeout)) => r,
                _ = stop.cancelled() => break ("interrupted", Value::Null, Some("the run was stopped".to_string())),
                _ = replaced.cancelled() => break ("interrupted", Value::Null, Some("replaced by a newer run (overlap: replace)".to_string())),
            };
            let (status, message) = match outcome {
                Ok(Ok(v)) => break ("success", v, None),
                Err(_) => ("timeout", format!("timed out after {timeout:?}")),
                Ok(Err(HookError::Timeout { after, .. })) => {
                    ("timeout", format!("timed out after {after:?}"))
                }
                Ok(Err(e)) => ("error", e.to_string()),
            };
            self.emit(JobEvent::JobError {
                job: job.into(),
                error: message.clone(),
                attempt,
            });
            if attempt >= policy.attempts() {
                tracing::error!(job, status, attempts = attempt, error = %message, "job run failed");
                break (status, Value::Null, Some(message));
            }
            let delay = policy.delay(attempt);
            tracing::warn!(job, status, attempt, of = policy.attempts(), retry_in_ms = delay.as_millis() as u64, error = %message, "job attempt failed; retrying");
            tokio::time::sleep(delay).await;
        };
        if let Some(lease) = lease {
            lease.release().await;
        }
        let duration_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
        let finished = self.inner.clock.now();
        let record = json!({
            "job": job, "status": status, "slot": slot.map(text), "date": text(started),
            "startedAt": text(started), "finishedAt": text(finished), "durationMs": duration_ms,
            "attempts": attempt, "result": result, "error": error,
        });
        if let Some(history) = &self.inner.history {
            self.to_prune(job);
            let data = record.as_object().cloned().unwrap_or_default();
            // The claim is ours alone: one write replaces it, without reading it again.
            let written = match (&claimed, slot) {
                (Some(claim), _) => match history.replace(claim, data.clone()).await {
                    Err(DbError::Conflict { .. }) => history.upsert(id, data).await,
                    other => other,
                },
                (None, Some(_)) => history.upsert(id, data).await,
                (None, None) => history.insert(data, Some(id)).await,
            };
            if let Err(e) = written {
                tracing::warn!(job, error = %e, "could not record the run in the job history");
            }
        }
        {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            if let Some(j) = jobs.get_mut(job) {
                j.running = j.running.saturating_sub(1);
            }
        }
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(job.into())
            .or_default()
            .retain(|(id, _)| *id != run_id);
        self.emit(JobEvent::JobFinished {
            job: job.into(),
            status: status.into(),
            duration_ms,
        });
        match status {
            "success" => {
                self.emit(JobEvent::JobComplete {
                    job: job.into(),
                    result: result.clone(),
                    duration_ms,
                });
                self.callback(&self.config().on_job_complete, job, slot, record.clone())
                    .await;
            }
            _ => {
                self.callback(&self.config().on_job_error, job, slot, record.clone())
                    .await
            }
        }
        Ok(record)
    }

    pub(super) async fn attempt(
        &self,
        job: &str,
        def: &JobDef,
        slot: Option<DateTime<Utc>>,
        attempt: u32,
        context: &Value,
        timeout: Duration,
    ) -> Result<Value, HookError> {
        let mut hook = self.inner.hooks.resolve(&def.action, BuiltinKind::Action)?;
        // A shell job without its own hook timeout gets the job's, so its process group goes too.
        if hook.def.run.is_some() && hook.def.timeout.is_none() {
            hook.def.timeout = Some(crate::types::Duration(timeout));
        }
        // The job's retries are the scheduler's; the hook's own are not stacked on top.
        hook.def.retries = Some(0);
        let mut input = HookInput::new(job, HookKind::Job);
        input.job = Some(job.into());
        input.scheduled_time = slot.map(text);
        input.attempt = attempt;
        input.context = context.clone();
        self.inner.hooks.action(&hook, &input).await
    }

    pub(super) async fn callback(
        &self,
        hook: &Option<HookRef>,
        job: &str,
        slot: Option<DateTime<Utc>>,
        stats: Value,
    ) {
        let Some(hook) = hook else { return };
        let resolved = match self.inner.hooks.resolve(hook, BuiltinKind::Action) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(job, error = %e, "scheduler callback is not defined");
                return;
            }
        };
        let mut input = HookInput::new(resolved.name.clone(), HookKind::Callback);
        input.job = Some(job.into());
        input.scheduled_time = slot.map(text);
        input.stats = Some(stats);
        if let Err(e) = self.inner.hooks.action(&resolved, &input).await {
            tracing::warn!(job, error = %e, "scheduler callback failed");
        }
    }
}
