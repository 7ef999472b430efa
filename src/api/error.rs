//! The API's errors: every refusal is `{"code","message"}` with a fitting status, whichever
//! plugin it comes from.

use aide::generate::GenContext;
use aide::openapi::{Operation, StatusCode as Code};
use aide::OperationOutput;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::answers::ErrorBody;
use crate::plugins::backup::BackupError;
use crate::plugins::scheduler::jobs::JobError;
use crate::plugins::state_machine::MachineError;

/// A JSON error with a code and an HTTP status.
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) details: Map<String, Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub(super) fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Which errors an operation answers is declared with it (`openapi::doc`): a handler's error
/// type cannot say which of its variants that route can reach.
impl OperationOutput for ApiError {
    type Inner = ErrorBody;

    fn inferred_responses(
        _: &mut GenContext,
        _: &mut Operation,
    ) -> Vec<(Option<Code>, aide::openapi::Response)> {
        Vec::new()
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
