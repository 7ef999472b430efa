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

mod backup;
mod cache;
mod database;
mod hooks;
mod jobs;
mod machines;
mod server;
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
