//! Rules of `jobs:` and the scheduler's callbacks.

use super::*;

impl Checker<'_> {
    pub(super) fn jobs(&mut self) {
        for (name, job) in &self.m.jobs {
            let base = ["jobs", name.as_str()];
            self.hook_ref(
                &job.action,
                BuiltinKind::Action,
                &[&base[..], &["action"]].concat(),
            );
        }
    }

    pub(super) fn scheduler_callbacks(&mut self) {
        let s = &self.m.scheduler;
        if s.history_retention.as_ref().and_then(|r| r.max_runs) == Some(0) {
            let span = self.span(&["scheduler", "historyRetention", "maxRuns"]);
            self.emit(
                Diagnostic::error(
                    "manifest::invalid_value",
                    span,
                    "`maxRuns` must be at least 1 (a job's newest run is always kept)",
                )
                .with_help("give the number of runs to keep per job, or remove `maxRuns`"),
            );
        }
        for (key, hook) in [
            ("onJobStart", &s.on_job_start),
            ("onJobComplete", &s.on_job_complete),
            ("onJobError", &s.on_job_error),
        ] {
            if let Some(h) = hook {
                self.hook_ref(h, BuiltinKind::Action, &["scheduler", key]);
            }
        }
    }
}
