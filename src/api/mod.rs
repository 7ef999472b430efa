//! The control API: a small HTTP server on `server.listen` that shows and drives what the
//! runtime runs. Handlers call the same plugin functions as the command line. When
//! `server.token` is set, every endpoint but `/healthz` and `/readyz` needs it as a bearer token.
//! Errors are JSON: `{"code": "...", "message": "..."}`.

pub mod events;
pub mod metrics;
pub mod openapi;
pub mod restores;

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::plugins::backup::{Backup, BackupError, RestoreOptions};
use crate::plugins::scheduler::jobs::JobError;
use crate::plugins::state_machine::MachineError;
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

/// A JSON error with a code and an HTTP status.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ApiError {
    fn body(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// A JSON request body whose refusals (malformed JSON, wrong types, another content type, too
/// large) are answered as every other error, `{"code","message"}`, with axum's status.
pub struct Body<T>(pub T);

fn body_rejection(r: axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection as R;
    let code = match &r {
        R::JsonDataError(_) => "invalid_body",
        R::JsonSyntaxError(_) => "malformed_body",
        R::MissingJsonContentType(_) => "unsupported_media_type",
        R::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "unreadable_body",
    };
    ApiError::new(r.status(), code, r.body_text())
}

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match <Json<T> as axum::extract::FromRequest<S>>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => Err(body_rejection(r)),
        }
    }
}

impl<S, T> axum::extract::OptionalFromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match <Json<T> as axum::extract::OptionalFromRequest<S>>::from_request(req, state).await {
            Ok(v) => Ok(v.map(|Json(v)| Body(v))),
            Err(r) => Err(body_rejection(r)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let (status, code) = match &e {
            JobError::Unknown(..) => (StatusCode::NOT_FOUND, "job_not_found"),
            JobError::Exists(_) => (StatusCode::CONFLICT, "job_exists"),
            JobError::Running(_) | JobError::RunningElsewhere { .. } => {
                (StatusCode::CONFLICT, "job_running")
            }
            JobError::Lease { .. } => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            JobError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "database_error"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<MachineError> for ApiError {
    fn from(e: MachineError) -> Self {
        let (status, code) = match &e {
            MachineError::UnknownMachine(..) => (StatusCode::NOT_FOUND, "machine_not_found"),
            MachineError::NotInitialized { .. } => (StatusCode::NOT_FOUND, "entity_not_found"),
            MachineError::AlreadyInitialized { .. } => (StatusCode::CONFLICT, "entity_exists"),
            MachineError::InvalidEvent { .. } | MachineError::FinalState { .. } => {
                (StatusCode::CONFLICT, "event_refused")
            }
            MachineError::GuardDenied { .. } | MachineError::GuardFailed { .. } => {
                (StatusCode::CONFLICT, "guard_denied")
            }
            MachineError::Contention { .. } => (StatusCode::SERVICE_UNAVAILABLE, "contention"),
            // An id the database refuses (empty, too long, a control character) is the
            // caller's to fix.
            MachineError::Db(crate::db::DbError::InvalidId { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_id")
            }
            MachineError::Corrupt(..) | MachineError::Db(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "database_error")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let status = match &e {
            BackupError::NotFound(_) => StatusCode::NOT_FOUND,
            BackupError::Locked { .. } => StatusCode::CONFLICT,
            BackupError::Config(_) => StatusCode::BAD_REQUEST,
            BackupError::Unusable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BackupError::Cancelled(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.code(), e.to_string())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

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

#[derive(Deserialize)]
struct EventsQuery {
    /// Comma-separated event types to keep.
    types: Option<String>,
}

async fn event_stream(State(s): State<Shared>, Query(q): Query<EventsQuery>) -> Response {
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
    s.events.stream(types).into_response()
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

/// The runner's own cache: a memory cache lives only in this process, so `cache stats` and
/// `cache clear` come here rather than opening a cache of their own.
async fn cache_stats(State(s): State<Shared>) -> ApiResult {
    Ok(Json(cache(&s)?.report().await))
}

async fn cache_clear(State(s): State<Shared>) -> ApiResult {
    Ok(Json(cache(&s)?.clear_reporting().await))
}

/// The router, with the token check when a token is configured.
pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{name}", get(job_status))
        .route("/api/v1/jobs/{name}/run", post(run_job))
        .route("/api/v1/jobs/{name}/enable", post(enable_job))
        .route("/api/v1/jobs/{name}/disable", post(disable_job))
        .route("/api/v1/jobs/{name}/history", get(job_history))
        .route("/api/v1/jobs/{name}/stats", get(job_stats))
        .route("/api/v1/machines", get(list_machines))
        .route("/api/v1/machines/{machine}", get(machine_definition))
        .route("/api/v1/machines/{machine}/graph", get(machine_graph))
        .route(
            "/api/v1/machines/{machine}/entities/{entity}",
            get(entity_state).post(init_entity),
        )
        .route(
            "/api/v1/machines/{machine}/entities/{entity}/events",
            post(send_event),
        )
        .route(
            "/api/v1/machines/{machine}/entities/{entity}/history",
            get(entity_history),
        )
        .route("/api/v1/backups", get(list_backups).post(start_backup))
        .route("/api/v1/backups/{id}", get(backup_status))
        .route("/api/v1/backups/{id}/restore", post(restore_backup))
        .route("/api/v1/restores", get(list_restores))
        .route("/api/v1/restores/{id}", get(restore_status))
        .route("/api/v1/events", get(event_stream))
        .route("/api/v1/cache", get(cache_stats))
        .route("/api/v1/cache/clear", post(cache_clear))
        .route("/api/v1/manifest", get(effective_manifest))
        .route("/api/v1/reload", get(last_reload).post(reload_now))
        .route("/metrics", get(render_metrics))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readiness))
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

/// 200 while the scheduler runs and the store answers; 503 with the reason otherwise, so that
/// a load balancer or Kubernetes stops sending work to a runner cut off from its store.
async fn readiness(State(state): State<Shared>) -> Response {
    match state.runtime.readiness.check() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": reason.to_string() })),
        )
            .into_response(),
    }
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

async fn list_jobs(State(s): State<Shared>) -> ApiResult {
    Ok(Json(json!(s.runtime.scheduler.all_status())))
}

/// A job's status; `run` says who holds its run lease when a run is going on any runner (a
/// job with `overlap: allow` takes no lease, so it shows only this runner's runs).
async fn job_status(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let mut status = json!(s.runtime.scheduler.status(&name)?);
    if let Some(holder) = s.runtime.scheduler.run_holder(&name).await? {
        status["running"] = json!(true);
        status["run"] = json!({ "holder": holder.holder, "until": holder.until });
    }
    Ok(Json(status))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct RunBody {
    #[serde(default)]
    context: Value,
}

async fn run_job(
    State(s): State<Shared>,
    Path(name): Path<String>,
    body: Option<Body<RunBody>>,
) -> ApiResult {
    let context = body
        .map(|b| b.0.context)
        .filter(|c| !c.is_null())
        .unwrap_or_else(|| json!({}));
    Ok(Json(s.runtime.scheduler.run_now(&name, context).await?))
}

/// getJobStatistics: runs, successes, errors, success rate, average duration, last success and
/// error, from the shared history (the same on every runner).
async fn job_stats(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(json!(s.runtime.scheduler.statistics(&name).await?)))
}

async fn enable_job(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    s.runtime.scheduler.enable(&name).await?;
    Ok(Json(json!(s.runtime.scheduler.status(&name)?)))
}

async fn disable_job(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult {
    s.runtime.scheduler.disable(&name).await?;
    Ok(Json(json!(s.runtime.scheduler.status(&name)?)))
}

#[derive(Deserialize)]
struct HistoryQuery {
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn job_history(
    State(s): State<Shared>,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    s.runtime.scheduler.status(&name)?;
    Ok(Json(json!(
        s.runtime
            .scheduler
            .history(&name, q.status.as_deref(), q.limit)
            .await?
    )))
}

async fn list_machines(State(s): State<Shared>) -> ApiResult {
    let names = s
        .runtime
        .machines
        .as_ref()
        .map(|m| m.machine_names())
        .unwrap_or_default();
    Ok(Json(json!(names)))
}

async fn machine_definition(State(s): State<Shared>, Path(machine): Path<String>) -> ApiResult {
    Ok(Json(json!(machines(&s)?.definition(&machine)?)))
}

#[derive(Deserialize)]
struct GraphQuery {
    format: Option<String>,
}

async fn machine_graph(
    State(s): State<Shared>,
    Path(machine): Path<String>,
    Query(q): Query<GraphQuery>,
) -> Result<Response, ApiError> {
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
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct InitBody {
    #[serde(default)]
    context: Value,
}

async fn init_entity(
    State(s): State<Shared>,
    Path((machine, entity)): Path<(String, String)>,
    body: Option<Body<InitBody>>,
) -> ApiResult {
    let context = body.map(|b| b.0.context).unwrap_or(Value::Null);
    Ok(Json(json!(
        machines(&s)?.initialize(&machine, &entity, context).await?
    )))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventBody {
    event: String,
    #[serde(default)]
    context: Value,
    event_id: Option<String>,
}

async fn send_event(
    State(s): State<Shared>,
    Path((machine, entity)): Path<(String, String)>,
    Body(body): Body<EventBody>,
) -> ApiResult {
    let r = machines(&s)?
        .send(
            &machine,
            &entity,
            &body.event,
            body.context,
            body.event_id.as_deref(),
        )
        .await?;
    Ok(Json(json!(r)))
}

async fn entity_state(
    State(s): State<Shared>,
    Path((machine, entity)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(json!(machines(&s)?.state(&machine, &entity).await?)))
}

async fn entity_history(
    State(s): State<Shared>,
    Path((machine, entity)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    Ok(Json(json!(
        machines(&s)?
            .history(&machine, &entity, q.limit, q.offset.unwrap_or(0))
            .await?
    )))
}

/// OpenMetrics to a scraper that asks for it (Prometheus does, first), the Prometheus text
/// format to everyone else.
async fn render_metrics(State(s): State<Shared>, headers: header::HeaderMap) -> Response {
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
    (
        [(header::CONTENT_TYPE, content_type)],
        s.metrics.render(&s.runtime, openmetrics),
    )
        .into_response()
}

async fn effective_manifest(State(s): State<Shared>) -> ApiResult {
    let manifest = s.reloader.manifest();
    Ok(Json(
        json!({ "sha256": manifest.sha256, "manifest": manifest.manifest }),
    ))
}

#[derive(Deserialize, Default)]
struct BackupListQuery {
    limit: Option<usize>,
    prefix: Option<String>,
}

async fn list_backups(State(s): State<Shared>, Query(q): Query<BackupListQuery>) -> ApiResult {
    let list = backup(&s)?
        .list_backups(q.limit, q.prefix.as_deref())
        .await?;
    Ok(Json(json!(list)))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct BackupBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    resources: Option<Vec<String>>,
}

/// Starts a backup and answers at once (202) with its id; `GET /api/v1/backups/{id}` follows it.
async fn start_backup(State(s): State<Shared>, body: Option<Body<BackupBody>>) -> Response {
    let plugin = match backup(&s) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body = body.map(|b| b.0).unwrap_or_default();
    let label = body.kind.unwrap_or_else(|| "full".into());
    // Refusals the caller can act on are answered now, not as a failed backup later.
    if let Err(e) = Backup::check_label(&label) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_backup_type",
            e.to_string(),
        )
        .into_response();
    }
    match plugin.lock_holder().await {
        Ok(Some((holder, until))) => {
            return (
                StatusCode::CONFLICT,
                Json(json!({
                    "code": "backup_locked",
                    "message": format!("another backup, prune or restore is running ({holder}, lease until {until})"),
                    "holder": holder,
                    "until": until,
                })),
            )
                .into_response()
        }
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    let id = Backup::new_id(&label);
    let answer = json!({ "id": id, "type": label, "status": "running" });
    tokio::spawn(async move {
        // Failures are logged, emitted as events and written to the backup's metadata.
        let _ = plugin.backup_with_id(id, &label, body.resources).await;
    });
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn backup_status(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let plugin = backup(&s)?;
    if plugin.running().contains(&id) {
        let progress = plugin.live_progress().unwrap_or(Value::Null);
        // The stored metadata may be slow to read while the backup itself keeps the store
        // busy (or stalled); what this process knows is answered regardless.
        let stored =
            tokio::time::timeout(std::time::Duration::from_secs(2), plugin.status(&id)).await;
        let mut answer = match stored {
            Ok(Ok(info)) => json!(info),
            _ => json!({ "id": id, "status": "running" }),
        };
        // This process runs it: whatever the stored metadata says (its lease may look stale
        // while the store is slow), it is running.
        answer["status"] = json!("running");
        answer["progress"] = progress;
        return Ok(Json(answer));
    }
    Ok(Json(json!(plugin.status(&id).await?)))
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
pub(crate) struct RestoreBody {
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    resources: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RestoreQuery {
    /// Answer when the restore is done, with its statistics, instead of at once.
    #[serde(default)]
    wait: bool,
}

/// Starts a restore and answers at once (202) with its id; `GET /api/v1/restores/{id}` follows
/// it. With `?wait=true`, answers when it is done, with its statistics or its error.
async fn restore_backup(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<RestoreQuery>,
    body: Option<Body<RestoreBody>>,
) -> Response {
    let body = body.map(|b| b.0).unwrap_or_default();
    let plugin = match backup(&s) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // An unknown backup is refused now rather than reported as a failed restore later.
    if let Err(e) = plugin.status(&id).await {
        return ApiError::from(e).into_response();
    }
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
            let outcome = plugin
                .restore(&id, options)
                .await
                .map(|stats| json!(stats))
                .map_err(ApiError::from);
            s.restores.finish(
                &restore_id,
                outcome.as_ref().map(Value::clone).map_err(ApiError::body),
            );
            outcome
        }
    });
    if !q.wait {
        let location = format!("/api/v1/restores/{}", run.restore_id);
        return (
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(json!(run)),
        )
            .into_response();
    }
    match task.await {
        Ok(Ok(stats)) => Json(stats).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "restore_failed",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn list_restores(State(s): State<Shared>) -> ApiResult {
    Ok(Json(json!(s.restores.list())))
}

async fn restore_status(State(s): State<Shared>, Path(id): Path<String>) -> ApiResult {
    s.restores
        .get(&id)
        .map(|run| Json(json!(run)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "restore_not_found",
                format!("no restore `{id}` was started over this runner's API"),
            )
        })
}

/// Reloads the manifest now; answers with the result and any diagnostics (422 when the new
/// manifest was refused and the old one keeps running).
async fn reload_now(State(s): State<Shared>) -> Response {
    let result = s.reloader.reload("api").await;
    let status = if result.result == "failed" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (status, Json(json!(result))).into_response()
}

async fn last_reload(State(s): State<Shared>) -> ApiResult {
    Ok(Json(match s.reloader.last() {
        Some(r) => json!(r),
        None => json!({ "result": "none", "sha256": s.reloader.manifest().sha256 }),
    }))
}
