//! The `rampart` binary: parses the command line and dispatches, nothing else.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rampart::cli::Cli::parse();
    rampart::cli::run(cli)
}
