//! The backup plugin's temporary files, per process: each process works in its own folder
//! under `tempDir`, holding an exclusive lock on a file in it for as long as it lives. The
//! kernel drops the lock when the process dies, however it dies, so a folder whose lock can be
//! taken belongs to a killed process and is removed (at start, and before each backup and
//! prune). A process id alone would not do: a restarted container runs as pid 1 again.

use std::fs::File;
use std::path::{Path, PathBuf};

const PREFIX: &str = "run-";
const LOCK: &str = ".lock";

/// This process's folder of temporary files, removed when dropped.
#[derive(Debug)]
pub(super) struct WorkDir {
    path: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Sweeps `root`, then makes this process's folder in it.
    pub(super) fn create(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        sweep(root);
        let path = root.join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            crate::types::id::token(6)
        ));
        std::fs::create_dir(&path)?;
        let lock = File::create(path.join(LOCK))?;
        lock.lock()?;
        Ok(Self { path, _lock: lock })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the folders of processes that are gone; returns how many.
pub(super) fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            // Not ours, or a folder whose process died before it locked it: only a folder
            // that is old enough to be abandoned.
            if older_than_a_day(&dir) && std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
            continue;
        };
        if lock.try_lock().is_ok() {
            let freed = folder_size(&dir);
            if std::fs::remove_dir_all(&dir).is_ok() {
                tracing::info!(folder = %dir.display(), bytes = freed, "removed the temporary files of a backup process that was killed");
                removed += 1;
            }
        }
    }
    removed
}

fn older_than_a_day(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 86_400)
}

fn folder_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_folder_stays_and_a_dead_one_goes() {
        let root = tempfile::tempdir().unwrap();
        let live = WorkDir::create(root.path()).unwrap();
        std::fs::write(live.path().join("x.s3db-backup"), b"data").unwrap();
        // A folder whose process is gone: its lock file is not locked by anyone.
        let dead = root.path().join("run-999999-abcdef");
        std::fs::create_dir(&dead).unwrap();
        File::create(dead.join(LOCK)).unwrap();
        std::fs::write(dead.join("y.s3db-backup"), b"left behind").unwrap();
        assert_eq!(sweep(root.path()), 1);
        assert!(!dead.exists());
        assert!(live.path().join("x.s3db-backup").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists(), "a folder goes with its process's plugin");
    }
}
