//! Restoring: a backup and the chain of incrementals it needs, verified, then applied in batches.

use futures::TryStreamExt;

use super::*;
use crate::db::Resource;

/// The definitions a verified archive holds.
pub(super) struct Verified {
    /// The native resources' definitions.
    pub schema: Metadata,
    /// `s3db.json` as s3db.js wrote it, for a backup of an s3db.js database.
    pub s3dbjs: Option<Value>,
}

/// The archive member keeping s3db.js's `s3db.json` (its own, untouched).
pub(super) const S3DBJS_MEMBER: &str = "s3dbjs.json";

/// Reads a whole archive: every segment decrypts, every line parses, every member's SHA-256
/// matches `manifest.json`. Returns the archive's definitions.
pub(super) fn verify(path: &Path, id: &str, keys: &Keyring) -> Result<Verified, ArchiveError> {
    let damaged = |reason: String| ArchiveError::Damaged(reason);
    let mut schema = None;
    let mut s3dbjs = None;
    let mut manifest: Option<Value> = None;
    let seen = ArchiveReader::open(path, id, keys)?.for_each_member(|name, r| {
        match name {
            "s3db.json" => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                schema = Some(
                    serde_json::from_slice::<Metadata>(&buf)
                        .map_err(|e| format!("damaged s3db.json: {e}"))?,
                );
            }
            S3DBJS_MEMBER => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                s3dbjs = Some(
                    serde_json::from_slice::<Value>(&buf)
                        .map_err(|e| format!("damaged {S3DBJS_MEMBER}: {e}"))?,
                );
            }
            "manifest.json" => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                manifest = Some(
                    serde_json::from_slice(&buf).map_err(|e| format!("damaged manifest: {e}"))?,
                );
            }
            _ => {
                for (n, line) in r.split(b'\n').enumerate() {
                    let line = line.map_err(|e| e.to_string())?;
                    serde_json::from_slice::<Line>(&line)
                        .map_err(|e| format!("{name} line {}: {e}", n + 1))?;
                }
            }
        }
        Ok(())
    })?;
    let manifest =
        manifest.ok_or_else(|| damaged("the archive has no manifest.json (truncated?)".into()))?;
    let recorded: IndexMap<String, MemberInfo> =
        serde_json::from_value(manifest["members"].clone())
            .map_err(|e| damaged(format!("damaged manifest: {e}")))?;
    for (name, info) in &recorded {
        match seen.get(name) {
            Some(got) if got.sha256 == info.sha256 && got.bytes == info.bytes => {}
            Some(_) => {
                return Err(damaged(format!(
                    "member `{name}` does not match its SHA-256"
                )))
            }
            None => return Err(damaged(format!("member `{name}` is missing"))),
        }
    }
    if manifest["backupId"].as_str() != Some(id) {
        return Err(damaged(
            "the archive's manifest names another backup".into(),
        ));
    }
    let schema = schema.ok_or_else(|| damaged("the archive has no s3db.json".into()))?;
    Ok(Verified { schema, s3dbjs })
}

impl Backup {
    /// restore(id, {overwrite, resources}): verifies every archive of the chain completely
    /// before writing anything; without `overwrite`, existing records are kept (skipped).
    pub async fn restore(
        &self,
        id: &str,
        options: RestoreOptions,
    ) -> Result<RestoreStats, BackupError> {
        if options.dry_run {
            let started = Instant::now();
            let mut stats = self.run_restore(id, &options).await?;
            stats.duration_ms = started.elapsed().as_millis() as u64;
            return Ok(stats);
        }
        let lease = self.take_lease(&format!("restore {id}")).await?;
        let started = Instant::now();
        self.emit(
            "restore_start",
            id,
            "",
            json!({ "overwrite": options.overwrite }),
        );
        self.callback(
            &self.inner.config.on_restore_start,
            json!({ "backupId": id, "overwrite": options.overwrite }),
        )
        .await;
        let result = self.run_restore(id, &options).await;
        lease.release().await;
        match result {
            Ok(mut stats) => {
                stats.duration_ms = started.elapsed().as_millis() as u64;
                let detail = serde_json::to_value(&stats).unwrap_or_default();
                self.emit("restore_complete", id, "", detail.clone());
                self.callback(&self.inner.config.on_restore_complete, detail)
                    .await;
                Ok(stats)
            }
            Err(e) => {
                let detail = json!({ "backupId": id, "error": e.to_string() });
                self.emit("restore_error", id, "", detail.clone());
                self.callback(&self.inner.config.on_restore_error, detail)
                    .await;
                tracing::error!(backup = %id, error = %e, "restore failed");
                Err(e)
            }
        }
    }

    pub(super) async fn run_restore(
        &self,
        id: &str,
        options: &RestoreOptions,
    ) -> Result<RestoreStats, BackupError> {
        let all = self.locate_all().await?;
        let find = |id: &str| all.iter().find(|(b, _)| b.id == id);
        // The chain, newest first.
        let mut chain = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(cur) = next {
            let (info, holders) = find(&cur).ok_or_else(|| match chain.is_empty() {
                true => BackupError::NotFound(cur.clone()),
                false => BackupError::Unusable {
                    id: id.into(),
                    reason: format!("backup `{cur}` of its chain is missing"),
                },
            })?;
            if !info.is_completed() {
                return Err(BackupError::Unusable {
                    id: cur.clone(),
                    reason: match (&info.error, info.status.as_str()) {
                        (Some(why), "damaged") => format!("it is damaged: {why}"),
                        _ => format!("it is {}, not completed", info.status),
                    },
                });
            }
            if chain.iter().any(|(b, _): &(BackupInfo, _)| b.id == info.id) {
                return Err(BackupError::Unusable {
                    id: id.into(),
                    reason: "its chain of parents loops".into(),
                });
            }
            next = info.parent.clone();
            chain.push((info.clone(), holders.clone()));
        }
        let newest = &chain[0].0;
        let wanted: Vec<String> = match &options.resources {
            Some(list) => {
                for r in list {
                    if !newest.resources.contains(r) {
                        return Err(BackupError::Config(format!(
                            "backup `{id}` has no resource `{r}` (it has: {})",
                            newest.resources.join(", ")
                        )));
                    }
                }
                list.clone()
            }
            None => newest.resources.clone(),
        };

        // 1. Download and verify everything before a single write.
        let mut files = Vec::new();
        let mut schema: Option<Verified> = None;
        for (info, holders) in &chain {
            self.progress_of("verify", files.len() as u64, Some(chain.len() as u64));
            let file = self.download(info, holders).await?;
            let (keys, path, bid) = (self.keyring(), file.0.clone(), info.id.clone());
            let verified = tokio::task::spawn_blocking(move || verify(&path, &bid, &keys))
                .await
                .map_err(|e| BackupError::Archive(e.to_string()))?
                .map_err(|reason| BackupError::Unusable {
                    id: info.id.clone(),
                    reason: reason.to_string(),
                })?;
            if schema.is_none() {
                schema = Some(verified);
            }
            files.push((info.id.clone(), file));
        }
        let Verified {
            schema,
            s3dbjs: theirs,
        } = schema.unwrap_or(Verified {
            schema: Metadata::default(),
            s3dbjs: None,
        });

        // 2. Recreate the resources' definitions (s3db.json may be gone). s3db.js's s3db.json
        //    comes back as it was, so s3db.js reads the restored records.
        if let (Some(theirs), false) = (theirs, options.dry_run) {
            self.adopt_s3dbjs(theirs).await?;
        }
        let declared: IndexMap<String, StoredResource> = schema
            .resources
            .into_iter()
            .filter(|(n, _)| wanted.contains(n))
            .collect();
        if !options.dry_run {
            self.inner.db.register(&declared).await?;
        }

        // 3. Apply newest first; the first occurrence of a record in the chain is its final
        //    state, so later (older) ones are skipped and a tombstone is never undone.
        let mut stats = RestoreStats {
            backup_id: id.into(),
            chain: chain.iter().rev().map(|(b, _)| b.id.clone()).collect(),
            restored: wanted.clone(),
            dry_run: options.dry_run,
            ..Default::default()
        };
        let dedupe = chain.len() > 1;
        // 16 bytes per record (a 128-bit digest of resource and id, not the strings): the set
        // a chain's dedupe needs stays small at millions of records.
        let mut seen: HashSet<u128> = HashSet::new();
        for (bid, file) in &files {
            let lines = chain
                .iter()
                .find(|(b, _)| &b.id == bid)
                .map_or(0, |(b, _)| {
                    wanted
                        .iter()
                        .map(|w| {
                            b.records.get(w).copied().unwrap_or(0)
                                + b.tombstones.get(w).copied().unwrap_or(0)
                        })
                        .sum()
                });
            self.apply_archive(
                bid, &file.0, &wanted, lines, options, dedupe, &mut seen, &mut stats,
            )
            .await?;
        }
        if options.dry_run {
            return Ok(stats);
        }
        // The records were written as a bulk load: durable from here on.
        self.inner.db.store().sync().await?;
        for name in &wanted {
            if let Ok(r) = self.inner.db.resource(name) {
                r.invalidate_all().await;
            }
        }
        Ok(stats)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_archive(
        &self,
        id: &str,
        path: &Path,
        wanted: &[String],
        lines: u64,
        options: &RestoreOptions,
        dedupe: bool,
        seen: &mut HashSet<u128>,
        stats: &mut RestoreStats,
    ) -> Result<(), BackupError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<(String, Vec<Vec<u8>>)>(8);
        let reader = {
            let (keys, path, id) = (self.keyring(), path.to_path_buf(), id.to_string());
            let wanted = wanted.to_vec();
            tokio::task::spawn_blocking(move || -> Result<(), ArchiveError> {
                ArchiveReader::open(&path, &id, &keys)?.for_each_member(|name, r| {
                    let Some(resource) = name
                        .strip_prefix("resources/")
                        .and_then(|n| n.strip_suffix(".jsonl"))
                    else {
                        return Ok(());
                    };
                    if !wanted.iter().any(|w| w == resource) {
                        return Ok(());
                    }
                    let mut batch = Vec::with_capacity(256);
                    for line in r.split(b'\n') {
                        batch.push(line.map_err(|e| e.to_string())?);
                        if batch.len() == 256 {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(256));
                            tx.blocking_send((resource.to_string(), full))
                                .map_err(|_| "restore stopped".to_string())?;
                        }
                    }
                    if !batch.is_empty() {
                        tx.blocking_send((resource.to_string(), batch))
                            .map_err(|_| "restore stopped".to_string())?;
                    }
                    Ok(())
                })?;
                Ok(())
            })
        };
        let concurrency = self.inner.db.concurrency();
        let mut failure = None;
        let (overwrite, dry_run) = (options.overwrite, options.dry_run);
        // What this archive holds for the wanted resources: the progress total (records a
        // newer backup of the chain already restored are skipped without being counted).
        let stats_total = stats.records + stats.skipped + stats.deleted + lines;
        let db = self.inner.db.clone();
        let batches = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        // A dry run registers nothing: a resource this database does not know has no records
        // yet, so everything in it would be written.
        let resolve = move |name: &str| match db.resource(name) {
            Ok(r) => Ok(Some(r)),
            Err(_) if dry_run => Ok(None),
            Err(e) => Err(BackupError::from(e)),
        };
        // Boxed, so dropping it (and the receiver in it) lets a reader blocked on a full
        // channel end when a write fails.
        let mut work = if !dry_run && self.inner.db.store().writes_batches() {
            // A store that writes batches (the filesystem) gets the reader's whole batches, a
            // few at once: each is one blocking task and one sync.
            batches
                .map(|(resource, raw)| {
                    let res = resolve(&resource);
                    let lines = parse_batch(raw, &resource, dedupe, seen);
                    async move {
                        let res = res?.ok_or_else(|| {
                            BackupError::Config(format!("no resource `{resource}` to restore"))
                        })?;
                        apply_batch(&res, lines, overwrite, concurrency).await
                    }
                })
                .buffer_unordered(BULK_BATCHES)
                .boxed()
        } else {
            // One stream of writes across the reader's batches, `concurrency` always in
            // flight (a batch's last writes do not hold the next batch back).
            batches
                .flat_map(|(resource, raw)| {
                    let res = resolve(&resource);
                    let lines = parse_batch(raw, &resource, dedupe, seen);
                    futures::stream::iter(
                        lines
                            .into_iter()
                            .map(move |l| Ok::<_, BackupError>((res.clone()?, l?))),
                    )
                })
                .map(|item| async move {
                    let (res, line) = item?;
                    apply_line(res.as_ref(), line, overwrite, dry_run).await
                })
                .buffer_unordered(concurrency)
                .boxed()
        };
        let mut reported = 0u64;
        while let Some(r) = work.next().await {
            match r {
                Ok(t) => {
                    stats.records += t.written;
                    stats.skipped += t.kept;
                    stats.deleted += t.deleted;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    break;
                }
            }
            let done = stats.records + stats.skipped + stats.deleted;
            if done >= reported + 256 {
                reported = done;
                self.progress_of("restore", done, Some(stats_total));
            }
        }
        drop(work);
        self.progress_of(
            "restore",
            stats.records + stats.skipped + stats.deleted,
            Some(stats_total),
        );
        let read = reader
            .await
            .map_err(|e| BackupError::Archive(e.to_string()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        read.map_err(|e| BackupError::Archive(e.to_string()))
    }
}

/// Batches of a bulk load in flight at once: while one waits for its sync, another writes.
const BULK_BATCHES: usize = 4;

/// What a restore did with some lines of an archive.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    written: u64,
    kept: u64,
    deleted: u64,
}

/// A batch's lines, parsed, without the records a newer backup of the chain restored already.
fn parse_batch(
    raw: Vec<Vec<u8>>,
    resource: &str,
    dedupe: bool,
    seen: &mut HashSet<u128>,
) -> Vec<Result<Line, BackupError>> {
    let mut lines = Vec::with_capacity(raw.len());
    for raw in raw {
        match serde_json::from_slice::<Line>(&raw) {
            Ok(line) if dedupe && !seen.insert(record_digest(resource, &line.id)) => {}
            Ok(line) => lines.push(Ok(line)),
            Err(e) => lines.push(Err(BackupError::Archive(format!(
                "damaged record line: {e}"
            )))),
        }
    }
    lines
}

/// A record's values as the archive holds them.
fn line_data(line: &Line) -> Result<Map<String, Value>, BackupError> {
    Ok(line
        .data
        .as_ref()
        .map(|d| serde_json::from_str(d.get()))
        .transpose()
        .map_err(|e| BackupError::Archive(format!("damaged record: {e}")))?
        .unwrap_or_default())
}

/// Restores one line (or, in a dry run, finds what restoring it would do). `res` is None in
/// a dry run of a resource the database does not have yet.
async fn apply_line(
    res: Option<&Resource>,
    line: Line,
    overwrite: bool,
    dry_run: bool,
) -> Result<Tally, BackupError> {
    let tally = |written, kept, deleted| Tally {
        written,
        kept,
        deleted,
    };
    let Some(res) = res else {
        return Ok(tally(u64::from(!line.deleted), 0, 0));
    };
    if dry_run {
        let exists = res.exists(&line.id).await?;
        return Ok(match (line.deleted, exists, overwrite) {
            (true, true, true) => tally(0, 0, 1),
            (true, true, false) | (false, true, false) => tally(0, 1, 0),
            (true, false, _) => tally(0, 0, 0),
            (false, _, _) => tally(1, 0, 0),
        });
    }
    if line.deleted {
        if !overwrite {
            // Kept only if there is something to keep: a delete marker for a record the
            // database does not have leaves it as the backup does.
            let kept = res.exists(&line.id).await?;
            return Ok(tally(0, u64::from(kept), 0));
        }
        let gone = res.delete(&line.id, None).await?;
        return Ok(tally(0, 0, u64::from(gone)));
    }
    let data = line_data(&line)?;
    Ok(match res.restore(&line.id, data, overwrite).await? {
        true => tally(1, 0, 0),
        false => tally(0, 1, 0),
    })
}

/// Restores a batch of one resource's lines: its records in one bulk write, its delete
/// markers one by one.
async fn apply_batch(
    res: &Resource,
    lines: Vec<Result<Line, BackupError>>,
    overwrite: bool,
    concurrency: usize,
) -> Result<Tally, BackupError> {
    let mut records = Vec::with_capacity(lines.len());
    let mut markers = Vec::new();
    for line in lines {
        let line = line?;
        match line.deleted {
            true => markers.push(line),
            false => {
                let data = line_data(&line)?;
                records.push((line.id, data));
            }
        }
    }
    let written = res.restore_many(records, overwrite).await?;
    let mut tally = Tally::default();
    for w in written {
        match w {
            true => tally.written += 1,
            false => tally.kept += 1,
        }
    }
    futures::stream::iter(markers)
        .map(|line| apply_line(Some(res), line, overwrite, false))
        .buffer_unordered(concurrency)
        .try_fold(tally, |sum, t| async move {
            Ok(Tally {
                written: sum.written + t.written,
                kept: sum.kept + t.kept,
                deleted: sum.deleted + t.deleted,
            })
        })
        .await
}

/// A record's identity in a restore's dedupe set: a collision (odds about n²/2¹²⁹) is the
/// only way two records could be taken for one.
fn record_digest(resource: &str, id: &str) -> u128 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(resource.as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    u128::from_le_bytes(first)
}

impl Backup {
    /// Makes the database an s3db.js one again, with `theirs` as its `s3db.json`, unless it
    /// already is one (s3db.js's current definitions are then kept). A native `s3db.json` that
    /// stands in its place (a runner that connected to the emptied prefix wrote it) moves to
    /// `s3db-run.json`, where s3db-run keeps its own resources beside s3db.js's.
    async fn adopt_s3dbjs(&self, theirs: Value) -> Result<(), BackupError> {
        let db = &self.inner.db;
        if db.s3dbjs_metadata().is_some() {
            return Ok(());
        }
        let store = db.store();
        if let Some(native) = store.get(codec::METADATA_KEY).await? {
            let is_theirs = serde_json::from_slice::<Value>(&native.body)
                .is_ok_and(|v| crate::db::s3dbjs::is_s3dbjs(&v));
            if !is_theirs {
                store
                    .put(
                        crate::db::OWN_METADATA_KEY,
                        native.body.clone(),
                        crate::store::PutMode::Overwrite,
                        &Default::default(),
                    )
                    .await?;
            }
        }
        let body =
            serde_json::to_vec_pretty(&theirs).map_err(|e| BackupError::Archive(e.to_string()))?;
        store
            .put(
                codec::METADATA_KEY,
                Bytes::from(body),
                crate::store::PutMode::Overwrite,
                &Default::default(),
            )
            .await?;
        db.adopt_s3dbjs(theirs)?;
        Ok(())
    }
}
