//! The state machine plugin on the fs and S3 backends: every operation and every failure, event
//! ids, delayed transitions across a restart, crash repair, events, and the `machine.*` built-ins.

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::Database;
use s3db_run::hooks::builtins::BuiltinKind;
use s3db_run::hooks::{HookInput, HookKind, HookRunner};
use s3db_run::manifest::model::{HookRef, Manifest};
use s3db_run::manifest::Format;
use s3db_run::plugins::state_machine::{log_id, MachineError, MachineEvent, StateMachines};
use s3db_run::plugins::{BuildContext, Component};
use serde_json::{json, Value};

use crate::support::{load_text, Backend};

const MANIFEST: &str = r#"version: 1
database:
  connection: memory://unused/x
  resources:
    inventory: { attributes: { quantity: number|required } }
guards:
  inStock:
    builtin: record.check
    with: { resource: inventory, id: "{{context.productId}}", where: { quantity: { $gte: "{{context.quantity}}" } }, reason: out of stock }
  broken: { run: ["sh", "-c", "exit 7"] }
actions:
  reserve:
    builtin: record.update
    with: { resource: inventory, id: "{{context.productId}}", set: { quantity: { $decrement: "{{context.quantity}}" } } }
  failing: { run: ["sh", "-c", "echo nope >&2; exit 2"] }
  mark: { run: ["sh", "-c", "echo \"$S3DB_EVENT:$S3DB_FROM>$S3DB_TO\" >> marks.txt"] }
  cancelAll: { builtin: machine.sendAll, with: { machine: order, state: pending, event: CANCEL } }
  ship: { builtin: machine.send, with: { machine: order, entity: "{{context.order}}", event: SHIP } }
machines:
  order:
    initialState: pending
    states:
      pending: { on: { CONFIRM: confirmed, CANCEL: cancelled }, entry: mark, exit: mark }
      confirmed: { on: { SHIP: shipped, CANCEL: cancelled, AUDIT: audited }, guards: { SHIP: inStock, AUDIT: broken }, exit: reserve }
      shipped: { on: { DELIVER: delivered }, entry: failing }
      audited: { type: final }
      delivered: { type: final }
      cancelled: { type: final }
  toggle:
    initialState: off
    states:
      off: { on: { TOGGLE: on } }
      on: { on: { TOGGLE: off } }
  timer:
    initialState: waiting
    states:
      waiting: { on: { GO: done }, after: { 800ms: expired } }
      done: { type: final }
      expired: { type: final }
"#;

struct Fixture {
    sm: StateMachines,
    db: Database,
    hooks: Arc<HookRunner>,
    manifest: Manifest,
    dir: tempfile::TempDir,
    _backend: Arc<Backend>,
}

async fn fixture(backend: Backend) -> Fixture {
    let manifest = load_text(MANIFEST, Format::Yaml)
        .manifest
        .expect("valid")
        .manifest;
    let backend = Arc::new(backend);
    let declared: IndexMap<String, StoredResource> = manifest
        .database
        .resources
        .iter()
        .map(|(k, v)| (k.clone(), StoredResource::from(v)))
        .collect();
    let db = Database::connect(backend.store.clone(), &declared)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = BuildContext::for_manifest(&manifest, db.clone(), dir.path());
    let hooks = ctx.hooks.clone();
    let sm = StateMachines::build((&manifest.machines, &manifest.state_machine), &ctx)
        .await
        .unwrap();
    // As the runtime does: `machine.*` built-ins act on this plugin.
    hooks.plugins().install(s3db_run::hooks::PluginSet {
        machines: Some(Arc::new(sm.clone()) as Arc<dyn s3db_run::hooks::MachineOps>),
        backup: None,
    });
    Fixture {
        sm,
        db,
        hooks,
        manifest,
        dir,
        _backend: backend,
    }
}

impl Fixture {
    /// The same database and definitions in a new plugin instance: a restart.
    async fn restart(&self) -> StateMachines {
        let ctx = BuildContext::for_manifest(&self.manifest, self.db.clone(), self.dir.path());
        StateMachines::build(
            (&self.manifest.machines, &self.manifest.state_machine),
            &ctx,
        )
        .await
        .unwrap()
    }

    async fn stock(&self, quantity: i64) {
        self.db
            .resource("inventory")
            .unwrap()
            .upsert(
                "p1",
                json!({ "quantity": quantity })
                    .as_object()
                    .cloned()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
}

fn ctx() -> Value {
    json!({ "productId": "p1", "quantity": 2 })
}

async fn operations_follow_the_definition(b: Backend) {
    let f = fixture(b).await;
    let status = f.sm.initialize("order", "o1", ctx()).await.unwrap();
    assert_eq!((status.state.as_str(), status.seq), ("pending", 0));
    assert_eq!(status.valid_events, ["CONFIRM", "CANCEL"]);
    assert!(matches!(
        f.sm.initialize("order", "o1", ctx()).await,
        Err(MachineError::AlreadyInitialized { .. })
    ));
    let r =
        f.sm.send("order", "o1", "CONFIRM", json!({ "note": "hi" }), None)
            .await
            .unwrap();
    assert_eq!(
        (r.from.as_str(), r.to.as_str(), r.event.as_str(), r.seq),
        ("pending", "confirmed", "CONFIRM", 1)
    );
    assert!(r.timestamp.ends_with('Z'));
    assert_eq!(f.sm.state("order", "o1").await.unwrap().state, "confirmed");
    assert_eq!(
        f.sm.valid_events("order", "o1").await.unwrap(),
        ["SHIP", "CANCEL", "AUDIT"]
    );
    assert_eq!(
        f.sm.valid_events_in("order", "shipped").unwrap(),
        ["DELIVER"]
    );
    assert_eq!(f.sm.machine_names(), ["order", "toggle", "timer"]);
    assert_eq!(f.sm.definition("order").unwrap().initial_state, "pending");
    // Entry and exit actions ran once each, in order: init entry, then exit of pending.
    let marks = std::fs::read_to_string(f.dir.path().join("marks.txt")).unwrap();
    assert_eq!(marks, "init:>pending\nCONFIRM:pending>confirmed\n");
    f.stock(10).await;
    f.sm.send("order", "o1", "SHIP", Value::Null, None)
        .await
        .unwrap();
    let stock =
        f.db.resource("inventory")
            .unwrap()
            .get("p1")
            .await
            .unwrap()
            .unwrap();
    assert_eq!(
        stock.data["quantity"], 8,
        "exit action of confirmed reserved stock with the entity's context"
    );
    let history = f.sm.history("order", "o1", None, 0).await.unwrap();
    let events: Vec<&str> = history
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["SHIP", "CONFIRM"], "newest first");
    assert_eq!(
        f.sm.history("order", "o1", Some(1), 1).await.unwrap()[0]["event"],
        "CONFIRM"
    );
    assert!(matches!(
        f.sm.state("order", "nobody").await,
        Err(MachineError::NotInitialized { .. })
    ));
    assert!(
        matches!(f.sm.send("ordr", "o1", "X", Value::Null, None).await, Err(MachineError::UnknownMachine(_, hint)) if hint.contains("order"))
    );
    let dot = f.sm.graph_dot("order").unwrap();
    assert!(
        dot.starts_with("digraph \"order\"")
            && dot.contains("\"confirmed\" -> \"shipped\" [label=\"SHIP [inStock]\"]"),
        "{dot}"
    );
    assert!(dot.contains("\"delivered\" [shape=doublecircle]"), "{dot}");
    let mermaid = f.sm.graph_mermaid("timer").unwrap();
    assert!(
        mermaid.starts_with("stateDiagram-v2")
            && mermaid.contains("s_waiting --> s_expired: after 800ms")
            && mermaid.contains("[*] --> s_waiting"),
        "{mermaid}"
    );
}

async fn refusals_leave_the_state_unchanged(b: Backend) {
    let f = fixture(b).await;
    f.sm.initialize("order", "o2", ctx()).await.unwrap();
    let e =
        f.sm.send("order", "o2", "SHIP", Value::Null, None)
            .await
            .unwrap_err();
    assert!(
        matches!(&e, MachineError::InvalidEvent { valid, .. } if valid == "CONFIRM, CANCEL"),
        "{e}"
    );
    f.sm.send("order", "o2", "CONFIRM", Value::Null, None)
        .await
        .unwrap();
    f.stock(1).await;
    let e =
        f.sm.send("order", "o2", "SHIP", Value::Null, None)
            .await
            .unwrap_err();
    assert!(
        matches!(&e, MachineError::GuardDenied { reason, .. } if reason == "out of stock"),
        "{e}"
    );
    let e =
        f.sm.send("order", "o2", "AUDIT", Value::Null, None)
            .await
            .unwrap_err();
    assert!(
        matches!(&e, MachineError::GuardFailed { error, .. } if error.contains("exit 7")),
        "{e}"
    );
    assert_eq!(f.sm.state("order", "o2").await.unwrap().state, "confirmed");
    f.sm.send("order", "o2", "CANCEL", Value::Null, None)
        .await
        .unwrap();
    let e =
        f.sm.send("order", "o2", "CANCEL", Value::Null, None)
            .await
            .unwrap_err();
    assert!(matches!(e, MachineError::FinalState { .. }), "{e}");
    assert_eq!(
        f.sm.history("order", "o2", None, 0).await.unwrap().len(),
        2,
        "refused events are not logged"
    );
}

async fn a_failing_action_is_reported_and_the_state_stays(b: Backend) {
    let f = fixture(b).await;
    let mut events = f.sm.subscribe();
    f.stock(10).await;
    f.sm.initialize("order", "o3", ctx()).await.unwrap();
    f.sm.send("order", "o3", "CONFIRM", Value::Null, None)
        .await
        .unwrap();
    let r =
        f.sm.send("order", "o3", "SHIP", Value::Null, None)
            .await
            .unwrap();
    assert_eq!(r.action_errors.len(), 1);
    assert_eq!(r.action_errors[0].action, "failing");
    assert!(r.action_errors[0].error.contains("nope"));
    assert_eq!(f.sm.state("order", "o3").await.unwrap().state, "shipped");
    let entry = &f.sm.history("order", "o3", Some(1), 0).await.unwrap()[0];
    assert_eq!(entry["actionErrors"][0]["action"], "failing", "{entry}");
    let mut seen = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        seen.push(e);
    }
    assert!(seen.iter().any(|e| matches!(e, MachineEvent::ActionError { action, entity, .. } if action == "failing" && entity == "o3")), "{seen:?}");
    assert!(seen
        .iter()
        .any(|e| matches!(e, MachineEvent::EntityInitialized { entity, .. } if entity == "o3")));
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, MachineEvent::Transition { .. }))
            .count(),
        2
    );
}

async fn an_event_id_is_applied_once(b: Backend) {
    let f = fixture(b).await;
    f.sm.initialize("toggle", "t", Value::Null).await.unwrap();
    let first =
        f.sm.send("toggle", "t", "TOGGLE", Value::Null, Some("evt-1"))
            .await
            .unwrap();
    let again =
        f.sm.send("toggle", "t", "TOGGLE", Value::Null, Some("evt-1"))
            .await
            .unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(
        (again.from, again.to, again.seq, again.timestamp),
        (first.from, first.to, first.seq, first.timestamp)
    );
    assert_eq!(f.sm.state("toggle", "t").await.unwrap().state, "on");
    f.sm.send("toggle", "t", "TOGGLE", Value::Null, Some("evt-2"))
        .await
        .unwrap();
    assert_eq!(f.sm.state("toggle", "t").await.unwrap().seq, 2);
}

async fn after_fires_across_a_restart_and_stale_deadlines_are_ignored(b: Backend) {
    let f = fixture(b).await;
    f.sm.initialize("timer", "late", Value::Null).await.unwrap();
    f.sm.initialize("timer", "early", Value::Null)
        .await
        .unwrap();
    f.sm.send("timer", "early", "GO", Value::Null, None)
        .await
        .unwrap();
    let deadline =
        f.sm.state("timer", "late")
            .await
            .unwrap()
            .deadline
            .expect("deadline stored");
    assert_eq!(deadline.target, "expired");
    drop(f.sm.clone());
    // The first runner is gone; a new one loads the pending deadline and fires it when due.
    let restarted = f.restart().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let sm = restarted.clone();
        let stop = stop.clone();
        async move { sm.run_deadlines(stop, Duration::from_secs(60)).await }
    });
    assert_eq!(
        state_within_5s(&restarted, "late", "expired").await,
        "expired"
    );
    let h = restarted.history("timer", "late", None, 0).await.unwrap();
    assert_eq!(h[0]["event"], "after(800ms)");
    assert_eq!(
        restarted.state("timer", "early").await.unwrap().state,
        "done",
        "a left state's deadline does nothing"
    );
    assert_eq!(
        restarted
            .history("timer", "early", None, 0)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        restarted.fire_deadline("timer", "late", 0).await.unwrap(),
        None,
        "a stale deadline is ignored"
    );
    stop.cancel();
    watcher.await.unwrap();
}

async fn an_interrupted_transition_is_rolled_forward(b: Backend) {
    let f = fixture(b).await;
    f.sm.initialize("toggle", "crash", Value::Null)
        .await
        .unwrap();
    // A writer wrote the log entry for seq 1 and died before writing the state.
    let entry = json!({ "machine": "toggle", "entity": "crash", "seq": 1, "from": "off", "to": "on", "event": "TOGGLE", "timestamp": "2026-01-01T00:00:00.000Z", "context": {}, "actionErrors": [] });
    f.db.resource("transitions")
        .unwrap()
        .insert(
            entry.as_object().cloned().unwrap(),
            Some(&log_id("toggle", "crash", 1)),
        )
        .await
        .unwrap();
    assert_eq!(f.sm.state("toggle", "crash").await.unwrap().state, "off");
    let r =
        f.sm.send("toggle", "crash", "TOGGLE", Value::Null, None)
            .await
            .unwrap();
    assert_eq!(
        (r.from.as_str(), r.to.as_str(), r.seq),
        ("on", "off", 2),
        "the lost transition came first"
    );
    let seqs: Vec<u64> =
        f.sm.history("toggle", "crash", None, 0)
            .await
            .unwrap()
            .iter()
            .map(|h| h["seq"].as_u64().unwrap())
            .collect();
    assert_eq!(seqs, [2, 1]);
}

async fn concurrent_senders_in_one_process_lose_nothing(b: Backend) {
    let f = fixture(b).await;
    f.sm.initialize("toggle", "busy", Value::Null)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let sm = f.sm.clone();
            tokio::spawn(async move {
                sm.send(
                    "toggle",
                    "busy",
                    "TOGGLE",
                    Value::Null,
                    Some(&format!("e{i}")),
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let status = f.sm.state("toggle", "busy").await.unwrap();
    assert_eq!((status.seq, status.state.as_str()), (16, "off"));
    let seqs: Vec<u64> =
        f.sm.history("toggle", "busy", None, 0)
            .await
            .unwrap()
            .iter()
            .map(|h| h["seq"].as_u64().unwrap())
            .collect();
    assert_eq!(seqs, (1..=16).rev().collect::<Vec<_>>());
}

async fn machine_built_ins_send_events(b: Backend) {
    let f = fixture(b).await;
    for id in ["a", "b", "c"] {
        f.sm.initialize("order", id, ctx()).await.unwrap();
    }
    f.sm.send("order", "c", "CONFIRM", Value::Null, None)
        .await
        .unwrap();
    let run = |name: &str, context: Value| {
        let hooks = f.hooks.clone();
        let name = name.to_string();
        async move {
            let hook = hooks
                .resolve(&HookRef::Named(name.clone()), BuiltinKind::Action)
                .unwrap();
            let mut input = HookInput::new(name, HookKind::Job);
            input.context = context;
            hooks.action(&hook, &input).await
        }
    };
    let result = run("cancelAll", json!({})).await.unwrap();
    assert_eq!(result["sent"], 2, "{result}");
    for (id, state) in [("a", "cancelled"), ("b", "cancelled"), ("c", "confirmed")] {
        assert_eq!(f.sm.state("order", id).await.unwrap().state, state);
    }
    f.stock(5).await;
    let shipped = run("ship", json!({ "order": "c" })).await.unwrap();
    assert_eq!(shipped["to"], "shipped");
    let refused = run("ship", json!({ "order": "a" }))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("final state"), "{refused}");
}

/// `transitionRetention.maxPerEntity`: each transition removes the entry that many before it,
/// so an entity keeps exactly its newest entries, and other entities keep theirs.
async fn transition_retention_keeps_the_newest_entries(b: Backend) {
    let f = fixture(b).await;
    let mut config = f.manifest.state_machine.clone();
    config.transition_retention =
        Some(s3db_run::manifest::model::TransitionRetention { max_per_entity: 3 });
    let ctx = BuildContext::new(f.db.clone(), f.hooks.clone(), f.dir.path());
    let sm = StateMachines::build((&f.manifest.machines, &config), &ctx)
        .await
        .unwrap();
    for entity in ["a", "b"] {
        sm.initialize("toggle", entity, Value::Null).await.unwrap();
    }
    for _ in 0..10 {
        sm.send("toggle", "a", "TOGGLE", Value::Null, None)
            .await
            .unwrap();
    }
    sm.send("toggle", "b", "TOGGLE", Value::Null, None)
        .await
        .unwrap();
    let seqs = |entity: &'static str| {
        let sm = sm.clone();
        async move {
            sm.history("toggle", entity, None, 0)
                .await
                .unwrap()
                .iter()
                .map(|h| h["seq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(seqs("a").await, [10, 9, 8]);
    assert_eq!(seqs("b").await, [1]);
    // Gone from storage, not just from the listing.
    let log = f.db.resource("transitions").unwrap();
    assert!(log.get(&log_id("toggle", "a", 7)).await.unwrap().is_none());
    assert_eq!(log.ids_with_prefix("toggle:a:").await.unwrap().len(), 3);
    assert_eq!(sm.state("toggle", "a").await.unwrap().seq, 10);
}

/// The `timer` entity's state once it is `want`, or after 5 s of polling.
async fn state_within_5s(sm: &StateMachines, entity: &str, want: &str) -> String {
    let mut state = String::new();
    for _ in 0..50 {
        state = sm.state("timer", entity).await.unwrap().state;
        if state == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state
}

/// Deadlines fall due by the plugin's clock, not the system's: on a clock stopped in 2020 an
/// 800 ms deadline waits however long the test runs, and fires once the clock is moved past it.
async fn deadlines_fall_due_by_the_plugin_s_clock(b: Backend) {
    use chrono::TimeZone;
    let f = fixture(b).await;
    let clock = s3db_run::types::ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap(),
    );
    let ctx =
        BuildContext::new(f.db.clone(), f.hooks.clone(), f.dir.path()).with_clock(clock.clone());
    let sm = StateMachines::build((&f.manifest.machines, &f.manifest.state_machine), &ctx)
        .await
        .unwrap();
    sm.initialize("timer", "t", Value::Null).await.unwrap();
    let due = sm
        .state("timer", "t")
        .await
        .unwrap()
        .deadline
        .expect("deadline");
    assert!(due.at.starts_with("2020-01-01T00:00:00.800"), "{}", due.at);
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn({
        let (sm, stop) = (sm.clone(), stop.clone());
        async move { sm.run_deadlines(stop, Duration::from_millis(100)).await }
    });
    // Several polls on a stopped clock: nothing is due.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sm.state("timer", "t").await.unwrap().state, "waiting");
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(state_within_5s(&sm, "t", "expired").await, "expired");
    stop.cancel();
    watcher.await.unwrap();
}

macro_rules! fs_and_s3 {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(crate::support::Backend::fs().await).await })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(crate::support::Backend::s3().await).await })*
        }
    };
}

fs_and_s3!(
    operations_follow_the_definition,
    refusals_leave_the_state_unchanged,
    a_failing_action_is_reported_and_the_state_stays,
    an_event_id_is_applied_once,
    after_fires_across_a_restart_and_stale_deadlines_are_ignored,
    an_interrupted_transition_is_rolled_forward,
    concurrent_senders_in_one_process_lose_nothing,
    machine_built_ins_send_events,
    transition_retention_keeps_the_newest_entries,
    deadlines_fall_due_by_the_plugin_s_clock,
);

/// Two processes send 10 TOGGLE events each to one entity at the same time: all 20 succeed and
/// the log holds exactly 20 entries with sequence numbers 1..=20.
fn two_processes_toggling_one_entity(connection: &str) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("s3db.yaml");
    std::fs::write(
        &manifest,
        format!("version: 1\ndatabase:\n  connection: \"{connection}\"\nmachines:\n  toggle:\n    initialState: off\n    states:\n      off: {{ on: {{ TOGGLE: on }} }}\n      on: {{ on: {{ TOGGLE: off }} }}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .arg("machine")
            .args(args)
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .output()
            .unwrap()
    };
    assert!(run(&["init", "toggle", "lamp"]).status.success());
    let senders: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
                            .args(["machine", "send", "toggle", "lamp", "TOGGLE"])
                            .current_dir(&dir)
                            .env_remove("S3DB_CONNECTION")
                            .output()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outputs: Vec<_> = senders
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let history = run(&["history", "toggle", "lamp"]);
    let seqs: Vec<u64> = String::from_utf8_lossy(&history.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=20).rev().collect::<Vec<_>>());
    let state: Value = serde_json::from_slice(&run(&["state", "toggle", "lamp"]).stdout).unwrap();
    assert_eq!(
        (state["state"].as_str(), state["seq"].as_u64()),
        (Some("off"), Some(20))
    );
}

#[test]
fn two_processes_toggling_one_entity_on_fs() {
    two_processes_toggling_one_entity("file://./data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_toggling_one_entity_on_s3() {
    let connection = crate::support::s3::connection_string().await;
    tokio::task::spawn_blocking(move || two_processes_toggling_one_entity(&connection))
        .await
        .unwrap();
}
