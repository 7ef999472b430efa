//! Benchmark: the runner as a process. Startup time of the example manifest (spawn → API
//! answers), idle RSS, and reload latency (manifest written → the new job listed by the API),
//! p50/p99 over N reloads.
//!
//!   cargo bench --bench runner -- [--reloads 50]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn fetch(port: u16, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn manifest(port: u16, job: &str) -> String {
    format!(
        "version: 1\ndatabase: {{ connection: file://./data }}\njobs:\n  {job}: {{ schedule: \"0 3 * * *\", action: {{ builtin: log }} }}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\n"
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let reloads: usize = argv
        .iter()
        .position(|a| a == "--reloads")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let bin = env!("CARGO_BIN_EXE_s3db-run");
    let repo = env!("CARGO_MANIFEST_DIR");

    // Startup of the example manifest on the embedded file:// default.
    let mut startups = Vec::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(
            format!("{repo}/manifests/s3db.yaml"),
            dir.path().join("s3db.yaml"),
        )
        .expect("copy example");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Instant::now();
        let mut child = std::process::Command::new(bin)
            .args(["s3db.yaml", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env_remove("S3DB_CONNECTION")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        while fetch(port, "/healthz").is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        startups.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(2));
        if startups.len() == 5 {
            println!("idle RSS after 2 s: {:.1} MiB", rss_mib(child.id()));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    startups.sort_by(f64::total_cmp);
    println!(
        "startup of manifests/s3db.yaml (spawn → /healthz answers): median {:.0} ms, max {:.0} ms",
        percentile(&startups, 0.5),
        startups[startups.len() - 1]
    );

    // Reload latency.
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = dir.path().join("s3db.yaml");
    std::fs::write(&file, manifest(port, "job0")).expect("write");
    let mut child = std::process::Command::new(bin)
        .arg("s3db.yaml")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    while fetch(port, "/healthz").is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut latencies = Vec::new();
    for i in 1..=reloads {
        let job = format!("job{i}");
        let t = Instant::now();
        std::fs::write(&file, manifest(port, &job)).expect("write");
        loop {
            if fetch(port, "/api/v1/jobs").is_some_and(|b| b.contains(&format!("\"{job}\""))) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "reload {i} never applied"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(150));
    }
    println!(
        "idle RSS of the reloaded runner: {:.1} MiB",
        rss_mib(child.id())
    );
    let _ = child.kill();
    let _ = child.wait();
    latencies.sort_by(f64::total_cmp);
    println!(
        "reload latency (write → new job listed) over {reloads}: p50 {:.0} ms, p99 {:.0} ms (includes the 100 ms debounce)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
}
