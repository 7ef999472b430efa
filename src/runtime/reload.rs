//! Hot reload: re-reads the manifest when its folder changes (editors that write by rename,
//! Kubernetes ConfigMap `..data` symlink swaps and `git checkout` all show up as events in the
//! folder; the content hash decides), on SIGHUP, or on `POST /api/v1/reload`. The new manifest
//! is loaded and checked completely before anything is swapped; a broken one changes nothing,
//! and its diagnostics are kept for the API and counted in metrics.
//!
//! What is applied live: jobs (added, removed, changed — an unchanged job keeps its schedule and
//! its running execution), machine definitions (from the next event), named guards and actions,
//! new resources, the backup and cache settings, the scheduler's settings (but its history
//! resource), the API token and address. The other sections (database connection, state-machine
//! settings, `server.enabled`, the job history resource; adding or removing `backup:` or `cache:`)
//! change what every other part holds, so they take effect at the next start; a reload that
//! changes them applies the rest and lists them in `restartRequired`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Runtime;
use crate::db::schema::StoredResource;
use crate::manifest::diagnostic::DiagnosticRecord;
use crate::manifest::diff::{diff, Apply, Change, ChangeKind};
use crate::manifest::CheckedManifest;

/// What the last reload did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReloadResult {
    /// `applied`, `unchanged` or `failed`.
    pub result: String,
    /// What asked for it: `watch`, `signal`, `api`.
    pub trigger: String,
    pub at: DateTime<Utc>,
    /// The manifest now running.
    pub sha256: String,
    pub changes: Vec<Change>,
    /// Changed sections that take effect only after a restart.
    pub restart_required: Vec<String>,
    pub diagnostics: Vec<DiagnosticRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a reload could not be applied (the old manifest keeps running), or the manifest's
/// folder not watched.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("resources: {0}")]
    Resources(crate::db::DbError),
    #[error("backup: {0}")]
    Backup(crate::plugins::backup::BackupError),
    #[error("cache: {0}")]
    Cache(crate::plugins::cache::CacheError),
    #[error("cannot watch {folder}: {reason}")]
    Watch { folder: String, reason: String },
}

pub type ReloadHook = Arc<dyn Fn(&ReloadResult) + Send + Sync>;

/// Owns the running manifest and swaps in new ones.
pub struct Reloader {
    path: PathBuf,
    runtime: Arc<Runtime>,
    current: Arc<RwLock<CheckedManifest>>,
    last: Mutex<Option<ReloadResult>>,
    /// SHA-256 of the file content last looked at (applied or refused): the same content is
    /// not parsed, applied or reported twice.
    seen: Mutex<String>,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    on_reload: Mutex<Option<ReloadHook>>,
    /// Whether the API follows `server.listen` (the runner sets it; `--listen` pins it).
    live_listen: std::sync::atomic::AtomicBool,
}

impl Reloader {
    pub fn new(path: &Path, runtime: Arc<Runtime>, current: Arc<RwLock<CheckedManifest>>) -> Self {
        let seen = current.read().map(|c| c.sha256.clone()).unwrap_or_default();
        Self {
            seen: Mutex::new(seen),
            path: path.to_path_buf(),
            runtime,
            current,
            last: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            on_reload: Mutex::new(None),
            live_listen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Tells the reloader that a change of `server.listen` moves the API live.
    pub fn set_live_listen(&self, live: bool) {
        self.live_listen
            .store(live, std::sync::atomic::Ordering::Relaxed);
    }

    /// Called after every reload attempt (metrics).
    pub fn on_reload(&self, f: ReloadHook) {
        *self.on_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub fn manifest(&self) -> CheckedManifest {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn last(&self) -> Option<ReloadResult> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the manifest and applies what changed.
    pub async fn reload(&self, trigger: &str) -> ReloadResult {
        let _one = self.busy.lock().await;
        let old = self.manifest();
        let mut result = ReloadResult {
            result: "failed".into(),
            trigger: trigger.into(),
            at: Utc::now(),
            sha256: old.sha256.clone(),
            changes: Vec::new(),
            restart_required: Vec::new(),
            diagnostics: Vec::new(),
            error: None,
        };
        // SIGHUP and the API always re-read (the environment may have changed); file events
        // skip content already looked at.
        if trigger == "watch" {
            if let Ok(bytes) = std::fs::read(&self.path) {
                let sha = crate::manifest::content_sha256(&bytes);
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if *seen == sha {
                    result.result = "unchanged".into();
                    return result;
                }
                *seen = sha;
            }
        }
        let loaded = crate::manifest::load_path(&self.path, None, &crate::manifest::ProcessEnv);
        match loaded {
            Err(e) => {
                result.error = Some(format!("cannot read {}: {e}", self.path.display()));
            }
            Ok(loaded) => {
                result.diagnostics = loaded.report.records();
                match loaded.manifest {
                    None => {
                        result.error =
                            Some("the new manifest is invalid; the old one keeps running".into());
                    }
                    Some(new) if new.sha256 == old.sha256 => {
                        result.result = "unchanged".into();
                    }
                    Some(new) => match self.apply(&old, &new, &mut result).await {
                        Ok(()) => {
                            result.result = "applied".into();
                            result.sha256 = new.sha256.clone();
                            let live_listen =
                                self.live_listen.load(std::sync::atomic::Ordering::Relaxed);
                            let running =
                                running_manifest(&old, new, &result.restart_required, live_listen);
                            *self.current.write().unwrap_or_else(|e| e.into_inner()) = running;
                        }
                        Err(e) => result.error = Some(e.to_string()),
                    },
                }
            }
        }
        match result.result.as_str() {
            "applied" => tracing::info!(
                trigger,
                sha256 = %result.sha256,
                changes = result.changes.len(),
                restart_required = ?result.restart_required,
                "manifest reloaded"
            ),
            "unchanged" => tracing::debug!(trigger, "manifest unchanged"),
            _ => tracing::error!(
                trigger,
                error = result.error.as_deref().unwrap_or(""),
                diagnostics = result.diagnostics.len(),
                "reload failed; the old manifest keeps running"
            ),
        }
        if result.result != "unchanged" {
            if let Some(f) = &*self.on_reload.lock().unwrap_or_else(|e| e.into_inner()) {
                f(&result);
            }
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(result.clone());
        }
        result
    }

    /// Applies the difference. Everything that can fail is done before the first swap.
    async fn apply(
        &self,
        old: &CheckedManifest,
        new: &CheckedManifest,
        result: &mut ReloadResult,
    ) -> Result<(), ReloadError> {
        let rt = &self.runtime;
        let (o, n) = (&old.manifest, &new.manifest);
        let changes = diff(o, n);
        let live_listen = self.live_listen.load(std::sync::atomic::Ordering::Relaxed);
        let mut restart: Vec<String> = changes
            .iter()
            .filter(|c| {
                c.apply == Apply::Restart
                    // With `--listen` the API does not follow `server.listen`.
                    || (c.kind == "server" && !live_listen && c.fields.iter().any(|f| f.path == "listen"))
            })
            .map(|c| c.section().to_string())
            .collect();
        restart.sort();
        restart.dedup();

        // 1. Build what can fail: new resources, the new backup and cache. Schedules and
        //    durations were read with the manifest.
        if changes
            .iter()
            .any(|c| c.kind == "resource" && c.change != ChangeKind::Removed)
        {
            let declared = n
                .database
                .resources
                .iter()
                .map(|(name, def)| (name.clone(), StoredResource::from(def)))
                .collect();
            rt.db
                .register(&declared)
                .await
                .map_err(ReloadError::Resources)?;
        }

        let backup = match (&n.backup, rt.backup()) {
            (Some(config), Some(current)) if changes.iter().any(|c| c.kind == "backup") => Some(
                current
                    .reconfigured(config, &new.base_dir)
                    .await
                    .map_err(ReloadError::Backup)?,
            ),
            _ => None,
        };

        let cache = match (&n.cache, &rt.cache) {
            (Some(config), Some(current)) if changes.iter().any(|c| c.kind == "cache") => Some(
                current
                    .prepare(config, rt.db.store(), &new.base_dir)
                    .await
                    .map_err(ReloadError::Cache)?,
            ),
            _ => None,
        };

        // 2. Swap. Nothing here can fail, so a reload is applied whole or not at all.
        rt.hooks.set_hooks(n);
        if let (Some(prepared), Some(current)) = (cache, &rt.cache) {
            current.swap(prepared);
        }
        if let Some(b) = backup {
            // Running backups finish with the configuration they began with.
            rt.replace_backup(b);
        }
        if let Some(machines) = &rt.machines {
            if changes.iter().any(|c| c.kind == "machine") {
                machines.set_definitions(&n.machines);
            }
        }
        if changes
            .iter()
            .any(|c| c.kind == "job" || c.kind == "scheduler")
        {
            // Settings that need a restart stay as they are until then.
            let config = if restart.iter().any(|r| r == "scheduler") {
                rt.scheduler.config()
            } else {
                n.scheduler.clone()
            };
            rt.scheduler.reconcile(&config, &n.jobs);
        }
        if !restart.is_empty() {
            tracing::warn!(sections = %restart.join(", "), "these changes take effect after a restart");
        }
        result.changes = changes;
        result.restart_required = restart;
        Ok(())
    }

    /// Watches the manifest's folder and reloads (debounced) until `stop`.
    pub fn watch(
        self: &Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), ReloadError> {
        use notify::Watcher;
        let folder = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| ReloadError::Watch {
                folder: folder.display().to_string(),
                reason: e.to_string(),
            })?;
        watcher
            .watch(&folder, notify::RecursiveMode::NonRecursive)
            .map_err(|e| ReloadError::Watch {
                folder: folder.display().to_string(),
                reason: e.to_string(),
            })?;
        let this = self.clone();
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = rx.recv() => if got.is_none() { return },
                }
                // Debounce: an editor's save or a ConfigMap swap is several events.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => break,
                        _ = rx.recv() => {}
                    }
                }
                this.reload("watch").await;
            }
        });
        Ok(())
    }

    /// Reloads on SIGHUP until `stop`.
    pub fn reload_on_sighup(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hup.recv() => { this.reload("signal").await; }
                }
            }
        });
    }
}

/// What runs after a reload: the new manifest, but for the sections that wait for a restart,
/// which keep their old values. The API shows this, and the next reload diffs against it, so
/// a pending change stays listed until the restart.
fn running_manifest(
    old: &CheckedManifest,
    mut new: CheckedManifest,
    restart_required: &[String],
    live_listen: bool,
) -> CheckedManifest {
    let (o, n) = (&old.manifest, &mut new.manifest);
    for section in restart_required {
        match section.as_str() {
            "database" => n.database.connection = o.database.connection.clone(),
            "backup" => n.backup = o.backup.clone(),
            "cache" => n.cache = o.cache.clone(),
            "scheduler" => n.scheduler = o.scheduler.clone(),
            "stateMachine" => n.state_machine = o.state_machine.clone(),
            "machines" => n.machines = o.machines.clone(),
            "server" => {
                n.server.enabled = o.server.enabled;
                if !live_listen {
                    n.server.listen = o.server.listen.clone();
                }
            }
            _ => {}
        }
    }
    new
}
