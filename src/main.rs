//! The `rampart` binary: parses the command line and dispatches, nothing else.
#![forbid(unsafe_code)]

use clap::Parser;

// glibc's malloc showed up at ~5% of a loaded member's CPU (many small, short-lived buffers
// per request across threads); mimalloc serves the same pattern with thread-local free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = rampart::cli::Cli::parse();
    rampart::cli::run(cli)
}
