//! The `s3db-run` binary: parses the command line and hands over to the library.

// Manifest loading allocates many small strings and nodes; mimalloc makes that and the page
// faults of a fresh process markedly cheaper than the system allocator (see the validate bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    s3db_run::cli::main()
}
