//! The filesystem driver: one file per entry under a folder, shared by every process that points
//! at it (so `s3db-run db` runs share one cache). Files are written to a temporary name and
//! renamed, so a reader never sees half an entry; an unreadable entry is a miss and is removed.
//!
//! Layouts (`partitionStrategy`): `hierarchical` mirrors the key's segments as folders;
//! `flat` keeps every entry in one folder; `temporal` files entries under the day they were
//! written and reads the days the TTL still covers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{CacheDriver, CacheStats, Settings};
use crate::db::codec::{decode, encode};
use crate::manifest::model::PartitionStrategy;

const EXT: &str = "cache";

pub struct FsCache {
    root: PathBuf,
    settings: Settings,
    layout: PartitionStrategy,
    stats: Arc<CacheStats>,
    writes: AtomicU64,
}

impl FsCache {
    pub fn new(
        root: PathBuf,
        settings: &Settings,
        layout: PartitionStrategy,
        stats: Arc<CacheStats>,
    ) -> Result<Self, super::CacheError> {
        std::fs::create_dir_all(&root).map_err(|e| super::CacheError::Folder {
            path: root.display().to_string(),
            reason: crate::types::fs::io_reason(&e),
        })?;
        Ok(Self {
            root,
            settings: settings.clone(),
            layout,
            stats,
            writes: AtomicU64::new(0),
        })
    }

    fn relative(&self, key: &str) -> PathBuf {
        match self.layout {
            PartitionStrategy::Flat => PathBuf::from(format!("{}.{EXT}", encode(key))),
            PartitionStrategy::Hierarchical | PartitionStrategy::Temporal => {
                let mut p: PathBuf = key.split('/').map(encode).collect();
                p.set_extension(EXT);
                p
            }
        }
    }

    fn day_dir(&self, days_ago: i64) -> PathBuf {
        let day = self.settings.clock.now() - chrono::Duration::days(days_ago);
        self.root.join(day.format("%Y-%m-%d").to_string())
    }

    /// Where an entry may be: one place, or (temporal) one per day the TTL covers.
    fn candidates(&self, key: &str) -> Vec<PathBuf> {
        let rel = self.relative(key);
        match self.layout {
            PartitionStrategy::Temporal => {
                let days = i64::try_from(self.settings.ttl.as_secs() / 86_400).unwrap_or(0) + 1;
                (0..=days).map(|d| self.day_dir(d).join(&rel)).collect()
            }
            _ => vec![self.root.join(rel)],
        }
    }

    fn write_path(&self, key: &str) -> PathBuf {
        match self.layout {
            PartitionStrategy::Temporal => self.day_dir(0).join(self.relative(key)),
            _ => self.root.join(self.relative(key)),
        }
    }

    /// Every entry file with its key and modification time.
    fn entries(&self) -> Vec<(PathBuf, String, std::time::SystemTime, u64)> {
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out.into_iter()
            .filter_map(|(path, meta)| {
                let rel = path.strip_prefix(&self.root).ok()?.with_extension("");
                let mut segments: Vec<String> =
                    rel.iter().map(|s| decode(&s.to_string_lossy())).collect();
                if self.layout == PartitionStrategy::Temporal && !segments.is_empty() {
                    segments.remove(0);
                }
                let key = match self.layout {
                    PartitionStrategy::Flat => segments.join(""),
                    _ => segments.join("/"),
                };
                Some((path, key, meta.modified().ok()?, meta.len()))
            })
            .collect()
    }

    fn evict(&self) {
        let mut entries = self.entries();
        let max = usize::try_from(self.settings.max_size).unwrap_or(usize::MAX);
        if entries.len() <= max {
            return;
        }
        entries.sort_by_key(|(_, _, mtime, _)| *mtime);
        let excess = entries.len() - max;
        for (path, _, _, _) in entries.into_iter().take(excess) {
            if std::fs::remove_file(&path).is_ok() {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == EXT) {
            out.push((path, meta));
        }
    }
}

/// A cache entry is rewritten whole (never half-read), but need not survive a crash.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", crate::types::fs::temp_name()));
    crate::types::fs::write_atomically(path, &tmp, Default::default(), |f| {
        std::io::Write::write_all(f, bytes)
    })
}

#[async_trait]
impl CacheDriver for FsCache {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        for path in self.candidates(key) {
            let Ok(entry) = std::fs::read(&path) else {
                continue;
            };
            match self.settings.open(&entry) {
                Ok(payload) => return Some(Bytes::from(payload)),
                Err(()) => {
                    // Expired or corrupt: a miss, and the file goes.
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }

    async fn set(&self, key: &str, value: Bytes) {
        let (sealed, saved) = self.settings.seal(&value);
        self.stats
            .compression_saved
            .fetch_add(saved, Ordering::Relaxed);
        if let Err(e) = write_atomically(&self.write_path(key), &sealed) {
            tracing::warn!(key, error = %e, "could not write a cache entry");
            return;
        }
        // Counting files costs a folder walk, so the bound is enforced every tenth of maxSize
        // writes (every write for small caches).
        let every = (self.settings.max_size / 10).max(1);
        if self.writes.fetch_add(1, Ordering::Relaxed) % every == every - 1 || every == 1 {
            self.evict();
        }
    }

    async fn delete(&self, key: &str) {
        for path in self.candidates(key) {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn delete_prefix(&self, prefix: &str) {
        for (path, key, _, _) in self.entries() {
            if key.starts_with(prefix) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    async fn clear(&self) {
        for (path, _, _, _) in self.entries() {
            let _ = std::fs::remove_file(path);
        }
    }

    async fn usage(&self) -> (u64, u64) {
        let entries = self.entries();
        (entries.len() as u64, entries.iter().map(|e| e.3).sum())
    }
}
