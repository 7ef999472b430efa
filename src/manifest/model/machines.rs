//! State machines: their states, transitions, `after` delays, and the plugin's options.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// A state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineDef {
    /// What this machine models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The state a new entity starts in.
    pub initial_state: String,
    /// The states, by name.
    pub states: IndexMap<String, StateDef>,
}

/// A state of a machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateDef {
    /// Transitions: event name → target state.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = on_example())]
    pub on: IndexMap<String, String>,
    /// Actions run when an entity enters this state (one name or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub entry: OneOrMany,
    /// Actions run when an entity leaves this state (one name or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub exit: OneOrMany,
    /// Guards: event name → guard name. The transition happens only if the guard allows it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub guards: IndexMap<String, String>,
    /// Delayed transitions: duration → target state. The entity moves to the target if it is
    /// still in this state after the duration (kept across restarts).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = after_example())]
    pub after: IndexMap<Delay, String>,
    /// Free-form metadata (colours, labels), returned by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// `final`: no transitions leave this state.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StateKind>,
}

fn on_example() -> serde_json::Value {
    serde_json::json!({ "CONFIRM": "confirmed", "CANCEL": "cancelled" })
}

/// The delay of an `after` transition: the duration, read when the manifest is, and the text
/// the author wrote (diagnostics point at it, the API and graphs show it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delay {
    pub duration: Duration,
    pub text: String,
}

impl Delay {
    pub fn as_std(&self) -> std::time::Duration {
        self.duration.as_std()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Delay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Mapping keys are strings: read the text, then the duration from it.
        let text = String::deserialize(d)?;
        let duration =
            Duration::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))?;
        Ok(Delay { duration, text })
    }
}

impl JsonSchema for Delay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Duration::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Duration::json_schema(generator)
    }
}

fn after_example() -> serde_json::Value {
    serde_json::json!({ "30m": "expired" })
}

impl StateDef {
    pub fn is_final(&self) -> bool {
        self.kind == Some(StateKind::Final)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StateKind {
    /// A final state: the entity's life ends here.
    Final,
}

/// Options of the state machine plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StateMachineConfig {
    /// Store every transition in the transition log resource.
    pub persist_transitions: bool,
    /// Resource that holds the transition log.
    pub transition_log_resource: String,
    /// Resource that holds each entity's current state.
    pub state_resource: String,
    /// How much of each entity's transition log to keep; without it, every transition is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition_retention: Option<TransitionRetention>,
    /// Log every transition and hook call.
    pub verbose: bool,
    /// How often each runner reads the head of the deadline index for `after` deadlines that
    /// other processes set (its own fire on time). One LIST per poll, whatever the number of
    /// entities.
    pub deadline_poll: Duration,
    /// A hook called after every transition of every machine (input: `machine`, `entity`,
    /// `event`, `from`, `to`, `context`), so one hook can notify a system of all of them. Called
    /// in order, after the transition is committed; its failure is logged and changes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_transition: Option<super::HookRef>,
    /// A hook called when a state's entry or exit action fails (input: `machine`, `entity`,
    /// and `stats: {action, error}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_action_error: Option<super::HookRef>,
}

/// How much of each entity's transition log to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransitionRetention {
    /// Keep each entity's newest this many transitions: each new transition removes the one
    /// this many before it (one delete, no listing).
    #[schemars(range(min = 1))]
    pub max_per_entity: u64,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        Self {
            persist_transitions: true,
            transition_log_resource: "transitions".into(),
            state_resource: "entity_states".into(),
            transition_retention: None,
            verbose: false,
            deadline_poll: Duration::from_millis(1_000),
            on_transition: None,
            on_action_error: None,
        }
    }
}
