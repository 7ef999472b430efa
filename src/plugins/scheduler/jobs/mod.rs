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
use crate::db::{DbError, Record, Resource};
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{HookError, HookInput, HookKind, HookRunner};
use crate::manifest::model::{CatchUp, HookRef, JobDef, OverlapPolicy, SchedulerConfig};
use crate::types::retry::RetryPolicy;
use crate::types::Clock;
use crate::types::Schedule;

mod execution;
mod history;
mod queue;
mod run_loop;
mod shared;

pub use shared::STATE_KEY;
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
    #[error(
        "job `{job}` is running ({holder}, lease until {until}) and its overlap policy is `skip`"
    )]
    RunningElsewhere {
        job: String,
        holder: String,
        until: String,
    },
    #[error("job `{job}`: its run lease: {source}")]
    Lease {
        job: String,
        source: crate::store::StoreError,
    },
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

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
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
    /// Where the jobs' run leases and shared state live (the database's store).
    store: crate::store::DynStore,
    /// The shared state's version last applied (`shared.rs`).
    shared_etag: Mutex<Option<crate::store::ETag>>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<JobEvent>,
    /// Runs in flight in this process, by job, for overlap policies and shutdown.
    tasks: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
    /// Slot runs handed to a task and not yet finished, counted from before their slot is
    /// claimed: a run whose claim is still in flight is not yet in `tasks`, and a shutdown
    /// that missed it would leave its history record at `running` for good.
    in_flight: AtomicUsize,
    /// A child of the build context's shutdown token, also cancelled by `interrupt_all`; every
    /// run's own token is a child of it, so a run whose
    /// claim completes after the interruption stops too.
    interrupted: CancellationToken,
    /// What the next history upkeep pass looks at, so that an idle runner reads nothing.
    upkeep: Mutex<Upkeep>,
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

/// The jobs the history upkeep has to look at. At start every job is swept and the whole
/// history pruned (a runner killed before this one started may have left runs at `running`);
/// afterwards only the jobs whose slots came due here (their runs, or another runner's, may be
/// left at `running`) and whose runs this runner recorded (their history grew).
#[derive(Debug, Default)]
struct Upkeep {
    sweep: std::collections::BTreeSet<String>,
    /// None: the whole history (the first pass).
    prune: Option<std::collections::BTreeSet<String>>,
}

/// How long past its timeout an attempt may take to end (a shell hook's process group gets a
/// grace period after SIGTERM) before the scheduler stops waiting for it.
const ATTEMPT_GRACE: Duration = Duration::from_secs(3);

fn text(t: DateTime<Utc>) -> String {
    crate::types::time::rfc3339(t)
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

/// Registers the history resource and reads the shared job state; slots fall due by the
/// context's clock, and runs are interrupted when the context shuts down.
impl crate::plugins::Component for Scheduler {
    type Config<'a> = (&'a IndexMap<String, JobDef>, &'a SchedulerConfig);
    type Error = JobError;

    /// The scheduler always runs: the API and the CLI start jobs through it, even with none.
    fn section(m: &crate::manifest::model::Manifest) -> Option<Self::Config<'_>> {
        Some((&m.jobs, &m.scheduler))
    }

    fn build<'a>(
        (jobs, config): Self::Config<'a>,
        ctx: &'a crate::plugins::BuildContext,
    ) -> impl std::future::Future<Output = Result<Self, JobError>> + Send + 'a {
        Self::build_new(jobs, config, ctx)
    }
}

impl Scheduler {
    async fn build_new(
        jobs: &IndexMap<String, JobDef>,
        config: &SchedulerConfig,
        ctx: &crate::plugins::BuildContext,
    ) -> Result<Self, JobError> {
        let (db, hooks, clock) = (&ctx.db, ctx.hooks.clone(), ctx.clock.clone());
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
                    // No `byJob` partition: run ids begin with `JOB:`, so listing the ids is
                    // already the index by job, and a reference per slot would be one more
                    // write on every run.
                    partitions: [(
                        "byDate".to_string(),
                        [("date".to_string(), "string|maxlength:10".to_string())]
                            .into_iter()
                            .collect(),
                    )]
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
        let scheduler = Self {
            inner: Arc::new(Inner {
                jobs: RwLock::new(states),
                config: RwLock::new(config.clone()),
                hooks,
                history,
                store: db.store().clone(),
                shared_etag: Mutex::new(None),
                clock,
                events,
                tasks: Mutex::default(),
                in_flight: AtomicUsize::new(0),
                interrupted: ctx.shutdown.child_token(),
                upkeep: Mutex::new(Upkeep {
                    sweep: jobs.keys().cloned().collect(),
                    prune: None,
                }),
                changed: tokio::sync::Notify::new(),
            }),
        };
        // What the API or the CLI last set, before the first slot.
        scheduler
            .refresh_shared_state()
            .await
            .map_err(|e| JobError::Db(e.into()))?;
        Ok(scheduler)
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

    /// Enables a job on every runner (through the database) and across restarts.
    pub async fn enable(&self, job: &str) -> Result<(), JobError> {
        self.set_enabled(job, true).await
    }

    /// Disables a job on every runner (through the database) and across restarts.
    pub async fn disable(&self, job: &str) -> Result<(), JobError> {
        self.set_enabled(job, false).await
    }

    async fn set_enabled(&self, job: &str, enabled: bool) -> Result<(), JobError> {
        if !self
            .inner
            .jobs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(job)
        {
            return Err(self.unknown(job));
        }
        self.write_enabled(job, enabled).await
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
