//! `s3db-run diff OLD NEW`: what applying NEW over OLD would change, so a pull request can show
//! its effect before it is merged.

use std::path::PathBuf;

use super::exit;
use crate::manifest::diff::{diff, render};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The manifest running now.
    pub old: PathBuf,
    /// The manifest that would replace it.
    pub new: PathBuf,
    /// `human` (`+ job x`, `- machine y`, `~ job z` with the changed fields) or `json` (a list of
    /// {kind, name, change, fields}).
    #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
    pub output: super::Output,
}

/// Exit status: 0 when nothing changes, 1 when something does, 2 when a manifest cannot be read
/// or is invalid.
pub fn run(args: &Args) -> u8 {
    let old = match super::load_checked(&args.old) {
        Ok(m) => m,
        Err(_) => return exit::USAGE,
    };
    let new = match super::load_checked(&args.new) {
        Ok(m) => m,
        Err(_) => return exit::USAGE,
    };
    let changes = diff(&old.manifest, &new.manifest);
    match args.output {
        super::Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&changes).unwrap_or_default()
        ),
        super::Output::Human => {
            if changes.is_empty() {
                println!("no changes");
            } else {
                print!("{}", render(&changes));
            }
        }
    }
    if changes.is_empty() {
        exit::OK
    } else {
        exit::INVALID
    }
}
