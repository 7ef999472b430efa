//! Where backups are kept: the `filesystem` and `s3` drivers behind one small trait, and path
//! templates. The `multi` driver is a list of these with a strategy (in `mod.rs`).
//!
//! Owns: moving whole files and small objects to and from a destination, listing, deleting.
//! Never: knows the archive format or the database.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Datelike};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::manifest::hex;
use crate::manifest::model;
use crate::store::connection::S3Location;
use crate::store::s3::S3Store;
use crate::store::{ObjectStore, PutMode, PutOptions, StoreError};

/// A place that holds backup files, addressed by `/`-separated keys.
#[async_trait]
pub trait Destination: Send + Sync {
    /// Where it is (no credentials).
    fn describe(&self) -> String;
    /// Where a backup in `folder` (as `folder` renders it) is, for people: `describe` with the
    /// templates filled.
    fn stored_at(&self, folder: &str) -> String;
    /// The folder/prefix a backup started at `at` goes to (`path` with its templates filled).
    fn folder(&self, id: &str, kind: &str, at: &DateTime<chrono_tz::Tz>) -> String;
    /// The fixed part of `path`, under which every backup is found.
    fn root(&self) -> String;
    /// Copies a local file to `key`, completely or not at all.
    async fn upload(&self, key: &str, file: &Path) -> Result<(), DestinationError>;
    /// Writes a small object; `create_only` fails with `Err(None)` when it exists.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        create_only: bool,
    ) -> Result<(), Option<DestinationError>>;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, DestinationError>;
    /// Streams `key` into `to` (when given) and returns its SHA-256 and size; None when absent.
    async fn fetch(
        &self,
        key: &str,
        to: Option<&Path>,
    ) -> Result<Option<(String, u64)>, DestinationError>;
    /// Every key under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, DestinationError>;
    async fn delete(&self, key: &str) -> Result<(), DestinationError>;
    /// getStorageInfo: the driver and its settings, and what it can tell about space.
    async fn storage_info(&self) -> Value;
}

/// Why a destination could not be built, written, read or listed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Io(#[from] crate::types::fs::IoFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(&'static str),
    #[error("a file task failed: {0}")]
    Task(String),
}

impl DestinationError {
    fn io(action: &'static str, path: &Path, e: &std::io::Error) -> Self {
        DestinationError::Io(crate::types::fs::IoFailure::new(action, path, e))
    }
}

/// Builds one destination.
pub async fn build(
    target: &model::Destination,
    base_dir: &Path,
    db_location: Option<S3Location>,
) -> Result<Box<dyn Destination>, DestinationError> {
    match target {
        model::Destination::Filesystem(fs) => Ok(Box::new(FsDestination {
            base_dir: base_dir.to_path_buf(),
            template: fs.path.clone(),
            file_mode: fs.file_mode,
            dir_mode: fs.dir_mode,
        })),
        model::Destination::S3(s3) => {
            // Without a path, backups of a database go under its own prefix below `backups/`,
            // so databases sharing a bucket never list each other's backups, and a deleted
            // database prefix does not take its backups with it.
            let default_path = match &db_location {
                Some(db) if !db.prefix.trim_matches('/').is_empty() => {
                    format!("backups/{}/", db.prefix.trim_matches('/'))
                }
                _ => "backups/".to_string(),
            };
            let path = s3.path.clone().unwrap_or(default_path);
            let path = path.trim_start_matches("./").trim_start_matches('/');
            let (location, template) = match (&s3.location, db_location, &s3.bucket) {
                // Its own place: another account or server, its prefix before the path.
                (Some(own), _, _) => {
                    let root = own.prefix.trim_matches('/');
                    let template = if root.is_empty() {
                        path.to_string()
                    } else {
                        format!("{root}/{path}")
                    };
                    let location = S3Location {
                        prefix: String::new(),
                        ..(**own).clone()
                    };
                    (location, template)
                }
                (None, Some(db), bucket) => (
                    S3Location {
                        bucket: bucket.clone().unwrap_or(db.bucket.clone()),
                        prefix: String::new(),
                        ..db
                    },
                    path.to_string(),
                ),
                (None, None, Some(bucket)) => (
                    S3Location {
                        bucket: bucket.clone(),
                        prefix: String::new(),
                        region: std::env::var("AWS_REGION").ok(),
                        endpoint: std::env::var("AWS_ENDPOINT_URL").ok(),
                        force_path_style: std::env::var("AWS_ENDPOINT_URL").is_ok(),
                        credentials: None,
                        requests: Default::default(),
                    },
                    path.to_string(),
                ),
                (None, None, None) => {
                    return Err(DestinationError::Config(
                        "the s3 backup driver needs a `bucket` or a `connection` when the database is not on S3",
                    ))
                }
            };
            Ok(Box::new(S3Destination {
                store: S3Store::connect(location).await,
                template,
                options: PutOptions {
                    storage_class: s3
                        .storage_class
                        .and_then(|c| serde_json::to_value(c).ok())
                        .and_then(|v| v.as_str().map(str::to_string)),
                    server_side_encryption: s3.server_side.as_ref().map(|s| match s {
                        model::ServerSide::Aes256 => crate::store::ServerSideEncryption::Aes256,
                        model::ServerSide::Kms { key_id } => {
                            crate::store::ServerSideEncryption::Kms {
                                key_id: key_id.clone(),
                            }
                        }
                    }),
                    ..Default::default()
                },
            }))
        }
    }
}

/// Fills a path template.
pub fn render(template: &str, id: &str, kind: &str, at: &DateTime<chrono_tz::Tz>) -> String {
    let mut out = template
        .replace("{date}", &at.format("%Y-%m-%d").to_string())
        .replace("{time}", &at.format("%H-%M-%S").to_string())
        .replace("{year}", &format!("{:04}", at.year()))
        .replace("{month}", &format!("{:02}", at.month()))
        .replace("{day}", &format!("{:02}", at.day()))
        .replace("{backupId}", id)
        .replace("{type}", kind);
    if !out.is_empty() && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The part of a template before its first variable, cut back to a folder.
pub fn fixed_root(template: &str) -> String {
    if !template.contains('{') {
        return render(
            template,
            "",
            "",
            &chrono::Utc::now().with_timezone(&chrono_tz::UTC),
        );
    }
    let fixed = template.split('{').next().unwrap_or("");
    match fixed.rfind('/') {
        Some(i) => fixed[..=i].to_string(),
        None => String::new(),
    }
}

pub struct FsDestination {
    base_dir: PathBuf,
    template: String,
    file_mode: Option<u32>,
    dir_mode: Option<u32>,
}

impl FsDestination {
    fn path(&self, key: &str) -> PathBuf {
        self.base_dir.join(key)
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), DestinationError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        if let Some(mode) = self.dir_mode {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(mode);
        }
        builder
            .create(parent)
            .map_err(|e| DestinationError::io("create", parent, &e))
    }

    /// Writes through a temporary file and a rename, so a reader never sees half a file.
    fn write_atomically(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), DestinationError> {
        self.ensure_parent(path)?;
        let tmp = path.with_extension(format!("tmp-{}", crate::types::fs::temp_name()));
        let options = crate::types::fs::WriteOptions {
            mode: self.file_mode,
            durable: true,
            create_only: false,
        };
        let result = crate::types::fs::write_atomically(path, &tmp, options, fill);
        result.map_err(|e| DestinationError::io("write", path, &e))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DestinationError> + Send + 'static,
) -> Result<T, DestinationError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DestinationError::Task(e.to_string()))?
}

#[async_trait]
impl Destination for FsDestination {
    fn describe(&self) -> String {
        format!("filesystem:{}", self.template)
    }

    fn stored_at(&self, folder: &str) -> String {
        format!("filesystem:{folder}")
    }

    fn folder(&self, id: &str, kind: &str, at: &DateTime<chrono_tz::Tz>) -> String {
        render(&self.template, id, kind, at)
    }

    fn root(&self) -> String {
        fixed_root(&self.template)
    }

    async fn upload(&self, key: &str, file: &Path) -> Result<(), DestinationError> {
        let this = self.clone_parts();
        let (path, src) = (self.path(key), file.to_path_buf());
        blocking(move || {
            this.write_atomically(&path, |out| {
                let mut input = std::fs::File::open(&src)?;
                std::io::copy(&mut input, out).map(|_| ())
            })
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        create_only: bool,
    ) -> Result<(), Option<DestinationError>> {
        let this = self.clone_parts();
        let path = self.path(key);
        blocking(move || {
            if !create_only {
                return this
                    .write_atomically(&path, |f| f.write_all(&body))
                    .map(|_| true);
            }
            this.ensure_parent(&path)?;
            // create_new is atomic: of two writers, one gets AlreadyExists.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&body)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| DestinationError::io("write", &path, &e))?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(DestinationError::io("create", &path, &e)),
            }
        })
        .await
        .map_err(Some)
        .and_then(|created| if created { Ok(()) } else { Err(None) })
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, DestinationError> {
        let path = self.path(key);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DestinationError::io("read", &path, &e)),
        }
    }

    async fn fetch(
        &self,
        key: &str,
        to: Option<&Path>,
    ) -> Result<Option<(String, u64)>, DestinationError> {
        let (path, to) = (self.path(key), to.map(Path::to_path_buf));
        blocking(move || {
            let mut input = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(DestinationError::io("read", &path, &e)),
            };
            let mut hasher = super::archive::Hashing::new(match &to {
                Some(to) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(to)
                        .map_err(|e| DestinationError::io("create", to, &e))?,
                )) as Box<dyn Write>,
                None => Box::new(std::io::sink()),
            });
            std::io::copy(&mut input, &mut hasher)
                .and_then(|_| hasher.flush())
                .map_err(|e| DestinationError::io("read", &path, &e))?;
            let (_, sha, size) = hasher.finish();
            Ok(Some((sha, size)))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        let root = self.path(prefix);
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![(root, prefix)];
            while let Some((dir, key)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(DestinationError::io("list", &dir, &e)),
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = format!("{key}{name}");
                    match entry.file_type() {
                        Ok(t) if t.is_dir() => stack.push((entry.path(), format!("{child}/"))),
                        Ok(_) => out.push(child),
                        Err(_) => {}
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DestinationError::io("delete", &path, &e)),
        }
    }

    async fn storage_info(&self) -> Value {
        let root = self.path(&self.root());
        let space = nix::sys::statvfs::statvfs(&root).ok().map(|s| {
            json!({
                "availableBytes": s.blocks_available() * s.fragment_size(),
                "totalBytes": s.blocks() * s.fragment_size(),
            })
        });
        json!({
            "driver": "filesystem",
            "path": self.template,
            "root": root.display().to_string(),
            "permissions": self.file_mode.map(|m| format!("{m:o}")),
            "directoryPermissions": self.dir_mode.map(|m| format!("{m:o}")),
            "space": space,
        })
    }
}

impl FsDestination {
    fn clone_parts(&self) -> Self {
        Self {
            base_dir: self.base_dir.clone(),
            template: self.template.clone(),
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
        }
    }
}

pub struct S3Destination {
    store: S3Store,
    template: String,
    options: PutOptions,
}

fn s3_error(e: StoreError) -> DestinationError {
    DestinationError::Store(e)
}

#[async_trait]
impl Destination for S3Destination {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.store.bucket(), self.template)
    }

    fn stored_at(&self, folder: &str) -> String {
        format!("s3://{}/{folder}", self.store.bucket())
    }

    fn folder(&self, id: &str, kind: &str, at: &DateTime<chrono_tz::Tz>) -> String {
        render(&self.template, id, kind, at)
    }

    fn root(&self) -> String {
        fixed_root(&self.template)
    }

    async fn upload(&self, key: &str, file: &Path) -> Result<(), DestinationError> {
        self.store
            .put_file(key, file, &self.options)
            .await
            .map(|_| ())
            .map_err(s3_error)
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        create_only: bool,
    ) -> Result<(), Option<DestinationError>> {
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let options = PutOptions {
            content_type: Some("application/json".into()),
            ..self.options.clone()
        };
        match self.store.put(key, body, mode, &options).await {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => Err(None),
            Err(e) => Err(Some(s3_error(e))),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, DestinationError> {
        self.store
            .get(key)
            .await
            .map(|o| o.map(|o| o.body))
            .map_err(s3_error)
    }

    async fn fetch(
        &self,
        key: &str,
        to: Option<&Path>,
    ) -> Result<Option<(String, u64)>, DestinationError> {
        let mut out = match to {
            Some(to) => Some(std::io::BufWriter::new(
                std::fs::File::create(to).map_err(|e| DestinationError::io("create", to, &e))?,
            )),
            None => None,
        };
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let found = self
            .store
            .read_stream(key, |chunk| {
                hasher.update(chunk);
                size += chunk.len() as u64;
                match &mut out {
                    Some(w) => w.write_all(chunk),
                    None => Ok(()),
                }
            })
            .await
            .map_err(s3_error)?;
        if let Some(mut w) = out {
            w.flush().map_err(|e| {
                DestinationError::io("write", to.unwrap_or(Path::new("the download")), &e)
            })?;
        }
        Ok(found.then(|| (hex(&hasher.finalize()), size)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, DestinationError> {
        Ok(crate::store::list_all(&self.store, prefix)
            .await
            .map_err(s3_error)?
            .into_iter()
            .map(|m| m.key)
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), DestinationError> {
        self.store.delete(key, None).await.map_err(s3_error)
    }

    async fn storage_info(&self) -> Value {
        json!({
            "driver": "s3",
            "bucket": self.store.bucket(),
            "path": self.template,
            "storageClass": self.options.storage_class,
            "serverSideEncryption": match &self.options.server_side_encryption {
                Some(crate::store::ServerSideEncryption::Aes256) => Some("AES256"),
                Some(crate::store::ServerSideEncryption::Kms { .. }) => Some("aws:kms"),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn templates_fill_every_variable_in_the_zone() {
        let at = chrono_tz::Europe::Berlin
            .with_ymd_and_hms(2024, 3, 5, 14, 30, 45)
            .unwrap();
        assert_eq!(
            render(
                "b/{year}/{month}/{day}/{date}_{time}/{type}/{backupId}",
                "full-x",
                "full",
                &at
            ),
            "b/2024/03/05/2024-03-05_14-30-45/full/full-x/"
        );
        assert_eq!(fixed_root("./backups/{date}/"), "./backups/");
        assert_eq!(fixed_root("backups"), "backups/");
        assert_eq!(fixed_root("a/b/c{date}"), "a/b/");
    }
}
