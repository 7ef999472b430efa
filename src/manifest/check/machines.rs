//! Rules of `machines:` and `stateMachine:`: states that exist, final states, guards on real transitions, reachability.

use super::*;

impl Checker<'_> {
    pub(super) fn machines(&mut self) {
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

    pub(super) fn unknown_state(
        &mut self,
        machine: &str,
        target: &str,
        states: &[&str],
        span: Span,
    ) {
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

    pub(super) fn reachability(&mut self, mname: &str, machine: &MachineDef) {
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

    pub(super) fn state_machine_settings(&mut self) {
        let sm = &self.m.state_machine;
        for (key, hook) in [
            ("onTransition", &sm.on_transition),
            ("onActionError", &sm.on_action_error),
        ] {
            if let Some(h) = hook {
                self.hook_ref(h, BuiltinKind::Action, &["stateMachine", key]);
            }
        }
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
}
