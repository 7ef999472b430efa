//! The plugins: state machines, scheduler, backup and cache. Each is built the one way, through
//! [`Component`], from its typed section of the checked manifest and a [`BuildContext`]; none
//! parses YAML, and none registers itself anywhere: the runtime hands the built plugins to the
//! hook registry (`hooks::Plugins`) once they all exist.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::db::Database;
use crate::hooks::HookRunner;
use crate::manifest::model::Manifest;
use crate::types::{Clock, SystemClock};

pub mod backup;
pub mod cache;
pub mod scheduler;
pub mod state_machine;

/// What every plugin is built with.
#[derive(Clone)]
pub struct BuildContext {
    /// The database the plugin works on (the cache is built before the database is given it).
    pub db: Database,
    /// Runs the plugin's hooks and callbacks.
    pub hooks: Arc<HookRunner>,
    /// The manifest's folder: relative paths start here.
    pub base_dir: PathBuf,
    /// Time, so that tests can move it instead of waiting.
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the runner stops: long work started by the plugin ends with it.
    pub shutdown: CancellationToken,
}

impl BuildContext {
    /// A context on the system clock, with a shutdown token of its own.
    pub fn new(db: Database, hooks: Arc<HookRunner>, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            db,
            hooks,
            base_dir: base_dir.into(),
            clock: Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
        }
    }

    /// A context for `m` on `db`, with `m`'s hooks (one-off CLI commands, tests, benchmarks).
    pub fn for_manifest(m: &Manifest, db: Database, base_dir: impl Into<PathBuf>) -> Self {
        let base_dir = base_dir.into();
        let hooks = Arc::new(HookRunner::new(m, &base_dir, db.clone()));
        Self::new(db, hooks, base_dir)
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same context on another database (the one with the cache in front), with hooks
    /// that act on it.
    pub fn with_db(mut self, db: Database, hooks: Arc<HookRunner>) -> Self {
        self.db = db;
        self.hooks = hooks;
        self
    }
}

/// Builds `C` when the manifest uses it.
pub async fn build_section<C: Component>(
    m: &Manifest,
    ctx: &BuildContext,
) -> Result<Option<C>, C::Error> {
    match C::section(m) {
        Some(config) => C::build(config, ctx).await.map(Some),
        None => Ok(None),
    }
}

/// One way to build a plugin: from its section of the manifest, typed, and the context.
pub trait Component: Sized {
    /// The plugin's part of the manifest, borrowed.
    type Config<'a>;
    type Error;

    /// The plugin's section of `m`; None when the manifest does not use the plugin.
    fn section(m: &Manifest) -> Option<Self::Config<'_>>;

    /// Builds the plugin. Nothing is running until the runtime starts it.
    fn build<'a>(
        config: Self::Config<'a>,
        ctx: &'a BuildContext,
    ) -> impl Future<Output = Result<Self, Self::Error>> + Send + 'a;
}
