//! The filesystem backend, the embedded default: one file per object under a root folder.
//!
//! Writes go to a temporary file that is fsynced and renamed over the target, so a reader — or a
//! writer killed at any point — sees the old object or the new one, never a torn one. Every write
//! of a key holds an exclusive lock (`flock` on one of 256 lock files, chosen by the key's hash),
//! which makes create-only and compare-and-swap puts atomic between threads and between
//! processes. ETags are content hashes, so they need no bookkeeping beside the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    validate_key, ETag, ListPage, Object, ObjectMeta, ObjectStore, PutMode, PutOptions, StoreError,
    StoreResult,
};

const TMP_DIR: &str = ".s3db-tmp";
const LOCK_DIR: &str = ".s3db-locks";
const LOCK_STRIPES: u64 = 256;

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// The sorted keys of the last listing walk, reused for its continuation pages, so paging
    /// through a folder of n objects walks it once, not n/1000 times.
    walked: std::sync::Arc<std::sync::Mutex<Option<Walked>>>,
    /// Group commit for bulk writes: one `syncfs` makes every temporary file written before it
    /// durable, so concurrent writers share it.
    group: std::sync::Arc<GroupSync>,
}

#[derive(Debug, Default)]
struct GroupSync {
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Writers that asked for a sync, numbered; the last number given.
    asked: u64,
    /// Every writer up to this number has its data on disk.
    synced: u64,
    syncing: bool,
}

impl GroupSync {
    /// Returns once a `syncfs` that began after this call has finished: whatever the caller
    /// wrote before calling is then durable. A writer that finds none running runs one for
    /// everyone waiting.
    fn wait(&self, root: &Path) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.asked += 1;
        let mine = st.asked;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if st.syncing {
                st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            let covers = st.asked;
            drop(st);
            let result =
                File::open(root).and_then(|f| nix::unistd::syncfs(&f).map_err(io::Error::from));
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.syncing = false;
            if result.is_ok() {
                st.synced = st.synced.max(covers);
            }
            self.done.notify_all();
            result?;
        }
    }
}

#[derive(Debug)]
struct Walked {
    prefix: String,
    at: std::time::Instant,
    keys: std::sync::Arc<Vec<String>>,
}

/// How long a walk serves continuation pages. A key created meanwhile may be missed by that
/// listing (S3 listings are not snapshots either); a key deleted meanwhile is skipped.
const WALK_REUSE: std::time::Duration = std::time::Duration::from_secs(30);

impl FsStore {
    /// Opens (creating it if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        for dir in [root.join(TMP_DIR), root.join(LOCK_DIR)] {
            fs::create_dir_all(&dir).map_err(|e| io_error(&dir.display().to_string(), e))?;
        }
        Ok(Self {
            root,
            walked: Default::default(),
            group: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.split('/'));
        p
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in key.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        self.root
            .join(LOCK_DIR)
            .join(format!("{:02x}", h % LOCK_STRIPES))
    }

    fn lock(&self, key: &str) -> StoreResult<File> {
        let path = self.lock_path(key);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(key, e))?;
        file.lock().map_err(|e| io_error(key, e))?;
        Ok(file)
    }

    fn read(&self, key: &str) -> StoreResult<Option<Bytes>> {
        match fs::read(self.path(key)) {
            Ok(body) => Ok(Some(Bytes::from(body))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory at the object's path means "no such object" (it holds other keys).
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(io_error(key, e)),
        }
    }

    fn write_blocking(
        &self,
        key: &str,
        body: &[u8],
        mode: &PutMode,
        bulk: bool,
    ) -> StoreResult<ETag> {
        let _lock = self.lock(key)?;
        let current = self.read(key)?;
        match (mode, &current) {
            (PutMode::Create, Some(_)) => {
                return Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                })
            }
            (PutMode::Update(expected), current)
                if current.as_deref().map(ETag::of).as_ref() != Some(expected) =>
            {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
        let target = self.path(key);
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| io_error(key, e))?;
        let tmp = self.root.join(TMP_DIR).join(crate::types::fs::temp_name());
        if bulk {
            // The data is durable (a group sync) before the rename makes it the object, so a
            // crash leaves the old object or the new one; the folder is synced by `sync`.
            let written = fs::write(&tmp, body)
                .and_then(|()| self.group.wait(&self.root))
                .and_then(|()| fs::rename(&tmp, &target));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(io_error(key, e));
            }
            return Ok(ETag::of(body));
        }
        let durable = crate::types::fs::WriteOptions {
            mode: None,
            durable: true,
        };
        crate::types::fs::write_atomically(&target, &tmp, durable, |f| f.write_all(body))
            .map_err(|e| io_error(key, e))?;
        Ok(ETag::of(body))
    }

    fn delete_blocking(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()> {
        let _lock = self.lock(key)?;
        if let Some(expected) = if_match {
            match self.read(key)? {
                None => {
                    return Err(StoreError::NotFound {
                        key: key.to_string(),
                    })
                }
                Some(body) if &ETag::of(&body) != expected => {
                    return Err(StoreError::PreconditionFailed {
                        key: key.to_string(),
                    })
                }
                Some(_) => {}
            }
        }
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune_empty_dirs(&path);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(key, e)),
        }
    }

    /// Removes folders a delete left empty, up to the root, so listings stay fast. A folder that
    /// another writer is filling at the same moment makes `remove_dir` fail, which is fine.
    fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    fn list_blocking(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage> {
        // Walk only the deepest folder the prefix names in full.
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start_dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)
        };
        let reused = token.and_then(|_| {
            let walked = self.walked.lock().unwrap_or_else(|e| e.into_inner());
            walked
                .as_ref()
                .filter(|w| w.prefix == prefix && w.at.elapsed() < WALK_REUSE)
                .map(|w| w.keys.clone())
        });
        let keys = match reused {
            Some(keys) => keys,
            None => {
                let mut keys = Vec::new();
                walk(&start_dir, dir_part, &mut keys).map_err(|e| io_error(prefix, e))?;
                keys.retain(|k| k.starts_with(prefix) && !k.starts_with(".s3db-"));
                keys.sort();
                let keys = std::sync::Arc::new(keys);
                *self.walked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Walked {
                    prefix: prefix.to_string(),
                    at: std::time::Instant::now(),
                    keys: keys.clone(),
                });
                keys
            }
        };
        let start = match token {
            Some(t) => keys.partition_point(|k| k.as_str() <= t),
            None => 0,
        };
        let max = max_keys.max(1);
        let mut page = ListPage::default();
        for key in keys.iter().skip(start) {
            if page.objects.len() == max {
                page.next = page.objects.last().map(|m| m.key.clone());
                break;
            }
            // A file deleted since the walk is simply not listed.
            if let Some(body) = self.read(key)? {
                page.objects.push(ObjectMeta {
                    key: key.clone(),
                    etag: ETag::of(&body),
                    size: body.len() as u64,
                });
            }
        }
        Ok(page)
    }
}

fn walk(dir: &Path, key_prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let key = if key_prefix.is_empty() {
            name
        } else {
            format!("{key_prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if kind.is_file() {
            out.push(key);
        }
    }
    Ok(())
}

fn io_error(key: &str, e: io::Error) -> StoreError {
    StoreError::backend("filesystem", key, e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::backend("filesystem", "", format!("worker thread failed: {e}")))?
}

#[async_trait]
impl ObjectStore for FsStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        validate_key(key)?;
        let (this, k) = (self.clone(), key.to_string());
        let body = blocking(move || this.read(&k)).await?;
        Ok(body.map(|body| Object {
            meta: ObjectMeta {
                key: key.to_string(),
                etag: ETag::of(&body),
                size: body.len() as u64,
            },
            body,
            metadata: Default::default(),
        }))
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|o| o.meta))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
        options: &PutOptions,
    ) -> StoreResult<ETag> {
        validate_key(key)?;
        if !options.metadata.is_empty() {
            // Dropping it would lose the values of an s3db.js record.
            return Err(StoreError::backend(
                "fs",
                key,
                "the filesystem store cannot keep object metadata (the s3db.js record format needs an S3 or memory store)",
            ));
        }
        let (this, k, bulk) = (self.clone(), key.to_string(), options.bulk);
        blocking(move || this.write_blocking(&k, &body, &mode, bulk)).await
    }

    async fn sync(&self) -> StoreResult<()> {
        let this = self.clone();
        blocking(move || this.group.wait(&this.root).map_err(|e| io_error("", e))).await
    }

    async fn delete(&self, key: &str, if_match: Option<&ETag>) -> StoreResult<()> {
        validate_key(key)?;
        let (this, k, m) = (self.clone(), key.to_string(), if_match.cloned());
        blocking(move || this.delete_blocking(&k, m.as_ref())).await
    }

    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> StoreResult<ListPage> {
        let (this, p, t) = (self.clone(), prefix.to_string(), token.map(str::to_string));
        blocking(move || this.list_blocking(&p, t.as_deref(), max_keys)).await
    }
}
