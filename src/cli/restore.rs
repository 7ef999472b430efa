//! `s3db-run restore ID`: restores a backup (an incremental with its whole chain), verified
//! completely before anything is written.

use super::backup::{plugin, progress, Output};
use super::exit;
use crate::plugins::backup::RestoreOptions;

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    /// The backup to restore (an incremental restores its whole chain).
    pub id: String,
    /// Replace records that exist (without it they are kept and counted as skipped).
    #[arg(long)]
    pub overwrite: bool,
    /// Only these resources (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub resources: Option<Vec<String>>,
    /// Verify the backup (and its chain) completely and say what would be written, kept and
    /// deleted; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `human`, or `json` for scripts.
    #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
    pub output: Output,
}

pub fn run(args: &RestoreArgs) -> u8 {
    super::block_on(async {
        let backup = match plugin(&args.target).await {
            Ok(b) => b,
            Err(code) => return code,
        };
        let bar = progress(&backup);
        let result = backup
            .restore(
                &args.id,
                RestoreOptions {
                    overwrite: args.overwrite,
                    resources: args.resources.clone(),
                    dry_run: args.dry_run,
                },
            )
            .await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        match result {
            Ok(stats) if args.output == Output::Json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).unwrap_or_default()
                );
                exit::OK
            }
            Ok(stats) if stats.dry_run => {
                println!(
                    "dry run, nothing written: {} from {} is sound; it would write {} record(s), keep {} (existing), delete {}; resources: {}",
                    stats.backup_id,
                    stats.chain.join(" → "),
                    stats.records,
                    stats.skipped,
                    stats.deleted,
                    stats.restored.join(", ")
                );
                exit::OK
            }
            Ok(stats) => {
                println!(
                    "restored {} from {}: {} record(s) written, {} kept (existing), {} deleted, resources: {}",
                    stats.backup_id,
                    stats.chain.join(" → "),
                    stats.records,
                    stats.skipped,
                    stats.deleted,
                    stats.restored.join(", ")
                );
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        }
    })
}
