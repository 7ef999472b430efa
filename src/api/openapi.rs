//! The OpenAPI 3.1 document of the control API, served at `/api/v1/openapi.json`. Written next
//! to the router: each operation lists the statuses its handler answers (a test calls every
//! route and checks that what it answers is declared, and an independent validator checks the
//! document). Every error body is `{"code","message"}`.

use serde_json::{json, Map, Value};

/// The JSON Schemas of the handlers' own body types and of the plugins' types a handler
/// answers as they are (schemars, draft 2020-12 as OpenAPI 3.1 uses it), with the error body:
/// the document's components, each type once, referenced as `#/components/schemas/NAME`.
fn components() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    generator.subschema_for::<super::RunBody>();
    generator.subschema_for::<super::InitBody>();
    generator.subschema_for::<super::EventBody>();
    generator.subschema_for::<super::BackupBody>();
    generator.subschema_for::<super::RestoreBody>();
    generator.subschema_for::<crate::plugins::scheduler::jobs::JobStatus>();
    generator.subschema_for::<crate::plugins::scheduler::jobs::JobStatistics>();
    generator.subschema_for::<crate::plugins::cache::StatsSnapshot>();
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["code", "message"],
            "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
        }),
    );
    Value::Object(schemas.into_iter().collect())
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// What an operation answers besides its success and the errors every route can give (401
/// without the token, 500).
#[derive(Clone, Copy, Default)]
struct Answers {
    /// The success status (200 unless said).
    ok: Option<u16>,
    /// Also answers 200 (a `?wait=true` form).
    also_200: bool,
    /// Takes a JSON body: 400 malformed, 413 too large, 415 not JSON, 422 wrong types.
    body: bool,
    /// 400 for a bad id or value, 404 for a missing thing.
    bad_input: bool,
    not_found: bool,
    /// 409: refused by the current state (running, exists, locked, guard denied).
    conflict: bool,
    /// 422: understood but refused (a reload refused, a backup unusable).
    unprocessable: bool,
    /// 503: the store is unreachable or contended.
    unavailable: bool,
}

fn error(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn op(summary: &str, tag: &str, params: &[&str], body: Option<Value>, a: Answers) -> Value {
    let ok = a.ok.unwrap_or(200);
    let mut responses = Map::new();
    let success =
        json!({ "description": "OK", "content": { "application/json": { "schema": {} } } });
    responses.insert(ok.to_string(), success.clone());
    if a.also_200 && ok != 200 {
        responses.insert("200".into(), success);
    }
    let mut add = |code: &str, on: bool, why: &str| {
        if on {
            responses.insert(code.into(), error(why));
        }
    };
    add(
        "400",
        a.body || a.bad_input,
        "Malformed body, or an invalid id or value",
    );
    add(
        "401",
        true,
        "A valid bearer token is required (`server.token`)",
    );
    add("404", a.not_found, "No such thing");
    add("409", a.conflict, "Refused by the current state");
    add("413", a.body, "The body is too large");
    add("415", a.body, "The body is not `application/json`");
    add(
        "422",
        a.body || a.unprocessable,
        "A body of the wrong shape, or a request understood and refused",
    );
    add("500", true, "An unexpected failure");
    add(
        "503",
        a.unavailable,
        "The store is unreachable or contended",
    );
    let mut o = json!({ "summary": summary, "tags": [tag], "responses": responses });
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| {
            let (name, location) = match p.strip_prefix('?') {
                Some(q) => (q, "query"),
                None => (*p, "path"),
            };
            json!({ "name": name, "in": location, "required": location == "path", "schema": { "type": "string" } })
        })
        .collect();
    if !parameters.is_empty() {
        o["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = body {
        o["requestBody"] =
            json!({ "required": false, "content": { "application/json": { "schema": schema } } });
    }
    o
}

pub fn document() -> Value {
    let mut doc = untyped();
    let mut answer = |path: &str, method: &str, schema: Value| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"] =
            schema;
    };
    answer(
        "/api/v1/jobs",
        "get",
        json!({ "type": "array", "items": reference("JobStatus") }),
    );
    answer("/api/v1/jobs/{name}", "get", reference("JobStatus"));
    answer(
        "/api/v1/jobs/{name}/stats",
        "get",
        reference("JobStatistics"),
    );
    answer(
        "/api/v1/cache",
        "get",
        json!({
            "type": "object",
            "required": ["driver", "entries", "bytes", "process"],
            "properties": {
                "driver": { "type": "string" },
                "entries": { "type": "integer", "minimum": 0 },
                "bytes": { "type": "integer", "minimum": 0 },
                "process": reference("StatsSnapshot")
            }
        }),
    );
    doc
}

fn untyped() -> Value {
    let read = Answers::default();
    let named = Answers {
        bad_input: true,
        not_found: true,
        ..read
    };
    let job_switch = Answers {
        unavailable: true,
        ..named
    };
    let job_run = Answers {
        body: true,
        conflict: true,
        ..job_switch
    };
    let entity_write = Answers {
        body: true,
        conflict: true,
        unavailable: true,
        ..named
    };
    let no_machines = Answers {
        not_found: true,
        ..read
    };
    let health = |summary: &str, unavailable: bool| {
        let mut responses = json!({ "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": { "status": { "type": "string" } } } } } } });
        if unavailable {
            responses["503"] = json!({ "description": "Not ready (the reason is in `reason`)", "content": { "application/json": { "schema": { "type": "object", "properties": { "status": { "type": "string" }, "reason": { "type": "string" } } } } } });
        }
        json!({ "get": { "summary": summary, "security": [], "tags": ["health"], "responses": responses } })
    };
    json!({
        "openapi": "3.1.0",
        "info": { "title": "s3db-run control API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": components()
        },
        "paths": {
            "/healthz": health("Liveness", false),
            "/readyz": health("Readiness: the scheduler runs and the store answers", true),
            "/metrics": { "get": {
                "summary": "Prometheus metrics: the text format 0.0.4, or OpenMetrics when `Accept` asks for it",
                "tags": ["metrics"],
                "responses": {
                    "200": { "description": "The metrics", "content": {
                        "text/plain; version=0.0.4": { "schema": { "type": "string" } },
                        "application/openmetrics-text; version=1.0.0": { "schema": { "type": "string" } }
                    } },
                    "401": error("A valid bearer token is required (`server.token`)")
                }
            } },
            "/api/v1/openapi.json": { "get": op("This document", "meta", &[], None, read) },
            "/api/v1/manifest": { "get": op("The effective manifest, secrets redacted, and its SHA-256", "meta", &[], None, read) },
            "/api/v1/jobs": { "get": op("Every job with its next run", "jobs", &[], None, read) },
            "/api/v1/jobs/{name}": { "get": op("A job's status", "jobs", &["name"], None, named) },
            "/api/v1/jobs/{name}/run": { "post": op("Run a job now and answer its run record", "jobs", &["name"], Some(reference("RunBody")), job_run) },
            "/api/v1/jobs/{name}/enable": { "post": op("Enable a job on every runner", "jobs", &["name"], None, job_switch) },
            "/api/v1/jobs/{name}/disable": { "post": op("Disable a job on every runner", "jobs", &["name"], None, job_switch) },
            "/api/v1/jobs/{name}/history": { "get": op("A job's runs, newest first", "jobs", &["name", "?status", "?limit"], None, named) },
            "/api/v1/jobs/{name}/stats": { "get": op("A job's statistics from the shared history", "jobs", &["name"], None, named) },
            "/api/v1/machines": { "get": op("Machine names", "machines", &[], None, read) },
            "/api/v1/machines/{machine}": { "get": op("A machine's definition", "machines", &["machine"], None, named) },
            "/api/v1/machines/{machine}/graph": { "get": op("A machine's diagram (dot or mermaid)", "machines", &["machine", "?format"], None, named) },
            "/api/v1/machines/{machine}/entities/{entity}": {
                "get": op("An entity's state and valid events", "machines", &["machine", "entity"], None, named),
                "post": op("Initialize an entity", "machines", &["machine", "entity"], Some(reference("InitBody")), entity_write)
            },
            "/api/v1/machines/{machine}/entities/{entity}/events": {
                "post": op("Send an event", "machines", &["machine", "entity"], Some(reference("EventBody")), entity_write)
            },
            "/api/v1/machines/{machine}/entities/{entity}/history": { "get": op("An entity's transitions, newest first", "machines", &["machine", "entity", "?limit", "?offset"], None, named) },
            "/api/v1/events": { "get": {
                "summary": "The runner's events as Server-Sent Events (event: the type, data: the event as JSON)",
                "tags": ["events"],
                "parameters": [{ "name": "types", "in": "query", "required": false, "schema": { "type": "string" }, "description": "Comma-separated event types to keep" }],
                "responses": {
                    "200": { "description": "An endless event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "401": error("A valid bearer token is required (`server.token`)")
                }
            } },
            "/api/v1/backups": {
                "get": op("Backups at the destinations, newest first", "backups", &["?limit", "?prefix"], None, no_machines),
                "post": op("Start a backup (202 with its id; 409 while another runs)", "backups", &[], Some(reference("BackupBody")), Answers { ok: Some(202), body: true, conflict: true, not_found: true, ..read })
            },
            "/api/v1/backups/{id}": { "get": op("A backup's status (with progress while it runs)", "backups", &["id"], None, named) },
            "/api/v1/backups/{id}/restore": { "post": op("Start a restore of a backup, verified before any write (202 with its id; with ?wait=true, 200 with its statistics when done)", "backups", &["id", "?wait"], Some(reference("RestoreBody")), Answers { ok: Some(202), also_200: true, body: true, conflict: true, unprocessable: true, unavailable: true, ..named }) },
            "/api/v1/restores": { "get": op("Restores started over this runner's API, newest first", "backups", &[], None, read) },
            "/api/v1/restores/{id}": { "get": op("A restore's status: running, completed (with its statistics) or failed (with its error)", "backups", &["id"], None, named) },
            "/api/v1/cache": { "get": op("The runner's cache: driver, entries, bytes and its hit/miss counters", "cache", &[], None, no_machines) },
            "/api/v1/cache/clear": { "post": op("Empty the runner's cache (its memory too)", "cache", &[], None, no_machines) },
            "/api/v1/reload": {
                "get": op("The last reload's result and diagnostics", "runner", &[], None, read),
                "post": op("Reload the manifest now (422 when it is refused and the old one keeps running)", "runner", &[], None, Answers { unprocessable: true, ..read })
            }
        }
    })
}
