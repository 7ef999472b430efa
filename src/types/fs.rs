//! One atomic file write, shared by the filesystem store, the filesystem cache and backup
//! destinations: the bytes go to a temporary file, which is renamed over the target, so a
//! reader sees the old file or the new one, never half of one. Durable writes also sync the
//! file and then its folder, since a rename survives a crash only once its folder is synced.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a write is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Unix permission bits of the new file.
    pub mode: Option<u32>,
    /// Sync the file and its folder before returning (what a cache can skip).
    pub durable: bool,
    /// Fail with `AlreadyExists` rather than replace a file at the target, in the rename
    /// itself (see `rename_no_replace`; where that is unsupported the caller must exclude
    /// other writers of the target).
    pub create_only: bool,
}

/// Writes `target` through `temp` (which must be on the same filesystem); `fill` writes the
/// content. On any failure the temporary file is removed and the target is untouched.
pub fn write_atomically(
    target: &Path,
    temp: &Path,
    options: WriteOptions,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let written = (|| -> io::Result<()> {
        let mut file = File::create(temp)?;
        fill(&mut file)?;
        if let Some(mode) = options.mode {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if options.durable {
            file.sync_all()?;
        }
        match options.create_only {
            true => match rename_no_replace(temp, target) {
                Ok(true) => {}
                Ok(false) => return Err(io::ErrorKind::AlreadyExists.into()),
                Err(e) if e.kind() == io::ErrorKind::Unsupported => std::fs::rename(temp, target)?,
                Err(e) => return Err(e),
            },
            false => std::fs::rename(temp, target)?,
        }
        if options.durable {
            if let Some(folder) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(folder)?.sync_all()?;
            }
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    written
}

/// Renames `from` to `to` unless something is at `to`, in one atomic step
/// (`renameat2(RENAME_NOREPLACE)`): false when something is. `Unsupported` where the system or
/// the filesystem does not have it.
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(Errno::EINVAL | Errno::ENOSYS) => Err(io::ErrorKind::Unsupported.into()),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (from, to);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A name for a temporary file that no other write, in this process or another, is using:
/// the process id, a counter and a random part.
pub fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        super::id::token(8)
    )
}

/// `path` without its `.` components (`././key` is `key`), for messages.
pub fn tidy(path: &Path) -> std::path::PathBuf {
    let tidy: std::path::PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if tidy.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        tidy
    }
}

/// A file operation that failed, said the way a user reads it: what was done, to which path
/// (without `./` noise), and why in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} {path}: {reason}")]
pub struct IoFailure {
    pub action: &'static str,
    pub path: String,
    pub reason: String,
}

impl IoFailure {
    pub fn new(action: &'static str, path: &Path, e: &io::Error) -> Self {
        Self {
            action,
            path: tidy(path).display().to_string(),
            reason: io_reason(e),
        }
    }
}

/// An I/O error in words ("no such file", not Rust's "entity not found").
pub fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_paths_drop_current_folder_components() {
        assert_eq!(tidy(Path::new("././nokey")), Path::new("nokey"));
        assert_eq!(tidy(Path::new("./a/./b")), Path::new("a/b"));
        assert_eq!(tidy(Path::new("/x/./y")), Path::new("/x/y"));
        assert_eq!(tidy(Path::new("./")), Path::new("."));
    }

    #[test]
    fn a_failed_fill_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"old").unwrap();
        let temp = dir.path().join(temp_name());
        let failed = write_atomically(&target, &temp, WriteOptions::default(), |f| {
            use std::io::Write;
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert!(!temp.exists());
        let options = WriteOptions {
            mode: Some(0o600),
            durable: true,
            create_only: false,
        };
        write_atomically(&target, &temp, options, |f| {
            use std::io::Write;
            f.write_all(b"new")
        })
        .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
