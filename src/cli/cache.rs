//! `s3db-run cache stats|clear`: look at and empty the manifest's cache. When a runner of the
//! manifest answers at its `server.listen`, both go to that runner's API: a memory cache lives
//! only in the runner, and its counters are the ones worth reading.

use std::time::Duration;

use serde_json::{json, Value};

use super::exit;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    /// Use this process's own view of the cache even when a runner answers (as `--connection`
    /// does: the runner serves the manifest's database, not that one).
    #[arg(long, global = true)]
    pub local: bool,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CacheCommand {
    /// Entries and bytes the driver holds, and the runner's counters (this process's with
    /// `--local` or when no runner answers).
    Stats {
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
        output: super::Output,
    },
    /// Remove every entry (from the runner's memory too, when one answers).
    Clear,
}

/// How the command reached the cache.
enum Reached {
    Runner(String),
    Local,
}

pub fn run(args: &Args) -> u8 {
    super::block_on(async {
        let checked = match super::load_checked(&args.target.manifest) {
            Ok(c) => c,
            Err(code) => return code,
        };
        if checked.manifest.cache.is_none() {
            eprintln!(
                "error: {} has no `cache:` section",
                args.target.manifest.display()
            );
            return exit::INVALID;
        }
        let server = &checked.manifest.server;
        // `--connection` names another database than the runner's: never ask the runner then.
        if !args.local && args.target.connection.is_none() && server.enabled {
            match from_runner(args, server).await {
                Ok(Some((base, body))) => return print(args, &Reached::Runner(base), body),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::FAILURE;
                }
            }
        }
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
            return exit::INVALID;
        };
        let body = match &args.command {
            CacheCommand::Stats { .. } => serde_json::json!(cache.report().await),
            CacheCommand::Clear => serde_json::json!(cache.clear_reporting().await),
        };
        print(args, &Reached::Local, body)
    })
}

/// The runner's answer, or `None` when no runner listens there.
async fn from_runner(
    args: &Args,
    server: &crate::manifest::model::ServerConfig,
) -> Result<Option<(String, Value)>, String> {
    let base = format!("http://{}", loopback_for(&server.listen));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let request = match &args.command {
        CacheCommand::Stats { .. } => client.get(format!("{base}/api/v1/cache")),
        CacheCommand::Clear => client.post(format!("{base}/api/v1/cache/clear")),
    };
    let request = match server.token.as_ref().filter(|t| !t.is_empty()) {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    };
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => return Err(format!("the runner at {base} did not answer: {e}")),
    };
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("the runner at {base} answered {status} without JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "the runner at {base} answered {status}: {}",
            body["message"].as_str().unwrap_or("no message")
        ));
    }
    Ok(Some((base, body)))
}

/// `server.listen` as an address to connect to: a wildcard address means this machine.
fn loopback_for(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}

fn print(args: &Args, reached: &Reached, mut body: Value) -> u8 {
    let runner = match reached {
        Reached::Runner(base) => Some(base.as_str()),
        Reached::Local => None,
    };
    match &args.command {
        CacheCommand::Stats {
            output: super::Output::Json,
        } => {
            body["runner"] = json!(runner);
            println!("{body}");
        }
        CacheCommand::Stats { .. } => {
            let p = &body["process"];
            println!("driver     {}", body["driver"].as_str().unwrap_or("?"));
            println!("entries    {}", body["entries"]);
            println!("bytes      {}", body["bytes"]);
            let whose = match runner {
                Some(base) => format!("the runner at {base}"),
                None => "this process (no runner answers)".to_string(),
            };
            println!(
                "{whose}: {} hits, {} misses, {} evictions, {} bytes saved by compression",
                p["hits"], p["misses"], p["evictions"], p["compressionSavedBytes"]
            );
        }
        CacheCommand::Clear => match runner {
            Some(base) => println!(
                "cache cleared by the runner at {base} ({} entries)",
                body["entries"]
            ),
            None => println!("cache cleared ({} entries)", body["entries"]),
        },
    }
    exit::OK
}
