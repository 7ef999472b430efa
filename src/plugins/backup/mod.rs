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
pub mod crypto;
pub mod destination;
pub mod retention;

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

use archive::{ArchiveReader, ArchiveWriter, Keyring, MemberInfo};
use crypto::Passphrase;
use destination::Destination;

use crate::db::codec;
use crate::db::schema::{Metadata, StoredResource};
use crate::db::Database;
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{BackupOps, HookInput, HookKind, HookRunner};
use crate::manifest::model::{BackupConfig, BackupDriver, Compression, HookRef, MultiStrategy};
use crate::store::{ETag, PutMode, PutOptions, StoreError};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// `running`, `completed`, `failed`, `cancelled` or `interrupted`.
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    pub overwrite: bool,
    pub resources: Option<Vec<String>>,
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

/// Progress of a running operation, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Every record of a backup: (resource, id) → (ETag, size).
type RecordIndex = HashMap<(String, String), (String, u64)>;

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
    temp_dir: PathBuf,
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
    owner: String,
}

pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn backup_id(label: &str, at: DateTime<Utc>) -> String {
    format!(
        "{label}-{}-{}",
        at.format("%Y-%m-%dT%H-%M-%S"),
        random_suffix()
    )
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

struct Lease {
    store: crate::store::DynStore,
    etag: Mutex<ETag>,
    stop: CancellationToken,
    lost: CancellationToken,
}

impl Lease {
    fn body(owner: &str, holder: &str) -> Bytes {
        let until = Utc::now() + chrono::Duration::from_std(LOCK_TTL).unwrap_or_default();
        Bytes::from(
            json!({ "owner": owner, "holder": holder, "expiresAt": until.to_rfc3339() })
                .to_string(),
        )
    }

    /// Takes the lease, or fails with who holds it; renews it in the background until released.
    async fn acquire(
        store: crate::store::DynStore,
        owner: &str,
        holder: &str,
    ) -> Result<LeaseGuard, BackupError> {
        for _ in 0..5 {
            match store
                .put(
                    LOCK_KEY,
                    Lease::body(owner, holder),
                    PutMode::Create,
                    &PutOptions::default(),
                )
                .await
            {
                Ok(etag) => {
                    let lease = Arc::new(Lease {
                        store: store.clone(),
                        etag: Mutex::new(etag),
                        stop: CancellationToken::new(),
                        lost: CancellationToken::new(),
                    });
                    tokio::spawn(lease.clone().renew(owner.to_string(), holder.to_string()));
                    return Ok(LeaseGuard {
                        lease,
                        released: false,
                    });
                }
                Err(e) if e.is_conflict() => {
                    let Some(current) = store.get(LOCK_KEY).await? else {
                        continue;
                    };
                    let v: Value = serde_json::from_slice(&current.body).unwrap_or_default();
                    let until = v["expiresAt"].as_str().unwrap_or_default().to_string();
                    let expired = DateTime::parse_from_rfc3339(&until)
                        .map(|t| t < Utc::now())
                        .unwrap_or(true);
                    if expired {
                        // A crashed holder's lease: take it over, unless someone else just did.
                        let _ = store.delete(LOCK_KEY, Some(&current.meta.etag)).await;
                        continue;
                    }
                    return Err(BackupError::Locked {
                        holder: v["holder"].as_str().unwrap_or("unknown").to_string(),
                        until,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackupError::Locked {
            holder: "unknown (contended)".into(),
            until: String::new(),
        })
    }

    async fn renew(self: Arc<Self>, owner: String, holder: String) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(LOCK_TTL / 3) => {}
            }
            let etag = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match self
                .store
                .put(
                    LOCK_KEY,
                    Lease::body(&owner, &holder),
                    PutMode::Update(etag),
                    &PutOptions::default(),
                )
                .await
            {
                Ok(new) => *self.etag.lock().unwrap_or_else(|e| e.into_inner()) = new,
                Err(e) => {
                    tracing::error!(error = %e, "lost the backup lock");
                    self.lost.cancel();
                    return;
                }
            }
        }
    }

    async fn release(&self) {
        self.stop.cancel();
        let etag = self.etag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = self.store.delete(LOCK_KEY, Some(&etag)).await {
            tracing::warn!(error = %e, "could not release the backup lock (it expires by itself)");
        }
    }
}

/// The held lease. Dropped without `release` (the operation's future was dropped: a cancelled
/// job, an API client gone), it still stops renewing and deletes the lock in the background, so
/// the lock never outlives its operation by more than that.
struct LeaseGuard {
    lease: Arc<Lease>,
    released: bool,
}

impl LeaseGuard {
    fn lost(&self) -> CancellationToken {
        self.lease.lost.clone()
    }

    async fn release(mut self) {
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

impl Backup {
    /// Builds the plugin: loads the passphrase (from the value, a file or a command) and
    /// connects the destinations. `hooks` runs the onBackup*/onRestore* callbacks.
    pub async fn build(
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
            owner: format!("{host}/{}/{}", std::process::id(), random_suffix()),
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
        let (strategy, concurrency, specs) = match config.driver {
            BackupDriver::Multi => {
                let c = &config.config;
                let specs: Vec<_> = c
                    .destinations
                    .iter()
                    .flatten()
                    .map(|d| (d.driver, d.config.clone()))
                    .collect();
                (
                    c.strategy.unwrap_or(MultiStrategy::All),
                    c.concurrency.unwrap_or(3).max(1) as usize,
                    specs,
                )
            }
            driver => (MultiStrategy::All, 1, vec![(driver, config.config.clone())]),
        };
        if specs.is_empty() {
            return Err(BackupError::Config(
                "the multi backup driver needs at least one destination".into(),
            ));
        }
        let mut destinations = Vec::new();
        for (driver, c) in specs {
            destinations.push(Arc::from(
                destination::build(driver, &c, base_dir, db_location.clone())
                    .await
                    .map_err(BackupError::Config)?,
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
                Some(
                    Passphrase::load(e, base_dir)
                        .await
                        .map_err(BackupError::Config)?,
                )
            }
            None => None,
        };
        let temp_dir = base_dir.join(&config.temp_dir);
        std::fs::create_dir_all(&temp_dir).map_err(|e| {
            BackupError::Config(format!(
                "cannot create the backup tempDir {}: {e}",
                temp_dir.display()
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                db: db.clone(),
                hooks,
                destinations,
                strategy,
                concurrency,
                temp_dir,
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
        // `verbose: true` logs every step (every 500 records while reading).
        if self.inner.config.verbose {
            tracing::info!(phase, done, "backup progress");
        }
        if let Some(f) = &*self
            .inner
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            f(Progress { phase, done });
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

    fn selected_resources(&self, resources: Option<&[String]>) -> Result<Vec<String>, BackupError> {
        let all = self.inner.db.resource_names();
        if let Some(list) = resources {
            for r in list {
                if !all.contains(r) {
                    return Err(BackupError::Config(format!(
                        "resource `{r}` does not exist (resources: {})",
                        all.join(", ")
                    )));
                }
            }
            return Ok(list.to_vec());
        }
        let c = &self.inner.config;
        Ok(all
            .into_iter()
            .filter(|r| c.include.as_ref().is_none_or(|i| i.contains(r)))
            .filter(|r| !c.exclude.contains(r))
            .collect())
    }

    /// backup(type, {resources}): `incremental` stores what changed since the newest completed
    /// backup of the same resources; any other name is a full backup with that label.
    pub async fn backup(
        &self,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let id = backup_id(label, Utc::now());
        self.backup_with_id(id, label, resources).await
    }

    /// Reserves an id for a backup that `backup_with_id` then runs (the API answers with it
    /// before the backup ends).
    pub fn new_id(label: &str) -> String {
        backup_id(label, Utc::now())
    }

    pub async fn backup_with_id(
        &self,
        id: String,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let _forget = Forget(self.inner.shared.clone(), id.clone());
        let result = self.run_with_id(&id, label, resources).await;
        if let Err(e) = &result {
            if !matches!(e, BackupError::Cancelled(_)) && !self.inner.shared.started(&id) {
                // Refused before it started (a bad request, the lock held elsewhere): still an
                // error that onBackupError and the metrics should see.
                let stats = json!({ "backupId": id, "type": label, "error": e.to_string() });
                self.emit("backup_error", &id, label, stats.clone());
                self.callback(&self.inner.config.on_backup_error, stats)
                    .await;
                tracing::error!(backup = %id, error = %e, "backup refused");
                // Nothing was written to a destination; `status` answers from here.
                let mut refused = self
                    .inner
                    .shared
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if refused.len() >= 100 {
                    refused.pop_front();
                }
                refused.push_back(Refusal {
                    id: id.clone(),
                    label: label.to_string(),
                    error: e.to_string(),
                    at: Utc::now(),
                });
            }
        }
        result
    }

    async fn run_with_id(
        &self,
        id: &str,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let id = id.to_string();
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(BackupError::Config(format!(
                "backup type `{label}` must be letters, digits, `-` or `_`"
            )));
        }
        let selective = resources.is_some();
        let names = self.selected_resources(resources.as_deref())?;
        let lease = Lease::acquire(
            self.inner.db.store().clone(),
            &self.inner.shared.owner,
            &format!("backup {id}"),
        )
        .await?;
        let cancel = CancellationToken::new();
        self.inner
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), cancel.clone());
        self.inner
            .shared
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        // Leaves `running` however this ends, a dropped future included.
        let entry = RunningEntry {
            shared: self.inner.shared.clone(),
            id: id.clone(),
        };
        let started = Instant::now();
        let started_at = Utc::now();
        let mut info = self.new_info(&id, label, "running", started_at);
        info.resources = names.clone();
        info.selective = selective;
        let result = async {
            if label == "incremental" {
                match self.newest_parent(&names).await? {
                    Some(parent) => {
                        info.kind = "incremental".into();
                        info.parent = Some(parent.id);
                    }
                    None => tracing::warn!(
                        backup = %id,
                        "no completed backup of these resources to build an incremental on: taking a full backup"
                    ),
                }
            }
            // Written first, so an interrupted backup is visible (and never completed).
            self.write_meta_everywhere(&info).await;
            self.emit(
                "backup_start",
                &id,
                label,
                json!({ "resources": names, "kind": info.kind }),
            );
            self.callback(
                &self.inner.config.on_backup_start,
                json!({ "backupId": id, "type": label }),
            )
            .await;
            let stop = CancellationToken::new();
            let lost = lease.lost();
            let guard = {
                let stop = stop.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => stop.cancel(),
                        _ = lost.cancelled() => stop.cancel(),
                    }
                })
            };
            let r = self.run_backup(&mut info, stop).await;
            guard.abort();
            r
        }
        .await;
        drop(entry);
        lease.release().await;
        info.duration_ms = Some(started.elapsed().as_millis() as u64);
        match result {
            Ok(()) => {
                info.status = "completed".into();
                let stats = json!({
                    "backupId": id, "type": label, "size": info.size,
                    "duration": info.duration_ms, "records": info.records,
                    "driverInfo": info.destinations,
                });
                self.emit("backup_complete", &id, label, stats.clone());
                self.callback(&self.inner.config.on_backup_complete, stats)
                    .await;
                tracing::info!(
                    backup = %id,
                    kind = %info.kind,
                    size = info.size,
                    duration_ms = info.duration_ms.unwrap_or(0),
                    "backup completed"
                );
                Ok(info)
            }
            Err(e) => {
                let cancelled = cancel.is_cancelled();
                let err = if cancelled {
                    BackupError::Cancelled(id.clone())
                } else {
                    e
                };
                info.status = if cancelled { "cancelled" } else { "failed" }.into();
                info.error = Some(err.to_string());
                self.write_meta_everywhere(&info).await;
                let stats = json!({ "backupId": id, "type": label, "error": err.to_string() });
                self.emit(
                    if cancelled {
                        "backup_cancelled"
                    } else {
                        "backup_error"
                    },
                    &id,
                    label,
                    stats.clone(),
                );
                self.callback(&self.inner.config.on_backup_error, stats)
                    .await;
                tracing::error!(backup = %id, error = %err, "backup failed");
                Err(err)
            }
        }
    }

    /// Each destination's folder for a backup (its path template filled in).
    fn folders(&self, info: &BackupInfo) -> Vec<String> {
        let local = info.started_at.with_timezone(&self.inner.config.timezone.0);
        self.inner
            .destinations
            .iter()
            .map(|d| d.folder(&info.id, &info.label, &local))
            .collect()
    }

    /// Best effort: the metadata tells `status` what happened even when the backup failed.
    async fn write_meta_everywhere(&self, info: &BackupInfo) {
        let body = Bytes::from(serde_json::to_vec_pretty(info).unwrap_or_default());
        for (d, folder) in self.inner.destinations.iter().zip(self.folders(info)) {
            let key = format!("{folder}{}.meta.json", info.id);
            if let Err(Some(e)) = d.put(&key, body.clone(), false).await {
                tracing::warn!(destination = %d.describe(), error = %e, "cannot write backup metadata");
            }
        }
    }

    async fn newest_parent(&self, names: &[String]) -> Result<Option<BackupInfo>, BackupError> {
        let list = self.list_backups(None, None).await?;
        Ok(list
            .into_iter()
            .find(|b| b.is_completed() && !b.selective && b.resources == names))
    }

    async fn run_backup(
        &self,
        info: &mut BackupInfo,
        stop: CancellationToken,
    ) -> Result<(), BackupError> {
        let id = info.id.clone();

        let parent_index = match info.parent.clone() {
            Some(parent) => match self.load_index(&parent).await {
                Ok(index) => Some(index),
                Err(e) => {
                    // A chain built on an unreadable index could not be trusted; a full backup
                    // can, and the next incremental builds on it.
                    tracing::warn!(backup = %id, parent = %parent, error = %e, "the parent's index cannot be read: taking a full backup instead");
                    info.kind = "full".into();
                    info.parent = None;
                    None
                }
            },
            None => None,
        };

        let archive_path = TempFile(self.inner.temp_dir.join(format!("{id}.s3db-backup")));
        let index_path = TempFile(self.inner.temp_dir.join(format!("{id}.index")));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Cmd>(1024);
        let schema = self.schema_of(&info.resources).await?;
        let writer = {
            let keys = self.keyring();
            let (a, i) = (archive_path.0.clone(), index_path.0.clone());
            let temp = self.inner.temp_dir.clone();
            let compression = info.compression;
            let id = id.clone();
            tokio::task::spawn_blocking(move || -> Result<Built, String> {
                let mut archive =
                    ArchiveWriter::create(&a, &temp, &id, "archive", compression, &keys)?;
                let mut index = ArchiveWriter::create(&i, &temp, &id, "index", compression, &keys)?;
                archive.add_bytes("s3db.json", &schema)?;
                index.begin_member("index.jsonl")?;
                while let Some(cmd) = rx.blocking_recv() {
                    match cmd {
                        Cmd::Begin(name) => {
                            archive.begin_member(&format!("resources/{name}.jsonl"))?
                        }
                        Cmd::Line(line) => archive.write_line(&line)?,
                        Cmd::Index(line) => index.write_line(&line)?,
                    }
                }
                archive.end_member()?;
                let manifest = serde_json::to_vec_pretty(&json!({
                    "backupId": id,
                    "members": archive.members(),
                }))
                .map_err(|e| e.to_string())?;
                archive.add_bytes("manifest.json", &manifest)?;
                Ok(Built {
                    archive: archive.finish()?,
                    index: index.finish()?,
                })
            })
        };

        let produced = self.produce(info, parent_index.as_ref(), &tx, &stop).await;
        drop(tx);
        let built = writer
            .await
            .map_err(|e| BackupError::Archive(format!("the archive writer failed: {e}")))?
            .map_err(BackupError::Archive);
        produced?;
        let built = built?;
        if stop.is_cancelled() {
            return Err(BackupError::Cancelled(id));
        }
        info.size = built.archive.size;
        info.sha256 = Some(built.archive.sha256.clone());
        info.index_sha256 = Some(built.index.sha256.clone());
        self.upload(info, &archive_path.0, &index_path.0).await
    }

    /// s3db.json restricted to the backed-up resources.
    async fn schema_of(&self, names: &[String]) -> Result<Vec<u8>, BackupError> {
        let current = self
            .inner
            .db
            .store()
            .get(codec::METADATA_KEY)
            .await?
            .ok_or_else(|| BackupError::Database("s3db.json is missing".into()))?;
        let mut metadata: Metadata = serde_json::from_slice(&current.body)
            .map_err(|e| BackupError::Database(format!("s3db.json is damaged: {e}")))?;
        metadata.resources.retain(|name, _| names.contains(name));
        serde_json::to_vec_pretty(&metadata).map_err(|e| BackupError::Archive(e.to_string()))
    }

    /// Lists every selected resource page by page and streams its records (only the changed
    /// ones for an incremental, plus tombstones) to the archive writer.
    async fn produce(
        &self,
        info: &mut BackupInfo,
        parent: Option<&RecordIndex>,
        tx: &tokio::sync::mpsc::Sender<Cmd>,
        stop: &CancellationToken,
    ) -> Result<(), BackupError> {
        let store = self.inner.db.store().clone();
        let concurrency = self.inner.db.concurrency();
        let closed = || BackupError::Archive("the archive writer stopped".into());
        let mut done = 0u64;
        for name in info.resources.clone() {
            tx.send(Cmd::Begin(name.clone()))
                .await
                .map_err(|_| closed())?;
            let prefix = codec::data_prefix(&name);
            let mut token: Option<String> = None;
            let mut seen: HashSet<String> = HashSet::new();
            let mut count = 0u64;
            loop {
                if stop.is_cancelled() {
                    return Err(BackupError::Cancelled(info.id.clone()));
                }
                let page = store.list(&prefix, token.as_deref(), 1000).await?;
                let wanted: Vec<_> = page
                    .objects
                    .iter()
                    .filter_map(|m| codec::id_from_key(&m.key).map(|id| (id, m.clone())))
                    .collect();
                let mut fetch = Vec::new();
                for (id, meta) in wanted {
                    let unchanged = parent.and_then(|p| p.get(&(name.clone(), id.clone())))
                        == Some(&(meta.etag.0.clone(), meta.size));
                    if parent.is_some() {
                        seen.insert(id.clone());
                    }
                    if unchanged {
                        let line = serde_json::to_vec(&json!([name, id, meta.etag.0, meta.size]))
                            .unwrap_or_default();
                        tx.send(Cmd::Index(line)).await.map_err(|_| closed())?;
                    } else {
                        fetch.push((id, meta.key));
                    }
                }
                let mut bodies = futures::stream::iter(fetch.into_iter().map(|(id, key)| {
                    let store = store.clone();
                    async move { (id, store.get(&key).await) }
                }))
                .buffered(concurrency);
                while let Some((id, got)) = bodies.next().await {
                    if stop.is_cancelled() {
                        return Err(BackupError::Cancelled(info.id.clone()));
                    }
                    // Deleted between the listing and the read: it is not in this backup.
                    let Some(obj) = got? else { continue };
                    if serde_json::from_slice::<serde::de::IgnoredAny>(&obj.body).is_err() {
                        return Err(BackupError::Database(format!(
                            "record `{id}` of `{name}` is not valid JSON ({}); fix or delete it",
                            obj.meta.key
                        )));
                    }
                    let mut line = Vec::with_capacity(obj.body.len() + id.len() + 64);
                    line.extend_from_slice(b"{\"id\":");
                    serde_json::to_writer(&mut line, &id).unwrap_or_default();
                    line.extend_from_slice(b",\"etag\":");
                    serde_json::to_writer(&mut line, &obj.meta.etag.0).unwrap_or_default();
                    line.extend_from_slice(
                        format!(",\"size\":{},\"data\":", obj.meta.size).as_bytes(),
                    );
                    line.extend_from_slice(&obj.body);
                    line.push(b'}');
                    let index =
                        serde_json::to_vec(&json!([name, id, obj.meta.etag.0, obj.meta.size]))
                            .unwrap_or_default();
                    tx.send(Cmd::Line(line)).await.map_err(|_| closed())?;
                    tx.send(Cmd::Index(index)).await.map_err(|_| closed())?;
                    count += 1;
                    done += 1;
                    if done.is_multiple_of(500) {
                        self.progress("records", done);
                    }
                }
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
            info.records.insert(name.clone(), count);
            if let Some(parent) = parent {
                let mut tombstones = 0;
                for (res, id) in parent.keys() {
                    if res == &name && !seen.contains(id) {
                        let line = serde_json::to_vec(&json!({ "id": id, "deleted": true }))
                            .unwrap_or_default();
                        tx.send(Cmd::Line(line)).await.map_err(|_| closed())?;
                        tombstones += 1;
                    }
                }
                info.tombstones.insert(name.clone(), tombstones);
            }
        }
        self.progress("records", done);
        Ok(())
    }

    /// Uploads the archive and index under the strategy, verifies, then writes the metadata
    /// and, last, the completion marker.
    async fn upload(
        &self,
        info: &mut BackupInfo,
        archive_path: &Path,
        index_path: &Path,
    ) -> Result<(), BackupError> {
        let dests = &self.inner.destinations;
        let folders = self.folders(info);
        let verification = self.inner.config.verification;
        let one = |i: usize| {
            let d = dests[i].clone();
            let (id, folder) = (info.id.clone(), folders[i].clone());
            let want = (info.sha256.clone().unwrap_or_default(), info.size);
            let want_index = info.index_sha256.clone().unwrap_or_default();
            let (archive_path, index_path) = (archive_path.to_path_buf(), index_path.to_path_buf());
            async move {
                let result = async {
                    d.upload(&format!("{folder}{id}.s3db-backup"), &archive_path)
                        .await?;
                    d.upload(&format!("{folder}{id}.index"), &index_path).await?;
                    if verification {
                        let got = d.fetch(&format!("{folder}{id}.s3db-backup"), None).await?;
                        if got.as_ref() != Some(&want) {
                            return Err(format!(
                                "verification failed: the stored archive's SHA-256 differs from the one written ({})",
                                d.describe()
                            ));
                        }
                        let got = d.fetch(&format!("{folder}{id}.index"), None).await?;
                        if got.map(|(sha, _)| sha) != Some(want_index) {
                            return Err(format!(
                                "verification failed: the stored index's SHA-256 differs from the one written ({})",
                                d.describe()
                            ));
                        }
                    }
                    Ok(())
                }
                .await;
                (i, result)
            }
        };
        self.progress("upload", 0);
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        match self.inner.strategy {
            MultiStrategy::Priority => {
                for i in 0..dests.len() {
                    match one(i).await {
                        (i, Ok(())) => {
                            ok.push(i);
                            break;
                        }
                        (i, Err(e)) => {
                            tracing::warn!(destination = %dests[i].describe(), error = %e, "backup destination failed; trying the next");
                            errors.push(format!("{}: {e}", dests[i].describe()));
                        }
                    }
                }
            }
            MultiStrategy::All | MultiStrategy::Any => {
                let mut results = futures::stream::iter((0..dests.len()).map(one))
                    .buffer_unordered(self.inner.concurrency);
                while let Some((i, r)) = results.next().await {
                    match r {
                        Ok(()) => ok.push(i),
                        Err(e) => {
                            tracing::warn!(destination = %dests[i].describe(), error = %e, "backup destination failed");
                            errors.push(format!("{}: {e}", dests[i].describe()));
                        }
                    }
                }
            }
        }
        ok.sort();
        let failed =
            ok.is_empty() || (self.inner.strategy == MultiStrategy::All && !errors.is_empty());
        if failed {
            // Leave no orphaned archive behind where the upload went through.
            for &i in &ok {
                let (d, folder) = (dests[i].as_ref(), &folders[i]);
                let _ = d.delete(&format!("{folder}{}.s3db-backup", info.id)).await;
                let _ = d.delete(&format!("{folder}{}.index", info.id)).await;
            }
            return Err(BackupError::Destination(format!(
                "backup upload failed ({} strategy): {}",
                strategy_name(self.inner.strategy),
                errors.join("; ")
            )));
        }
        info.status = "completed".into();
        info.completed_at = Some(Utc::now());
        info.duration_ms = Some((Utc::now() - info.started_at).num_milliseconds().max(0) as u64);
        info.destinations = ok.iter().map(|&i| dests[i].describe()).collect();
        let body = Bytes::from(serde_json::to_vec_pretty(&*info).unwrap_or_default());
        for &i in &ok {
            let (d, folder) = (dests[i].as_ref(), &folders[i]);
            d.put(
                &format!("{folder}{}.meta.json", info.id),
                body.clone(),
                false,
            )
            .await
            .map_err(|e| BackupError::Destination(e.unwrap_or_default()))?;
        }
        let marker = Bytes::from(
            json!({ "id": info.id, "sha256": info.sha256, "completedAt": info.completed_at })
                .to_string(),
        );
        for &i in &ok {
            let (d, folder) = (dests[i].as_ref(), &folders[i]);
            match d
                .put(&format!("{folder}{}.done", info.id), marker.clone(), true)
                .await
            {
                Ok(()) => {}
                Err(None) => {
                    return Err(BackupError::Destination(format!(
                        "the completion marker of `{}` already exists at {}",
                        info.id,
                        d.describe()
                    )))
                }
                Err(Some(e)) => return Err(BackupError::Destination(e)),
            }
        }
        Ok(())
    }

    /// Every backup at every destination (the first destination holding an id wins), newest
    /// first; `prefix` filters ids, `limit` cuts the list.
    pub async fn list_backups(
        &self,
        limit: Option<usize>,
        prefix: Option<&str>,
    ) -> Result<Vec<BackupInfo>, BackupError> {
        Ok(self
            .locate_all()
            .await?
            .into_iter()
            .map(|(info, _)| info)
            .filter(|b| prefix.is_none_or(|p| b.id.starts_with(p)))
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// Each backup with the destinations (indexes) holding it, newest first.
    async fn locate_all(&self) -> Result<Vec<(BackupInfo, Holders)>, BackupError> {
        let lock_holder = match self.inner.db.store().get(LOCK_KEY).await {
            Ok(Some(o)) => serde_json::from_slice::<Value>(&o.body)
                .ok()
                .filter(|v| {
                    v["expiresAt"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t > Utc::now())
                })
                .and_then(|v| v["holder"].as_str().map(str::to_string)),
            _ => None,
        };
        let mut found: IndexMap<String, (BackupInfo, Holders)> = IndexMap::new();
        let mut failures = Vec::new();
        for (i, d) in self.inner.destinations.iter().enumerate() {
            let keys = match d.list(&d.root()).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(destination = %d.describe(), error = %e, "cannot list backups");
                    failures.push(e);
                    continue;
                }
            };
            let done: HashSet<&str> = keys
                .iter()
                .filter_map(|k| k.strip_suffix(".done"))
                .collect();
            let metas: Vec<String> = keys
                .iter()
                .filter(|k| k.ends_with(".meta.json"))
                .cloned()
                .collect();
            let mut bodies = futures::stream::iter(metas.into_iter().map(|k| {
                let d = d.clone();
                async move {
                    let body = d.get(&k).await;
                    (k, body)
                }
            }))
            .buffered(16);
            while let Some((key, body)) = bodies.next().await {
                let Ok(Some(body)) = body else { continue };
                let Ok(mut info) = serde_json::from_slice::<BackupInfo>(&body) else {
                    tracing::warn!(key, "unreadable backup metadata; skipped");
                    continue;
                };
                let stem = key.trim_end_matches(".meta.json");
                let folder = stem
                    .strip_suffix(info.id.as_str())
                    .unwrap_or("")
                    .to_string();
                info.status = if done.contains(stem) {
                    "completed".into()
                } else if info.status == "running"
                    && lock_holder.as_deref() != Some(&format!("backup {}", info.id))
                {
                    "interrupted".into()
                } else if info.status == "completed" {
                    // Metadata claims completion but the marker is missing.
                    "interrupted".into()
                } else {
                    info.status
                };
                match found.get_mut(&info.id) {
                    Some((existing, holders)) => {
                        holders.push((i, folder));
                        if !existing.is_completed() && info.is_completed() {
                            *existing = info;
                        }
                    }
                    None => {
                        found.insert(info.id.clone(), (info, vec![(i, folder)]));
                    }
                }
            }
        }
        if found.is_empty() && failures.len() == self.inner.destinations.len() {
            return Err(BackupError::Destination(failures.join("; ")));
        }
        let mut list: Vec<_> = found.into_values().collect();
        list.sort_by(|a, b| {
            b.0.started_at
                .cmp(&a.0.started_at)
                .then(b.0.id.cmp(&a.0.id))
        });
        Ok(list)
    }

    /// getBackupStatus(id).
    pub async fn status(&self, id: &str) -> Result<BackupInfo, BackupError> {
        if let Some(found) = self
            .locate_all()
            .await?
            .into_iter()
            .find(|(b, _)| b.id == id)
        {
            return Ok(found.0);
        }
        let refused = self
            .inner
            .shared
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.id == id)
            .cloned();
        let Refusal {
            label, error, at, ..
        } = refused.ok_or_else(|| BackupError::NotFound(id.into()))?;
        let mut info = self.new_info(id, &label, "failed", at);
        info.error = Some(error);
        Ok(info)
    }

    /// The metadata of a backup that has not written anything yet.
    fn new_info(&self, id: &str, label: &str, status: &str, at: DateTime<Utc>) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            label: label.into(),
            kind: "full".into(),
            parent: None,
            status: status.into(),
            started_at: at,
            completed_at: None,
            duration_ms: None,
            resources: Vec::new(),
            selective: false,
            records: IndexMap::new(),
            tombstones: IndexMap::new(),
            size: 0,
            sha256: None,
            index_sha256: None,
            compression: self.inner.config.compression,
            encrypted: self.inner.passphrase.is_some(),
            format_version: archive::FORMAT_VERSION,
            destinations: Vec::new(),
            error: None,
        }
    }

    /// Removes a backup's objects from every destination, marker first, so a half-deleted
    /// backup is never listed as completed.
    pub async fn delete(&self, id: &str) -> Result<(), BackupError> {
        let all = self.locate_all().await?;
        let (info, holders) = all
            .iter()
            .find(|(b, _)| b.id == id)
            .ok_or_else(|| BackupError::NotFound(id.into()))?;
        if let Some((child, _)) = all
            .iter()
            .find(|(b, _)| b.parent.as_deref() == Some(id) && b.is_completed())
        {
            return Err(BackupError::Unusable {
                id: id.into(),
                reason: format!(
                    "incremental `{}` depends on it; delete that first",
                    child.id
                ),
            });
        }
        self.delete_objects(info, holders).await
    }

    async fn delete_objects(
        &self,
        info: &BackupInfo,
        holders: &Holders,
    ) -> Result<(), BackupError> {
        for (i, folder) in holders {
            let d = self.inner.destinations[*i].as_ref();
            for suffix in ["done", "s3db-backup", "index", "meta.json"] {
                d.delete(&format!("{folder}{}.{suffix}", info.id))
                    .await
                    .map_err(BackupError::Destination)?;
            }
        }
        Ok(())
    }

    /// Applies the retention policy; with `dry_run` nothing is deleted. Holds the backup lock,
    /// so no backup runs meanwhile and every incomplete backup is a dead one.
    pub async fn prune(&self, dry_run: bool) -> Result<Vec<retention::Decision>, BackupError> {
        let lease = Lease::acquire(
            self.inner.db.store().clone(),
            &self.inner.shared.owner,
            "prune",
        )
        .await?;
        let result = async {
            let all = self.locate_all().await?;
            let candidates: Vec<_> = all
                .iter()
                .map(|(b, _)| retention::Candidate {
                    id: b.id.clone(),
                    started_at: b.started_at,
                    completed: b.is_completed(),
                    parent: b.parent.clone(),
                })
                .collect();
            let decisions = retention::decide(
                &self.inner.config.retention,
                self.inner.config.timezone.0,
                &candidates,
            );
            if !dry_run {
                // Newest first means children go before their parents.
                for d in decisions.iter().filter(|d| !d.keep) {
                    if let Some((info, holders)) = all.iter().find(|(b, _)| b.id == d.id) {
                        self.delete_objects(info, holders).await?;
                        tracing::info!(backup = %d.id, reason = %d.reasons.join(", "), "pruned");
                    }
                }
            }
            Ok(decisions)
        }
        .await;
        lease.release().await;
        result
    }

    /// Reads a backup's index: every record's ETag and size at the time of that backup.
    async fn load_index(&self, id: &str) -> Result<RecordIndex, BackupError> {
        let (info, holders) = self.find_completed(id).await?;
        let tmp = TempFile(
            self.inner
                .temp_dir
                .join(format!("{id}.index.{}", random_suffix())),
        );
        let mut last = String::new();
        for (i, folder) in holders {
            let d = self.inner.destinations[i].as_ref();
            match d.fetch(&format!("{folder}{id}.index"), Some(&tmp.0)).await {
                Ok(Some((sha, _)))
                    if info.index_sha256.as_ref().is_some_and(|want| want != &sha) =>
                {
                    last = format!("{}: the index does not match its SHA-256", d.describe());
                }
                Ok(Some(_)) => {
                    let (keys, path, id) = (self.keyring(), tmp.0.clone(), id.to_string());
                    return tokio::task::spawn_blocking(move || {
                        let mut map = HashMap::new();
                        ArchiveReader::open(&path, &id, &keys)?.for_each_member(|_, r| {
                            for line in r.lines() {
                                let line = line.map_err(|e| e.to_string())?;
                                let (res, rid, etag, size): (String, String, String, u64) =
                                    serde_json::from_str(&line)
                                        .map_err(|e| format!("damaged index: {e}"))?;
                                map.insert((res, rid), (etag, size));
                            }
                            Ok(())
                        })?;
                        Ok(map)
                    })
                    .await
                    .map_err(|e| BackupError::Archive(e.to_string()))?
                    .map_err(|e: String| BackupError::Unusable {
                        id: info.id.clone(),
                        reason: format!("its index cannot be read: {e}"),
                    });
                }
                Ok(None) => last = format!("{}: index missing", d.describe()),
                Err(e) => last = e,
            }
        }
        Err(BackupError::Unusable {
            id: id.into(),
            reason: format!("no destination has its index ({last})"),
        })
    }

    async fn find_completed(&self, id: &str) -> Result<(BackupInfo, Holders), BackupError> {
        let (info, holders) = self
            .locate_all()
            .await?
            .into_iter()
            .find(|(b, _)| b.id == id)
            .ok_or_else(|| BackupError::NotFound(id.into()))?;
        if !info.is_completed() {
            return Err(BackupError::Unusable {
                id: id.into(),
                reason: format!("it is {}, not completed", info.status),
            });
        }
        Ok((info, holders))
    }

    /// Downloads a completed backup's archive from the first destination whose copy matches
    /// the recorded SHA-256.
    async fn download(
        &self,
        info: &BackupInfo,
        holders: &Holders,
    ) -> Result<TempFile, BackupError> {
        let tmp = TempFile(self.inner.temp_dir.join(format!(
            "{}.restore.{}",
            info.id,
            random_suffix()
        )));
        let mut problems = Vec::new();
        for (i, folder) in holders {
            let d = self.inner.destinations[*i].as_ref();
            let key = format!("{folder}{}.s3db-backup", info.id);
            match d.fetch(&key, Some(&tmp.0)).await {
                Ok(Some((sha, size))) => {
                    if Some(&sha) == info.sha256.as_ref() && size == info.size {
                        return Ok(tmp);
                    }
                    problems.push(format!(
                        "{}: the archive's SHA-256 does not match its metadata (damaged or altered)",
                        d.describe()
                    ));
                }
                Ok(None) => problems.push(format!("{}: archive missing", d.describe())),
                Err(e) => problems.push(e),
            }
        }
        Err(BackupError::Unusable {
            id: info.id.clone(),
            reason: problems.join("; "),
        })
    }

    /// restore(id, {overwrite, resources}): verifies every archive of the chain completely
    /// before writing anything; without `overwrite`, existing records are kept (skipped).
    pub async fn restore(
        &self,
        id: &str,
        options: RestoreOptions,
    ) -> Result<RestoreStats, BackupError> {
        let lease = Lease::acquire(
            self.inner.db.store().clone(),
            &self.inner.shared.owner,
            &format!("restore {id}"),
        )
        .await?;
        let started = Instant::now();
        self.emit(
            "restore_start",
            id,
            "",
            json!({ "overwrite": options.overwrite }),
        );
        self.callback(
            &self.inner.config.on_restore_start,
            json!({ "backupId": id, "overwrite": options.overwrite }),
        )
        .await;
        let result = self.run_restore(id, &options).await;
        lease.release().await;
        match result {
            Ok(mut stats) => {
                stats.duration_ms = started.elapsed().as_millis() as u64;
                let detail = serde_json::to_value(&stats).unwrap_or_default();
                self.emit("restore_complete", id, "", detail.clone());
                self.callback(&self.inner.config.on_restore_complete, detail)
                    .await;
                Ok(stats)
            }
            Err(e) => {
                let detail = json!({ "backupId": id, "error": e.to_string() });
                self.emit("restore_error", id, "", detail.clone());
                self.callback(&self.inner.config.on_restore_error, detail)
                    .await;
                tracing::error!(backup = %id, error = %e, "restore failed");
                Err(e)
            }
        }
    }

    async fn run_restore(
        &self,
        id: &str,
        options: &RestoreOptions,
    ) -> Result<RestoreStats, BackupError> {
        let all = self.locate_all().await?;
        let find = |id: &str| all.iter().find(|(b, _)| b.id == id);
        // The chain, newest first.
        let mut chain = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(cur) = next {
            let (info, holders) = find(&cur).ok_or_else(|| match chain.is_empty() {
                true => BackupError::NotFound(cur.clone()),
                false => BackupError::Unusable {
                    id: id.into(),
                    reason: format!("backup `{cur}` of its chain is missing"),
                },
            })?;
            if !info.is_completed() {
                return Err(BackupError::Unusable {
                    id: cur.clone(),
                    reason: format!("it is {}, not completed", info.status),
                });
            }
            if chain.iter().any(|(b, _): &(BackupInfo, _)| b.id == info.id) {
                return Err(BackupError::Unusable {
                    id: id.into(),
                    reason: "its chain of parents loops".into(),
                });
            }
            next = info.parent.clone();
            chain.push((info.clone(), holders.clone()));
        }
        let newest = &chain[0].0;
        let wanted: Vec<String> = match &options.resources {
            Some(list) => {
                for r in list {
                    if !newest.resources.contains(r) {
                        return Err(BackupError::Config(format!(
                            "backup `{id}` has no resource `{r}` (it has: {})",
                            newest.resources.join(", ")
                        )));
                    }
                }
                list.clone()
            }
            None => newest.resources.clone(),
        };

        // 1. Download and verify everything before a single write.
        let mut files = Vec::new();
        let mut schema: Option<Metadata> = None;
        for (info, holders) in &chain {
            self.progress("verify", files.len() as u64);
            let file = self.download(info, holders).await?;
            let (keys, path, bid) = (self.keyring(), file.0.clone(), info.id.clone());
            let verified = tokio::task::spawn_blocking(move || verify(&path, &bid, &keys))
                .await
                .map_err(|e| BackupError::Archive(e.to_string()))?
                .map_err(|reason| BackupError::Unusable {
                    id: info.id.clone(),
                    reason,
                })?;
            if schema.is_none() {
                schema = Some(verified);
            }
            files.push((info.id.clone(), file));
        }
        let schema = schema.unwrap_or_default();

        // 2. Recreate the resources' definitions (s3db.json may be gone).
        let declared: IndexMap<String, StoredResource> = schema
            .resources
            .into_iter()
            .filter(|(n, _)| wanted.contains(n))
            .collect();
        self.inner.db.register(&declared).await?;

        // 3. Apply newest first; the first occurrence of a record in the chain is its final
        //    state, so later (older) ones are skipped and a tombstone is never undone.
        let mut stats = RestoreStats {
            backup_id: id.into(),
            chain: chain.iter().rev().map(|(b, _)| b.id.clone()).collect(),
            restored: wanted.clone(),
            ..Default::default()
        };
        let dedupe = chain.len() > 1;
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for (bid, file) in &files {
            self.apply_archive(
                bid,
                &file.0,
                &wanted,
                options.overwrite,
                dedupe,
                &mut seen,
                &mut stats,
            )
            .await?;
        }
        for name in &wanted {
            if let Ok(r) = self.inner.db.resource(name) {
                r.invalidate_all().await;
            }
        }
        Ok(stats)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_archive(
        &self,
        id: &str,
        path: &Path,
        wanted: &[String],
        overwrite: bool,
        dedupe: bool,
        seen: &mut HashSet<(String, String)>,
        stats: &mut RestoreStats,
    ) -> Result<(), BackupError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Vec<Vec<u8>>)>(8);
        let reader = {
            let (keys, path, id) = (self.keyring(), path.to_path_buf(), id.to_string());
            let wanted = wanted.to_vec();
            tokio::task::spawn_blocking(move || -> Result<(), String> {
                ArchiveReader::open(&path, &id, &keys)?.for_each_member(|name, r| {
                    let Some(resource) = name
                        .strip_prefix("resources/")
                        .and_then(|n| n.strip_suffix(".jsonl"))
                    else {
                        return Ok(());
                    };
                    if !wanted.iter().any(|w| w == resource) {
                        return Ok(());
                    }
                    let mut batch = Vec::with_capacity(256);
                    for line in r.split(b'\n') {
                        batch.push(line.map_err(|e| e.to_string())?);
                        if batch.len() == 256 {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(256));
                            tx.blocking_send((resource.to_string(), full))
                                .map_err(|_| "restore stopped".to_string())?;
                        }
                    }
                    if !batch.is_empty() {
                        tx.blocking_send((resource.to_string(), batch))
                            .map_err(|_| "restore stopped".to_string())?;
                    }
                    Ok(())
                })?;
                Ok(())
            })
        };
        let concurrency = self.inner.db.concurrency();
        let mut failure = None;
        while let Some((resource, lines)) = rx.recv().await {
            let res = self.inner.db.resource(&resource)?;
            let mut work = Vec::new();
            for raw in lines {
                let line: Line = serde_json::from_slice(&raw)
                    .map_err(|e| BackupError::Archive(format!("damaged record line: {e}")))?;
                if dedupe && !seen.insert((resource.clone(), line.id.clone())) {
                    continue;
                }
                work.push(line);
            }
            let mut writes = futures::stream::iter(work.into_iter().map(|line| {
                let res = res.clone();
                async move {
                    if line.deleted {
                        if !overwrite {
                            return Ok::<_, BackupError>((0, 1, 0));
                        }
                        let gone = res.delete(&line.id, None).await?;
                        return Ok((0, 0, u64::from(gone)));
                    }
                    let data: Map<String, Value> = line
                        .data
                        .as_ref()
                        .map(|d| serde_json::from_str(d.get()))
                        .transpose()
                        .map_err(|e| BackupError::Archive(format!("damaged record: {e}")))?
                        .unwrap_or_default();
                    let written = res.restore(&line.id, data, overwrite).await?;
                    Ok(if written { (1, 0, 0) } else { (0, 1, 0) })
                }
            }))
            .buffer_unordered(concurrency);
            while let Some(r) = writes.next().await {
                match r {
                    Ok((w, s, d)) => {
                        stats.records += w;
                        stats.skipped += s;
                        stats.deleted += d;
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            if failure.is_some() {
                break;
            }
            self.progress("restore", stats.records + stats.skipped);
        }
        drop(rx);
        let read = reader
            .await
            .map_err(|e| BackupError::Archive(e.to_string()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        read.map_err(BackupError::Archive)
    }
}

/// Reads a whole archive: every segment decrypts, every line parses, every member's SHA-256
/// matches `manifest.json`. Returns the archive's `s3db.json`.
fn verify(path: &Path, id: &str, keys: &Keyring) -> Result<Metadata, String> {
    let mut schema = None;
    let mut manifest: Option<Value> = None;
    let seen = ArchiveReader::open(path, id, keys)?.for_each_member(|name, r| {
        match name {
            "s3db.json" => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                schema = Some(
                    serde_json::from_slice::<Metadata>(&buf)
                        .map_err(|e| format!("damaged s3db.json: {e}"))?,
                );
            }
            "manifest.json" => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                manifest = Some(
                    serde_json::from_slice(&buf).map_err(|e| format!("damaged manifest: {e}"))?,
                );
            }
            _ => {
                for (n, line) in r.split(b'\n').enumerate() {
                    let line = line.map_err(|e| e.to_string())?;
                    serde_json::from_slice::<Line>(&line)
                        .map_err(|e| format!("{name} line {}: {e}", n + 1))?;
                }
            }
        }
        Ok(())
    })?;
    let manifest = manifest.ok_or("the archive has no manifest.json (truncated?)")?;
    let recorded: IndexMap<String, MemberInfo> =
        serde_json::from_value(manifest["members"].clone())
            .map_err(|e| format!("damaged manifest: {e}"))?;
    for (name, info) in &recorded {
        match seen.get(name) {
            Some(got) if got.sha256 == info.sha256 && got.bytes == info.bytes => {}
            Some(_) => return Err(format!("member `{name}` does not match its SHA-256")),
            None => return Err(format!("member `{name}` is missing")),
        }
    }
    if manifest["backupId"].as_str() != Some(id) {
        return Err("the archive's manifest names another backup".into());
    }
    schema.ok_or_else(|| "the archive has no s3db.json".to_string())
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
    async fn run(&self, kind: &str, resources: Option<Vec<String>>) -> Result<Value, String> {
        self.backup(kind, resources)
            .await
            .map(|info| serde_json::to_value(info).unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    async fn prune(&self, dry_run: bool) -> Result<Value, String> {
        Backup::prune(self, dry_run)
            .await
            .map(|d| json!({ "dryRun": dry_run, "decisions": d }))
            .map_err(|e| e.to_string())
    }
}
