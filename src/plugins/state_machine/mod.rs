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

pub mod graph;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use crate::db::schema::StoredResource;
use crate::db::{Database, DbError, Resource};
use crate::hooks::builtins::BuiltinKind;
use crate::hooks::{GuardDecision, HookInput, HookKind, HookRunner, MachineOps, Transition};
use crate::manifest::model::{HookRef, MachineDef, StateMachineConfig};

/// How many recent event ids an entity remembers for idempotent replays.
pub const EVENT_ID_WINDOW: usize = 50;
const MAX_ATTEMPTS: u32 = 200;

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

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionFailure {
    pub action: String,
    pub error: String,
}

/// What `send` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    #[error("{machine}/{entity}: too much contention, gave up after {MAX_ATTEMPTS} attempts")]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn state_id(machine: &str, entity: &str) -> String {
    format!("{machine}:{entity}")
}

pub fn log_id(machine: &str, entity: &str, seq: u64) -> String {
    format!("{machine}:{entity}:{seq:012}")
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
            at: due.to_rfc3339_opts(SecondsFormat::Millis, true),
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

impl StateMachines {
    /// Builds the plugin: registers its resources and hands `machine.send`/`machine.sendAll` to
    /// the hook runner.
    pub async fn build(
        machines: &IndexMap<String, MachineDef>,
        config: &StateMachineConfig,
        db: &Database,
        hooks: Arc<HookRunner>,
    ) -> Result<Self, MachineError> {
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
            }),
        };
        hooks.set_machines(Arc::new(plugin.clone()));
        plugin.emit(MachineEvent::Initialized {
            machines: plugin.machine_names(),
        });
        Ok(plugin)
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

    async fn read(&self, machine: &str, entity: &str) -> Result<EntityRecord, MachineError> {
        let rec = self
            .inner
            .states
            .get(&state_id(machine, entity))
            .await?
            .ok_or_else(|| MachineError::NotInitialized {
                machine: machine.into(),
                entity: entity.into(),
            })?;
        EntityRecord::parse(rec)
    }

    pub async fn state(&self, machine: &str, entity: &str) -> Result<EntityStatus, MachineError> {
        let def = self.definition(machine)?;
        let rec = self.read(machine, entity).await?;
        let state_def = def.states.get(&rec.state);
        Ok(EntityStatus {
            machine: machine.into(),
            entity: entity.into(),
            valid_events: state_def
                .map(|s| s.on.keys().cloned().collect())
                .unwrap_or_default(),
            is_final: state_def.is_some_and(|s| s.is_final()),
            state: rec.state,
            seq: rec.seq,
            entered_at: rec.entered_at,
            context: rec.context,
            deadline: rec.deadline,
        })
    }

    /// Creates the entity in the machine's initial state and runs that state's entry actions.
    pub async fn initialize(
        &self,
        machine: &str,
        entity: &str,
        context: Value,
    ) -> Result<EntityStatus, MachineError> {
        let def = self.definition(machine)?;
        let now = Utc::now();
        let context = if context.is_null() {
            json!({})
        } else {
            context
        };
        let deadline = deadline_for(&def, &def.initial_state, now, 0);
        let data = json!({
            "machine": machine, "entity": entity, "state": def.initial_state, "seq": 0,
            "context": context, "enteredAt": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "deadline": deadline, "recent": [],
        });
        let data = data.as_object().cloned().unwrap_or_default();
        match self
            .inner
            .states
            .insert(data, Some(&state_id(machine, entity)))
            .await
        {
            Ok(_) => {}
            Err(DbError::AlreadyExists { .. }) => {
                return Err(MachineError::AlreadyInitialized {
                    machine: machine.into(),
                    entity: entity.into(),
                })
            }
            Err(e) => return Err(e.into()),
        }
        let t = Transition {
            machine,
            entity,
            event: "init",
            from: "",
            to: &def.initial_state,
        };
        let entry = def
            .states
            .get(&def.initial_state)
            .map(|s| s.entry.0.clone())
            .unwrap_or_default();
        self.run_actions(&entry, &t, &context).await;
        if let Some(d) = &deadline {
            self.track_deadline(machine, entity, d);
        }
        self.emit(MachineEvent::EntityInitialized {
            machine: machine.into(),
            entity: entity.into(),
            state: def.initial_state.clone(),
        });
        self.state(machine, entity).await
    }

    /// Sends an event. With `event_id`, sending the same id again returns the first result and
    /// changes nothing.
    pub async fn send(
        &self,
        machine: &str,
        entity: &str,
        event: &str,
        context: Value,
        event_id: Option<&str>,
    ) -> Result<TransitionResult, MachineError> {
        for attempt in 0..MAX_ATTEMPTS {
            let def = self.definition(machine)?;
            let rec = self.read(machine, entity).await?;
            if let Some(id) = event_id {
                if let Some(prev) = rec
                    .recent
                    .iter()
                    .find(|r| r.event_id.as_deref() == Some(id))
                {
                    return Ok(TransitionResult {
                        replayed: true,
                        ..prev.clone()
                    });
                }
            }
            if let Some(d) = rec
                .deadline
                .clone()
                .filter(|d| d.seq == rec.seq && deadline_due(d))
            {
                // The entity's time in this state ran out before this event: that comes first.
                self.commit(
                    &def,
                    &rec,
                    &d.target,
                    &format!("after({})", d.after),
                    &Value::Null,
                    None,
                )
                .await?;
                continue;
            }
            let state_def = def.states.get(&rec.state);
            if state_def.is_some_and(|s| s.is_final()) {
                return Err(MachineError::FinalState {
                    machine: machine.into(),
                    entity: entity.into(),
                    state: rec.state,
                });
            }
            let Some(target) = state_def.and_then(|s| s.on.get(event)).cloned() else {
                return Err(MachineError::InvalidEvent {
                    machine: machine.into(),
                    entity: entity.into(),
                    state: rec.state.clone(),
                    event: event.into(),
                    valid: state_def
                        .map(|s| s.on.keys().cloned().collect::<Vec<_>>().join(", "))
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "none".into()),
                });
            };
            if let Some(guard) = state_def.and_then(|s| s.guards.get(event)) {
                let t = Transition {
                    machine,
                    entity,
                    event,
                    from: &rec.state,
                    to: &target,
                };
                let input = HookInput::for_transition(
                    guard.as_str(),
                    HookKind::Guard,
                    &t,
                    merge_context(&rec.context, &context),
                );
                let decision = match self
                    .inner
                    .hooks
                    .resolve(&HookRef::Named(guard.clone()), BuiltinKind::Guard)
                {
                    Ok(hook) => self.inner.hooks.guard(&hook, &input).await,
                    Err(e) => Err(e),
                };
                match decision {
                    Ok(GuardDecision::Allow) => {}
                    Ok(GuardDecision::Deny { reason }) => {
                        return Err(MachineError::GuardDenied {
                            guard: guard.clone(),
                            event: event.into(),
                            reason,
                        })
                    }
                    Err(e) => {
                        return Err(MachineError::GuardFailed {
                            guard: guard.clone(),
                            event: event.into(),
                            error: e.to_string(),
                        })
                    }
                }
            }
            match self
                .commit(&def, &rec, &target, event, &context, event_id)
                .await?
            {
                Commit::Done(result) => return Ok(*result),
                Commit::Lost => crate::db::backoff(attempt.min(6)).await,
            }
        }
        Err(MachineError::Contention {
            machine: machine.into(),
            entity: entity.into(),
        })
    }

    /// Writes the log entry (create-only) and the new state (compare-and-swap); the winner runs
    /// the actions.
    async fn commit(
        &self,
        def: &MachineDef,
        rec: &EntityRecord,
        target: &str,
        event: &str,
        context: &Value,
        event_id: Option<&str>,
    ) -> Result<Commit, MachineError> {
        let machine = rec
            .record
            .data
            .get("machine")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let entity = rec
            .record
            .data
            .get("entity")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let seq = rec.seq + 1;
        let now = Utc::now();
        let timestamp = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let merged = merge_context(&rec.context, context);
        let result = TransitionResult {
            machine: machine.clone(),
            entity: entity.clone(),
            from: rec.state.clone(),
            to: target.to_string(),
            event: event.to_string(),
            timestamp: timestamp.clone(),
            seq,
            event_id: event_id.map(str::to_string),
            action_errors: Vec::new(),
            replayed: false,
        };
        if let Some(log) = &self.inner.log {
            let entry = json!({
                "machine": machine, "entity": entity, "seq": seq, "from": rec.state, "to": target,
                "event": event, "eventId": event_id, "timestamp": timestamp, "context": context,
                "actionErrors": [],
            });
            match log
                .insert(
                    entry.as_object().cloned().unwrap_or_default(),
                    Some(&log_id(&machine, &entity, seq)),
                )
                .await
            {
                Ok(_) => {}
                Err(DbError::AlreadyExists { .. }) => {
                    self.roll_forward(def, rec).await?;
                    return Ok(Commit::Lost);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let data = self.next_state(def, rec, &result, now);
        match self.inner.states.replace(&rec.record, data).await {
            Ok(_) => {}
            Err(DbError::Conflict { .. }) if self.inner.log.is_some() => {
                // Our log entry owns `seq`; the state can only have moved to it by another
                // sender rolling our entry forward, and that sender ran the actions.
                return Ok(Commit::Done(Box::new(result)));
            }
            Err(DbError::Conflict { .. }) => return Ok(Commit::Lost),
            Err(e) => return Err(e.into()),
        }
        self.trim_log(&machine, &entity, seq).await;
        let errors = self.after_commit(def, &result, &merged).await;
        if !errors.is_empty() {
            if let Some(log) = &self.inner.log {
                let patch = json!({ "actionErrors": errors })
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                if let Err(e) = log
                    .update(&log_id(&machine, &entity, seq), &patch, None)
                    .await
                {
                    tracing::warn!(error = %e, "could not record action errors on the transition log");
                }
            }
        }
        Ok(Commit::Done(Box::new(TransitionResult {
            action_errors: errors,
            ..result
        })))
    }

    fn next_state(
        &self,
        def: &MachineDef,
        rec: &EntityRecord,
        result: &TransitionResult,
        now: DateTime<Utc>,
    ) -> Map<String, Value> {
        let mut recent: Vec<Value> = rec
            .recent
            .iter()
            .filter(|r| r.event_id.is_some())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        if result.event_id.is_some() {
            recent.push(serde_json::to_value(result).unwrap_or_default());
        }
        let skip = recent.len().saturating_sub(EVENT_ID_WINDOW);
        let recent: Vec<Value> = recent.into_iter().skip(skip).collect();
        let mut data = rec.record.data.clone();
        data.insert("state".into(), Value::String(result.to.clone()));
        data.insert("seq".into(), Value::from(result.seq));
        data.insert("enteredAt".into(), Value::String(result.timestamp.clone()));
        data.insert("lastEvent".into(), Value::String(result.event.clone()));
        data.insert(
            "deadline".into(),
            serde_json::to_value(deadline_for(def, &result.to, now, result.seq))
                .unwrap_or(Value::Null),
        );
        data.insert("recent".into(), Value::Array(recent));
        data
    }

    /// Applies `transitionRetention` after transition `seq` committed: removes the entry
    /// `maxPerEntity` before it. Far behind the entity's state, it plays no part in roll-forward
    /// (which only reads `seq + 1`). A failure only leaves an entry behind, so it is logged.
    async fn trim_log(&self, machine: &str, entity: &str, seq: u64) {
        let (Some(log), Some(retention)) =
            (&self.inner.log, &self.inner.config.transition_retention)
        else {
            return;
        };
        let Some(old) = seq.checked_sub(retention.max_per_entity).filter(|s| *s > 0) else {
            return;
        };
        if let Err(e) = log.delete(&log_id(machine, entity, old), None).await {
            tracing::warn!(machine, entity, seq = old, error = %e, "could not trim the transition log");
        }
    }

    /// Completes a transition whose log entry exists but whose state write never happened.
    async fn roll_forward(&self, def: &MachineDef, rec: &EntityRecord) -> Result<(), MachineError> {
        let Some(log) = &self.inner.log else {
            return Ok(());
        };
        let machine = rec
            .record
            .data
            .get("machine")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let entity = rec
            .record
            .data
            .get("entity")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(entry) = log.get(&log_id(machine, entity, rec.seq + 1)).await? else {
            return Ok(());
        };
        let Some(result) = recent_from_json(&entry.to_json()) else {
            return Err(MachineError::Corrupt(
                entry.id.clone(),
                "unreadable transition log entry".into(),
            ));
        };
        if result.from != rec.state {
            return Err(MachineError::Corrupt(
                entry.id.clone(),
                format!("log says from `{}`, state is `{}`", result.from, rec.state),
            ));
        }
        let at = DateTime::parse_from_rfc3339(&result.timestamp)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        let data = self.next_state(def, rec, &result, at);
        match self.inner.states.replace(&rec.record, data).await {
            Ok(_) => {
                tracing::info!(
                    machine,
                    entity,
                    seq = result.seq,
                    "rolled an interrupted transition forward"
                );
                self.trim_log(machine, entity, result.seq).await;
                let context = merge_context(
                    &rec.context,
                    entry.data.get("context").unwrap_or(&Value::Null),
                );
                self.after_commit(def, &result, &context).await;
                Ok(())
            }
            Err(DbError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Exit actions of the old state, entry actions of the new one, the deadline, the event.
    async fn after_commit(
        &self,
        def: &MachineDef,
        result: &TransitionResult,
        context: &Value,
    ) -> Vec<ActionFailure> {
        let t = Transition {
            machine: &result.machine,
            entity: &result.entity,
            event: &result.event,
            from: &result.from,
            to: &result.to,
        };
        let exit = def
            .states
            .get(&result.from)
            .map(|s| s.exit.0.clone())
            .unwrap_or_default();
        let entry = def
            .states
            .get(&result.to)
            .map(|s| s.entry.0.clone())
            .unwrap_or_default();
        let mut errors = self.run_actions(&exit, &t, context).await;
        errors.extend(self.run_actions(&entry, &t, context).await);
        if let Some(d) = deadline_for(def, &result.to, Utc::now(), result.seq) {
            self.track_deadline(&result.machine, &result.entity, &d);
        }
        self.emit(MachineEvent::Transition {
            machine: result.machine.clone(),
            entity: result.entity.clone(),
            from: result.from.clone(),
            to: result.to.clone(),
            event: result.event.clone(),
            context: context.clone(),
            seq: result.seq,
        });
        errors
    }

    async fn run_actions(
        &self,
        names: &[String],
        t: &Transition<'_>,
        context: &Value,
    ) -> Vec<ActionFailure> {
        let mut failures = Vec::new();
        for name in names {
            let input =
                HookInput::for_transition(name.as_str(), HookKind::Action, t, context.clone());
            let outcome = match self
                .inner
                .hooks
                .resolve(&HookRef::Named(name.clone()), BuiltinKind::Action)
            {
                Ok(hook) => self.inner.hooks.action(&hook, &input).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::warn!(action = %name, machine = t.machine, entity = t.entity, error = %e, "state machine action failed");
                self.emit(MachineEvent::ActionError {
                    action: name.clone(),
                    machine: t.machine.into(),
                    entity: t.entity.into(),
                    error: e.to_string(),
                });
                failures.push(ActionFailure {
                    action: name.clone(),
                    error: e.to_string(),
                });
            }
        }
        failures
    }

    /// Transitions of an entity, newest first.
    pub async fn history(
        &self,
        machine: &str,
        entity: &str,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<Value>, MachineError> {
        self.definition(machine)?;
        let Some(log) = &self.inner.log else {
            return Ok(Vec::new());
        };
        let prefix = format!("{}:", state_id(machine, entity));
        let mut ids: Vec<String> = log
            .ids_with_prefix(&prefix)
            .await?
            .into_iter()
            .filter(|id| id[prefix.len()..].bytes().all(|b| b.is_ascii_digit()))
            .collect();
        ids.reverse();
        let page: Vec<String> = ids
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        Ok(log
            .get_many(&page)
            .await?
            .into_iter()
            .map(|r| r.to_json())
            .collect())
    }

    pub fn graph_dot(&self, machine: &str) -> Result<String, MachineError> {
        Ok(graph::dot(machine, &self.definition(machine)?))
    }

    pub fn graph_mermaid(&self, machine: &str) -> Result<String, MachineError> {
        Ok(graph::mermaid(&self.definition(machine)?))
    }

    /// Every entity of a machine, with its status.
    pub async fn entities(&self, machine: &str) -> Result<Vec<EntityRecordSummary>, MachineError> {
        let ids = self
            .inner
            .states
            .ids_with_prefix(&format!("{machine}:"))
            .await?;
        let records = self.inner.states.get_many(&ids).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| EntityRecord::parse(r).ok())
            .filter(|r| r.record.data.get("machine").and_then(Value::as_str) == Some(machine))
            .map(|r| EntityRecordSummary {
                entity: r
                    .record
                    .data
                    .get("entity")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                state: r.state,
                entered_at: r.entered_at,
            })
            .collect())
    }

    fn track_deadline(&self, machine: &str, entity: &str, d: &Deadline) {
        self.inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (d.at.clone(), machine.to_string(), entity.to_string()),
                d.seq,
            );
        self.inner.deadline_added.notify_one();
    }

    /// Loads every pending deadline from the database (after a restart, or set by other runners).
    pub async fn scan_deadlines(&self) -> Result<usize, MachineError> {
        let mut n = 0;
        for machine in self.machine_names() {
            let ids = self
                .inner
                .states
                .ids_with_prefix(&format!("{machine}:"))
                .await?;
            for rec in self.inner.states.get_many(&ids).await? {
                let Ok(rec) = EntityRecord::parse(rec) else {
                    continue;
                };
                if let Some(d) = rec.deadline.filter(|d| d.seq == rec.seq) {
                    let entity = rec
                        .record
                        .data
                        .get("entity")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    self.track_deadline(&machine, &entity, &d);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Fires `after` transitions when they are due, until `stop` is cancelled. Deadlines set by
    /// this process are picked up at once, those of other runners at each rescan.
    pub async fn run_deadlines(&self, stop: CancellationToken, rescan: Duration) {
        let mut next_scan = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_scan {
                if let Err(e) = self.scan_deadlines().await {
                    tracing::warn!(error = %e, "scanning state machine deadlines failed");
                }
                next_scan = tokio::time::Instant::now() + rescan;
            }
            let due = self.take_due();
            for (machine, entity, seq) in due {
                if let Err(e) = self.fire_deadline(&machine, &entity, seq).await {
                    tracing::warn!(machine, entity, error = %e, "delayed transition failed");
                }
            }
            let wait = self
                .next_deadline_in()
                .unwrap_or(rescan)
                .min(next_scan.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.deadline_added.notified() => {}
            }
        }
    }

    fn take_due(&self) -> Vec<(String, String, u64)> {
        let now = now_text();
        let mut deadlines = self
            .inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due: Vec<_> = deadlines
            .range(..(now.clone(), String::new(), String::new()))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        due.into_iter()
            .map(|(k, seq)| {
                deadlines.remove(&k);
                (k.1, k.2, seq)
            })
            .collect()
    }

    fn next_deadline_in(&self) -> Option<Duration> {
        let deadlines = self
            .inner
            .deadlines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (at, _, _) = deadlines.keys().next()?;
        let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    }

    /// Applies a due `after` transition, unless the entity has left the state since.
    pub async fn fire_deadline(
        &self,
        machine: &str,
        entity: &str,
        seq: u64,
    ) -> Result<Option<TransitionResult>, MachineError> {
        for attempt in 0..MAX_ATTEMPTS {
            let def = self.definition(machine)?;
            let rec = self.read(machine, entity).await?;
            let Some(d) = rec
                .deadline
                .clone()
                .filter(|d| d.seq == rec.seq && rec.seq == seq && deadline_due(d))
            else {
                return Ok(None);
            };
            match self
                .commit(
                    &def,
                    &rec,
                    &d.target,
                    &format!("after({})", d.after),
                    &Value::Null,
                    None,
                )
                .await?
            {
                Commit::Done(r) => return Ok(Some(*r)),
                Commit::Lost => crate::db::backoff(attempt.min(6)).await,
            }
        }
        Err(MachineError::Contention {
            machine: machine.into(),
            entity: entity.into(),
        })
    }
}

fn deadline_due(d: &Deadline) -> bool {
    DateTime::parse_from_rfc3339(&d.at)
        .map(|t| t.with_timezone(&Utc) <= Utc::now())
        .unwrap_or(false)
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
    ) -> Result<Value, String> {
        StateMachines::send(self, machine, entity, event, context, None)
            .await
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    async fn send_all(
        &self,
        machine: &str,
        state: &str,
        event: &str,
        older_than: Option<Duration>,
        context: Value,
    ) -> Result<Value, String> {
        let cutoff = older_than
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() - d);
        let entities = self.entities(machine).await.map_err(|e| e.to_string())?;
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
