//! `backup diff A B`: which records a later backup added, changed and deleted since an earlier
//! one, per resource, from the two backups' indexes (every record's ETag and size when each was
//! taken), so no archive is read.

use super::*;

/// The records of one resource that differ between two backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub deleted: Vec<String>,
}

/// `diff(from, to)`: per resource, what `to` has that `from` had not, and so on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDiff {
    pub from: String,
    pub to: String,
    pub resources: IndexMap<String, ResourceDiff>,
}

impl Backup {
    pub async fn diff(&self, from: &str, to: &str) -> Result<BackupDiff, BackupError> {
        let (before, after) = (self.load_index(from).await?, self.load_index(to).await?);
        let mut resources: std::collections::BTreeMap<String, ResourceDiff> = Default::default();
        for (key, version) in &after {
            let d = resources.entry(key.0.clone()).or_default();
            match before.get(key) {
                None => d.added.push(key.1.clone()),
                Some(old) if old != version => d.changed.push(key.1.clone()),
                Some(_) => {}
            }
        }
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            resources
                .entry(key.0.clone())
                .or_default()
                .deleted
                .push(key.1.clone());
        }
        let resources = resources
            .into_iter()
            .filter(|(_, d)| !(d.added.is_empty() && d.changed.is_empty() && d.deleted.is_empty()))
            .map(|(name, mut d)| {
                d.added.sort();
                d.changed.sort();
                d.deleted.sort();
                (name, d)
            })
            .collect();
        Ok(BackupDiff {
            from: from.into(),
            to: to.into(),
            resources,
        })
    }
}
