//! The OpenAPI 3.1 document of the control API, served at `/api/v1/openapi.json`. Written by
//! hand next to the router; a test checks that every route is in it.

use serde_json::{json, Value};

fn op(summary: &str, tag: &str, params: &[&str], body: Option<Value>) -> Value {
    let mut o = json!({
        "summary": summary,
        "tags": [tag],
        "responses": {
            "200": { "description": "OK", "content": { "application/json": {} } },
            "401": { "$ref": "#/components/responses/Unauthorized" },
            "404": { "$ref": "#/components/responses/Error" },
            "409": { "$ref": "#/components/responses/Error" }
        }
    });
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
        o["requestBody"] = json!({ "content": { "application/json": { "schema": schema } } });
    }
    o
}

pub fn document() -> Value {
    let context = json!({ "type": "object", "properties": { "context": { "type": "object" } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "s3db-run control API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" } }
                }
            },
            "responses": {
                "Error": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "Unauthorized": { "description": "A valid bearer token is required", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        },
        "paths": {
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "OK" } } } },
            "/readyz": { "get": { "summary": "Readiness", "security": [], "responses": { "200": { "description": "OK" } } } },
            "/metrics": { "get": op("Prometheus metrics", "metrics", &[], None) },
            "/api/v1/openapi.json": { "get": op("This document", "meta", &[], None) },
            "/api/v1/events": { "get": {
                "summary": "The runner's events as Server-Sent Events (event: the type, data: the event as JSON)",
                "tags": ["events"],
                "parameters": [{ "name": "types", "in": "query", "required": false, "schema": { "type": "string" }, "description": "Comma-separated event types to keep" }],
                "responses": {
                    "200": { "description": "An endless event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } },
                    "401": { "$ref": "#/components/responses/Unauthorized" }
                }
            } },
            "/api/v1/cache": { "get": op("The runner's cache: driver, entries, bytes and its hit/miss counters", "cache", &[], None) },
            "/api/v1/cache/clear": { "post": op("Empty the runner's cache (its memory too)", "cache", &[], None) },
            "/api/v1/manifest": { "get": op("The effective manifest, secrets redacted, and its SHA-256", "meta", &[], None) },
            "/api/v1/jobs": { "get": op("Every job with its next run", "jobs", &[], None) },
            "/api/v1/jobs/{name}": { "get": op("A job's status", "jobs", &["name"], None) },
            "/api/v1/jobs/{name}/run": { "post": op("Run a job now", "jobs", &["name"], Some(context.clone())) },
            "/api/v1/jobs/{name}/enable": { "post": op("Enable a job", "jobs", &["name"], None) },
            "/api/v1/jobs/{name}/disable": { "post": op("Disable a job", "jobs", &["name"], None) },
            "/api/v1/jobs/{name}/history": { "get": op("A job's runs, newest first", "jobs", &["name", "?status", "?limit"], None) },
            "/api/v1/jobs/{name}/stats": { "get": op("A job's statistics from the shared history", "jobs", &["name"], None) },
            "/api/v1/machines": { "get": op("Machine names", "machines", &[], None) },
            "/api/v1/machines/{machine}": { "get": op("A machine's definition", "machines", &["machine"], None) },
            "/api/v1/machines/{machine}/graph": { "get": op("A machine's diagram (dot or mermaid)", "machines", &["machine", "?format"], None) },
            "/api/v1/machines/{machine}/entities/{entity}": {
                "get": op("An entity's state and valid events", "machines", &["machine", "entity"], None),
                "post": op("Initialize an entity", "machines", &["machine", "entity"], Some(context.clone()))
            },
            "/api/v1/machines/{machine}/entities/{entity}/events": {
                "post": op("Send an event", "machines", &["machine", "entity"], Some(json!({
                    "type": "object",
                    "required": ["event"],
                    "properties": { "event": { "type": "string" }, "context": { "type": "object" }, "eventId": { "type": "string" } }
                })))
            },
            "/api/v1/machines/{machine}/entities/{entity}/history": { "get": op("An entity's transitions, newest first", "machines", &["machine", "entity", "?limit", "?offset"], None) },
            "/api/v1/backups": {
                "get": op("Backups at the destinations, newest first", "backups", &["?limit", "?prefix"], None),
                "post": op("Start a backup (202 with its id)", "backups", &[], Some(json!({
                    "type": "object",
                    "properties": { "type": { "type": "string", "default": "full" }, "resources": { "type": "array", "items": { "type": "string" } } }
                })))
            },
            "/api/v1/reload": {
                "get": op("The last reload's result and diagnostics", "runner", &[], None),
                "post": op("Reload the manifest now (422 when it is refused)", "runner", &[], None)
            },
            "/api/v1/backups/{id}": { "get": op("A backup's status", "backups", &["id"], None) },
            "/api/v1/backups/{id}/restore": { "post": op("Start a restore of a backup, verified before any write (202 with its id; with ?wait=true, 200 with its statistics when done)", "backups", &["id", "?wait"], Some(json!({
                "type": "object",
                "properties": { "overwrite": { "type": "boolean", "default": false }, "resources": { "type": "array", "items": { "type": "string" } } }
            }))) },
            "/api/v1/restores": { "get": op("Restores started over this runner's API, newest first", "backups", &[], None) },
            "/api/v1/restores/{id}": { "get": op("A restore's status: running, completed (with its statistics) or failed (with its error)", "backups", &["id"], None) }
        }
    })
}
