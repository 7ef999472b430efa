//! The manifest: loading (YAML or TOML, with spans), environment interpolation, reading into the
//! model, semantic checks, the JSON Schema. Everything else in s3db-run starts from a
//! `CheckedManifest`; nothing downstream sees raw YAML or TOML.

pub mod check;
pub mod de;
pub mod diagnostic;
pub mod diff;
pub mod env;
pub mod model;
pub mod schema;
pub mod tree;
pub mod types;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use diagnostic::{Diagnostic, DiagnosticRecord, Report, Severity, Span};
pub use env::{Env, ProcessEnv};
pub use model::Manifest;
pub use schema::{json_schema, json_schema_text};

use check::Broken;
use de::{DeError, NodeDe, Sink};
use tree::{Node, Value};

/// The two manifest syntaxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    /// The format a file name implies: `.toml` is TOML, anything else YAML.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

/// A manifest that parsed and passed every rule (warnings allowed).
#[derive(Debug, Clone)]
pub struct CheckedManifest {
    pub manifest: Manifest,
    /// The manifest's folder: shell hooks run there and relative paths start there.
    pub base_dir: PathBuf,
    /// SHA-256 of the manifest text, hex.
    pub sha256: String,
}

/// The outcome of loading one manifest: every diagnostic, and the manifest when there was no
/// error.
#[derive(Debug)]
pub struct Loaded {
    pub report: Report,
    pub manifest: Option<CheckedManifest>,
}

/// Loads a manifest file (`-` is standard input, which then needs `format`).
pub fn load_path(path: &Path, format: Option<Format>, env: &dyn Env) -> std::io::Result<Loaded> {
    let (text, name, base_dir) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        (text, "<stdin>".to_string(), std::env::current_dir()?)
    } else {
        let text = std::fs::read_to_string(path)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (text, path.display().to_string(), base)
    };
    let format = format.unwrap_or_else(|| Format::from_path(path));
    Ok(load_str(&name, text, format, &base_dir, env))
}

/// `file:line:column` of the key at `path` (mapping keys from the root) in a manifest file, for
/// errors found after loading (against the stored database) that concern one of its entries.
pub fn locate(file: &Path, path: &[String]) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let root = match Format::from_path(file) {
        Format::Yaml => tree::parse_yaml(&text),
        Format::Toml => tree::parse_toml(&text),
    }
    .ok()?;
    let mut node = &root;
    let mut span = root.span;
    for key in path {
        let (k, next) = node.entry(key)?;
        span = k.span;
        node = next;
    }
    let (line, column) = diagnostic::LineIndex::new(&text).line_col(span.start);
    Some(format!("{}:{line}:{column}", file.display()))
}

/// Loads a manifest from text. `file` is the name diagnostics show.
pub fn load_str(
    file: &str,
    text: String,
    format: Format,
    base_dir: &Path,
    env: &dyn Env,
) -> Loaded {
    let (diagnostics, manifest, secrets) = load_inner(&text, format, base_dir, env);
    let mut diagnostics = dedupe(diagnostics);
    diagnostics.sort_by(|a, b| (a.span.start, a.code).cmp(&(b.span.start, b.code)));
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    let sha256 = content_sha256(text.as_bytes());
    let manifest = manifest.filter(|_| ok).map(|manifest| CheckedManifest {
        manifest,
        base_dir: base_dir.to_path_buf(),
        sha256,
    });
    Loaded {
        report: Report {
            file: file.to_string(),
            text,
            diagnostics,
            secrets,
        },
        manifest,
    }
}

/// Where secrets are written in the manifest text; human output masks them in source excerpts.
const SECRET_PATHS: &[&[&str]] = &[&["server", "token"], &["backup", "encryption", "key"]];

type Inner = (Vec<Diagnostic>, Option<Manifest>, Vec<Span>);

fn load_inner(text: &str, format: Format, base_dir: &Path, env: &dyn Env) -> Inner {
    let parsed = match format {
        Format::Yaml => tree::parse_yaml(text),
        Format::Toml => tree::parse_toml(text),
    };
    let mut root = match parsed {
        Ok(root) => root,
        Err(d) => return (vec![*d], None, Vec::new()),
    };
    let secrets = SECRET_PATHS
        .iter()
        .filter_map(|path| path.iter().try_fold(&root, |node, key| node.get(key)))
        .map(|node| node.span)
        .collect();
    if matches!(root.value, Value::Null) || matches!(&root.value, Value::Map(e) if e.is_empty()) {
        let d = Diagnostic::error("manifest::missing_key", root.span, "the manifest is empty")
            .with_help("start from `s3db-run init`, or write at least `version: 1` and `database: { connection: … }`");
        return (vec![d], None, secrets);
    }
    let mut diagnostics = Vec::new();
    let mut unresolved = Vec::new();
    env::interpolate(&mut root, env, &mut diagnostics, &mut unresolved);
    let (mut later, manifest, broken) = read_model(&mut root);
    let manifest = manifest.map(|mut manifest| {
        later.extend(check::check(&manifest, &root, base_dir, &broken));
        normalize(&mut manifest);
        manifest
    });
    // A value whose variable is missing is reported once, as missing; what the rules would say
    // about its unexpanded text is noise.
    later.retain(|d| !unresolved.contains(&d.span));
    diagnostics.append(&mut later);
    (diagnostics, manifest, secrets)
}

/// Reads the tree into the model. Items of the named sections (a machine, a job, a hook, a
/// resource) and whole sections are read on their own first, so a mistake in one does not hide
/// the mistakes in others; a broken item is reported, removed, and remembered so that rules do
/// not report it again.
fn read_model(root: &mut Node) -> (Vec<Diagnostic>, Option<Manifest>, Broken) {
    // Most manifests read cleanly in one pass; only a failing one pays for reading item by item.
    let sink = Sink::default();
    if let Ok(manifest) = Manifest::deserialize(NodeDe::new(root, &sink)) {
        return (sink.into_inner(), Some(manifest), Broken::default());
    }
    let sink = Sink::default();
    let mut errors = Vec::new();
    let mut broken = Broken::default();
    let root_span = root.span;

    fn probe<T: DeserializeOwned>(node: &Node, sink: &Sink) -> Result<(), DeError> {
        T::deserialize(NodeDe::new(node, sink)).map(|_| ())
    }
    let item_sections: [(&[&str], &str, Probe); 5] = [
        (
            &["database", "resources"],
            "resources",
            probe::<model::ResourceDef>,
        ),
        (&["guards"], "guards", probe::<model::HookDef>),
        (&["actions"], "actions", probe::<model::HookDef>),
        (&["machines"], "machines", probe::<model::MachineDef>),
        (&["jobs"], "jobs", probe::<model::JobDef>),
    ];
    for (path, section, check) in item_sections {
        let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node_mut(root, path)
        else {
            continue;
        };
        entries.retain(|(key, node)| {
            let found = every_error(node, check, &sink);
            if found.is_empty() {
                return true;
            }
            errors.extend(found);
            broken.items.insert((section.to_string(), key.name.clone()));
            false
        });
    }
    let whole_sections: [(&str, Probe); 7] = [
        ("version", probe::<u32>),
        ("database", probe::<model::DatabaseConfig>),
        ("stateMachine", probe::<model::StateMachineConfig>),
        ("backup", probe::<Option<model::BackupConfig>>),
        ("cache", probe::<Option<model::CacheConfig>>),
        ("scheduler", probe::<model::SchedulerConfig>),
        ("server", probe::<model::ServerConfig>),
    ];
    if let Value::Map(entries) = &mut root.value {
        entries.retain(|(key, node)| {
            let Some((_, check)) = whole_sections.iter().find(|(n, _)| *n == key.name) else {
                return true;
            };
            let found = every_error(node, *check, &sink);
            if found.is_empty() {
                return true;
            }
            errors.extend(found);
            broken.sections.insert(key.name.clone());
            false
        });
    }
    let manifest = match Manifest::deserialize(NodeDe::new(root, &sink)) {
        Ok(m) => Some(m),
        Err(e) => {
            let removed_required = e.code == "manifest::missing_key"
                && broken
                    .sections
                    .iter()
                    .any(|s| e.message.contains(&format!("`{s}`")));
            if !removed_required {
                errors.push(e.into_diagnostic(Span::new(root_span.start, root_span.start)));
            }
            None
        }
    };
    let mut diagnostics = sink.into_inner();
    diagnostics.append(&mut errors);
    (diagnostics, manifest, broken)
}

type Probe = fn(&Node, &Sink) -> Result<(), DeError>;

/// Most errors a broken item reports before the rest is left unsaid.
const MAX_ERRORS_PER_ITEM: usize = 32;

/// Every error in one item, not only the first: serde stops at the first bad value, so the
/// entry it came from is removed from a copy of the item and the item read again, until it
/// reads or the error is not inside any entry. A required key removed that way is not then
/// reported as missing.
fn every_error(node: &Node, check: Probe, sink: &Sink) -> Vec<Diagnostic> {
    let Err(first) = check(node, sink) else {
        return Vec::new();
    };
    let mut node = node.clone();
    let mut removed: Vec<(Span, String)> = Vec::new();
    let mut found = Vec::new();
    let mut next = Some(first);
    while let Some(e) = next.take() {
        let span = e.span.unwrap_or(node.span);
        let consequence = e.code == "manifest::missing_key"
            && removed
                .iter()
                .any(|(map, key)| *map == span && e.message.contains(&format!("`{key}`")));
        if !consequence {
            found.push(e.into_diagnostic(node.span));
        }
        if found.len() >= MAX_ERRORS_PER_ITEM {
            break;
        }
        let Some(entry) = remove_entry_containing(&mut node, span) else {
            break;
        };
        removed.push(entry);
        next = check(&node, sink).err();
    }
    found
}

/// Removes the innermost mapping entry (or list item) that holds `span`, returning the span of
/// the mapping it was in and its key. None when no entry holds it (the error is the node's own).
fn remove_entry_containing(node: &mut Node, span: Span) -> Option<(Span, String)> {
    let holds = |outer: Span| outer.start <= span.start && span.end <= outer.end && outer != span;
    let own_span = node.span;
    match &mut node.value {
        Value::Map(entries) => {
            let at = entries.iter().position(|(key, child)| {
                holds(child.span) || child.span == span || key.span == span || holds(key.span)
            })?;
            if let Some(inner) = remove_entry_containing(&mut entries[at].1, span) {
                return Some(inner);
            }
            let (key, _) = entries.remove(at);
            Some((own_span, key.name))
        }
        Value::Seq(items) => {
            let at = items
                .iter()
                .position(|child| holds(child.span) || child.span == span)?;
            if let Some(inner) = remove_entry_containing(&mut items[at], span) {
                return Some(inner);
            }
            items.remove(at);
            Some((own_span, String::new()))
        }
        _ => None,
    }
}

fn node_mut<'a>(root: &'a mut Node, path: &[&str]) -> Option<&'a mut Node> {
    let mut node = root;
    for seg in path {
        let Value::Map(entries) = &mut node.value else {
            return None;
        };
        node = entries
            .iter_mut()
            .find(|(k, _)| k.name == *seg)
            .map(|(_, n)| n)?;
    }
    Some(node)
}

/// Turns the legacy backup `destinations: [{type: …}]` form into the `multi` driver, fills the
/// typed backup, key and cache targets, and turns an empty API token into none.
fn normalize(m: &mut Manifest) {
    if let Some(backup) = &mut m.backup {
        if let Some(legacy) = backup.destinations.take() {
            backup.driver = model::BackupDriver::Multi;
            backup
                .config
                .strategy
                .get_or_insert(model::MultiStrategy::All);
            backup.config.destinations = Some(
                legacy
                    .into_iter()
                    .map(|d| model::BackupDestination {
                        driver: d.kind,
                        config: model::BackupDriverConfig {
                            path: d.path,
                            permissions: d.permissions,
                            directory_permissions: d.directory_permissions,
                            bucket: d.bucket,
                            storage_class: d.storage_class,
                            server_side_encryption: d.server_side_encryption,
                            kms_key_id: d.kms_key_id,
                            ..Default::default()
                        },
                    })
                    .collect(),
            );
        }
        if backup.driver == model::BackupDriver::Multi {
            backup
                .config
                .strategy
                .get_or_insert(model::MultiStrategy::All);
        }
        backup.target = model::BackupTarget::from_config(backup.driver, &backup.config);
        if let Some(enc) = &mut backup.encryption {
            enc.source = model::KeySource::from_config(enc);
        }
    }
    if let Some(cache) = &mut m.cache {
        cache.target = model::CacheTarget::from_config(cache);
    }
    if m.server
        .token
        .as_ref()
        .is_some_and(crate::types::Secret::is_empty)
    {
        m.server.token = None;
    }
}

fn dedupe(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = std::collections::HashSet::new();
    diagnostics
        .into_iter()
        .filter(|d| seen.insert((d.code, d.span, d.message.clone())))
        .collect()
}

/// Lower-case hex of bytes (digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 a manifest is known by (`CheckedManifest::sha256`): of its text as read. Reload
/// compares file contents with the same function.
pub fn content_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
