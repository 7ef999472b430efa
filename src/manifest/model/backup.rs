//! The backup plugin: drivers and their options, compression, encryption, retention.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

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
    /// The destinations, typed per driver; filled by the loader from `driver` + `config` (or
    /// the legacy `destinations`). None only when the checks report why.
    #[serde(skip)]
    #[schemars(skip)]
    pub target: Option<BackupTarget>,
}

/// Where backups go, typed: every destination carries exactly its own driver's options, so
/// nothing below the manifest looks at an option another driver takes. A single driver is one
/// destination with the `all` strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupTarget {
    pub strategy: MultiStrategy,
    /// How many destinations are written at once (at least 1).
    pub concurrency: usize,
    pub destinations: Vec<Destination>,
}

/// One backup destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Filesystem(FilesystemDestination),
    S3(S3Destination),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemDestination {
    /// Folder template, relative to the manifest's folder.
    pub path: String,
    pub file_mode: Option<u32>,
    pub dir_mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Destination {
    /// Key prefix template; None: `backups/DATABASE-PREFIX/`.
    pub path: Option<String>,
    /// None: the database's bucket.
    pub bucket: Option<String>,
    /// Its own place and credentials (`connection`), parsed; None: beside the database.
    pub location: Option<Box<crate::store::connection::S3Location>>,
    pub storage_class: Option<StorageClass>,
    pub server_side: Option<ServerSide>,
}

/// Server-side encryption of an S3 destination; a KMS key id only exists with KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSide {
    Aes256,
    Kms { key_id: Option<String> },
}

impl Destination {
    /// The typed destination of a single driver's options; None for `multi` or a filesystem
    /// destination without its required `path` (both reported by the checks).
    pub fn from_options(driver: BackupDriver, c: &BackupDriverConfig) -> Option<Self> {
        match driver {
            BackupDriver::Filesystem => Some(Destination::Filesystem(FilesystemDestination {
                path: c.path.clone()?,
                file_mode: c.permissions.as_ref().and_then(FileMode::bits),
                dir_mode: c.directory_permissions.as_ref().and_then(FileMode::bits),
            })),
            BackupDriver::S3 => Some(Destination::S3(S3Destination {
                path: c.path.clone(),
                bucket: c.bucket.clone(),
                location: match &c.connection {
                    None => None,
                    Some(text) => match text.expose().parse() {
                        Ok(crate::store::connection::Connection::S3(location)) => {
                            Some(Box::new(location))
                        }
                        // Reported by the checks (`manifest::invalid_connection`).
                        _ => return None,
                    },
                },
                storage_class: c.storage_class,
                server_side: c.server_side_encryption.map(|s| match s {
                    ServerSideEncryption::AES256 => ServerSide::Aes256,
                    ServerSideEncryption::AwsKms => ServerSide::Kms {
                        key_id: c.kms_key_id.clone(),
                    },
                }),
            })),
            BackupDriver::Multi => None,
        }
    }

    pub fn driver(&self) -> BackupDriver {
        match self {
            Destination::Filesystem(_) => BackupDriver::Filesystem,
            Destination::S3(_) => BackupDriver::S3,
        }
    }
}

impl BackupTarget {
    /// The typed target of a (normalized) backup section.
    pub fn from_config(driver: BackupDriver, c: &BackupDriverConfig) -> Option<Self> {
        match driver {
            BackupDriver::Multi => {
                let destinations = c
                    .destinations
                    .iter()
                    .flatten()
                    .map(|d| Destination::from_options(d.driver, &d.config))
                    .collect::<Option<Vec<_>>>()?;
                (!destinations.is_empty()).then(|| BackupTarget {
                    strategy: c.strategy.unwrap_or(MultiStrategy::All),
                    concurrency: c.concurrency.unwrap_or(3).max(1) as usize,
                    destinations,
                })
            }
            single => Some(BackupTarget {
                strategy: MultiStrategy::All,
                concurrency: 1,
                destinations: vec![Destination::from_options(single, c)?],
            }),
        }
    }
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
                "connection",
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
    /// s3: where the destination is, when not beside the database: another account or an
    /// S3-compatible server, as `s3://KEY:SECRET@BUCKET/prefix?region=…&endpoint=…` (usually
    /// `${BACKUP_S3}`). Its bucket replaces `bucket`; its prefix goes before `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(example = "s3://backup-account-bucket/offsite?region=eu-west-1")]
    pub connection: Option<crate::manifest::types::ConnectionString>,
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
    /// Where the passphrase comes from, typed; filled by the loader. None only when the checks
    /// report that not exactly one source is given.
    #[serde(skip)]
    #[schemars(skip)]
    pub source: Option<KeySource>,
}

/// Where the backup passphrase comes from: exactly one of `key`, `keyFile`, `keyCommand`.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Key(Secret),
    File(String),
    Command(Command),
}

impl KeySource {
    /// The one source given, or None when there are none or several.
    pub fn from_config(c: &EncryptionConfig) -> Option<Self> {
        match (&c.key, &c.key_file, &c.key_command) {
            (Some(k), None, None) => Some(KeySource::Key(k.clone())),
            (None, Some(f), None) => Some(KeySource::File(f.clone())),
            (None, None, Some(cmd)) => Some(KeySource::Command(cmd.clone())),
            _ => None,
        }
    }
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
