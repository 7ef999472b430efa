//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use s3db_run::manifest::{self, Format, Loaded};

/// Every file under `dir`, recursively (nothing for a missing folder).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixed environment the fixtures are checked in: only `PRESENT=3` is set.
pub fn fixture_env(name: &str) -> Option<String> {
    (name == "PRESENT").then(|| "3".to_string())
}

/// Loads a manifest file as `validate` would, in the fixture environment.
pub fn load(path: &Path) -> Loaded {
    manifest::load_path(path, None, &fixture_env).expect("fixture is readable")
}

pub fn load_text(text: &str, format: Format) -> Loaded {
    manifest::load_str("test.yaml", text.to_string(), format, &repo(), &fixture_env)
}

/// A build context on `store` for a plugin under test, with no hooks of its own.
pub async fn context(
    store: &s3db_run::store::DynStore,
    dir: &std::path::Path,
) -> s3db_run::plugins::BuildContext {
    let m = load_text(
        "version: 1\ndatabase: { connection: \"memory://x/y\" }\n",
        Format::Yaml,
    )
    .manifest
    .expect("valid")
    .manifest;
    let db = s3db_run::db::Database::connect(store.clone(), &Default::default())
        .await
        .expect("db");
    s3db_run::plugins::BuildContext::for_manifest(&m, db, dir)
}

/// Every example manifest the project ships.
pub fn example_manifests() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![
        root.join("manifests/s3db.yaml"),
        root.join("manifests/s3db.toml"),
        root.join("src/cli/starter.yaml"),
    ];
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/ exists") {
        let dir = entry.expect("readable").path();
        let manifest = dir.join("s3db.yaml");
        if manifest.exists() {
            files.push(manifest);
        }
    }
    files
}

/// Every fixture under tests/fixtures/invalid.
pub fn invalid_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/invalid"))
        .expect("fixtures exist")
        .map(|e| e.expect("readable").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "toml")
            )
        })
        .collect();
    files.sort();
    files
}

/// The diagnostics of a report, one per line, as the snapshots hold them.
pub fn render(loaded: &Loaded) -> String {
    loaded
        .report
        .records()
        .iter()
        .map(|r| {
            format!(
                "{} {} {}:{} {}\n    help: {}\n",
                r.severity,
                r.code,
                r.line,
                r.column,
                r.message,
                r.help.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

pub mod proxy;
pub mod s3;

/// A child process (an `s3db-run` under test), killed and reaped when dropped.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A store under test and whatever must live as long as it.
pub struct Backend {
    pub store: s3db_run::store::DynStore,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub async fn fs() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = s3db_run::store::fs::FsStore::open(dir.path()).expect("fs store");
        Self {
            store: std::sync::Arc::new(store),
            _dir: Some(dir),
        }
    }

    pub async fn memory() -> Self {
        Self {
            store: std::sync::Arc::new(s3db_run::store::memory::MemoryStore::isolated()),
            _dir: None,
        }
    }

    /// The same backend seen through a wrapping store.
    pub fn wrapped(self, store: s3db_run::store::DynStore) -> Self {
        Self { store, ..self }
    }

    pub async fn s3() -> Self {
        Self {
            store: s3::store().await,
            _dir: None,
        }
    }
}

/// Instantiates async test functions `fn(Backend)` once per backend: `fs`, `memory` and `s3`.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name($crate::support::Backend::fs().await).await })*
        }
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name($crate::support::Backend::memory().await).await })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name($crate::support::Backend::s3().await).await })*
        }
    };
}

/// Runs a checker that scripts/test installs into `.venv` (kubernetes-validate,
/// openapi-spec-validator) and fails the test with its output unless it passes.
pub fn venv_tool_passes<I, S>(tool: &str, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let path = repo().join(".venv/bin").join(tool);
    let out = std::process::Command::new(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} (scripts/test installs it): {e}", path.display()));
    assert!(
        out.status.success(),
        "{tool}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
