//! Client and admin commands and their output formatting.

use clap::Parser;

/// The rampart command line.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about)]
pub struct Cli {}

/// Runs a parsed command line and returns the process exit code.
pub fn run(_cli: Cli) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
