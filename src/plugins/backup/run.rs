//! Taking a backup: choosing the resources and the parent, producing the archive and its index, uploading to every destination, and the metadata and marker that make it complete.

use super::*;

/// The longest backup label: ids add 27 characters and the archive suffix, and file names stop
/// at 255 bytes.
pub const MAX_LABEL: usize = 64;

/// Words after `backup` that are commands (or reserved for them), never labels.
pub const RESERVED_LABELS: &[&str] = &[
    "list", "delete", "check", "verify", "status", "info", "prune", "stats", "diff", "restore",
];

impl Backup {
    pub(super) fn selected_resources(
        &self,
        resources: Option<&[String]>,
    ) -> Result<Vec<String>, BackupError> {
        let all = self.inner.db.resource_names();
        if let Some(list) = resources {
            for r in list {
                if !all.contains(r) {
                    return Err(BackupError::Config(format!(
                        "resource `{r}` does not exist (resources: {})",
                        all.join(", ")
                    )));
                }
            }
            return Ok(list.to_vec());
        }
        let c = &self.inner.config;
        Ok(all
            .into_iter()
            .filter(|r| c.include.as_ref().is_none_or(|i| i.contains(r)))
            .filter(|r| !c.exclude.contains(r))
            .collect())
    }

    /// backup(type, {resources}): `incremental` stores what changed since the newest completed
    /// backup of the same resources; any other name is a full backup with that label.
    pub async fn backup(
        &self,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let id = backup_id(label, Utc::now());
        self.backup_with_id(id, label, resources).await
    }

    /// Who holds the database's backup lease and until when, if anyone does.
    pub async fn lock_holder(&self) -> Result<Option<(String, String)>, BackupError> {
        Ok(self.lease().holder().await?.map(|h| (h.holder, h.until)))
    }

    /// A backup label is 1 to 64 letters, digits, `-` and `_` (it names files and folders,
    /// whose names are limited), and not one of the words the command line reads as a
    /// command (`backup list` lists, it never makes a backup named `list`).
    pub fn check_label(label: &str) -> Result<(), BackupError> {
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(BackupError::Config(format!(
                "backup type `{label}` must be letters, digits, `-` or `_`"
            )));
        }
        if label.len() > MAX_LABEL {
            return Err(BackupError::Config(format!(
                "backup type `{}…` is {} characters long; the most is {MAX_LABEL}",
                &label[..16],
                label.len()
            )));
        }
        if RESERVED_LABELS.contains(&label) {
            return Err(BackupError::Config(format!(
                "`{label}` is a command, not a backup type: say `full`, `incremental` or a label of your own"
            )));
        }
        Ok(())
    }

    /// Reserves an id for a backup that `backup_with_id` then runs (the API answers with it
    /// before the backup ends).
    pub fn new_id(label: &str) -> String {
        backup_id(label, Utc::now())
    }

    pub async fn backup_with_id(
        &self,
        id: String,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let _forget = Forget(self.inner.shared.clone(), id.clone());
        let result = self.run_with_id(&id, label, resources).await;
        if let Err(e) = &result {
            if !matches!(e, BackupError::Cancelled(_)) && !self.inner.shared.started(&id) {
                if matches!(e, BackupError::Locked { .. }) {
                    // Another runner is backing up: nothing failed, so nothing pages anyone.
                    tracing::warn!(backup = %id, error = %e, "backup not started: another one is running");
                } else {
                    // Refused before it started (a bad request, a missing key): an error that
                    // onBackupError and the metrics should see.
                    let stats = json!({ "backupId": id, "type": label, "error": e.to_string() });
                    self.emit("backup_error", &id, label, stats.clone());
                    self.callback(&self.inner.config.on_backup_error, stats)
                        .await;
                    tracing::error!(backup = %id, error = %e, "backup refused");
                }
                // Nothing was written to a destination; `status` answers from here.
                let mut refused = self
                    .inner
                    .shared
                    .refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if refused.len() >= 100 {
                    refused.pop_front();
                }
                refused.push_back(Refusal {
                    id: id.clone(),
                    label: label.to_string(),
                    error: e.to_string(),
                    at: Utc::now(),
                });
            }
        }
        result
    }

    pub(super) async fn run_with_id(
        &self,
        id: &str,
        label: &str,
        resources: Option<Vec<String>>,
    ) -> Result<BackupInfo, BackupError> {
        let id = id.to_string();
        Self::check_label(label)?;
        let selective = resources.is_some();
        let names = self.selected_resources(resources.as_deref())?;
        workdir::sweep(&self.inner.temp_root);
        let lease = self.take_lease(&format!("backup {id}")).await?;
        let cancel = CancellationToken::new();
        self.inner
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), cancel.clone());
        self.inner
            .shared
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        // Leaves `running` however this ends, a dropped future included.
        let entry = RunningEntry {
            shared: self.inner.shared.clone(),
            id: id.clone(),
        };
        let started = Instant::now();
        let started_at = Utc::now();
        let mut info = self.new_info(&id, label, "running", started_at);
        info.resources = names.clone();
        info.selective = selective;
        let result = async {
            if label == "incremental" {
                match self.newest_parent(&names).await? {
                    Some(parent) => {
                        info.kind = "incremental".into();
                        info.parent = Some(parent.id);
                    }
                    None => tracing::warn!(
                        backup = %id,
                        "no completed backup of these resources to build an incremental on: taking a full backup"
                    ),
                }
            }
            // Written first, so an interrupted backup is visible (and never completed).
            self.write_meta_everywhere(&info).await;
            self.emit(
                "backup_start",
                &id,
                label,
                json!({ "resources": names, "kind": info.kind }),
            );
            self.callback(
                &self.inner.config.on_backup_start,
                json!({ "backupId": id, "type": label }),
            )
            .await;
            let stop = CancellationToken::new();
            let lost = lease.lost();
            let guard = {
                let stop = stop.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => stop.cancel(),
                        _ = lost.cancelled() => stop.cancel(),
                    }
                })
            };
            let r = self.run_backup(&mut info, stop).await;
            guard.abort();
            r
        }
        .await;
        drop(entry);
        lease.release().await;
        info.duration_ms = Some(started.elapsed().as_millis() as u64);
        match result {
            Ok(()) => {
                info.status = "completed".into();
                let stats = json!({
                    "backupId": id, "type": label, "size": info.size,
                    "duration": info.duration_ms, "records": info.records,
                    "driverInfo": info.destinations,
                });
                self.emit("backup_complete", &id, label, stats.clone());
                self.callback(&self.inner.config.on_backup_complete, stats)
                    .await;
                tracing::info!(
                    backup = %id,
                    kind = %info.kind,
                    size = info.size,
                    duration_ms = info.duration_ms.unwrap_or(0),
                    "backup completed"
                );
                Ok(info)
            }
            Err(e) => {
                let cancelled = cancel.is_cancelled();
                let err = if cancelled {
                    BackupError::Cancelled(id.clone())
                } else {
                    e
                };
                info.status = if cancelled { "cancelled" } else { "failed" }.into();
                info.error = Some(err.to_string());
                self.write_meta_everywhere(&info).await;
                let stats = json!({ "backupId": id, "type": label, "error": err.to_string() });
                self.emit(
                    if cancelled {
                        "backup_cancelled"
                    } else {
                        "backup_error"
                    },
                    &id,
                    label,
                    stats.clone(),
                );
                self.callback(&self.inner.config.on_backup_error, stats)
                    .await;
                tracing::error!(backup = %id, error = %err, "backup failed");
                Err(err)
            }
        }
    }

    /// Each destination's folder for a backup (its path template filled in).
    pub(super) fn folders(&self, info: &BackupInfo) -> Vec<String> {
        let local = info.started_at.with_timezone(&self.inner.config.timezone.0);
        self.inner
            .destinations
            .iter()
            .map(|d| d.folder(&info.id, &info.label, &local))
            .collect()
    }

    /// Best effort: the metadata tells `status` what happened even when the backup failed.
    pub(super) async fn write_meta_everywhere(&self, info: &BackupInfo) {
        let body = Bytes::from(serde_json::to_vec_pretty(info).unwrap_or_default());
        for (d, folder) in self.inner.destinations.iter().zip(self.folders(info)) {
            let key = format!("{folder}{}.meta.json", info.id);
            if let Err(Some(e)) = d.put(&key, body.clone(), false).await {
                tracing::warn!(destination = %d.describe(), error = %e, "cannot write backup metadata");
            }
        }
    }

    pub(super) async fn newest_parent(
        &self,
        names: &[String],
    ) -> Result<Option<BackupInfo>, BackupError> {
        let list = self.list_backups(None, None).await?;
        Ok(list
            .into_iter()
            .find(|b| b.is_completed() && !b.selective && b.resources == names))
    }

    pub(super) async fn run_backup(
        &self,
        info: &mut BackupInfo,
        stop: CancellationToken,
    ) -> Result<(), BackupError> {
        let id = info.id.clone();

        let parent_index = match info.parent.clone() {
            Some(parent) => match self.load_index_sorted(&parent, &info.resources).await {
                Ok(index) => Some(index),
                Err(e) => {
                    // A chain built on an unreadable index could not be trusted; a full backup
                    // can, and the next incremental builds on it.
                    tracing::warn!(backup = %id, parent = %parent, error = %e, "the parent's index cannot be read: taking a full backup instead");
                    info.kind = "full".into();
                    info.parent = None;
                    None
                }
            },
            None => None,
        };

        let archive_path = TempFile(self.inner.temp_dir.join(format!("{id}.s3db-backup")));
        let index_path = TempFile(self.inner.temp_dir.join(format!("{id}.index")));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Cmd>(1024);
        let schema = self.schema_of(&info.resources).await?;
        let s3dbjs: Option<Vec<u8>> = self
            .inner
            .db
            .s3dbjs_metadata()
            .map(|v| serde_json::to_vec_pretty(&*v).unwrap_or_default());
        let writer = {
            let keys = self.keyring();
            let (a, i) = (archive_path.0.clone(), index_path.0.clone());
            let temp = self.inner.temp_dir.clone();
            let compression = info.compression;
            let id = id.clone();
            tokio::task::spawn_blocking(move || -> Result<Built, ArchiveError> {
                let mut archive =
                    ArchiveWriter::create(&a, &temp, &id, "archive", compression, &keys)?;
                let mut index = ArchiveWriter::create(&i, &temp, &id, "index", compression, &keys)?;
                archive.add_bytes("s3db.json", &schema)?;
                if let Some(theirs) = &s3dbjs {
                    archive.add_bytes(super::restore::S3DBJS_MEMBER, theirs)?;
                }
                index.begin_member("index.jsonl")?;
                while let Some(cmd) = rx.blocking_recv() {
                    match cmd {
                        Cmd::Begin(name) => {
                            archive.begin_member(&format!("resources/{name}.jsonl"))?
                        }
                        Cmd::Line(line) => archive.write_line(&line)?,
                        Cmd::Index(line) => index.write_line(&line)?,
                    }
                }
                archive.end_member()?;
                let manifest = serde_json::to_vec_pretty(&json!({
                    "backupId": id,
                    "members": archive.members(),
                }))
                .map_err(|e| ArchiveError::Finish(e.to_string()))?;
                archive.add_bytes("manifest.json", &manifest)?;
                Ok(Built {
                    archive: archive.finish()?,
                    index: index.finish()?,
                })
            })
        };

        let produced = self.produce(info, parent_index.as_ref(), &tx, &stop).await;
        drop(tx);
        let built = writer
            .await
            .map_err(|e| BackupError::Archive(format!("the archive writer failed: {e}")))?
            .map_err(|e| BackupError::Archive(e.to_string()));
        produced?;
        let built = built?;
        if stop.is_cancelled() {
            return Err(BackupError::Cancelled(id));
        }
        info.size = built.archive.size;
        info.sha256 = Some(built.archive.sha256.clone());
        info.index_sha256 = Some(built.index.sha256.clone());
        self.upload(info, &archive_path.0, &index_path.0).await
    }

    /// s3db.json restricted to the backed-up resources.
    pub(super) async fn schema_of(&self, names: &[String]) -> Result<Vec<u8>, BackupError> {
        let db = &self.inner.db;
        let key = db.metadata_key();
        let mut metadata: Metadata = match db.store().get(key).await? {
            Some(current) => serde_json::from_slice(&current.body)
                .map_err(|e| BackupError::Database(format!("{key} is damaged: {e}")))?,
            // Beside s3db.js, s3db-run may have no resource of its own yet.
            None if db.s3dbjs_metadata().is_some() => Metadata::new(),
            None => return Err(BackupError::Database(format!("{key} is missing"))),
        };
        metadata.resources.retain(|name, _| names.contains(name));
        serde_json::to_vec_pretty(&metadata).map_err(|e| BackupError::Archive(e.to_string()))
    }

    /// Lists every selected resource page by page and streams its records (only the changed
    /// ones for an incremental, plus tombstones) to the archive writer.
    pub(super) async fn produce(
        &self,
        info: &mut BackupInfo,
        parent: Option<&SortedIndex>,
        tx: &tokio::sync::mpsc::Sender<Cmd>,
        stop: &CancellationToken,
    ) -> Result<(), BackupError> {
        let store = self.inner.db.store().clone();
        let concurrency = self.inner.db.concurrency();
        let closed = || BackupError::Archive("the archive writer stopped".into());
        let index_line = |name: &str, id: &str, etag: &str, size: u64| {
            serde_json::to_vec(&json!([name, id, etag, size])).unwrap_or_default()
        };
        let tombstone = |id: &str| {
            serde_json::to_vec(&json!({ "id": id, "deleted": true })).unwrap_or_default()
        };
        // The parent's index is read forward beside the listing (both in key order): nothing
        // of either is kept beyond the page at hand, whatever the database's size.
        let mut cursor = parent.map(SortedIndex::cursor).transpose()?;
        let mut done = 0u64;
        for name in info.resources.clone() {
            tx.send(Cmd::Begin(name.clone()))
                .await
                .map_err(|_| closed())?;
            let prefix = codec::data_prefix(&name);
            // s3db.js records keep their values in metadata, which neither a listing nor the
            // ETag of their (often empty) body tells about: each is read, and compared with
            // the parent by a hash of its content.
            let js = self
                .inner
                .db
                .resource(&name)
                .ok()
                .filter(|r| r.schema().s3dbjs.is_some());
            let mut token: Option<String> = None;
            let (mut count, mut tombstones) = (0u64, 0u64);
            loop {
                if stop.is_cancelled() {
                    return Err(BackupError::Cancelled(info.id.clone()));
                }
                let page = store.list(&prefix, token.as_deref(), 1000).await?;
                let mut items = Vec::with_capacity(page.objects.len());
                for meta in page.objects {
                    let Some(id) = codec::id_from_key(&meta.key) else {
                        continue;
                    };
                    let mut previous = None;
                    if let Some(c) = cursor.as_mut() {
                        // What the parent has before this key is gone since.
                        while let Some((_, gone, _, _)) = c.next_before(&name, Some(&meta.key))? {
                            tx.send(Cmd::Line(tombstone(&gone)))
                                .await
                                .map_err(|_| closed())?;
                            tombstones += 1;
                        }
                        previous = c.take_at(&name, &meta.key)?;
                    }
                    items.push((id, meta, previous));
                }
                // In listing order, so this backup's index is in listing order too.
                let mut reads =
                    futures::stream::iter(items.into_iter().map(|(id, meta, previous)| {
                        let store = store.clone();
                        let unchanged = js.is_none()
                            && previous.as_ref().is_some_and(|(etag, size)| {
                                etag == &meta.etag.0 && *size == meta.size
                            });
                        async move {
                            let got = if unchanged {
                                None
                            } else {
                                Some(store.get(&meta.key).await)
                            };
                            (id, meta, previous, got)
                        }
                    }))
                    .buffered(concurrency);
                while let Some((id, meta, previous, got)) = reads.next().await {
                    if stop.is_cancelled() {
                        return Err(BackupError::Cancelled(info.id.clone()));
                    }
                    let Some(got) = got else {
                        let line = index_line(&name, &id, &meta.etag.0, meta.size);
                        tx.send(Cmd::Index(line)).await.map_err(|_| closed())?;
                        continue;
                    };
                    // Deleted between the listing and the read: gone, as if not listed.
                    let Some(mut obj) = got? else {
                        if previous.is_some() {
                            tx.send(Cmd::Line(tombstone(&id)))
                                .await
                                .map_err(|_| closed())?;
                            tombstones += 1;
                        }
                        continue;
                    };
                    if let Some(res) = &js {
                        // Secrets stay sealed in the archive, as s3db.js stored them.
                        let record = res.decode_with(&obj.meta.key, &id, &obj, None)?;
                        let body = serde_json::to_vec(&record.data).unwrap_or_default();
                        obj.meta.etag = crate::store::ETag(format!(
                            "c:{}",
                            &crate::store::ETag::of(&body).0.trim_matches('"')
                        ));
                        obj.meta.size = body.len() as u64;
                        obj.body = Bytes::from(body);
                        if previous == Some((obj.meta.etag.0.clone(), obj.meta.size)) {
                            let line = index_line(&name, &id, &obj.meta.etag.0, obj.meta.size);
                            tx.send(Cmd::Index(line)).await.map_err(|_| closed())?;
                            continue;
                        }
                    }
                    if serde_json::from_slice::<serde::de::IgnoredAny>(&obj.body).is_err() {
                        return Err(BackupError::Database(format!(
                            "record `{id}` of `{name}` is not valid JSON ({}); fix or delete it",
                            obj.meta.key
                        )));
                    }
                    let mut line = Vec::with_capacity(obj.body.len() + id.len() + 64);
                    line.extend_from_slice(b"{\"id\":");
                    serde_json::to_writer(&mut line, &id).unwrap_or_default();
                    line.extend_from_slice(b",\"etag\":");
                    serde_json::to_writer(&mut line, &obj.meta.etag.0).unwrap_or_default();
                    line.extend_from_slice(
                        format!(",\"size\":{},\"data\":", obj.meta.size).as_bytes(),
                    );
                    line.extend_from_slice(&obj.body);
                    line.push(b'}');
                    let index = index_line(&name, &id, &obj.meta.etag.0, obj.meta.size);
                    tx.send(Cmd::Line(line)).await.map_err(|_| closed())?;
                    tx.send(Cmd::Index(index)).await.map_err(|_| closed())?;
                    count += 1;
                    done += 1;
                    if done.is_multiple_of(500) {
                        self.progress("records", done);
                    }
                }
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
            info.records.insert(name.clone(), count);
            if let Some(c) = cursor.as_mut() {
                // Whatever the parent still has of this resource is gone.
                while let Some((_, gone, _, _)) = c.next_before(&name, None)? {
                    tx.send(Cmd::Line(tombstone(&gone)))
                        .await
                        .map_err(|_| closed())?;
                    tombstones += 1;
                }
                info.tombstones.insert(name.clone(), tombstones);
            }
        }
        self.progress("records", done);
        Ok(())
    }

    /// Uploads the archive and index under the strategy, verifies, then writes the metadata
    /// and, last, the completion marker.
    pub(super) async fn upload(
        &self,
        info: &mut BackupInfo,
        archive_path: &Path,
        index_path: &Path,
    ) -> Result<(), BackupError> {
        let dests = &self.inner.destinations;
        let folders = self.folders(info);
        let verification = self.inner.config.verification;
        let one = |i: usize| {
            let d = dests[i].clone();
            let (id, folder) = (info.id.clone(), folders[i].clone());
            let want = (info.sha256.clone().unwrap_or_default(), info.size);
            let want_index = info.index_sha256.clone().unwrap_or_default();
            let (archive_path, index_path) = (archive_path.to_path_buf(), index_path.to_path_buf());
            async move {
                let result = async {
                    let text = |e: destination::DestinationError| e.to_string();
                    d.upload(&format!("{folder}{id}.s3db-backup"), &archive_path)
                        .await
                        .map_err(text)?;
                    d.upload(&format!("{folder}{id}.index"), &index_path)
                        .await
                        .map_err(text)?;
                    if verification {
                        let got = d
                            .fetch(&format!("{folder}{id}.s3db-backup"), None)
                            .await
                            .map_err(text)?;
                        if got.as_ref() != Some(&want) {
                            return Err(format!(
                                "verification failed: the stored archive's SHA-256 differs from the one written ({})",
                                d.describe()
                            ));
                        }
                        let got = d
                            .fetch(&format!("{folder}{id}.index"), None)
                            .await
                            .map_err(text)?;
                        if got.map(|(sha, _)| sha) != Some(want_index) {
                            return Err(format!(
                                "verification failed: the stored index's SHA-256 differs from the one written ({})",
                                d.describe()
                            ));
                        }
                    }
                    Ok(())
                }
                .await;
                (i, result)
            }
        };
        self.progress("upload", 0);
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        match self.inner.strategy {
            MultiStrategy::Priority => {
                for i in 0..dests.len() {
                    match one(i).await {
                        (i, Ok(())) => {
                            ok.push(i);
                            break;
                        }
                        (i, Err(e)) => {
                            tracing::warn!(destination = %dests[i].describe(), error = %e, "backup destination failed; trying the next");
                            errors.push(format!("{}: {e}", dests[i].describe()));
                        }
                    }
                }
            }
            MultiStrategy::All | MultiStrategy::Any => {
                let mut results = futures::stream::iter((0..dests.len()).map(one))
                    .buffer_unordered(self.inner.concurrency);
                while let Some((i, r)) = results.next().await {
                    match r {
                        Ok(()) => ok.push(i),
                        Err(e) => {
                            tracing::warn!(destination = %dests[i].describe(), error = %e, "backup destination failed");
                            errors.push(format!("{}: {e}", dests[i].describe()));
                        }
                    }
                }
            }
        }
        ok.sort();
        let failed =
            ok.is_empty() || (self.inner.strategy == MultiStrategy::All && !errors.is_empty());
        if failed {
            // Leave no orphaned archive behind where the upload went through.
            for &i in &ok {
                let (d, folder) = (dests[i].as_ref(), &folders[i]);
                let _ = d.delete(&format!("{folder}{}.s3db-backup", info.id)).await;
                let _ = d.delete(&format!("{folder}{}.index", info.id)).await;
            }
            return Err(BackupError::Destination(format!(
                "backup upload failed ({} strategy): {}",
                strategy_name(self.inner.strategy),
                errors.join("; ")
            )));
        }
        info.status = "completed".into();
        info.completed_at = Some(Utc::now());
        info.duration_ms = Some((Utc::now() - info.started_at).num_milliseconds().max(0) as u64);
        info.destinations = ok
            .iter()
            .map(|&i| dests[i].stored_at(&folders[i]))
            .collect();
        let body = Bytes::from(serde_json::to_vec_pretty(&*info).unwrap_or_default());
        for &i in &ok {
            let (d, folder) = (dests[i].as_ref(), &folders[i]);
            d.put(
                &format!("{folder}{}.meta.json", info.id),
                body.clone(),
                false,
            )
            .await
            .map_err(|e| BackupError::Destination(e.map(|e| e.to_string()).unwrap_or_default()))?;
        }
        let marker = Bytes::from(
            json!({ "id": info.id, "sha256": info.sha256, "completedAt": info.completed_at })
                .to_string(),
        );
        for &i in &ok {
            let (d, folder) = (dests[i].as_ref(), &folders[i]);
            match d
                .put(&format!("{folder}{}.done", info.id), marker.clone(), true)
                .await
            {
                Ok(()) => {}
                Err(None) => {
                    return Err(BackupError::Destination(format!(
                        "the completion marker of `{}` already exists at {}",
                        info.id,
                        d.describe()
                    )))
                }
                Err(Some(e)) => return Err(BackupError::Destination(e.to_string())),
            }
        }
        Ok(())
    }
}
