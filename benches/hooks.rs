//! Benchmark: built-in guard evaluation time, and shell hook spawn-to-exit latency (p50/p99)
//! over 1,000 runs of `true`. Run with `cargo bench --bench hooks`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use s3db_run::db::Database;
use s3db_run::hooks::builtins::BuiltinKind;
use s3db_run::hooks::{HookKind, HookRunner};
use s3db_run::manifest::model::{HookRef, Manifest};
use s3db_run::manifest::{load_str, Format};
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} n={:<5} p50 {:>9.1} µs  p99 {:>9.1} µs  max {:>9.1} µs",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let text = r#"version: 1
database: { connection: "memory://bench/hooks", resources: { items: { attributes: { n: number } } } }
guards:
  matches: { builtin: context.matches, with: { where: { quantity: { $gte: 2 }, status: { $in: [paid, new] } } } }
  stock: { builtin: record.check, with: { resource: items, id: "{{context.item}}", where: { n: { $gte: "{{context.quantity}}" } } } }
actions:
  nothing: { run: ["true"] }
"#;
    let no_env = |_: &str| None;
    let manifest: Manifest = load_str(
        "bench.yaml",
        text.into(),
        Format::Yaml,
        std::path::Path::new("."),
        &no_env,
    )
    .manifest
    .expect("valid")
    .manifest;
    let store = Arc::new(s3db_run::store::memory::MemoryStore::isolated());
    let declared: IndexMap<_, _> = manifest
        .database
        .resources
        .iter()
        .map(|(k, v)| (k.clone(), s3db_run::db::schema::StoredResource::from(v)))
        .collect();
    let db = Database::connect(store, &declared).await.expect("db");
    db.resource("items")
        .unwrap()
        .insert(json!({ "n": 10 }).as_object().cloned().unwrap(), Some("w"))
        .await
        .unwrap();
    let runner = HookRunner::new(&manifest, std::env::temp_dir(), db);
    let t = s3db_run::hooks::Transition {
        machine: "m",
        entity: "e",
        event: "GO",
        from: "a",
        to: "b",
    };
    let input = s3db_run::hooks::HookInput::for_transition(
        "g",
        HookKind::Guard,
        &t,
        json!({ "quantity": 3, "status": "paid", "item": "w" }),
    );

    for (name, runs) in [("matches", 10_000), ("stock", 10_000)] {
        let hook = runner
            .resolve(&HookRef::Named(name.into()), BuiltinKind::Guard)
            .unwrap();
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let d = runner.guard(&hook, &input).await.unwrap();
            samples.push(t.elapsed());
            assert!(d.allowed());
        }
        report(&format!("guard {name} (built-in, memory db)"), samples);
    }

    let hook = runner
        .resolve(&HookRef::Named("nothing".into()), BuiltinKind::Action)
        .unwrap();
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        runner.action(&hook, &input).await.unwrap();
        samples.push(t.elapsed());
    }
    report("shell hook `true` spawn-to-exit", samples);

    let mut raw = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let t = Instant::now();
        let status = tokio::process::Command::new("true").status().await.unwrap();
        raw.push(t.elapsed());
        assert!(status.success());
    }
    report("floor: tokio::process `true`", raw);
}
