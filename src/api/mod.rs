//! The control API: a small HTTP server on `server.listen` that shows and drives what the
//! runtime runs. Handlers call the same plugin functions as the command line. When
//! `server.token` is set, every endpoint but `/healthz` and `/readyz` needs it as a bearer token.
//! Errors are JSON: `{"code": "...", "message": "..."}`.

pub mod answers;
mod error;
pub mod events;
mod extract;
pub mod metrics;
pub mod openapi;
pub mod restores;
mod routes;

pub use routes::router;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub use error::ApiError;
use extract::{Body, Path, Query};

use answers::{
    typed, Accepted, BackupAnswer, BackupStarted, EntityPath, ErrorBody, EventsMedia, GraphMedia,
    IdPath, JobAnswer, JobPath, JobRun, LastReload, MachinePath, ManifestAnswer, MetricsMedia,
    ReloadAnswer, RestoreAnswer, RunLease, Text, TransitionEntry,
};

use crate::plugins::backup::{Backup, BackupInfo, RestoreOptions, RestoreStats};
use crate::plugins::scheduler::jobs::{JobStatistics, JobStatus};
use crate::plugins::state_machine::{EntityStatus, TransitionResult};
use crate::runtime::reload::Reloader;
use crate::runtime::Runtime;

/// What the handlers share.
pub struct ApiState {
    pub runtime: Arc<Runtime>,
    /// The running manifest, swapped by reloads.
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<metrics::Metrics>,
    /// Restores started over the API, followed at `/api/v1/restores`.
    pub restores: restores::Restores,
    /// The plugins' events, streamed at `/api/v1/events`.
    pub events: Arc<events::Events>,
}

type Shared = Arc<ApiState>;

type ApiResult<T> = Result<Json<T>, ApiError>;

fn backup(state: &ApiState) -> Result<Backup, ApiError> {
    state.runtime.backup().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_backup",
            "this manifest has no `backup:` section",
        )
    })
}

fn machines(state: &ApiState) -> Result<&crate::plugins::state_machine::StateMachines, ApiError> {
    state.runtime.machines.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_machines",
            "this manifest defines no state machines",
        )
    })
}

fn cache(state: &ApiState) -> Result<&crate::plugins::cache::Cache, ApiError> {
    state.runtime.cache.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_cache",
            "this manifest has no `cache:` section",
        )
    })
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EventsQuery {
    /// Comma-separated event types to keep (`transition,job_error`); all when absent.
    types: Option<String>,
}

async fn event_stream(State(s): State<Shared>, Query(q): Query<EventsQuery>) -> Text<EventsMedia> {
    let types = q
        .types
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Text::new(s.events.stream(types))
}

/// The runner's own cache: a memory cache lives only in this process, so `cache stats` and
/// `cache clear` come here rather than opening a cache of their own.
async fn cache_stats(State(s): State<Shared>) -> ApiResult<crate::plugins::cache::CacheReport> {
    Ok(Json(cache(&s)?.report().await))
}

async fn cache_clear(State(s): State<Shared>) -> ApiResult<crate::plugins::cache::Cleared> {
    Ok(Json(cache(&s)?.clear_reporting().await))
}

async fn list_jobs(State(s): State<Shared>) -> ApiResult<Vec<JobStatus>> {
    Ok(Json(s.runtime.scheduler.all_status()))
}

/// A job's status; `run` says who holds its run lease when a run is going on any runner (a
/// job with `overlap: allow` takes no lease, so it shows only this runner's runs).
async fn job_status(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
) -> ApiResult<JobAnswer> {
    let mut status = s.runtime.scheduler.status(&name)?;
    let run = s.runtime.scheduler.run_holder(&name).await?.map(|h| {
        status.running = true;
        RunLease {
            holder: h.holder,
            until: h.until,
        }
    });
    Ok(Json(JobAnswer { status, run }))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct RunBody {
    /// Handed to the job's action as its context.
    #[serde(default)]
    context: Value,
}

async fn run_job(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
    body: Option<Body<RunBody>>,
) -> ApiResult<JobRun> {
    let context = body
        .map(|b| b.0.context)
        .filter(|c| !c.is_null())
        .unwrap_or_else(|| json!({}));
    Ok(Json(typed(
        s.runtime.scheduler.run_now(&name, context).await?,
    )?))
}

/// getJobStatistics: runs, successes, errors, success rate, average duration, last success and
/// error, from the shared history (the same on every runner).
async fn job_stats(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
) -> ApiResult<JobStatistics> {
    Ok(Json(s.runtime.scheduler.statistics(&name).await?))
}

async fn enable_job(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
) -> ApiResult<JobStatus> {
    s.runtime.scheduler.enable(&name).await?;
    Ok(Json(s.runtime.scheduler.status(&name)?))
}

async fn disable_job(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
) -> ApiResult<JobStatus> {
    s.runtime.scheduler.disable(&name).await?;
    Ok(Json(s.runtime.scheduler.status(&name)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
struct JobHistoryQuery {
    /// Only runs of this status (`success`, `error`, `timeout`, …).
    status: Option<String>,
    /// At most this many runs.
    limit: Option<usize>,
}

async fn job_history(
    State(s): State<Shared>,
    Path(JobPath { name }): Path<JobPath>,
    Query(q): Query<JobHistoryQuery>,
) -> ApiResult<Vec<JobRun>> {
    s.runtime.scheduler.status(&name)?;
    let runs = s
        .runtime
        .scheduler
        .history(&name, q.status.as_deref(), q.limit)
        .await?;
    Ok(Json(runs.into_iter().map(typed).collect::<Result<_, _>>()?))
}

async fn list_machines(State(s): State<Shared>) -> ApiResult<Vec<String>> {
    let names = s
        .runtime
        .machines
        .as_ref()
        .map(|m| m.machine_names())
        .unwrap_or_default();
    Ok(Json(names))
}

async fn machine_definition(
    State(s): State<Shared>,
    Path(MachinePath { machine }): Path<MachinePath>,
) -> ApiResult<crate::manifest::model::MachineDef> {
    Ok(Json(machines(&s)?.definition(&machine)?))
}

#[derive(Deserialize, schemars::JsonSchema)]
struct GraphQuery {
    /// `dot` (the default) or `mermaid`.
    format: Option<String>,
}

async fn machine_graph(
    State(s): State<Shared>,
    Path(MachinePath { machine }): Path<MachinePath>,
    Query(q): Query<GraphQuery>,
) -> Result<Text<GraphMedia>, ApiError> {
    let sm = machines(&s)?;
    let (body, content_type) = match q.format.as_deref().unwrap_or("dot") {
        "dot" => (sm.graph_dot(&machine)?, "text/vnd.graphviz"),
        "mermaid" => (sm.graph_mermaid(&machine)?, "text/plain; charset=utf-8"),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_format",
                format!("format `{other}`: use dot or mermaid"),
            ))
        }
    };
    Ok(Text::new(([(header::CONTENT_TYPE, content_type)], body)))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct InitBody {
    /// The entity's context (the machine's `initialContext` when absent).
    #[serde(default)]
    context: Value,
}

async fn init_entity(
    State(s): State<Shared>,
    Path(EntityPath { machine, entity }): Path<EntityPath>,
    body: Option<Body<InitBody>>,
) -> ApiResult<EntityStatus> {
    let context = body.map(|b| b.0.context).unwrap_or(Value::Null);
    Ok(Json(
        machines(&s)?.initialize(&machine, &entity, context).await?,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventBody {
    /// The event's name.
    event: String,
    /// Merged into the entity's context.
    #[serde(default)]
    context: Value,
    /// Makes the send idempotent: the same id again answers the first result.
    event_id: Option<String>,
}

async fn send_event(
    State(s): State<Shared>,
    Path(EntityPath { machine, entity }): Path<EntityPath>,
    Body(body): Body<EventBody>,
) -> ApiResult<TransitionResult> {
    let r = machines(&s)?
        .send(
            &machine,
            &entity,
            &body.event,
            body.context,
            body.event_id.as_deref(),
        )
        .await?;
    Ok(Json(r))
}

async fn entity_state(
    State(s): State<Shared>,
    Path(EntityPath { machine, entity }): Path<EntityPath>,
) -> ApiResult<EntityStatus> {
    Ok(Json(machines(&s)?.state(&machine, &entity).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EntityHistoryQuery {
    /// At most this many transitions.
    limit: Option<usize>,
    /// Skip this many of the newest first.
    offset: Option<usize>,
}

async fn entity_history(
    State(s): State<Shared>,
    Path(EntityPath { machine, entity }): Path<EntityPath>,
    Query(q): Query<EntityHistoryQuery>,
) -> ApiResult<Vec<TransitionEntry>> {
    let entries = machines(&s)?
        .history(&machine, &entity, q.limit, q.offset.unwrap_or(0))
        .await?;
    Ok(Json(
        entries.into_iter().map(typed).collect::<Result<_, _>>()?,
    ))
}

/// OpenMetrics to a scraper that asks for it (Prometheus does, first), the Prometheus text
/// format to everyone else.
async fn render_metrics(State(s): State<Shared>, headers: header::HeaderMap) -> Text<MetricsMedia> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    Text::new((
        [(header::CONTENT_TYPE, content_type)],
        s.metrics.render(&s.runtime, openmetrics),
    ))
}

async fn effective_manifest(State(s): State<Shared>) -> ApiResult<ManifestAnswer> {
    let manifest = s.reloader.manifest();
    Ok(Json(ManifestAnswer {
        sha256: manifest.sha256,
        manifest: manifest.manifest,
    }))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
struct BackupListQuery {
    /// At most this many backups.
    limit: Option<usize>,
    /// Only backups whose id starts with this.
    prefix: Option<String>,
}

async fn list_backups(
    State(s): State<Shared>,
    Query(q): Query<BackupListQuery>,
) -> ApiResult<Vec<BackupInfo>> {
    let list = backup(&s)?
        .list_backups(q.limit, q.prefix.as_deref())
        .await?;
    Ok(Json(list))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct BackupBody {
    /// `full` (the default), `incremental`, or a label of your own.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    /// Only these resources (such a backup is never an incremental's parent).
    #[serde(default)]
    resources: Option<Vec<String>>,
}

/// Starts a backup and answers at once (202) with its id; `GET /api/v1/backups/{id}` follows it.
async fn start_backup(
    State(s): State<Shared>,
    body: Option<Body<BackupBody>>,
) -> Result<Accepted<BackupStarted>, ApiError> {
    let plugin = backup(&s)?;
    let body = body.map(|b| b.0).unwrap_or_default();
    let label = body.kind.unwrap_or_else(|| "full".into());
    // Refusals the caller can act on are answered now, not as a failed backup later.
    if let Err(e) = Backup::check_label(&label) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_backup_type",
            e.to_string(),
        ));
    }
    if let Some((holder, until)) = plugin.lock_holder().await? {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "backup_locked",
            format!("another backup, prune or restore is running ({holder}, lease until {until})"),
        );
        e.details.insert("holder".into(), json!(holder));
        e.details.insert("until".into(), json!(until));
        return Err(e);
    }
    let id = Backup::new_id(&label);
    let answer = BackupStarted {
        id: id.clone(),
        label: label.clone(),
        status: "running",
    };
    tokio::spawn(async move {
        // Failures are logged, emitted as events and written to the backup's metadata.
        let _ = plugin.backup_with_id(id, &label, body.resources).await;
    });
    Ok(Accepted(answer))
}

async fn backup_status(
    State(s): State<Shared>,
    Path(IdPath { id }): Path<IdPath>,
) -> ApiResult<BackupAnswer> {
    let plugin = backup(&s)?;
    if plugin.running().contains(&id) {
        let progress = plugin.live_progress();
        // The stored metadata may be slow to read while the backup itself keeps the store
        // busy (or stalled); what this process knows is answered regardless.
        let stored =
            tokio::time::timeout(std::time::Duration::from_secs(2), plugin.status(&id)).await;
        return Ok(Json(match stored {
            Ok(Ok(mut info)) => {
                // This process runs it: whatever the stored metadata says (its lease may look
                // stale while the store is slow), it is running.
                info.status = "running".into();
                BackupAnswer::Stored {
                    info: Box::new(info),
                    progress,
                }
            }
            _ => BackupAnswer::Unread {
                id,
                status: "running",
                progress,
            },
        }));
    }
    Ok(Json(BackupAnswer::Stored {
        info: Box::new(plugin.status(&id).await?),
        progress: None,
    }))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct RestoreBody {
    /// Replace records that exist (and apply the backup's deletions); kept otherwise.
    #[serde(default)]
    overwrite: bool,
    /// Only these resources.
    #[serde(default)]
    resources: Option<Vec<String>>,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
struct RestoreQuery {
    /// Answer when the restore is done, with its statistics, instead of at once.
    #[serde(default)]
    wait: bool,
}

/// Starts a restore and answers at once (202) with its id; `GET /api/v1/restores/{id}` follows
/// it. With `?wait=true`, answers when it is done, with its statistics or its error.
async fn restore_backup(
    State(s): State<Shared>,
    Path(IdPath { id }): Path<IdPath>,
    Query(q): Query<RestoreQuery>,
    body: Option<Body<RestoreBody>>,
) -> Result<RestoreAnswer, ApiError> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let plugin = backup(&s)?;
    // An unknown backup is refused now rather than reported as a failed restore later.
    plugin.status(&id).await?;
    let run = s.restores.start(&id);
    // In a task of its own: a client that gives up does not cut a restore off half-way.
    let task = tokio::spawn({
        let s = s.clone();
        let restore_id = run.restore_id.clone();
        async move {
            let options = RestoreOptions {
                overwrite: body.overwrite,
                resources: body.resources,
                dry_run: false,
            };
            let outcome = plugin.restore(&id, options).await.map_err(ApiError::from);
            s.restores.finish(
                &restore_id,
                outcome
                    .as_ref()
                    .map(RestoreStats::clone)
                    .map_err(ApiError::body),
            );
            outcome
        }
    });
    if !q.wait {
        return Ok(RestoreAnswer::Started(Box::new(run)));
    }
    match task.await {
        Ok(outcome) => outcome.map(RestoreAnswer::Done),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "restore_failed",
            e.to_string(),
        )),
    }
}

async fn list_restores(State(s): State<Shared>) -> ApiResult<Vec<restores::RestoreRun>> {
    Ok(Json(s.restores.list()))
}

async fn restore_status(
    State(s): State<Shared>,
    Path(IdPath { id }): Path<IdPath>,
) -> ApiResult<restores::RestoreRun> {
    s.restores.get(&id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "restore_not_found",
            format!("no restore `{id}` was started over this runner's API"),
        )
    })
}

/// Reloads the manifest now; answers with the result and any diagnostics (422 when the new
/// manifest was refused and the old one keeps running).
async fn reload_now(State(s): State<Shared>) -> ReloadAnswer {
    ReloadAnswer(s.reloader.reload("api").await)
}

async fn last_reload(State(s): State<Shared>) -> ApiResult<LastReload> {
    Ok(Json(match s.reloader.last() {
        Some(r) => LastReload::Reload(r),
        None => LastReload::None {
            result: "none",
            sha256: s.reloader.manifest().sha256,
        },
    }))
}
