//! `s3db-run job next EXPR`: the next fire times of a cron expression in a time zone, so a
//! schedule can be checked before it is deployed.

use chrono::{DateTime, SecondsFormat, Utc};

use super::exit;
use crate::manifest::types::TimeZone;
use crate::plugins::scheduler::schedule::Schedule;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: JobCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JobCommand {
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
