//! The hook runner: resolves a hook (a named one, a built-in, or an inline one), renders its
//! templates, and runs it — a built-in in process, a shell hook as a process — with its timeout
//! and retries. One runner serves guards, actions, jobs and plugin callbacks of every plugin.

use std::path::PathBuf;
use std::sync::Arc;
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
use crate::manifest::model::{BuiltinCall, HookDef, HookRef, LogLevel, Manifest, Param, Text};
use crate::manifest::types::Command;
use crate::types::retry::RetryPolicy;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
    pub kind: String,
}

/// Hook calls that failed after their retries, for `/metrics` (`s3db_hook_failures_total`):
/// process-wide, because every plugin's hooks run through a runner of their own.
pub static HOOK_FAILURES: std::sync::LazyLock<
    prometheus_client::metrics::family::Family<
        HookLabels,
        prometheus_client::metrics::counter::Counter,
    >,
> = std::sync::LazyLock::new(Default::default);

/// What a plugin's operation failed with, as the built-in reports it.
pub type OpsError = Box<dyn std::error::Error + Send + Sync>;

/// What the state machine plugin offers to `machine.send` and `machine.sendAll`.
#[async_trait]
pub trait MachineOps: Send + Sync {
    async fn send(
        &self,
        machine: &str,
        entity: &str,
        event: &str,
        context: Value,
    ) -> Result<Value, OpsError>;
    async fn send_all(
        &self,
        machine: &str,
        state: &str,
        event: &str,
        older_than: Option<Duration>,
        context: Value,
    ) -> Result<Value, OpsError>;
}

/// What the backup plugin offers to `backup.run` and `backup.prune`.
#[async_trait]
pub trait BackupOps: Send + Sync {
    async fn run(&self, kind: &str, resources: Option<Vec<String>>) -> Result<Value, OpsError>;
    async fn prune(&self, dry_run: bool) -> Result<Value, OpsError>;
}

/// The plugins built-ins act on, as one set.
#[derive(Clone, Default)]
pub struct PluginSet {
    pub machines: Option<Arc<dyn MachineOps>>,
    pub backup: Option<Arc<dyn BackupOps>>,
}

/// The hook registry's view of the plugins. Plugins run hooks and hooks act on plugins, so the
/// set is made once every plugin is built and installed whole, by the runtime alone (a reload
/// installs the next set); no plugin registers itself.
#[derive(Default)]
pub struct Plugins {
    set: std::sync::RwLock<PluginSet>,
}

impl Plugins {
    pub fn machines(&self) -> Option<Arc<dyn MachineOps>> {
        self.current().machines
    }

    pub fn backup(&self) -> Option<Arc<dyn BackupOps>> {
        self.current().backup
    }

    /// The installed set.
    pub fn current(&self) -> PluginSet {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a whole set in place of the last.
    pub fn install(&self, set: PluginSet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
    }
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
    plugins: Plugins,
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
            plugins: Plugins::default(),
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

    /// The plugins that `machine.*` and `backup.*` act on.
    pub fn plugins(&self) -> &Plugins {
        &self.plugins
    }

    /// A reload's new named guards and actions; the next resolution uses them.
    pub fn set_hooks(&self, manifest: &Manifest) {
        *self.guards.write().unwrap_or_else(|e| e.into_inner()) = manifest.guards.clone();
        *self.actions.write().unwrap_or_else(|e| e.into_inner()) = manifest.actions.clone();
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
                            call: BuiltinCall::parse(name, None).ok(),
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
            let result = match (&hook.def.call, &hook.def.run) {
                (Some(call), _) => self.builtin(&hook.name, call, &input).await,
                (None, Some(cmd)) => self.shell(hook, cmd, &input, as_guard).await,
                (None, None) => Err(HookError::Builtin {
                    hook: hook.name.clone(),
                    message: match &hook.def.builtin {
                        Some(name) => format!("the parameters of `{name}` do not fit it"),
                        None => "the hook has neither `builtin` nor `run`".into(),
                    },
                }),
            };
            match result {
                Err(e) if attempt - first + 1 < policy.attempts() && retryable(&e) => {
                    tracing::warn!(hook = %hook.name, attempt, error = %e, "hook failed; retrying");
                    tokio::time::sleep(policy.delay(attempt - first + 1)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(hook = %hook.name, attempts = attempt - first + 1, error = %e, "hook failed");
                    HOOK_FAILURES
                        .get_or_create(&HookLabels {
                            hook: hook.name.clone(),
                            kind: input.kind.as_str().to_string(),
                        })
                        .inc();
                    return Err(e);
                }
                ok => return ok,
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
        tracing::debug!(hook = %hook.name, code = out.code.unwrap_or(-1), ms = out.duration.as_millis() as u64, output = %out.text(), "shell hook finished");
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
        call: &BuiltinCall,
        input: &HookInput,
    ) -> Result<Outcome, HookError> {
        let fail = |message: String| HookError::Builtin {
            hook: hook.to_string(),
            message,
        };
        let r = Render {
            hook,
            input,
            now: Utc::now(),
        };
        let db_error = |e: crate::db::DbError| fail(e.to_string());
        let not_running = |plugin: &str| fail(format!("the {plugin} plugin is not running"));
        let resource = |name: &Text| -> Result<crate::db::Resource, HookError> {
            self.db.resource(&r.text(name)?).map_err(db_error)
        };
        match call {
            BuiltinCall::Always {} => Ok(Outcome::Decision(GuardDecision::Allow)),
            BuiltinCall::Never { reason } => Ok(Outcome::Decision(GuardDecision::Deny {
                reason: r
                    .opt_text(reason)?
                    .unwrap_or_else(|| format!("denied by `{hook}`")),
            })),
            BuiltinCall::ContextMatches { filter, reason } => {
                let filter = r.filter(filter)?;
                let context = input.context.as_object().cloned().unwrap_or_default();
                Ok(Outcome::Decision(if filter.matches(&context) {
                    GuardDecision::Allow
                } else {
                    GuardDecision::Deny {
                        reason: r
                            .opt_text(reason)?
                            .unwrap_or_else(|| "the event context does not match".into()),
                    }
                }))
            }
            BuiltinCall::RecordCheck {
                resource: name,
                id,
                filter,
                reason,
            } => {
                let resource = resource(name)?;
                let id = r.text(id)?;
                let record = resource.get_cached(&id).await.map_err(db_error)?;
                let filter = match filter {
                    Some(f) => Some(r.filter(f)?),
                    None => None,
                };
                let reason = r.opt_text(reason)?;
                let reason = |default: String| reason.clone().unwrap_or(default);
                Ok(Outcome::Decision(match record {
                    None => GuardDecision::Deny {
                        reason: reason(format!("{}/{id} does not exist", resource.name())),
                    },
                    Some(rec) if filter.as_ref().is_some_and(|f| !f.matches(&rec.data)) => {
                        GuardDecision::Deny {
                            reason: reason(format!("{}/{id} does not match", resource.name())),
                        }
                    }
                    Some(_) => GuardDecision::Allow,
                }))
            }
            BuiltinCall::Log {
                message,
                level,
                fields,
            } => {
                let message = r
                    .opt_text(message)?
                    .unwrap_or_else(|| format!("hook {hook}"));
                let fields = r.value(fields)?;
                match r.param(level)? {
                    LogLevel::Error => tracing::error!(hook, %fields, "{message}"),
                    LogLevel::Warn => tracing::warn!(hook, %fields, "{message}"),
                    LogLevel::Debug => tracing::debug!(hook, %fields, "{message}"),
                    LogLevel::Info => tracing::info!(hook, %fields, "{message}"),
                }
                Ok(Outcome::Value(json!({ "logged": message })))
            }
            BuiltinCall::RecordInsert {
                resource: name,
                data,
                id,
            } => {
                let resource = resource(name)?;
                let data = r.object(data)?;
                let id = r.opt_text(id)?;
                let rec = resource
                    .insert(data, id.as_deref())
                    .await
                    .map_err(db_error)?;
                Ok(Outcome::Value(rec.to_json()))
            }
            BuiltinCall::RecordUpdate {
                resource: name,
                id,
                set,
                upsert,
            } => {
                let resource = resource(name)?;
                let id = r.text(id)?;
                let set = r.object(set)?;
                let rec = if r.param(upsert)? && !resource.exists(&id).await.map_err(db_error)? {
                    resource.upsert(&id, set).await
                } else {
                    resource.update(&id, &set, None).await
                }
                .map_err(db_error)?;
                Ok(Outcome::Value(rec.to_json()))
            }
            BuiltinCall::RecordDelete { resource: name, id } => {
                let resource = resource(name)?;
                let id = r.text(id)?;
                let deleted = resource.delete(&id, None).await.map_err(db_error)?;
                Ok(Outcome::Value(json!({ "deleted": deleted, "id": id })))
            }
            BuiltinCall::DeleteWhere {
                resource: name,
                filter,
                limit,
            } => {
                let resource = resource(name)?;
                let filter = r.filter(filter)?;
                let limit = match limit {
                    Some(l) => Some(r.param(l)? as usize),
                    None => None,
                };
                let ids: Vec<String> = resource
                    .list(ListOptions {
                        filter: Some(filter),
                        limit,
                        ..Default::default()
                    })
                    .await
                    .map_err(db_error)?
                    .into_iter()
                    .map(|rec| rec.id)
                    .collect();
                let deleted = resource.delete_many(&ids).await.map_err(db_error)?;
                Ok(Outcome::Value(json!({ "deleted": deleted })))
            }
            BuiltinCall::MachineSend {
                machine,
                entity,
                event,
                context,
            } => {
                let ops = self
                    .plugins
                    .machines()
                    .ok_or_else(|| not_running("state machine"))?;
                let context = r.opt_object(context)?;
                ops.send(
                    &r.text(machine)?,
                    &r.text(entity)?,
                    &r.text(event)?,
                    context,
                )
                .await
                .map(Outcome::Value)
                .map_err(|e| fail(e.to_string()))
            }
            BuiltinCall::MachineSendAll {
                machine,
                state,
                event,
                older_than,
                context,
            } => {
                let ops = self
                    .plugins
                    .machines()
                    .ok_or_else(|| not_running("state machine"))?;
                let context = r.opt_object(context)?;
                ops.send_all(
                    &r.text(machine)?,
                    &r.text(state)?,
                    &r.text(event)?,
                    older_than.map(|d| d.as_std()),
                    context,
                )
                .await
                .map(Outcome::Value)
                .map_err(|e| fail(e.to_string()))
            }
            BuiltinCall::BackupRun { kind, resources } => {
                let ops = self.plugins.backup().ok_or_else(|| not_running("backup"))?;
                let kind = r.opt_text(kind)?.unwrap_or_else(|| "full".into());
                let resources = match resources {
                    Some(items) => Some(
                        items
                            .iter()
                            .map(|t| r.text(t))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    None => None,
                };
                ops.run(&kind, resources)
                    .await
                    .map(Outcome::Value)
                    .map_err(|e| fail(e.to_string()))
            }
            BuiltinCall::BackupPrune { dry_run } => {
                let ops = self.plugins.backup().ok_or_else(|| not_running("backup"))?;
                ops.prune(r.param(dry_run)?)
                    .await
                    .map(Outcome::Value)
                    .map_err(|e| fail(e.to_string()))
            }
            BuiltinCall::Webhook {
                url,
                headers,
                timeout,
                retries,
            } => {
                let url = r.text(url)?;
                let headers = headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), r.text(v)?)))
                    .collect::<Result<Vec<_>, HookError>>()?;
                let retries = match retries {
                    Some(n) => r.param(n)?,
                    None => 2,
                };
                let timeout = timeout.map_or(Duration::from_secs(10), |t| t.as_std());
                self.webhook(hook, &url, &headers, timeout, retries, input)
                    .await
                    .map(Outcome::Value)
                    .map_err(|e| fail(e.to_string()))
            }
        }
    }

    async fn webhook(
        &self,
        hook: &str,
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
        retries: u32,
        input: &HookInput,
    ) -> Result<Value, WebhookError> {
        let policy = RetryPolicy::new(retries);
        let mut last = WebhookError::NotTried;
        for attempt in 1..=policy.attempts() {
            let mut req = self.http.post(url).timeout(timeout).json(input);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    return Ok(serde_json::from_str(&body)
                        .unwrap_or_else(|_| json!({ "status": status, "body": body })));
                }
                Ok(resp) if resp.status().is_client_error() => {
                    return Err(WebhookError::Answered {
                        url: url.to_string(),
                        status: resp.status().to_string(),
                    });
                }
                Ok(resp) => {
                    last = WebhookError::Answered {
                        url: url.to_string(),
                        status: resp.status().to_string(),
                    }
                }
                Err(e) => {
                    last = WebhookError::Unreachable {
                        url: url.to_string(),
                        reason: e.without_url().to_string(),
                    }
                }
            }
            if attempt < policy.attempts() {
                tracing::warn!(hook, attempt, error = %last, "webhook failed; retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
            }
        }
        Err(last)
    }
}

/// Why a webhook call failed, after its retries.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("{url} answered {status}")]
    Answered { url: String, status: String },
    #[error("POST {url} failed: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the webhook was not called (no attempts)")]
    NotTried,
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

/// Renders a built-in's parameters against one hook input.
struct Render<'a> {
    hook: &'a str,
    input: &'a HookInput,
    now: chrono::DateTime<Utc>,
}

impl Render<'_> {
    fn template_error(&self, source: TemplateError) -> HookError {
        HookError::Template {
            hook: self.hook.to_string(),
            source,
        }
    }

    fn invalid(&self, message: String) -> HookError {
        HookError::Builtin {
            hook: self.hook.to_string(),
            message,
        }
    }

    fn text(&self, text: &Text) -> Result<String, HookError> {
        template::render_arg(&text.0, self.input, self.now).map_err(|e| self.template_error(e))
    }

    fn opt_text(&self, text: &Option<Text>) -> Result<Option<String>, HookError> {
        text.as_ref().map(|t| self.text(t)).transpose()
    }

    fn value(&self, value: &Value) -> Result<Value, HookError> {
        template::render_value(value, self.input, self.now).map_err(|e| self.template_error(e))
    }

    fn object(&self, map: &Map<String, Value>) -> Result<Map<String, Value>, HookError> {
        match self.value(&Value::Object(map.clone()))? {
            Value::Object(m) => Ok(m),
            _ => Ok(Map::new()),
        }
    }

    fn opt_object(&self, map: &Option<Map<String, Value>>) -> Result<Value, HookError> {
        match map {
            Some(m) => Ok(Value::Object(self.object(m)?)),
            None => Ok(json!({})),
        }
    }

    fn filter(&self, map: &Map<String, Value>) -> Result<Filter, HookError> {
        let rendered = self.value(&Value::Object(map.clone()))?;
        Filter::parse(&rendered).map_err(|e| self.invalid(e.to_string()))
    }

    /// A typed parameter; a template's rendered value must read as the type.
    fn param<T: Clone + serde::de::DeserializeOwned>(
        &self,
        param: &Param<T>,
    ) -> Result<T, HookError> {
        match param {
            Param::Value(v) => Ok(v.clone()),
            Param::Template(t) => {
                let rendered = template::render(t, self.input, self.now)
                    .map_err(|e| self.template_error(e))?;
                serde_json::from_value(rendered.clone()).map_err(|e| {
                    self.invalid(format!(
                        "`{t}` rendered to {rendered}, which does not fit: {e}"
                    ))
                })
            }
        }
    }
}
