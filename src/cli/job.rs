//! `s3db-run job next EXPR`: the next fire times of a cron expression in a time zone, so a
//! schedule can be checked before it is deployed.

use chrono::{DateTime, SecondsFormat, Utc};

use super::exit;
use crate::types::schedule::Schedule;
use crate::types::TimeZone;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: super::DatabaseArgs,
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCommand {
    /// List the manifest's jobs: name, schedule, zone, enabled, next run (`--output json`: every
    /// field, as the API's `/api/v1/jobs`).
    List {
        #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
        output: super::Output,
    },
    /// Run a job now and print its run record as JSON (exit 1 if it failed).
    Run {
        name: String,
        #[arg(long, value_name = "JSON")]
        context: Option<String>,
    },
    /// Enable a job on every runner of the database (within a few seconds) and across restarts.
    Enable { name: String },
    /// Disable a job on every runner of the database (within a few seconds) and across
    /// restarts; a run in progress finishes.
    Disable { name: String },
    /// Print a job's statistics as JSON: runs, successes, errors, success rate, average
    /// duration, last success and last error.
    Stats { name: String },
    /// Print a job's runs, newest first, as JSON lines.
    History {
        name: String,
        /// success, error, timeout or interrupted.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Print the next fire times of a cron expression, one RFC 3339 timestamp with its UTC
    /// offset per line.
    Next {
        /// The cron expression, e.g. "30 2 * * *" or @daily.
        expr: String,
        /// IANA time zone of the schedule.
        #[arg(long, default_value = "UTC")]
        tz: String,
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Start after this instant (RFC 3339) instead of now.
        #[arg(long)]
        after: Option<String>,
    },
}

pub fn run(args: &Args) -> u8 {
    match &args.command {
        JobCommand::List { .. }
        | JobCommand::Run { .. }
        | JobCommand::History { .. }
        | JobCommand::Enable { .. }
        | JobCommand::Disable { .. }
        | JobCommand::Stats { .. } => super::block_on(with_scheduler(args)),
        JobCommand::Next {
            expr,
            tz,
            count,
            after,
        } => {
            let schedule = match Schedule::parse(expr) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}\nhelp: {}", e.help);
                    return exit::INVALID;
                }
            };
            let zone: TimeZone = match tz.parse() {
                Ok(z) => z,
                Err((message, hint)) => {
                    eprintln!(
                        "error: {message}{}",
                        hint.map(|h| format!("\nhelp: {h}")).unwrap_or_default()
                    );
                    return exit::USAGE;
                }
            };
            let start = match after {
                None => Utc::now(),
                Some(text) => match DateTime::parse_from_rfc3339(text) {
                    Ok(t) => t.with_timezone(&Utc),
                    Err(e) => {
                        eprintln!("error: --after `{text}` is not an RFC 3339 time: {e}");
                        return exit::USAGE;
                    }
                },
            };
            for t in schedule.upcoming(&start.with_timezone(&zone.0), &zone.0, *count) {
                println!("{}", t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
            exit::OK
        }
    }
}

async fn with_scheduler(args: &Args) -> u8 {
    let (_manifest, runtime) = match args.target.runtime().await {
        Ok(built) => built,
        Err(code) => return code,
    };
    let scheduler = runtime.scheduler;
    match &args.command {
        JobCommand::List {
            output: super::Output::Json,
        } => {
            println!("{}", serde_json::json!(scheduler.all_status()));
            exit::OK
        }
        JobCommand::List { .. } => {
            for s in scheduler.all_status() {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    s.name,
                    s.schedule,
                    s.timezone,
                    if s.enabled { "enabled" } else { "disabled" },
                    s.next_run.unwrap_or_else(|| "-".into())
                );
            }
            exit::OK
        }
        JobCommand::Run { name, context } => {
            let context = match context.as_deref().map(serde_json::from_str).transpose() {
                Ok(c) => c.unwrap_or_else(|| serde_json::json!({})),
                Err(e) => {
                    eprintln!("error: --context is not JSON: {e}");
                    return exit::USAGE;
                }
            };
            match scheduler.run_now(name, context).await {
                Ok(record) => {
                    println!("{record}");
                    if record["status"] == "success" {
                        exit::OK
                    } else {
                        exit::INVALID
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::INVALID
                }
            }
        }
        JobCommand::History {
            name,
            status,
            limit,
        } => match scheduler.history(name, status.as_deref(), *limit).await {
            Ok(records) => {
                for r in records {
                    println!("{r}");
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        },
        JobCommand::Enable { name } | JobCommand::Disable { name } => {
            let enable = matches!(args.command, JobCommand::Enable { .. });
            let done = if enable {
                scheduler.enable(name).await
            } else {
                scheduler.disable(name).await
            };
            match done {
                Ok(()) => {
                    println!("{name}: {}", if enable { "enabled" } else { "disabled" });
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::INVALID
                }
            }
        }
        JobCommand::Stats { name } => match scheduler.statistics(name).await {
            Ok(stats) => {
                println!("{}", serde_json::json!(stats));
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::INVALID
            }
        },
        JobCommand::Next { .. } => exit::USAGE,
    }
}
