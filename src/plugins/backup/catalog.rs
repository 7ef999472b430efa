//! What backups exist and in what state: listing every destination, one backup's status, finding a completed one and reading its index or archive back.

use std::io::Write;

use super::*;

impl Backup {
    /// Every backup at every destination (the first destination holding an id wins), newest
    /// first; `prefix` filters ids, `limit` cuts the list.
    pub async fn list_backups(
        &self,
        limit: Option<usize>,
        prefix: Option<&str>,
    ) -> Result<Vec<BackupInfo>, BackupError> {
        Ok(self
            .locate_all()
            .await?
            .into_iter()
            .map(|(info, _)| info)
            .filter(|b| prefix.is_none_or(|p| b.id.starts_with(p)))
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }

    /// Each backup with the destinations (indexes) holding it, newest first.
    pub(super) async fn locate_all(&self) -> Result<Vec<(BackupInfo, Holders)>, BackupError> {
        let lock_holder = self.lease().holder().await.ok().flatten().map(|h| h.holder);
        let mut found: IndexMap<String, (BackupInfo, Holders)> = IndexMap::new();
        let mut failures = Vec::new();
        for (i, d) in self.inner.destinations.iter().enumerate() {
            let keys = match d.list(&d.root()).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(destination = %d.describe(), error = %e, "cannot list backups");
                    failures.push(e);
                    continue;
                }
            };
            let done: HashSet<&str> = keys
                .iter()
                .filter_map(|k| k.strip_suffix(".done"))
                .collect();
            let metas: Vec<String> = keys
                .iter()
                .filter(|k| k.ends_with(".meta.json"))
                .cloned()
                .collect();
            let mut bodies = futures::stream::iter(metas.into_iter().map(|k| {
                let d = d.clone();
                async move {
                    let body = d.get(&k).await;
                    (k, body)
                }
            }))
            .buffered(16);
            while let Some((key, body)) = bodies.next().await {
                let Ok(Some(body)) = body else { continue };
                let stem = key.trim_end_matches(".meta.json");
                let mut info = match serde_json::from_slice::<BackupInfo>(&body) {
                    Ok(info) => info,
                    Err(e) => {
                        // Listed, as damaged and why: a backup must not vanish because its
                        // metadata did, and restoring it must say it is damaged, not absent.
                        tracing::warn!(key, error = %e, "unreadable backup metadata");
                        damaged(
                            |id, label, at| self.new_info(id, label, "damaged", at),
                            stem,
                            &e,
                        )
                    }
                };
                let folder = stem
                    .strip_suffix(info.id.as_str())
                    .unwrap_or("")
                    .to_string();
                info.status = if info.status == "damaged" {
                    info.status
                } else if done.contains(stem) {
                    "completed".into()
                } else if info.status == "running"
                    && lock_holder.as_deref() != Some(&format!("backup {}", info.id))
                {
                    "interrupted".into()
                } else if info.status == "completed" {
                    // Metadata claims completion but the marker is missing.
                    "interrupted".into()
                } else {
                    info.status
                };
                match found.get_mut(&info.id) {
                    Some((existing, holders)) => {
                        holders.push((i, folder));
                        if !existing.is_completed() && info.is_completed() {
                            *existing = info;
                        }
                    }
                    None => {
                        found.insert(info.id.clone(), (info, vec![(i, folder)]));
                    }
                }
            }
        }
        if found.is_empty() && failures.len() == self.inner.destinations.len() {
            return Err(BackupError::Destination(
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        let mut list: Vec<_> = found.into_values().collect();
        list.sort_by(|a, b| {
            b.0.started_at
                .cmp(&a.0.started_at)
                .then(b.0.id.cmp(&a.0.id))
        });
        Ok(list)
    }

    /// getBackupStatus(id).
    pub async fn status(&self, id: &str) -> Result<BackupInfo, BackupError> {
        if let Some(found) = self
            .locate_all()
            .await?
            .into_iter()
            .find(|(b, _)| b.id == id)
        {
            return Ok(found.0);
        }
        let refused = self
            .inner
            .shared
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.id == id)
            .cloned();
        let Refusal {
            label, error, at, ..
        } = refused.ok_or_else(|| BackupError::NotFound(id.into()))?;
        let mut info = self.new_info(id, &label, "failed", at);
        info.error = Some(error);
        Ok(info)
    }

    /// The metadata of a backup that has not written anything yet.
    pub(super) fn new_info(
        &self,
        id: &str,
        label: &str,
        status: &str,
        at: DateTime<Utc>,
    ) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            label: label.into(),
            kind: "full".into(),
            parent: None,
            status: status.into(),
            started_at: at,
            completed_at: None,
            duration_ms: None,
            resources: Vec::new(),
            selective: false,
            records: IndexMap::new(),
            tombstones: IndexMap::new(),
            size: 0,
            sha256: None,
            index_sha256: None,
            compression: self.inner.config.compression,
            encrypted: self.inner.passphrase.is_some(),
            format_version: archive::FORMAT_VERSION,
            destinations: Vec::new(),
            error: None,
        }
    }

    pub(super) async fn find_completed(
        &self,
        id: &str,
    ) -> Result<(BackupInfo, Holders), BackupError> {
        let (info, holders) = self
            .locate_all()
            .await?
            .into_iter()
            .find(|(b, _)| b.id == id)
            .ok_or_else(|| BackupError::NotFound(id.into()))?;
        if !info.is_completed() {
            return Err(BackupError::Unusable {
                id: id.into(),
                reason: format!("it is {}, not completed", info.status),
            });
        }
        Ok((info, holders))
    }

    /// Reads a backup's index: every record's ETag and size at the time of that backup.
    pub(super) async fn load_index(&self, id: &str) -> Result<RecordIndex, BackupError> {
        self.visit_index(id, |lines| {
            let mut map = HashMap::new();
            for line in lines {
                let (res, rid, etag, size) = line?;
                map.insert((res, rid), (etag, size));
            }
            Ok(map)
        })
        .await
    }

    /// A backup's index decoded into a plain temporary file, for an incremental to read forward
    /// beside its listing: lines `[resource, id, etag, size]`, resources in the order of
    /// `names`, each resource's records in key order. An index not in that order (written by
    /// an older version) is refused, so the caller takes a full backup instead.
    pub(super) async fn load_index_sorted(
        &self,
        id: &str,
        names: &[String],
    ) -> Result<SortedIndex, BackupError> {
        let file = TempFile(
            self.inner
                .temp_dir
                .join(format!("{id}.index.plain.{}", random_suffix())),
        );
        let (path, names) = (file.0.clone(), names.to_vec());
        self.visit_index(id, move |lines| {
            let out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let mut out = std::io::BufWriter::new(out);
            let mut last: Option<(usize, String)> = None;
            for line in lines {
                let (res, rid, etag, size) = line?;
                let at = names
                    .iter()
                    .position(|n| n == &res)
                    .ok_or_else(|| format!("its index names resource `{res}`, not backed up"))?;
                let key = codec::record_key(&res, &rid);
                if last
                    .as_ref()
                    .is_some_and(|(a, k)| (*a, k.as_str()) >= (at, key.as_str()))
                {
                    return Err(
                        "its index is not in listing order (an older version wrote it)".into(),
                    );
                }
                serde_json::to_writer(&mut out, &(&res, &rid, &etag, size))
                    .map_err(|e| e.to_string())?;
                out.write_all(b"\n").map_err(|e| e.to_string())?;
                last = Some((at, key));
            }
            out.flush().map_err(|e| e.to_string())
        })
        .await?;
        Ok(SortedIndex { file })
    }

    /// Fetches a completed backup's index from the first destination with an intact copy and
    /// hands its decoded lines to `visit` (on a blocking thread).
    async fn visit_index<T: Send + 'static>(
        &self,
        id: &str,
        visit: impl FnOnce(&mut dyn Iterator<Item = Result<IndexLine, String>>) -> Result<T, String>
            + Send
            + 'static,
    ) -> Result<T, BackupError> {
        let (info, holders) = self.find_completed(id).await?;
        let tmp = TempFile(
            self.inner
                .temp_dir
                .join(format!("{id}.index.{}", random_suffix())),
        );
        let mut last = String::new();
        for (i, folder) in holders {
            let d = self.inner.destinations[i].as_ref();
            match d.fetch(&format!("{folder}{id}.index"), Some(&tmp.0)).await {
                Ok(Some((sha, _)))
                    if info.index_sha256.as_ref().is_some_and(|want| want != &sha) =>
                {
                    last = format!("{}: the index does not match its SHA-256", d.describe());
                }
                Ok(Some(_)) => {
                    let (keys, path, id) = (self.keyring(), tmp.0.clone(), id.to_string());
                    return tokio::task::spawn_blocking(move || {
                        let mut visit = Some(visit);
                        let mut out = None;
                        ArchiveReader::open(&path, &id, &keys)?.for_each_member(|_, r| {
                            let mut lines = r.lines().map(|line| {
                                let line = line.map_err(|e| e.to_string())?;
                                serde_json::from_str::<IndexLine>(&line)
                                    .map_err(|e| format!("damaged index: {e}"))
                            });
                            if let Some(visit) = visit.take() {
                                out = Some(visit(&mut lines)?);
                            }
                            Ok(())
                        })?;
                        out.ok_or_else(|| ArchiveError::Damaged("the index is empty".into()))
                    })
                    .await
                    .map_err(|e| BackupError::Archive(e.to_string()))?
                    .map_err(|e: ArchiveError| BackupError::Unusable {
                        id: info.id.clone(),
                        reason: format!("its index cannot be read: {e}"),
                    });
                }
                Ok(None) => last = format!("{}: index missing", d.describe()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(BackupError::Unusable {
            id: id.into(),
            reason: format!("no destination has its index ({last})"),
        })
    }

    /// Downloads a completed backup's archive from the first destination whose copy matches
    /// the recorded SHA-256.
    pub(super) async fn download(
        &self,
        info: &BackupInfo,
        holders: &Holders,
    ) -> Result<TempFile, BackupError> {
        let tmp = TempFile(self.inner.temp_dir.join(format!(
            "{}.restore.{}",
            info.id,
            random_suffix()
        )));
        let mut problems = Vec::new();
        for (i, folder) in holders {
            let d = self.inner.destinations[*i].as_ref();
            let key = format!("{folder}{}.s3db-backup", info.id);
            match d.fetch(&key, Some(&tmp.0)).await {
                Ok(Some((sha, size))) => {
                    if Some(&sha) == info.sha256.as_ref() && size == info.size {
                        return Ok(tmp);
                    }
                    problems.push(format!(
                        "{}: the archive's SHA-256 does not match its metadata (damaged or altered)",
                        d.describe()
                    ));
                }
                Ok(None) => problems.push(format!("{}: archive missing", d.describe())),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(BackupError::Unusable {
            id: info.id.clone(),
            reason: problems.join("; "),
        })
    }
}

/// What is known of a backup whose metadata cannot be read: its id (and from it, its label and
/// start), and the reason.
fn damaged(
    blank: impl Fn(&str, &str, DateTime<Utc>) -> BackupInfo,
    stem: &str,
    error: &serde_json::Error,
) -> BackupInfo {
    let id = stem.rsplit('/').next().unwrap_or(stem);
    let (label, started_at) = crate::types::BackupId::parse(id).unwrap_or_default();
    BackupInfo {
        kind: "unknown".into(),
        encrypted: false,
        format_version: 0,
        error: Some(format!("its metadata cannot be read: {error}")),
        ..blank(id, label, started_at)
    }
}
