//! Benchmark: `validate` of a generated manifest with 200 machines × 50 states and 1,000 jobs.
//! Target: under 100 ms. Run with `cargo bench --bench validate`.
//!
//! Reports the parse+check time of the library call and, separately, the whole `s3db-run
//! validate` process (spawn included), each as the median and minimum of several runs.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use s3db_run::manifest::{load_str, Format};

fn generate(machines: usize, states: usize, jobs: usize) -> String {
    let mut y = String::from("version: 1\ndatabase:\n  connection: file://./data\n  resources:\n");
    y.push_str("    items: { attributes: { n: number|required, name: string|maxlength:50 } }\n");
    y.push_str("actions:\n  note: { builtin: log, with: { message: \"{{entity}} {{from}} -> {{to}}\" } }\n");
    y.push_str("  bump: { builtin: record.update, with: { resource: items, id: \"{{context.id}}\", set: { n: { $increment: 1 } } } }\n");
    y.push_str(
        "guards:\n  ok: { builtin: context.matches, with: { where: { n: { $gte: 1 } } } }\n",
    );
    y.push_str("machines:\n");
    for m in 0..machines {
        let _ = writeln!(y, "  machine_{m}:\n    initialState: s0\n    states:");
        for s in 0..states {
            if s + 1 == states {
                let _ = writeln!(y, "      s{s}: {{ type: final, entry: note }}");
            } else {
                let _ = writeln!(
                    y,
                    "      s{s}: {{ on: {{ NEXT: s{}, DONE: s{} }}, guards: {{ NEXT: ok }}, entry: [note, bump], after: {{ 30m: s{} }} }}",
                    s + 1,
                    states - 1,
                    s + 1
                );
            }
        }
    }
    y.push_str("jobs:\n");
    let schedules = [
        "*/5 * * * *",
        "0 3 * * *",
        "0 9 * * MON-FRI",
        "@hourly",
        "15 2 1 * *",
    ];
    for j in 0..jobs {
        let _ = writeln!(
            y,
            "  job_{j}: {{ schedule: \"{}\", timezone: Europe/Berlin, retries: 2, timeout: 5m, action: note }}",
            schedules[j % schedules.len()]
        );
    }
    y
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[0])
}

fn main() {
    let text = generate(200, 50, 1000);
    let dir = std::env::temp_dir().join("s3db-run-bench-validate");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("big.yaml");
    std::fs::write(&file, &text).expect("write generated manifest");
    let no_env = |_: &str| None;

    let mut lib = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let loaded = load_str(
            "big.yaml",
            text.clone(),
            Format::Yaml,
            Path::new("."),
            &no_env,
        );
        lib.push(start.elapsed());
        assert!(
            loaded.manifest.is_some(),
            "{:?}",
            &loaded.report.diagnostics[..3.min(loaded.report.diagnostics.len())]
        );
    }
    let (lib_p50, lib_min) = stats(lib);
    phases(&text);

    let exe = env!("CARGO_BIN_EXE_s3db-run");
    let mut proc = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        let status = Command::new(exe)
            .arg("validate")
            .arg(&file)
            .output()
            .expect("run validate");
        proc.push(start.elapsed());
        assert!(status.status.success());
    }
    let (proc_p50, proc_min) = stats(proc);

    println!(
        "validate: {} bytes, 200 machines x 50 states, 1000 jobs",
        text.len()
    );
    println!(
        "  library load+check: median {:.1} ms, min {:.1} ms",
        ms(lib_p50),
        ms(lib_min)
    );
    println!(
        "  `s3db-run validate` process: median {:.1} ms, min {:.1} ms",
        ms(proc_p50),
        ms(proc_min)
    );
    println!(
        "  target: < 100 ms -> {}",
        if proc_p50 < Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn phases(text: &str) {
    let t = Instant::now();
    let mut root = s3db_run::manifest::tree::parse_yaml(text).expect("parses");
    let parse = t.elapsed();
    let t = Instant::now();
    let mut d = Vec::new();
    let mut u = Vec::new();
    s3db_run::manifest::env::interpolate(&mut root, &|_: &str| None, &mut d, &mut u);
    let interp = t.elapsed();
    eprintln!(
        "  phases: parse {:.1} ms, interpolate {:.1} ms",
        ms(parse),
        ms(interp)
    );
}
