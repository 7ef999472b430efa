//! The runtime: builds every configured plugin from a checked manifest and runs them until told
//! to stop — the scheduler's slots, the state machines' delayed transitions — then stops
//! cleanly: no new work, running jobs get a grace period, those cut off are recorded as
//! interrupted.

pub mod reload;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::hooks::HookRunner;
use crate::manifest::CheckedManifest;
use crate::plugins::backup::Backup;
use crate::plugins::cache::Cache;
use crate::plugins::scheduler::Scheduler;
use crate::plugins::state_machine::StateMachines;
use crate::plugins::{build_section, BuildContext, Component};

/// How often a runner looks for runs that a stopped runner left at `running`, and prunes the
/// job history.
const HISTORY_UPKEEP_EVERY: Duration = Duration::from_secs(300);

/// How often the store is probed for `/readyz` (and the jobs' shared state followed), and how
/// long a probe may take.
const STORE_PROBE_EVERY: Duration = Duration::from_secs(2);
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a runner is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the scheduler is not running yet (or is stopping)")]
    NotRunning,
    #[error("the store does not answer: {0}")]
    Store(String),
}

/// Whether this runner can do its work: its loops run and its store answers.
#[derive(Debug, Default)]
pub struct Readiness {
    running: std::sync::atomic::AtomicBool,
    /// Why the store is not usable, when the last probe failed.
    store_problem: std::sync::Mutex<Option<String>>,
}

impl Readiness {
    /// `Ok` when ready, otherwise why not.
    pub fn check(&self) -> Result<(), NotReady> {
        if !self.running.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NotReady::NotRunning);
        }
        match &*self.store_problem.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(problem) => Err(NotReady::Store(problem.clone())),
            None => Ok(()),
        }
    }

    fn set_store(&self, problem: Option<String>) {
        *self.store_problem.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }
}

/// Everything a manifest runs.
pub struct Runtime {
    pub db: Database,
    pub hooks: Arc<HookRunner>,
    pub machines: Option<StateMachines>,
    pub scheduler: Scheduler,
    pub cache: Option<Arc<Cache>>,
    /// Swapped by a reload that changes `backup:`.
    backup: std::sync::RwLock<Option<Backup>>,
    pub readiness: Arc<Readiness>,
    /// The plugins' build context's token: cancelled when the grace period is over, which
    /// interrupts whatever they still run.
    shutdown: CancellationToken,
}

/// Why the runtime could not be built from a checked manifest.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("database: {0}")]
    Database(#[from] crate::db::DbError),
    #[error("cache: {0}")]
    Cache(crate::plugins::cache::CacheError),
    #[error("backup: {0}")]
    Backup(#[from] crate::plugins::backup::BackupError),
    #[error("state machines: {0}")]
    Machines(#[from] crate::plugins::state_machine::MachineError),
    #[error("scheduler: {0}")]
    Scheduler(#[from] crate::plugins::scheduler::jobs::JobError),
}

impl BuildError {
    /// A rule-style code for the error: the part it concerns and what went wrong.
    pub fn code(&self) -> String {
        match self {
            BuildError::Database(crate::db::DbError::ContradictsS3dbjs { .. }) => {
                "database::contradicts_s3dbjs".into()
            }
            BuildError::Database(_) => "runtime::database".into(),
            BuildError::Cache(_) => "runtime::cache".into(),
            BuildError::Backup(crate::plugins::backup::BackupError::Key(k)) => k.code().into(),
            BuildError::Backup(e) => format!("backup::{}", e.code().trim_start_matches("backup_")),
            BuildError::Machines(_) => "runtime::state_machines".into(),
            BuildError::Scheduler(_) => "runtime::scheduler".into(),
        }
    }

    /// What to do about it, where that is known.
    pub fn help(&self) -> Option<String> {
        match self {
            BuildError::Backup(e) => e.help(),
            BuildError::Database(crate::db::DbError::ContradictsS3dbjs { attribute, .. }) => Some(format!(
                "s3db.js's definition is the one used: remove `{attribute}` from the manifest, or add it with s3db.js"
            )),
            BuildError::Database(_) => Some(
                "check `database.connection` (or --connection / S3DB_CONNECTION) and that the storage is reachable".into(),
            ),
            _ => None,
        }
    }
}

impl BuildError {
    /// The manifest entry the error is about, as mapping keys from the root.
    pub fn manifest_path(&self) -> Option<Vec<String>> {
        match self {
            BuildError::Database(crate::db::DbError::ContradictsS3dbjs {
                resource,
                attribute,
            }) => Some(
                ["database", "resources", resource, "attributes", attribute]
                    .map(str::to_string)
                    .to_vec(),
            ),
            _ => None,
        }
    }
}

/// Connects to the manifest's database (or `connection` instead, when given) and registers its
/// resources.
pub async fn open_database(
    checked: &CheckedManifest,
    connection: Option<&str>,
) -> crate::db::DbResult<Database> {
    let m = &checked.manifest;
    let text = connection.unwrap_or(m.database.connection.expose());
    let mut conn: crate::store::Connection = text.parse()?;
    if let crate::store::Connection::S3(location) = &mut conn {
        location.requests = location.requests.or(m.database.requests.policy());
    }
    let store = conn.open(&checked.base_dir).await?;
    let declared = m
        .database
        .resources
        .iter()
        .map(|(name, def)| (name.clone(), crate::db::schema::StoredResource::from(def)))
        .collect();
    let options = crate::db::ConnectOptions {
        passphrase: m
            .database
            .passphrase
            .as_ref()
            .map(|p| p.expose().to_string()),
        create_s3dbjs: m.database.format == crate::manifest::model::DatabaseFormat::S3dbjs,
    };
    Database::connect_with(store, &declared, &options).await
}

impl Runtime {
    /// Builds everything the manifest declares; `connection` overrides the manifest's.
    pub async fn build(
        checked: &CheckedManifest,
        connection: Option<&str>,
    ) -> Result<Self, BuildError> {
        let m = &checked.manifest;
        let db = open_database(checked, connection).await?;
        let timeout = m.scheduler.default_timeout.as_std();
        let hooks_on = |db: &Database| {
            Arc::new(
                HookRunner::new(m, &checked.base_dir, db.clone()).with_default_timeout(timeout),
            )
        };
        let mut ctx = BuildContext::new(db.clone(), hooks_on(&db), &checked.base_dir);
        // The cache goes in front of the database first, so that every other plugin and every
        // hook reads through it and invalidates it.
        let cache = build_section::<Cache>(m, &ctx)
            .await
            .map_err(BuildError::Cache)?
            .map(Arc::new);
        if let Some(c) = &cache {
            let db = db.with_cache(c.clone());
            ctx = ctx.with_db(db.clone(), hooks_on(&db));
        }
        let backup = build_section::<Backup>(m, &ctx).await?;
        let machines = build_section::<StateMachines>(m, &ctx).await?;
        let scheduler = Scheduler::build((&m.jobs, &m.scheduler), &ctx).await?;
        let (db, hooks) = (ctx.db.clone(), ctx.hooks.clone());
        let plugins = hooks.plugins();
        plugins.install(crate::hooks::PluginSet {
            machines: machines.clone().map(|m| Arc::new(m) as _),
            backup: backup.clone().map(|b| Arc::new(b) as _),
        });
        Ok(Self {
            db,
            hooks,
            machines,
            scheduler,
            cache,
            backup: std::sync::RwLock::new(backup),
            readiness: Arc::default(),
            shutdown: ctx.shutdown.clone(),
        })
    }

    /// The backup plugin, when the manifest has a `backup:` section.
    pub fn backup(&self) -> Option<Backup> {
        self.backup
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a reconfigured backup plugin in place (for the API, the CLI and `backup.*`): the
    /// hook registry gets the next plugin set, with the new backup in it.
    pub fn replace_backup(&self, backup: Backup) {
        let plugins = self.hooks.plugins();
        plugins.install(crate::hooks::PluginSet {
            backup: Some(Arc::new(backup.clone())),
            ..plugins.current()
        });
        *self.backup.write().unwrap_or_else(|e| e.into_inner()) = Some(backup);
    }

    /// Runs until `stop` is cancelled, then waits up to `grace` for running jobs.
    pub async fn run(self: &Arc<Self>, stop: CancellationToken, grace: Duration) {
        let work = CancellationToken::new();
        let mut tasks = Vec::new();
        // In the background: it reads the history, and a slow store must not hold back the
        // slots and deadlines that are due now.
        tasks.push(tokio::spawn({
            let (rt, work) = (self.clone(), work.clone());
            async move {
                tokio::select! {
                    _ = work.cancelled() => {}
                    _ = rt.catch_up() => {}
                }
            }
        }));
        tasks.push(tokio::spawn({
            let scheduler = self.scheduler.clone();
            let work = work.clone();
            async move { scheduler.run(work).await }
        }));
        tasks.push(tokio::spawn({
            let scheduler = self.scheduler.clone();
            let work = work.clone();
            // History upkeep, in the background so that a large first pruning neither delays
            // the first slots nor a shutdown (a pass dropped half-way is harmless): runs that
            // a killed runner left at `running`, then `historyRetention`. At startup, then
            // periodically, since another runner may be killed while this one runs.
            async move {
                loop {
                    let pass = async {
                        scheduler.sweep_stale().await;
                        scheduler.prune_history().await;
                    };
                    tokio::select! {
                        _ = work.cancelled() => return,
                        _ = pass => {}
                    }
                    tokio::select! {
                        _ = work.cancelled() => return,
                        _ = tokio::time::sleep(HISTORY_UPKEEP_EVERY) => {}
                    }
                }
            }
        }));
        if let Some(machines) = &self.machines {
            let machines = machines.clone();
            let work = work.clone();
            tasks.push(tokio::spawn(async move {
                let poll = machines.config().deadline_poll.as_std();
                machines.run_deadlines(work, poll).await
            }));
        }
        tasks.push(tokio::spawn({
            let (scheduler, readiness, work) =
                (self.scheduler.clone(), self.readiness.clone(), work.clone());
            async move {
                loop {
                    // One request both probes the store and follows the jobs' shared state
                    // (enabled/disabled), so neither costs more than one HEAD per round.
                    let probe = tokio::time::timeout(
                        STORE_PROBE_TIMEOUT,
                        scheduler.refresh_shared_state(),
                    );
                    let problem = tokio::select! {
                        _ = work.cancelled() => return,
                        answer = probe => match answer {
                            Ok(Ok(_)) => None,
                            Ok(Err(e)) => Some(e.to_string()),
                            Err(_) => Some(format!("no answer within {}s", STORE_PROBE_TIMEOUT.as_secs())),
                        },
                    };
                    match (&problem, readiness.check()) {
                        (Some(p), Ok(())) => tracing::error!(problem = %p, "the store stopped answering: not ready"),
                        (None, Err(_)) => tracing::info!("the store answers again: ready"),
                        _ => {}
                    }
                    readiness.set_store(problem);
                    tokio::select! {
                        _ = work.cancelled() => return,
                        _ = tokio::time::sleep(STORE_PROBE_EVERY) => {}
                    }
                }
            }
        }));
        self.readiness
            .running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(jobs = self.scheduler.all_status().len(), "running");
        stop.cancelled().await;
        self.readiness
            .running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "stopping: no new work; waiting for running jobs"
        );
        work.cancel();
        for t in tasks {
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        let backups_running = || self.backup().is_some_and(|b| !b.running().is_empty());
        while (self.scheduler.busy() || backups_running()) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(backup) = self.backup() {
            if !backup.running().is_empty() {
                // Cancelled backups end as `cancelled`; their marker is never written.
                tracing::warn!(backups = %backup.running().join(", "), "grace period over: cancelling running backups");
                backup.cancel_all();
                while !backup.running().is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if self.scheduler.busy() {
            tracing::warn!("grace period over: interrupting running jobs");
            self.shutdown.cancel();
            while self.scheduler.busy() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tracing::info!("stopped");
    }

    /// Runs, once, the latest slot of each job that was missed while no runner was up (if the
    /// job's `catchUp` and starting deadline allow it). Slots another runner ran are claimed
    /// already and are not run again.
    async fn catch_up(&self) {
        let now = Utc::now();
        for status in self
            .scheduler
            .all_status()
            .into_iter()
            .filter(|s| s.enabled)
        {
            let Some(next) = self.scheduler.next_slot(&status.name, now) else {
                continue;
            };
            let Some(after) = self.scheduler.next_slot(&status.name, next) else {
                continue;
            };
            // Looking back a few intervals is enough: an older slot is past any default deadline.
            let window = (after - next) * 3 + chrono::Duration::days(1);
            // A job that has never run has missed nothing (a fresh deployment runs no backlog).
            let ran_before = self
                .scheduler
                .history(&status.name, None, Some(1))
                .await
                .map(|h| !h.is_empty())
                .unwrap_or(false);
            if !ran_before {
                continue;
            }
            if let Some(slot) = self.scheduler.missed_slot(&status.name, now, now - window) {
                tracing::info!(job = %status.name, slot = %slot, "catching up a missed slot");
                let scheduler = self.scheduler.clone();
                let name = status.name.clone();
                let in_flight = scheduler.in_flight();
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    if let Err(e) = scheduler.run_slot(&name, slot).await {
                        tracing::warn!(job = %name, error = %e, "catch-up run failed");
                    }
                });
            }
        }
    }
}
