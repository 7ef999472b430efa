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
    validate_key, BulkPut, ETag, ListPage, Object, ObjectMeta, ObjectStore, PutMode, PutOptions,
    StoreError, StoreResult,
};

const TMP_DIR: &str = ".s3db-tmp";
const LOCK_DIR: &str = ".s3db-locks";
const LOCK_STRIPES: u64 = 256;

#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// The sorted keys of recent listing walks, reused for their continuation pages, so paging
    /// through a folder of n objects walks it once, not n/1000 times.
    walked: std::sync::Arc<std::sync::Mutex<Vec<Walked>>>,
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

/// One listing walk: the keys under a prefix, sorted, kept compact (one buffer of names relative
/// to the walked folder, and 8 bytes of position per key) because a folder can hold millions of
/// records: as `String`s a million keys took ~90 MiB, this way ~30 MiB.
#[derive(Debug)]
struct Walked {
    prefix: String,
    /// The folder part of the prefix, which every key starts with (plus a `/` when not empty).
    base: String,
    names: String,
    /// `(start, len)` of each key's name in `names`, in key order.
    sorted: Vec<(u32, u32)>,
    last_used: std::time::Instant,
}

impl Walked {
    fn name(&self, i: usize) -> &str {
        let (start, len) = self.sorted[i];
        &self.names[start as usize..(start + len) as usize]
    }

    fn key(&self, i: usize) -> String {
        if self.base.is_empty() {
            self.name(i).to_string()
        } else {
            format!("{}/{}", self.base, self.name(i))
        }
    }

    /// The index of the first key after `token`.
    fn after(&self, token: &str) -> usize {
        let folder = if self.base.is_empty() {
            String::new()
        } else {
            format!("{}/", self.base)
        };
        match token.strip_prefix(folder.as_str()) {
            Some(rel) => self.sorted.partition_point(|&(start, len)| {
                &self.names[start as usize..(start + len) as usize] <= rel
            }),
            // A token outside the folder sorts wholly before or after every key in it.
            None if token < folder.as_str() => 0,
            None => self.sorted.len(),
        }
    }
}

/// A walk nobody has paged through for this long is dropped: its listing was abandoned.
const WALK_IDLE: std::time::Duration = std::time::Duration::from_secs(300);
/// Walks kept at once, for listings of different prefixes that page at the same time.
const WALKS_KEPT: usize = 4;

impl FsStore {
    /// Opens (creating it if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        for dir in [root.join(TMP_DIR), root.join(LOCK_DIR)] {
            fs::create_dir_all(&dir).map_err(|e| io_error(&dir.display().to_string(), e))?;
        }
        remove_stale_temps(&root.join(TMP_DIR));
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
        // Create-only even in the rename: the key's lock does not hold off a bulk batch's
        // creates, which take none (`bulk_blocking`).
        let create_only = *mode == PutMode::Create;
        let refused = |e: io::Error| match e.kind() {
            // A folder there holds other keys: no object, and none can be written there.
            io::ErrorKind::AlreadyExists if target.is_dir() => {
                io_error(key, io::ErrorKind::IsADirectory.into())
            }
            io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
                key: key.to_string(),
            },
            _ => io_error(key, e),
        };
        if bulk {
            // The data is durable (a group sync) before the rename makes it the object, so a
            // crash leaves the old object or the new one; the folder is synced by `sync`.
            let written = fs::write(&tmp, body)
                .and_then(|()| self.group.wait(&self.root))
                .and_then(|()| match create_only {
                    // Checked under the lock already where the flag is unsupported.
                    true => rename_new(&tmp, &target).or_else(|e| match e.kind() {
                        io::ErrorKind::Unsupported => fs::rename(&tmp, &target),
                        _ => Err(e),
                    }),
                    false => fs::rename(&tmp, &target),
                });
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(refused(e));
            }
            return Ok(ETag::of(body));
        }
        let durable = crate::types::fs::WriteOptions {
            mode: None,
            durable: true,
            create_only,
        };
        crate::types::fs::write_atomically(&target, &tmp, durable, |f| f.write_all(body))
            .map_err(refused)?;
        Ok(ETag::of(body))
    }

    /// A batch of a bulk load: every body to a temporary file, one group sync for them all,
    /// then the renames in order. ~4 system calls an object instead of ~12, and one sync a
    /// batch instead of one for every few objects: what makes a restore as fast as restic's.
    fn bulk_blocking(&self, items: &[BulkPut]) -> StoreResult<Vec<bool>> {
        let tmp_dir = self.root.join(TMP_DIR);
        let mut staged = Staged(Vec::with_capacity(items.len()));
        let mut folders = std::collections::HashSet::new();
        for item in items {
            validate_key(&item.key)?;
            if !item.options.metadata.is_empty() {
                return Err(no_metadata(&item.key));
            }
            let target = self.path(&item.key);
            let parent = target.parent().unwrap_or(&self.root);
            if !folders.contains(parent) {
                fs::create_dir_all(parent).map_err(|e| io_error(&item.key, e))?;
                folders.insert(parent.to_path_buf());
            }
            let tmp = tmp_dir.join(crate::types::fs::temp_name());
            let mut file = File::create_new(&tmp).map_err(|e| io_error(&item.key, e))?;
            staged.0.push((tmp, false));
            file.write_all(&item.body)
                .map_err(|e| io_error(&item.key, e))?;
        }
        let first = items.first().map_or("", |i| i.key.as_str());
        self.group
            .wait(&self.root)
            .map_err(|e| io_error(first, e))?;
        let mut written = Vec::with_capacity(items.len());
        for (item, (from, moved)) in items.iter().zip(&mut staged.0) {
            let target = self.path(&item.key);
            *moved = match item.overwrite {
                true => {
                    // Under the key's lock: ordered with compare-and-swap writers of the key.
                    let _lock = self.lock(&item.key)?;
                    fs::rename(&*from, &target).map_err(|e| io_error(&item.key, e))?;
                    true
                }
                false => match rename_new(from, &target) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                        let _lock = self.lock(&item.key)?;
                        let free = !target.is_file();
                        if free {
                            fs::rename(&*from, &target).map_err(|e| io_error(&item.key, e))?;
                        }
                        free
                    }
                    Err(e) => return Err(io_error(&item.key, e)),
                },
            };
            written.push(*moved);
        }
        Ok(written)
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
        let now = std::time::Instant::now();
        let mut walks = self.walked.lock().unwrap_or_else(|e| e.into_inner());
        walks.retain(|w| now.duration_since(w.last_used) < WALK_IDLE);
        // A first page always walks afresh; continuation pages reuse the walk of that prefix,
        // however long the listing has taken (a walk is replaced, never duplicated).
        let found = match token {
            Some(_) => walks.iter().position(|w| w.prefix == prefix),
            None => None,
        };
        let index = match found {
            Some(i) => i,
            None => {
                // The walk runs without the lock held: other listings go on meanwhile.
                drop(walks);
                let walked =
                    walk_sorted(&start_dir, dir_part, prefix).map_err(|e| io_error(prefix, e))?;
                walks = self.walked.lock().unwrap_or_else(|e| e.into_inner());
                walks.retain(|w| w.prefix != prefix);
                if walks.len() >= WALKS_KEPT {
                    walks.sort_by_key(|w| std::cmp::Reverse(w.last_used));
                    walks.truncate(WALKS_KEPT - 1);
                }
                walks.push(walked);
                walks.len() - 1
            }
        };
        let w = &mut walks[index];
        w.last_used = now;
        let start = token.map_or(0, |t| w.after(t));
        let end = (start + max_keys.max(1)).min(w.sorted.len());
        let keys: Vec<String> = (start..end).map(|i| w.key(i)).collect();
        let more = end < w.sorted.len();
        if !more {
            // The listing is done: its walk is not needed any more.
            walks.remove(index);
        }
        drop(walks);
        // The last key walked, listed or deleted since, is where the next page starts.
        let next = if more { keys.last().cloned() } else { None };
        let mut page = ListPage::default();
        for key in keys {
            // A file deleted since the walk is simply not listed.
            if let Some(body) = self.read(&key)? {
                page.objects.push(ObjectMeta {
                    etag: ETag::of(&body),
                    size: body.len() as u64,
                    key,
                });
            }
        }
        page.next = next;
        Ok(page)
    }
}

/// Walks `dir` (the folder `base` of the store) for the keys that start with `prefix`, sorted.
fn walk_sorted(dir: &Path, base: &str, prefix: &str) -> io::Result<Walked> {
    let rest = if base.is_empty() {
        prefix
    } else {
        prefix.get(base.len() + 1..).unwrap_or("")
    };
    let mut w = Walked {
        prefix: prefix.to_string(),
        base: base.to_string(),
        names: String::new(),
        sorted: Vec::new(),
        last_used: std::time::Instant::now(),
    };
    walk(dir, "", &mut |name: &str| {
        if !name.starts_with(rest) || (base.is_empty() && name.starts_with(".s3db-")) {
            return Ok(());
        }
        let start = u32::try_from(w.names.len()).map_err(|_| too_many())?;
        let len = u32::try_from(name.len()).map_err(|_| too_many())?;
        start.checked_add(len).ok_or_else(too_many)?;
        w.names.push_str(name);
        w.sorted.push((start, len));
        Ok(())
    })?;
    let names = &w.names;
    w.sorted.sort_unstable_by(|a, b| {
        names[a.0 as usize..(a.0 + a.1) as usize].cmp(&names[b.0 as usize..(b.0 + b.1) as usize])
    });
    w.names.shrink_to_fit();
    w.sorted.shrink_to_fit();
    Ok(w)
}

fn too_many() -> io::Error {
    io::Error::other("more than 4 GiB of key names in one listing")
}

/// Calls `found` with the path, relative to the walk's start, of every file under `dir`.
fn walk(dir: &Path, rel: &str, found: &mut dyn FnMut(&str) -> io::Result<()>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let mut key = String::with_capacity(rel.len() + 64);
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        key.clear();
        if !rel.is_empty() {
            key.push_str(rel);
            key.push('/');
        }
        key.push_str(name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), &key, found)?;
        } else if kind.is_file() {
            found(&key)?;
        }
    }
    Ok(())
}

fn io_error(key: &str, e: io::Error) -> StoreError {
    StoreError::backend("filesystem", key, e)
}

/// A temporary file lives for one write (milliseconds; a bulk batch's, its sync): one older
/// than this is a killed writer's.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes killed writers' temporary files (a restore killed mid-batch leaves up to a
/// thousand), when a store opens: every command and every runner start.
fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let age = entry.metadata().and_then(|m| m.modified()).ok();
        if age.and_then(|t| now.duration_since(t).ok()) > Some(STALE_TEMP) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Renames `from` to `to` unless an object is there (`AlreadyExists`), in one step that needs
/// no lock (`RENAME_NOREPLACE`): a writer holding the key's lock finds the object there or
/// not, as if this came before or after it. Every create-only write renames this way, since a
/// bulk batch's creates take no lock. `Unsupported` where the filesystem lacks the flag.
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    match crate::types::fs::rename_no_replace(from, to)? {
        true => Ok(()),
        // A folder there holds other keys: no object, and none can be written there.
        false if to.is_dir() => Err(io::ErrorKind::IsADirectory.into()),
        false => Err(io::ErrorKind::AlreadyExists.into()),
    }
}

/// The temporary files of a bulk batch not (yet) renamed into place, removed when it ends:
/// those of objects kept as they were, or all of them when the batch fails.
struct Staged(Vec<(PathBuf, bool)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, moved) in &self.0 {
            if !moved {
                let _ = fs::remove_file(tmp);
            }
        }
    }
}

/// Dropping it would lose the values of an s3db.js record.
fn no_metadata(key: &str) -> StoreError {
    StoreError::backend(
        "fs",
        key,
        "the filesystem store cannot keep object metadata (the s3db.js record format needs an S3 or memory store)",
    )
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
            return Err(no_metadata(key));
        }
        let (this, k, bulk) = (self.clone(), key.to_string(), options.bulk);
        blocking(move || this.write_blocking(&k, &body, &mode, bulk)).await
    }

    fn writes_batches(&self) -> bool {
        true
    }

    async fn put_bulk(&self, items: Vec<BulkPut>) -> StoreResult<Vec<bool>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        blocking(move || this.bulk_blocking(&items)).await
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn put(store: &FsStore, key: &str) {
        store
            .put(
                key,
                Bytes::from_static(b"x"),
                PutMode::Overwrite,
                &PutOptions::default(),
            )
            .await
            .unwrap();
    }

    async fn keys(
        store: &FsStore,
        prefix: &str,
        token: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let page = store.list(prefix, token, 2).await.unwrap();
        (page.objects.into_iter().map(|o| o.key).collect(), page.next)
    }

    fn item(key: &str, overwrite: bool, metadata: bool) -> BulkPut {
        let mut options = PutOptions::default();
        if metadata {
            options.metadata.insert("0".into(), "v".into());
        }
        BulkPut {
            key: key.into(),
            body: Bytes::from(key.to_string()),
            overwrite,
            options,
        }
    }

    fn temp_files(dir: &Path) -> usize {
        fs::read_dir(dir.join(TMP_DIR)).unwrap().count()
    }

    /// A bulk batch stages every object as a temporary file: none may stay behind, whether
    /// its object was kept as it was or the batch failed half-way.
    #[tokio::test]
    async fn bulk_batches_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        put(&store, "r/kept").await;
        let items = vec![item("r/new", false, false), item("r/kept", false, false)];
        assert_eq!(store.put_bulk(items).await.unwrap(), [true, false]);
        assert_eq!(temp_files(dir.path()), 0);
        assert_eq!(store.get("r/kept").await.unwrap().unwrap().body, "x");

        let items = vec![item("r/one", false, false), item("r/two", false, true)];
        let err = store.put_bulk(items).await.unwrap_err().to_string();
        assert!(err.contains("cannot keep object metadata"), "{err}");
        assert_eq!(store.get("r/one").await.unwrap(), None);
        assert_eq!(temp_files(dir.path()), 0);

        // A folder at the key's path (it holds `r/dir/x`) is no object, and none can be
        // written there: an error, not a record "kept as it was".
        put(&store, "r/dir/x").await;
        let items = vec![item("r/a", false, false), item("r/dir", false, false)];
        let err = store.put_bulk(items).await.unwrap_err().to_string();
        assert!(err.contains("r/dir"), "{err}");
        assert_eq!(temp_files(dir.path()), 0);
    }

    /// A killed writer's temporary files go when the store next opens; a live writer's stay.
    #[tokio::test]
    async fn opening_removes_killed_writers_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        drop(FsStore::open(dir.path()).unwrap());
        let (killed, live) = (
            dir.path().join(TMP_DIR).join("1-killed"),
            dir.path().join(TMP_DIR).join("2-live"),
        );
        for f in [&killed, &live] {
            fs::write(f, b"half").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - 2 * STALE_TEMP;
        File::options()
            .write(true)
            .open(&killed)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        drop(FsStore::open(dir.path()).unwrap());
        assert!(!killed.exists());
        assert!(live.exists());
    }

    #[tokio::test]
    async fn pages_follow_key_order_across_folders() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        // '-' < '/' < '0': a folder's keys sort between its siblings, not before them.
        for k in ["r/a0", "r/a/b", "r/a-c", "r/a/a", "r/b", "s/x"] {
            put(&store, k).await;
        }
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = keys(&store, "r/", token.as_deref()).await;
            all.extend(page);
            match next {
                Some(n) => token = Some(n),
                None => break,
            }
        }
        assert_eq!(all, ["r/a-c", "r/a/a", "r/a/b", "r/a0", "r/b"]);
        // A finished listing leaves no walk behind.
        assert!(store.walked.lock().unwrap().is_empty());
        // A token from outside the walked folder.
        assert_eq!(
            store
                .list("r/a/", Some("r/a-"), 10)
                .await
                .unwrap()
                .objects
                .len(),
            2
        );
        assert!(store
            .list("r/a/", Some("r/a0"), 10)
            .await
            .unwrap()
            .objects
            .is_empty());
    }

    #[tokio::test]
    async fn interleaved_listings_each_keep_their_walk() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for k in ["a/1", "a/2", "a/3", "a/4", "b/1", "b/2", "b/3", "b/4"] {
            put(&store, k).await;
        }
        let (_, a) = keys(&store, "a/", None).await;
        let (_, b) = keys(&store, "b/", None).await;
        // Written after both walks: a listing that walked again would list them.
        put(&store, "a/35").await;
        put(&store, "b/35").await;
        let (a_rest, _) = keys(&store, "a/", a.as_deref()).await;
        let (b_rest, _) = keys(&store, "b/", b.as_deref()).await;
        assert_eq!(a_rest, ["a/3", "a/4"]);
        assert_eq!(b_rest, ["b/3", "b/4"]);
    }
}
