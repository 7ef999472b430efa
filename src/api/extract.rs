//! The API's extractors: axum's, with their refusals answered as JSON errors like every other
//! (axum answers them as plain text), and documented in the OpenAPI document.

use aide::generate::GenContext;
use aide::openapi::Operation;
use aide::OperationInput;
use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiError;
use super::openapi;

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

impl<T: schemars::JsonSchema> OperationInput for Body<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <Json<T> as OperationInput>::operation_input(ctx, operation);
        openapi::body_errors(ctx, operation);
    }
}

/// A path's parameters; a refusal (a segment that is not UTF-8) is a JSON error like any other.
pub struct Path<T>(pub T);

/// A query string's parameters; a refusal (`?limit=abc`) is a JSON error like any other.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(r) => Err(ApiError::new(r.status(), "invalid_path", r.body_text())),
        }
    }
}

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r) => Err(ApiError::new(r.status(), "invalid_query", r.body_text())),
        }
    }
}

impl<T: schemars::JsonSchema> OperationInput for Path<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::extract::Path<T> as OperationInput>::operation_input(ctx, operation);
        openapi::params_error(ctx, operation, "An invalid id or name");
    }
}

impl<T: schemars::JsonSchema> OperationInput for Query<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        <axum::extract::Query<T> as OperationInput>::operation_input(ctx, operation);
        openapi::params_error(ctx, operation, "An invalid query parameter");
    }
}
