//! The router: every path of the API with its handler and what the OpenAPI document says of
//! it, the token check, and the document built from the routes themselves.

use std::sync::{Arc, OnceLock};

use aide::axum::routing::{get_with, post_with};
use aide::axum::ApiRouter;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::Value;

use super::answers::{Document, Health, Readiness, ReadinessAnswer};
use super::openapi::{self, doc, optional_body, Answers};
// The handlers.
use super::*;

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
                doc(
                    "manifest",
                    "meta",
                    "The effective manifest, secrets redacted, and its SHA-256",
                    none,
                ),
            ),
        )
        .api_route(
            "/api/v1/jobs",
            get_with(
                list_jobs,
                doc("listJobs", "jobs", "Every job with its next run", none),
            ),
        )
        .api_route(
            "/api/v1/jobs/{name}",
            get_with(
                job_status,
                doc(
                    "getJob",
                    "jobs",
                    "A job's status, and who runs it now",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/jobs/{name}/run",
            post_with(run_job, |t| {
                optional_body(doc(
                    "runJob",
                    "jobs",
                    "Run a job now and answer its run record",
                    job_run,
                )(t))
            }),
        )
        .api_route(
            "/api/v1/jobs/{name}/enable",
            post_with(
                enable_job,
                doc(
                    "enableJob",
                    "jobs",
                    "Enable a job on every runner",
                    job_switch,
                ),
            ),
        )
        .api_route(
            "/api/v1/jobs/{name}/disable",
            post_with(
                disable_job,
                doc(
                    "disableJob",
                    "jobs",
                    "Disable a job on every runner",
                    job_switch,
                ),
            ),
        )
        .api_route(
            "/api/v1/jobs/{name}/history",
            get_with(
                job_history,
                doc("jobHistory", "jobs", "A job's runs, newest first", named),
            ),
        )
        .api_route(
            "/api/v1/jobs/{name}/stats",
            get_with(
                job_stats,
                doc(
                    "jobStatistics",
                    "jobs",
                    "A job's statistics from the shared history",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/machines",
            get_with(
                list_machines,
                doc("listMachines", "machines", "Machine names", none),
            ),
        )
        .api_route(
            "/api/v1/machines/{machine}",
            get_with(
                machine_definition,
                doc("getMachine", "machines", "A machine's definition", named),
            ),
        )
        .api_route(
            "/api/v1/machines/{machine}/graph",
            get_with(
                machine_graph,
                doc(
                    "machineGraph",
                    "machines",
                    "A machine's diagram (dot or mermaid)",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}",
            get_with(
                entity_state,
                doc(
                    "getEntity",
                    "machines",
                    "An entity's state and valid events",
                    named,
                ),
            )
            .post_with(init_entity, |t| {
                optional_body(doc(
                    "initEntity",
                    "machines",
                    "Initialize an entity",
                    entity_write,
                )(t))
            }),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}/events",
            post_with(
                send_event,
                doc("sendEvent", "machines", "Send an event", entity_write),
            ),
        )
        .api_route(
            "/api/v1/machines/{machine}/entities/{entity}/history",
            get_with(
                entity_history,
                doc(
                    "entityHistory",
                    "machines",
                    "An entity's transitions, newest first",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/events",
            get_with(
                event_stream,
                doc(
                    "events",
                    "events",
                    "The runner's events as Server-Sent Events",
                    none,
                ),
            ),
        )
        .api_route(
            "/api/v1/backups",
            get_with(
                list_backups,
                doc(
                    "listBackups",
                    "backups",
                    "Backups at the destinations, newest first",
                    plugin,
                ),
            )
            .post_with(start_backup, |t| {
                optional_body(doc(
                    "startBackup",
                    "backups",
                    "Start a backup (202 with its id; 409 while another runs)",
                    Answers {
                        conflict: true,
                        bad_input: true,
                        ..plugin
                    },
                )(t))
            }),
        )
        .api_route(
            "/api/v1/backups/{id}",
            get_with(
                backup_status,
                doc(
                    "getBackup",
                    "backups",
                    "A backup's status (with progress while it runs)",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/backups/{id}/restore",
            post_with(restore_backup, |t| {
                optional_body(doc(
                    "restoreBackup",
                    "backups",
                    "Restore a backup, verified first (202; with ?wait=true, 200 when done)",
                    Answers {
                        conflict: true,
                        unprocessable: true,
                        unavailable: true,
                        ..named
                    },
                )(t))
            }),
        )
        .api_route(
            "/api/v1/restores",
            get_with(
                list_restores,
                doc(
                    "listRestores",
                    "backups",
                    "Restores started over this runner's API, newest first",
                    none,
                ),
            ),
        )
        .api_route(
            "/api/v1/restores/{id}",
            get_with(
                restore_status,
                doc(
                    "getRestore",
                    "backups",
                    "A restore's status, with its statistics or its error",
                    named,
                ),
            ),
        )
        .api_route(
            "/api/v1/cache",
            get_with(
                cache_stats,
                doc(
                    "cacheStats",
                    "cache",
                    "The runner's cache: driver, entries, bytes, hit/miss counters",
                    plugin,
                ),
            ),
        )
        .api_route(
            "/api/v1/cache/clear",
            post_with(
                cache_clear,
                doc(
                    "clearCache",
                    "cache",
                    "Empty the runner's cache (its memory too)",
                    plugin,
                ),
            ),
        )
        .api_route(
            "/api/v1/reload",
            get_with(
                last_reload,
                doc(
                    "lastReload",
                    "runner",
                    "The last reload's result and diagnostics",
                    none,
                ),
            )
            .post_with(
                reload_now,
                doc(
                    "reload",
                    "runner",
                    "Reload the manifest now (422 when refused: the old one runs on)",
                    none,
                ),
            ),
        )
        .api_route(
            "/metrics",
            get_with(
                render_metrics,
                doc(
                    "metrics",
                    "metrics",
                    "Prometheus metrics (OpenMetrics when `Accept` asks for it)",
                    none,
                ),
            ),
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
