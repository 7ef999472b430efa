//! Prometheus metrics at `/metrics`: job runs by job and status, run durations, last success
//! time; transitions by machine and event; action errors; cache hits and misses; the manifest's
//! hash. Filled from the plugins' event streams, so no plugin knows about metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::plugins::scheduler::JobEvent;
use crate::plugins::state_machine::MachineEvent;
use crate::runtime::Runtime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatusLabels {
    job: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    machine: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    machine: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    kind: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ManifestLabels {
    sha256: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    job_runs: Family<JobStatusLabels, Counter>,
    job_duration: Family<JobLabels, Histogram, fn() -> Histogram>,
    job_last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    transitions: Family<TransitionLabels, Counter>,
    action_errors: Family<ActionLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    seen_hits: AtomicU64,
    seen_misses: AtomicU64,
    backups: Family<BackupLabels, Counter>,
    backup_duration: Histogram,
    backup_size: Gauge,
    backup_last_success: Gauge<f64, AtomicU64>,
    reloads: Family<ReloadLabels, Counter>,
    reload_last_success: Gauge<f64, AtomicU64>,
    manifest: Family<ManifestLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: String,
}

fn unix_now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    pub fn new(manifest_sha256: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("s3db");
        let job_runs = Family::<JobStatusLabels, Counter>::default();
        registry.register(
            "job_runs",
            "Job runs, by job and final status",
            job_runs.clone(),
        );
        let job_duration = Family::<JobLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "job_duration_seconds",
            "Duration of job runs",
            job_duration.clone(),
        );
        let job_last_success = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "job_last_success_timestamp_seconds",
            "When each job last succeeded (Unix time)",
            job_last_success.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "State machine transitions, by machine and event",
            transitions.clone(),
        );
        let action_errors = Family::<ActionLabels, Counter>::default();
        registry.register(
            "action_errors",
            "Failed state machine actions",
            action_errors.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Cache hits of this process",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Cache misses of this process",
            cache_misses.clone(),
        );
        let manifest = Family::<ManifestLabels, Gauge>::default();
        manifest
            .get_or_create(&ManifestLabels {
                sha256: manifest_sha256.to_string(),
            })
            .set(1);
        registry.register(
            "manifest_info",
            "The running manifest's SHA-256",
            manifest.clone(),
        );
        let backups = Family::<BackupLabels, Counter>::default();
        registry.register(
            "backups",
            "Backups by kind (full, incremental) and final status",
            backups.clone(),
        );
        let backup_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "backup_duration_seconds",
            "Duration of completed backups",
            backup_duration.clone(),
        );
        let backup_size = Gauge::default();
        registry.register(
            "backup_size_bytes",
            "Archive size of the last completed backup",
            backup_size.clone(),
        );
        let backup_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When a backup last completed (Unix time)",
            backup_last_success.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "reloads",
            "Manifest reload attempts by result (applied, unchanged, failed)",
            reloads.clone(),
        );
        let reload_last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "reload_last_success_timestamp_seconds",
            "When a manifest reload last succeeded (Unix time)",
            reload_last_success.clone(),
        );
        Arc::new(Self {
            registry,
            job_runs,
            job_duration,
            job_last_success,
            transitions,
            action_errors,
            cache_hits,
            cache_misses,
            seen_hits: AtomicU64::new(0),
            seen_misses: AtomicU64::new(0),
            backups,
            backup_duration,
            backup_size,
            backup_last_success,
            reloads,
            reload_last_success,
            manifest,
        })
    }

    /// Counts a reload attempt; a successful one also moves `manifest_info` to the new hash.
    pub fn reloaded(&self, result: &str, sha256: Option<&str>) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
        if let Some(sha) = sha256 {
            self.reload_last_success.set(unix_now());
            self.manifest.clear();
            self.manifest
                .get_or_create(&ManifestLabels {
                    sha256: sha.to_string(),
                })
                .set(1);
        }
    }

    /// Follows the plugins' events for as long as the runtime lives.
    pub fn follow(self: &Arc<Self>, runtime: &Runtime) {
        let mut jobs = runtime.scheduler.subscribe();
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match jobs.recv().await {
                    Ok(JobEvent::JobFinished {
                        job,
                        status,
                        duration_ms,
                    }) => {
                        this.job_runs
                            .get_or_create(&JobStatusLabels {
                                job: job.clone(),
                                status: status.clone(),
                            })
                            .inc();
                        this.job_duration
                            .get_or_create(&JobLabels { job: job.clone() })
                            .observe(duration_ms as f64 / 1000.0);
                        if status == "success" {
                            let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
                            this.job_last_success
                                .get_or_create(&JobLabels { job })
                                .set(now);
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        if let Some(backup) = runtime.backup() {
            let mut events = backup.subscribe();
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(e) => {
                            let status = match e.event {
                                "backup_complete" => "completed",
                                "backup_error" => "failed",
                                "backup_cancelled" => "cancelled",
                                _ => continue,
                            };
                            let kind = if e.label == "incremental" {
                                "incremental"
                            } else {
                                "full"
                            };
                            this.backups
                                .get_or_create(&BackupLabels {
                                    kind: kind.into(),
                                    status: status.into(),
                                })
                                .inc();
                            if status == "completed" {
                                let ms = e.detail["duration"].as_u64().unwrap_or(0);
                                this.backup_duration.observe(ms as f64 / 1000.0);
                                this.backup_size.set(e.detail["size"].as_i64().unwrap_or(0));
                                this.backup_last_success.set(unix_now());
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        if let Some(machines) = &runtime.machines {
            let mut events = machines.subscribe();
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(MachineEvent::Transition { machine, event, .. }) => {
                            this.transitions
                                .get_or_create(&TransitionLabels { machine, event })
                                .inc();
                        }
                        Ok(MachineEvent::ActionError {
                            machine, action, ..
                        }) => {
                            this.action_errors
                                .get_or_create(&ActionLabels { machine, action })
                                .inc();
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
    }

    /// The text exposition format.
    pub fn render(&self, runtime: &Runtime) -> String {
        if let Some(cache) = &runtime.cache {
            let s = cache.snapshot();
            let add = |counter: &Counter, seen: &AtomicU64, now: u64| {
                let before = seen.swap(now, Ordering::Relaxed);
                counter.inc_by(now.saturating_sub(before));
            };
            add(&self.cache_hits, &self.seen_hits, s.hits);
            add(&self.cache_misses, &self.seen_misses, s.misses);
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
