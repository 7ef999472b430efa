//! Graph export of a machine: Graphviz DOT (as s3db.js's `visualize`) and Mermaid
//! `stateDiagram-v2`, for docs and dashboards.

use std::fmt::Write;

use crate::manifest::model::MachineDef;

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn dot(name: &str, machine: &MachineDef) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(name));
    out.push_str("  rankdir=LR;\n  node [shape=circle];\n");
    let _ = writeln!(
        out,
        "  __start [shape=point];\n  __start -> {};",
        quote(&machine.initial_state)
    );
    for (state, def) in &machine.states {
        let shape = if def.is_final() {
            "doublecircle"
        } else {
            "circle"
        };
        let color = def
            .meta
            .as_ref()
            .and_then(|m| m.get("color"))
            .and_then(|c| c.as_str())
            .map(|c| format!(", style=filled, fillcolor={}", quote(c)))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} [shape={shape}{color}];", quote(state));
    }
    for (state, def) in &machine.states {
        for (event, target) in &def.on {
            let label = match def.guards.get(event) {
                Some(g) => format!("{event} [{g}]"),
                None => event.clone(),
            };
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                quote(state),
                quote(target),
                quote(&label)
            );
        }
        for (after, target) in &def.after {
            let _ = writeln!(
                out,
                "  {} -> {} [label={}, style=dashed];",
                quote(state),
                quote(target),
                quote(&format!("after {after}"))
            );
        }
    }
    out.push_str("}\n");
    out
}

/// Mermaid state ids cannot hold every character a state name can; names are mapped to ids and
/// shown as labels.
fn mermaid_id(state: &str) -> String {
    let id: String = state
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("s_{id}")
}

pub fn mermaid(machine: &MachineDef) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    for state in machine.states.keys() {
        let _ = writeln!(
            out,
            "    state \"{}\" as {}",
            state.replace('"', "'"),
            mermaid_id(state)
        );
    }
    let _ = writeln!(out, "    [*] --> {}", mermaid_id(&machine.initial_state));
    for (state, def) in &machine.states {
        for (event, target) in &def.on {
            let label = match def.guards.get(event) {
                Some(g) => format!("{event} [{g}]"),
                None => event.clone(),
            };
            let _ = writeln!(
                out,
                "    {} --> {}: {}",
                mermaid_id(state),
                mermaid_id(target),
                label.replace(':', " ")
            );
        }
        for (after, target) in &def.after {
            let _ = writeln!(
                out,
                "    {} --> {}: after {}",
                mermaid_id(state),
                mermaid_id(target),
                after
            );
        }
        if def.is_final() {
            let _ = writeln!(out, "    {} --> [*]", mermaid_id(state));
        }
    }
    out
}
