//! The manifest model: the single source of parsing (serde) and of the JSON Schema (schemars).
//! Doc comments on fields become the schema's descriptions, which IDEs show on hover. Defaults
//! follow the s3db.js plugin documentation. This module holds shapes only: rules that relate one
//! part of the manifest to another live in `check`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{Command, ConnectionString, OneOrMany};
use crate::types::{Duration, Schedule, Secret, TimeZone};

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
#[serde(deny_unknown_fields, rename_all = "camelCase")]
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

/// A state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineDef {
    /// What this machine models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The state a new entity starts in.
    pub initial_state: String,
    /// The states, by name.
    pub states: IndexMap<String, StateDef>,
}

/// A state of a machine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateDef {
    /// Transitions: event name → target state.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = on_example())]
    pub on: IndexMap<String, String>,
    /// Actions run when an entity enters this state (one name or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub entry: OneOrMany,
    /// Actions run when an entity leaves this state (one name or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub exit: OneOrMany,
    /// Guards: event name → guard name. The transition happens only if the guard allows it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub guards: IndexMap<String, String>,
    /// Delayed transitions: duration → target state. The entity moves to the target if it is
    /// still in this state after the duration (kept across restarts).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(example = after_example())]
    pub after: IndexMap<Delay, String>,
    /// Free-form metadata (colours, labels), returned by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// `final`: no transitions leave this state.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<StateKind>,
}

fn on_example() -> serde_json::Value {
    serde_json::json!({ "CONFIRM": "confirmed", "CANCEL": "cancelled" })
}

/// The delay of an `after` transition: the duration, read when the manifest is, and the text
/// the author wrote (diagnostics point at it, the API and graphs show it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delay {
    pub duration: Duration,
    pub text: String,
}

impl Delay {
    pub fn as_std(&self) -> std::time::Duration {
        self.duration.as_std()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Delay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Mapping keys are strings: read the text, then the duration from it.
        let text = String::deserialize(d)?;
        let duration =
            Duration::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))?;
        Ok(Delay { duration, text })
    }
}

impl JsonSchema for Delay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Duration::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Duration::json_schema(generator)
    }
}

fn after_example() -> serde_json::Value {
    serde_json::json!({ "30m": "expired" })
}

impl StateDef {
    pub fn is_final(&self) -> bool {
        self.kind == Some(StateKind::Final)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StateKind {
    /// A final state: the entity's life ends here.
    Final,
}

/// Options of the state machine plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StateMachineConfig {
    /// Store every transition in the transition log resource.
    pub persist_transitions: bool,
    /// Resource that holds the transition log.
    pub transition_log_resource: String,
    /// Resource that holds each entity's current state.
    pub state_resource: String,
    /// How much of each entity's transition log to keep; without it, every transition is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition_retention: Option<TransitionRetention>,
    /// Log every transition and hook call.
    pub verbose: bool,
}

/// How much of each entity's transition log to keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransitionRetention {
    /// Keep each entity's newest this many transitions: each new transition removes the one
    /// this many before it (one delete, no listing).
    #[schemars(range(min = 1))]
    pub max_per_entity: u64,
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        Self {
            persist_transitions: true,
            transition_log_resource: "transitions".into(),
            state_resource: "entity_states".into(),
            transition_retention: None,
            verbose: false,
        }
    }
}

/// The backup plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupConfig {
    /// Where backups go: `filesystem`, `s3`, or `multi` (several destinations).
    #[serde(default)]
    pub driver: BackupDriver,
    /// Options of the driver.
    #[serde(default)]
    pub config: BackupDriverConfig,
    /// Legacy form (`destinations: [{type: filesystem, path: …}]`), converted to the `multi`
    /// driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<LegacyDestination>>,
    /// Grandfather-father-son retention. Absent: keep every backup.
    #[serde(default)]
    pub retention: RetentionPolicy,
    /// Resources to back up (absent: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Resources never backed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Compression of the archive.
    #[serde(default)]
    pub compression: Compression,
    /// Client-side encryption. Absent: archives are not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
    /// Read every archive back after upload and compare its SHA-256.
    #[serde(default = "default_true")]
    pub verification: bool,
    /// Working directory for temporary files.
    #[serde(default = "default_temp_dir")]
    pub temp_dir: String,
    /// Time zone of the retention calendar (days, ISO weeks, months, years).
    #[serde(default)]
    pub timezone: TimeZone,
    /// Log every step.
    #[serde(default)]
    pub verbose: bool,
    /// Hook called when a backup starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_backup_start: Option<HookRef>,
    /// Hook called when a backup completes, with its stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_backup_complete: Option<HookRef>,
    /// Hook called when a backup fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_backup_error: Option<HookRef>,
    /// Hook called when a restore starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_restore_start: Option<HookRef>,
    /// Hook called when a restore completes, with its stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_restore_complete: Option<HookRef>,
    /// Hook called when a restore fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_restore_error: Option<HookRef>,
}

fn default_true() -> bool {
    true
}

fn default_temp_dir() -> String {
    "./tmp/backups".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackupDriver {
    /// A local or mounted folder.
    #[default]
    Filesystem,
    /// An S3 bucket (the database's, unless `bucket` is given).
    S3,
    /// Several destinations with a strategy.
    Multi,
}

impl BackupDriver {
    pub const ALL: [BackupDriver; 3] = [
        BackupDriver::Filesystem,
        BackupDriver::S3,
        BackupDriver::Multi,
    ];

    /// The `config:` options this driver takes.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            BackupDriver::Filesystem => &["path", "permissions", "directoryPermissions"],
            BackupDriver::S3 => &[
                "path",
                "bucket",
                "storageClass",
                "serverSideEncryption",
                "kmsKeyId",
            ],
            BackupDriver::Multi => &["strategy", "concurrency", "destinations"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackupDriver::Filesystem => "filesystem",
            BackupDriver::S3 => "s3",
            BackupDriver::Multi => "multi",
        }
    }
}

/// Options of a backup driver. Which apply depends on the driver: `path`, `permissions` and
/// `directoryPermissions` (filesystem); `bucket`, `path`, `storageClass`, `serverSideEncryption`
/// and `kmsKeyId` (s3); `strategy`, `concurrency` and `destinations` (multi).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupDriverConfig {
    /// Folder (filesystem, required) or key prefix (s3; default `backups/DATABASE-PREFIX/`) of the
    /// archives. Templates: {date} {time} {year} {month} {day} {backupId} {type}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "./backups/{date}/")]
    pub path: Option<String>,
    /// filesystem: permissions of archive files, as an octal number or string (`0o644`, `"644"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<FileMode>,
    /// filesystem: permissions of created folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_permissions: Option<FileMode>,
    /// s3: the bucket (absent: the database's bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// s3: storage class of the archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    /// s3: server-side encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// s3: KMS key id or ARN, with `serverSideEncryption: aws:kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// multi: `all` (every destination must succeed), `any` (at least one), `priority` (in order,
    /// stop at the first success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<MultiStrategy>,
    /// multi: how many destinations are written at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub concurrency: Option<u32>,
    /// multi: the destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<BackupDestination>>,
}

/// One destination of the `multi` backup driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupDestination {
    /// `filesystem` or `s3`.
    pub driver: BackupDriver,
    /// Options of the destination's driver.
    #[serde(default)]
    pub config: BackupDriverConfig,
}

/// A destination in the legacy `destinations: [{type: …}]` form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LegacyDestination {
    /// `filesystem` or `s3`.
    #[serde(rename = "type")]
    pub kind: BackupDriver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<ServerSideEncryption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<FileMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_permissions: Option<FileMode>,
}

/// A Unix file mode: an integer (`420`, or `0o644` in YAML) or an octal string (`"644"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FileMode {
    Number(u32),
    Octal(String),
}

impl FileMode {
    /// The mode bits, or None when the string is not octal.
    pub fn bits(&self) -> Option<u32> {
        match self {
            FileMode::Number(n) => Some(*n),
            FileMode::Octal(s) => {
                u32::from_str_radix(s.trim_start_matches("0o").trim_start_matches('0'), 8)
                    .ok()
                    .or_else(|| s.chars().all(|c| c == '0').then_some(0))
            }
        }
        .filter(|m| *m <= 0o7777)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum StorageClass {
    STANDARD,
    STANDARD_IA,
    ONEZONE_IA,
    INTELLIGENT_TIERING,
    REDUCED_REDUNDANCY,
    GLACIER,
    GLACIER_IR,
    DEEP_ARCHIVE,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServerSideEncryption {
    /// S3-managed keys.
    AES256,
    /// KMS-managed keys (`kmsKeyId` names the key).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MultiStrategy {
    /// Write to every destination; fail if any fails.
    All,
    /// Write to every destination; succeed if at least one succeeds.
    Any,
    /// Try destinations in order; stop at the first success.
    Priority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Brotli,
    Deflate,
}

/// Grandfather-father-son retention: the newest backup of each of the last N days, ISO weeks,
/// months and years is kept; the rules are combined (a backup kept by any rule stays).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Daily backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// Weekly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    /// Monthly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    /// Yearly backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
    }
}

/// Client-side encryption of backup archives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EncryptionConfig {
    /// The cipher. Only `AES-256-GCM`.
    pub algorithm: EncryptionAlgorithm,
    /// The passphrase (usually `${BACKUP_KEY}`). Exactly one of `key`, `keyFile`, `keyCommand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// A file whose content is the passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// A command whose standard output is the passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_command: Option<Command>,
    /// How the key-encryption key is derived from the passphrase. Default: Argon2id.
    #[serde(default)]
    pub key_derivation: KeyDerivation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncryptionAlgorithm {
    #[serde(rename = "AES-256-GCM")]
    Aes256Gcm,
}

/// Key derivation from the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeyDerivation {
    /// `argon2id` (default) or `PBKDF2` (PBKDF2-SHA256).
    #[serde(default)]
    pub algorithm: KdfAlgorithm,
    /// PBKDF2 iterations (a warning below 600000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Ignored for new backups (each gets a random salt); kept for s3db.js compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

impl Default for KeyDerivation {
    fn default() -> Self {
        Self {
            algorithm: KdfAlgorithm::Argon2id,
            iterations: None,
            salt: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum KdfAlgorithm {
    #[default]
    #[serde(rename = "argon2id")]
    Argon2id,
    #[serde(rename = "PBKDF2")]
    Pbkdf2,
}

/// The cache plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheConfig {
    /// Where cached reads are kept: `memory`, `filesystem`, or `s3` (objects in the database's
    /// store, or another bucket).
    #[serde(default)]
    pub driver: CacheDriver,
    /// Time to live of an entry (the driver's `config.ttl` overrides it).
    #[serde(default = "default_cache_ttl")]
    pub ttl: Duration,
    /// Maximum number of entries (the driver's `config.maxSize` overrides it).
    #[serde(default = "default_cache_max_size")]
    pub max_size: u64,
    /// Options of the driver.
    #[serde(default)]
    pub config: CacheDriverConfig,
    /// Include partition values in cache keys.
    #[serde(default = "default_true")]
    pub include_partitions: bool,
    /// Use the partition-aware filesystem layout.
    #[serde(default)]
    pub partition_aware: bool,
    /// Layout of the partition-aware filesystem cache.
    #[serde(default)]
    pub partition_strategy: PartitionStrategy,
    /// Track partition usage statistics.
    #[serde(default = "default_true")]
    pub track_usage: bool,
    /// Preload related partition data.
    #[serde(default)]
    pub preload_related: bool,
    /// Log cache activity.
    #[serde(default)]
    pub verbose: bool,
}

fn default_cache_ttl() -> Duration {
    Duration::from_millis(300_000)
}

fn default_cache_max_size() -> u64 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CacheDriver {
    Memory,
    #[default]
    S3,
    Filesystem,
}

impl CacheDriver {
    pub const ALL: [CacheDriver; 3] = [
        CacheDriver::Memory,
        CacheDriver::S3,
        CacheDriver::Filesystem,
    ];

    /// The `config:` options this driver takes.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            CacheDriver::Memory => &[
                "ttl",
                "maxSize",
                "enableStats",
                "evictionPolicy",
                "logEvictions",
                "cleanupInterval",
                "caseSensitive",
                "enableCompression",
                "compressionThreshold",
                "tags",
                "persistent",
                "persistencePath",
                "persistenceInterval",
            ],
            CacheDriver::Filesystem => &[
                "ttl",
                "maxSize",
                "directory",
                "path",
                "prefix",
                "enableCompression",
                "compressionThreshold",
                "createDirectory",
                "fileExtension",
                "enableMetadata",
                "maxFileSize",
                "enableStats",
                "enableCleanup",
                "cleanupInterval",
                "encoding",
                "fileMode",
                "enableBackup",
                "backupSuffix",
                "enableLocking",
                "lockTimeout",
                "enableJournal",
                "journalFile",
                "partitionStrategy",
                "trackUsage",
                "preloadRelated",
                "preloadThreshold",
                "maxCacheSize",
                "usageStatsFile",
            ],
            CacheDriver::S3 => &[
                "ttl",
                "maxSize",
                "enableStats",
                "bucket",
                "keyPrefix",
                "storageClass",
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheDriver::Memory => "memory",
            CacheDriver::S3 => "s3",
            CacheDriver::Filesystem => "filesystem",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PartitionStrategy {
    #[default]
    Hierarchical,
    Flat,
    Temporal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EvictionPolicy {
    #[default]
    Lru,
    Fifo,
}

/// Options of a cache driver. Which apply depends on the driver: memory (`ttl`, `maxSize`,
/// `enableStats`, `evictionPolicy`, `logEvictions`, `cleanupInterval`, `caseSensitive`,
/// `enableCompression`, `compressionThreshold`, `tags`, `persistent`, `persistencePath`,
/// `persistenceInterval`); filesystem (`directory` or `path`, `prefix`, `fileExtension`, …); s3
/// (`bucket`, `keyPrefix`, `storageClass`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheDriverConfig {
    /// Overrides the plugin's `ttl` for this driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Overrides the plugin's `maxSize` for this driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Count hits, misses and evictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_stats: Option<bool>,
    /// memory: `lru` or `fifo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_policy: Option<EvictionPolicy>,
    /// memory: log every eviction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_evictions: Option<bool>,
    /// How often expired entries are removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_interval: Option<Duration>,
    /// memory: whether keys are case sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
    /// Compress values with gzip (memory default false, filesystem default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_compression: Option<bool>,
    /// Smallest value, in bytes, that is compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_threshold: Option<u64>,
    /// memory: tags applied to every entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<serde_json::Map<String, serde_json::Value>>,
    /// memory: persist the cache to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// memory: where the persisted cache is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_path: Option<String>,
    /// memory: how often the persisted cache is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_interval: Option<Duration>,
    /// filesystem: the cache folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// filesystem: the cache folder (same as `directory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// filesystem: file name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// filesystem: create the folder if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_directory: Option<bool>,
    /// filesystem: file name extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// filesystem: store metadata beside each entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_metadata: Option<bool>,
    /// filesystem: largest entry, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_file_size: Option<u64>,
    /// filesystem: remove expired files periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_cleanup: Option<bool>,
    /// filesystem: text encoding of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// filesystem: permissions of cache files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<FileMode>,
    /// filesystem: keep a backup copy before overwriting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_backup: Option<bool>,
    /// filesystem: suffix of backup copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_suffix: Option<String>,
    /// filesystem: lock files against concurrent writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_locking: Option<bool>,
    /// filesystem: how long to wait for a lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout: Option<Duration>,
    /// filesystem: keep a journal of operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_journal: Option<bool>,
    /// filesystem: journal file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_file: Option<String>,
    /// filesystem (partition-aware): layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_strategy: Option<PartitionStrategy>,
    /// filesystem (partition-aware): track partition usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_usage: Option<bool>,
    /// filesystem (partition-aware): preload related partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_related: Option<bool>,
    /// filesystem (partition-aware): usage count that triggers preloading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload_threshold: Option<u64>,
    /// filesystem (partition-aware): maximum total size, such as `500MB` or `1GB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cache_size: Option<String>,
    /// filesystem (partition-aware): usage statistics file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_stats_file: Option<String>,
    /// s3: bucket for cache objects (absent: the database's store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// s3: key prefix of cache objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// s3: storage class of cache objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
}

/// Options of the scheduler plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct SchedulerConfig {
    /// Time zone of every job's schedule, unless the job names its own.
    pub timezone: TimeZone,
    /// Timeout of a job that sets none.
    pub default_timeout: Duration,
    /// Retries of a job that sets none.
    pub default_retries: u32,
    /// Store one history record per run.
    pub persist_jobs: bool,
    /// Resource that holds job history.
    pub job_history_resource: String,
    /// How much job history to keep; without it, every run is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_retention: Option<HistoryRetention>,
    /// Hook called when a job starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_start: Option<HookRef>,
    /// Hook called when a job completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_complete: Option<HookRef>,
    /// Hook called when a job fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_job_error: Option<HookRef>,
    /// Log every run.
    pub verbose: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            timezone: TimeZone::default(),
            default_timeout: Duration::from_millis(60_000),
            default_retries: 1,
            persist_jobs: true,
            job_history_resource: "job_history".into(),
            history_retention: None,
            on_job_start: None,
            on_job_complete: None,
            on_job_error: None,
            verbose: false,
        }
    }
}

/// How much job history to keep. A job's newest run and runs still `running` are always kept;
/// the rest goes when either limit says so. Applied at startup and every 5 minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HistoryRetention {
    /// Keep at most this many runs of each job, the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_runs: Option<u32>,
    /// Remove runs older than this (by their slot, or a manual run's start), e.g. `30d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}

/// A scheduled job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobDef {
    /// Cron expression: 5 fields (an optional leading seconds field), names (MON, JAN), ranges,
    /// steps and lists, or @yearly @annually @monthly @weekly @daily @hourly.
    #[schemars(example = "0 3 * * *", example = "*/15 * * * *", example = "@daily")]
    pub schedule: Schedule,
    /// What the job does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The hook to run: a name under `actions:`, a built-in's name, or an inline hook.
    pub action: HookRef,
    /// Disabled jobs are not scheduled (they can still be run by hand).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Retries after a failure, with exponential backoff (default: the scheduler's
    /// `defaultRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// How long a run may take (default: the scheduler's `defaultTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time zone of this job's schedule (default: the scheduler's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<TimeZone>,
    /// What to do when a slot comes while the previous run is still going.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What to do at start about slots missed while no runner was up.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How late a missed slot may still run at start (default: one schedule interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    /// Delay each run by a stable, per-job amount up to this duration, to spread load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Free-form metadata, returned by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OverlapPolicy {
    /// Skip the new slot.
    #[default]
    Skip,
    /// Run it after the current run ends.
    Queue,
    /// Stop the current run and start the new one.
    Replace,
    /// Run both at once.
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Run the latest missed slot once at start, if within `startingDeadline`.
    #[default]
    Latest,
    /// Never run missed slots.
    None,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            token: None,
            enabled: true,
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
                HookDef::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|h| HookRef::Inline(Box::new(h)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file mode: a number, or an octal string such as \"644\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileMode, E> {
                u32::try_from(v)
                    .map(FileMode::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileMode, E> {
                u32::try_from(v)
                    .map(FileMode::Number)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileMode, E> {
                let mode = FileMode::Octal(v.to_string());
                match mode.bits() {
                    Some(_) => Ok(mode),
                    None => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
