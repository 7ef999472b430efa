//! Predicates (`{ quantity: { $gte: 2 }, status: { $in: [a, b] } }`) and update operators
//! (`$increment`, `$decrement`, `$unset`): the one evaluator used by resource listings, the
//! `record.check` and `context.matches` guards, and `resource.deleteWhere`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    Lt(Value),
    Lte(Value),
    Gt(Value),
    Gte(Value),
    In(Vec<Value>),
    Exists(bool),
}

/// A conjunction of conditions on fields (dotted paths reach into nested objects).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    conditions: Vec<(String, Op)>,
}

const OPERATORS: &[&str] = &["$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$exists"];

impl Filter {
    /// Parses `{ field: value | { $op: value, … }, … }`; a plain value means `$eq`.
    pub fn parse(value: &Value) -> Result<Self, QueryError> {
        let Value::Object(fields) = value else {
            return Err(QueryError(format!(
                "a filter is an object of fields, got {value}"
            )));
        };
        let mut conditions = Vec::new();
        for (field, cond) in fields {
            match cond {
                Value::Object(ops) if ops.keys().any(|k| k.starts_with('$')) => {
                    for (op, arg) in ops {
                        conditions.push((field.clone(), parse_op(field, op, arg)?));
                    }
                }
                other => conditions.push((field.clone(), Op::Eq(other.clone()))),
            }
        }
        Ok(Self { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        self.conditions.iter().all(|(field, op)| {
            let value = lookup(record, field);
            match op {
                Op::Exists(want) => value.is_some_and(|v| !v.is_null()) == *want,
                Op::Eq(v) => value.is_some_and(|x| equal(x, v)),
                Op::Ne(v) => !value.is_some_and(|x| equal(x, v)),
                Op::In(vs) => value.is_some_and(|x| vs.iter().any(|v| equal(x, v))),
                Op::Lt(v) => order(value, v) == Some(Ordering::Less),
                Op::Lte(v) => matches!(order(value, v), Some(Ordering::Less | Ordering::Equal)),
                Op::Gt(v) => order(value, v) == Some(Ordering::Greater),
                Op::Gte(v) => matches!(order(value, v), Some(Ordering::Greater | Ordering::Equal)),
            }
        })
    }
}

fn parse_op(field: &str, op: &str, arg: &Value) -> Result<Op, QueryError> {
    Ok(match op {
        "$eq" => Op::Eq(arg.clone()),
        "$ne" => Op::Ne(arg.clone()),
        "$lt" => Op::Lt(arg.clone()),
        "$lte" => Op::Lte(arg.clone()),
        "$gt" => Op::Gt(arg.clone()),
        "$gte" => Op::Gte(arg.clone()),
        "$in" => match arg {
            Value::Array(items) => Op::In(items.clone()),
            other => {
                return Err(QueryError(format!(
                    "`{field}`: $in takes a list, got {other}"
                )))
            }
        },
        "$exists" => match arg {
            Value::Bool(b) => Op::Exists(*b),
            other => {
                return Err(QueryError(format!(
                    "`{field}`: $exists takes true or false, got {other}"
                )))
            }
        },
        other => {
            let hint = crate::types::suggest::did_you_mean(other, OPERATORS.iter().copied())
                .unwrap_or_else(|| format!("operators: {}", OPERATORS.join(" ")));
            return Err(QueryError(format!(
                "`{field}`: unknown operator `{other}` ({hint})"
            )));
        }
    })
}

/// The value at a dotted path.
pub fn lookup<'a>(record: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = record.get(parts.next()?)?;
    for part in parts {
        value = match value {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A number written as a string (as templates render them) compares as a number.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(_), _) | (_, Value::Number(_)) => {
            matches!((as_number(a), as_number(b)), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

fn order(a: Option<&Value>, b: &Value) -> Option<Ordering> {
    let a = a?;
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => as_number(a)?.partial_cmp(&as_number(b)?),
    }
}

/// Applies a partial update: plain values replace fields; `{ $increment: n }` and
/// `{ $decrement: n }` change numbers (a missing field counts as 0); `{ $unset: true }` removes.
pub fn apply_update(
    record: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), QueryError> {
    for (field, change) in patch {
        if field == "id" {
            return Err(QueryError("a record's `id` cannot be changed".into()));
        }
        let op = match change {
            Value::Object(m) if m.len() == 1 && m.keys().all(|k| k.starts_with('$')) => {
                m.iter().next()
            }
            _ => None,
        };
        match op {
            Some((name, arg)) if name == "$increment" || name == "$decrement" => {
                let by = as_number(arg).ok_or_else(|| QueryError(format!("`{field}`: {name} takes a number, got {arg}")))?;
                let current = match record.get(field) {
                    None | Some(Value::Null) => 0.0,
                    Some(v) => as_number(v).ok_or_else(|| QueryError(format!("`{field}` is not a number ({v}), so it cannot be changed by {name}")))?,
                };
                let next = if name == "$increment" { current + by } else { current - by };
                record.insert(field.clone(), number(next));
            }
            Some((name, _)) if name == "$unset" => {
                record.remove(field);
            }
            Some((name, _)) if name == "$set" => {
                if let Some(v) = change.get("$set") {
                    record.insert(field.clone(), v.clone());
                }
            }
            Some((name, _)) => {
                return Err(QueryError(format!("`{field}`: unknown update operator `{name}` ($increment, $decrement, $set, $unset)")))
            }
            None => {
                record.insert(field.clone(), change.clone());
            }
        }
    }
    Ok(())
}

/// Whole numbers stay integers in JSON.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn operators_compare_as_documented() {
        let r = rec(json!({ "q": 5, "s": "b", "nested": { "x": 1 }, "nil": null }));
        let yes = |f: Value| assert!(Filter::parse(&f).unwrap().matches(&r), "{f}");
        let no = |f: Value| assert!(!Filter::parse(&f).unwrap().matches(&r), "{f}");
        yes(json!({ "q": 5 }));
        yes(json!({ "q": { "$gte": 5, "$lt": 6 } }));
        yes(json!({ "q": { "$gte": "5" } }));
        no(json!({ "q": { "$gt": 5 } }));
        yes(json!({ "s": { "$in": ["a", "b"] } }));
        no(json!({ "s": { "$in": ["c"] } }));
        yes(json!({ "s": { "$ne": "c" } }));
        yes(json!({ "nested.x": 1 }));
        yes(
            json!({ "missing": { "$exists": false }, "nil": { "$exists": false }, "q": { "$exists": true } }),
        );
        no(json!({ "missing": { "$lt": 3 } }));
        assert!(Filter::parse(&json!({ "q": { "$gte_": 1 } })).is_err());
    }

    #[test]
    fn updates_apply_operators() {
        let mut r = rec(json!({ "q": 5, "gone": 1 }));
        apply_update(&mut r, &rec(json!({ "q": { "$decrement": 2 }, "n": { "$increment": 1 }, "gone": { "$unset": true }, "s": "x" }))).unwrap();
        assert_eq!(Value::Object(r), json!({ "q": 3, "n": 1, "s": "x" }));
        let mut r = rec(json!({ "q": "text" }));
        assert!(apply_update(&mut r, &rec(json!({ "q": { "$increment": 1 } }))).is_err());
        assert!(apply_update(&mut r, &rec(json!({ "id": "other" }))).is_err());
    }
}
