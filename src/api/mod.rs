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

use std::sync::{Arc, OnceLock};

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub use error::ApiError;
use extract::{Body, Path, Query};

use answers::{
    typed, Accepted, BackupAnswer, BackupStarted, Document, EntityPath, ErrorBody, EventsMedia,
    GraphMedia, Health, IdPath, JobAnswer, JobPath, JobRun, LastReload, MachinePath,
    ManifestAnswer, MetricsMedia, Readiness, ReadinessAnswer, ReloadAnswer, RestoreAnswer,
    RunLease, Text, TransitionEntry,
};
use openapi::{doc, optional_body, Answers};

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

/// The router, with the token check when a token is configured, and the OpenAPI document
/// built from it.
pub fn router(state: Shared) -> Router {
    let named = Answers::NAMED;
    let job_switch = Answers {
        unavailable: true,
        ..named
    };
    let job_run = Answers {
        conflict: true,
        ..job_switch
    };
    let entity_write = Answers {
        conflict: true,
        unavailable: true,
        ..named
    };
    let plugin = Answers::PLUGIN;
    let none = Answers::default();
    // Filled once the router is built: the document describes the router it is served by.
    let document: Arc<OnceLock<Arc<Value>>> = Arc::default();
    let served = document.clone();
    let api = ApiRouter::new()
        .api_route(
            "/api/v1/openapi.json",
            get_with(
                move || {
                    let doc = served.get().cloned().unwrap_or_default();
                    async move { Document(doc) }
                },
                doc("openapi", "meta", "This document", none),
            ),
        )
        .api_route(
            "/api/v1/manifest",
            get_with(
                effective_manifest,
                doc("manifest", "meta", "The effective manifest, secrets redacted, and its SHA-256", none),
            ),
        )
        .api_route(
            "/api/v1/jobs",
            get_with(list_jobs, doc("listJobs", "jobs", "Every job with its next run", none)),
        )
        .api_route(
            "/api/v1/jobs/{name}",
            get_with(job_status, doc("getJob", "jobs", "A job's status, and who runs it now", named)),
        )
        .api_route(
            "/api/v1/jobs/{name}/run",
            post_with(run_job, |t| {
                optional_body(doc("runJob", "jobs", "Run a job now and answer its run record", job_run)(t))
            }),
        )
        .api_route(
            "/api/v1/jobs/{name}/enable",
            post_with(enable_job, doc("enableJob", "jobs", "Enable a job on every runner", job_switch)),
        )
        .api_route(
            "/api/v1/jobs/{name}/disable",
            post_with(disable_job, doc("disableJob", "jobs", "Disable a job on every runner", job_switch)),
        )
        .api_route(
            "/api/v1/jobs/{name}/history",
            get_with(job_history, doc("jobHistory", "jobs", "A job's runs, newest first", named)),
        )
        .api_route(
            "/api/v1/jobs/{name}/stats",
            get_with(job_stats, doc("jobStatistics", "jobs", "A job's statistics from the shared history", named)),
        )
        .api_route(
            "/api/v1/machines",
            get_with(list_machines, doc("listMachines", "machines", "Machine names", none)),
        )
        .api_route(
            "/api/v1/machines/{machine}",
            get_with(machine_definition, doc("getMachine", "machines", "A machine's definition", named)),
        )
        .api_route(
            "/api/v1/machines/{machine}/graph",
            get_with(machine_graph, doc("machineGraph", "machines", "A machine's diagram (dot or mermaid)", named)),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}",
            get_with(entity_state, doc("getEntity", "machines", "An entity's state and valid events", named))
                .post_with(init_entity, |t| {
                    optional_body(doc("initEntity", "machines", "Initialize an entity", entity_write)(t))
                }),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}/events",
            post_with(send_event, doc("sendEvent", "machines", "Send an event", entity_write)),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}/history",
            get_with(entity_history, doc("entityHistory", "machines", "An entity's transitions, newest first", named)),
        )
        .api_route(
            "/api/v1/events",
            get_with(event_stream, doc("events", "events", "The runner's events as Server-Sent Events", none)),
        )
        .api_route(
            "/api/v1/backups",
            get_with(list_backups, doc("listBackups", "backups", "Backups at the destinations, newest first", plugin))
                .post_with(start_backup, |t| {
                    optional_body(doc(
                        "startBackup",
                        "backups",
                        "Start a backup (202 with its id; 409 while another runs)",
                        Answers { conflict: true, bad_input: true, ..plugin },
                    )(t))
                }),
        )
        .api_route(
            "/api/v1/backups/{id}",
            get_with(backup_status, doc("getBackup", "backups", "A backup's status (with progress while it runs)", named)),
        )
        .api_route(
            "/api/v1/backups/{id}/restore",
            post_with(restore_backup, |t| {
                optional_body(doc(
                    "restoreBackup",
                    "backups",
                    "Start a restore of a backup, verified before any write (202 with its id; with ?wait=true, 200 with its statistics when done)",
                    Answers { conflict: true, unprocessable: true, unavailable: true, ..named },
                )(t))
            }),
        )
        .api_route(
            "/api/v1/restores",
            get_with(list_restores, doc("listRestores", "backups", "Restores started over this runner's API, newest first", none)),
        )
        .api_route(
            "/api/v1/restores/{id}",
            get_with(restore_status, doc("getRestore", "backups", "A restore's status: running, completed (with its statistics) or failed (with its error)", named)),
        )
        .api_route(
            "/api/v1/cache",
            get_with(cache_stats, doc("cacheStats", "cache", "The runner's cache: driver, entries, bytes and its hit/miss counters", plugin)),
        )
        .api_route(
            "/api/v1/cache/clear",
            post_with(cache_clear, doc("clearCache", "cache", "Empty the runner's cache (its memory too)", plugin)),
        )
        .api_route(
            "/api/v1/reload",
            get_with(last_reload, doc("lastReload", "runner", "The last reload's result and diagnostics", none))
                .post_with(reload_now, doc("reload", "runner", "Reload the manifest now (422 when it is refused and the old one keeps running)", none)),
        )
        .api_route(
            "/metrics",
            get_with(render_metrics, doc("metrics", "metrics", "Prometheus metrics: the text format 0.0.4, or OpenMetrics when `Accept` asks for it", none)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mut generated = aide::openapi::OpenApi::default();
    let router = ApiRouter::new()
        .api_route(
            "/healthz",
            get_with(
                || async { Json(Health { status: "ok" }) },
                doc("health", "health", "Liveness", none),
            ),
        )
        .api_route(
            "/readyz",
            get_with(
                readiness,
                doc(
                    "ready",
                    "health",
                    "Readiness: the scheduler runs and the store answers",
                    none,
                ),
            ),
        )
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .finish_api(&mut generated);
    let _ = document.set(Arc::new(openapi::finish(generated)));
    router
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

/// 200 while the scheduler runs and the store answers; 503 with the reason otherwise, so that
/// a load balancer or Kubernetes stops sending work to a runner cut off from its store.
async fn readiness(State(state): State<Shared>) -> ReadinessAnswer {
    ReadinessAnswer(match state.runtime.readiness.check() {
        Ok(()) => Ok(Readiness {
            status: "ready",
            reason: None,
        }),
        Err(reason) => Err(Readiness {
            status: "unavailable",
            reason: Some(reason.to_string()),
        }),
    })
}

async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let manifest = state.reloader.manifest();
    let Some(token) = manifest
        .manifest
        .server
        .token
        .as_ref()
        .filter(|t| !t.is_empty())
    else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time, so the token cannot be guessed byte by byte from timings.
    let ok = presented.is_some_and(|p| {
        let (a, b) = (p.as_bytes(), token.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if ok {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
        .into_response()
    }
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
