//! The manifest model: the single source of parsing (serde) and of the JSON Schema (schemars).
//! Doc comments on fields become the schema's descriptions, which IDEs show on hover. Defaults
//! follow the s3db.js plugin documentation. This module holds shapes only: rules that relate one
//! part of the manifest to another live in `check`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{Command, ConnectionString, OneOrMany};
use crate::types::{Duration, Schedule, Secret, TimeZone};

mod backup;
mod builtin;
mod cache;
mod machines;
mod scheduler;

pub use backup::*;
pub use builtin::*;
pub use cache::*;
pub use machines::*;
pub use scheduler::*;

/// An s3db-run manifest: the database, its hooks and the plugins that run on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "s3db-run manifest")]
pub struct Manifest {
    /// Manifest format version. Always `1`.
    #[schemars(range(min = 1, max = 1), example = 1)]
    pub version: u32,
    /// The database: where it lives and the resources it declares.
    pub database: DatabaseConfig,
    /// Named guards: hooks that allow or deny a state machine transition. Each is exactly one of
    /// `builtin` (with `with`) or `run` (a shell hook).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub guards: IndexMap<String, HookDef>,
    /// Named actions: hooks run on state entry/exit, by jobs and by plugin callbacks.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub actions: IndexMap<String, HookDef>,
    /// State machine definitions, by machine name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub machines: IndexMap<String, MachineDef>,
    /// Options of the state machine plugin.
    #[serde(default)]
    pub state_machine: StateMachineConfig,
    /// The backup plugin. Absent: no backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfig>,
    /// The cache plugin. Absent: reads are not cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Options of the scheduler plugin.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// Scheduled jobs, by job name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub jobs: IndexMap<String, JobDef>,
    /// The control API server.
    #[serde(default)]
    pub server: ServerConfig,
}

/// Where the database lives and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DatabaseConfig {
    /// Connection string: `s3://KEY:SECRET@BUCKET/prefix?region=…&endpoint=…&forcePathStyle=true`
    /// (without credentials the standard AWS chain is used), `file://PATH` (the embedded default,
    /// a local folder) or `memory://BUCKET/prefix`.
    #[schemars(
        example = "file://./data/shop",
        example = "s3://my-bucket/databases/shop?region=eu-west-1"
    )]
    pub connection: ConnectionString,
    /// Resources (collections of records), by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub resources: IndexMap<String, ResourceDef>,
    /// Timeouts and attempts of every S3 request. The connection string's parameters of the
    /// same names win over these (so `S3DB_CONNECTION` can tune one deployment).
    #[serde(default, skip_serializing_if = "RequestsConfig::is_empty")]
    pub requests: RequestsConfig,
    /// Only one runner ever uses this database. Without it, a runner checks at start that the
    /// store refuses a second create-only write and a stale compare-and-swap (what keeps several
    /// runners from running a slot twice), and refuses to start on a store that does not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_runner: bool,
    /// The passphrase of `secret` attributes on a database s3db.js wrote (s3db.js's
    /// `security.passphrase`; usually `${S3DB_PASSPHRASE}`). Without it, s3db.js's default,
    /// `secret`, is used, as s3db.js does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Secret>,
    /// The record format of a new database. An existing one keeps its own: a prefix whose
    /// `s3db.json` s3db.js wrote is read and written in s3db.js's format whatever this says.
    /// With `s3dbjs`, resources may be left undeclared (they come from `s3db.json`) and
    /// attributes are s3db.js's shorthand.
    #[serde(default, skip_serializing_if = "DatabaseFormat::is_native")]
    pub format: DatabaseFormat,
}

/// How records are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseFormat {
    /// s3db-run's own: one JSON object per record, in the body.
    #[default]
    Native,
    /// s3db.js 21's: values in the object's metadata, so an s3db.js application shares it.
    S3dbjs,
}

impl DatabaseFormat {
    fn is_native(&self) -> bool {
        *self == DatabaseFormat::Native
    }
}

/// How long an S3 request may take and how often it is tried; unset values take the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestsConfig {
    /// Opening a connection. Default `3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// From sending a request to the first byte of its answer. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<Duration>,
    /// One attempt, its answer's body included. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<Duration>,
    /// The whole operation, retries included. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Attempts per operation; throttling, 5xx answers and timeouts are retried with
    /// exponential backoff and jitter. Default `5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_attempts: Option<u32>,
}

impl RequestsConfig {
    fn is_empty(&self) -> bool {
        *self == RequestsConfig::default()
    }

    pub fn policy(&self) -> crate::store::connection::RequestPolicy {
        crate::store::connection::RequestPolicy {
            connect_timeout: self.connect_timeout.map(|d| d.as_std()),
            read_timeout: self.read_timeout.map(|d| d.as_std()),
            attempt_timeout: self.attempt_timeout.map(|d| d.as_std()),
            timeout: self.timeout.map(|d| d.as_std()),
            max_attempts: self.max_attempts,
        }
    }
}

/// A resource: a named collection of JSON records.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceDef {
    /// Attributes in the s3db.js shorthand: a type (`string`, `number`, `boolean`, `json`,
    /// `object`, `array`, `date`, `any`) followed by `|`-separated rules (`required`, `min:1`,
    /// `max:10`, `minlength:2`, `maxlength:10`, `default:VALUE`).
    #[serde(default)]
    #[schemars(example = attribute_example())]
    pub attributes: IndexMap<String, String>,
    /// Partitions: named groupings of records by the value of one or more fields, so listing a
    /// partition reads only its records.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub partitions: IndexMap<String, PartitionDef>,
    /// Keep `createdAt` and `updatedAt` on every record.
    #[serde(default)]
    pub timestamps: bool,
}

impl From<&ResourceDef> for crate::db::schema::StoredResource {
    fn from(def: &ResourceDef) -> Self {
        Self {
            attributes: def.attributes.clone(),
            partitions: def
                .partitions
                .iter()
                .map(|(name, p)| (name.clone(), p.fields.clone()))
                .collect(),
            timestamps: def.timestamps,
        }
    }
}

fn attribute_example() -> serde_json::Value {
    serde_json::json!({ "name": "string|required|maxlength:100", "quantity": "number|min:0|default:0" })
}

/// A partition of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartitionDef {
    /// The fields that make up the partition key, with their type (`string`, `number`, …).
    /// `string|maxlength:N` keeps only the first N characters (e.g. a date from a timestamp).
    #[schemars(example = partition_example())]
    pub fields: IndexMap<String, String>,
}

fn partition_example() -> serde_json::Value {
    serde_json::json!({ "status": "string" })
}

/// A hook: exactly one of a built-in (`builtin` + `with`) or a shell command (`run` with
/// `timeout`, `env`, `retries`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
// `remote = "Self"` makes the derives inherent functions, so that the trait impls below can
// read the built-in's parameters into their types once, at load.
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct HookDef {
    /// A built-in guard or action, such as `record.check` or `backup.run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "record.update")]
    pub builtin: Option<String>,
    /// Parameters of the built-in. Strings may use `{{…}}` templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<serde_json::Map<String, serde_json::Value>>,
    /// A shell hook: a list is executed directly (each element one argument, `{{…}}` templates
    /// allowed); a string runs under `/bin/sh -c`. The hook input arrives as JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Command>,
    /// How long the shell hook may run before its process group is terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra environment variables for the shell hook.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// How many times to retry a failing shell hook, with exponential backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// What the hook is for (shown by `machine list`, `job list` and the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `builtin` and `with` read into the built-in's typed parameters; `None` for a shell hook
    /// and for a built-in whose parameters do not fit (the checks report why).
    #[serde(skip)]
    #[schemars(skip)]
    pub call: Option<BuiltinCall>,
}

impl<'de> Deserialize<'de> for HookDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut def = HookDef::deserialize(d)?;
        def.call = def
            .builtin
            .as_deref()
            .and_then(|name| BuiltinCall::parse(name, def.with.as_ref()).ok());
        Ok(def)
    }
}

impl Serialize for HookDef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        HookDef::serialize(self, s)
    }
}

/// A reference to a hook: the name of one under `guards:`/`actions:`, a built-in's name, or a
/// hook written inline.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum HookRef {
    /// The name of a hook defined under `guards:` or `actions:`, or of a built-in.
    Named(String),
    /// A hook written in place.
    Inline(Box<HookDef>),
}

/// The control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    #[schemars(example = "127.0.0.1:7070")]
    pub listen: String,
    /// Bearer token required by every endpoint except `/healthz` and `/readyz`. Empty: no token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Serve the API at all.
    pub enabled: bool,
    /// How long a connection may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open. Default `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(example = "30s")]
    pub idle_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            token: None,
            enabled: true,
            idle_timeout: None,
        }
    }
}

// Hand-written so that an inline hook's unknown keys and wrong types are reported as such,
// instead of serde's untagged "did not match any variant".
impl<'de> Deserialize<'de> for HookRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HookRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a hook name, or an inline hook (`builtin:` or `run:`)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HookRef, E> {
                Ok(HookRef::Named(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HookRef, A::Error> {
                // The trait impl, not the inherent `remote = "Self"` one: it types the built-in.
                <HookDef as Deserialize>::deserialize(serde::de::value::MapAccessDeserializer::new(
                    map,
                ))
                .map(|h| HookRef::Inline(Box::new(h)))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_true() -> bool {
    true
}
