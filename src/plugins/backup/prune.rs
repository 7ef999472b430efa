//! Deleting backups: one by id, or every backup the retention policy no longer keeps.

use super::*;

impl Backup {
    /// Removes a backup's objects from every destination, marker first, so a half-deleted
    /// backup is never listed as completed.
    pub async fn delete(&self, id: &str) -> Result<(), BackupError> {
        let all = self.locate_all().await?;
        let (info, holders) = all
            .iter()
            .find(|(b, _)| b.id == id)
            .ok_or_else(|| BackupError::NotFound(id.into()))?;
        if let Some((child, _)) = all
            .iter()
            .find(|(b, _)| b.parent.as_deref() == Some(id) && b.is_completed())
        {
            return Err(BackupError::Unusable {
                id: id.into(),
                reason: format!(
                    "incremental `{}` depends on it; delete that first",
                    child.id
                ),
            });
        }
        self.delete_objects(info, holders).await
    }

    pub(super) async fn delete_objects(
        &self,
        info: &BackupInfo,
        holders: &Holders,
    ) -> Result<(), BackupError> {
        for (i, folder) in holders {
            let d = self.inner.destinations[*i].as_ref();
            for suffix in ["done", "s3db-backup", "index", "meta.json"] {
                d.delete(&format!("{folder}{}.{suffix}", info.id))
                    .await
                    .map_err(|e| BackupError::Destination(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Applies the retention policy; with `dry_run` nothing is deleted. Holds the backup lock,
    /// so no backup runs meanwhile and every incomplete backup is a dead one.
    pub async fn prune(&self, dry_run: bool) -> Result<Vec<retention::Decision>, BackupError> {
        workdir::sweep(&self.inner.temp_root);
        let lease = self.take_lease("prune").await?;
        let result = async {
            let all = self.locate_all().await?;
            // A damaged backup may hold a sound archive behind its unreadable metadata: it is
            // never pruned, only reported, so that someone can look at it.
            let candidates: Vec<_> = all
                .iter()
                .filter(|(b, _)| b.status != "damaged")
                .map(|(b, _)| retention::Candidate {
                    id: b.id.clone(),
                    started_at: b.started_at,
                    completed: b.is_completed(),
                    parent: b.parent.clone(),
                })
                .collect();
            let mut decisions = retention::decide(
                &self.inner.config.retention,
                self.inner.config.timezone.0,
                &candidates,
            );
            decisions.extend(
                all.iter()
                    .filter(|(b, _)| b.status == "damaged")
                    .map(|(b, _)| retention::Decision {
                        id: b.id.clone(),
                        keep: true,
                        reasons: vec![format!(
                            "damaged, kept for inspection ({})",
                            b.error.as_deref().unwrap_or("unreadable metadata")
                        )],
                    }),
            );
            if !dry_run {
                // Newest first means children go before their parents.
                for d in decisions.iter().filter(|d| !d.keep) {
                    if let Some((info, holders)) = all.iter().find(|(b, _)| b.id == d.id) {
                        self.delete_objects(info, holders).await?;
                        tracing::info!(backup = %d.id, reason = %d.reasons.join(", "), "pruned");
                    }
                }
            }
            Ok(decisions)
        }
        .await;
        lease.release().await;
        result
    }
}
