//! Rules of hooks: named guards and actions, built-in parameters and the plugins they need, shell commands and their templates, references by name.

use super::*;

impl Checker<'_> {
    pub(super) fn named_hooks(&mut self) {
        for (name, def) in &self.m.guards {
            self.hook_def(def, BuiltinKind::Guard, &["guards", name]);
        }
        for (name, def) in &self.m.actions {
            self.hook_def(def, BuiltinKind::Action, &["actions", name]);
        }
    }

    pub(super) fn hook_def(&mut self, def: &HookDef, kind: BuiltinKind, path: &[&str]) {
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
                self.builtin_use(name, def, kind, path);
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

    pub(super) fn builtin_use(
        &mut self,
        name: &str,
        def: &HookDef,
        kind: BuiltinKind,
        path: &[&str],
    ) {
        let with = def.with.as_ref();
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
        let mut unknown = false;
        for key in params.keys() {
            if !spec.accepts(key) {
                unknown = true;
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
        let bad_duration = matches!(params.get("olderThan"), Some(serde_json::Value::String(t)) if t.parse::<crate::types::Duration>().is_err());
        if def.call.is_none() && missing.is_empty() && !unknown && !bad_duration {
            // Names are right, so a value is of the wrong type: read it again from the tree,
            // whose reader names the parameter and its rule.
            let sink = crate::manifest::de::Sink::default();
            if let Err(e) = crate::manifest::de::read_builtin(name, self.node(&with_path), &sink) {
                let fallback = self.key_span(&with_path);
                let summary = spec.summary;
                let d = e.into_diagnostic(fallback);
                let d = if d.help.is_none() {
                    d.with_help(format!("`{name}` {summary}"))
                } else {
                    d
                };
                self.emit(d);
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
    pub(super) fn command(&mut self, cmd: &crate::manifest::types::Command, path: &[&str]) {
        let crate::manifest::types::Command::Argv(argv) = cmd else {
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
    pub(super) fn templates_in(&mut self, value: &serde_json::Value, path: &[&str]) {
        match value {
            serde_json::Value::String(text) => {
                if let Err(problem) = crate::hooks::template::check(text) {
                    let span = self.span(path);
                    self.emit(
                        Diagnostic::error("manifest::template", span, problem.to_string())
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

    pub(super) fn command_templates(
        &mut self,
        cmd: &crate::manifest::types::Command,
        env: &indexmap::IndexMap<String, String>,
        path: &[&str],
    ) {
        match cmd {
            crate::manifest::types::Command::Argv(argv) => {
                let argv = serde_json::Value::from(argv.clone());
                self.templates_in(&argv, &[path, &["run"]].concat());
            }
            crate::manifest::types::Command::Shell(script) if script.contains("{{") => {
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
            crate::manifest::types::Command::Shell(_) => {}
        }
        for (k, v) in env {
            let value = serde_json::Value::String(v.clone());
            self.templates_in(&value, &[path, &["env", k.as_str()]].concat());
        }
    }

    /// Resolves a hook reference used as `kind` at `path`.
    pub(super) fn hook_ref(&mut self, r: &HookRef, kind: BuiltinKind, path: &[&str]) {
        match r {
            HookRef::Inline(def) => self.hook_def(def, kind, path),
            HookRef::Named(name) => self.hook_name(name, kind, path),
        }
    }

    pub(super) fn hook_name(&mut self, name: &str, kind: BuiltinKind, path: &[&str]) {
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

    pub(super) fn builtin_kind_mismatch(
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

    pub(super) fn plugin_configured(&mut self, name: &str, plugin: RequiredPlugin, span: Span) {
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
}
