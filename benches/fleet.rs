//! Benchmark (S3 on loopback, real runner processes): S3 requests per job slot with 1 and 3
//! runners, idle requests per minute with 1,000 entities in final states and 100 jobs, and fire
//! lateness of 100 jobs due in one minute across 3 runners. Requests are counted by a proxy in
//! front of the S3 server, so every request of every process is seen. Request counts do not
//! depend on the build profile. Run with `cargo bench --bench fleet`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use futures::StreamExt;
use s3db_run::store::s3::{ensure_bucket, S3Store};

mod common;
use common::moto;

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    count: Arc<AtomicUsize>,
    kinds: Kinds,
}

/// Requests by method and the first part of the key, to say where a count comes from.
type Kinds = Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

fn kind(method: &str, path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let key: Vec<&str> = decoded.split(['/', '?']).skip(2).take(2).collect();
    format!("{method} {}", key.join("/"))
}

async fn forward(State(p): State<Proxy>, request: Request) -> Response<Body> {
    p.count.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |q| q.as_str());
    *p.kinds
        .lock()
        .unwrap()
        .entry(kind(parts.method.as_str(), path))
        .or_default() += 1;
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut up = p
        .client
        .request(parts.method, format!("{}{path}", p.upstream))
        .body(body);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            up = up.header(k, v);
        }
    }
    let answer = up.send().await.expect("upstream answers");
    let mut out = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != "content-length" && k != "transfer-encoding" {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(answer.bytes().await.unwrap_or_default()))
        .expect("response")
}

async fn proxy(upstream: String) -> (String, Arc<AtomicUsize>, Kinds) {
    let count = Arc::new(AtomicUsize::new(0));
    let kinds = Kinds::default();
    let state = Proxy {
        upstream,
        client: reqwest::Client::new(),
        count: count.clone(),
        kinds: kinds.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(forward).with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), count, kinds)
}

async fn bucket(endpoint: &str) -> String {
    let name = format!("bench-fleet-{:08x}", rand::random::<u32>());
    let location = s3db_run::store::connection::S3Location {
        bucket: name.clone(),
        prefix: String::new(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        force_path_style: true,
        credentials: Some(("testing".into(), s3db_run::types::Secret::new("testing"))),
        requests: Default::default(),
    };
    let s3 = S3Store::connect(location).await;
    ensure_bucket(s3.client(), &name).await.expect("bucket");
    name
}

fn write_manifest(dir: &Path, connection: &str, body: &str) {
    std::fs::write(
        dir.join("s3db.yaml"),
        format!("version: 1\ndatabase:\n  connection: {connection}\n{body}server: {{ enabled: false }}\n"),
    )
    .expect("manifest");
}

fn runners(dir: &Path, n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_s3db-run"))
                .args(["run", "s3db.yaml", "--grace", "5s"])
                .current_dir(dir)
                .env_remove("S3DB_CONNECTION")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("runner")
        })
        .collect()
}

fn stop(children: Vec<Child>) {
    for c in &children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    for mut c in children {
        let _ = c.wait();
    }
}

/// Requests in `window` after a warm-up, with `n` runners on the manifest in `dir`.
async fn count_requests(dir: &Path, n: usize, count: &AtomicUsize, window: Duration) -> usize {
    let children = runners(dir, n);
    // Start-up (connect, conditional-write probe, the first scans and history upkeep) is not
    // steady state.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let before = count.load(Ordering::SeqCst);
    tokio::time::sleep(window).await;
    let made = count.load(Ordering::SeqCst) - before;
    stop(children);
    made
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (endpoint, mut moto_child) = moto();
    let (proxied, count, kinds) = proxy(endpoint).await;
    let connection = |bucket: &str| {
        format!("s3://testing:testing@{bucket}/db?region=us-east-1&endpoint={proxied}&forcePathStyle=true")
    };
    let window = Duration::from_secs(20);

    // Requests per slot: one per-second job, minus the same runners idle.
    for n in [1usize, 3] {
        let dir = tempfile::tempdir().expect("dir");
        let b = bucket(&proxied).await;
        let job = |enabled: bool| {
            format!("jobs:\n  tick:\n    schedule: \"* * * * * *\"\n    enabled: {enabled}\n    action: {{ builtin: log, with: {{ level: debug }} }}\n")
        };
        write_manifest(dir.path(), &connection(&b), &job(false));
        let idle = count_requests(dir.path(), n, &count, window).await;
        write_manifest(dir.path(), &connection(&b), &job(true));
        let busy = count_requests(dir.path(), n, &count, window).await;
        let slots = window.as_secs() as f64;
        println!(
            "job slot, {n} runner(s): {:.1} requests per slot (busy {busy}, idle {idle} in {}s; floor {} = one claim per runner + lease create/delete + byDate ref + final write)",
            (busy as f64 - idle as f64) / slots,
            window.as_secs(),
            n + 4
        );
    }

    // Idle: 1,000 entities in a final state and 100 hourly jobs.
    let dir = tempfile::tempdir().expect("dir");
    let b = bucket(&proxied).await;
    let mut body = String::from("machines:\n  order:\n    initialState: open\n    states:\n      open: { on: { CLOSE: closed } }\n      closed: { type: final }\njobs:\n");
    for i in 0..100 {
        body.push_str(&format!(
            "  job{i}: {{ schedule: \"{} * * * *\", action: {{ builtin: log }} }}\n",
            i % 60
        ));
    }
    write_manifest(dir.path(), &connection(&b), &body);
    let seed = Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["db", "resources"])
        .current_dir(dir.path())
        .output()
        .expect("db");
    assert!(seed.status.success(), "{seed:?}");
    seed_entities(dir.path(), 1000).await;
    for n in [1usize, 3] {
        kinds.lock().unwrap().clear();
        let made = count_requests(dir.path(), n, &count, window).await;
        let mut by_kind: Vec<(String, usize)> = kinds.lock().unwrap().clone().into_iter().collect();
        by_kind.sort_by_key(|k| std::cmp::Reverse(k.1));
        println!(
            "  (whole run, start-up included) {:?}",
            &by_kind[..by_kind.len().min(6)]
        );
        println!(
            "idle, {n} runner(s), 1,000 final entities, 100 jobs: {:.0} requests per minute ({:.0} per runner)",
            made as f64 * 60.0 / window.as_secs_f64(),
            made as f64 * 60.0 / window.as_secs_f64() / n as f64
        );
    }
    lateness(&proxied, &connection).await;
    startup_to_first_slot(&proxied, &connection).await;
    if let Some(c) = moto_child.as_mut() {
        let _ = c.kill();
    }
}

/// The runs of every job of the manifest in `dir`, from the shared history.
async fn history(dir: &Path) -> Vec<serde_json::Value> {
    let loaded = s3db_run::manifest::load_path(&dir.join("s3db.yaml"), None, &|_: &str| None)
        .expect("manifest");
    let checked = loaded.manifest.expect("valid");
    let rt = s3db_run::runtime::Runtime::build(&checked, None)
        .await
        .expect("runtime");
    let mut runs = Vec::new();
    for name in checked.manifest.jobs.keys() {
        runs.extend(
            rt.scheduler
                .history(name, None, Some(1000))
                .await
                .expect("history"),
        );
    }
    runs
}

fn millis(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// Fire lateness (start of the run minus its slot) of 100 jobs due in one minute, 3 runners.
async fn lateness(proxied: &str, connection: &dyn Fn(&str) -> String) {
    use chrono::Timelike;
    let dir = tempfile::tempdir().expect("dir");
    let b = bucket(proxied).await;
    // The minute after the runners have started.
    let minute = (chrono::Utc::now() + chrono::Duration::seconds(75))
        .with_second(0)
        .expect("a minute");
    let mut body = String::from("jobs:\n");
    for i in 0..100 {
        body.push_str(&format!(
            "  job{i}: {{ schedule: \"{} {} {} * * *\", action: {{ builtin: log, with: {{ level: debug }} }} }}\n",
            (i * 7) % 60,
            minute.minute(),
            minute.hour()
        ));
    }
    write_manifest(dir.path(), &connection(&b), &body);
    let children = runners(dir.path(), 3);
    let until = minute + chrono::Duration::seconds(65);
    let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    stop(children);
    let mut late: Vec<i64> = history(dir.path())
        .await
        .iter()
        .filter_map(|r| Some(millis(r["startedAt"].as_str()?) - millis(r["slot"].as_str()?)))
        .collect();
    late.sort_unstable();
    let pct = |p: f64| {
        late.get(((late.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "fire lateness, 3 runners, 100 jobs in one minute: {} runs, p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        pct(0.5),
        pct(0.99),
        late.last().copied().unwrap_or(-1)
    );
}

/// Time from starting a runner to the first run, with 100 per-second jobs.
async fn startup_to_first_slot(proxied: &str, connection: &dyn Fn(&str) -> String) {
    let dir = tempfile::tempdir().expect("dir");
    let b = bucket(proxied).await;
    let mut body = String::from("jobs:\n");
    for i in 0..100 {
        body.push_str(&format!(
            "  job{i}: {{ schedule: \"* * * * * *\", overlap: allow, action: {{ builtin: log, with: {{ level: debug }} }} }}\n"
        ));
    }
    write_manifest(dir.path(), &connection(&b), &body);
    let started = chrono::Utc::now().timestamp_millis();
    let children = runners(dir.path(), 1);
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop(children);
    let first = history(dir.path())
        .await
        .iter()
        .filter_map(|r| r["startedAt"].as_str().map(millis))
        .min()
        .unwrap_or(-1);
    println!(
        "start-up to the first run, 100 per-second jobs: {} ms",
        first - started
    );
}

/// Puts `n` entities of `order` in the final state, through the library.
async fn seed_entities(dir: &Path, n: usize) {
    let loaded = s3db_run::manifest::load_path(&dir.join("s3db.yaml"), None, &|_: &str| None)
        .expect("manifest");
    let checked = loaded.manifest.expect("valid");
    let rt = s3db_run::runtime::Runtime::build(&checked, None)
        .await
        .expect("runtime");
    let machines = rt.machines.clone().expect("machines");
    let ids: Vec<String> = (0..n).map(|i| format!("o{i}")).collect();
    futures::stream::iter(ids)
        .for_each_concurrent(16, |id| {
            let machines = machines.clone();
            async move {
                machines
                    .initialize("order", &id, serde_json::Value::Null)
                    .await
                    .expect("init");
                machines
                    .send("order", &id, "CLOSE", serde_json::Value::Null, None)
                    .await
                    .expect("close");
            }
        })
        .await;
}
