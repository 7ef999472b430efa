//! Job history: reading a job's runs newest first, statistics, sweeping runs a killed runner left at `running`, and retention.

use super::*;

use crate::types::RunId;

impl Scheduler {
    /// Runs of a job, newest first, optionally only those with a status.
    ///
    /// Run ids carry their time (`JOB:SLOT`, `JOB:manual-TIME-…`), so one listing of the ids
    /// orders them and only the records returned (plus, with a status, those passed over) are
    /// read: the latest run of a job with a year of per-minute history is a LIST and a GET,
    /// not half a million GETs.
    pub async fn history(
        &self,
        job: &str,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Value>, JobError> {
        Ok(self
            .runs(job, status, limit)
            .await?
            .iter()
            .map(Record::to_json)
            .collect())
    }

    pub(super) async fn runs(
        &self,
        job: &str,
        status: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Record>, JobError> {
        let Some(history) = &self.inner.history else {
            return Ok(Vec::new());
        };
        let prefix = format!("{job}:");
        let mut ids: Vec<(DateTime<Utc>, String)> = history
            .ids_with_prefix(&prefix)
            .await?
            .into_iter()
            .filter_map(|id| RunId::time_of(id.get(prefix.len()..)?).map(|t| (t, id)))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        // Read in batches no larger than what is still wanted (at least a few when filtering,
        // since some will be passed over), so a limit of 1 reads one record.
        let mut next = ids.into_iter().map(|(_, id)| id).peekable();
        while out.len() < limit && next.peek().is_some() {
            let want = limit - out.len();
            let batch: Vec<String> = next
                .by_ref()
                .take(if status.is_some() { want.max(32) } else { want }.min(256))
                .collect();
            for record in history.get_many(&batch).await? {
                let field = |f: &str| record.data.get(f).and_then(Value::as_str);
                // A job named `a:b` shares the id prefix `a:` with job `a`.
                if field("job") != Some(job) || status.is_some_and(|s| field("status") != Some(s)) {
                    continue;
                }
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Notes that a slot of `job` came due here: its runs (here or on another runner) are
    /// looked at by the next sweep.
    pub(super) fn to_sweep(&self, job: &str) {
        self.upkeep().sweep.insert(job.to_string());
    }

    /// Notes that this runner recorded a run of `job`: its history is pruned by the next pass.
    pub(super) fn to_prune(&self, job: &str) {
        if let Some(jobs) = &mut self.upkeep().prune {
            jobs.insert(job.to_string());
        }
    }

    fn upkeep(&self) -> std::sync::MutexGuard<'_, Upkeep> {
        self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks as `interrupted` the recent runs still recorded as `running` that cannot be: they
    /// started longer ago than the job's timeouts, retries and backoff allow, so the runner
    /// that ran them stopped without recording them (killed, or its machine lost). Only the
    /// jobs noted since the last pass are looked at (every job after a start), at most 100 a
    /// pass, and of each only its newest few runs; a job with a run that may still be going
    /// stays noted. A run another runner finishes meanwhile is left alone (the update is
    /// conditional). Returns how many were marked.
    pub async fn sweep_stale(&self) -> usize {
        let now = self.inner.clock.now();
        let jobs: Vec<(String, JobDef)> = {
            let mut upkeep = self.upkeep();
            let names: Vec<String> = upkeep
                .sweep
                .iter()
                .take(SWEEP_JOBS_PER_PASS)
                .cloned()
                .collect();
            for n in &names {
                upkeep.sweep.remove(n);
            }
            let all = self.inner.jobs.read().unwrap_or_else(|e| e.into_inner());
            names
                .into_iter()
                .filter_map(|n| all.get(&n).map(|j| (n, j.def.clone())))
                .collect()
        };
        let Some(history) = &self.inner.history else {
            return 0;
        };
        let mut marked = 0;
        for (job, def) in jobs {
            let runs = match self.runs(&job, None, Some(3)).await {
                Ok(runs) => runs,
                Err(e) => {
                    tracing::warn!(job, error = %e, "could not read the job history to sweep it");
                    // Look again next pass.
                    self.to_sweep(&job);
                    continue;
                }
            };
            let longest =
                chrono::Duration::from_std(self.longest_run(&def)).unwrap_or(chrono::Duration::MAX);
            for run in runs {
                let field = |f: &str| run.data.get(f).and_then(Value::as_str);
                let Some(started) = field("startedAt")
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                else {
                    continue;
                };
                if field("status") != Some("running") {
                    continue;
                }
                if now - started <= longest {
                    // It may still be going: look again next pass.
                    self.to_sweep(&job);
                    continue;
                }
                let patch = json!({
                    "status": "interrupted",
                    "error": "the runner stopped during the run without recording its end",
                });
                let patch = patch.as_object().cloned().unwrap_or_default();
                match history.update(&run.id, &patch, Some(&run.etag)).await {
                    Ok(_) => {
                        tracing::warn!(job, run = %run.id, "a run left at `running` by a stopped runner is now `interrupted`");
                        marked += 1;
                    }
                    Err(DbError::Conflict { .. }) => {}
                    Err(e) => {
                        tracing::warn!(job, run = %run.id, error = %e, "could not mark a stale run")
                    }
                }
            }
        }
        marked
    }

    /// Applies `historyRetention`: of each job's runs (jobs removed from the manifest included),
    /// keeps the newest, those within `maxRuns` and `maxAge`, and any still `running`; deletes
    /// the rest. One listing of the history finds them; a run is read only to be deleted.
    /// Returns how many were deleted.
    pub async fn prune_history(&self) -> usize {
        let (Some(retention), Some(history)) =
            (self.config().history_retention, &self.inner.history)
        else {
            return 0;
        };
        // The first pass lists the whole history (removed jobs' runs included); later ones
        // only the jobs that recorded runs here since, and none when nothing ran.
        let noted = {
            let mut upkeep = self.upkeep();
            let noted = upkeep.prune.take();
            upkeep.prune = Some(Default::default());
            noted
        };
        let listed = match &noted {
            None => history.ids().await,
            Some(jobs) => {
                let mut ids = Vec::new();
                let mut failed = None;
                for job in jobs {
                    match history.ids_with_prefix(&format!("{job}:")).await {
                        Ok(found) => ids.extend(
                            found
                                .into_iter()
                                .filter(|id| RunId::split(id).is_some_and(|(j, _)| j == job)),
                        ),
                        Err(e) => failed = Some(e),
                    }
                }
                failed.map_or(Ok(ids), Err)
            }
        };
        let ids = match listed {
            Ok(ids) => ids,
            Err(e) => {
                // Look again next pass.
                let mut upkeep = self.upkeep();
                match (noted, &mut upkeep.prune) {
                    (Some(jobs), Some(now)) => now.extend(jobs),
                    _ => upkeep.prune = None,
                }
                drop(upkeep);
                tracing::warn!(error = %e, "could not list the job history to prune it");
                return 0;
            }
        };
        let mut by_job: HashMap<&str, Vec<(DateTime<Utc>, &str)>> = HashMap::new();
        for id in &ids {
            if let Some((job, time)) = RunId::split(id) {
                by_job.entry(job).or_default().push((time, id.as_str()));
            }
        }
        let oldest = retention.max_age.and_then(|age| {
            chrono::Duration::from_std(age.as_std())
                .ok()
                .map(|age| self.inner.clock.now() - age)
        });
        let keep = retention
            .max_runs
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
            .max(1);
        let mut doomed = Vec::new();
        for runs in by_job.values_mut() {
            runs.sort_by(|a, b| b.cmp(a));
            for (i, (time, id)) in runs.iter().enumerate().skip(1) {
                if i >= keep || oldest.is_some_and(|o| *time < o) {
                    doomed.push(id.to_string());
                }
            }
        }
        let deleted: usize = futures::stream::iter(doomed.into_iter().map(|id| async move {
            // Read first: a run still going is kept, and one that changes meanwhile stays.
            let run = history.get(&id).await.ok().flatten()?;
            if run.data.get("status").and_then(Value::as_str) == Some("running") {
                return None;
            }
            history
                .delete(&id, Some(&run.etag))
                .await
                .ok()
                .filter(|d| *d)
        }))
        .buffer_unordered(8)
        .filter_map(|d| async move { d })
        .count()
        .await;
        if deleted > 0 {
            tracing::info!(deleted, "pruned the job history (historyRetention)");
        }
        deleted
    }

    /// The longest a run of this job can take: every attempt to its timeout (and the grace the
    /// timeout allows), the longest backoff between them, and a margin for callbacks.
    pub(super) fn longest_run(&self, def: &JobDef) -> Duration {
        let config = self.config();
        let policy = RetryPolicy::new(def.retries.unwrap_or(config.default_retries));
        let attempt = def.timeout.unwrap_or(config.default_timeout).as_std() + ATTEMPT_GRACE;
        policy.longest(attempt) + Duration::from_secs(300)
    }

    pub async fn statistics(&self, job: &str) -> Result<JobStatistics, JobError> {
        let runs: Vec<Map<String, Value>> = self
            .history(job, None, None)
            .await?
            .into_iter()
            .filter_map(|v| v.as_object().cloned())
            .filter(|r| r.get("status").and_then(Value::as_str) != Some("running"))
            .collect();
        let status_of = |r: &Map<String, Value>| {
            r.get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let successes = runs.iter().filter(|r| status_of(r) == "success").count();
        let durations: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get("durationMs").and_then(Value::as_f64))
            .collect();
        let last = |want_success: bool| {
            runs.iter()
                .find(|r| (status_of(r) == "success") == want_success)
                .and_then(|r| {
                    r.get("finishedAt")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
        };
        Ok(JobStatistics {
            runs: runs.len(),
            successes,
            errors: runs.len() - successes,
            success_rate: if runs.is_empty() {
                0.0
            } else {
                successes as f64 / runs.len() as f64
            },
            average_duration_ms: if durations.is_empty() {
                0.0
            } else {
                durations.iter().sum::<f64>() / durations.len() as f64
            },
            last_success: last(true),
            last_error: last(false),
        })
    }
}
