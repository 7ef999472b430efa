//! The hook runner: resolves a hook (a named one, a built-in, or an inline one), renders its
//! templates, and runs it — a built-in in process, a shell hook as a process — with its timeout
//! and retries. One runner serves guards, actions, jobs and plugin callbacks of every plugin.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Map, Value};

use super::builtins::{self, BuiltinKind};
use super::input::{GuardDecision, HookInput};
use super::shell::{self, ShellRun};
use super::template::{self, TemplateError};
use crate::db::query::Filter;
use crate::db::{Database, ListOptions};
use crate::manifest::model::{HookDef, HookRef, Manifest};
use crate::manifest::types::Command;
use crate::types::retry::RetryPolicy;

/// What the state machine plugin offers to `machine.send` and `machine.sendAll`.
#[async_trait]
pub trait MachineOps: Send + Sync {
    async fn send(
        &self,
        machine: &str,
        entity: &str,
        event: &str,
        context: Value,
    ) -> Result<Value, String>;
    async fn send_all(
        &self,
        machine: &str,
        state: &str,
        event: &str,
        older_than: Option<Duration>,
        context: Value,
    ) -> Result<Value, String>;
}

/// What the backup plugin offers to `backup.run` and `backup.prune`.
#[async_trait]
pub trait BackupOps: Send + Sync {
    async fn run(&self, kind: &str, resources: Option<Vec<String>>) -> Result<Value, String>;
    async fn prune(&self, dry_run: bool) -> Result<Value, String>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("hook `{0}` is not defined")]
    Unknown(String),
    #[error("hook `{hook}`: {source}")]
    Template { hook: String, source: TemplateError },
    #[error("hook `{hook}`: cannot run `{program}`: {message}")]
    Spawn {
        hook: String,
        program: String,
        message: String,
    },
    #[error("hook `{hook}` timed out after {after:?}")]
    Timeout { hook: String, after: Duration },
    #[error("hook `{hook}` failed (exit {code}): {output}")]
    Failed {
        hook: String,
        code: String,
        output: String,
    },
    #[error("hook `{hook}`: {message}")]
    Builtin { hook: String, message: String },
}

/// A hook ready to run: its name (or `inline`) and definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedHook {
    pub name: String,
    pub def: HookDef,
}

/// Runs hooks for one manifest.
pub struct HookRunner {
    guards: std::sync::RwLock<indexmap::IndexMap<String, HookDef>>,
    actions: std::sync::RwLock<indexmap::IndexMap<String, HookDef>>,
    base_dir: PathBuf,
    db: Database,
    /// Timeout of a shell hook that sets none.
    default_timeout: Duration,
    /// Time between SIGTERM and SIGKILL of a timed-out hook.
    grace: Duration,
    machines: OnceLock<Arc<dyn MachineOps>>,
    backup: std::sync::RwLock<Option<Arc<dyn BackupOps>>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HookRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HookRunner({} guards, {} actions)",
            self.guards.read().map(|g| g.len()).unwrap_or(0),
            self.actions.read().map(|a| a.len()).unwrap_or(0)
        )
    }
}

impl HookRunner {
    pub fn new(manifest: &Manifest, base_dir: impl Into<PathBuf>, db: Database) -> Self {
        Self {
            guards: std::sync::RwLock::new(manifest.guards.clone()),
            actions: std::sync::RwLock::new(manifest.actions.clone()),
            base_dir: base_dir.into(),
            db,
            default_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(2),
            machines: OnceLock::new(),
            backup: std::sync::RwLock::new(None),
            http: reqwest::Client::new(),
        }
    }

    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Plugins are built after the runner (their hooks need it); they register here.
    pub fn set_machines(&self, ops: Arc<dyn MachineOps>) {
        let _ = self.machines.set(ops);
    }

    /// A reload's new named guards and actions; the next resolution uses them.
    pub fn set_hooks(&self, manifest: &Manifest) {
        *self.guards.write().unwrap_or_else(|e| e.into_inner()) = manifest.guards.clone();
        *self.actions.write().unwrap_or_else(|e| e.into_inner()) = manifest.actions.clone();
    }

    /// The backup plugin for `backup.*` (replaced when a reload reconfigures it).
    pub fn set_backup(&self, ops: Arc<dyn BackupOps>) {
        *self.backup.write().unwrap_or_else(|e| e.into_inner()) = Some(ops);
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The hook a name or an inline definition stands for, as a guard or as an action.
    pub fn resolve(&self, hook: &HookRef, kind: BuiltinKind) -> Result<ResolvedHook, HookError> {
        match hook {
            HookRef::Inline(def) => Ok(ResolvedHook {
                name: "inline".into(),
                def: (**def).clone(),
            }),
            HookRef::Named(name) => {
                let defined = match kind {
                    BuiltinKind::Guard => &self.guards,
                    BuiltinKind::Action => &self.actions,
                }
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(name)
                .cloned();
                if let Some(def) = defined {
                    return Ok(ResolvedHook {
                        name: name.clone(),
                        def: def.clone(),
                    });
                }
                match builtins::lookup(name) {
                    Some(spec) if spec.kind == kind => Ok(ResolvedHook {
                        name: name.clone(),
                        def: HookDef {
                            builtin: Some(name.clone()),
                            ..Default::default()
                        },
                    }),
                    _ => Err(HookError::Unknown(name.clone())),
                }
            }
        }
    }

    /// Runs a guard. Errors (a failing or timed-out hook) are returned so callers can report
    /// them; a caller that only needs a decision treats an error as a denial.
    pub async fn guard(
        &self,
        hook: &ResolvedHook,
        input: &HookInput,
    ) -> Result<GuardDecision, HookError> {
        match self.execute(hook, input, true).await? {
            Outcome::Decision(d) => Ok(d),
            Outcome::Value(_) => Ok(GuardDecision::Allow),
        }
    }

    /// Runs an action, a job or a callback; returns its result.
    pub async fn action(&self, hook: &ResolvedHook, input: &HookInput) -> Result<Value, HookError> {
        match self.execute(hook, input, false).await? {
            Outcome::Value(v) => Ok(v),
            Outcome::Decision(d) => Ok(json!({ "allowed": d.allowed() })),
        }
    }

    async fn execute(
        &self,
        hook: &ResolvedHook,
        input: &HookInput,
        as_guard: bool,
    ) -> Result<Outcome, HookError> {
        let policy = RetryPolicy::new(hook.def.retries.unwrap_or(0));
        let mut input = input.clone();
        // A caller that retries on its own (the scheduler) says which attempt this is.
        let first = input.attempt.max(1);
        let mut attempt = first;
        loop {
            input.attempt = attempt;
            let result = match (&hook.def.builtin, &hook.def.run) {
                (Some(name), _) => {
                    self.builtin(&hook.name, name, hook.def.with.as_ref(), &input)
                        .await
                }
                (None, Some(cmd)) => self.shell(hook, cmd, &input, as_guard).await,
                (None, None) => Err(HookError::Builtin {
                    hook: hook.name.clone(),
                    message: "the hook has neither `builtin` nor `run`".into(),
                }),
            };
            match result {
                Err(e) if attempt - first + 1 < policy.attempts() && retryable(&e) => {
                    tracing::warn!(hook = %hook.name, attempt, error = %e, "hook failed; retrying");
                    tokio::time::sleep(policy.delay(attempt - first + 1)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn shell(
        &self,
        hook: &ResolvedHook,
        cmd: &Command,
        input: &HookInput,
        as_guard: bool,
    ) -> Result<Outcome, HookError> {
        let now = Utc::now();
        let template_error = |source| HookError::Template {
            hook: hook.name.clone(),
            source,
        };
        let argv = match cmd {
            Command::Argv(argv) => argv
                .iter()
                .map(|a| template::render_arg(a, input, now))
                .collect::<Result<Vec<_>, _>>()
                .map_err(template_error)?,
            // A shell string is never rendered: values reach it only as S3DB_* variables.
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        };
        let mut env = input.env();
        for (k, v) in &hook.def.env {
            env.push((
                k.clone(),
                template::render_arg(v, input, now).map_err(template_error)?,
            ));
        }
        let timeout = hook
            .def
            .timeout
            .map_or(self.default_timeout, |t| t.as_std());
        let stdin = serde_json::to_vec(input).unwrap_or_default();
        let program = argv.first().cloned().unwrap_or_default();
        let out = shell::run(ShellRun {
            argv,
            env,
            cwd: &self.base_dir,
            stdin,
            timeout,
            grace: self.grace,
        })
        .await
        .map_err(|e| HookError::Spawn {
            hook: hook.name.clone(),
            program: program.clone(),
            message: e.to_string(),
        })?;
        tracing::debug!(hook = %hook.name, code = ?out.code, ms = out.duration.as_millis() as u64, output = %out.text(), "shell hook finished");
        if out.timed_out {
            return Err(HookError::Timeout {
                hook: hook.name.clone(),
                after: timeout,
            });
        }
        match (out.code, as_guard) {
            (Some(0), true) => Ok(Outcome::Decision(GuardDecision::Allow)),
            (Some(1), true) => {
                let text = out.text();
                let reason = if text.is_empty() {
                    format!("denied by `{}`", hook.name)
                } else {
                    text
                };
                Ok(Outcome::Decision(GuardDecision::Deny { reason }))
            }
            (Some(0), false) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let trimmed = stdout.trim();
                Ok(Outcome::Value(if trimmed.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(trimmed)
                        .unwrap_or_else(|_| Value::String(trimmed.to_string()))
                }))
            }
            (code, _) => Err(HookError::Failed {
                hook: hook.name.clone(),
                code: code.map_or_else(|| "by signal".to_string(), |c| c.to_string()),
                output: out.text(),
            }),
        }
    }

    async fn builtin(
        &self,
        hook: &str,
        name: &str,
        with: Option<&Map<String, Value>>,
        input: &HookInput,
    ) -> Result<Outcome, HookError> {
        let fail = |message: String| HookError::Builtin {
            hook: hook.to_string(),
            message,
        };
        let raw = Value::Object(with.cloned().unwrap_or_default());
        let params = template::render_value(&raw, input, Utc::now()).map_err(|source| {
            HookError::Template {
                hook: hook.to_string(),
                source,
            }
        })?;
        let p = Params {
            map: params.as_object().cloned().unwrap_or_default(),
            builtin: name,
        };
        let db_error = |e: crate::db::DbError| fail(e.to_string());
        match name {
            "always" => Ok(Outcome::Decision(GuardDecision::Allow)),
            "never" => Ok(Outcome::Decision(GuardDecision::Deny {
                reason: p
                    .opt_str("reason")
                    .unwrap_or_else(|| format!("denied by `{hook}`")),
            })),
            "context.matches" => {
                let filter = Filter::parse(p.get("where").map_err(fail)?)
                    .map_err(|e| fail(e.to_string()))?;
                let context = input.context.as_object().cloned().unwrap_or_default();
                Ok(Outcome::Decision(if filter.matches(&context) {
                    GuardDecision::Allow
                } else {
                    GuardDecision::Deny {
                        reason: p
                            .opt_str("reason")
                            .unwrap_or_else(|| "the event context does not match".into()),
                    }
                }))
            }
            "record.check" => {
                let resource = self
                    .db
                    .resource(&p.str("resource").map_err(fail)?)
                    .map_err(db_error)?;
                let id = p.str("id").map_err(fail)?;
                let record = resource.get_cached(&id).await.map_err(db_error)?;
                let filter = match p.map.get("where") {
                    Some(w) => Some(Filter::parse(w).map_err(|e| fail(e.to_string()))?),
                    None => None,
                };
                let reason = |default: String| p.opt_str("reason").unwrap_or(default);
                Ok(Outcome::Decision(match record {
                    None => GuardDecision::Deny {
                        reason: reason(format!("{}/{id} does not exist", resource.name())),
                    },
                    Some(r) if filter.as_ref().is_some_and(|f| !f.matches(&r.data)) => {
                        GuardDecision::Deny {
                            reason: reason(format!("{}/{id} does not match", resource.name())),
                        }
                    }
                    Some(_) => GuardDecision::Allow,
                }))
            }
            "log" => {
                let message = p
                    .opt_str("message")
                    .unwrap_or_else(|| format!("hook {hook}"));
                let fields = p.map.get("fields").cloned().unwrap_or(Value::Null);
                match p.opt_str("level").as_deref() {
                    Some("error") => tracing::error!(hook, %fields, "{message}"),
                    Some("warn") | Some("warning") => tracing::warn!(hook, %fields, "{message}"),
                    Some("debug") => tracing::debug!(hook, %fields, "{message}"),
                    _ => tracing::info!(hook, %fields, "{message}"),
                }
                Ok(Outcome::Value(json!({ "logged": message })))
            }
            "record.insert" => {
                let resource = self
                    .db
                    .resource(&p.str("resource").map_err(fail)?)
                    .map_err(db_error)?;
                let data = p.object("data").map_err(fail)?;
                let id = p.opt_str("id");
                let r = resource
                    .insert(data, id.as_deref())
                    .await
                    .map_err(db_error)?;
                Ok(Outcome::Value(r.to_json()))
            }
            "record.update" => {
                let resource = self
                    .db
                    .resource(&p.str("resource").map_err(fail)?)
                    .map_err(db_error)?;
                let id = p.str("id").map_err(fail)?;
                let set = p.object("set").map_err(fail)?;
                let r = if p.map.get("upsert") == Some(&Value::Bool(true))
                    && !resource.exists(&id).await.map_err(db_error)?
                {
                    resource.upsert(&id, set).await
                } else {
                    resource.update(&id, &set, None).await
                }
                .map_err(db_error)?;
                Ok(Outcome::Value(r.to_json()))
            }
            "record.delete" => {
                let resource = self
                    .db
                    .resource(&p.str("resource").map_err(fail)?)
                    .map_err(db_error)?;
                let id = p.str("id").map_err(fail)?;
                let deleted = resource.delete(&id, None).await.map_err(db_error)?;
                Ok(Outcome::Value(json!({ "deleted": deleted, "id": id })))
            }
            "resource.deleteWhere" => {
                let resource = self
                    .db
                    .resource(&p.str("resource").map_err(fail)?)
                    .map_err(db_error)?;
                let filter = Filter::parse(p.get("where").map_err(fail)?)
                    .map_err(|e| fail(e.to_string()))?;
                let limit = p
                    .map
                    .get("limit")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize);
                let ids: Vec<String> = resource
                    .list(ListOptions {
                        filter: Some(filter),
                        limit,
                        ..Default::default()
                    })
                    .await
                    .map_err(db_error)?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let deleted = resource.delete_many(&ids).await.map_err(db_error)?;
                Ok(Outcome::Value(json!({ "deleted": deleted })))
            }
            "machine.send" | "machine.sendAll" => {
                let ops = self
                    .machines
                    .get()
                    .ok_or_else(|| fail("the state machine plugin is not running".into()))?;
                let machine = p.str("machine").map_err(fail)?;
                let event = p.str("event").map_err(fail)?;
                let context = p.map.get("context").cloned().unwrap_or_else(|| json!({}));
                let result = if name == "machine.send" {
                    ops.send(&machine, &p.str("entity").map_err(fail)?, &event, context)
                        .await
                } else {
                    let older = match p.opt_str("olderThan") {
                        Some(t) => {
                            Some(t.parse::<crate::types::Duration>().map_err(fail)?.as_std())
                        }
                        None => None,
                    };
                    ops.send_all(
                        &machine,
                        &p.str("state").map_err(fail)?,
                        &event,
                        older,
                        context,
                    )
                    .await
                };
                result.map(Outcome::Value).map_err(fail)
            }
            "backup.run" | "backup.prune" => {
                let ops = self
                    .backup
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .ok_or_else(|| fail("the backup plugin is not running".into()))?;
                let result = if name == "backup.run" {
                    let resources = match p.map.get("resources") {
                        Some(Value::Array(items)) => Some(
                            items
                                .iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect(),
                        ),
                        _ => None,
                    };
                    ops.run(
                        &p.opt_str("type").unwrap_or_else(|| "full".into()),
                        resources,
                    )
                    .await
                } else {
                    ops.prune(p.map.get("dryRun") == Some(&Value::Bool(true)))
                        .await
                };
                result.map(Outcome::Value).map_err(fail)
            }
            "webhook" => self
                .webhook(hook, &p, input)
                .await
                .map(Outcome::Value)
                .map_err(fail),
            other => Err(fail(format!("`{other}` is not a built-in"))),
        }
    }

    async fn webhook(
        &self,
        hook: &str,
        p: &Params<'_>,
        input: &HookInput,
    ) -> Result<Value, String> {
        let url = p.str("url")?;
        let timeout = match p.opt_str("timeout") {
            Some(t) => t.parse::<crate::types::Duration>()?.as_std(),
            None => match p.map.get("timeout").and_then(Value::as_u64) {
                Some(ms) => Duration::from_millis(ms),
                None => Duration::from_secs(10),
            },
        };
        let policy = RetryPolicy::new(
            p.map
                .get("retries")
                .and_then(Value::as_u64)
                .map_or(2, |n| n as u32),
        );
        let mut last = String::new();
        for attempt in 1..=policy.attempts() {
            let mut req = self.http.post(&url).timeout(timeout).json(input);
            if let Some(Value::Object(headers)) = p.map.get("headers") {
                for (k, v) in headers {
                    req = req.header(k, v.as_str().map_or_else(|| v.to_string(), str::to_string));
                }
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    return Ok(serde_json::from_str(&body)
                        .unwrap_or_else(|_| json!({ "status": status, "body": body })));
                }
                Ok(resp) if resp.status().is_client_error() => {
                    return Err(format!("{url} answered {}", resp.status()));
                }
                Ok(resp) => last = format!("{url} answered {}", resp.status()),
                Err(e) => last = format!("POST {url} failed: {}", e.without_url()),
            }
            if attempt < policy.attempts() {
                tracing::warn!(hook, attempt, error = %last, "webhook failed; retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
            }
        }
        Err(last)
    }
}

/// The kind of failure worth trying again: a process that failed or timed out. A template or
/// definition error fails the same way every time.
fn retryable(e: &HookError) -> bool {
    matches!(e, HookError::Failed { .. } | HookError::Timeout { .. })
}

enum Outcome {
    Decision(GuardDecision),
    Value(Value),
}

/// A built-in's rendered parameters.
struct Params<'a> {
    map: Map<String, Value>,
    builtin: &'a str,
}

impl Params<'_> {
    fn get(&self, key: &str) -> Result<&Value, String> {
        self.map
            .get(key)
            .ok_or_else(|| format!("`{}` needs `{key}`", self.builtin))
    }

    fn str(&self, key: &str) -> Result<String, String> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!(
                "`{}`: `{key}` must be a string, got {other}",
                self.builtin
            )),
        }
    }

    fn opt_str(&self, key: &str) -> Option<String> {
        self.str(key).ok()
    }

    fn object(&self, key: &str) -> Result<Map<String, Value>, String> {
        match self.get(key)? {
            Value::Object(m) => Ok(m.clone()),
            other => Err(format!(
                "`{}`: `{key}` must be an object, got {other}",
                self.builtin
            )),
        }
    }
}
