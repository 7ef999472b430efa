//! `s3db-run validate FILE…`: check manifests and print their diagnostics.

use std::io::Write;
use std::path::PathBuf;

use super::{exit, ManifestInput};
use crate::manifest::{self, ProcessEnv};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Manifest files to check (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// `human` (with source excerpts, coloured on a terminal) or `json` (one object per line per
    /// diagnostic: code, severity, file, line, column, message, help).
    #[arg(long = "output", visible_alias = "format", value_enum, default_value_t = super::Output::Human)]
    pub output: super::Output,
    #[command(flatten)]
    pub input: ManifestInput,
}

pub fn run(args: &Args) -> u8 {
    let mut status = exit::OK;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for file in &args.files {
        let loaded = match manifest::load_path(file, args.input.input_format, &ProcessEnv) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", super::display(file));
                status = exit::USAGE;
                continue;
            }
        };
        let report = &loaded.report;
        match args.output {
            super::Output::Json => {
                for record in report.records() {
                    let line = serde_json::to_string(&record).unwrap_or_default();
                    let _ = writeln!(out, "{line}");
                }
            }
            super::Output::Human => {
                eprint!("{}", report.render_human(super::color_stderr()));
                let errors = report.diagnostics.iter().filter(|d| d.is_error()).count();
                let warnings = report.diagnostics.len() - errors;
                let verdict = if errors == 0 { "valid" } else { "invalid" };
                let _ = writeln!(
                    out,
                    "{}: {verdict} ({errors} error{}, {warnings} warning{})",
                    report.file,
                    if errors == 1 { "" } else { "s" },
                    if warnings == 1 { "" } else { "s" },
                );
            }
        }
        if report.has_errors() && status == exit::OK {
            status = exit::INVALID;
        }
        // A large manifest's tree takes a while to free, and the process is about to end.
        std::mem::forget(loaded);
    }
    status
}
