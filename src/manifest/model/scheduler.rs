//! The scheduler plugin and its jobs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// Options of the scheduler plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SchedulerConfig {
    /// Time zone of every job's schedule, unless the job names its own.
    pub timezone: TimeZone,
    /// Timeout of a job that sets none.
    pub default_timeout: Duration,
    /// Retries of a job that sets none.
    pub default_retries: u32,
    /// Store one history record per run.
    pub persist_jobs: bool,
    /// Resource that holds job history.
    pub job_history_resource: String,
    /// How much job history to keep; without it, every run is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_retention: Option<HistoryRetention>,
    /// Hook called when a job starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_start: Option<HookRef>,
    /// Hook called when a job completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_complete: Option<HookRef>,
    /// Hook called when a job fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_error: Option<HookRef>,
    /// Log every run.
    pub verbose: bool,
    /// How long a job's run lease lasts without renewal (renewed every third of it). Overlap
    /// policies hold across runners through this lease; a killed runner's lease expires after
    /// it, and `replace` cancels another runner's run within a third of it.
    pub lease_ttl: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            timezone: TimeZone::default(),
            default_timeout: Duration::from_millis(60_000),
            default_retries: 1,
            persist_jobs: true,
            job_history_resource: "job_history".into(),
            history_retention: None,
            on_job_start: None,
            on_job_complete: None,
            on_job_error: None,
            verbose: false,
            lease_ttl: Duration::from_millis(30_000),
        }
    }
}

/// How much job history to keep. A job's newest run and runs still `running` are always kept;
/// the rest goes when either limit says so. Applied at startup and every 5 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryRetention {
    /// Keep at most this many runs of each job, the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_runs: Option<u32>,
    /// Remove runs older than this (by their slot, or a manual run's start), e.g. `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobDef {
    /// Cron expression: 5 fields (an optional leading seconds field), names (MON, JAN), ranges,
    /// steps and lists, or @yearly @annually @monthly @weekly @daily @hourly.
    #[schemars(example = "0 3 * * *", example = "*/15 * * * *", example = "@daily")]
    pub schedule: Schedule,
    /// What the job does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The hook to run: a name under `actions:`, a built-in's name, or an inline hook.
    pub action: HookRef,
    /// Disabled jobs are not scheduled (they can still be run by hand).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Retries after a failure, with exponential backoff (default: the scheduler's
    /// `defaultRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// How long a run may take (default: the scheduler's `defaultTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time zone of this job's schedule (default: the scheduler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZone>,
    /// What to do when a slot comes while the previous run is still going.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What to do at start about slots missed while no runner was up.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How late a missed slot may still run at start (default: one schedule interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Delay each run by a stable, per-job amount up to this duration, to spread load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Free-form metadata, returned by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OverlapPolicy {
    /// Skip the new slot.
    #[default]
    Skip,
    /// Run it after the current run ends.
    Queue,
    /// Stop the current run and start the new one.
    Replace,
    /// Run both at once.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Run the latest missed slot once at start, if within `startingDeadline`.
    #[default]
    Latest,
    /// Never run missed slots.
    None,
}
