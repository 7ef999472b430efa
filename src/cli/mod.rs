//! The command line: clap definitions and dispatch. Every command is a library function that
//! returns an exit code, so tests call them directly; `main.rs` only calls `main()`.

pub mod backup;
pub mod cache;
pub mod db;
pub mod diff;
pub mod init;
pub mod job;
pub mod machine;
pub mod restore;
pub mod run;
pub mod schema;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::manifest::Format;

/// Exit codes shared by every command.
pub mod exit {
    pub const OK: u8 = 0;
    /// The input was understood and is wrong (an invalid manifest, a refused operation).
    pub const INVALID: u8 = 1;
    /// The command could not run: bad usage, unreadable files.
    pub const USAGE: u8 = 2;
    /// The command ran and did not end cleanly (a shutdown cut short).
    pub const FAILURE: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "s3db-run",
    version = concat!(
        env!("CARGO_PKG_VERSION"),
        " (commit ",
        env!("S3DB_BUILD_COMMIT"),
        ", ",
        env!("S3DB_BUILD_DATE"),
        ")"
    ),
    about = "Run a document database that lives in S3 from one declarative manifest",
    long_about = "s3db-run reads one manifest (s3db.yaml or s3db.toml) that declares a database in S3 \
(or a local folder), its state machines, scheduled jobs, backups and cache, checks it, and runs it.\n\n\
Start with `s3db-run init` to write a commented starter manifest, and `s3db-run validate s3db.yaml` \
to check one. Point your editor at the JSON Schema (`s3db-run schema`) for completion and hover help.",
    after_help = "Examples:\n  s3db-run manifests/s3db.yaml       run a manifest (same as `s3db-run run …`)\n  s3db-run init                      write ./s3db.yaml\n  s3db-run validate s3db.yaml        check a manifest\n  s3db-run validate --format json manifests/*.yaml\n  s3db-run schema > s3db.schema.json"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `s3db-run MANIFEST` is `s3db-run run MANIFEST`.
    #[command(flatten)]
    pub run: run::Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a manifest: the scheduler, the state machines' delayed transitions; stop cleanly on
    /// SIGINT/SIGTERM.
    Run(run::Args),
    /// Check manifests and print every problem found, with its line and column.
    ///
    /// Exit status: 0 when every manifest is valid (warnings allowed), 1 when one is invalid,
    /// 2 when a file cannot be read.
    Validate(validate::Args),
    /// Show what applying NEW over OLD would change (exit 1 when something does).
    Diff(diff::Args),
    /// Print the manifest's JSON Schema (draft 2020-12), for editors and CI.
    Schema(schema::Args),
    /// Write a commented starter manifest that validates as written.
    Init(init::Args),
    /// Read and write records of the manifest's database.
    Db(db::Args),
    /// Drive the manifest's state machines: init, send, state, history, graph.
    Machine(machine::Args),
    /// Back up the database: `backup full|incremental|TYPE`, `--list`, `--status ID`,
    /// `--delete ID`, `prune [--dry-run]`.
    Backup(backup::BackupArgs),
    /// Restore a backup (an incremental with its chain); verifies it completely first.
    Restore(restore::RestoreArgs),
    /// Look at (`stats`) or empty (`clear`) the manifest's cache.
    Cache(cache::Args),
    /// Scheduled jobs: list, run by hand, history; `job next EXPR` checks a schedule.
    Job(job::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

/// `--output human|json` (also spelled `--format`): every command that prints data takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Where a manifest comes from: a path, or `-` for standard input.
#[derive(Debug, Clone, clap::Args)]
pub struct ManifestInput {
    /// Syntax of the manifest. Default: from the file extension (`.toml` is TOML, anything else
    /// YAML); standard input is YAML unless this says otherwise.
    #[arg(long = "input-format", value_enum, alias = "syntax")]
    pub input_format: Option<Format>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

pub fn run(cli: Cli) -> u8 {
    let Some(command) = cli.command else {
        return run::run(&cli.run);
    };
    match command {
        Command::Run(args) => run::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Schema(args) => schema::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Db(args) => db::run(&args),
        Command::Machine(args) => machine::run(&args),
        Command::Cache(args) => cache::run(&args),
        Command::Backup(args) => backup::run_backup(&args),
        Command::Restore(args) => restore::run(&args),
        Command::Job(args) => job::run(&args),
        Command::Completions { shell } => {
            use std::io::Write;
            let script = completions(shell);
            match std::io::stdout().write_all(script.as_bytes()) {
                Ok(()) => exit::OK,
                Err(_) => exit::FAILURE,
            }
        }
    }
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "s3db-run", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    match shell {
        // clap_complete's bash script names the command state `s3db__run…` where it walks the
        // words but `s3db__subcmd__run…` where it offers options (it reads the hyphen as a
        // subcommand separator), so no option of any subcommand was ever offered.
        clap_complete::Shell::Bash => script.replace("s3db__subcmd__run", "s3db__run"),
        _ => script,
    }
}

/// Whether to colour output written to stderr: only on a terminal, and never with NO_COLOR.
pub fn color_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// `-f MANIFEST` and `--connection`: which database a command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// The manifest whose database (and plugins) to use.
    #[arg(
        short = 'f',
        long = "manifest",
        global = true,
        default_value = "s3db.yaml"
    )]
    pub manifest: PathBuf,
    /// Use this connection string instead of the manifest's.
    #[arg(long, global = true, env = "S3DB_CONNECTION", hide_env_values = true)]
    pub connection: Option<String>,
}

impl DatabaseArgs {
    /// The checked manifest and its plugins, built as the runner builds them. On failure the
    /// problem is printed and the exit code returned.
    pub async fn runtime(
        &self,
    ) -> Result<(crate::manifest::CheckedManifest, crate::runtime::Runtime), u8> {
        let checked = load_checked(&self.manifest)?;
        match crate::runtime::Runtime::build(&checked, self.connection.as_deref()).await {
            Ok(rt) => Ok((checked, rt)),
            Err(e) => {
                report_build(&self.manifest, &e);
                Err(exit::INVALID)
            }
        }
    }
}

/// Prints a failure to build the manifest's plugins, with the manifest entry it concerns.
pub fn report_build(manifest: &std::path::Path, e: &crate::runtime::BuildError) {
    if let Some(at) = e
        .manifest_path()
        .and_then(|p| crate::manifest::locate(manifest, &p))
    {
        eprintln!("{at}:");
    }
    report(&e.code(), e, e.help().as_deref());
}

/// Prints an error a user can fix the way manifest diagnostics read: the code, what went
/// wrong, and what to do.
pub fn report(code: &str, error: &dyn std::fmt::Display, help: Option<&str>) {
    eprintln!("error[{code}]: {error}");
    if let Some(help) = help {
        eprintln!("  help: {help}");
    }
}

/// Threads for blocking work (the filesystem store's reads and writes, archives). With tokio's
/// default, 512, a 1M-record backup on file:// grew to 224 threads, each keeping its
/// allocator's pages: 141 MiB at peak in 68 s; with 32, 62 MiB in 57 s (`db export`: 91 MiB
/// with 512, 58 with 16). The work is bounded by the store's concurrency (32 in flight) anyway,
/// and no blocking task waits on another, so a cap cannot deadlock.
const BLOCKING_THREADS: usize = 32;

/// Runs an async command to completion on a multi-threaded runtime.
pub fn block_on(command: impl std::future::Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => {
            let code = rt.block_on(command);
            // Tasks stuck on a stalled store must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::USAGE
        }
    }
}

/// Loads and checks a manifest for a command. On failure the diagnostics (or the read error) are
/// printed and the exit code is returned.
pub fn load_checked(path: &std::path::Path) -> Result<crate::manifest::CheckedManifest, u8> {
    let loaded = match crate::manifest::load_path(path, None, &crate::manifest::ProcessEnv) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            eprintln!("hint: pass -f MANIFEST (default ./s3db.yaml); `s3db-run init` writes one");
            return Err(exit::USAGE);
        }
    };
    match loaded.manifest {
        Some(checked) => {
            if !loaded.report.diagnostics.is_empty() {
                eprint!("{}", loaded.report.render_human(color_stderr()));
            }
            Ok(checked)
        }
        None => {
            eprint!("{}", loaded.report.render_human(color_stderr()));
            eprintln!("error: {} is invalid", path.display());
            Err(exit::INVALID)
        }
    }
}

pub(crate) fn display(path: &std::path::Path) -> String {
    PathBuf::from(path).display().to_string()
}
