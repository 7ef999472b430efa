//! Benchmark: fire-time lateness (p50/p99) of a per-second job over N fires (default 300, five
//! minutes), and memory and idle CPU with 10,000 scheduled jobs (target: under 50 MiB).
//!
//!   cargo bench --bench scheduler -- [--fires 300] [--jobs 10000] [--idle-secs 20]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use s3db_run::db::Database;
use s3db_run::manifest::{load_str, Format};
use s3db_run::plugins::scheduler::{JobEvent, Scheduler};
use s3db_run::plugins::{BuildContext, Component};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: u64) -> u64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

async fn scheduler(yaml: &str) -> Scheduler {
    let no_env = |_: &str| None;
    let manifest = load_str(
        "b.yaml",
        yaml.into(),
        Format::Yaml,
        std::path::Path::new("."),
        &no_env,
    )
    .manifest
    .expect("valid")
    .manifest;
    let db = Database::connect(
        Arc::new(s3db_run::store::memory::MemoryStore::isolated()),
        &IndexMap::new(),
    )
    .await
    .expect("db");
    let ctx = BuildContext::for_manifest(&manifest, db, ".");
    Scheduler::build((&manifest.jobs, &manifest.scheduler), &ctx)
        .await
        .expect("scheduler")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fires = arg("--fires", 300) as usize;
    let s = scheduler("version: 1\ndatabase: { connection: \"memory://b/s\" }\njobs:\n  tick: { schedule: \"* * * * * *\", action: log }\n").await;
    let mut events = s.subscribe();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let s = s.clone();
        let stop = stop.clone();
        async move { s.run(stop).await }
    });
    let mut late = Vec::with_capacity(fires);
    while late.len() < fires {
        if let Ok(JobEvent::JobStart {
            slot: Some(slot), ..
        }) = events.recv().await
        {
            let slot: DateTime<Utc> = DateTime::parse_from_rfc3339(&slot)
                .expect("slot")
                .with_timezone(&Utc);
            late.push((Utc::now() - slot).to_std().unwrap_or(Duration::ZERO));
        }
    }
    stop.cancel();
    let _ = task.await;
    late.sort();
    let p = |q: f64| late[((late.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "per-second job, {fires} fires: lateness p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );

    let jobs = arg("--jobs", 10_000);
    let idle = arg("--idle-secs", 20);
    let before = rss_kib();
    let mut yaml = String::from("version: 1\ndatabase: { connection: \"memory://b/t\" }\nscheduler: { persistJobs: false }\njobs:\n");
    // By default the jobs share 1,440 expressions (every minute of a day); with --all-distinct
    // each has its own (a day of the month too), the worst case for memory.
    let all_distinct = std::env::args().any(|a| a == "--all-distinct");
    for i in 0..jobs {
        let dom = if all_distinct {
            format!("{}", (i / 1440) % 28 + 1)
        } else {
            "*".to_string()
        };
        yaml.push_str(&format!(
            "  job{i}: {{ schedule: \"{} {} {dom} * *\", action: log }}\n",
            i % 60,
            (i / 60) % 24
        ));
    }
    let s = scheduler(&yaml).await;
    drop(yaml);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let s = s.clone();
        let stop = stop.clone();
        async move { s.run(stop).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle)).await;
    let cpu = cpu_secs() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{jobs} scheduled jobs ({} distinct schedules): RSS {:.1} MiB (process), {:.1} MiB for the jobs; idle CPU {:.2}% of one core over {:.0} s (target: under 50 MiB)",
        if all_distinct { jobs } else { jobs.min(1440) },
        rss_kib() as f64 / 1024.0,
        (rss_kib().saturating_sub(before)) as f64 / 1024.0,
        cpu / wall * 100.0,
        wall
    );
    stop.cancel();
    let _ = task.await;
}
