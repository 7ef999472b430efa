//! The state machine plugin: entities move between the states of the manifest's machines,
//! guarded by hooks, running actions, with every transition logged.
//!
//! How a transition stays exact with several runners on one bucket: the transition log is
//! written ahead. Sending an event reads the entity (one read), writes the log entry for the
//! next sequence number create-only (the first write: it decides which sender owns that number),
//! then writes the entity's new state with compare-and-swap (the second write). A sender that
//! loses either write re-reads and re-evaluates its event against the newer state. An entry
//! whose state write never happened (the writer crashed in between) is rolled forward by the
//! next sender, so the log and the state never disagree for long and never lose or duplicate a
//! transition. Only the sender whose state write wins runs the transition's actions, so actions
//! run once per transition: the guard first, then (after the commit) the old state's exit
//! actions and the new state's entry actions.

mod deadlines;
pub mod graph;
use deadlines::deadline_due;
mod engine;
mod entity;
mod transition_log;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::db::schema::StoredResource;
use crate::db::{DbError, Resource};
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{
    GuardDecision, HookInput, HookKind, HookRunner, MachineOps, OpsError, Transition,
};
use crate::manifest::model::{HookRef, MachineDef, StateMachineConfig};

/// How many recent event ids an entity remembers for idempotent replays.
pub const EVENT_ID_WINDOW: usize = 50;

/// Something that happened, delivered to subscribers asynchronously; a slow or failing
/// subscriber never holds up a transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MachineEvent {
    Initialized {
        machines: Vec<String>,
    },
    EntityInitialized {
        machine: String,
        entity: String,
        state: String,
    },
    Transition {
        machine: String,
        entity: String,
        from: String,
        to: String,
        event: String,
        context: Value,
        seq: u64,
    },
    ActionError {
        action: String,
        machine: String,
        entity: String,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionFailure {
    pub action: String,
    pub error: String,
}

/// What `send` returns.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransitionResult {
    pub machine: String,
    pub entity: String,
    pub from: String,
    pub to: String,
    pub event: String,
    pub timestamp: String,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Actions of this transition that failed (the state change stands).
    pub action_errors: Vec<ActionFailure>,
    /// True when this is the stored result of an event id sent before.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("machine `{0}` is not defined{1}")]
    UnknownMachine(String, String),
    #[error("{machine}/{entity} is not initialized")]
    NotInitialized { machine: String, entity: String },
    #[error("{machine}/{entity} is already initialized")]
    AlreadyInitialized { machine: String, entity: String },
    #[error(
        "event `{event}` is not valid for {machine}/{entity} in state `{state}` (valid: {valid})"
    )]
    InvalidEvent {
        machine: String,
        entity: String,
        state: String,
        event: String,
        valid: String,
    },
    #[error("{machine}/{entity} is in the final state `{state}`; no event applies")]
    FinalState {
        machine: String,
        entity: String,
        state: String,
    },
    #[error("guard `{guard}` denied `{event}`: {reason}")]
    GuardDenied {
        guard: String,
        event: String,
        reason: String,
    },
    #[error("guard `{guard}` failed, so `{event}` is denied: {error}")]
    GuardFailed {
        guard: String,
        event: String,
        error: String,
    },
    #[error(
        "{machine}/{entity}: too much contention, gave up after {} attempts",
        crate::types::cas::ATTEMPTS
    )]
    Contention { machine: String, entity: String },
    #[error("stored state of {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl MachineError {
    /// A refusal (the event does not apply, a guard said no), as opposed to a failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            MachineError::InvalidEvent { .. }
                | MachineError::FinalState { .. }
                | MachineError::GuardDenied { .. }
                | MachineError::GuardFailed { .. }
        )
    }
}

/// An entity's current state, as `getState` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntityStatus {
    pub machine: String,
    pub entity: String,
    pub state: String,
    pub seq: u64,
    pub entered_at: String,
    pub context: Value,
    pub deadline: Option<Deadline>,
    pub valid_events: Vec<String>,
    pub is_final: bool,
}

/// A pending `after` transition.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    pub at: String,
    pub target: String,
    pub after: String,
    /// The sequence number of the entity when it entered the state; a deadline whose entity has
    /// moved on since is stale and ignored.
    pub seq: u64,
}

/// The stored form of an entity (a record of the state resource).
#[derive(Debug, Clone)]
struct EntityRecord {
    record: crate::db::Record,
    state: String,
    seq: u64,
    context: Value,
    entered_at: String,
    deadline: Option<Deadline>,
    recent: Vec<TransitionResult>,
}

impl EntityRecord {
    /// A text field of the stored entity (`machine`, `entity`); empty when absent.
    fn text(&self, field: &str) -> &str {
        self.record
            .data
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn parse(record: crate::db::Record) -> Result<Self, MachineError> {
        let d = &record.data;
        let corrupt = |what: &str| MachineError::Corrupt(record.id.clone(), what.to_string());
        let state = d
            .get("state")
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt("no state"))?
            .to_string();
        let seq = d
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| corrupt("no seq"))?;
        let recent = d
            .get("recent")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(recent_from_json).collect())
            .unwrap_or_default();
        Ok(Self {
            state,
            seq,
            context: d.get("context").cloned().unwrap_or_else(|| json!({})),
            entered_at: d
                .get("enteredAt")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            deadline: d
                .get("deadline")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            recent,
            record,
        })
    }
}

fn recent_from_json(v: &Value) -> Option<TransitionResult> {
    Some(TransitionResult {
        machine: v.get("machine")?.as_str()?.into(),
        entity: v.get("entity")?.as_str()?.into(),
        from: v.get("from")?.as_str()?.into(),
        to: v.get("to")?.as_str()?.into(),
        event: v.get("event")?.as_str()?.into(),
        timestamp: v.get("timestamp")?.as_str()?.into(),
        seq: v.get("seq")?.as_u64()?,
        event_id: v.get("eventId").and_then(Value::as_str).map(str::to_string),
        action_errors: Vec::new(),
        replayed: false,
    })
}

pub fn state_id(machine: &str, entity: &str) -> String {
    crate::types::EntityKey::new(machine, entity).into_string()
}

pub fn log_id(machine: &str, entity: &str, seq: u64) -> String {
    crate::types::EntityKey::new(machine, entity).log(seq)
}

fn merge_context(base: &Value, event: &Value) -> Value {
    match (base, event) {
        (Value::Object(b), Value::Object(e)) => {
            let mut m = b.clone();
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
            Value::Object(m)
        }
        (_, Value::Null) => base.clone(),
        (_, e) => e.clone(),
    }
}

/// The earliest `after` deadline of a state, entered at `at` with sequence number `seq`.
fn deadline_for(def: &MachineDef, state: &str, at: DateTime<Utc>, seq: u64) -> Option<Deadline> {
    def.states
        .get(state)?
        .after
        .iter()
        .filter_map(|(after, target)| {
            // A delay past chrono's range (hundreds of millions of years) never comes due.
            let due = at.checked_add_signed(chrono::Duration::from_std(after.as_std()).ok()?)?;
            Some((due, after, target))
        })
        .min_by_key(|(due, _, _)| *due)
        .map(|(due, after, target)| Deadline {
            at: crate::types::time::rfc3339(due),
            target: target.clone(),
            after: after.text.clone(),
            seq,
        })
}

enum Commit {
    Done(Box<TransitionResult>),
    /// Another sender moved the entity first: re-read and re-evaluate.
    Lost,
}

struct Inner {
    machines: RwLock<IndexMap<String, MachineDef>>,
    config: StateMachineConfig,
    states: Resource,
    log: Option<Resource>,
    hooks: Arc<HookRunner>,
    events: broadcast::Sender<MachineEvent>,
    deadlines: Mutex<BTreeMap<(String, String, String), u64>>,
    deadline_added: Notify,
    /// Where the deadline index lives (the database's store).
    store: crate::store::DynStore,
    /// What transitions are stamped with and deadlines fall due by.
    clock: Arc<dyn crate::types::Clock>,
}

/// The state machine plugin. Cheap to clone.
#[derive(Clone)]
pub struct StateMachines {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StateMachines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateMachines({:?})", self.machine_names())
    }
}

/// Registers the plugin's resources; deadlines fall due by the context's clock. (The runtime
/// hands the plugin to the hook registry for `machine.send`/`machine.sendAll`.)
impl crate::plugins::Component for StateMachines {
    type Config<'a> = (&'a IndexMap<String, MachineDef>, &'a StateMachineConfig);
    type Error = MachineError;

    fn section(m: &crate::manifest::model::Manifest) -> Option<Self::Config<'_>> {
        (!m.machines.is_empty()).then_some((&m.machines, &m.state_machine))
    }

    fn build<'a>(
        (machines, config): Self::Config<'a>,
        ctx: &'a crate::plugins::BuildContext,
    ) -> impl std::future::Future<Output = Result<Self, MachineError>> + Send + 'a {
        Self::build_new(machines, config, ctx)
    }
}

impl StateMachines {
    async fn build_new(
        machines: &IndexMap<String, MachineDef>,
        config: &StateMachineConfig,
        ctx: &crate::plugins::BuildContext,
    ) -> Result<Self, MachineError> {
        let (db, hooks) = (&ctx.db, &ctx.hooks);
        let mut declared = IndexMap::new();
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        declared.insert(
            config.state_resource.clone(),
            StoredResource {
                attributes: attrs(&[
                    ("machine", "string|required"),
                    ("entity", "string|required"),
                    ("state", "string|required"),
                    ("seq", "number|required"),
                ]),
                partitions: [(
                    "byMachine".to_string(),
                    [("machine".to_string(), "string".to_string())]
                        .into_iter()
                        .collect(),
                )]
                .into_iter()
                .collect(),
                timestamps: false,
            },
        );
        if config.persist_transitions {
            declared.insert(
                config.transition_log_resource.clone(),
                StoredResource {
                    attributes: attrs(&[
                        ("machine", "string|required"),
                        ("entity", "string|required"),
                        ("seq", "number|required"),
                        ("event", "string|required"),
                    ]),
                    ..Default::default()
                },
            );
        }
        db.register(&declared).await?;
        let states = db.resource(&config.state_resource)?;
        let log = if config.persist_transitions {
            Some(db.resource(&config.transition_log_resource)?)
        } else {
            None
        };
        let (events, _) = broadcast::channel(1024);
        let plugin = Self {
            inner: Arc::new(Inner {
                machines: RwLock::new(machines.clone()),
                config: config.clone(),
                states,
                log,
                hooks: hooks.clone(),
                events,
                deadlines: Mutex::default(),
                deadline_added: Notify::new(),
                store: db.store().clone(),
                clock: ctx.clock.clone(),
            }),
        };
        if config.on_transition.is_some() || config.on_action_error.is_some() {
            spawn_event_hooks(plugin.subscribe(), hooks.clone(), config.clone());
        }
        plugin.emit(MachineEvent::Initialized {
            machines: plugin.machine_names(),
        });
        Ok(plugin)
    }

    /// How many `after` deadlines this runner is waiting for.
    pub fn pending_deadlines(&self) -> usize {
        self.inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The plugin's options.
    pub fn config(&self) -> &StateMachineConfig {
        &self.inner.config
    }

    /// Events as they happen. Each subscriber has its own queue of 1024; one that falls behind
    /// misses events (and is told so by the channel), it never slows transitions down.
    pub fn subscribe(&self) -> broadcast::Receiver<MachineEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, event: MachineEvent) {
        if self.inner.config.verbose {
            tracing::info!(?event, "state machine event");
        }
        let _ = self.inner.events.send(event);
    }

    /// Replaces the machine definitions (hot reload): the next event uses them.
    pub fn set_definitions(&self, machines: &IndexMap<String, MachineDef>) {
        *self
            .inner
            .machines
            .write()
            .unwrap_or_else(|e| e.into_inner()) = machines.clone();
    }

    pub fn machine_names(&self) -> Vec<String> {
        self.inner
            .machines
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn definition(&self, machine: &str) -> Result<MachineDef, MachineError> {
        let machines = self
            .inner
            .machines
            .read()
            .unwrap_or_else(|e| e.into_inner());
        machines.get(machine).cloned().ok_or_else(|| {
            let hint =
                crate::types::suggest::did_you_mean(machine, machines.keys().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
            MachineError::UnknownMachine(machine.to_string(), hint)
        })
    }

    /// The events a state accepts.
    pub fn valid_events_in(&self, machine: &str, state: &str) -> Result<Vec<String>, MachineError> {
        let def = self.definition(machine)?;
        Ok(def
            .states
            .get(state)
            .map(|s| s.on.keys().cloned().collect())
            .unwrap_or_default())
    }

    pub async fn valid_events(
        &self,
        machine: &str,
        entity: &str,
    ) -> Result<Vec<String>, MachineError> {
        let status = self.state(machine, entity).await?;
        Ok(status.valid_events)
    }

    pub fn graph_dot(&self, machine: &str) -> Result<String, MachineError> {
        Ok(graph::dot(machine, &self.definition(machine)?))
    }

    pub fn graph_mermaid(&self, machine: &str) -> Result<String, MachineError> {
        Ok(graph::mermaid(&self.definition(machine)?))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRecordSummary {
    pub entity: String,
    pub state: String,
    pub entered_at: String,
}

#[async_trait::async_trait]
impl MachineOps for StateMachines {
    async fn send(
        &self,
        machine: &str,
        entity: &str,
        event: &str,
        context: Value,
    ) -> Result<Value, OpsError> {
        StateMachines::send(self, machine, entity, event, context, None)
            .await
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .map_err(Into::into)
    }

    async fn send_all(
        &self,
        machine: &str,
        state: &str,
        event: &str,
        older_than: Option<Duration>,
        context: Value,
    ) -> Result<Value, OpsError> {
        let cutoff = older_than
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| self.inner.clock.now() - d);
        let entities = self.entities(machine).await?;
        let mut sent = 0;
        let mut failed = Vec::new();
        for e in entities.into_iter().filter(|e| e.state == state) {
            if let Some(cutoff) = cutoff {
                let entered =
                    DateTime::parse_from_rfc3339(&e.entered_at).map(|t| t.with_timezone(&Utc));
                if entered.map_or(true, |t| t > cutoff) {
                    continue;
                }
            }
            match StateMachines::send(self, machine, &e.entity, event, context.clone(), None).await
            {
                Ok(_) => sent += 1,
                Err(err) => failed.push(json!({ "entity": e.entity, "error": err.to_string() })),
            }
        }
        Ok(
            json!({ "sent": sent, "failed": failed.len(), "errors": failed.into_iter().take(10).collect::<Vec<_>>() }),
        )
    }
}

/// A callback's input about one entity; the hook's name is set once it is resolved.
fn callback_input(machine: String, entity: String) -> HookInput {
    let mut input = HookInput::new("", HookKind::Callback);
    input.machine = Some(machine);
    input.entity = Some(entity);
    input
}

/// Calls `stateMachine.onTransition` and `onActionError` for the plugin's events, in order, on
/// a task of their own: a slow hook delays the next call, never a transition. The task holds
/// only the event queue, so it ends when the plugin is dropped.
fn spawn_event_hooks(
    mut events: broadcast::Receiver<MachineEvent>,
    hooks: Arc<HookRunner>,
    config: StateMachineConfig,
) {
    tokio::spawn(async move {
        loop {
            let (key, hook, mut input) = match events.recv().await {
                Ok(MachineEvent::Transition {
                    machine,
                    entity,
                    from,
                    to,
                    event,
                    context,
                    ..
                }) => {
                    let Some(hook) = &config.on_transition else {
                        continue;
                    };
                    let mut input = callback_input(machine, entity);
                    input.event = Some(event);
                    input.from = Some(from);
                    input.to = Some(to);
                    input.context = context;
                    ("onTransition", hook, input)
                }
                Ok(MachineEvent::ActionError {
                    action,
                    machine,
                    entity,
                    error,
                }) => {
                    let Some(hook) = &config.on_action_error else {
                        continue;
                    };
                    let mut input = callback_input(machine, entity);
                    input.stats = Some(serde_json::json!({ "action": action, "error": error }));
                    ("onActionError", hook, input)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "state machine callbacks fell behind: some events were not delivered to them"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let resolved = match hooks.resolve(hook, BuiltinKind::Action) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(callback = key, error = %e, "state machine callback is not defined");
                    continue;
                }
            };
            input.hook = resolved.name.clone();
            if let Err(e) = hooks.action(&resolved, &input).await {
                tracing::warn!(
                    callback = key,
                    hook = %resolved.name,
                    machine = input.machine.as_deref().unwrap_or(""),
                    entity = input.entity.as_deref().unwrap_or(""),
                    error = %e,
                    "state machine callback failed"
                );
            }
        }
    });
}
