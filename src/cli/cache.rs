//! `s3db-run cache stats|clear`: look at and empty the manifest's cache.

use serde_json::json;

use super::exit;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CacheCommand {
    /// Entries and bytes the driver holds, and this process's counters.
    Stats {
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
        output: super::Output,
    },
    /// Remove every entry.
    Clear,
}

pub fn run(args: &Args) -> u8 {
    super::block_on(async {
        let (_db, cache) = match super::db::open_database_and_cache(
            &args.target.manifest,
            args.target.connection.as_deref(),
            8,
            true,
        )
        .await
        {
            Ok(opened) => opened,
            Err(code) => return code,
        };
        let Some(cache) = cache else {
            eprintln!(
                "error: {} has no `cache:` section",
                args.target.manifest.display()
            );
            return exit::INVALID;
        };
        match &args.command {
            CacheCommand::Stats { output } => {
                let (entries, bytes) = cache.usage().await;
                let stats = cache.snapshot();
                match output {
                    super::Output::Json => println!(
                        "{}",
                        json!({ "driver": stats.driver, "entries": entries, "bytes": bytes, "process": stats })
                    ),
                    super::Output::Human => {
                        println!("driver     {}", stats.driver);
                        println!("entries    {entries}");
                        println!("bytes      {bytes}");
                        println!(
                            "this process: {} hits, {} misses, {} evictions, {} bytes saved by compression",
                            stats.hits, stats.misses, stats.evictions, stats.compression_saved_bytes
                        );
                    }
                }
            }
            CacheCommand::Clear => {
                cache.clear().await;
                println!("cache cleared");
            }
        }
        exit::OK
    })
}
