//! `backup check`: every backup at every destination is what its metadata says, without
//! restoring it. Always: the metadata reads, the completion marker is there, the archive and the
//! index have the SHA-256 and size the metadata recorded. With `read_data`: every archive is
//! also decrypted and every member parsed and matched against its own manifest, as a restore
//! would before writing anything.

use super::*;

/// What `check` found for one backup at one destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub id: String,
    pub destination: String,
    /// Empty when the backup is sound there.
    pub problems: Vec<String>,
}

impl Backup {
    /// Checks the backups named in `ids` (all when empty) at every destination holding them.
    /// A named backup that no destination holds is reported, not an error.
    pub async fn check(
        &self,
        ids: &[String],
        read_data: bool,
    ) -> Result<Vec<CheckReport>, BackupError> {
        workdir::sweep(&self.inner.temp_root);
        let all = self.locate_all().await?;
        let mut reports = Vec::new();
        for id in ids {
            if !all.iter().any(|(b, _)| &b.id == id) {
                reports.push(CheckReport {
                    id: id.clone(),
                    destination: "-".into(),
                    problems: vec!["no destination holds it".into()],
                });
            }
        }
        for (info, holders) in &all {
            if !ids.is_empty() && !ids.contains(&info.id) {
                continue;
            }
            for (i, folder) in holders {
                let d = self.inner.destinations[*i].clone();
                let problems = self.check_one(info, d.as_ref(), folder, read_data).await;
                reports.push(CheckReport {
                    id: info.id.clone(),
                    destination: d.stored_at(folder),
                    problems,
                });
            }
        }
        Ok(reports)
    }

    async fn check_one(
        &self,
        info: &BackupInfo,
        d: &dyn Destination,
        folder: &str,
        read_data: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        match info.status.as_str() {
            "completed" => {}
            "damaged" => {
                problems.push(
                    info.error
                        .clone()
                        .unwrap_or_else(|| "its metadata cannot be read".into()),
                );
                return problems;
            }
            other => {
                problems.push(format!(
                    "it is {other}, not completed: it cannot be restored"
                ));
                return problems;
            }
        }
        let key = |suffix: &str| format!("{folder}{}{suffix}", info.id);
        match d.get(&key(".done")).await {
            Ok(Some(marker)) => {
                // The marker names the backup and its archive's hash: one that does not is
                // not this backup's (damaged, or copied from another).
                let matches = serde_json::from_slice::<Value>(&marker).is_ok_and(|m| {
                    m["id"].as_str() == Some(info.id.as_str())
                        && m["sha256"].as_str() == info.sha256.as_deref()
                });
                if !matches {
                    problems.push(
                        "its completion marker does not match its metadata (damaged or altered)"
                            .into(),
                    );
                }
            }
            Ok(None) => problems.push("its completion marker is missing".into()),
            Err(e) => problems.push(format!("the completion marker cannot be read: {e}")),
        }
        let index = d.fetch(&key(".index"), None).await;
        match (index, &info.index_sha256) {
            (Ok(Some((sha, _))), Some(want)) if &sha != want => {
                problems.push("the index does not match its SHA-256 (damaged or altered)".into())
            }
            (Ok(Some(_)), _) => {}
            (Ok(None), _) => problems.push("the index is missing".into()),
            (Err(e), _) => problems.push(format!("the index cannot be read: {e}")),
        }
        let spool = TempFile(self.inner.temp_dir.join(format!(
            "{}.check.{}",
            info.id,
            random_suffix()
        )));
        let to = read_data.then_some(spool.0.as_path());
        match d.fetch(&key(".s3db-backup"), to).await {
            Ok(Some((sha, size))) => {
                if Some(&sha) != info.sha256.as_ref() || size != info.size {
                    problems.push(format!(
                        "the archive does not match its metadata: SHA-256 {}, {size} bytes (recorded: {}, {} bytes)",
                        short(&sha),
                        info.sha256.as_deref().map_or("none", short),
                        info.size
                    ));
                } else if read_data {
                    let (path, id, keys) = (spool.0.clone(), info.id.clone(), self.keyring());
                    let read = tokio::task::spawn_blocking(move || {
                        super::restore::verify(&path, &id, &keys)
                    })
                    .await;
                    match read {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => problems.push(format!("the archive does not read back: {e}")),
                        Err(e) => problems.push(format!("the archive check stopped: {e}")),
                    }
                }
            }
            Ok(None) => problems.push("the archive is missing".into()),
            Err(e) => problems.push(format!("the archive cannot be read: {e}")),
        }
        problems
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
