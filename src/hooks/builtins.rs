//! The catalogue of built-in guards and actions: their names, what they may be used as, their
//! parameters and the plugin each needs. The manifest validator checks hooks against it; the
//! hook runner executes what it lists. One table, so the two never disagree.

/// What a built-in can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinKind {
    /// Decides whether a transition may happen; has no side effects.
    Guard,
    /// Does something: on state entry/exit, as a job, as a plugin callback.
    Action,
}

/// A plugin a built-in needs to be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredPlugin {
    Backup,
    StateMachine,
}

impl RequiredPlugin {
    pub fn section(self) -> &'static str {
        match self {
            RequiredPlugin::Backup => "backup",
            RequiredPlugin::StateMachine => "machines",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BuiltinSpec {
    pub name: &'static str,
    pub kind: BuiltinKind,
    pub summary: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
    pub needs: Option<RequiredPlugin>,
}

impl BuiltinSpec {
    pub fn accepts(&self, param: &str) -> bool {
        self.required.contains(&param) || self.optional.contains(&param)
    }

    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.required.iter().chain(self.optional.iter()).copied()
    }
}

const fn spec(
    name: &'static str,
    kind: BuiltinKind,
    summary: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    needs: Option<RequiredPlugin>,
) -> BuiltinSpec {
    BuiltinSpec {
        name,
        kind,
        summary,
        required,
        optional,
        needs,
    }
}

use BuiltinKind::{Action, Guard};

pub const BUILTINS: &[BuiltinSpec] = &[
    spec("always", Guard, "allows every transition", &[], &[], None),
    spec("never", Guard, "denies every transition", &[], &["reason"], None),
    spec(
        "context.matches",
        Guard,
        "allows when the event context matches predicates ($eq $ne $lt $lte $gt $gte $in $exists)",
        &["where"],
        &["reason"],
        None,
    ),
    spec(
        "record.check",
        Guard,
        "loads a record by id and allows when it matches predicates; a missing record denies",
        &["resource", "id"],
        &["where", "reason"],
        None,
    ),
    spec("log", Action, "writes a log line", &[], &["message", "level", "fields"], None),
    spec(
        "record.insert",
        Action,
        "inserts a record",
        &["resource", "data"],
        &["id"],
        None,
    ),
    spec(
        "record.update",
        Action,
        "updates fields of a record ($increment/$decrement allowed)",
        &["resource", "id", "set"],
        &["upsert"],
        None,
    ),
    spec("record.delete", Action, "deletes a record", &["resource", "id"], &[], None),
    spec(
        "resource.deleteWhere",
        Action,
        "deletes every record of a resource that matches predicates",
        &["resource", "where"],
        &["limit"],
        None,
    ),
    spec(
        "machine.send",
        Action,
        "sends an event to an entity of a machine",
        &["machine", "entity", "event"],
        &["context"],
        Some(RequiredPlugin::StateMachine),
    ),
    spec(
        "machine.sendAll",
        Action,
        "sends an event to every entity of a machine in a state (optionally only those in it longer than `olderThan`)",
        &["machine", "state", "event"],
        &["olderThan", "context"],
        Some(RequiredPlugin::StateMachine),
    ),
    spec(
        "backup.run",
        Action,
        "runs a backup",
        &[],
        &["type", "resources"],
        Some(RequiredPlugin::Backup),
    ),
    spec(
        "backup.prune",
        Action,
        "deletes backups the retention policy no longer keeps",
        &[],
        &["dryRun"],
        Some(RequiredPlugin::Backup),
    ),
    spec(
        "webhook",
        Action,
        "POSTs the hook input as JSON to a URL",
        &["url"],
        &["headers", "timeout", "retries"],
        None,
    ),
];

pub fn lookup(name: &str) -> Option<&'static BuiltinSpec> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub fn names(kind: BuiltinKind) -> impl Iterator<Item = &'static str> {
    BUILTINS
        .iter()
        .filter(move |b| b.kind == kind)
        .map(|b| b.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::model::BuiltinCall;

    /// The table (checks, schema, help) and the typed parameters (the runner) name the same
    /// parameters: serde's unknown-field error lists the fields a variant reads.
    #[test]
    fn the_table_and_the_typed_parameters_agree() {
        for spec in BUILTINS {
            let mut with = serde_json::Map::new();
            with.insert("zz_unknown".into(), serde_json::Value::Null);
            let message = BuiltinCall::parse(spec.name, Some(&with))
                .unwrap_err()
                .to_string();
            let mut typed: Vec<&str> = message.split('`').skip(3).step_by(2).collect::<Vec<_>>();
            typed.sort_unstable();
            let mut table: Vec<&str> = spec.params().collect();
            table.sort_unstable();
            assert_eq!(typed, table, "{}: {message}", spec.name);
            if spec.required.is_empty() {
                assert!(BuiltinCall::parse(spec.name, None).is_ok(), "{}", spec.name);
            }
        }
    }
}
