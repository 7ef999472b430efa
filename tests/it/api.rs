//! The control API, served by a real `s3db-run` process: every endpoint, with and without the
//! token.

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{json, Value};

struct Server {
    _process: crate::support::Process,
    base: String,
    dir: tempfile::TempDir,
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            r#"version: 1
database: {{ connection: file://./data }}
machines:
  order:
    initialState: pending
    states:
      pending: {{ on: {{ PAY: paid }} }}
      paid: {{ type: final }}
jobs:
  hello: {{ schedule: "0 9 * * MON", action: {{ run: ["echo", "{{\"hi\": 1}}"] }} }}
backup: {{ driver: filesystem, config: {{ path: "./backups/" }} }}
server: {{ listen: "127.0.0.1:{port}", token: s3cr3t-token }}
"#
        ),
    )
    .unwrap();
    serve(dir, port)
}

/// Serves the manifest `text(port)` from a fresh folder on a free port.
fn serve_text(text: impl FnOnce(u16) -> String) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("s3db.yaml"), text(port)).unwrap();
    serve(dir, port)
}

/// Runs the `s3db.yaml` in `dir` and waits until its API on `port` accepts connections.
fn serve(dir: tempfile::TempDir, port: u16) -> Server {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .arg("s3db.yaml")
        .current_dir(dir.path())
        .env_remove("S3DB_CONNECTION")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Server {
        _process: crate::support::Process(child),
        base,
        dir,
    }
}

async fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let client = reqwest::Client::new();
    let mut req = client.request(method.parse().unwrap(), format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

const T: Option<&str> = Some("s3cr3t-token");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_and_needs_the_token() {
    let s = start();
    assert_eq!(call(&s, "GET", "/healthz", None, None).await.0, 200);
    // Ready once the runtime runs, a moment after the API listens.
    let mut ready = 0;
    for _ in 0..100 {
        ready = call(&s, "GET", "/readyz", None, None).await.0;
        if ready == 200 {
            break;
        }
        assert_eq!(ready, 503);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200);
    for (method, path) in [
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/hello"),
        ("POST", "/api/v1/jobs/hello/run"),
        ("GET", "/api/v1/machines"),
        ("GET", "/api/v1/manifest"),
        ("GET", "/api/v1/machines/order/entities/o1"),
        ("GET", "/api/v1/backups"),
        ("POST", "/api/v1/backups"),
        ("GET", "/api/v1/backups/x"),
        ("POST", "/api/v1/backups/x/restore"),
        ("GET", "/api/v1/restores"),
        ("GET", "/api/v1/restores/x"),
        ("GET", "/api/v1/reload"),
        ("POST", "/api/v1/reload"),
    ] {
        let (status, body, _) = call(&s, method, path, None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("unauthorized")),
            "{method} {path}"
        );
        assert_eq!(
            call(&s, method, path, Some("wrong"), None).await.0,
            401,
            "{method} {path}"
        );
    }

    let (status, jobs, _) = call(&s, "GET", "/api/v1/jobs", T, None).await;
    assert_eq!(status, 200);
    assert_eq!(jobs[0]["name"], "hello");
    assert!(jobs[0]["nextRun"].as_str().unwrap().contains("T09:00:00"));
    let (status, run, _) = call(&s, "POST", "/api/v1/jobs/hello/run", T, None).await;
    assert_eq!(
        (status, run["status"].as_str(), run["result"].clone()),
        (200, Some("success"), json!({ "hi": 1 }))
    );
    let (_, history, _) = call(
        &s,
        "GET",
        "/api/v1/jobs/hello/history?status=success&limit=5",
        T,
        None,
    )
    .await;
    assert_eq!(history.as_array().unwrap().len(), 1);
    let (_, disabled, _) = call(&s, "POST", "/api/v1/jobs/hello/disable", T, None).await;
    assert_eq!(disabled["enabled"], false);
    let (_, enabled, _) = call(&s, "POST", "/api/v1/jobs/hello/enable", T, None).await;
    assert_eq!(enabled["enabled"], true);
    let (status, missing, _) = call(&s, "GET", "/api/v1/jobs/nope", T, None).await;
    assert_eq!(
        (status, missing["code"].as_str()),
        (404, Some("job_not_found"))
    );

    assert_eq!(
        call(&s, "GET", "/api/v1/machines", T, None).await.1,
        json!(["order"])
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/machines/order", T, None).await.1["initialState"],
        "pending"
    );
    let (status, _, dot) = call(&s, "GET", "/api/v1/machines/order/graph", T, None).await;
    assert!(status == 200 && dot.starts_with("digraph"), "{dot}");
    let (_, _, mermaid) = call(
        &s,
        "GET",
        "/api/v1/machines/order/graph?format=mermaid",
        T,
        None,
    )
    .await;
    assert!(mermaid.starts_with("stateDiagram-v2"));
    let (status, init, _) = call(
        &s,
        "POST",
        "/api/v1/machines/order/entities/o1",
        T,
        Some(json!({ "context": { "a": 1 } })),
    )
    .await;
    assert_eq!((status, init["state"].as_str()), (200, Some("pending")));
    let (status, again, _) = call(&s, "POST", "/api/v1/machines/order/entities/o1", T, None).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("entity_exists"))
    );
    let (status, sent, _) = call(
        &s,
        "POST",
        "/api/v1/machines/order/entities/o1/events",
        T,
        Some(json!({ "event": "PAY", "eventId": "e1" })),
    )
    .await;
    assert_eq!((status, sent["to"].as_str()), (200, Some("paid")));
    let (status, refused, _) = call(
        &s,
        "POST",
        "/api/v1/machines/order/entities/o1/events",
        T,
        Some(json!({ "event": "PAY" })),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (409, Some("event_refused"))
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/machines/order/entities/o1", T, None)
            .await
            .1["state"],
        "paid"
    );
    let (_, h, _) = call(
        &s,
        "GET",
        "/api/v1/machines/order/entities/o1/history",
        T,
        None,
    )
    .await;
    assert_eq!(h.as_array().unwrap().len(), 1);
    assert_eq!(
        call(&s, "GET", "/api/v1/machines/nope", T, None).await.0,
        404
    );

    let (status, manifest, text) = call(&s, "GET", "/api/v1/manifest", T, None).await;
    assert_eq!(status, 200);
    assert_eq!(manifest["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(manifest["manifest"]["server"]["token"], "***");
    assert!(!text.contains("s3cr3t-token"));
    assert_eq!(call(&s, "GET", "/metrics", None, None).await.0, 401);
    let mut text = String::new();
    for _ in 0..50 {
        text = call(&s, "GET", "/metrics", T, None).await.2;
        if text.contains("s3db_transitions_total") && text.contains("s3db_job_runs_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in [
        "s3db_job_runs_total{job_name=\"hello\",status=\"success\"} 1",
        "s3db_job_duration_seconds_count{job_name=\"hello\"} 1",
        "s3db_transitions_total{machine=\"order\",event=\"PAY\"} 1",
        "s3db_job_last_success_timestamp_seconds{job_name=\"hello\"}",
        "# TYPE s3db_job_runs_total counter",
        "# HELP s3db_job_runs_total Job runs",
        "s3db_build_info{version=",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("# EOF"), "{text}");
    check_with_promtool(&text);
    // OpenMetrics to a scraper that asks for it.
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", s.base))
        .bearer_auth("s3cr3t-token")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let open = resp.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE s3db_job_runs counter"), "{open}");
    assert!(
        text.contains(&format!(
            "s3db_manifest_info{{sha256=\"{}\"}} 1",
            manifest["sha256"].as_str().unwrap()
        )),
        "{text}"
    );
    // Backups: start (202 with an id), follow to completion, list, restore; errors are JSON.
    let (status, started, _) = call(
        &s,
        "POST",
        "/api/v1/backups",
        T,
        Some(json!({ "type": "full" })),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let mut done = Value::Null;
    for _ in 0..200 {
        let (code, body, _) = call(&s, "GET", &format!("/api/v1/backups/{id}"), T, None).await;
        if code == 200 && body["status"] == "completed" {
            done = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(done["id"], json!(id), "the backup did not complete");
    assert!(done["records"]["entity_states"].is_u64(), "{done}");
    let (status, list, _) = call(&s, "GET", "/api/v1/backups?limit=5", T, None).await;
    assert_eq!((status, list[0]["id"].clone()), (200, json!(id)));
    // A restore answers at once with an id to follow it by; `?wait=true` answers when done.
    let (status, started, _) = call(
        &s,
        "POST",
        &format!("/api/v1/backups/{id}/restore"),
        T,
        Some(json!({ "overwrite": true })),
    )
    .await;
    assert_eq!(
        (status, started["status"].as_str()),
        (202, Some("running")),
        "{started}"
    );
    let restore_id = started["restoreId"].as_str().unwrap().to_string();
    let mut followed = Value::Null;
    for _ in 0..200 {
        let (code, body, _) = call(
            &s,
            "GET",
            &format!("/api/v1/restores/{restore_id}"),
            T,
            None,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        if body["status"] != "running" {
            followed = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(followed["status"], "completed", "{followed}");
    assert_eq!(followed["backupId"], json!(id));
    assert_eq!(followed["result"]["chain"], json!([id]));
    let (status, restored, _) = call(
        &s,
        "POST",
        &format!("/api/v1/backups/{id}/restore?wait=true"),
        T,
        Some(json!({ "overwrite": false })),
    )
    .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["chain"], json!([id]));
    assert!(restored["skipped"].as_u64().unwrap() > 0, "{restored}");
    let (status, restores, _) = call(&s, "GET", "/api/v1/restores", T, None).await;
    assert_eq!(status, 200);
    assert_eq!(restores.as_array().unwrap().len(), 2, "{restores}");
    assert_eq!(restores[1]["restoreId"], json!(restore_id), "newest first");
    let (status, unknown, _) = call(&s, "GET", "/api/v1/restores/nope", T, None).await;
    assert_eq!(
        (status, unknown["code"].as_str()),
        (404, Some("restore_not_found"))
    );
    let (status, missing, _) = call(&s, "GET", "/api/v1/backups/nope", T, None).await;
    assert_eq!(
        (status, missing["code"].as_str()),
        (404, Some("backup_not_found"))
    );
    let (status, bad, _) = call(&s, "POST", "/api/v1/backups/nope/restore", T, None).await;
    assert_eq!(
        (status, bad["code"].as_str()),
        (404, Some("backup_not_found"))
    );
    for _ in 0..50 {
        text = call(&s, "GET", "/metrics", T, None).await.2;
        if text.contains("s3db_backups_total") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("s3db_backups_total{kind=\"full\",status=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("s3db_backup_last_success_timestamp_seconds"),
        "{text}"
    );
    // The two restores above (one followed, one waited for) both completed.
    let text = metrics_text(&s, &["s3db_restores_total{status=\"completed\"} 2"]).await;
    assert!(
        text.contains("s3db_restores_total{status=\"completed\"} 2")
            && text.contains("s3db_restore_duration_seconds_count 2"),
        "{text}"
    );

    let (status, reload, _) = call(&s, "POST", "/api/v1/reload", T, None).await;
    assert_eq!(
        (status, reload["result"].as_str()),
        (200, Some("unchanged")),
        "{reload}"
    );
    let (status, last, _) = call(&s, "GET", "/api/v1/reload", T, None).await;
    assert_eq!(
        (status, last["sha256"].clone()),
        (200, manifest["sha256"].clone()),
        "{last}"
    );

    let (status, doc, _) = call(&s, "GET", "/api/v1/openapi.json", T, None).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    // Every method of every route but the health checks needs the token. The document's paths
    // are the router's (it is generated from it; the OpenAPI test checks them against the
    // `api_route`s), so walking them walks every route.
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let mut refused = 0;
    for (route, item) in paths {
        if route == "/healthz" || route == "/readyz" {
            continue;
        }
        let concrete = route.replace("{name}", "hello").replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let (status, _, _) = call(&s, &method, &concrete, None, None).await;
            assert_eq!(status, 401, "{method} {concrete} without the token");
            refused += 1;
        }
    }
    assert!(refused >= 28, "{refused} calls refused");
    let (status, unknown, _) = call(&s, "GET", "/api/v1/nothing", T, None).await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        "version: 1\ndatabase: { connection: file://./data }\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["run", "s3db.yaml", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("S3DB_CONNECTION")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen for the control API"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refused_by_the_lock_or_its_type_is_answered_at_once() {
    let s = start();
    // Another runner's backup, as its lease says.
    let store = "file://./data"
        .parse::<s3db_run::store::Connection>()
        .unwrap()
        .open(s.dir.path())
        .await
        .unwrap();
    let until = s3db_run::types::time::rfc3339(chrono::Utc::now() + chrono::Duration::minutes(5));
    store
        .put(
            "plugin=backup/lock.json",
            json!({ "holder": "backup full-elsewhere", "expiresAt": until })
                .to_string()
                .into(),
            s3db_run::store::PutMode::Create,
            &Default::default(),
        )
        .await
        .unwrap();
    let (status, body, text) = call(
        &s,
        "POST",
        "/api/v1/backups",
        T,
        Some(json!({ "type": "full" })),
    )
    .await;
    assert_eq!(status, 409, "{text}");
    assert_eq!(body["code"], "backup_locked");
    assert_eq!(body["holder"], "backup full-elsewhere");
    assert_eq!(body["until"], until.as_str());
    let (status, body, text) = call(
        &s,
        "POST",
        "/api/v1/backups",
        T,
        Some(json!({ "type": "../../x" })),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(body["code"], "invalid_backup_type");
}

/// `promtool check metrics` (Prometheus's own linter) accepts the text format. scripts/test
/// installs promtool (the `prometheus` Debian package) when it runs as root.
fn check_with_promtool(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (the prometheus package; scripts/test installs it as root)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A body the API cannot read (malformed JSON, a wrongly typed field, another content type) is
/// answered with the documented `{"code","message"}`, not axum's plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_are_answered_as_json_errors() {
    let s = start();
    for _ in 0..200 {
        if call(&s, "GET", "/health", None, None).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let client = reqwest::Client::new();
    let send = |path: &str, content_type: &str, body: &str| {
        client
            .post(format!("{}{path}", s.base))
            .bearer_auth("s3cr3t-token")
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
    };
    for (path, content_type, body, status, code) in [
        (
            "/api/v1/backups",
            "application/json",
            "{not json",
            400,
            "malformed_body",
        ),
        (
            "/api/v1/backups",
            "application/json",
            r#"{"type": 5}"#,
            422,
            "invalid_body",
        ),
        (
            "/api/v1/backups",
            "text/plain",
            r#"{"type":"full"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v1/jobs/hello/run",
            "application/json",
            "[",
            400,
            "malformed_body",
        ),
        (
            "/api/v1/machines/order/entities/o9/events",
            "application/json",
            r#"{"event": 1}"#,
            422,
            "invalid_body",
        ),
    ] {
        let resp = send(path, content_type, body).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path} {body}");
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} {body}: not JSON ({e}): {text}"));
        assert_eq!(v["code"], code, "{path} {body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // A control character in an id is the caller's mistake, not the server's.
    let (status, v, _) = call(
        &s,
        "POST",
        "/api/v1/machines/order/entities/o%01x/events",
        Some("s3cr3t-token"),
        Some(json!({ "event": "PAY" })),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_id")),
        "{v}"
    );
}

/// A running backup's status carries its progress (phase, records done, rate), as the terminal
/// shows it. The S3 server is held still through a proxy once the backup is under way, so the
/// backup is caught running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_reports_its_progress() {
    use crate::support::proxy::{self, Fault};
    let connection = crate::support::s3::connection_string().await;
    let conn: s3db_run::store::Connection = connection.parse().unwrap();
    let store = conn.open(std::path::Path::new(".")).await.unwrap();
    let mut declared = indexmap::IndexMap::new();
    declared.insert(
        "things".to_string(),
        s3db_run::db::schema::StoredResource {
            attributes: [("n".to_string(), "number".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        },
    );
    let db = s3db_run::db::Database::connect(store, &declared)
        .await
        .unwrap();
    let things = db.resource("things").unwrap();
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter((0..3000).map(|i| {
        let mut data = serde_json::Map::new();
        data.insert("n".into(), json!(i));
        let things = things.clone();
        async move { things.insert(data, Some(&format!("t{i:05}"))).await }
    }))
    .buffer_unordered(16)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    let endpoint = crate::support::s3::endpoint();
    let (via, control) = proxy::start_in_background(endpoint.clone(), Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let through = connection.replace(&endpoint, &via);
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            r#"version: 1
database:
  connection: "{through}"
  resources: {{ things: {{ attributes: {{ n: number }} }} }}
backup: {{ driver: filesystem, config: {{ path: "./backups/" }} }}
server: {{ listen: "127.0.0.1:{port}", token: s3cr3t-token }}
"#
        ),
    )
    .unwrap();
    let s = serve(dir, port);
    let (status, started, _) = call(&s, "POST", "/api/v1/backups", T, Some(json!({}))).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    // Once past the first 500 records (a progress step), the server stops answering.
    let path = format!("/api/v1/backups/{id}");
    let status_of = || call(&s, "GET", &path, T, None);
    let mut seen = Value::Null;
    for _ in 0..2000 {
        let (_, body, _) = status_of().await;
        if body["progress"]["done"].as_u64().is_some_and(|d| d >= 500) {
            seen = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        seen["status"], "running",
        "never seen past 500 records: {seen}"
    );
    control.set(Fault::Stall);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body, _) = status_of().await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "running", "{body}");
    let progress = &body["progress"];
    assert_eq!(progress["phase"], "records", "{body}");
    let done = progress["done"].as_u64().unwrap();
    assert!(done >= 500 && done.is_multiple_of(500), "{body}");
    assert!(progress["perSecond"].as_f64().unwrap() > 0.0, "{body}");
    // Let it finish: the completed status has no progress left.
    control.set(Fault::None);
    let mut finished = Value::Null;
    for _ in 0..400 {
        let (_, body, _) = call(&s, "GET", &format!("/api/v1/backups/{id}"), T, None).await;
        if body["status"] == "completed" {
            finished = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(finished["records"]["things"], 3000, "{finished}");
    assert!(finished.get("progress").is_none(), "{finished}");
}

/// Runs `s3db-run ARGS` in the runner's folder (so on its manifest) and returns stdout.
fn cli_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(args)
        .current_dir(dir)
        .env_remove("S3DB_CONNECTION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cache stats` and `cache clear` reach the running runner's memory cache through its API,
/// not a fresh cache of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_and_clear_reach_the_runner_s_memory_cache() {
    let s = serve_text(|port| {
        format!(
            r#"version: 1
database:
  connection: file://./data
  resources:
    items: {{ attributes: {{ name: string }} }}
cache: {{ driver: memory, ttl: 5m }}
guards:
  itemExists: {{ builtin: record.check, with: {{ resource: items, id: "{{{{context.item}}}}" }} }}
machines:
  order:
    initialState: pending
    states:
      pending: {{ on: {{ PAY: paid }}, guards: {{ PAY: itemExists }} }}
      paid: {{ type: final }}
server: {{ listen: "127.0.0.1:{port}", token: s3cr3t-token }}
"#
        )
    });
    // The guard's item, written by the command line on the runner's manifest.
    let path = s.dir.path().to_path_buf();
    cli_in(
        &path,
        &["db", "put", "items", r#"{"id":"i1","name":"pen"}"#],
    );
    // The guard reads the item through the runner's cache: a miss, then a hit.
    for entity in ["o1", "o2"] {
        let base = format!("/api/v1/machines/order/entities/{entity}");
        assert_eq!(call(&s, "POST", &base, T, Some(json!({}))).await.0, 200);
        let (status, body, _) = call(
            &s,
            "POST",
            &format!("{base}/events"),
            T,
            Some(json!({ "event": "PAY", "context": { "item": "i1" } })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, api, _) = call(&s, "GET", "/api/v1/cache", T, None).await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["driver"], "memory");
    assert!(api["entries"].as_u64().unwrap() >= 1, "{api}");
    assert!(api["process"]["hits"].as_u64().unwrap() >= 1, "{api}");

    let stats: Value =
        serde_json::from_str(&cli_in(&path, &["cache", "stats", "--output", "json"])).unwrap();
    assert_eq!(stats["runner"], s.base.as_str(), "{stats}");
    assert_eq!(stats["entries"], api["entries"], "{stats}");
    assert!(stats["process"]["hits"].as_u64().unwrap() >= 1, "{stats}");
    // This process's own memory cache is empty: that is what `--local` shows.
    let local: Value = serde_json::from_str(&cli_in(
        &path,
        &["cache", "stats", "--local", "--output", "json"],
    ))
    .unwrap();
    assert_eq!(local["entries"], 0, "{local}");
    assert_eq!(local["runner"], Value::Null, "{local}");
    // Another database than the runner's is never the runner's business.
    let other: Value = serde_json::from_str(&cli_in(
        &path,
        &[
            "cache",
            "stats",
            "--connection",
            "file://./elsewhere",
            "--output",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(other["runner"], Value::Null, "{other}");

    let cleared = cli_in(&path, &["cache", "clear"]);
    assert!(cleared.contains(&s.base), "{cleared}");
    let (_, after, _) = call(&s, "GET", "/api/v1/cache", T, None).await;
    assert_eq!(after["entries"], 0, "{after}");
    // Without the token the runner refuses, and so does the command that would need it.
    assert_eq!(call(&s, "GET", "/api/v1/cache", None, None).await.0, 401);
}

/// A connection that sends nothing, one that sends half its headers, and one left idle after a
/// response are all closed after `server.idleTimeout`, not held forever.
#[test]
fn quiet_slow_and_idle_connections_are_closed_after_the_idle_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!(
            "version: 1\ndatabase: {{ connection: file://./data }}\nserver: {{ listen: \"127.0.0.1:{port}\", idleTimeout: 1s }}\n"
        ),
    )
    .unwrap();
    let _s = serve(dir, port);
    // Whether the server closes the connection within 15 s (it should take about 1 s).
    let closed = |mut c: std::net::TcpStream| {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    let quiet = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let threads: Vec<_> = [quiet, slow, idle]
        .into_iter()
        .map(|c| std::thread::spawn(move || closed(c)))
        .collect();
    let results: Vec<bool> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results, [true, true, true], "quiet, slow, idle");
}

/// Reads the SSE stream until `want` events of the given types arrived; returns them as
/// (type, data).
async fn read_events(resp: &mut reqwest::Response, want: usize) -> Vec<(String, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < want {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if !kind.is_empty() {
                out.push((kind, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

/// The plugins' events reach an SSE subscriber, filtered by type, and the manifest's
/// `stateMachine.onTransition` and `onActionError` hooks are called for every transition and
/// failed action without a hook in each state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_over_sse_and_reach_the_state_machine_callbacks() {
    let s = serve_text(|port| {
        format!(
            r#"version: 1
database: {{ connection: file://./data }}
actions:
  record: {{ run: ["/bin/sh", "-c", "cat >> callbacks.jsonl; echo >> callbacks.jsonl"] }}
  broken: {{ run: ["/bin/sh", "-c", "echo no printer >&2; exit 3"] }}
stateMachine: {{ onTransition: record, onActionError: record }}
machines:
  order:
    initialState: pending
    states:
      pending: {{ on: {{ PAY: paid }} }}
      paid: {{ entry: broken, on: {{ SHIP: shipped }} }}
      shipped: {{ type: final }}
server: {{ listen: "127.0.0.1:{port}", token: s3cr3t-token }}
"#
        )
    });
    let path = s.dir.path().to_path_buf();
    let client = reqwest::Client::new();
    let mut all = client
        .get(format!("{}/api/v1/events", s.base))
        .bearer_auth("s3cr3t-token")
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    assert_eq!(all.headers()["content-type"], "text/event-stream");
    let mut transitions = client
        .get(format!("{}/api/v1/events?types=transition", s.base))
        .bearer_auth("s3cr3t-token")
        .send()
        .await
        .unwrap();
    // Without the token: refused like every other endpoint.
    assert_eq!(call(&s, "GET", "/api/v1/events", None, None).await.0, 401);

    let base = "/api/v1/machines/order/entities/o1";
    assert_eq!(call(&s, "POST", base, T, Some(json!({}))).await.0, 200);
    for event in ["PAY", "SHIP"] {
        let (status, body, _) = call(
            &s,
            "POST",
            &format!("{base}/events"),
            T,
            Some(json!({ "event": event, "context": { "by": "test" } })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let seen = read_events(&mut all, 4).await;
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    for kind in ["entity_initialized", "transition", "action_error"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let only = read_events(&mut transitions, 2).await;
    assert_eq!(
        only.iter()
            .map(|(k, d)| (k.as_str(), d["to"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("transition", "paid"), ("transition", "shipped")]
    );

    // The callbacks: two transitions and the failed entry action, in order.
    let file = path.join("callbacks.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let calls: Vec<Value> = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let calls: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if calls.len() >= 3 || std::time::Instant::now() > deadline {
            break calls;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(calls.len(), 3, "{calls:?}");
    let transition = calls.iter().find(|c| c["to"] == "paid").expect("PAY");
    assert_eq!(transition["from"], "pending");
    assert_eq!(transition["event"], "PAY");
    assert_eq!(transition["context"]["by"], "test");
    assert_eq!(transition["kind"], "callback");
    let failed = calls
        .iter()
        .find(|c| c.get("stats").is_some())
        .expect("the failed action");
    assert_eq!(failed["stats"]["action"], "broken");
    assert!(
        failed["stats"]["error"]
            .as_str()
            .unwrap()
            .contains("no printer"),
        "{failed}"
    );
}

async fn metrics_text(s: &Server, until: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..200 {
        text = call(s, "GET", "/metrics", T, None).await.2;
        if until.iter().all(|n| text.contains(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}

/// The value of the series that starts with `series` (its labels included).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// On S3: requests by operation and outcome with latency histograms, hook failures by hook,
/// running jobs, pending deadlines; and after a restart the last-success and last-failure gauges
/// come from the shared history instead of reading 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_s3_hooks_deadlines_and_survive_a_restart() {
    let connection = crate::support::s3::connection_string().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let manifest = format!(
        r#"version: 1
database: {{ connection: "{connection}" }}
actions:
  broken: {{ run: ["/bin/sh", "-c", "exit 4"] }}
jobs:
  good: {{ schedule: "0 9 * * MON", catchUp: none, action: {{ run: ["true"] }} }}
  bad: {{ schedule: "0 9 * * MON", catchUp: none, action: broken }}
machines:
  order:
    initialState: pending
    states:
      pending: {{ on: {{ PAY: paid }}, after: {{ 1h: expired }} }}
      paid: {{ type: final }}
      expired: {{ type: final }}
server: {{ listen: "127.0.0.1:{port}", token: s3cr3t-token }}
"#
    );
    std::fs::write(dir.path().join("s3db.yaml"), &manifest).unwrap();
    let s = serve(dir, port);
    assert_eq!(
        call(&s, "POST", "/api/v1/jobs/good/run", T, None).await.0,
        200
    );
    call(&s, "POST", "/api/v1/jobs/bad/run", T, None).await;
    let (status, body, _) = call(
        &s,
        "POST",
        "/api/v1/machines/order/entities/o1",
        T,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let text = metrics_text(
        &s,
        &["s3db_hook_failures_total", "s3db_deadlines_pending 1"],
    )
    .await;
    for needed in [
        "s3db_s3_requests_total{operation=\"PutObject\",outcome=\"success\"}",
        "s3db_s3_requests_total{operation=\"GetObject\",outcome=\"not_found\"}",
        "s3db_s3_request_duration_seconds_bucket{le=\"+Inf\",operation=\"PutObject\"}",
        "s3db_s3_request_duration_seconds_count{operation=\"ListObjectsV2\"}",
        "s3db_deadlines_pending 1",
        "s3db_jobs_running 0",
        "# HELP s3db_s3_requests_total S3 operations",
    ] {
        assert!(text.contains(needed), "missing {needed} in\n{text}");
    }
    // Each failed attempt of the job (it is retried once by default) is one failed hook call.
    assert_eq!(
        sample(
            &text,
            "s3db_hook_failures_total{hook=\"broken\",kind=\"job\"}"
        ),
        Some(2.0),
        "{text}"
    );
    check_with_promtool(&text);
    let success = sample(
        &text,
        "s3db_job_last_success_timestamp_seconds{job_name=\"good\"}",
    )
    .expect("good succeeded");
    let failure = sample(
        &text,
        "s3db_job_last_failure_timestamp_seconds{job_name=\"bad\"}",
    )
    .expect("bad failed");
    drop(s);

    // A new runner (as after a restart, or another replica) on the same database: the gauges
    // come from the history, not from 0.
    let again = tempfile::tempdir().unwrap();
    std::fs::write(again.path().join("s3db.yaml"), &manifest).unwrap();
    let s = serve(again, port);
    let text = metrics_text(
        &s,
        &[
            "s3db_job_last_success_timestamp_seconds{job_name=\"good\"}",
            "s3db_job_last_failure_timestamp_seconds{job_name=\"bad\"}",
        ],
    )
    .await;
    let seeded = sample(
        &text,
        "s3db_job_last_success_timestamp_seconds{job_name=\"good\"}",
    );
    let seeded_failure = sample(
        &text,
        "s3db_job_last_failure_timestamp_seconds{job_name=\"bad\"}",
    );
    // The history's time is the run's end, the gauge's the event's: within a second.
    assert!(
        seeded.is_some_and(|v| (v - success).abs() < 1.0),
        "{seeded:?} vs {success}\n{text}"
    );
    assert!(
        seeded_failure.is_some_and(|v| (v - failure).abs() < 1.0),
        "{seeded_failure:?} vs {failure}"
    );
}

/// The document's template that a concrete path matches (`{x}` matches one segment).
fn template_of<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = path.split('?').next().unwrap().split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
}

/// The OpenAPI document passes an independent validator (openapi-spec-validator), names every
/// route the router serves, and declares every status each route answers: every route is
/// called, with good and bad input, and each answer checked against the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_is_declared_in_a_valid_openapi_document() {
    let s = start();
    let (status, doc, text) = call(&s, "GET", "/api/v1/openapi.json", T, None).await;
    assert_eq!(status, 200);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    crate::support::venv_tool_passes("openapi-spec-validator", [file.path()]);

    // The document is generated from the router: every route is an `api_route` (a plain
    // `.route(` would serve a path the document does not name), and each is documented.
    let mut source = String::new();
    for entry in std::fs::read_dir(crate::support::repo().join("src/api")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(".route("),
            "an undocumented route in {}",
            path.display()
        );
        source.push_str(&text);
    }
    let routes: Vec<&str> = source
        .split(".api_route(")
        .skip(1)
        .filter_map(|r| r.split('"').nth(1))
        .collect();
    for route in &routes {
        assert!(
            doc["paths"].get(*route).is_some(),
            "{route} is undocumented"
        );
    }
    assert_eq!(
        routes.len(),
        doc["paths"].as_object().unwrap().len(),
        "{routes:?}"
    );

    let ready_deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&s, "GET", "/readyz", None, None).await.0 != 200 {
        assert!(std::time::Instant::now() < ready_deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let raw = |method: &str, path: &str, body: &'static str, content_type: &'static str| {
        client
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .bearer_auth("s3cr3t-token")
            .header("content-type", content_type)
            .body(body)
    };
    let mut checked = 0;
    let mut check = |method: &str, path: &str, status: u16| {
        let template = template_of(&doc, path).unwrap_or_else(|| panic!("{path} matches no path"));
        let responses = &doc["paths"][template][method.to_lowercase()]["responses"];
        assert!(
            responses.get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which {template} does not declare: {responses}"
        );
        checked += 1;
    };
    let calls: Vec<(&str, &str, Option<Value>)> = vec![
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/api/v1/manifest", None),
        ("GET", "/api/v1/jobs", None),
        ("GET", "/api/v1/jobs/hello", None),
        ("GET", "/api/v1/jobs/nope", None),
        ("POST", "/api/v1/jobs/hello/run", Some(json!({}))),
        ("POST", "/api/v1/jobs/nope/run", None),
        ("POST", "/api/v1/jobs/hello/disable", None),
        ("POST", "/api/v1/jobs/hello/enable", None),
        ("GET", "/api/v1/jobs/hello/history?limit=2", None),
        ("GET", "/api/v1/jobs/hello/stats", None),
        ("GET", "/api/v1/machines", None),
        ("GET", "/api/v1/machines/order", None),
        ("GET", "/api/v1/machines/nope", None),
        ("GET", "/api/v1/machines/order/graph?format=mermaid", None),
        ("GET", "/api/v1/machines/order/entities/c1", None),
        (
            "POST",
            "/api/v1/machines/order/entities/c1",
            Some(json!({})),
        ),
        (
            "POST",
            "/api/v1/machines/order/entities/c1",
            Some(json!({})),
        ),
        (
            "POST",
            "/api/v1/machines/order/entities/c1/events",
            Some(json!({ "event": "PAY" })),
        ),
        (
            "POST",
            "/api/v1/machines/order/entities/c1/events",
            Some(json!({ "event": "PAY" })),
        ),
        ("GET", "/api/v1/machines/order/entities/c1/history", None),
        ("GET", "/api/v1/machines/order/entities/%01/history", None),
        ("GET", "/api/v1/backups", None),
        (
            "POST",
            "/api/v1/backups",
            Some(json!({ "type": "../../x" })),
        ),
        ("GET", "/api/v1/backups/nope", None),
        ("POST", "/api/v1/backups/nope/restore", None),
        ("GET", "/api/v1/restores", None),
        ("GET", "/api/v1/restores/nope", None),
        ("GET", "/api/v1/cache", None),
        ("POST", "/api/v1/cache/clear", None),
        ("GET", "/api/v1/reload", None),
        ("POST", "/api/v1/reload", None),
        ("GET", "/api/v1/openapi.json", None),
    ];
    // A typed answer must match its declared schema: the document itself is the schema's
    // root, so its `$ref`s resolve to its components.
    let conforms = |method: &str, path: &str, status: u16, answer: &Value| {
        let template = template_of(&doc, path).unwrap();
        let declared = &doc["paths"][template][method.to_lowercase()]["responses"]
            [status.to_string()]["content"]["application/json"]["schema"];
        assert!(
            declared.as_object().is_some_and(|o| !o.is_empty()),
            "{method} {path}: {status} has no schema"
        );
        let mut root = doc.clone();
        root["$defs"] = json!({ "answer": declared });
        root["$ref"] = json!("#/$defs/answer");
        let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(answer)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{method} {path}: {errors:?}\n{answer}");
    };
    // Every answer, success or error, validates against what the document declares for its
    // status (errors against `ErrorBody`); the text answers are checked by content type.
    let mut typed = 0;
    for (method, path, body) in calls {
        let (status, answer, _) = call(&s, method, path, T, body).await;
        check(method, path, status);
        if answer.is_null() {
            assert!(
                ["/metrics", "/graph"].iter().any(|p| path.contains(p)),
                "{method} {path}: not JSON"
            );
            continue;
        }
        if status >= 400 {
            assert!(answer["code"].is_string(), "{method} {path}: {answer}");
        }
        conforms(method, path, status, &answer);
        typed += 1;
    }
    assert!(typed >= 30, "{typed} typed answers checked");
    // A backup, then its restore with and without waiting.
    let (status, started, _) = call(&s, "POST", "/api/v1/backups", T, Some(json!({}))).await;
    check("POST", "/api/v1/backups", status);
    conforms("POST", "/api/v1/backups", status, &started);
    let id = started["id"].as_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..400 {
        let (status, body, _) = call(&s, "GET", &format!("/api/v1/backups/{id}"), T, None).await;
        check("GET", "/api/v1/backups/x", status);
        conforms("GET", "/api/v1/backups/x", status, &body);
        if body["status"] == "completed" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(done);
    for wait in ["", "?wait=true"] {
        let path = format!("/api/v1/backups/{id}/restore{wait}");
        let (status, answer, _) = call(&s, "POST", &path, T, Some(json!({}))).await;
        check("POST", &path, status);
        conforms("POST", &path, status, &answer);
    }
    let (status, restores, _) = call(&s, "GET", "/api/v1/restores", T, None).await;
    conforms("GET", "/api/v1/restores", status, &restores);
    let restore_id = restores[0]["restoreId"].as_str().unwrap();
    let path = format!("/api/v1/restores/{restore_id}");
    let (status, answer, _) = call(&s, "GET", &path, T, None).await;
    conforms("GET", &path, status, &answer);
    // A path segment that is not UTF-8, a query value of the wrong type and a method a route
    // does not take are JSON errors too.
    for (method, path, want) in [
        ("GET", "/api/v1/jobs/%FF", 400),
        ("GET", "/api/v1/jobs/hello/history?limit=abc", 400),
        ("DELETE", "/api/v1/jobs", 405),
    ] {
        let (status, answer, _) = call(&s, method, path, T, None).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        assert!(answer["code"].is_string(), "{method} {path}: {answer}");
        if status != 405 {
            check(method, path, status);
            conforms(method, path, status, &answer);
        }
    }
    // Bodies refused: malformed, of the wrong shape, not JSON.
    for (body, content_type, want) in [
        ("{not json", "application/json", 400),
        (r#"{"event": 5}"#, "application/json", 422),
        ("event=PAY", "text/plain", 415),
    ] {
        let path = "/api/v1/machines/order/entities/c1/events";
        let resp = raw("POST", path, body, content_type).send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, want, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert!(answer["code"].is_string(), "{answer}");
        check("POST", path, status);
    }
    assert!(checked >= 40, "{checked}");
}
