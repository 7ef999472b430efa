//! Environment interpolation: `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and the `$${` escape,
//! applied to string values of the parsed tree only. It never sees the raw text, so a variable's
//! value can never add keys or structure to the manifest. Every problem in the file is reported,
//! not only the first.

use super::diagnostic::Diagnostic;
use super::tree::{Node, Value};

/// Where variable values come from; tests pass a fixed map instead of the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Replaces every interpolation in the tree's string values, collecting one diagnostic per
/// problem.
/// Values that could not be resolved keep their `${…}` text; their spans are recorded in
/// `unresolved` so later rules do not report the same value again.
pub fn interpolate(
    node: &mut Node,
    env: &dyn Env,
    diagnostics: &mut Vec<Diagnostic>,
    unresolved: &mut Vec<super::diagnostic::Span>,
) {
    match &mut node.value {
        Value::Str { text, interpolated } => {
            if !text.contains('$') {
                return;
            }
            match expand(text, env) {
                Ok(Some(expanded)) => {
                    *text = expanded;
                    *interpolated = true;
                }
                Ok(None) => {}
                Err(problems) => {
                    unresolved.push(node.span);
                    diagnostics.extend(problems.into_iter().map(|p| p.at(node.span)));
                }
            }
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|n| interpolate(n, env, diagnostics, unresolved)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, n)| interpolate(n, env, diagnostics, unresolved)),
        _ => {}
    }
}

enum Problem {
    Missing(String),
    Required(String, String),
    Malformed(String),
}

impl Problem {
    fn at(self, span: super::diagnostic::Span) -> Diagnostic {
        match self {
            Problem::Missing(name) => Diagnostic::error(
                "manifest::missing_env",
                span,
                format!("environment variable `{name}` is not set"),
            )
            .with_help(format!(
                "set {name}, or give a default with `${{{name}:-value}}`"
            )),
            Problem::Required(name, message) => Diagnostic::error(
                "manifest::missing_env",
                span,
                format!("environment variable `{name}` is not set: {message}"),
            )
            .with_help(format!("set {name} before running")),
            Problem::Malformed(why) => {
                Diagnostic::error("manifest::bad_interpolation", span, why).with_help(
                    "write `${NAME}`, `${NAME:-default}` or `${NAME:?message}`; `$${` is a literal `${`",
                )
            }
        }
    }
}

/// Expands one string; Ok(None) when it holds no interpolation (only escapes are unescaped then
/// too, so None means "unchanged").
fn expand(text: &str, env: &dyn Env) -> Result<Option<String>, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut changed = false;
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            changed = true;
            rest = tail;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(close) = body_start.find('}') else {
            problems.push(Problem::Malformed(format!(
                "`{after}` opens `${{` without a closing `}}`"
            )));
            break;
        };
        let body = &body_start[..close];
        rest = &body_start[close + 1..];
        changed = true;
        let (name, op) = split_body(body);
        if !is_var_name(name) {
            problems.push(Problem::Malformed(format!(
                "`${{{body}}}` does not name a variable (letters, digits and `_`, not starting with a digit)"
            )));
            continue;
        }
        let value = env.var(name).filter(|v| !v.is_empty());
        match (value, op) {
            (Some(v), _) => out.push_str(&v),
            (None, Some((":-", default))) => out.push_str(default),
            (None, Some((":?", message))) => {
                let message = if message.is_empty() {
                    "it is required".to_string()
                } else {
                    message.to_string()
                };
                problems.push(Problem::Required(name.to_string(), message));
            }
            (None, _) => {
                if env.var(name).is_some() && op.is_none() {
                    // Set but empty: an empty value is a value.
                    continue;
                }
                problems.push(Problem::Missing(name.to_string()));
            }
        }
    }
    out.push_str(rest);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(changed.then_some(out))
}

fn split_body(body: &str) -> (&str, Option<(&str, &str)>) {
    for op in [":-", ":?"] {
        if let Some(i) = body.find(op) {
            return (&body[..i], Some((op, &body[i + 2..])));
        }
    }
    (body, None)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<Option<String>, usize> {
        expand(text, &env).map_err(|p| p.len())
    }

    #[test]
    fn expands_set_default_and_escape() {
        assert_eq!(run("a ${HOST} b"), Ok(Some("a db.local b".into())));
        assert_eq!(run("${NOPE:-x:y}"), Ok(Some("x:y".into())));
        assert_eq!(run("${EMPTY:-fallback}"), Ok(Some("fallback".into())));
        assert_eq!(run("${EMPTY}"), Ok(Some(String::new())));
        assert_eq!(run("$${HOST}"), Ok(Some("${HOST}".into())));
        assert_eq!(run("cost $5"), Ok(None));
    }

    #[test]
    fn reports_every_missing_variable() {
        assert_eq!(run("${A}-${B}-${HOST}-${C:?needed}"), Err(3));
        assert_eq!(run("${1BAD}"), Err(1));
        assert_eq!(run("${OPEN"), Err(1));
    }
}
