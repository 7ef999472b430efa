//! The backup plugin: full, incremental, labelled and selective backups of the database into
//! one streamed archive per backup, written to one or more destinations; listing, status,
//! verification, restore (of incremental chains too), deletion and GFS pruning, all working
//! from the destination alone.
//!
//! At a destination, a backup is four objects in its folder: `ID.meta.json` (plain metadata,
//! no secret), `ID.s3db-backup` (the archive), `ID.index` (every record's ETag and size, for the
//! next incremental) and `ID.done`, the completion marker, written last and create-only: a
//! backup without it is never listed as completed.
//!
//! Owns: the backup lifecycle, the lease that keeps two runners from backing up one database
//! at once, hooks and events. Never: parses the manifest, or logs a key.

pub mod archive;
mod catalog;
mod check;
pub mod crypto;
pub mod destination;
mod diff;
mod prune;
mod restore;
pub mod retention;
mod run;
mod workdir;

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use archive::{ArchiveError, ArchiveReader, ArchiveWriter, Keyring, MemberInfo};
pub use check::CheckReport;
use crypto::Passphrase;
use destination::Destination;
pub use diff::{BackupDiff, ResourceDiff};

use crate::db::codec;
use crate::db::schema::{Metadata, StoredResource};
use crate::db::Database;
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{BackupOps, HookInput, HookKind, HookRunner, OpsError};
use crate::manifest::model::{BackupConfig, Compression, HookRef, MultiStrategy};
use crate::store::StoreError;

const LOCK_KEY: &str = "plugin=backup/lock.json";
const LOCK_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Config(String),
    #[error("another backup or restore holds the lock ({holder}, until {until})")]
    Locked { holder: String, until: String },
    #[error("backup `{0}` not found")]
    NotFound(String),
    #[error("backup `{id}` cannot be used: {reason}")]
    Unusable { id: String, reason: String },
    #[error("{0}")]
    Destination(String),
    #[error("{0}")]
    Archive(String),
    #[error("database: {0}")]
    Database(String),
    #[error("backup `{0}` was cancelled")]
    Cancelled(String),
    #[error(transparent)]
    Key(#[from] crypto::KeyError),
}

impl BackupError {
    /// A short machine-readable name (API error codes, metrics).
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Config(_) => "backup_config",
            BackupError::Locked { .. } => "backup_locked",
            BackupError::NotFound(_) => "backup_not_found",
            BackupError::Unusable { .. } => "backup_unusable",
            BackupError::Destination(_) => "backup_destination",
            BackupError::Archive(_) => "backup_archive",
            BackupError::Database(_) => "backup_database",
            BackupError::Cancelled(_) => "backup_cancelled",
            BackupError::Key(_) => "backup_key",
        }
    }

    /// What to do about it, where that is known.
    pub fn help(&self) -> Option<String> {
        match self {
            BackupError::Key(e) => Some(e.help()),
            BackupError::Locked { .. } => Some(
                "wait for it to finish, or for its lock to expire if its runner was killed".into(),
            ),
            _ => None,
        }
    }
}

impl From<crate::db::DbError> for BackupError {
    fn from(e: crate::db::DbError) -> Self {
        BackupError::Database(e.to_string())
    }
}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> Self {
        BackupError::Database(e.to_string())
    }
}

/// What a backup's metadata object says (and what `listBackups` / `getBackupStatus` return).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub id: String,
    /// The label it was started with: `full`, `incremental`, or a custom name.
    #[serde(rename = "type")]
    pub label: String,
    /// `full` or `incremental`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `running`, `completed`, `failed`, `cancelled`, `interrupted`, or `damaged` (its
    /// metadata cannot be read; `error` says why).
    pub status: String,
    pub started_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    pub resources: Vec<String>,
    /// Only some resources (the `resources` option), so it is never an incremental's parent.
    #[serde(default)]
    pub selective: bool,
    #[serde(default)]
    pub records: IndexMap<String, u64>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub tombstones: IndexMap<String, u64>,
    /// Archive size in bytes.
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-256 of the index (every record's ETag and size), checked before an incremental uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    pub compression: Compression,
    pub encrypted: bool,
    pub format_version: u32,
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackupInfo {
    pub fn is_completed(&self) -> bool {
        self.status == "completed"
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStats {
    pub backup_id: String,
    /// The backups applied, the full first.
    pub chain: Vec<String>,
    /// Resources restored.
    pub restored: Vec<String>,
    pub records: u64,
    /// Existing records kept (restore without overwrite).
    pub skipped: u64,
    /// Records removed because the backup had a tombstone for them (overwrite only).
    pub deleted: u64,
    pub duration_ms: u64,
    /// Nothing was written: the counts say what a restore would write, keep and delete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    pub overwrite: bool,
    pub resources: Option<Vec<String>>,
    /// Verify the chain completely and count what would be written, kept and deleted; write
    /// nothing (not even the resources' definitions) and take no lock.
    pub dry_run: bool,
}

/// An event of the plugin: backup_start, backup_complete, backup_error, backup_cancelled,
/// restore_start, restore_complete, restore_error.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEvent {
    pub event: &'static str,
    pub id: String,
    #[serde(rename = "type")]
    pub label: String,
    pub detail: Value,
}

/// A running backup's progress as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveProgress {
    /// `listing`, `archiving`, `uploading`, …
    pub phase: String,
    /// Records done so far.
    pub done: u64,
    /// Records in all, once the listing has counted them.
    pub total: Option<u64>,
    pub per_second: f64,
    /// Seconds left at the current rate, when the total is known.
    pub eta_seconds: Option<u64>,
}

/// Progress of a running operation, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    /// How many the phase will do, when known (a restore knows its chain's record counts; a
    /// backup streams its listing and does not).
    pub total: Option<u64>,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Every record of a backup: (resource, id) → (ETag, size).
type RecordIndex = HashMap<(String, String), (String, u64)>;

/// One line of a backup's index: resource, id, ETag (or content hash) and size.
type IndexLine = (String, String, String, u64);

/// A parent's index as a plain file in listing order (see `load_index_sorted`).
pub(super) struct SortedIndex {
    file: TempFile,
}

impl SortedIndex {
    pub(super) fn cursor(&self) -> Result<IndexCursor, BackupError> {
        let f = std::fs::File::open(&self.file.0)
            .map_err(|e| BackupError::Archive(format!("the parent's index: {e}")))?;
        Ok(IndexCursor {
            lines: std::io::BufReader::new(f).lines(),
            peeked: None,
        })
    }
}

/// Reads a sorted index forward, one entry of look-ahead, so an incremental compares its
/// listing with its parent record by record and finds deletions without keeping either.
pub(super) struct IndexCursor {
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    peeked: Option<(IndexLine, String)>,
}

impl IndexCursor {
    /// The next entry and its record key, without moving past it.
    pub(super) fn peek(&mut self) -> Result<Option<&(IndexLine, String)>, BackupError> {
        if self.peeked.is_none() {
            if let Some(line) = self.lines.next() {
                let line =
                    line.map_err(|e| BackupError::Archive(format!("the parent's index: {e}")))?;
                let entry: IndexLine = serde_json::from_str(&line)
                    .map_err(|e| BackupError::Archive(format!("the parent's index: {e}")))?;
                let key = codec::record_key(&entry.0, &entry.1);
                self.peeked = Some((entry, key));
            }
        }
        Ok(self.peeked.as_ref())
    }

    /// The next entry of `resource` if its key sorts before `key` (None: up to the end).
    pub(super) fn next_before(
        &mut self,
        resource: &str,
        key: Option<&str>,
    ) -> Result<Option<IndexLine>, BackupError> {
        let before = self.peek()?.is_some_and(|((res, ..), k)| {
            res == resource && key.is_none_or(|key| k.as_str() < key)
        });
        Ok(if before {
            self.peeked.take().map(|(e, _)| e)
        } else {
            None
        })
    }

    /// The entry of `resource` with exactly `key`, taken if it is next.
    pub(super) fn take_at(
        &mut self,
        resource: &str,
        key: &str,
    ) -> Result<Option<(String, u64)>, BackupError> {
        let here = self
            .peek()?
            .is_some_and(|((res, ..), k)| res == resource && k == key);
        Ok(if here {
            self.peeked
                .take()
                .map(|((_, _, etag, size), _)| (etag, size))
        } else {
            None
        })
    }
}

/// The destinations (by index) holding a backup, each with the folder it is in there.
type Holders = Vec<(usize, String)>;

#[derive(Clone)]
pub struct Backup {
    inner: Arc<Inner>,
}

struct Inner {
    config: BackupConfig,
    db: Database,
    hooks: Option<Arc<HookRunner>>,
    destinations: Vec<Arc<dyn Destination>>,
    strategy: MultiStrategy,
    concurrency: usize,
    /// This process's folder of temporary files (in `temp_root`).
    temp_dir: PathBuf,
    /// `tempDir`: swept of killed processes' folders before each backup and prune.
    temp_root: PathBuf,
    _work: workdir::WorkDir,
    passphrase: Option<Passphrase>,
    shared: Arc<Shared>,
}

impl Shared {
    fn started(&self, id: &str) -> bool {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn forget(&self, id: &str) {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// A backup refused before it started: no destination has a trace of it.
#[derive(Clone)]
struct Refusal {
    id: String,
    label: String,
    error: String,
    at: DateTime<Utc>,
}

/// What outlives a reconfiguration (a reload): subscribers, running backups, the lock owner.
struct Shared {
    events: broadcast::Sender<BackupEvent>,
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Backups past their checks and lock (their own failures are reported where they happen).
    started: Mutex<HashSet<String>>,
    /// The last backups refused before they started.
    refused: Mutex<std::collections::VecDeque<Refusal>>,
    progress: Mutex<Option<ProgressFn>>,
    /// Where the running backup or restore is (one at a time: they share a lease).
    live: Mutex<Option<Live>>,
    owner: String,
}

/// The progress of the running operation, and when its phase began (for the rate).
struct Live {
    phase: &'static str,
    done: u64,
    total: Option<u64>,
    since: Instant,
}

pub(crate) fn random_suffix() -> String {
    crate::types::id::token(6)
}

fn backup_id(label: &str, at: DateTime<Utc>) -> String {
    crate::types::BackupId::new(label, at).into_string()
}

/// A record line of a resource member.
#[derive(Deserialize)]
struct Line {
    id: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
}

impl Backup {
    /// The database-wide backup lease: one backup, prune or restore at a time.
    fn lease(&self) -> crate::db::lease::LeaseSpec {
        crate::db::lease::LeaseSpec {
            store: self.inner.db.store().clone(),
            key: LOCK_KEY.to_string(),
            ttl: LOCK_TTL,
            clock: Arc::new(crate::types::clock::SystemClock),
        }
    }

    /// Takes the backup lease for `what`, naming this runner as its holder.
    async fn take_lease(&self, what: &str) -> Result<crate::db::lease::LeaseGuard, BackupError> {
        self.lease()
            .acquire(what, json!({ "owner": self.inner.shared.owner }))
            .await
            .map_err(|e| match e {
                crate::db::lease::LeaseError::Held { holder, until } => {
                    BackupError::Locked { holder, until }
                }
                crate::db::lease::LeaseError::Store(e) => e.into(),
            })
    }
}

/// Forgets that a backup started, however `backup_with_id` ends.
struct Forget(Arc<Shared>, String);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}

/// A backup's place in `running`, given up when dropped.
struct RunningEntry {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for RunningEntry {
    fn drop(&mut self) {
        self.shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        *self.shared.live.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// A file in the temporary folder, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

enum Cmd {
    Begin(String),
    Line(Vec<u8>),
    Index(Vec<u8>),
}

struct Built {
    archive: archive::Written,
    index: archive::Written,
}

/// Loads the passphrase (from the value, a file or a command) and connects the destinations;
/// the context's hooks run the onBackup*/onRestore* callbacks.
impl crate::plugins::Component for Backup {
    type Config<'a> = &'a BackupConfig;
    type Error = BackupError;

    fn section(m: &crate::manifest::model::Manifest) -> Option<&BackupConfig> {
        m.backup.as_ref()
    }

    fn build<'a>(
        config: &'a BackupConfig,
        ctx: &'a crate::plugins::BuildContext,
    ) -> impl std::future::Future<Output = Result<Self, BackupError>> + Send + 'a {
        Self::build_new(config, &ctx.db, &ctx.base_dir, Some(ctx.hooks.clone()))
    }
}

impl Backup {
    async fn build_new(
        config: &BackupConfig,
        db: &Database,
        base_dir: &Path,
        hooks: Option<Arc<HookRunner>>,
    ) -> Result<Self, BackupError> {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        let shared = Arc::new(Shared {
            events: broadcast::channel(256).0,
            running: Mutex::new(HashMap::new()),
            started: Mutex::new(HashSet::new()),
            refused: Mutex::new(std::collections::VecDeque::new()),
            progress: Mutex::new(None),
            live: Mutex::new(None),
            owner: crate::types::id::holder(&host),
        });
        Self::build_with(config, db, base_dir, hooks, shared).await
    }

    /// The plugin with a new configuration (a reload), keeping its subscribers, its lock
    /// identity and its running backups (which finish with the configuration they began with).
    pub async fn reconfigured(
        &self,
        config: &BackupConfig,
        base_dir: &Path,
    ) -> Result<Self, BackupError> {
        Self::build_with(
            config,
            &self.inner.db,
            base_dir,
            self.inner.hooks.clone(),
            self.inner.shared.clone(),
        )
        .await
    }

    async fn build_with(
        config: &BackupConfig,
        db: &Database,
        base_dir: &Path,
        hooks: Option<Arc<HookRunner>>,
        shared: Arc<Shared>,
    ) -> Result<Self, BackupError> {
        let db_location = db.store().s3_location();
        let target = config.target.as_ref().ok_or_else(|| {
            BackupError::Config("the backup section was not checked (no destination)".into())
        })?;
        let (strategy, concurrency) = (target.strategy, target.concurrency);
        let mut destinations = Vec::new();
        for d in &target.destinations {
            destinations.push(Arc::from(
                destination::build(d, base_dir, db_location.clone())
                    .await
                    .map_err(|e| BackupError::Config(e.to_string()))?,
            ));
        }
        let passphrase = match &config.encryption {
            Some(e) => {
                if let (crate::manifest::model::KdfAlgorithm::Pbkdf2, Some(n)) =
                    (e.key_derivation.algorithm, e.key_derivation.iterations)
                {
                    if n < crypto::PBKDF2_DEFAULT_ITERATIONS {
                        tracing::warn!(
                            iterations = n,
                            "PBKDF2 with fewer than 600000 iterations is weak; prefer argon2id"
                        );
                    }
                }
                Some(Passphrase::load(e, base_dir).await?)
            }
            None => None,
        };
        let temp_root = base_dir.join(&config.temp_dir);
        let work = workdir::WorkDir::create(&temp_root).map_err(|e| {
            BackupError::Config(format!(
                "cannot create the backup tempDir {}: {e}",
                temp_root.display()
            ))
        })?;
        let temp_dir = work.path().to_path_buf();
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                db: db.clone(),
                hooks,
                destinations,
                strategy,
                concurrency,
                temp_dir,
                temp_root,
                _work: work,
                passphrase,
                shared,
            }),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BackupEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Reports progress of the operations that follow (a CLI progress bar).
    pub fn on_progress(&self, f: ProgressFn) {
        *self
            .inner
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    fn progress(&self, phase: &'static str, done: u64) {
        self.progress_of(phase, done, None)
    }

    fn progress_of(&self, phase: &'static str, done: u64, total: Option<u64>) {
        // `verbose: true` logs every step (every 500 records while reading).
        if self.inner.config.verbose {
            tracing::info!(phase, done, total, "backup progress");
        }
        {
            let mut live = self
                .inner
                .shared
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let since = match &*live {
                Some(l) if l.phase == phase => l.since,
                _ => Instant::now(),
            };
            *live = Some(Live {
                phase,
                done,
                total,
                since,
            });
        }
        if let Some(f) = &*self
            .inner
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            f(Progress { phase, done, total });
        }
    }

    fn keyring(&self) -> Keyring {
        Keyring::new(
            self.inner.passphrase.clone(),
            self.inner.config.encryption.clone(),
        )
    }

    fn emit(&self, event: &'static str, id: &str, label: &str, detail: Value) {
        let _ = self.inner.shared.events.send(BackupEvent {
            event,
            id: id.into(),
            label: label.into(),
            detail,
        });
    }

    async fn callback(&self, hook: &Option<HookRef>, stats: Value) {
        let (Some(hook), Some(runner)) = (hook, &self.inner.hooks) else {
            return;
        };
        let resolved = match runner.resolve(hook, BuiltinKind::Action) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "backup callback is not defined");
                return;
            }
        };
        let mut input = HookInput::new(resolved.name.clone(), HookKind::Callback);
        input.stats = Some(stats);
        if let Err(e) = runner.action(&resolved, &input).await {
            tracing::warn!(error = %e, "backup callback failed");
        }
    }

    /// getStorageInfo: each destination's driver, settings and space.
    pub async fn storage_info(&self) -> Value {
        let mut out = Vec::new();
        for d in &self.inner.destinations {
            out.push(d.storage_info().await);
        }
        json!({
            "driver": self.inner.config.driver.name(),
            "strategy": self.inner.strategy,
            "concurrency": self.inner.concurrency,
            "destinations": out,
        })
    }

    /// Cancels running backups (shutdown past its grace period); they end as `cancelled`.
    pub fn cancel_all(&self) {
        for token in self
            .inner
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            token.cancel();
        }
    }

    /// The running backup's progress, as the terminal shows it: phase, records done, total
    /// when known, rate and time left. None when nothing runs.
    pub fn live_progress(&self) -> Option<LiveProgress> {
        let live = self
            .inner
            .shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let l = live.as_ref()?;
        let secs = l.since.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            l.done as f64 / secs
        } else {
            0.0
        };
        let eta = l
            .total
            .filter(|_| rate > 0.0)
            .map(|t| (t.saturating_sub(l.done) as f64 / rate).ceil() as u64);
        Some(LiveProgress {
            phase: l.phase.to_string(),
            done: l.done,
            total: l.total,
            per_second: (rate * 10.0).round() / 10.0,
            eta_seconds: eta,
        })
    }

    pub fn running(&self) -> Vec<String> {
        self.inner
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

fn strategy_name(s: MultiStrategy) -> &'static str {
    match s {
        MultiStrategy::All => "all",
        MultiStrategy::Any => "any",
        MultiStrategy::Priority => "priority",
    }
}

#[async_trait]
impl BackupOps for Backup {
    async fn run(&self, kind: &str, resources: Option<Vec<String>>) -> Result<Value, OpsError> {
        self.backup(kind, resources)
            .await
            .map(|info| serde_json::to_value(info).unwrap_or_default())
            .map_err(Into::into)
    }

    async fn prune(&self, dry_run: bool) -> Result<Value, OpsError> {
        Backup::prune(self, dry_run)
            .await
            .map(|d| json!({ "dryRun": dry_run, "decisions": d }))
            .map_err(Into::into)
    }
}
