//! The cache plugin: drivers and their options.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

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
    /// The driver with exactly its own options, typed; filled by the loader. None only when the
    /// checks report why (a filesystem cache without a folder).
    #[serde(skip)]
    #[schemars(skip)]
    pub target: Option<CacheTarget>,
}

/// The cache as it runs: the driver's overrides applied to the plugin's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheTarget {
    pub ttl: Duration,
    /// At least 1.
    pub max_size: u64,
    pub include_partitions: bool,
    pub backend: CacheBackend,
}

/// A cache driver and exactly its options.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheBackend {
    Memory {
        /// Smallest value compressed; None: no compression.
        compress_from: Option<u64>,
        eviction: EvictionPolicy,
        log_evictions: bool,
    },
    Filesystem {
        /// Relative to the manifest's folder.
        directory: String,
        prefix: Option<String>,
        compress_from: Option<u64>,
        layout: PartitionStrategy,
    },
    S3 {
        /// None: the database's store.
        bucket: Option<String>,
        key_prefix: String,
        storage_class: Option<StorageClass>,
    },
}

impl CacheTarget {
    pub fn from_config(config: &CacheConfig) -> Option<Self> {
        let c = &config.config;
        let compress_from = |default: bool| {
            c.enable_compression
                .unwrap_or(default)
                .then(|| c.compression_threshold.unwrap_or(1024))
        };
        let backend = match config.driver {
            CacheDriver::Memory => CacheBackend::Memory {
                compress_from: compress_from(false),
                eviction: c.eviction_policy.unwrap_or_default(),
                log_evictions: c.log_evictions.unwrap_or(false),
            },
            CacheDriver::Filesystem => CacheBackend::Filesystem {
                directory: c.directory.clone().or_else(|| c.path.clone())?,
                prefix: c.prefix.clone(),
                compress_from: compress_from(true),
                layout: c.partition_strategy.unwrap_or(config.partition_strategy),
            },
            CacheDriver::S3 => CacheBackend::S3 {
                bucket: c.bucket.clone(),
                key_prefix: c.key_prefix.clone().unwrap_or_else(|| "cache".into()),
                storage_class: c.storage_class,
            },
        };
        Some(CacheTarget {
            ttl: c.ttl.unwrap_or(config.ttl),
            max_size: c.max_size.unwrap_or(config.max_size).max(1),
            include_partitions: config.include_partitions,
            backend,
        })
    }
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
