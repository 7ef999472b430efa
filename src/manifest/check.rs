//! Semantic rules: what relates one part of a manifest to another (a transition's target is a
//! state, a hook name is defined, a job's cron can fire, a backup driver has what it needs).
//! Every rule reports through a diagnostic with a code and a help line, all in one pass; no rule
//! stops the others. Spans come from the tree the model was read from.

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use super::diagnostic::{Diagnostic, Span};
use super::model::*;
use super::tree::Node;
use crate::db::attribute::AttributeSpec;
use crate::hooks::builtins::{self, BuiltinKind, RequiredPlugin};
use crate::types::suggest::did_you_mean;

/// Path-template variables of backup paths.
pub const PATH_TEMPLATE_VARS: &[&str] =
    &["date", "time", "year", "month", "day", "backupId", "type"];

/// Items whose shape was already reported; rules about them stay silent so one mistake is not
/// reported twice.
#[derive(Debug, Default)]
pub struct Broken {
    pub items: HashSet<(String, String)>,
    pub sections: HashSet<String>,
}

impl Broken {
    fn item(&self, section: &str, name: &str) -> bool {
        self.items
            .contains(&(section.to_string(), name.to_string()))
    }
}

pub fn check(
    manifest: &Manifest,
    root: &Node,
    base_dir: &Path,
    broken: &Broken,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        m: manifest,
        root,
        base_dir,
        broken,
        out: Vec::new(),
    };
    c.version();
    c.database();
    c.named_hooks();
    c.machines();
    c.jobs();
    c.scheduler_callbacks();
    c.state_machine_settings();
    c.backup();
    c.cache();
    c.server();
    c.out
}

struct Checker<'a> {
    m: &'a Manifest,
    root: &'a Node,
    base_dir: &'a Path,
    broken: &'a Broken,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn node(&self, path: &[&str]) -> Option<&Node> {
        let mut node = self.root;
        for seg in path {
            node = match seg.parse::<usize>() {
                Ok(i) if !node.items().is_empty() => node.items().get(i)?,
                _ => node.get(seg)?,
            };
        }
        Some(node)
    }

    /// The span of the value at `path`, or of the deepest part of it that exists.
    fn span(&self, path: &[&str]) -> Span {
        (0..=path.len())
            .rev()
            .find_map(|n| self.node(&path[..n]).map(|node| node.span))
            .unwrap_or_default()
    }

    /// The span of the last key of `path` (where a name is defined), or of its value.
    fn key_span(&self, path: &[&str]) -> Span {
        if let Some((last, parent)) = path.split_last() {
            if let Some((key, _)) = self.node(parent).and_then(|n| n.entry(last)) {
                return key.span;
            }
        }
        self.span(path)
    }

    fn has_key(&self, path: &[&str], key: &str) -> bool {
        self.node(path).and_then(|n| n.entry(key)).is_some()
    }

    fn emit(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn version(&mut self) {
        if self.m.version != 1 {
            let span = self.span(&["version"]);
            self.emit(
                Diagnostic::error(
                    "manifest::unsupported_version",
                    span,
                    format!("manifest version {} is not supported", self.m.version),
                )
                .with_help("this s3db-run reads `version: 1`"),
            );
        }
    }

    fn known_resources(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .m
            .database
            .resources
            .keys()
            .map(String::as_str)
            .collect();
        let sm = &self.m.state_machine;
        if !self.m.machines.is_empty() {
            names.push(&sm.state_resource);
            if sm.persist_transitions {
                names.push(&sm.transition_log_resource);
            }
        }
        if self.m.scheduler.persist_jobs && !self.m.jobs.is_empty() {
            names.push(&self.m.scheduler.job_history_resource);
        }
        names
    }

    fn check_resource_name(&mut self, name: &str, span: Span) {
        if name.contains("{{") {
            return;
        }
        let known = self.known_resources();
        if !known.contains(&name) {
            let help = did_you_mean(name, known.iter().copied())
                .unwrap_or_else(|| "declare it under `database.resources`".to_string());
            self.emit(
                Diagnostic::error(
                    "manifest::unknown_resource",
                    span,
                    format!("resource `{name}` is not declared"),
                )
                .with_help(help),
            );
        }
    }

    fn database(&mut self) {
        let parsed = self
            .m
            .database
            .connection
            .expose()
            .parse::<crate::store::connection::Connection>();
        if let Err(e) = parsed {
            if !self.broken.sections.contains("database") {
                let span = self.span(&["database", "connection"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::invalid_connection",
                        span,
                        format!("`{}` is not a valid connection string: {}", e.redacted, e.reason),
                    )
                    .with_help(
                        "use s3://[KEY:SECRET@]BUCKET/prefix?region=…&endpoint=http://HOST:PORT, file://PATH or memory://BUCKET/prefix",
                    ),
                );
            }
        }
        for (rname, res) in &self.m.database.resources {
            for (attr, text) in &res.attributes {
                if let Err(e) = text.parse::<AttributeSpec>() {
                    let span = self.span(&["database", "resources", rname, "attributes", attr]);
                    self.emit(
                        Diagnostic::error(
                            "manifest::invalid_attribute",
                            span,
                            format!("attribute `{rname}.{attr}`: {}", e.message),
                        )
                        .with_help(e.help),
                    );
                }
            }
            for (pname, part) in &res.partitions {
                for field in part.fields.keys() {
                    let declared = res.attributes.contains_key(field)
                        || (res.timestamps && matches!(field.as_str(), "createdAt" | "updatedAt"));
                    if !declared {
                        let span = self.key_span(&[
                            "database",
                            "resources",
                            rname,
                            "partitions",
                            pname,
                            "fields",
                            field,
                        ]);
                        let help = did_you_mean(field, res.attributes.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                format!("declare `{field}` under the resource's attributes")
                            });
                        self.emit(
                            Diagnostic::error(
                                "manifest::unknown_attribute",
                                span,
                                format!("partition `{pname}` uses `{field}`, which is not an attribute of `{rname}`"),
                            )
                            .with_help(help),
                        );
                    }
                }
            }
        }
    }

    fn named_hooks(&mut self) {
        for (name, def) in &self.m.guards {
            self.hook_def(def, BuiltinKind::Guard, &["guards", name]);
        }
        for (name, def) in &self.m.actions {
            self.hook_def(def, BuiltinKind::Action, &["actions", name]);
        }
    }

    fn hook_def(&mut self, def: &HookDef, kind: BuiltinKind, path: &[&str]) {
        let span = self.key_span(path);
        match (&def.builtin, &def.run) {
            (None, None) => {
                self.emit(
                    Diagnostic::error(
                        "manifest::hook_kind",
                        span,
                        "a hook needs either `builtin` or `run`",
                    )
                    .with_help(
                        "write `builtin: NAME` with `with:` parameters, or `run: [PROGRAM, ARGS…]`",
                    ),
                );
            }
            (Some(_), Some(_)) => {
                let span = self.key_span(&[path, &["run"]].concat());
                self.emit(
                    Diagnostic::error(
                        "manifest::hook_kind",
                        span,
                        "a hook is either a built-in or a shell command, not both",
                    )
                    .with_help("keep `builtin` (with `with`) or `run`, and move the other to a hook of its own"),
                );
            }
            (Some(name), None) => {
                for key in ["timeout", "env", "retries"] {
                    if self.has_key(path, key) {
                        let span = self.key_span(&[path, &[key]].concat());
                        self.emit(
                            Diagnostic::error(
                                "manifest::hook_kind",
                                span,
                                format!("`{key}` applies to shell hooks (`run`), not to built-ins"),
                            )
                            .with_help(
                                "remove it, or give the built-in's own parameter under `with`",
                            ),
                        );
                    }
                }
                self.builtin_use(name, def.with.as_ref(), kind, path);
                if let Some(with) = &def.with {
                    self.templates_in(
                        &serde_json::Value::Object(with.clone()),
                        &[path, &["with"]].concat(),
                    );
                }
            }
            (None, Some(cmd)) => {
                if def.with.is_some() {
                    let span = self.key_span(&[path, &["with"]].concat());
                    self.emit(
                        Diagnostic::error(
                            "manifest::hook_kind",
                            span,
                            "`with` gives parameters to built-ins; a shell hook takes arguments in `run`",
                        )
                        .with_help("pass values as elements of `run`, e.g. `run: [./hook.sh, \"{{context.id}}\"]`"),
                    );
                }
                self.command(cmd, &[path, &["run"]].concat());
                self.command_templates(cmd, &def.env, path);
            }
        }
    }

    fn builtin_use(
        &mut self,
        name: &str,
        with: Option<&serde_json::Map<String, serde_json::Value>>,
        kind: BuiltinKind,
        path: &[&str],
    ) {
        let name_span = self.span(&[path, &["builtin"]].concat());
        let Some(spec) = builtins::lookup(name) else {
            let help = did_you_mean(name, builtins::names(kind)).unwrap_or_else(|| {
                format!(
                    "the built-in {}s are {}",
                    kind_word(kind),
                    builtins::names(kind).collect::<Vec<_>>().join(", ")
                )
            });
            self.emit(
                Diagnostic::error(
                    "manifest::unknown_builtin",
                    name_span,
                    format!("`{name}` is not a built-in"),
                )
                .with_help(help),
            );
            return;
        };
        if spec.kind != kind {
            self.builtin_kind_mismatch(name, spec.kind, kind, name_span);
            return;
        }
        if let Some(plugin) = spec.needs {
            self.plugin_configured(name, plugin, name_span);
        }
        let empty = serde_json::Map::new();
        let params = with.unwrap_or(&empty);
        let with_path = [path, &["with"]].concat();
        let missing: Vec<&str> = spec
            .required
            .iter()
            .copied()
            .filter(|p| !params.contains_key(*p))
            .collect();
        if !missing.is_empty() {
            let span = if with.is_some() {
                self.key_span(&with_path)
            } else {
                name_span
            };
            self.emit(
                Diagnostic::error(
                    "manifest::builtin_params",
                    span,
                    format!(
                        "`{name}` needs {}",
                        missing
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .with_help(format!("give them under `with:` ({})", spec.summary)),
            );
        }
        for key in params.keys() {
            if !spec.accepts(key) {
                let span = self.key_span(&[with_path.as_slice(), &[key.as_str()]].concat());
                let help = did_you_mean(key, spec.params()).unwrap_or_else(|| {
                    let all: Vec<&str> = spec.params().collect();
                    if all.is_empty() {
                        format!("`{name}` takes no parameters")
                    } else {
                        format!("`{name}` takes {}", all.join(", "))
                    }
                });
                self.emit(
                    Diagnostic::error(
                        "manifest::builtin_params",
                        span,
                        format!("`{name}` has no parameter `{key}`"),
                    )
                    .with_help(help),
                );
            }
        }
        let param_span = |c: &Self, key: &str| c.span(&[with_path.as_slice(), &[key]].concat());
        if let Some(serde_json::Value::String(res)) = params.get("resource") {
            let span = param_span(self, "resource");
            self.check_resource_name(res, span);
        }
        if let Some(serde_json::Value::String(older)) = params.get("olderThan") {
            if older.parse::<crate::types::Duration>().is_err() {
                let span = param_span(self, "olderThan");
                self.emit(
                    Diagnostic::error(
                        "manifest::invalid_duration",
                        span,
                        format!("`{older}` is not a duration"),
                    )
                    .with_help("write milliseconds or a number with a unit, such as `30m` or `2d`"),
                );
            }
        }
        if let Some(serde_json::Value::String(machine)) = params.get("machine") {
            if machine.contains("{{") {
                return;
            }
            let Some(def) = self.m.machines.get(machine) else {
                if !self.broken.item("machines", machine) {
                    let span = param_span(self, "machine");
                    let help = did_you_mean(machine, self.m.machines.keys().map(String::as_str))
                        .unwrap_or_else(|| "define it under `machines:`".into());
                    self.emit(
                        Diagnostic::error(
                            "manifest::unknown_machine",
                            span,
                            format!("machine `{machine}` is not defined"),
                        )
                        .with_help(help),
                    );
                }
                return;
            };
            if let Some(serde_json::Value::String(state)) = params.get("state") {
                if !state.contains("{{") && !def.states.contains_key(state) {
                    let span = param_span(self, "state");
                    let help = did_you_mean(state, def.states.keys().map(String::as_str))
                        .unwrap_or_else(|| {
                            format!("the states of `{machine}` are {}", join(def.states.keys()))
                        });
                    self.emit(
                        Diagnostic::error(
                            "manifest::unknown_state",
                            span,
                            format!("machine `{machine}` has no state `{state}`"),
                        )
                        .with_help(help),
                    );
                }
            }
            if let Some(serde_json::Value::String(event)) = params.get("event") {
                let events: Vec<&str> = def
                    .states
                    .values()
                    .flat_map(|s| s.on.keys().map(String::as_str))
                    .collect();
                if !event.contains("{{") && !events.contains(&event.as_str()) {
                    let span = param_span(self, "event");
                    let help = did_you_mean(event, events.iter().copied()).unwrap_or_else(|| {
                        format!("the events of `{machine}` are {}", events.join(", "))
                    });
                    self.emit(
                        Diagnostic::error(
                            "manifest::unknown_event",
                            span,
                            format!("no state of machine `{machine}` handles the event `{event}`"),
                        )
                        .with_help(help),
                    );
                }
            }
        }
    }

    /// A shell command whose program cannot be found is a warning: it may be installed where
    /// the runner runs, but a typo should not wait for the first run to show.
    fn command(&mut self, cmd: &super::types::Command, path: &[&str]) {
        let super::types::Command::Argv(argv) = cmd else {
            return;
        };
        let Some(program) = argv.first() else { return };
        if program.contains("{{") {
            return;
        }
        let span = self.span(&[path, &["0"]].concat());
        let problem = if program.contains('/') {
            let full = self.base_dir.join(program);
            match std::fs::metadata(&full) {
                Err(_) => Some(format!(
                    "`{program}` does not exist (looked in {})",
                    self.base_dir.display()
                )),
                Ok(meta) if !is_executable(&meta) => Some(format!("`{program}` is not executable")),
                Ok(_) => None,
            }
        } else if find_in_path(program) {
            None
        } else {
            Some(format!("`{program}` is not found on PATH"))
        };
        if let Some(message) = problem {
            self.emit(
                Diagnostic::warning("manifest::hook_command", span, message)
                    .with_help("paths are relative to the manifest's folder; check the name and `chmod +x` the script"),
            );
        }
    }

    /// Every `{{…}}` in built-in parameters must name a known variable.
    fn templates_in(&mut self, value: &serde_json::Value, path: &[&str]) {
        match value {
            serde_json::Value::String(text) => {
                if let Err(message) = crate::hooks::template::check(text) {
                    let span = self.span(path);
                    self.emit(
                        Diagnostic::error("manifest::template", span, message)
                            .with_help("templates are lookups: {{context.x}}, {{entity}}, {{event}}, {{from}}, {{to}}, {{job}}, {{now}}, {{now-24h}}"),
                    );
                }
            }
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let idx = i.to_string();
                    self.templates_in(item, &[path, &[idx.as_str()]].concat());
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    self.templates_in(v, &[path, &[k.as_str()]].concat());
                }
            }
            _ => {}
        }
    }

    fn command_templates(
        &mut self,
        cmd: &super::types::Command,
        env: &indexmap::IndexMap<String, String>,
        path: &[&str],
    ) {
        match cmd {
            super::types::Command::Argv(argv) => {
                let argv = serde_json::Value::from(argv.clone());
                self.templates_in(&argv, &[path, &["run"]].concat());
            }
            super::types::Command::Shell(script) if script.contains("{{") => {
                let span = self.span(&[path, &["run"]].concat());
                self.emit(
                    Diagnostic::error(
                        "manifest::template_in_shell",
                        span,
                        "templates are not expanded inside a shell string: a value pasted into shell code could run as code",
                    )
                    .with_help("use the list form (`run: [./hook.sh, \"{{entity}}\"]`), or read $S3DB_ENTITY and the JSON on stdin"),
                );
            }
            super::types::Command::Shell(_) => {}
        }
        for (k, v) in env {
            let value = serde_json::Value::String(v.clone());
            self.templates_in(&value, &[path, &["env", k.as_str()]].concat());
        }
    }

    /// Resolves a hook reference used as `kind` at `path`.
    fn hook_ref(&mut self, r: &HookRef, kind: BuiltinKind, path: &[&str]) {
        match r {
            HookRef::Inline(def) => self.hook_def(def, kind, path),
            HookRef::Named(name) => self.hook_name(name, kind, path),
        }
    }

    fn hook_name(&mut self, name: &str, kind: BuiltinKind, path: &[&str]) {
        let m = self.m;
        let (own, other, own_section, other_section) = match kind {
            BuiltinKind::Guard => (&m.guards, &m.actions, "guards", "actions"),
            BuiltinKind::Action => (&m.actions, &m.guards, "actions", "guards"),
        };
        if own.contains_key(name) || self.broken.item(own_section, name) {
            return;
        }
        // Looked up only now: the common case above needs no span.
        let span = self.span(path);
        if other.contains_key(name) {
            self.emit(
                Diagnostic::error(
                    "manifest::unknown_hook",
                    span,
                    format!(
                        "`{name}` is defined under `{other_section}`, but {} is needed here",
                        a_kind(kind)
                    ),
                )
                .with_help(format!("define it under `{own_section}:`")),
            );
            return;
        }
        if let Some(spec) = builtins::lookup(name) {
            if spec.kind != kind {
                self.builtin_kind_mismatch(name, spec.kind, kind, span);
            } else if !spec.required.is_empty() {
                self.emit(
                    Diagnostic::error(
                        "manifest::builtin_params",
                        span,
                        format!(
                            "`{name}` needs parameters ({}), so it cannot be named bare here",
                            spec.required.join(", ")
                        ),
                    )
                    .with_help(format!(
                        "define a hook under `{own_section}:` with `builtin: {name}` and `with:`"
                    )),
                );
            } else if let Some(plugin) = spec.needs {
                self.plugin_configured(name, plugin, span);
            }
            return;
        }
        let mut candidates: Vec<&str> = own.keys().map(String::as_str).collect();
        for builtin in builtins::names(kind) {
            candidates.push(builtin);
        }
        let help = did_you_mean(name, candidates.iter().copied()).unwrap_or_else(|| {
            format!(
                "define it under `{own_section}:` or use a built-in {}",
                kind_word(kind)
            )
        });
        self.emit(
            Diagnostic::error(
                "manifest::unknown_hook",
                span,
                format!("{} `{name}` is not defined", kind_word(kind)),
            )
            .with_help(help),
        );
    }

    fn builtin_kind_mismatch(
        &mut self,
        name: &str,
        is: BuiltinKind,
        wanted: BuiltinKind,
        span: Span,
    ) {
        self.emit(
            Diagnostic::error(
                "manifest::builtin_kind",
                span,
                format!(
                    "`{name}` is a built-in {}, used here as {}",
                    kind_word(is),
                    a_kind(wanted)
                ),
            )
            .with_help(format!(
                "built-in {}s: {}",
                kind_word(wanted),
                builtins::names(wanted).collect::<Vec<_>>().join(", ")
            )),
        );
    }

    fn plugin_configured(&mut self, name: &str, plugin: RequiredPlugin, span: Span) {
        let configured = match plugin {
            RequiredPlugin::Backup => self.m.backup.is_some(),
            RequiredPlugin::StateMachine => !self.m.machines.is_empty(),
        };
        if !configured {
            self.emit(
                Diagnostic::error(
                    "manifest::builtin_needs_plugin",
                    span,
                    format!(
                        "`{name}` needs the `{}` section, which this manifest does not have",
                        plugin.section()
                    ),
                )
                .with_help(format!(
                    "add a `{}:` section, or use another hook",
                    plugin.section()
                )),
            );
        }
    }

    fn machines(&mut self) {
        for (mname, machine) in &self.m.machines {
            let base = ["machines", mname.as_str()];
            if machine.states.is_empty() {
                let span = self.span(&[&base[..], &["states"]].concat());
                self.emit(
                    Diagnostic::error(
                        "manifest::no_states",
                        span,
                        format!("machine `{mname}` has no states"),
                    )
                    .with_help("declare at least the initial state under `states:`"),
                );
                continue;
            }
            let state_names: Vec<&str> = machine.states.keys().map(String::as_str).collect();
            if !machine.states.contains_key(&machine.initial_state) {
                let span = self.span(&[&base[..], &["initialState"]].concat());
                let help = did_you_mean(&machine.initial_state, state_names.iter().copied())
                    .unwrap_or_else(|| format!("the states are {}", state_names.join(", ")));
                self.emit(
                    Diagnostic::error(
                        "manifest::unknown_initial_state",
                        span,
                        format!(
                            "initial state `{}` is not a state of `{mname}`",
                            machine.initial_state
                        ),
                    )
                    .with_help(help),
                );
            }
            for (sname, state) in &machine.states {
                let sp = [&base[..], &["states", sname.as_str()]].concat();
                if state.is_final() && (!state.on.is_empty() || !state.after.is_empty()) {
                    let key = if state.on.is_empty() { "after" } else { "on" };
                    let span = self.key_span(&[&sp[..], &[key]].concat());
                    self.emit(
                        Diagnostic::error(
                            "manifest::final_state_transitions",
                            span,
                            format!("`{sname}` is a final state but has transitions"),
                        )
                        .with_help("remove the transitions, or remove `type: final`"),
                    );
                }
                for (event, target) in &state.on {
                    if !machine.states.contains_key(target) {
                        let span = self.span(&[&sp[..], &["on", event.as_str()]].concat());
                        self.unknown_state(mname, target, &state_names, span);
                    }
                }
                for (after, target) in &state.after {
                    if !machine.states.contains_key(target) {
                        let span = self.span(&[&sp[..], &["after", after.as_str()]].concat());
                        self.unknown_state(mname, target, &state_names, span);
                    }
                }
                for (event, guard) in &state.guards {
                    let gpath = [&sp[..], &["guards", event.as_str()]].concat();
                    if !state.on.contains_key(event) {
                        let span = self.key_span(&gpath);
                        let help = did_you_mean(event, state.on.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                format!(
                                    "add `{event}` under `on:` of `{sname}`, or remove the guard"
                                )
                            });
                        self.emit(
                            Diagnostic::error(
                                "manifest::guard_without_transition",
                                span,
                                format!("state `{sname}` guards `{event}`, but has no transition on `{event}`"),
                            )
                            .with_help(help),
                        );
                    }
                    self.hook_name(guard, BuiltinKind::Guard, &gpath);
                }
                for (key, list) in [("entry", &state.entry), ("exit", &state.exit)] {
                    for (i, action) in list.iter().enumerate() {
                        let idx = i.to_string();
                        let path = [&sp[..], &[key, idx.as_str()]].concat();
                        self.hook_name(action, BuiltinKind::Action, &path);
                    }
                }
            }
            self.reachability(mname, machine);
        }
    }

    fn unknown_state(&mut self, machine: &str, target: &str, states: &[&str], span: Span) {
        let help = did_you_mean(target, states.iter().copied())
            .unwrap_or_else(|| format!("the states of `{machine}` are {}", states.join(", ")));
        self.emit(
            Diagnostic::error(
                "manifest::unknown_state",
                span,
                format!("`{target}` is not a state of `{machine}`"),
            )
            .with_help(help),
        );
    }

    fn reachability(&mut self, mname: &str, machine: &MachineDef) {
        if !machine.states.contains_key(&machine.initial_state) {
            return;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut queue = VecDeque::from([machine.initial_state.as_str()]);
        while let Some(s) = queue.pop_front() {
            if !seen.insert(s) {
                continue;
            }
            if let Some(state) = machine.states.get(s) {
                queue.extend(state.on.values().map(String::as_str));
                queue.extend(state.after.values().map(String::as_str));
            }
        }
        for (sname, state) in &machine.states {
            let unreachable = !seen.contains(sname.as_str());
            let dead_end = !state.is_final() && state.on.is_empty() && state.after.is_empty();
            if !unreachable && !dead_end {
                continue;
            }
            let span = self.key_span(&["machines", mname, "states", sname]);
            if unreachable {
                self.emit(
                    Diagnostic::warning(
                        "manifest::unreachable_state",
                        span,
                        format!(
                            "state `{sname}` of `{mname}` cannot be reached from `{}`",
                            machine.initial_state
                        ),
                    )
                    .with_help("add a transition to it, or remove it"),
                );
            }
            if dead_end {
                self.emit(
                    Diagnostic::warning(
                        "manifest::dead_end_state",
                        span,
                        format!("state `{sname}` of `{mname}` has no way out and is not final"),
                    )
                    .with_help("add transitions under `on:`, or mark it `type: final`"),
                );
            }
        }
    }

    fn jobs(&mut self) {
        for (name, job) in &self.m.jobs {
            let base = ["jobs", name.as_str()];
            self.hook_ref(
                &job.action,
                BuiltinKind::Action,
                &[&base[..], &["action"]].concat(),
            );
        }
    }

    fn state_machine_settings(&mut self) {
        let retention = self.m.state_machine.transition_retention.as_ref();
        if retention.is_some_and(|r| r.max_per_entity == 0) {
            let span = self.span(&["stateMachine", "transitionRetention", "maxPerEntity"]);
            self.emit(
                Diagnostic::error(
                    "manifest::invalid_value",
                    span,
                    "`maxPerEntity` must be at least 1",
                )
                .with_help("give the number of transitions to keep per entity, or remove `transitionRetention`"),
            );
        }
    }

    fn scheduler_callbacks(&mut self) {
        let s = &self.m.scheduler;
        if s.history_retention.as_ref().and_then(|r| r.max_runs) == Some(0) {
            let span = self.span(&["scheduler", "historyRetention", "maxRuns"]);
            self.emit(
                Diagnostic::error(
                    "manifest::invalid_value",
                    span,
                    "`maxRuns` must be at least 1 (a job's newest run is always kept)",
                )
                .with_help("give the number of runs to keep per job, or remove `maxRuns`"),
            );
        }
        for (key, hook) in [
            ("onJobStart", &s.on_job_start),
            ("onJobComplete", &s.on_job_complete),
            ("onJobError", &s.on_job_error),
        ] {
            if let Some(h) = hook {
                self.hook_ref(h, BuiltinKind::Action, &["scheduler", key]);
            }
        }
    }

    fn backup(&mut self) {
        let Some(b) = &self.m.backup else { return };
        if let Some(legacy) = &b.destinations {
            if self.has_key(&["backup"], "driver") || self.has_key(&["backup"], "config") {
                let span = self.key_span(&["backup", "destinations"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::backup_legacy_conflict",
                        span,
                        "the legacy `destinations` list cannot be combined with `driver`/`config`",
                    )
                    .with_help(
                        "move the destinations to `driver: multi` with `config.destinations`",
                    ),
                );
            }
            if legacy.is_empty() {
                let span = self.span(&["backup", "destinations"]);
                self.no_destinations(span);
            }
            for (i, d) in legacy.iter().enumerate() {
                let idx = i.to_string();
                let path = ["backup", "destinations", idx.as_str()];
                self.destination(d.kind, d.path.as_deref(), &path);
            }
        } else {
            self.backup_driver(b.driver, &b.config, &["backup"]);
        }
        if let Some(enc) = &b.encryption {
            let given = [
                enc.key.is_some(),
                enc.key_file.is_some(),
                enc.key_command.is_some(),
            ]
            .iter()
            .filter(|g| **g)
            .count();
            let span = self.key_span(&["backup", "encryption"]);
            if given != 1 {
                self.emit(
                    Diagnostic::error(
                        "manifest::encryption_key",
                        span,
                        if given == 0 {
                            "encryption needs a key".to_string()
                        } else {
                            "give the encryption key one way only".to_string()
                        },
                    )
                    .with_help("set exactly one of `key` (e.g. \"${BACKUP_KEY}\"), `keyFile` or `keyCommand`"),
                );
            } else if enc
                .key
                .as_ref()
                .is_some_and(|k| k.expose().trim().is_empty())
            {
                let span = self.span(&["backup", "encryption", "key"]);
                self.emit(
                    Diagnostic::error(
                        "manifest::encryption_key",
                        span,
                        "the encryption key is empty",
                    )
                    .with_help("set the variable it comes from, or use `keyFile`/`keyCommand`"),
                );
            }
            if enc.key_derivation.algorithm == KdfAlgorithm::Pbkdf2 {
                let iterations = enc.key_derivation.iterations.unwrap_or(600_000);
                if iterations < 600_000 {
                    let span = self.span(&["backup", "encryption", "keyDerivation", "iterations"]);
                    self.emit(
                        Diagnostic::warning(
                            "manifest::weak_key_derivation",
                            span,
                            format!(
                                "{iterations} PBKDF2 iterations are below the recommended 600000"
                            ),
                        )
                        .with_help(
                            "raise `iterations` to 600000 or more, or use the default `argon2id`",
                        ),
                    );
                }
            }
        }
        for key in ["include", "exclude"] {
            let names = if key == "include" {
                b.include.clone().unwrap_or_default()
            } else {
                b.exclude.clone()
            };
            for (i, name) in names.iter().enumerate() {
                let idx = i.to_string();
                let span = self.span(&["backup", key, idx.as_str()]);
                self.check_resource_name(name, span);
            }
        }
        for (key, hook) in [
            ("onBackupStart", &b.on_backup_start),
            ("onBackupComplete", &b.on_backup_complete),
            ("onBackupError", &b.on_backup_error),
            ("onRestoreStart", &b.on_restore_start),
            ("onRestoreComplete", &b.on_restore_complete),
            ("onRestoreError", &b.on_restore_error),
        ] {
            if let Some(h) = hook {
                self.hook_ref(h, BuiltinKind::Action, &["backup", key]);
            }
        }
    }

    fn no_destinations(&mut self, span: Span) {
        self.emit(
            Diagnostic::error(
                "manifest::multi_no_destinations",
                span,
                "the multi backup driver needs at least one destination",
            )
            .with_help("list destinations under `config.destinations`, each `{ driver: filesystem|s3, config: {…} }`"),
        );
    }

    fn backup_driver(&mut self, driver: BackupDriver, config: &BackupDriverConfig, path: &[&str]) {
        let config_path = [path, &["config"]].concat();
        self.driver_options("backup", driver.name(), &config_path, driver.options());
        match driver {
            BackupDriver::Multi => match &config.destinations {
                None => {
                    let span = self.key_span(&config_path);
                    let span = if span == Span::default() {
                        self.key_span(path)
                    } else {
                        span
                    };
                    self.no_destinations(span);
                }
                Some(list) if list.is_empty() => {
                    let span = self.span(&[&config_path[..], &["destinations"]].concat());
                    self.no_destinations(span);
                }
                Some(list) => {
                    for (i, d) in list.iter().enumerate() {
                        let idx = i.to_string();
                        let dpath = [&config_path[..], &["destinations", idx.as_str()]].concat();
                        if d.driver == BackupDriver::Multi {
                            let span = self.span(&[&dpath[..], &["driver"]].concat());
                            self.emit(
                                Diagnostic::error(
                                    "manifest::nested_multi",
                                    span,
                                    "a multi destination cannot itself be `multi`",
                                )
                                .with_help("list every destination directly in one `multi` driver"),
                            );
                            continue;
                        }
                        self.backup_driver(d.driver, &d.config, &dpath);
                    }
                }
            },
            _ => {
                let cpath = if self.node(&config_path).is_some() {
                    config_path.clone()
                } else {
                    path.to_vec()
                };
                self.destination(driver, config.path.as_deref(), &cpath);
                if driver == BackupDriver::S3
                    && config.bucket.is_none()
                    && !self.m.database.connection.expose().starts_with("s3://")
                {
                    // A warning: `--connection` or S3DB_CONNECTION may put the database on S3.
                    let span = self.key_span(&cpath);
                    self.emit(
                        Diagnostic::warning(
                            "manifest::backup_missing_bucket",
                            span,
                            "the s3 backup driver has no `bucket` and the database is not on S3, so there is no bucket to default to",
                        )
                        .with_help("add `bucket: my-backups` to the driver's config"),
                    );
                }
                if config.kms_key_id.is_some()
                    && config.server_side_encryption != Some(ServerSideEncryption::AwsKms)
                {
                    let span = self.key_span(&[&config_path[..], &["kmsKeyId"]].concat());
                    self.emit(
                        Diagnostic::warning(
                            "manifest::option_not_for_driver",
                            span,
                            "`kmsKeyId` has no effect without `serverSideEncryption: aws:kms`",
                        )
                        .with_help("add `serverSideEncryption: aws:kms`, or remove `kmsKeyId`"),
                    );
                }
            }
        }
    }

    /// A filesystem destination needs a path; every path may use only the known templates.
    fn destination(&mut self, driver: BackupDriver, path_value: Option<&str>, config_at: &[&str]) {
        match path_value {
            None if driver == BackupDriver::Filesystem => {
                let span = self.key_span(config_at);
                self.emit(
                    Diagnostic::error(
                        "manifest::backup_missing_path",
                        span,
                        "the filesystem backup driver needs a `path`",
                    )
                    .with_help("add `path: ./backups/{date}/` (templates: {date} {time} {year} {month} {day} {backupId} {type})"),
                );
            }
            Some(p) => {
                let span = self.span(&[config_at, &["path"]].concat());
                for var in template_vars(p) {
                    if !PATH_TEMPLATE_VARS.contains(&var.as_str()) {
                        let help = did_you_mean(&var, PATH_TEMPLATE_VARS.iter().copied())
                            .unwrap_or_else(|| {
                                format!("the templates are {{{}}}", PATH_TEMPLATE_VARS.join("} {"))
                            });
                        self.emit(
                            Diagnostic::error(
                                "manifest::path_template",
                                span,
                                format!("`{{{var}}}` is not a path template"),
                            )
                            .with_help(help),
                        );
                    }
                }
            }
            None => {}
        }
    }

    /// Options that the chosen driver ignores are warnings: the author likely meant another
    /// driver.
    fn driver_options(
        &mut self,
        plugin: &str,
        driver: &str,
        config_path: &[&str],
        allowed: &[&str],
    ) {
        let Some(config) = self.node(config_path) else {
            return;
        };
        let present: Vec<(String, Span)> = config
            .entries()
            .iter()
            .map(|(k, _)| (k.name.clone(), k.span))
            .collect();
        for (key, span) in present {
            if !allowed.contains(&key.as_str()) {
                self.emit(
                    Diagnostic::warning(
                        "manifest::option_not_for_driver",
                        span,
                        format!("`{key}` has no effect with the {plugin} driver `{driver}`"),
                    )
                    .with_help(format!("options of `{driver}`: {}", allowed.join(", "))),
                );
            }
        }
    }

    fn cache(&mut self) {
        let Some(cache) = &self.m.cache else { return };
        let allowed = cache.driver.options();
        self.driver_options("cache", cache.driver.name(), &["cache", "config"], allowed);
        if cache.driver == CacheDriver::Filesystem
            && cache.config.directory.is_none()
            && cache.config.path.is_none()
        {
            let span = if self.node(&["cache", "config"]).is_some() {
                self.key_span(&["cache", "config"])
            } else {
                self.key_span(&["cache", "driver"])
            };
            self.emit(
                Diagnostic::error(
                    "manifest::cache_missing_directory",
                    span,
                    "the filesystem cache driver needs a folder",
                )
                .with_help("add `config: { directory: ./cache }`"),
            );
        }
        for (path, size) in [
            (&["cache", "maxSize"][..], Some(cache.max_size)),
            (&["cache", "config", "maxSize"][..], cache.config.max_size),
        ] {
            if size == Some(0) {
                let span = self.span(path);
                self.emit(
                    Diagnostic::error(
                        "manifest::invalid_value",
                        span,
                        "`maxSize` must be at least 1",
                    )
                    .with_help("give the number of entries the cache may hold"),
                );
            }
        }
    }

    fn server(&mut self) {
        if self
            .m
            .server
            .listen
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            let span = self.span(&["server", "listen"]);
            self.emit(
                Diagnostic::error(
                    "manifest::invalid_listen",
                    span,
                    format!("`{}` is not an address and port", self.m.server.listen),
                )
                .with_help("write IP:PORT, such as `127.0.0.1:7070` or `0.0.0.0:7070`"),
            );
        }
    }
}

fn a_kind(kind: BuiltinKind) -> &'static str {
    match kind {
        BuiltinKind::Guard => "a guard",
        BuiltinKind::Action => "an action",
    }
}

fn kind_word(kind: BuiltinKind) -> &'static str {
    match kind {
        BuiltinKind::Guard => "guard",
        BuiltinKind::Action => "action",
    }
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// The `{name}` placeholders of a path template.
pub fn template_vars(path: &str) -> Vec<String> {
    let mut vars = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                vars.push(after[..close].to_string());
                rest = &after[close + 1..];
            }
            None => {
                vars.push(after.to_string());
                break;
            }
        }
    }
    vars
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file()
}

fn find_in_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| is_executable(&m)))
    })
}
