//! Stamps the build with its git commit and that commit's date (for `--version` and
//! `s3db_build_info`); "unknown" outside a git checkout. A build without the checkout (the
//! Dockerfile's) passes them as S3DB_BUILD_COMMIT and S3DB_BUILD_DATE.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let given = |var: &str| {
        println!("cargo:rerun-if-env-changed={var}");
        std::env::var(var).ok().filter(|v| !v.is_empty())
    };
    let commit = given("S3DB_BUILD_COMMIT")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = given("S3DB_BUILD_DATE")
        .or_else(|| git(&["log", "-1", "--format=%cs"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=S3DB_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=S3DB_BUILD_DATE={date}");
    // A new commit changes HEAD (or the branch it points at).
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
