//! The template renderer: `{{context.x}}`, `{{entity}}`, `{{event}}`, `{{from}}`, `{{to}}`,
//! `{{job}}`, `{{now}}`, `{{now-24h}}`… Lookups and time offsets only, no logic. A string that is
//! exactly one `{{…}}` becomes that value as JSON (a number stays a number); in a longer string
//! each value is written as text. The result is always one value — one argv element, one JSON
//! value — never text spliced into a shell command. An unknown variable is an error.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::input::HookInput;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template `{template}`: {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: TemplateProblem,
}

/// What is wrong with a template, or with rendering it for one input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateProblem {
    #[error("`{{{{` without a closing `}}}}`")]
    Unclosed,
    #[error("unknown variable `{expr}` ({hint})")]
    Unknown { expr: String, hint: String },
    #[error("`now{spec}`: {reason}")]
    Offset { spec: String, reason: String },
    #[error("`{{{{{name}}}}}` has no value in a {kind} hook")]
    NoValue { name: String, kind: &'static str },
    #[error("{root} has no `{path}`")]
    NoPath { root: String, path: String },
}

/// The variables a template may name (besides `context.PATH` and `stats.PATH`).
pub const VARIABLES: &[&str] = &[
    "context",
    "entity",
    "event",
    "from",
    "to",
    "job",
    "machine",
    "hook",
    "kind",
    "attempt",
    "scheduledTime",
    "now",
    "stats",
];

/// The `{{…}}` expressions of a template, or why it is malformed.
fn expressions(template: &str) -> Result<Vec<(usize, usize, &str)>, TemplateProblem> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| i + from) {
        let Some(close) = template[open + 2..].find("}}").map(|i| i + open + 2) else {
            return Err(TemplateProblem::Unclosed);
        };
        out.push((open, close + 2, template[open + 2..close].trim()));
        from = close + 2;
    }
    Ok(out)
}

/// Checks a template's syntax and variable names without an input (for `validate`).
pub fn check(template: &str) -> Result<(), TemplateProblem> {
    for (_, _, expr) in expressions(template)? {
        let root = expr.split(['.', '+', '-']).next().unwrap_or_default();
        if expr.is_empty() || !VARIABLES.contains(&root) {
            return Err(unknown(expr));
        }
        if root == "now" && expr != "now" {
            offset(&expr[3..])?;
        }
    }
    Ok(())
}

fn unknown(expr: &str) -> TemplateProblem {
    let (root, rest) = expr.split_once('.').map_or((expr, ""), |(r, p)| (r, p));
    let hint = crate::types::suggest::closest(root, VARIABLES.iter().copied())
        .map(|r| {
            if rest.is_empty() {
                format!("did you mean `{r}`?")
            } else {
                format!("did you mean `{r}.{rest}`?")
            }
        })
        .unwrap_or_else(|| {
            format!(
                "the variables are {}, context.PATH and now±DURATION",
                VARIABLES.join(", ")
            )
        });
    TemplateProblem::Unknown {
        expr: expr.to_string(),
        hint,
    }
}

fn offset(spec: &str) -> Result<chrono::Duration, TemplateProblem> {
    let bad = |reason: String| TemplateProblem::Offset {
        spec: spec.to_string(),
        reason,
    };
    let (sign, amount) = match spec.chars().next() {
        Some('-') => (-1, &spec[1..]),
        Some('+') => (1, &spec[1..]),
        _ => return Err(bad("write now-24h or now+30m".into())),
    };
    let d: crate::types::Duration = amount
        .trim()
        .parse()
        .map_err(|e: crate::types::DurationError| bad(e.reason))?;
    let d = chrono::Duration::from_std(d.as_std()).map_err(|e| bad(e.to_string()))?;
    Ok(d * sign)
}

fn lookup(input: &HookInput, expr: &str, now: DateTime<Utc>) -> Result<Value, TemplateProblem> {
    let absent = |name: &str| TemplateProblem::NoValue {
        name: name.to_string(),
        kind: input.kind.as_str(),
    };
    let text =
        |v: &Option<String>, name: &str| v.clone().map(Value::String).ok_or_else(|| absent(name));
    if let Some(rest) = expr.strip_prefix("now") {
        let t = if rest.is_empty() {
            now
        } else {
            now + offset(rest)?
        };
        return Ok(Value::String(crate::types::time::rfc3339(t)));
    }
    let (root, path) = expr.split_once('.').unwrap_or((expr, ""));
    match root {
        "context" | "stats" => {
            let base = if root == "context" {
                Some(&input.context)
            } else {
                input.stats.as_ref()
            };
            let mut v = base.ok_or_else(|| absent(root))?;
            if !path.is_empty() {
                for part in path.split('.') {
                    v = match v {
                        Value::Object(m) => m.get(part),
                        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                        _ => None,
                    }
                    .ok_or_else(|| TemplateProblem::NoPath {
                        root: root.to_string(),
                        path: path.to_string(),
                    })?;
                }
            }
            Ok(v.clone())
        }
        _ if !path.is_empty() => Err(unknown(expr)),
        "entity" => text(&input.entity, root),
        "event" => text(&input.event, root),
        "from" => text(&input.from, root),
        "to" => text(&input.to, root),
        "job" => text(&input.job, root),
        "machine" => text(&input.machine, root),
        "scheduledTime" => text(&input.scheduled_time, root),
        "hook" => Ok(Value::String(input.hook.clone())),
        "kind" => Ok(Value::String(input.kind.as_str().into())),
        "attempt" => Ok(Value::from(input.attempt)),
        _ => Err(unknown(expr)),
    }
}

/// Renders one template string.
pub fn render(
    template: &str,
    input: &HookInput,
    now: DateTime<Utc>,
) -> Result<Value, TemplateError> {
    let fail = |problem: TemplateProblem| TemplateError {
        template: template.to_string(),
        problem,
    };
    let exprs = expressions(template).map_err(fail)?;
    if exprs.is_empty() {
        return Ok(Value::String(template.to_string()));
    }
    if let [(start, end, expr)] = exprs[..] {
        if template[..start].trim().is_empty() && template[end..].trim().is_empty() {
            return lookup(input, expr, now).map_err(fail);
        }
    }
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for (start, end, expr) in exprs {
        out.push_str(&template[last..start]);
        match lookup(input, expr, now).map_err(fail)? {
            Value::String(s) => out.push_str(&s),
            other => out.push_str(&other.to_string()),
        }
        last = end;
    }
    out.push_str(&template[last..]);
    Ok(Value::String(out))
}

/// Renders every string inside a JSON value (object keys are left as written).
pub fn render_value(
    value: &Value,
    input: &HookInput,
    now: DateTime<Utc>,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render(s, input, now)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, input, now))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, input, now)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Renders a template to one argument: the value's text.
pub fn render_arg(
    template: &str,
    input: &HookInput,
    now: DateTime<Utc>,
) -> Result<String, TemplateError> {
    Ok(match render(template, input, now)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::input::HookKind;
    use serde_json::json;

    fn input() -> HookInput {
        let mut i = HookInput::new("notify", HookKind::Action);
        i.entity = Some("order-1".into());
        i.to = Some("shipped".into());
        i.context = json!({ "quantity": 2, "customer": { "name": "Ann" } });
        i
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_lone_expression_keeps_its_type_and_text_is_substituted() {
        assert_eq!(
            render("{{context.quantity}}", &input(), now()).unwrap(),
            json!(2)
        );
        assert_eq!(
            render(" {{ entity }} ", &input(), now()).unwrap(),
            json!("order-1")
        );
        assert_eq!(
            render(
                "{{entity}} -> {{to}} x{{context.quantity}}",
                &input(),
                now()
            )
            .unwrap(),
            json!("order-1 -> shipped x2")
        );
        assert_eq!(
            render("{{context.customer.name}}", &input(), now()).unwrap(),
            json!("Ann")
        );
        assert_eq!(render("plain", &input(), now()).unwrap(), json!("plain"));
    }

    #[test]
    fn now_takes_offsets() {
        assert_eq!(
            render("{{now}}", &input(), now()).unwrap(),
            json!("2026-03-29T12:00:00.000Z")
        );
        assert_eq!(
            render("{{now-24h}}", &input(), now()).unwrap(),
            json!("2026-03-28T12:00:00.000Z")
        );
        assert_eq!(
            render("{{now+30m}}", &input(), now()).unwrap(),
            json!("2026-03-29T12:30:00.000Z")
        );
    }

    #[test]
    fn unknown_and_absent_variables_are_errors() {
        for bad in [
            "{{entiy}}",
            "{{context.missing}}",
            "{{from}}",
            "{{job}}",
            "{{now-soon}}",
            "{{entity",
            "{{}}",
        ] {
            assert!(render(bad, &input(), now()).is_err(), "{bad}");
        }
        assert!(check("{{entiy}}")
            .unwrap_err()
            .to_string()
            .contains("did you mean `entity`?"));
        assert!(check("{{context.anything.at.all}} {{now-7d}}").is_ok());
    }
}
