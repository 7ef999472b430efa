//! What applying one manifest over another changes: jobs, machines, hooks, resources and the
//! plugin sections, added, removed or changed, field by field. `s3db-run diff` prints it, and the
//! runner's reload uses the same comparison to rebuild only what changed. Values are compared in
//! their serialized form, in which secrets are already `***`.

use serde::Serialize;
use serde_json::Value;

use super::model::Manifest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One changed field: its path inside the item and the old and new values.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// How a running runner takes a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Apply {
    /// Applied by a reload, without stopping anything.
    #[default]
    Live,
    /// Changes what every other part holds (the database connection, the state-machine
    /// resources, adding or removing a plugin): it takes effect at the next start.
    Restart,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Change {
    /// `job`, `machine`, `guard`, `action`, `resource`, or a section (`database`, `backup`,
    /// `cache`, `scheduler`, `stateMachine`, `server`).
    pub kind: &'static str,
    pub name: String,
    pub change: ChangeKind,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Whether a reload applies it or it waits for a restart (for a runner whose API follows
    /// `server.listen`; with `--listen` a new address also waits).
    pub apply: Apply,
}

impl Change {
    /// The section a restart-bound change is listed under (`restartRequired`).
    pub fn section(&self) -> &'static str {
        match self.kind {
            "machine" => "machines",
            kind => kind,
        }
    }

    /// How a runner started from `old` takes this change.
    fn classify(&self, old: &Manifest) -> Apply {
        let changed = |prefix: &str| self.fields.iter().any(|f| f.path.starts_with(prefix));
        let restart = match self.kind {
            "database" | "stateMachine" => true,
            // A plugin's settings change live; adding or removing the plugin does not.
            "backup" => old.backup.is_none() || self.change != ChangeKind::Changed,
            "cache" => old.cache.is_none() || self.change != ChangeKind::Changed,
            "scheduler" => changed("persistJobs") || changed("jobHistoryResource"),
            "server" => self
                .fields
                .iter()
                .any(|f| !(f.path.starts_with("token") || f.path == "listen")),
            // The state machines are built only when the manifest has some.
            "machine" => old.machines.is_empty(),
            _ => false,
        };
        if restart {
            Apply::Restart
        } else {
            Apply::Live
        }
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The differences between two JSON values, as paths.
fn field_changes(old: &Value, new: &Value, path: &str, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(vb) => field_changes(va, vb, &p, out),
                    None => out.push(FieldChange {
                        path: p,
                        old: Some(va.clone()),
                        new: None,
                    }),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push(FieldChange {
                        path: p,
                        old: None,
                        new: Some(vb.clone()),
                    });
                }
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: if path.is_empty() {
                "(value)".into()
            } else {
                path.to_string()
            },
            old: Some(a.clone()),
            new: Some(b.clone()),
        }),
        _ => {}
    }
}

fn compare_maps<T: Serialize>(
    kind: &'static str,
    old: &indexmap::IndexMap<String, T>,
    new: &indexmap::IndexMap<String, T>,
    out: &mut Vec<Change>,
) {
    for (name, item) in old {
        match new.get(name) {
            None => out.push(Change {
                kind,
                name: name.clone(),
                change: ChangeKind::Removed,
                fields: Vec::new(),
                apply: Apply::Live,
            }),
            Some(other) => {
                let mut fields = Vec::new();
                field_changes(&to_value(item), &to_value(other), "", &mut fields);
                if !fields.is_empty() {
                    out.push(Change {
                        kind,
                        name: name.clone(),
                        change: ChangeKind::Changed,
                        fields,
                        apply: Apply::Live,
                    });
                }
            }
        }
    }
    for name in new.keys().filter(|n| !old.contains_key(*n)) {
        out.push(Change {
            kind,
            name: name.clone(),
            change: ChangeKind::Added,
            fields: Vec::new(),
            apply: Apply::Live,
        });
    }
}

fn compare_section<T: Serialize>(kind: &'static str, old: &T, new: &T, out: &mut Vec<Change>) {
    let (a, b) = (to_value(old), to_value(new));
    let change = match (a.is_null(), b.is_null()) {
        (true, true) => return,
        (true, false) => ChangeKind::Added,
        (false, true) => ChangeKind::Removed,
        (false, false) => ChangeKind::Changed,
    };
    let mut fields = Vec::new();
    field_changes(&a, &b, "", &mut fields);
    if change != ChangeKind::Changed || !fields.is_empty() {
        out.push(Change {
            kind,
            name: kind.to_string(),
            change,
            fields,
            apply: Apply::Live,
        });
    }
}

/// Everything that applying `new` over `old` changes, in a stable order.
pub fn diff(old: &Manifest, new: &Manifest) -> Vec<Change> {
    let mut out = Vec::new();
    compare_section(
        "database",
        &old.database.connection,
        &new.database.connection,
        &mut out,
    );
    compare_maps(
        "resource",
        &old.database.resources,
        &new.database.resources,
        &mut out,
    );
    compare_maps("guard", &old.guards, &new.guards, &mut out);
    compare_maps("action", &old.actions, &new.actions, &mut out);
    compare_maps("machine", &old.machines, &new.machines, &mut out);
    compare_section(
        "stateMachine",
        &old.state_machine,
        &new.state_machine,
        &mut out,
    );
    compare_maps("job", &old.jobs, &new.jobs, &mut out);
    compare_section("scheduler", &old.scheduler, &new.scheduler, &mut out);
    compare_section("backup", &old.backup, &new.backup, &mut out);
    compare_section("cache", &old.cache, &new.cache, &mut out);
    compare_section("server", &old.server, &new.server, &mut out);
    secret_changes(old, new, &mut out);
    for change in &mut out {
        change.apply = change.classify(old);
    }
    out
}

/// Secrets serialize as `***`, so a changed secret compares equal above; compare the real values
/// here and report the change without either value.
fn secret_changes(old: &Manifest, new: &Manifest, out: &mut Vec<Change>) {
    let hidden = || Some(Value::String("***".into()));
    let pairs: [(&'static str, &str, Option<&str>, Option<&str>); 3] = [
        (
            "database",
            "connection",
            Some(old.database.connection.expose()),
            Some(new.database.connection.expose()),
        ),
        (
            "server",
            "token",
            old.server.token.as_ref().map(|t| t.expose()),
            new.server.token.as_ref().map(|t| t.expose()),
        ),
        (
            "backup",
            "encryption.key",
            old.backup
                .as_ref()
                .and_then(|b| b.encryption.as_ref()?.key.as_ref())
                .map(|k| k.expose()),
            new.backup
                .as_ref()
                .and_then(|b| b.encryption.as_ref()?.key.as_ref())
                .map(|k| k.expose()),
        ),
    ];
    for (section, path, a, b) in pairs {
        if a.is_none() || b.is_none() || a == b {
            continue;
        }
        let field = FieldChange {
            path: format!("{path} (secret)"),
            old: hidden(),
            new: hidden(),
        };
        match out
            .iter_mut()
            .find(|c| c.kind == section && c.name == section)
        {
            Some(c) if c.fields.iter().any(|f| f.path == path) => {}
            Some(c) => c.fields.push(field),
            None => out.push(Change {
                kind: section,
                name: section.to_string(),
                change: ChangeKind::Changed,
                fields: vec![field],
                apply: Apply::Live,
            }),
        }
    }
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > 80 {
                format!("{}…", text.chars().take(79).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// The changes as text: `+ job name`, `- machine name`, `~ job name` with one line per field.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let sign = match c.change {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Changed => '~',
        };
        let when = match c.apply {
            Apply::Live => "",
            Apply::Restart => "  (needs a restart)",
        };
        if c.kind == c.name {
            out.push_str(&format!("{sign} {}{when}\n", c.kind));
        } else {
            out.push_str(&format!("{sign} {} {}{when}\n", c.kind, c.name));
        }
        if c.change == ChangeKind::Changed {
            for f in &c.fields {
                out.push_str(&format!(
                    "    {}: {} -> {}\n",
                    f.path,
                    short(&f.old),
                    short(&f.new)
                ));
            }
        }
    }
    out
}
