//! The OpenAPI 3.1 document of the control API, served at `/api/v1/openapi.json`. aide builds
//! it from the router itself: the paths are the routes, the parameters and request bodies are
//! the extractors' types, the success answers are the handlers' return types (schemars). What a
//! handler's type cannot say is added here: the errors each operation can answer (every error
//! body is `{"code","message"}`), the bearer token, and the document's header.

use aide::generate::{in_context, GenContext};
use aide::openapi::{Operation, ReferenceOr, StatusCode as Code};
use aide::transform::TransformOperation;
use serde_json::{json, Value};

use super::answers::{json_response, ErrorBody};

/// The errors an operation answers besides those every route can give (401 without the token,
/// 500) and those of a JSON body (which `Body` declares).
#[derive(Clone, Copy, Default)]
pub struct Answers {
    /// 400 for a bad id or value.
    pub bad_input: bool,
    /// 404 for a missing thing (or a plugin the manifest does not declare).
    pub not_found: bool,
    /// 409: refused by the current state (running, exists, locked, guard denied).
    pub conflict: bool,
    /// 422: understood but refused (a backup unusable).
    pub unprocessable: bool,
    /// 503: the store is unreachable or contended.
    pub unavailable: bool,
}

impl Answers {
    /// A path that names something: a bad name is 400, an unknown one 404.
    pub const NAMED: Answers = Answers {
        bad_input: true,
        not_found: true,
        conflict: false,
        unprocessable: false,
        unavailable: false,
    };
    /// Needs a plugin the manifest may not declare.
    pub const PLUGIN: Answers = Answers {
        bad_input: false,
        not_found: true,
        conflict: false,
        unprocessable: false,
        unavailable: false,
    };
}

fn add_error(op: &mut Operation, code: u16, description: &str) {
    in_context(|ctx| add_error_in(ctx, op, code, description));
}

fn add_error_in(ctx: &mut GenContext, op: &mut Operation, code: u16, description: &str) {
    let response = json_response::<ErrorBody>(ctx, description);
    let responses = op.responses.get_or_insert_with(Default::default);
    // A status the handler's own type declares (a reload's 422 carries its result) stays.
    responses
        .responses
        .entry(Code::Code(code))
        .or_insert(ReferenceOr::Item(response));
}

/// The transform that documents an operation: its summary, tag, id and errors.
pub fn doc(
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    a: Answers,
) -> impl FnOnce(TransformOperation<'_>) -> TransformOperation<'_> {
    move |t| {
        let mut t = t.id(id).tag(tag).summary(summary);
        let op = t.inner_mut();
        let mut add = |code, on: bool, why| {
            if on {
                add_error(op, code, why);
            }
        };
        add(400, a.bad_input, "An invalid id or value");
        add(404, a.not_found, "No such thing");
        add(409, a.conflict, "Refused by the current state");
        add(422, a.unprocessable, "Understood and refused");
        add(503, a.unavailable, "The store is unreachable or contended");
        t
    }
}

/// What a JSON request body adds to its operation: the errors of reading it (called while
/// aide generates, inside its context).
pub fn body_errors(ctx: &mut GenContext, op: &mut Operation) {
    add_error_in(ctx, op, 400, "The body is not valid JSON");
    add_error_in(ctx, op, 413, "The body is too large");
    add_error_in(ctx, op, 415, "The body is not `application/json`");
    add_error_in(ctx, op, 422, "The body has the wrong shape or types");
}

/// What path and query parameters add: 400 when they cannot be read.
pub fn params_error(ctx: &mut GenContext, op: &mut Operation, description: &str) {
    add_error_in(ctx, op, 400, description);
}

/// A request body the operation can do without.
pub fn optional_body(t: TransformOperation<'_>) -> TransformOperation<'_> {
    let mut t = t;
    if let Some(ReferenceOr::Item(body)) = &mut t.inner_mut().request_body {
        body.required = false;
    }
    t
}

/// Paths anyone may call: the probes.
const PUBLIC: [&str; 2] = ["/healthz", "/readyz"];

/// The document as served: the generated paths and components, with the header, the bearer
/// token on every path but the probes, and the errors every protected operation can give.
pub fn finish(api: aide::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(api).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document cannot be serialized");
        json!({})
    });
    doc["openapi"] = json!("3.1.0");
    doc["info"] = json!({
        "title": "s3db-run control API",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Errors are `{\"code\",\"message\"}`. Every path but /healthz and /readyz needs `Authorization: Bearer <server.token>` when a token is configured."
    });
    doc["security"] = json!([{ "bearer": [] }]);
    doc["components"]["securitySchemes"] =
        json!({ "bearer": { "type": "http", "scheme": "bearer" } });
    let error = json!({
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
    });
    let with = |description: &str| {
        let mut e = error.clone();
        e["description"] = json!(description);
        e
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                if public {
                    op["security"] = json!([]);
                }
                let responses = &mut op["responses"];
                if !public {
                    responses["401"] = with("A valid bearer token is required (`server.token`)");
                }
                responses["500"] = with("An unexpected failure");
                // OpenAPI requires a description on every response.
                if let Some(all) = responses.as_object_mut() {
                    for r in all.values_mut() {
                        if r["description"].as_str().is_none_or(str::is_empty) {
                            r["description"] = json!("OK");
                        }
                    }
                }
            }
        }
    }
    doc
}
