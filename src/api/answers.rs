//! What the API's handlers take and answer, as types: the OpenAPI document's parameters, request
//! bodies and response schemas are generated from them (aide, schemars), so the document says
//! what the handlers really do. The plugins' own types (job status, backup info, …) are answered
//! as they are; the shapes below are the ones only the API has.

use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response, SchemaObject, StatusCode as Code};
use aide::OperationOutput;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::plugins::backup::{BackupInfo, LiveProgress, RestoreStats};
use crate::plugins::scheduler::jobs::JobStatus;

/// Every error the API answers: a stable code to branch on and a message for people. A few
/// errors add fields (a refused backup names the lock's holder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: `job_not_found`, `invalid_body`, `backup_locked`, …
    pub code: String,
    pub message: String,
    /// What some errors add: a locked backup's `holder` and `until`.
    #[serde(flatten, default)]
    pub details: Map<String, Value>,
}

#[derive(Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` with the reason.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The running manifest, secrets redacted, and the SHA-256 of its file.
#[derive(Serialize, JsonSchema)]
pub struct ManifestAnswer {
    pub sha256: String,
    pub manifest: crate::manifest::model::Manifest,
}

/// Who holds a job's run lease.
#[derive(Serialize, JsonSchema)]
pub struct RunLease {
    /// The runner (`host:pid:…`) or the CLI running it.
    pub holder: String,
    /// When the lease lapses unless renewed (RFC 3339).
    pub until: String,
}

/// A job's status; `run` names who runs it when a run is going on any runner.
#[derive(Serialize, JsonSchema)]
pub struct JobAnswer {
    #[serde(flatten)]
    pub status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunLease>,
}

/// A run of a job, as its history records it and `POST …/run` answers.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    /// `JOB:SLOT` for a scheduled run, `JOB:manual-…` for one started by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub job: String,
    /// `running`, `success`, `error`, `timeout`, `interrupted` or `skipped`.
    pub status: String,
    /// The schedule's slot (RFC 3339); null for a run started by hand.
    #[serde(default)]
    pub slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// What the job's action answered, on success.
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<String>,
    /// Fields another writer of the history added.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A transition as the machine's log records it.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub machine: String,
    pub entity: String,
    pub seq: u64,
    pub from: String,
    pub to: String,
    pub event: String,
    #[serde(default)]
    pub event_id: Option<String>,
    pub timestamp: String,
    #[serde(default)]
    pub context: Value,
    #[serde(default)]
    pub action_errors: Vec<crate::plugins::state_machine::ActionFailure>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A backup just started.
#[derive(Serialize, JsonSchema)]
pub struct BackupStarted {
    /// Follow it at `GET /api/v1/backups/{id}`.
    pub id: String,
    #[serde(rename = "type")]
    pub label: String,
    /// `running`.
    pub status: &'static str,
}

/// A backup's metadata; while this runner runs it, its progress too.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub enum BackupAnswer {
    Stored {
        #[serde(flatten)]
        info: Box<BackupInfo>,
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<LiveProgress>,
    },
    /// Running on this runner, its metadata not read in time (the store is slow).
    Unread {
        id: String,
        /// `running`.
        status: &'static str,
        progress: Option<LiveProgress>,
    },
}

/// The last reload, or `result: none` and the running manifest's SHA-256 before any.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LastReload {
    Reload(crate::runtime::reload::ReloadResult),
    None {
        result: &'static str,
        sha256: String,
    },
}

#[derive(Deserialize, JsonSchema)]
pub struct JobPath {
    /// The job's name.
    pub name: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct MachinePath {
    /// The machine's name.
    pub machine: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct EntityPath {
    pub machine: String,
    /// The entity's id.
    pub entity: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct IdPath {
    pub id: String,
}

/// A record read back from a resource as the type the API declares for it; a record that does
/// not have that shape (written by hand, or by another program) is an error, not a silently
/// different answer.
pub fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, super::ApiError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    serde_json::from_value(v).map_err(|e| {
        super::ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unreadable_record",
            format!("record `{id}` has an unexpected shape: {e}"),
        )
    })
}

/// A JSON response of `T`'s schema, described.
pub(super) fn json_response<T: JsonSchema>(ctx: &mut GenContext, description: &str) -> Response {
    let mut response =
        <Json<T> as OperationOutput>::operation_response(ctx, &mut Operation::default())
            .unwrap_or_default();
    response.description = description.into();
    response
}

/// `202 Accepted` with a JSON body: the work goes on after the answer.
pub struct Accepted<T>(pub T);

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> axum::response::Response {
        (StatusCode::ACCEPTED, Json(self.0)).into_response()
    }
}

impl<T: JsonSchema> OperationOutput for Accepted<T> {
    type Inner = T;

    fn operation_response(ctx: &mut GenContext, _: &mut Operation) -> Option<Response> {
        Some(json_response::<T>(
            ctx,
            "Accepted: started, followed elsewhere",
        ))
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        op: &mut Operation,
    ) -> Vec<(Option<Code>, Response)> {
        Self::operation_response(ctx, op)
            .map(|r| (Some(Code::Code(202)), r))
            .into_iter()
            .collect()
    }
}

/// A restore started (202, with where to follow it), or finished when the caller waited (200,
/// its statistics).
pub enum RestoreAnswer {
    Started(Box<crate::api::restores::RestoreRun>),
    Done(RestoreStats),
}

impl IntoResponse for RestoreAnswer {
    fn into_response(self) -> axum::response::Response {
        match self {
            RestoreAnswer::Started(run) => {
                let location = format!("/api/v1/restores/{}", run.restore_id);
                (
                    StatusCode::ACCEPTED,
                    [(axum::http::header::LOCATION, location)],
                    Json(run),
                )
                    .into_response()
            }
            RestoreAnswer::Done(stats) => Json(stats).into_response(),
        }
    }
}

impl OperationOutput for RestoreAnswer {
    type Inner = RestoreStats;

    fn inferred_responses(
        ctx: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<Code>, Response)> {
        vec![
            (
                Some(Code::Code(202)),
                json_response::<crate::api::restores::RestoreRun>(
                    ctx,
                    "Started: follow it at the `Location`, `/api/v1/restores/{restoreId}`",
                ),
            ),
            (
                Some(Code::Code(200)),
                json_response::<RestoreStats>(ctx, "Done (`?wait=true`): what the restore did"),
            ),
        ]
    }
}

/// Ready (200) or not (503, with the reason).
pub struct ReadinessAnswer(pub Result<Readiness, Readiness>);

impl IntoResponse for ReadinessAnswer {
    fn into_response(self) -> axum::response::Response {
        match self.0 {
            Ok(ready) => Json(ready).into_response(),
            Err(not) => (StatusCode::SERVICE_UNAVAILABLE, Json(not)).into_response(),
        }
    }
}

impl OperationOutput for ReadinessAnswer {
    type Inner = Readiness;

    fn inferred_responses(
        ctx: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<Code>, Response)> {
        vec![
            (
                Some(Code::Code(200)),
                json_response::<Readiness>(ctx, "Ready"),
            ),
            (
                Some(Code::Code(503)),
                json_response::<Readiness>(ctx, "Not ready: the reason is in `reason`"),
            ),
        ]
    }
}

/// A reload's result: 200 applied or unchanged, 422 refused (the old manifest keeps running).
pub struct ReloadAnswer(pub crate::runtime::reload::ReloadResult);

impl IntoResponse for ReloadAnswer {
    fn into_response(self) -> axum::response::Response {
        let status = if self.0.result == "failed" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        (status, Json(self.0)).into_response()
    }
}

impl OperationOutput for ReloadAnswer {
    type Inner = crate::runtime::reload::ReloadResult;

    fn inferred_responses(
        ctx: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<Code>, Response)> {
        type R = crate::runtime::reload::ReloadResult;
        vec![
            (
                Some(Code::Code(200)),
                json_response::<R>(ctx, "Applied, or unchanged"),
            ),
            (
                Some(Code::Code(422)),
                json_response::<R>(
                    ctx,
                    "Refused: the diagnostics say why; the old manifest keeps running",
                ),
            ),
        ]
    }
}

/// What a non-JSON answer is: its media types and description.
pub trait Media {
    const TYPES: &'static [&'static str];
    const DESCRIPTION: &'static str;
}

/// A text answer of the media types `M` names.
pub struct Text<M>(
    pub axum::response::Response,
    pub std::marker::PhantomData<M>,
);

impl<M> Text<M> {
    pub fn new(response: impl IntoResponse) -> Self {
        Self(response.into_response(), std::marker::PhantomData)
    }
}

impl<M> IntoResponse for Text<M> {
    fn into_response(self) -> axum::response::Response {
        self.0
    }
}

impl<M: Media> OperationOutput for Text<M> {
    type Inner = String;

    fn operation_response(_: &mut GenContext, _: &mut Operation) -> Option<Response> {
        let string = SchemaObject {
            json_schema: schemars::json_schema!({ "type": "string" }),
            example: None,
            external_docs: None,
        };
        Some(Response {
            description: M::DESCRIPTION.into(),
            content: M::TYPES
                .iter()
                .map(|t| {
                    let media = MediaType {
                        schema: Some(string.clone()),
                        ..Default::default()
                    };
                    (t.to_string(), media)
                })
                .collect::<IndexMap<_, _>>(),
            ..Default::default()
        })
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        op: &mut Operation,
    ) -> Vec<(Option<Code>, Response)> {
        Self::operation_response(ctx, op)
            .map(|r| (Some(Code::Code(200)), r))
            .into_iter()
            .collect()
    }
}

pub struct MetricsMedia;
impl Media for MetricsMedia {
    const TYPES: &'static [&'static str] = &[
        "text/plain; version=0.0.4",
        "application/openmetrics-text; version=1.0.0",
    ];
    const DESCRIPTION: &'static str =
        "The metrics: the Prometheus text format, or OpenMetrics when `Accept` asks for it";
}

pub struct GraphMedia;
impl Media for GraphMedia {
    const TYPES: &'static [&'static str] = &["text/vnd.graphviz", "text/plain"];
    const DESCRIPTION: &'static str = "The diagram: Graphviz dot, or Mermaid as text/plain";
}

pub struct EventsMedia;
impl Media for EventsMedia {
    const TYPES: &'static [&'static str] = &["text/event-stream"];
    const DESCRIPTION: &'static str =
        "An endless stream: `event:` the type, `data:` the event as JSON; `event: lagged` with the count for a reader that fell behind";
}

/// The OpenAPI document itself (its schema is OpenAPI 3.1's own).
pub struct Document(pub std::sync::Arc<Value>);

impl IntoResponse for Document {
    fn into_response(self) -> axum::response::Response {
        Json(self.0.as_ref()).into_response()
    }
}

impl OperationOutput for Document {
    type Inner = Value;

    fn inferred_responses(_: &mut GenContext, _: &mut Operation) -> Vec<(Option<Code>, Response)> {
        let schema = SchemaObject {
            json_schema: schemars::json_schema!({
                "type": "object",
                "required": ["openapi", "info", "paths"],
                "description": "An OpenAPI 3.1 document: https://spec.openapis.org/oas/v3.1.0"
            }),
            example: None,
            external_docs: None,
        };
        let content = IndexMap::from_iter([(
            "application/json".to_string(),
            MediaType {
                schema: Some(schema),
                ..Default::default()
            },
        )]);
        vec![(
            Some(Code::Code(200)),
            Response {
                description: "This document".into(),
                content,
                ..Default::default()
            },
        )]
    }
}
