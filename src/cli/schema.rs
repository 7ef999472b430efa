//! `s3db-run schema`: print the manifest's JSON Schema.

use std::path::PathBuf;

use super::exit;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Write the schema to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: &Args) -> u8 {
    let text = crate::manifest::json_schema_text();
    match &args.output {
        None => {
            print!("{text}");
            exit::OK
        }
        Some(path) => match std::fs::write(path, text) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", super::display(path));
                exit::USAGE
            }
        },
    }
}
