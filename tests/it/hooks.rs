//! Hooks with real processes and real built-ins: the shell contract (stdin, environment, exit
//! codes, timeouts, process groups, output caps, retries), templates that never reach a shell,
//! and every built-in on the memory and fs backends.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::Database;
use s3db_run::hooks::builtins::BuiltinKind;
use s3db_run::hooks::shell::OUTPUT_CAP;
use s3db_run::hooks::{GuardDecision, HookError, HookInput, HookKind, HookRunner};
use s3db_run::manifest::model::{HookRef, Manifest};
use s3db_run::manifest::Format;
use serde_json::{json, Value};

use crate::support::{load_text, Backend};

/// A manifest's hooks, a database on `backend`, and the folder hooks run in.
struct Setup {
    runner: HookRunner,
    dir: tempfile::TempDir,
    _backend: Backend,
}

async fn setup(backend: Backend, hooks_yaml: &str) -> Setup {
    let text = format!(
        "version: 1\ndatabase:\n  connection: memory://unused/x\n  resources:\n    items: {{ attributes: {{ n: number, name: string }} }}\n{hooks_yaml}"
    );
    let loaded = load_text(&text, Format::Yaml);
    let errors: Vec<_> = loaded
        .report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let manifest: Manifest = loaded.manifest.expect("valid").manifest;
    let declared: IndexMap<String, StoredResource> = manifest
        .database
        .resources
        .iter()
        .map(|(k, v)| (k.clone(), StoredResource::from(v)))
        .collect();
    let db = Database::connect(backend.store.clone(), &declared)
        .await
        .expect("connect");
    let dir = tempfile::tempdir().unwrap();
    let runner = HookRunner::new(&manifest, dir.path(), db).with_grace(Duration::from_millis(300));
    Setup {
        runner,
        dir,
        _backend: backend,
    }
}

impl Setup {
    fn hook(&self, name: &str, kind: BuiltinKind) -> s3db_run::hooks::ResolvedHook {
        self.runner
            .resolve(&HookRef::Named(name.into()), kind)
            .expect("defined")
    }

    async fn guard(&self, name: &str, input: &HookInput) -> Result<GuardDecision, HookError> {
        self.runner
            .guard(&self.hook(name, BuiltinKind::Guard), input)
            .await
    }

    async fn action(&self, name: &str, input: &HookInput) -> Result<Value, HookError> {
        self.runner
            .action(&self.hook(name, BuiltinKind::Action), input)
            .await
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

fn input(kind: HookKind, context: Value) -> HookInput {
    let t = s3db_run::hooks::Transition {
        machine: "order",
        entity: "o-1",
        event: "SHIP",
        from: "paid",
        to: "shipped",
    };
    HookInput::for_transition("h", kind, &t, context)
}

/// Whether the process still runs. A killed process whose parent is gone can linger as a zombie
/// until init reaps it; a zombie runs nothing.
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_for_file(path: &Path) -> String {
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(path) {
            if !t.trim().is_empty() {
                return t;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn a_guard_denies_with_its_reason_and_allows_with_exit_zero() {
    let s = setup(
        Backend::memory().await,
        "guards:\n  stock: { run: [\"sh\", \"-c\", \"if [ \\\"$1\\\" -gt 5 ]; then echo only 5 left; exit 1; fi\", \"sh\", \"{{context.quantity}}\"] }\n  broken: { run: [\"sh\", \"-c\", \"echo boom >&2; exit 3\"] }\n",
    )
    .await;
    let denied = s
        .guard("stock", &input(HookKind::Guard, json!({ "quantity": 9 })))
        .await
        .unwrap();
    assert_eq!(
        denied,
        GuardDecision::Deny {
            reason: "only 5 left".into()
        }
    );
    let allowed = s
        .guard("stock", &input(HookKind::Guard, json!({ "quantity": 2 })))
        .await
        .unwrap();
    assert_eq!(allowed, GuardDecision::Allow);
    let err = s
        .guard("broken", &input(HookKind::Guard, json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HookError::Failed { code, output, .. } if code == "3" && output.contains("boom")),
        "{err}"
    );
}

#[tokio::test]
async fn a_timed_out_hook_and_its_background_children_are_all_stopped() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  slow: { run: [\"sh\", \"-c\", \"sleep 1000 & echo $! > bg.pid; sleep 1000\"], timeout: 300ms }\n  leaves: { run: [\"sh\", \"-c\", \"sleep 1000 & echo $! > left.pid; echo done\"] }\n",
    )
    .await;
    let started = std::time::Instant::now();
    let err = s
        .action("slow", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, HookError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let pid: i32 = wait_for_file(&s.path("bg.pid")).trim().parse().unwrap();
    assert!(
        !pid_alive(pid),
        "background sleep {pid} survived the timeout"
    );
    // A hook that exits normally does not leave its background processes running either.
    assert_eq!(
        s.action("leaves", &input(HookKind::Action, json!({})))
            .await
            .unwrap(),
        json!("done")
    );
    let pid: i32 = wait_for_file(&s.path("left.pid")).trim().parse().unwrap();
    assert!(!pid_alive(pid), "background sleep {pid} outlived its hook");
}

#[tokio::test]
async fn the_stdin_document_and_environment_follow_the_contract() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  dump: { run: [\"sh\", \"-c\", \"cat > input.json; env | grep '^S3DB_' | sort > env.txt; echo '{\\\"ok\\\": true}'\"], env: { EXTRA: \"{{entity}}\" } }\n",
    )
    .await;
    let mut i = input(HookKind::Action, json!({ "quantity": 2 }));
    i.hook = "dump".into();
    let result = s.action("dump", &i).await.unwrap();
    assert_eq!(
        result,
        json!({ "ok": true }),
        "JSON on stdout is the result"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("input.json")).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({
            "hook": "dump", "kind": "action", "machine": "order", "entity": "o-1", "event": "SHIP",
            "from": "paid", "to": "shipped", "context": { "quantity": 2 }, "attempt": 1
        })
    );
    let env = std::fs::read_to_string(s.path("env.txt")).unwrap();
    for line in [
        "S3DB_ENTITY=o-1",
        "S3DB_EVENT=SHIP",
        "S3DB_FROM=paid",
        "S3DB_TO=shipped",
        "S3DB_KIND=action",
        "S3DB_ATTEMPT=1",
        "S3DB_CONTEXT={\"quantity\":2}",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing from\n{env}");
    }
}

#[tokio::test]
async fn template_values_reach_the_hook_literally_and_nothing_else_runs() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  echo: { run: [\"sh\", \"-c\", \"printf '%s' \\\"$1\\\" > arg.txt\", \"sh\", \"{{context.note}}\"] }\n",
    )
    .await;
    let pwned = s.path("pwned");
    let note = format!(
        "$(touch {}); \" `touch {}` ; touch {}",
        pwned.display(),
        pwned.display(),
        pwned.display()
    );
    s.action("echo", &input(HookKind::Action, json!({ "note": note })))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(s.path("arg.txt")).unwrap(), note);
    assert!(!pwned.exists(), "the value ran as code");
}

#[tokio::test]
async fn output_above_the_cap_is_cut() {
    let s = setup(Backend::memory().await, "actions:\n  loud: { run: [\"sh\", \"-c\", \"yes | head -c 5000000; yes err | head -c 3000000 >&2\"] }\n").await;
    let out = s
        .action("loud", &input(HookKind::Action, json!({})))
        .await
        .unwrap();
    let text = out.as_str().expect("non-JSON output is a string");
    assert!(
        text.len() <= OUTPUT_CAP && text.len() > OUTPUT_CAP - 4,
        "{}",
        text.len()
    );
}

#[tokio::test]
async fn missing_and_non_executable_commands_are_clear_errors() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  missing: { run: [\"./no-such-hook.sh\"] }\n  noexec: { run: [\"./plain.sh\"] }\n",
    )
    .await;
    std::fs::write(s.path("plain.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    let e = s
        .action("missing", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("./no-such-hook.sh") && e.contains("No such file"),
        "{e}"
    );
    let e = s
        .action("noexec", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("./plain.sh") && e.contains("ermission denied"),
        "{e}"
    );
}

#[tokio::test]
async fn failing_hooks_are_retried_with_the_attempt_number() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  flaky: { run: [\"sh\", \"-c\", \"echo $S3DB_ATTEMPT >> attempts.txt; [ $S3DB_ATTEMPT -ge 3 ]\"], retries: 3 }\n  hopeless: { run: [\"false\"], retries: 1 }\n",
    )
    .await;
    s.action("flaky", &input(HookKind::Action, json!({})))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(s.path("attempts.txt")).unwrap(),
        "1\n2\n3\n"
    );
    let e = s
        .action("hopeless", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err();
    assert!(matches!(e, HookError::Failed { .. }), "{e}");
}

#[tokio::test]
async fn an_unknown_template_variable_is_an_error_at_run_time() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  a: { run: [\"echo\", \"{{context.absent}}\"] }\n",
    )
    .await;
    let e = s
        .action("a", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HookError::Template { .. }) && e.to_string().contains("absent"),
        "{e}"
    );
}

const BUILTIN_HOOKS: &str = r#"guards:
  yes: { builtin: always }
  no: { builtin: never, with: { reason: closed today } }
  bigOrder: { builtin: context.matches, with: { where: { quantity: { $gte: 10 }, status: { $in: [paid, new] } } } }
  inStock:
    builtin: record.check
    with: { resource: items, id: "{{context.item}}", where: { n: { $gte: "{{context.quantity}}" } }, reason: not enough stock }
actions:
  note: { builtin: log, with: { message: "{{entity}} went {{from}} -> {{to}}", level: warn } }
  add: { builtin: record.insert, with: { resource: items, id: "{{context.item}}", data: { n: "{{context.quantity}}", name: "{{entity}}" } } }
  take: { builtin: record.update, with: { resource: items, id: "{{context.item}}", set: { n: { $decrement: "{{context.quantity}}" } } } }
  put: { builtin: record.update, with: { resource: items, id: "{{context.item}}", set: { n: 1 }, upsert: true } }
  drop: { builtin: record.delete, with: { resource: items, id: "{{context.item}}" } }
  purge: { builtin: resource.deleteWhere, with: { resource: items, where: { n: { $lt: "{{context.below}}" } } } }
"#;

async fn guards_allow_and_deny_as_configured(b: Backend) {
    let s = setup(b, BUILTIN_HOOKS).await;
    let g = |ctx: Value| input(HookKind::Guard, ctx);
    assert_eq!(
        s.guard("yes", &g(json!({}))).await.unwrap(),
        GuardDecision::Allow
    );
    assert_eq!(
        s.guard("no", &g(json!({}))).await.unwrap(),
        GuardDecision::Deny {
            reason: "closed today".into()
        }
    );
    assert!(s
        .guard("bigOrder", &g(json!({ "quantity": 12, "status": "paid" })))
        .await
        .unwrap()
        .allowed());
    assert!(!s
        .guard("bigOrder", &g(json!({ "quantity": 12, "status": "void" })))
        .await
        .unwrap()
        .allowed());
    assert!(!s
        .guard("bigOrder", &g(json!({ "quantity": 3, "status": "paid" })))
        .await
        .unwrap()
        .allowed());
    let items = s.runner.database().resource("items").unwrap();
    items
        .insert(
            json!({ "n": 5 }).as_object().cloned().unwrap(),
            Some("widget"),
        )
        .await
        .unwrap();
    assert!(s
        .guard("inStock", &g(json!({ "item": "widget", "quantity": 5 })))
        .await
        .unwrap()
        .allowed());
    assert_eq!(
        s.guard("inStock", &g(json!({ "item": "widget", "quantity": 6 })))
            .await
            .unwrap(),
        GuardDecision::Deny {
            reason: "not enough stock".into()
        }
    );
    assert!(
        !s.guard("inStock", &g(json!({ "item": "gizmo", "quantity": 1 })))
            .await
            .unwrap()
            .allowed(),
        "a missing record denies"
    );
}

async fn record_actions_write_the_database(b: Backend) {
    let s = setup(b, BUILTIN_HOOKS).await;
    let a = |ctx: Value| input(HookKind::Action, ctx);
    let items = s.runner.database().resource("items").unwrap();
    assert_eq!(
        s.action("note", &a(json!({}))).await.unwrap(),
        json!({ "logged": "o-1 went paid -> shipped" })
    );
    let added = s
        .action("add", &a(json!({ "item": "w", "quantity": 7 })))
        .await
        .unwrap();
    assert_eq!(
        (
            added["id"].clone(),
            added["n"].clone(),
            added["name"].clone()
        ),
        (json!("w"), json!(7), json!("o-1"))
    );
    s.action("take", &a(json!({ "item": "w", "quantity": 2 })))
        .await
        .unwrap();
    assert_eq!(items.get("w").await.unwrap().unwrap().data["n"], 5);
    assert!(
        s.action("take", &a(json!({ "item": "nope", "quantity": 1 })))
            .await
            .is_err(),
        "updating a missing record fails"
    );
    s.action("put", &a(json!({ "item": "fresh" })))
        .await
        .unwrap();
    assert_eq!(
        items.get("fresh").await.unwrap().unwrap().data["n"],
        1,
        "upsert inserted"
    );
    s.action("add", &a(json!({ "item": "tiny", "quantity": 0 })))
        .await
        .unwrap();
    assert_eq!(
        s.action("purge", &a(json!({ "below": 2 }))).await.unwrap(),
        json!({ "deleted": 2 })
    );
    assert_eq!(items.ids().await.unwrap(), ["w"]);
    assert_eq!(
        s.action("drop", &a(json!({ "item": "w" }))).await.unwrap(),
        json!({ "deleted": true, "id": "w" })
    );
    assert!(items.ids().await.unwrap().is_empty());
}

mod builtins_fs {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guards_allow_and_deny_as_configured() {
        super::guards_allow_and_deny_as_configured(crate::support::Backend::fs().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_actions_write_the_database() {
        super::record_actions_write_the_database(crate::support::Backend::fs().await).await
    }
}

mod builtins_memory {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guards_allow_and_deny_as_configured() {
        super::guards_allow_and_deny_as_configured(crate::support::Backend::memory().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_actions_write_the_database() {
        super::record_actions_write_the_database(crate::support::Backend::memory().await).await
    }
}

/// A loopback HTTP server that answers with the given statuses in turn and records the bodies.
fn http_server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (stream, status) in listener.incoming().zip(statuses) {
            let mut stream = stream.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break body.to_string();
                    }
                }
                if n == 0 {
                    break String::new();
                }
            };
            seen.lock().unwrap().push(body);
            let reply = "{\"received\":true}";
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len());
        }
    });
    (url, bodies)
}

async fn webhook_posts_the_hook_input_and_retries_server_errors(b: Backend) {
    let (url, bodies) = http_server(vec![503, 200]);
    let s = setup(b, &format!("actions:\n  hook: {{ builtin: webhook, with: {{ url: \"{url}\", retries: 2, headers: {{ X-Token: abc }} }} }}\n")).await;
    let result = s
        .action("hook", &input(HookKind::Action, json!({ "k": 1 })))
        .await
        .unwrap();
    assert_eq!(result, json!({ "received": true }));
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one failure, one retry");
    let sent: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(
        (sent["entity"].clone(), sent["context"].clone()),
        (json!("o-1"), json!({ "k": 1 }))
    );
    let (url, _) = http_server(vec![404]);
    let s2 = setup(
        Backend::memory().await,
        &format!("actions:\n  hook: {{ builtin: webhook, with: {{ url: \"{url}\" }} }}\n"),
    )
    .await;
    let e = s2
        .action("hook", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("404"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_on_fs() {
    webhook_posts_the_hook_input_and_retries_server_errors(Backend::fs().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_on_memory() {
    webhook_posts_the_hook_input_and_retries_server_errors(Backend::memory().await).await
}

#[tokio::test]
async fn plugin_built_ins_say_clearly_when_their_plugin_is_not_running() {
    let s = setup(
        Backend::memory().await,
        "machines:\n  m: { initialState: a, states: { a: { on: { GO: b } }, b: { type: final } } }\nbackup: { config: { path: ./b/ } }\nactions:\n  go: { builtin: machine.send, with: { machine: m, entity: e, event: GO } }\n",
    )
    .await;
    let e = s
        .action("go", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("state machine plugin is not running"), "{e}");
    let e = s
        .action("backup.prune", &input(HookKind::Action, json!({})))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("backup plugin is not running"), "{e}");
}
