//! Running jobs: slot claims across runners, retries, timeouts, history and statistics,
//! enable/disable/add/remove, overlap, catch-up, interruption, callbacks — with a manual clock
//! where time matters.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use s3db_run::db::schema::StoredResource;
use s3db_run::db::Database;
use s3db_run::manifest::model::{JobDef, Manifest};
use s3db_run::manifest::Format;
use s3db_run::plugins::scheduler::jobs::JobError;
use s3db_run::plugins::scheduler::{JobEvent, Scheduler};
use s3db_run::plugins::{BuildContext, Component};
use s3db_run::types::clock::{Clock, ManualClock, SystemClock};
use serde_json::json;

use crate::support::{load_text, Backend};

struct Setup {
    scheduler: Scheduler,
    manifest: Manifest,
    db: Database,
    dir: tempfile::TempDir,
    _backend: Arc<Backend>,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn setup(backend: Backend, jobs_yaml: &str, clock: Arc<dyn Clock>) -> Setup {
    let text = format!("version: 1\ndatabase: {{ connection: \"memory://x/y\" }}\n{jobs_yaml}");
    let loaded = load_text(&text, Format::Yaml);
    let errors: Vec<_> = loaded
        .report
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let manifest = loaded.manifest.unwrap().manifest;
    let backend = Arc::new(backend);
    let db = Database::connect(
        backend.store.clone(),
        &IndexMap::<String, StoredResource>::new(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = BuildContext::for_manifest(&manifest, db.clone(), dir.path()).with_clock(clock);
    let scheduler = Scheduler::build((&manifest.jobs, &manifest.scheduler), &ctx)
        .await
        .unwrap();
    Setup {
        scheduler,
        manifest,
        db,
        dir,
        _backend: backend,
    }
}

impl Setup {
    /// Writes a run into the job history as a runner would have (id `JOB:TIME`, started at
    /// its slot).
    async fn seed_run(&self, job: &str, slot: &str, status: &str) {
        let data =
            json!({ "job": job, "status": status, "slot": slot, "date": slot, "startedAt": slot });
        self.db
            .resource("job_history")
            .unwrap()
            .insert(
                data.as_object().unwrap().clone(),
                Some(&format!("{job}:{slot}")),
            )
            .await
            .unwrap();
    }

    /// The scheduler's run loop in a task, and the token that stops it.
    fn run_loop(
        &self,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let stop = tokio_util::sync::CancellationToken::new();
        let scheduler = self.scheduler.clone();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { scheduler.run(stop).await }
        });
        (stop, task)
    }

    /// Another runner on the same database.
    async fn second_runner(&self) -> Scheduler {
        let ctx = BuildContext::for_manifest(&self.manifest, self.db.clone(), self.dir.path());
        Scheduler::build((&self.manifest.jobs, &self.manifest.scheduler), &ctx)
            .await
            .unwrap()
    }
}

async fn a_slot_runs_once_whatever_the_number_of_runners(b: Backend) {
    let s = setup(b, "jobs:\n  tick: { schedule: \"* * * * *\", action: { run: [\"sh\", \"-c\", \"echo x >> runs.txt\"] } }\n", Arc::new(SystemClock)).await;
    let mut runners = vec![s.scheduler.clone()];
    for _ in 0..3 {
        runners.push(s.second_runner().await);
    }
    let slot = at("2026-05-01T10:00:00Z");
    let results = futures::future::join_all(runners.iter().map(|r| r.run_slot("tick", slot))).await;
    let ran = results
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(ran, 1);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("runs.txt")).unwrap(),
        "x\n"
    );
    let history = s.scheduler.history("tick", None, None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["status"], "success");
    assert_eq!(history[0]["slot"], "2026-05-01T10:00:00.000Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_runs_once_on_memory() {
    a_slot_runs_once_whatever_the_number_of_runners(Backend::memory().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_runs_once_on_s3() {
    a_slot_runs_once_whatever_the_number_of_runners(Backend::s3().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_and_recorded_with_statistics() {
    let s = setup(
        Backend::memory().await,
        "jobs:\n  flaky: { schedule: \"@daily\", retries: 2, action: { run: [\"sh\", \"-c\", \"[ $S3DB_ATTEMPT -ge 3 ] && echo '{\\\"ok\\\":true}'\"] } }\n  broken: { schedule: \"@daily\", retries: 1, action: { run: [\"sh\", \"-c\", \"echo boom >&2; exit 4\"] } }\n",
        Arc::new(SystemClock),
    )
    .await;
    let mut events = s.scheduler.subscribe();
    let run = s.scheduler.run_now("flaky", json!({})).await.unwrap();
    assert_eq!(
        (run["status"].as_str(), run["attempts"].as_u64()),
        (Some("success"), Some(3)),
        "{run}"
    );
    assert_eq!(run["result"], json!({ "ok": true }));
    let failed = s.scheduler.run_now("broken", json!({})).await.unwrap();
    assert_eq!(
        (failed["status"].as_str(), failed["attempts"].as_u64()),
        (Some("error"), Some(2))
    );
    assert!(failed["error"].as_str().unwrap().contains("boom"));
    s.scheduler.run_now("flaky", json!({})).await.unwrap();
    let stats = s.scheduler.statistics("flaky").await.unwrap();
    assert_eq!((stats.runs, stats.successes, stats.errors), (2, 2, 0));
    assert!(stats.last_success.is_some() && stats.last_error.is_none());
    let stats = s.scheduler.statistics("broken").await.unwrap();
    assert_eq!((stats.runs, stats.errors, stats.success_rate), (1, 1, 0.0));
    assert_eq!(
        s.scheduler
            .history("flaky", Some("success"), Some(1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.scheduler
            .history("flaky", Some("error"), None)
            .await
            .unwrap()
            .is_empty(),
        "only that job's records, by status"
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    assert_eq!(
        seen.iter()
            .filter(|e| matches!(e, JobEvent::JobError { job, .. } if job == "flaky"))
            .count(),
        4,
        "two failed attempts per flaky run"
    );
    assert!(seen
        .iter()
        .any(|e| matches!(e, JobEvent::JobComplete { job, .. } if job == "flaky")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_cut_off_at_its_timeout_with_its_processes() {
    let s = setup(
        Backend::memory().await,
        "jobs:\n  slow: { schedule: \"@daily\", retries: 0, timeout: 300ms, action: { run: [\"sh\", \"-c\", \"echo $$ > pid; sleep 30\"] } }\n",
        Arc::new(SystemClock),
    )
    .await;
    let started = std::time::Instant::now();
    let run = s.scheduler.run_now("slow", json!({})).await.unwrap();
    assert_eq!(run["status"], "timeout", "{run}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(s.dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        "the job's shell is still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_can_be_enabled_disabled_added_and_removed() {
    let clock = ManualClock::new(at("2026-05-01T10:00:30Z"));
    let s = setup(
        Backend::memory().await,
        "jobs:\n  a: { schedule: \"* * * * *\", action: log }\n",
        clock.clone(),
    )
    .await;
    let mut events = s.scheduler.subscribe();
    assert_eq!(
        s.scheduler.status("a").unwrap().next_run.as_deref(),
        Some("2026-05-01T10:01:00Z")
    );
    s.scheduler.disable("a").await.unwrap();
    assert!(!s.scheduler.status("a").unwrap().enabled);
    assert_eq!(s.scheduler.status("a").unwrap().next_run, None);
    s.scheduler.enable("a").await.unwrap();
    let def: JobDef = serde_json::from_value(
        json!({ "schedule": "0 12 * * *", "action": "log", "timezone": "Europe/Berlin" }),
    )
    .unwrap();
    s.scheduler.add("b", def.clone()).unwrap();
    assert!(matches!(
        s.scheduler.add("b", def),
        Err(JobError::Exists(_))
    ));
    assert_eq!(
        s.scheduler.status("b").unwrap().next_run.as_deref(),
        Some("2026-05-02T12:00:00+02:00"),
        "noon in the job's own zone"
    );
    assert_eq!(s.scheduler.all_status().len(), 2);
    s.scheduler.remove("b").unwrap();
    assert!(matches!(
        s.scheduler.remove("b"),
        Err(JobError::Unknown(..))
    ));
    let mut kinds = Vec::new();
    while let Ok(e) = events.try_recv() {
        kinds.push(
            serde_json::to_value(&e).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        kinds,
        ["job_disabled", "job_enabled", "job_added", "job_removed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_fires_each_slot_of_enabled_jobs_on_the_clock() {
    let clock = ManualClock::new(at("2026-05-01T10:00:30Z"));
    let s = setup(
        Backend::memory().await,
        "jobs:\n  tick: { schedule: \"* * * * *\", action: log }\n  off: { schedule: \"* * * * *\", action: log, enabled: false }\n",
        clock.clone(),
    )
    .await;
    let (stop, task) = s.run_loop();
    for minute in 1..=3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        clock.set(at(&format!("2026-05-01T10:0{minute}:00Z")));
        for _ in 0..50 {
            if s.scheduler.history("tick", None, None).await.unwrap().len() == minute {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.cancel();
    task.await.unwrap();
    let slots: Vec<String> = s
        .scheduler
        .history("tick", None, None)
        .await
        .unwrap()
        .iter()
        .map(|h| h["slot"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        slots,
        [
            "2026-05-01T10:03:00.000Z",
            "2026-05-01T10:02:00.000Z",
            "2026-05-01T10:01:00.000Z"
        ]
    );
    assert!(
        s.scheduler
            .history("off", None, None)
            .await
            .unwrap()
            .is_empty(),
        "a disabled job does not run"
    );
}

/// History is ordered by the time in the run ids, and a limited history reads only the records
/// it returns: the newest run of a job with a long history costs one LIST and one GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_only_the_runs_it_returns() {
    let memory = Backend::memory().await;
    let counting = Arc::new(s3db_run::store::counting::CountingStore::new(
        memory.store.clone(),
    ));
    let counts = counting.counts.clone();
    let s = setup(
        memory.wrapped(counting),
        "jobs:\n  tick: { schedule: \"* * * * *\", action: log }\n  tick:x: { schedule: \"* * * * *\", action: log }\n",
        Arc::new(SystemClock),
    )
    .await;
    let start = at("2026-05-01T00:00:00Z");
    for i in 0..300 {
        let slot = (start + chrono::Duration::minutes(i))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let status = if i % 10 == 0 { "error" } else { "success" };
        s.seed_run("tick", &slot, status).await;
    }
    // A job whose name starts with `tick:` has ids under the same prefix; it is not tick's.
    s.scheduler.run_now("tick:x", json!({})).await.unwrap();
    // A manual run after the last slot is the newest, although `manual-…` sorts after digits.
    s.scheduler.run_now("tick", json!({})).await.unwrap();

    let gets = || counts.gets.load(std::sync::atomic::Ordering::Relaxed);
    let before = gets();
    let newest = s.scheduler.history("tick", None, Some(1)).await.unwrap();
    assert_eq!(gets() - before, 1, "one GET for the newest run");
    assert_eq!(newest.len(), 1);
    assert!(newest[0]["slot"].is_null(), "the manual run: {newest:?}");

    let before = gets();
    let errors = s
        .scheduler
        .history("tick", Some("error"), Some(3))
        .await
        .unwrap();
    let slots: Vec<&str> = errors.iter().map(|r| r["slot"].as_str().unwrap()).collect();
    assert_eq!(
        slots,
        [
            "2026-05-01T04:50:00.000Z",
            "2026-05-01T04:40:00.000Z",
            "2026-05-01T04:30:00.000Z"
        ]
    );
    assert!(gets() - before <= 64, "{} GETs", gets() - before);

    let all = s.scheduler.history("tick", None, None).await.unwrap();
    assert_eq!(all.len(), 301);
    assert!(all.iter().all(|r| r["job"] == "tick"));
    let times: Vec<&str> = all[1..]
        .iter()
        .map(|r| r["slot"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    assert_eq!(
        s.scheduler
            .history("tick:x", None, None)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A runner killed during a run leaves its record at `running`; a later sweep marks it
/// `interrupted` once the job's timeouts and retries rule out that it still runs somewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_left_running_by_a_killed_runner_are_swept_to_interrupted() {
    let clock = ManualClock::new(at("2026-05-01T12:00:00Z"));
    let s = setup(
        Backend::fs().await,
        "jobs:\n  tick: { schedule: \"* * * * *\", action: log, timeout: 1s, retries: 0 }\n",
        clock.clone(),
    )
    .await;
    // Started at the slot; a run of this job ends within 1 s + grace + the 5 min margin.
    for (slot, status) in [
        ("2026-05-01T11:00:00.000Z", "running"),
        ("2026-05-01T11:01:00.000Z", "success"),
        ("2026-05-01T11:58:00.000Z", "running"),
    ] {
        s.seed_run("tick", slot, status).await;
    }
    let status_of = |runs: &[serde_json::Value], slot: &str| {
        runs.iter()
            .find(|r| r["slot"] == slot)
            .map(|r| r["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(s.scheduler.sweep_stale().await, 1);
    let runs = s.scheduler.history("tick", None, None).await.unwrap();
    assert_eq!(status_of(&runs, "2026-05-01T11:00:00.000Z"), "interrupted");
    assert_eq!(status_of(&runs, "2026-05-01T11:01:00.000Z"), "success");
    assert_eq!(
        status_of(&runs, "2026-05-01T11:58:00.000Z"),
        "running",
        "it may still be running"
    );
    clock.set(at("2026-05-01T12:10:00Z"));
    assert_eq!(s.scheduler.sweep_stale().await, 1);
    assert_eq!(s.scheduler.sweep_stale().await, 0);
    let runs = s.scheduler.history("tick", None, None).await.unwrap();
    assert_eq!(status_of(&runs, "2026-05-01T11:58:00.000Z"), "interrupted");
    assert!(runs.iter().all(|r| r["status"] != "running"));
}

/// A manifest of many jobs is swept a window of 100 jobs at a time, every job in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_are_swept_a_window_at_a_time() {
    let clock = ManualClock::new(at("2026-05-01T12:00:00Z"));
    let jobs: String = (0..150)
        .map(|i| {
            format!("  j{i:03}: {{ schedule: \"@daily\", action: log, timeout: 1s, retries: 0 }}\n")
        })
        .collect();
    let s = setup(
        Backend::memory().await,
        &format!("jobs:\n{jobs}"),
        clock.clone(),
    )
    .await;
    for i in 0..150 {
        s.seed_run(&format!("j{i:03}"), "2026-05-01T00:00:00.000Z", "running")
            .await;
    }
    assert_eq!(s.scheduler.sweep_stale().await, 100);
    assert_eq!(s.scheduler.sweep_stale().await, 50);
    assert_eq!(s.scheduler.sweep_stale().await, 0);
    for i in [0, 99, 100, 149] {
        let runs = s
            .scheduler
            .history(&format!("j{i:03}"), None, None)
            .await
            .unwrap();
        assert_eq!(runs[0]["status"], "interrupted", "j{i:03}");
    }
}

/// History upkeep costs an idle runner nothing: after the pass at start (every job swept,
/// the whole history pruned), a pass reads only the jobs whose slots came due or whose runs
/// were recorded here since, so with 200 jobs and their history and nothing due it makes no
/// request at all; a run of one job brings that one job (not the others) into the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_runner_s_history_upkeep_reads_nothing() {
    let memory = Backend::memory().await;
    let counting = Arc::new(s3db_run::store::counting::CountingStore::new(
        memory.store.clone(),
    ));
    let counts = counting.counts.clone();
    let clock = ManualClock::new(at("2026-05-02T00:00:00Z"));
    let jobs: String = (0..200)
        .map(|i| format!("  j{i:03}: {{ schedule: \"@daily\", action: log }}\n"))
        .collect();
    let s = setup(
        memory.wrapped(counting),
        &format!("scheduler: {{ historyRetention: {{ maxRuns: 2 }} }}\njobs:\n{jobs}"),
        clock.clone(),
    )
    .await;
    for i in 0..200 {
        for day in ["2026-04-29", "2026-04-30", "2026-05-01"] {
            s.seed_run(
                &format!("j{i:03}"),
                &format!("{day}T00:00:00.000Z"),
                "success",
            )
            .await;
        }
    }
    // The pass at start: two sweep passes of 100 jobs, then the whole history pruned.
    assert_eq!(s.scheduler.sweep_stale().await, 0);
    assert_eq!(s.scheduler.sweep_stale().await, 0);
    assert_eq!(s.scheduler.prune_history().await, 200);
    let requests = |c: &s3db_run::store::counting::RequestCounts| {
        let (r, w, l) = c.snapshot();
        r + w + l
    };
    let before = requests(&counts);
    for _ in 0..3 {
        assert_eq!(s.scheduler.sweep_stale().await, 0);
        assert_eq!(s.scheduler.prune_history().await, 0);
    }
    assert_eq!(
        requests(&counts),
        before,
        "an idle upkeep pass made requests"
    );
    // One slot of one job: the next pass looks at that job alone.
    s.scheduler
        .run_slot("j007", at("2026-05-02T00:00:00Z"))
        .await
        .unwrap();
    let before = counts.snapshot().2;
    s.scheduler.sweep_stale().await;
    assert_eq!(s.scheduler.prune_history().await, 1);
    assert_eq!(
        counts.snapshot().2 - before,
        2,
        "one LIST to sweep j007, one to prune it"
    );
}

/// `historyRetention` keeps each job's newest `maxRuns` runs younger than `maxAge`, a job's
/// newest run and running runs whatever their age, and prunes removed jobs' runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_retention_prunes_old_runs_of_every_job() {
    let clock = ManualClock::new(at("2026-05-02T00:00:00Z"));
    let s = setup(
        Backend::fs().await,
        "scheduler: { historyRetention: { maxRuns: 5, maxAge: 1d } }\njobs:\n  tick: { schedule: \"* * * * *\", action: log }\n  daily: { schedule: \"@daily\", action: log }\n",
        clock.clone(),
    )
    .await;
    // tick: 10 runs a minute apart, the oldest still `running`.
    for i in 0..10 {
        let time = format!("2026-05-01T23:{:02}:00.000Z", 50 + i);
        let status = if i == 0 { "running" } else { "success" };
        s.seed_run("tick", &time, status).await;
    }
    // daily: two runs older than a day; the newer one is its newest run and stays.
    s.seed_run("daily", "2026-04-29T00:00:00.000Z", "success")
        .await;
    s.seed_run("daily", "2026-04-30T00:00:00.000Z", "error")
        .await;
    // gone:x, no longer in the manifest: one old run and its newest, kept.
    s.seed_run("gone:x", "2026-04-01T00:00:00.000Z", "success")
        .await;
    s.seed_run("gone:x", "2026-04-02T00:00:00.000Z", "success")
        .await;
    assert_eq!(s.scheduler.prune_history().await, 4 + 1 + 1);
    let mut left = s.db.resource("job_history").unwrap().ids().await.unwrap();
    left.sort();
    assert_eq!(
        left,
        [
            "daily:2026-04-30T00:00:00.000Z",
            "gone:x:2026-04-02T00:00:00.000Z",
            "tick:2026-05-01T23:50:00.000Z",
            "tick:2026-05-01T23:55:00.000Z",
            "tick:2026-05-01T23:56:00.000Z",
            "tick:2026-05-01T23:57:00.000Z",
            "tick:2026-05-01T23:58:00.000Z",
            "tick:2026-05-01T23:59:00.000Z",
        ]
    );
    // The partition listing agrees: the pruned runs' references went with them.
    assert_eq!(
        s.scheduler.history("tick", None, None).await.unwrap().len(),
        6
    );
    assert_eq!(s.scheduler.prune_history().await, 0);
}

/// A store whose create-only puts (slot claims) take a while, and that says when one began.
#[derive(Debug)]
struct SlowClaims {
    inner: s3db_run::store::DynStore,
    claiming: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl s3db_run::store::ObjectStore for SlowClaims {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(
        &self,
        key: &str,
    ) -> s3db_run::store::StoreResult<Option<s3db_run::store::Object>> {
        self.inner.get(key).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> s3db_run::store::StoreResult<Option<s3db_run::store::ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        mode: s3db_run::store::PutMode,
        options: &s3db_run::store::PutOptions,
    ) -> s3db_run::store::StoreResult<s3db_run::store::ETag> {
        if mode == s3db_run::store::PutMode::Create && key.contains("job") {
            self.claiming.notify_one();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.inner.put(key, body, mode, options).await
    }
    async fn delete(
        &self,
        key: &str,
        if_match: Option<&s3db_run::store::ETag>,
    ) -> s3db_run::store::StoreResult<()> {
        self.inner.delete(key, if_match).await
    }
    async fn list(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: usize,
    ) -> s3db_run::store::StoreResult<s3db_run::store::ListPage> {
        self.inner.list(prefix, token, max_keys).await
    }
}

/// The run loop stops while a fired slot is still claiming its slot: the scheduler stays busy
/// until the run is recorded, so a shutdown that waits for `busy()` never leaves a `running`
/// record behind (a runner once exited in that window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_being_claimed_keeps_the_scheduler_busy_until_it_is_recorded() {
    let clock = ManualClock::new(at("2026-05-01T10:00:30Z"));
    let memory = Backend::memory().await;
    let slow = Arc::new(SlowClaims {
        inner: memory.store.clone(),
        claiming: tokio::sync::Notify::new(),
    });
    let backend = memory.wrapped(slow.clone());
    let s = setup(
        backend,
        "jobs:\n  tick: { schedule: \"* * * * *\", action: log }\n",
        clock.clone(),
    )
    .await;
    let (stop, task) = s.run_loop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!s.scheduler.busy());
    let claiming = slow.claiming.notified();
    clock.set(at("2026-05-01T10:01:00Z"));
    tokio::time::timeout(Duration::from_secs(10), claiming)
        .await
        .expect("the slot never fired");
    stop.cancel();
    task.await.unwrap();
    assert!(s.scheduler.busy(), "a run claiming its slot is in flight");
    while s.scheduler.busy() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let history = s.scheduler.history("tick", None, None).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["status"], "success", "{history:?}");
}

/// A slot still waiting out its jitter when the run loop stops has not started: it is dropped,
/// claims nothing, and does not hold the shutdown for the rest of its jitter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_waiting_for_its_jitter_is_dropped_at_shutdown() {
    let clock = ManualClock::new(at("2026-05-01T10:00:30Z"));
    // This job's delay within an hour's jitter is well over a minute (asserted below).
    let s = setup(
        Backend::memory().await,
        "jobs:\n  tick: { schedule: \"* * * * *\", action: log, jitter: 1h }\n",
        clock.clone(),
    )
    .await;
    let jitter = s3db_run::plugins::scheduler::jobs::jitter_for(
        "tick",
        Some(s3db_run::types::Duration::from_secs(3600)),
    );
    assert!(jitter > Duration::from_secs(60), "{jitter:?}");
    let (stop, task) = s.run_loop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    clock.set(at("2026-05-01T10:01:00Z"));
    let fired = std::time::Instant::now();
    while !s.scheduler.busy() {
        assert!(
            fired.elapsed() < Duration::from_secs(5),
            "the slot never fired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    task.await.unwrap();
    let stopped = std::time::Instant::now();
    while s.scheduler.busy() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "the waiting slot holds the shutdown"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(s
        .scheduler
        .history("tick", None, None)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_refuses_a_manual_run_and_can_be_interrupted() {
    let s = setup(Backend::memory().await, "jobs:\n  long: { schedule: \"@daily\", retries: 0, action: { run: [\"sleep\", \"30\"] } }\n", Arc::new(SystemClock)).await;
    let running = tokio::spawn({
        let s = s.scheduler.clone();
        async move { s.run_now("long", json!({})).await }
    });
    for _ in 0..100 {
        if s.scheduler.status("long").unwrap().running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        s.scheduler.run_now("long", json!({})).await,
        Err(JobError::Running(_))
    ));
    s.scheduler.interrupt_all();
    let run = running.await.unwrap().unwrap();
    assert_eq!(run["status"], "interrupted");
    assert!(!s.scheduler.status("long").unwrap().running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_runs_only_the_latest_missed_slot_within_the_deadline() {
    let s = setup(
        Backend::memory().await,
        "jobs:\n  hourly: { schedule: \"0 * * * *\", action: log }\n  strict: { schedule: \"0 * * * *\", action: log, startingDeadline: 10m }\n  never: { schedule: \"0 * * * *\", action: log, catchUp: none }\n",
        Arc::new(SystemClock),
    )
    .await;
    let since = at("2026-05-01T07:10:00Z");
    let now = at("2026-05-01T10:30:00Z");
    assert_eq!(
        s.scheduler.missed_slot("hourly", now, since),
        Some(at("2026-05-01T10:00:00Z"))
    );
    assert_eq!(
        s.scheduler.missed_slot("strict", now, since),
        None,
        "30 minutes late is past a 10 minute deadline"
    );
    assert_eq!(
        s.scheduler
            .missed_slot("strict", at("2026-05-01T10:05:00Z"), since),
        Some(at("2026-05-01T10:00:00Z"))
    );
    assert_eq!(s.scheduler.missed_slot("never", now, since), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_as_hooks() {
    let s = setup(
        Backend::memory().await,
        "actions:\n  note: { run: [\"sh\", \"-c\", \"echo $S3DB_KIND:$S3DB_JOB:$(cat | grep -o '\\\"status\\\":\\\"[a-z]*\\\"' | head -1) >> calls.txt\"] }\nscheduler: { onJobStart: note, onJobComplete: note, onJobError: note }\njobs:\n  ok: { schedule: \"@daily\", action: log }\n  bad: { schedule: \"@daily\", retries: 0, action: { run: [\"false\"] } }\n",
        Arc::new(SystemClock),
    )
    .await;
    s.scheduler.run_now("ok", json!({})).await.unwrap();
    s.scheduler.run_now("bad", json!({})).await.unwrap();
    let calls = std::fs::read_to_string(s.dir.path().join("calls.txt")).unwrap();
    assert_eq!(calls, "callback:ok:\ncallback:ok:\"status\":\"success\"\ncallback:bad:\ncallback:bad:\"status\":\"error\"\n");
}

#[test]
fn job_commands_list_run_and_show_history() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        "version: 1\ndatabase: { connection: file://./data }\njobs:\n  hello: { schedule: \"0 9 * * MON\", timezone: Europe/Berlin, action: { run: [\"echo\", \"{\\\"hi\\\": 1}\"] } }\n  fails: { schedule: \"@daily\", retries: 0, action: { run: [\"false\"] } }\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .arg("job")
            .args(args)
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .output()
            .unwrap()
    };
    let list = String::from_utf8_lossy(&run(&["list"]).stdout).into_owned();
    let first: Vec<&str> = list.lines().next().unwrap().split('\t').collect();
    assert_eq!(
        &first[..4],
        ["hello", "0 9 * * MON", "Europe/Berlin", "enabled"]
    );
    assert!(
        first[4].ends_with("T09:00:00+01:00") || first[4].ends_with("T09:00:00+02:00"),
        "{list}"
    );
    let ok = run(&["run", "hello"]);
    assert!(ok.status.success());
    let record: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(record["result"], json!({ "hi": 1 }));
    assert_eq!(run(&["run", "fails"]).status.code(), Some(1));
    assert_eq!(run(&["run", "nope"]).status.code(), Some(1));
    let history =
        String::from_utf8_lossy(&run(&["history", "hello", "--status", "success"]).stdout)
            .into_owned();
    assert_eq!(history.lines().count(), 1);
    assert!(
        String::from_utf8_lossy(&run(&["history", "fails", "--status", "success"]).stdout)
            .is_empty()
    );
}

/// Three runner processes on one S3 database with a per-second job for 20 seconds: every slot
/// between the first and the last is in the history exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runner_processes_run_every_second_exactly_once() {
    let connection = crate::support::s3::connection_string().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        format!("version: 1\ndatabase: {{ connection: \"{connection}\" }}\njobs:\n  tick: {{ schedule: \"* * * * * *\", action: log, catchUp: none }}\n"),
    )
    .unwrap();
    let mut runners: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
                // Each runner's control API on a port of its own.
                .args(["s3db.yaml", "--listen", "127.0.0.1:0"])
                .current_dir(dir.path())
                .env_remove("S3DB_CONNECTION")
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(20)).await;
    for r in &runners {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(r.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    for r in runners.iter_mut() {
        assert!(r.wait().unwrap().success(), "a runner failed");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["job", "history", "tick"])
        .current_dir(dir.path())
        .env_remove("S3DB_CONNECTION")
        .output()
        .unwrap();
    let mut slots: Vec<DateTime<Utc>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["status"], "success", "{v}");
            at(v["slot"].as_str().unwrap())
        })
        .collect();
    slots.sort();
    assert!(slots.len() >= 15, "only {} runs in 20 seconds", slots.len());
    for pair in slots.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "a slot missing or doubled between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn jitter_is_stable_per_job_and_within_bounds() {
    use s3db_run::plugins::scheduler::jobs::jitter_for;
    use s3db_run::types::Duration as D;
    let max = Some(D::from_secs(30));
    assert_eq!(jitter_for("backup", max), jitter_for("backup", max));
    assert!(jitter_for("backup", max) < Duration::from_secs(30));
    let spread: std::collections::HashSet<_> = (0..20)
        .map(|i| jitter_for(&format!("job{i}"), max))
        .collect();
    assert!(spread.len() > 10, "jobs spread out: {spread:?}");
    assert_eq!(jitter_for("backup", None), Duration::ZERO);
}

/// One slot starts a run that takes a second; the next slot comes while it runs.
async fn overlapping_slots(policy: &str, runs_expected: usize) -> (Vec<String>, Vec<String>) {
    let clock = ManualClock::new(at("2026-05-01T10:00:30Z"));
    let s = setup(
        Backend::memory().await,
        &format!("jobs:\n  long: {{ schedule: \"* * * * *\", overlap: {policy}, retries: 0, action: {{ run: [\"sh\", \"-c\", \"echo start >> log; sleep 1; echo end >> log\"] }} }}\n"),
        clock.clone(),
    )
    .await;
    let (stop, task) = s.run_loop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    clock.set(at("2026-05-01T10:01:00Z"));
    // The next slot comes once the first run has really started.
    for _ in 0..500 {
        if std::fs::read_to_string(s.dir.path().join("log")).is_ok_and(|l| l.contains("start")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    clock.set(at("2026-05-01T10:02:00Z"));
    // Wait for the runs to settle: every expected run recorded, none running.
    for _ in 0..1000 {
        let done = s
            .scheduler
            .history("long", None, None)
            .await
            .unwrap()
            .iter()
            .filter(|h| h["status"] != "running")
            .count();
        if done >= runs_expected && !s.scheduler.status("long").unwrap().running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    task.await.unwrap();
    let mut statuses: Vec<(String, String)> = s
        .scheduler
        .history("long", None, None)
        .await
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["slot"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    statuses.sort();
    let log = std::fs::read_to_string(s.dir.path().join("log")).unwrap_or_default();
    (
        statuses
            .into_iter()
            .map(|(slot, st)| format!("{}={st}", &slot[14..16]))
            .collect(),
        log.lines().map(str::to_string).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_drops_the_slot_that_comes_during_a_run() {
    let (runs, log) = overlapping_slots("skip", 1).await;
    assert_eq!(runs, ["01=success"]);
    assert_eq!(log, ["start", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_queue_runs_the_slot_after_the_current_run() {
    let (runs, log) = overlapping_slots("queue", 2).await;
    assert_eq!(runs, ["01=success", "02=success"]);
    assert_eq!(log, ["start", "end", "start", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_replace_stops_the_current_run() {
    let (runs, log) = overlapping_slots("replace", 2).await;
    assert_eq!(runs, ["01=interrupted", "02=success"]);
    assert_eq!(log, ["start", "start", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_allow_runs_both_at_once() {
    let (runs, log) = overlapping_slots("allow", 2).await;
    assert_eq!(runs, ["01=success", "02=success"]);
    assert_eq!(log, ["start", "start", "end", "end"]);
}

/// SIGTERM during a running job: the runner waits for it within the grace period and records
/// it; past the grace period, the run is interrupted and recorded so.
#[test]
fn sigterm_waits_for_running_jobs_within_the_grace_period() {
    for (grace, expected) in [("10s", "success"), ("200ms", "interrupted")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s3db.yaml"),
            "version: 1\ndatabase: { connection: file://./data }\njobs:\n  slow: { schedule: \"* * * * * *\", retries: 0, catchUp: none, action: { run: [\"sh\", \"-c\", \"echo started >> log; sleep 2\"] } }\n",
        )
        .unwrap();
        let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args([
                "run",
                "s3db.yaml",
                "--grace",
                grace,
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if dir.path().join("log").exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(runner.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let started = std::time::Instant::now();
        assert!(runner.wait().unwrap().success());
        let waited = started.elapsed();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
            .args(["job", "history", "slow"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let statuses: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(statuses, [expected], "grace {grace}, waited {waited:?}");
        if expected == "success" {
            assert!(
                waited >= Duration::from_millis(1000),
                "the runner did not wait: {waited:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_by_hand_has_a_scheduled_time() {
    let s = setup(
        Backend::memory().await,
        "jobs:\n  manual: { schedule: \"@yearly\", action: { run: [\"sh\", \"-c\", \"echo \\\"\\\\\\\"$S3DB_SCHEDULED_TIME\\\\\\\"\\\"\"] } }\n",
        Arc::new(SystemClock),
    )
    .await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    let run = s.scheduler.run_now("manual", json!({})).await.unwrap();
    let printed = run["result"].as_str().unwrap_or_default().to_string();
    let at = DateTime::parse_from_rfc3339(&printed)
        .unwrap_or_else(|e| panic!("`{printed}` ({run}): {e}"))
        .with_timezone(&Utc);
    assert!(at >= before && at <= Utc::now(), "{at}");
}

/// A failing job is visible at the default level, and JSON log lines carry the message and
/// plain values at the top level (what log shippers index).
#[test]
fn a_failing_job_is_logged_at_the_default_level_as_plain_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s3db.yaml"),
        r#"version: 1
database: { connection: file://./data }
jobs:
  broken:
    schedule: "* * * * * *"
    retries: 2
    action: { run: ["sh", "-c", "echo nope >&2; exit 3"] }
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s3db-run"))
        .args(["--log-format", "json", "s3db.yaml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("S3DB_CONNECTION")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let failed = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break None;
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        lines.push(v.clone());
        if v["message"] == "job run failed" {
            break Some(v);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let failed = failed.unwrap_or_else(|| panic!("no `job run failed` line in {lines:#?}"));
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert_eq!(failed["job"], "broken", "{failed}");
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("nope"),
        "{failed}"
    );
    assert!(failed.get("fields").is_none(), "{failed}");
    let retried = lines
        .iter()
        .filter(|l| l["message"] == "job attempt failed; retrying")
        .count();
    assert!(retried >= 2, "{lines:#?}");
    // No value is Rust debug text.
    for l in &lines {
        let text = l.to_string();
        assert!(!text.contains("Some("), "{text}");
    }
}
