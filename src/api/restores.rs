//! Restores started over the API. A restore can take minutes, longer than clients and proxies
//! wait for an answer, so `POST /api/v1/backups/{id}/restore` answers at once (202) and the
//! restore is followed here. Process-local: a runner remembers the last `KEPT` restores it
//! ran; the outcome also goes to the log, the `restore_*` events and the onRestore* hooks.

use std::sync::Mutex;

use crate::plugins::backup::RestoreStats;
use chrono::Utc;
use indexmap::IndexMap;
use serde::Serialize;

/// How many restores are remembered; the oldest finished ones are forgotten first.
const KEPT: usize = 100;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRun {
    pub restore_id: String,
    pub backup_id: String,
    /// `running`, `completed` or `failed`.
    pub status: &'static str,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The restore's statistics, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<RestoreStats>,
    /// Why it failed: the error's code and message, as the API's errors give them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::ErrorBody>,
}

#[derive(Default)]
pub struct Restores(Mutex<IndexMap<String, RestoreRun>>);

fn now() -> String {
    crate::types::time::now_rfc3339()
}

impl Restores {
    /// Records a restore of `backup_id` as running and returns it.
    pub fn start(&self, backup_id: &str) -> RestoreRun {
        let run = RestoreRun {
            restore_id: crate::types::RestoreId::new(Utc::now()).into_string(),
            backup_id: backup_id.to_string(),
            status: "running",
            started_at: now(),
            finished_at: None,
            result: None,
            error: None,
        };
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while runs.len() >= KEPT {
            let Some(oldest) = runs
                .iter()
                .find(|(_, r)| r.status != "running")
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            runs.shift_remove(&oldest);
        }
        runs.insert(run.restore_id.clone(), run.clone());
        run
    }

    /// Records how a restore ended: its statistics, or its error.
    pub fn finish(&self, restore_id: &str, outcome: Result<RestoreStats, super::ErrorBody>) {
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = runs.get_mut(restore_id) {
            run.finished_at = Some(now());
            match outcome {
                Ok(stats) => {
                    run.status = "completed";
                    run.result = Some(stats);
                }
                Err(error) => {
                    run.status = "failed";
                    run.error = Some(error);
                }
            }
        }
    }

    pub fn get(&self, restore_id: &str) -> Option<RestoreRun> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(restore_id)
            .cloned()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<RestoreRun> {
        let runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        runs.values().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(records: u64) -> RestoreStats {
        RestoreStats {
            records,
            ..RestoreStats::default()
        }
    }

    #[test]
    fn runs_are_followed_and_the_oldest_finished_forgotten() {
        let r = Restores::default();
        let first = r.start("b0");
        let kept = r.start("b1");
        r.finish(
            &first.restore_id,
            Err(crate::api::ErrorBody {
                code: "x".into(),
                message: "failed".into(),
                details: Default::default(),
            }),
        );
        for i in 2..=KEPT {
            let run = r.start(&format!("b{i}"));
            r.finish(&run.restore_id, Ok(stats(i as u64)));
        }
        let list = r.list();
        assert_eq!(list.len(), KEPT);
        assert!(
            r.get(&first.restore_id).is_none(),
            "the oldest finished went"
        );
        assert_eq!(r.get(&kept.restore_id).unwrap().status, "running");
        assert_eq!(list[0].backup_id, format!("b{KEPT}"));
        assert_eq!(list[0].status, "completed");
        assert_eq!(list[0].result, Some(stats(KEPT as u64)));
    }
}
