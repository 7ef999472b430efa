//! Running jobs: each slot of a job's schedule is claimed by a create-only write of its history
//! record (`job:slot`), so with several runners on one database every slot runs exactly once,
//! without a leader. A run retries with backoff, is cut off at its timeout, and is recorded
//! (success, error, timeout, interrupted) with its attempts, duration and result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::db::schema::StoredResource;
use crate::db::{Database, DbError, Record, Resource};
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{HookError, HookInput, HookKind, HookRunner};
use crate::manifest::model::{CatchUp, HookRef, JobDef, OverlapPolicy, SchedulerConfig};
use crate::types::retry::RetryPolicy;
use crate::types::Clock;
use crate::types::Schedule;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    JobStart {
        job: String,
        slot: Option<String>,
    },
    JobComplete {
        job: String,
        result: Value,
        duration_ms: u64,
    },
    JobError {
        job: String,
        error: String,
        attempt: u32,
    },
    /// Every run ends with one of these, whatever its status.
    JobFinished {
        job: String,
        status: String,
        duration_ms: u64,
    },
    JobEnabled {
        job: String,
    },
    JobDisabled {
        job: String,
    },
    JobAdded {
        job: String,
    },
    JobRemoved {
        job: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job `{0}` is not defined{1}")]
    Unknown(String, String),
    #[error("job `{0}` is already defined")]
    Exists(String),
    #[error("job `{0}` is running and its overlap policy is `skip`")]
    Running(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One job as the scheduler holds it.
struct JobState {
    def: JobDef,
    schedule: Schedule,
    tz: chrono_tz::Tz,
    enabled: bool,
    running: usize,
    /// The last computed next slot and the instant it was computed after: still the next slot
    /// for any later instant before it, so the run loop does not recompute 10,000 schedules at
    /// every fire.
    next: Mutex<Option<(DateTime<Utc>, DateTime<Utc>)>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    pub running: bool,
    pub next_run: Option<String>,
    pub description: Option<String>,
    pub overlap: OverlapPolicy,
    pub meta: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatistics {
    pub runs: usize,
    pub successes: usize,
    pub errors: usize,
    pub success_rate: f64,
    pub average_duration_ms: f64,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
}

struct Inner {
    jobs: RwLock<IndexMap<String, JobState>>,
    /// Replaced by a reload (`set_config`).
    config: RwLock<SchedulerConfig>,
    hooks: Arc<HookRunner>,
    history: Option<Resource>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<JobEvent>,
    /// Runs in flight in this process, by job, for overlap policies and shutdown.
    tasks: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
    /// Slot runs handed to a task and not yet finished, counted from before their slot is
    /// claimed: a run whose claim is still in flight is not yet in `tasks`, and a shutdown
    /// that missed it would leave its history record at `running` for good.
    in_flight: AtomicUsize,
    /// Cancelled by `interrupt_all`; every run's own token is a child of it, so a run whose
    /// claim completes after the interruption stops too.
    interrupted: CancellationToken,
    /// Where the next `sweep_stale` pass starts among the jobs.
    sweep_cursor: AtomicUsize,
    /// Wakes the run loop when jobs are added, removed, enabled or disabled (a reload), so it
    /// recomputes the next slot instead of sleeping toward a stale one.
    changed: tokio::sync::Notify,
}

/// The scheduler plugin. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// How many jobs one `sweep_stale` pass looks at.
const SWEEP_JOBS_PER_PASS: usize = 100;

/// How long past its timeout an attempt may take to end (a shell hook's process group gets a
/// grace period after SIGTERM) before the scheduler stops waiting for it.
const ATTEMPT_GRACE: Duration = Duration::from_secs(3);

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn job_state(def: &JobDef, config: &SchedulerConfig) -> JobState {
    JobState {
        tz: def.timezone.unwrap_or(config.timezone).0,
        enabled: def.enabled,
        running: 0,
        next: Mutex::new(None),
        schedule: def.schedule.clone(),
        def: def.clone(),
    }
}

impl Scheduler {
    pub async fn build(
        jobs: &IndexMap<String, JobDef>,
        config: &SchedulerConfig,
        db: &Database,
        hooks: Arc<HookRunner>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, JobError> {
        let history = if config.persist_jobs {
            let mut declared = IndexMap::new();
            let attrs = [
                ("job", "string|required"),
                ("status", "string|required"),
                ("date", "string|required"),
            ];
            declared.insert(
                config.job_history_resource.clone(),
                StoredResource {
                    attributes: attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    partitions: [
                        (
                            "byJob".to_string(),
                            [("job".to_string(), "string".to_string())]
                                .into_iter()
                                .collect(),
                        ),
                        (
                            "byDate".to_string(),
                            [("date".to_string(), "string|maxlength:10".to_string())]
                                .into_iter()
                                .collect(),
                        ),
                    ]
                    .into_iter()
                    .collect(),
                    timestamps: false,
                },
            );
            db.register(&declared).await?;
            Some(db.resource(&config.job_history_resource)?)
        } else {
            None
        };
        let mut states = IndexMap::new();
        for (name, def) in jobs {
            states.insert(name.clone(), job_state(def, config));
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: RwLock::new(states),
                config: RwLock::new(config.clone()),
                hooks,
                history,
                clock,
                events,
                tasks: Mutex::default(),
                in_flight: AtomicUsize::new(0),
                interrupted: CancellationToken::new(),
                sweep_cursor: AtomicUsize::new(0),
                changed: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, e: JobEvent) {
        let _ = self.inner.events.send(e);
    }

    fn unknown(&self, job: &str) -> JobError {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let hint = crate::types::suggest::did_you_mean(job, jobs.keys().map(String::as_str))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        JobError::Unknown(job.into(), hint)
    }

    /// The next slot of a job strictly after `after`.
    pub fn next_slot(&self, job: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let j = jobs.get(job)?;
        let mut cache = j.next.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((computed_after, next)) = *cache {
            if computed_after <= after && after < next {
                return Some(next);
            }
        }
        let next = j
            .schedule
            .next_after(&after.with_timezone(&j.tz), &j.tz)
            .map(|t| t.with_timezone(&Utc))?;
        *cache = Some((after, next));
        Some(next)
    }

    pub fn status(&self, job: &str) -> Result<JobStatus, JobError> {
        let now = self.inner.clock.now();
        let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
        let j = jobs
            .get(job)
            .ok_or_else(|| JobError::Unknown(job.into(), String::new()))?;
        Ok(JobStatus {
            name: job.into(),
            schedule: j.def.schedule.to_string(),
            timezone: j.tz.name().into(),
            enabled: j.enabled,
            running: j.running > 0,
            next_run: j
                .enabled
                .then(|| j.schedule.next_after(&now.with_timezone(&j.tz), &j.tz))
                .flatten()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            description: j.def.description.clone(),
            overlap: j.def.overlap,
            meta: j.def.meta.clone(),
        })
    }

    pub fn all_status(&self) -> Vec<JobStatus> {
        let names: Vec<String> = self
            .inner
            .jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.iter().filter_map(|n| self.status(n).ok()).collect()
    }

    pub fn config(&self) -> SchedulerConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reload's new settings (time zone, default timeout and retries, callbacks): every job's
    /// zone and schedule are recomputed; enabled flags and running executions are kept. The
    /// history settings (`persistJobs`, `jobHistoryResource`) are fixed at start.
    /// Takes a reloaded manifest's scheduler settings and jobs, all at once and without a way to
    /// fail (everything was checked with the manifest). A job that stays keeps what it is doing:
    /// its running executions (so `overlap: skip` still sees them and the API still reports
    /// them) and an enable or disable from the API, unless the manifest's own `enabled` changed.
    /// A job no longer declared is not scheduled again; its running execution finishes.
    pub fn reconcile(&self, config: &SchedulerConfig, declared: &IndexMap<String, JobDef>) {
        let mut events = Vec::new();
        {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            let same_config =
                *self.inner.config.read().unwrap_or_else(|e| e.into_inner()) == *config;
            let mut rebuilt = IndexMap::with_capacity(declared.len());
            for (name, def) in declared {
                let state = match jobs.shift_remove(name) {
                    Some(old) if same_config && old.def == *def => old,
                    Some(old) => {
                        let mut state = job_state(def, config);
                        state.running = old.running;
                        state.enabled = if old.def.enabled == def.enabled {
                            old.enabled
                        } else {
                            def.enabled
                        };
                        state
                    }
                    None => {
                        events.push(JobEvent::JobAdded { job: name.clone() });
                        job_state(def, config)
                    }
                };
                rebuilt.insert(name.clone(), state);
            }
            events.extend(
                jobs.keys()
                    .map(|name| JobEvent::JobRemoved { job: name.clone() }),
            );
            *jobs = rebuilt;
            *self.inner.config.write().unwrap_or_else(|e| e.into_inner()) = config.clone();
        }
        for event in events {
            self.emit(event);
        }
        self.inner.changed.notify_one();
    }

    pub fn enable(&self, job: &str) -> Result<(), JobError> {
        self.set_enabled(job, true)
    }

    pub fn disable(&self, job: &str) -> Result<(), JobError> {
        self.set_enabled(job, false)
    }

    fn set_enabled(&self, job: &str, enabled: bool) -> Result<(), JobError> {
        {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            let j = jobs
                .get_mut(job)
                .ok_or_else(|| JobError::Unknown(job.into(), String::new()))?;
            j.enabled = enabled;
            self.inner.changed.notify_one();
        }
        self.emit(if enabled {
            JobEvent::JobEnabled { job: job.into() }
        } else {
            JobEvent::JobDisabled { job: job.into() }
        });
        Ok(())
    }

    pub fn add(&self, job: &str, def: JobDef) -> Result<(), JobError> {
        let state = job_state(&def, &self.config());
        {
            let mut jobs = self.inner.jobs.write().unwrap_or_else(|e| e.into_inner());
            if jobs.contains_key(job) {
                return Err(JobError::Exists(job.into()));
            }
            jobs.insert(job.into(), state);
        }
        self.emit(JobEvent::JobAdded { job: job.into() });
        self.inner.changed.notify_one();
        Ok(())
    }

    /// Removes a job; a run in flight finishes, and the job is not scheduled again.
    pub fn remove(&self, job: &str) -> Result<(), JobError> {
        let removed = self
            .inner
            .jobs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .shift_remove(job);
        if removed.is_none() {
            return Err(self.unknown(job));
        }
        self.emit(JobEvent::JobRemoved { job: job.into() });
        self.inner.changed.notify_one();
        Ok(())
    }

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
        let id = format!("{job}:manual-{}-{:08x}", text(now), rand::random::<u32>());
        self.execute(job, &id, None, context).await
    }

    /// Claims a slot (create-only) and runs it. Ok(None) when another runner has the slot.
    pub async fn run_slot(
        &self,
        job: &str,
        slot: DateTime<Utc>,
    ) -> Result<Option<Value>, JobError> {
        let id = format!("{job}:{}", text(slot));
        if let Some(history) = &self.inner.history {
            let claim = json!({ "job": job, "status": "running", "slot": text(slot), "date": text(slot), "startedAt": text(self.inner.clock.now()) });
            match history
                .insert(claim.as_object().cloned().unwrap_or_default(), Some(&id))
                .await
            {
                Ok(_) => {}
                Err(DbError::AlreadyExists { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        self.execute(job, &id, Some(slot), json!({}))
            .await
            .map(Some)
    }

    async fn execute(
        &self,
        job: &str,
        id: &str,
        slot: Option<DateTime<Utc>>,
        context: Value,
    ) -> Result<Value, JobError> {
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
                r = tokio::time::timeout(timeout + ATTEMPT_GRACE, self.attempt(job, &def, slot, attempt, &context, timeout)) => r,
                _ = stop.cancelled() => break ("interrupted", Value::Null, Some("the run was stopped".to_string())),
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
                break (status, Value::Null, Some(message));
            }
            tokio::time::sleep(policy.delay(attempt)).await;
        };
        let duration_ms = u64::try_from(wall.elapsed().as_millis()).unwrap_or(u64::MAX);
        let finished = self.inner.clock.now();
        let record = json!({
            "job": job, "status": status, "slot": slot.map(text), "date": text(started),
            "startedAt": text(started), "finishedAt": text(finished), "durationMs": duration_ms,
            "attempts": attempt, "result": result, "error": error,
        });
        if let Some(history) = &self.inner.history {
            let data = record.as_object().cloned().unwrap_or_default();
            let written = match slot {
                Some(_) => history.upsert(id, data).await,
                None => history.insert(data, Some(id)).await,
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

    async fn attempt(
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

    async fn callback(
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

    /// Runs of a job, newest first, optionally only those with a status.
    ///
    /// Run ids carry their time (`JOB:SLOT`, `JOB:manual-TIME-…`), so one listing of the ids
    /// orders them and only the records returned (plus, with a status, those passed over) are
    /// read: the latest run of a job with a year of per-minute history is a LIST and a GET,
    /// not half a million GETs.
    pub async fn history(
        &self,
        job: &str,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, JobError> {
        Ok(self
            .runs(job, status, limit)
            .await?
            .iter()
            .map(Record::to_json)
            .collect())
    }

    async fn runs(
        &self,
        job: &str,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Record>, JobError> {
        let Some(history) = &self.inner.history else {
            return Ok(Vec::new());
        };
        let prefix = format!("{job}:");
        let mut ids: Vec<(DateTime<Utc>, String)> = history
            .ids_with_prefix(&prefix)
            .await?
            .into_iter()
            .filter_map(|id| run_time(id.get(prefix.len()..)?).map(|t| (t, id)))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        // Read in batches no larger than what is still wanted (at least a few when filtering,
        // since some will be passed over), so a limit of 1 reads one record.
        let mut next = ids.into_iter().map(|(_, id)| id).peekable();
        while out.len() < limit && next.peek().is_some() {
            let want = limit - out.len();
            let batch: Vec<String> = next
                .by_ref()
                .take(if status.is_some() { want.max(32) } else { want }.min(256))
                .collect();
            for record in history.get_many(&batch).await? {
                let field = |f: &str| record.data.get(f).and_then(Value::as_str);
                // A job named `a:b` shares the id prefix `a:` with job `a`.
                if field("job") != Some(job) || status.is_some_and(|s| field("status") != Some(s)) {
                    continue;
                }
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Marks as `interrupted` the recent runs still recorded as `running` that cannot be: they
    /// started longer ago than the job's timeouts, retries and backoff allow, so the runner
    /// that ran them stopped without recording them (killed, or its machine lost). Only the
    /// newest few runs of each job are read, of at most 100 jobs a pass (the next pass goes on
    /// from there); a run another runner finishes meanwhile is left alone (the update is
    /// conditional). Returns how many were marked.
    pub async fn sweep_stale(&self) -> usize {
        let now = self.inner.clock.now();
        let jobs: Vec<(String, JobDef)> = {
            let all = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
            // A pass costs a LIST and a few GETs per job, so a manifest of thousands of jobs
            // is swept a window at a time, the window moving on with each pass.
            let start = self
                .inner
                .sweep_cursor
                .fetch_add(SWEEP_JOBS_PER_PASS, Ordering::Relaxed);
            all.iter()
                .cycle()
                .skip(if all.is_empty() { 0 } else { start % all.len() })
                .take(all.len().min(SWEEP_JOBS_PER_PASS))
                .map(|(n, j)| (n.clone(), j.def.clone()))
                .collect()
        };
        let Some(history) = &self.inner.history else {
            return 0;
        };
        let mut marked = 0;
        for (job, def) in jobs {
            let runs = match self.runs(&job, None, Some(3)).await {
                Ok(runs) => runs,
                Err(e) => {
                    tracing::warn!(job, error = %e, "could not read the job history to sweep it");
                    continue;
                }
            };
            let longest =
                chrono::Duration::from_std(self.longest_run(&def)).unwrap_or(chrono::Duration::MAX);
            for run in runs {
                let field = |f: &str| run.data.get(f).and_then(Value::as_str);
                let Some(started) = field("startedAt")
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                else {
                    continue;
                };
                if field("status") != Some("running") || now - started <= longest {
                    continue;
                }
                let patch = json!({
                    "status": "interrupted",
                    "error": "the runner stopped during the run without recording its end",
                });
                let patch = patch.as_object().cloned().unwrap_or_default();
                match history.update(&run.id, &patch, Some(&run.etag)).await {
                    Ok(_) => {
                        tracing::warn!(job, run = %run.id, "a run left at `running` by a stopped runner is now `interrupted`");
                        marked += 1;
                    }
                    Err(DbError::Conflict { .. }) => {}
                    Err(e) => {
                        tracing::warn!(job, run = %run.id, error = %e, "could not mark a stale run")
                    }
                }
            }
        }
        marked
    }

    /// Applies `historyRetention`: of each job's runs (jobs removed from the manifest included),
    /// keeps the newest, those within `maxRuns` and `maxAge`, and any still `running`; deletes
    /// the rest. One listing of the history finds them; a run is read only to be deleted.
    /// Returns how many were deleted.
    pub async fn prune_history(&self) -> usize {
        let (Some(retention), Some(history)) =
            (self.config().history_retention, &self.inner.history)
        else {
            return 0;
        };
        let ids = match history.ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the job history to prune it");
                return 0;
            }
        };
        let mut by_job: HashMap<&str, Vec<(DateTime<Utc>, &str)>> = HashMap::new();
        for id in &ids {
            if let Some((job, time)) = split_run_id(id) {
                by_job.entry(job).or_default().push((time, id.as_str()));
            }
        }
        let oldest = retention.max_age.and_then(|age| {
            chrono::Duration::from_std(age.as_std())
                .ok()
                .map(|age| self.inner.clock.now() - age)
        });
        let keep = retention
            .max_runs
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .max(1);
        let mut doomed = Vec::new();
        for runs in by_job.values_mut() {
            runs.sort_by(|a, b| b.cmp(a));
            for (i, (time, id)) in runs.iter().enumerate().skip(1) {
                if i >= keep || oldest.is_some_and(|o| *time < o) {
                    doomed.push(id.to_string());
                }
            }
        }
        let deleted: usize = futures::stream::iter(doomed.into_iter().map(|id| async move {
            // Read first: a run still going is kept, and one that changes meanwhile stays.
            let run = history.get(&id).await.ok().flatten()?;
            if run.data.get("status").and_then(Value::as_str) == Some("running") {
                return None;
            }
            history
                .delete(&id, Some(&run.etag))
                .await
                .ok()
                .filter(|d| *d)
        }))
        .buffer_unordered(8)
        .filter_map(|d| async move { d })
        .count()
        .await;
        if deleted > 0 {
            tracing::info!(deleted, "pruned the job history (historyRetention)");
        }
        deleted
    }

    /// The longest a run of this job can take: every attempt to its timeout (and the grace the
    /// timeout allows), the longest backoff between them, and a margin for callbacks.
    fn longest_run(&self, def: &JobDef) -> Duration {
        let config = self.config();
        let policy = RetryPolicy::new(def.retries.unwrap_or(config.default_retries));
        let attempt = def.timeout.unwrap_or(config.default_timeout).as_std() + ATTEMPT_GRACE;
        policy.longest(attempt) + Duration::from_secs(300)
    }

    pub async fn statistics(&self, job: &str) -> Result<JobStatistics, JobError> {
        let runs: Vec<Map<String, Value>> = self
            .history(job, None, None)
            .await?
            .into_iter()
            .filter_map(|v| v.as_object().cloned())
            .filter(|r| r.get("status").and_then(Value::as_str) != Some("running"))
            .collect();
        let status_of = |r: &Map<String, Value>| {
            r.get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let successes = runs.iter().filter(|r| status_of(r) == "success").count();
        let durations: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get("durationMs").and_then(Value::as_f64))
            .collect();
        let last = |want_success: bool| {
            runs.iter()
                .find(|r| (status_of(r) == "success") == want_success)
                .and_then(|r| {
                    r.get("finishedAt")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        };
        Ok(JobStatistics {
            runs: runs.len(),
            successes,
            errors: runs.len() - successes,
            success_rate: if runs.is_empty() {
                0.0
            } else {
                successes as f64 / runs.len() as f64
            },
            average_duration_ms: if durations.is_empty() {
                0.0
            } else {
                durations.iter().sum::<f64>() / durations.len() as f64
            },
            last_success: last(true),
            last_error: last(false),
        })
    }

    /// The slot catch-up runs at start: the latest slot before `now`, if a job's `catchUp` is
    /// `latest` and the slot is within its starting deadline (default: one schedule interval).
    pub fn missed_slot(
        &self,
        job: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let (catch_up, deadline) = {
            let jobs = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
            let j = jobs.get(job)?;
            (j.def.catch_up, j.def.starting_deadline)
        };
        if catch_up == CatchUp::None {
            return None;
        }
        let mut latest = None;
        let mut t = since;
        while let Some(next) = self.next_slot(job, t).filter(|n| *n <= now) {
            latest = Some(next);
            t = next;
        }
        let slot = latest?;
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

/// A run id's job and time. Job names may hold `:` and so may times: the job is the shortest
/// prefix whose remainder is a run time.
fn split_run_id(id: &str) -> Option<(&str, DateTime<Utc>)> {
    id.match_indices(':')
        .find_map(|(i, _)| run_time(&id[i + 1..]).map(|t| (&id[..i], t)))
}

/// The time in a run id after its `JOB:` prefix: the slot, or a manual run's start.
fn run_time(rest: &str) -> Option<DateTime<Utc>> {
    let time = match rest.strip_prefix("manual-") {
        Some(manual) => manual.get(..24)?,
        None => rest,
    };
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Holds a slot run in the scheduler's in-flight count (see [`Scheduler::busy`]).
pub struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A job's stable delay within its `jitter`: the same for every slot and every runner, so the
/// job keeps a steady rhythm while different jobs spread out.
pub fn jitter_for(job: &str, jitter: Option<crate::types::Duration>) -> Duration {
    let Some(max) = jitter.map(|j| j.as_millis()).filter(|m| *m > 0) else {
        return Duration::ZERO;
    };
    let mut h: u64 = 0xcbf29ce484222325;
    for b in job.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    Duration::from_millis(h % max)
}
