//! Prometheus metrics at `/metrics`: job runs by job and status, run durations, last success
//! time; transitions by machine and event; action errors; cache hits and misses; the manifest's
//! hash. Filled from the plugins' event streams, so no plugin knows about metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::plugins::scheduler::JobEvent;
use crate::plugins::state_machine::MachineEvent;
use crate::runtime::Runtime;

// `job_name`, not `job`: Prometheus sets `job` on every scraped series itself, and would keep
// ours only as `exported_job`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatusLabels {
    job_name: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
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

/// How often the last-success and last-failure gauges are brought up to the shared history
/// (what other runners did); this runner's own runs move them at once.
const HISTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    job_runs: Family<JobStatusLabels, Counter>,
    job_duration: Family<JobLabels, Histogram, fn() -> Histogram>,
    job_last_success: Family<JobLabels, Gauge<f64, AtomicU64>>,
    job_last_failure: Family<JobLabels, Gauge<f64, AtomicU64>>,
    jobs_running: Gauge,
    deadlines_pending: Gauge,
    restores: Family<RestoreLabels, Counter>,
    restore_duration: Histogram,
    backup_last_failure: Gauge<f64, AtomicU64>,
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
    /// The process's own metrics (`process_*`, unprefixed as every exporter names them).
    process: Registry,
    process_cpu: Counter<f64, AtomicU64>,
    process_gauges: [Gauge<f64, AtomicU64>; 5],
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestoreLabels {
    status: String,
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
        let job_last_failure = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "job_last_failure_timestamp_seconds",
            "When each job last failed (error, timeout or interrupted; Unix time)",
            job_last_failure.clone(),
        );
        let jobs_running = Gauge::default();
        registry.register(
            "jobs_running",
            "Jobs running in this runner now",
            jobs_running.clone(),
        );
        let deadlines_pending = Gauge::default();
        registry.register(
            "deadlines_pending",
            "State machine `after` deadlines this runner is waiting for",
            deadlines_pending.clone(),
        );
        let restores = Family::<RestoreLabels, Counter>::default();
        registry.register(
            "restores",
            "Restores by final status (completed, failed)",
            restores.clone(),
        );
        let restore_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "restore_duration_seconds",
            "Duration of completed restores",
            restore_duration.clone(),
        );
        let backup_last_failure = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "backup_last_failure_timestamp_seconds",
            "When a backup last failed (Unix time)",
            backup_last_failure.clone(),
        );
        registry.register(
            "hook_failures",
            "Hook calls that failed after their retries, by hook and kind (guard, action, job, callback)",
            crate::hooks::runner::HOOK_FAILURES.clone(),
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
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: env!("S3DB_BUILD_COMMIT").into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build's version and commit",
            build,
        );
        let s3 = &crate::store::s3_metrics::S3_METRICS;
        registry.register(
            "s3_requests",
            "S3 operations (retries included) by operation and outcome: success, not_found, precondition_failed, not_modified, throttled, client_error, server_error, timeout, network_error",
            s3.requests.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "Duration of S3 operations, retries included, by operation",
            s3.duration.clone(),
        );
        let mut process = Registry::default();
        let process_cpu = Counter::<f64, AtomicU64>::default();
        process.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            process_cpu.clone(),
        );
        let process_gauges: [Gauge<f64, AtomicU64>; 5] = Default::default();
        for (gauge, (name, help)) in process_gauges.iter().zip(PROCESS_GAUGES) {
            process.register(name, help, gauge.clone());
        }
        Arc::new(Self {
            process,
            process_cpu,
            process_gauges,
            registry,
            job_runs,
            job_duration,
            job_last_success,
            job_last_failure,
            jobs_running,
            deadlines_pending,
            restores,
            restore_duration,
            backup_last_failure,
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

    /// Moves the last-success and last-failure gauges up to what the database's shared
    /// history says, so that they are right after a restart and on a runner that did not run
    /// the job or backup itself (an alert on "no backup for 26 h" must not fire because this
    /// replica has just started). Run at startup and every `HISTORY_REFRESH`.
    async fn seed_from_history(&self, runtime: &Runtime) {
        let at = |text: Option<&str>| {
            text.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis() as f64 / 1000.0)
        };
        let raise = |gauge: &Gauge<f64, AtomicU64>, value: Option<f64>| {
            if let Some(v) = value.filter(|v| *v > gauge.get()) {
                gauge.set(v);
            }
        };
        for job in runtime.scheduler.all_status() {
            let Ok(stats) = runtime.scheduler.statistics(&job.name).await else {
                continue;
            };
            let labels = JobLabels {
                job_name: job.name.clone(),
            };
            // A series only for what happened: a job that never failed has no failure time.
            for (family, when) in [
                (&self.job_last_success, &stats.last_success),
                (&self.job_last_failure, &stats.last_error),
            ] {
                if let Some(t) = at(when.as_deref()) {
                    raise(&family.get_or_create(&labels), Some(t));
                }
            }
        }
        if let Some(backup) = runtime.backup() {
            if let Ok(list) = backup.list_backups(None, None).await {
                let done = |status: &str| {
                    list.iter()
                        .filter(|b| b.status == status)
                        .filter_map(|b| b.completed_at.or(Some(b.started_at)))
                        .max()
                        .map(|t| t.timestamp_millis() as f64 / 1000.0)
                };
                raise(&self.backup_last_success, done("completed"));
                raise(&self.backup_last_failure, done("failed"));
            }
        }
    }

    /// Follows the plugins' events for as long as the runtime lives.
    pub fn follow(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        {
            let this = self.clone();
            let runtime = Arc::downgrade(runtime);
            tokio::spawn(async move {
                loop {
                    let Some(rt) = runtime.upgrade() else { return };
                    this.seed_from_history(&rt).await;
                    drop(rt);
                    tokio::time::sleep(HISTORY_REFRESH).await;
                }
            });
        }
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
                                job_name: job.clone(),
                                status: status.clone(),
                            })
                            .inc();
                        this.job_duration
                            .get_or_create(&JobLabels {
                                job_name: job.clone(),
                            })
                            .observe(duration_ms as f64 / 1000.0);
                        let gauge = if status == "success" {
                            &this.job_last_success
                        } else {
                            &this.job_last_failure
                        };
                        gauge
                            .get_or_create(&JobLabels { job_name: job })
                            .set(unix_now());
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
                            match e.event {
                                "restore_complete" | "restore_error" => {
                                    let status = if e.event == "restore_complete" {
                                        "completed"
                                    } else {
                                        "failed"
                                    };
                                    this.restores
                                        .get_or_create(&RestoreLabels {
                                            status: status.into(),
                                        })
                                        .inc();
                                    if let Some(ms) = e.detail["durationMs"].as_u64() {
                                        this.restore_duration.observe(ms as f64 / 1000.0);
                                    }
                                    continue;
                                }
                                "backup_error" => {
                                    this.backup_last_failure.set(unix_now());
                                }
                                _ => {}
                            }
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

    /// The exposition: OpenMetrics when asked for, else the Prometheus text format 0.0.4.
    pub fn render(&self, runtime: &Runtime, openmetrics: bool) -> String {
        if let Some(cache) = &runtime.cache {
            let s = cache.snapshot();
            let add = |counter: &Counter, seen: &AtomicU64, now: u64| {
                let before = seen.swap(now, Ordering::Relaxed);
                counter.inc_by(now.saturating_sub(before));
            };
            add(&self.cache_hits, &self.seen_hits, s.hits);
            add(&self.cache_misses, &self.seen_misses, s.misses);
        }
        let running = runtime
            .scheduler
            .all_status()
            .iter()
            .filter(|j| j.running)
            .count();
        self.jobs_running.set(running as i64);
        if let Some(machines) = &runtime.machines {
            self.deadlines_pending
                .set(machines.pending_deadlines() as i64);
        }
        self.sample_process();
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &self.process);
        let _ = encode_eof(&mut out);
        if openmetrics {
            out
        } else {
            to_text_format(&out)
        }
    }

    fn sample_process(&self) {
        let Some(p) = process_stats() else { return };
        let seen = self.process_cpu.get();
        if p.cpu_seconds > seen {
            self.process_cpu.inc_by(p.cpu_seconds - seen);
        }
        let values = [
            p.resident_bytes,
            p.virtual_bytes,
            p.open_fds,
            p.max_fds,
            p.start_time_seconds,
        ];
        for (g, v) in self.process_gauges.iter().zip(values) {
            g.set(v);
        }
    }
}

const PROCESS_GAUGES: [(&str, &str); 5] = [
    (
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
    ),
    (
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
    ),
    ("process_open_fds", "Number of open file descriptors"),
    ("process_max_fds", "Maximum number of open file descriptors"),
    (
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
    ),
];

struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: f64,
    start_time_seconds: f64,
}

/// From /proc, where Linux keeps them; None elsewhere.
fn process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // Linux reports CPU times in USER_HZ ticks (100 on every Linux ABI) and the resident set
    // in pages (4 KiB on x86-64 and the usual arm64 kernels); sysconf is not in std.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    let (utime, stime) = (num(11)?, num(12)?);
    let start_ticks = num(19)?;
    let vsize = num(20)?;
    let rss_pages = num(21)?;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / TICKS,
        resident_bytes: rss_pages * PAGE,
        virtual_bytes: vsize,
        open_fds,
        max_fds,
        start_time_seconds: boot + start_ticks / TICKS,
    })
}

/// OpenMetrics text as the Prometheus text format 0.0.4: counters are named with their
/// `_total` suffix in HELP and TYPE, `info` families are gauges, and `# UNIT` and `# EOF`
/// lines go.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(String, String)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_string(), text.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
