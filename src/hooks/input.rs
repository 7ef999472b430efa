//! What a hook is given and what it gives back. The input is the JSON document a shell hook reads
//! on stdin (and, flattened, its `S3DB_*` environment); the same values fill templates.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a hook is run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    Guard,
    Action,
    Job,
    Callback,
}

impl HookKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Guard => "guard",
            HookKind::Action => "action",
            HookKind::Job => "job",
            HookKind::Callback => "callback",
        }
    }
}

/// The input of one hook call. Fields that do not apply are absent from the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookInput {
    /// The hook's name (`inline` for a hook written in place).
    pub hook: String,
    pub kind: HookKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The event's context (state machines) or the run's context (jobs); `{}` when none.
    #[serde(default)]
    pub context: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// RFC 3339 time of the slot a job run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<String>,
    /// 1 for the first try, 2 for the first retry…
    pub attempt: u32,
    /// Backup or restore statistics, for callbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Value>,
}

impl HookInput {
    pub fn new(hook: impl Into<String>, kind: HookKind) -> Self {
        Self {
            hook: hook.into(),
            kind,
            machine: None,
            entity: None,
            event: None,
            from: None,
            to: None,
            context: Value::Object(Default::default()),
            job: None,
            scheduled_time: None,
            attempt: 1,
            stats: None,
        }
    }

    /// The input of a guard or action of a state machine transition.
    pub fn for_transition(
        hook: impl Into<String>,
        kind: HookKind,
        t: &Transition<'_>,
        context: Value,
    ) -> Self {
        let mut input = Self::new(hook, kind);
        input.machine = Some(t.machine.into());
        input.entity = Some(t.entity.into());
        input.event = Some(t.event.into());
        input.from = Some(t.from.into());
        input.to = Some(t.to.into());
        input.context = context;
        input
    }

    /// The `S3DB_*` environment of a shell hook: every scalar field, and the context and stats
    /// as JSON.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("S3DB_HOOK".to_string(), self.hook.clone()),
            ("S3DB_KIND".to_string(), self.kind.as_str().to_string()),
            ("S3DB_ATTEMPT".to_string(), self.attempt.to_string()),
            ("S3DB_CONTEXT".to_string(), self.context.to_string()),
        ];
        for (name, value) in [
            ("S3DB_MACHINE", &self.machine),
            ("S3DB_ENTITY", &self.entity),
            ("S3DB_EVENT", &self.event),
            ("S3DB_FROM", &self.from),
            ("S3DB_TO", &self.to),
            ("S3DB_JOB", &self.job),
            ("S3DB_SCHEDULED_TIME", &self.scheduled_time),
        ] {
            if let Some(v) = value {
                env.push((name.to_string(), v.clone()));
            }
        }
        if let Some(stats) = &self.stats {
            env.push(("S3DB_STATS".to_string(), stats.to_string()));
        }
        env
    }
}

/// Which transition a hook runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<'a> {
    pub machine: &'a str,
    pub entity: &'a str,
    pub event: &'a str,
    pub from: &'a str,
    pub to: &'a str,
}

/// A guard's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardDecision {
    Allow,
    /// Denied, with the reason the guard gave (or the error that made it deny).
    Deny {
        reason: String,
    },
}

impl GuardDecision {
    pub fn allowed(&self) -> bool {
        matches!(self, GuardDecision::Allow)
    }
}
