//! The `s3db-run` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    s3db_run::cli::main()
}
