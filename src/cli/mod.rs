//! Client and admin commands, and their output formatting.
//!
//! This is the binary's edge: errors are `anyhow` here, printed once as `Error: ...` on
//! stderr with etcdctl's exit codes.

mod bench;
mod client;
mod endpoint;
mod grpc;
mod kv;
mod member;
mod output;
mod pki;
mod serve;
mod txn_parse;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::OutputFormat;

/// etcdctl's exit codes, so scripts can tell failures apart.
pub mod exit {
    /// A command failed.
    pub const ERROR: u8 = 1;
    /// The input (names, files) was invalid.
    pub const INVALID_INPUT: u8 = 3;
    /// The arguments were wrong.
    pub const BAD_ARGS: u8 = 128;
}

/// The rampart command line.
#[derive(Debug, Parser)]
#[command(
    name = "rampart",
    version,
    about = "A TLS-first, Raft-replicated key-value store that speaks the etcd v3 API",
    propagate_version = true
)]
pub struct Cli {
    /// Output format: simple, json or table (as etcdctl's -w).
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The built-in certificate authority: create and manage the cluster's PKI.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Run a member: the etcd v3 API over mutual TLS, replicated with raft, stored in RocksDB.
    Serve(serve::ServeCommand),
    /// Key-value commands (put, get, del, txn, compact), as etcdctl's.
    Kv(kv::KvArgs),
    /// Endpoint status, health and hash, as etcdctl's.
    Endpoint(endpoint::EndpointArgs),
    /// Save a snapshot of a member's data.
    Snapshot(endpoint::SnapshotArgs),
    /// Cluster membership: list, add, remove, promote, update.
    Member(member::MemberArgs),
    /// Hand leadership to another member.
    MoveLeader(member::MoveLeaderArgs),
    /// Load generator for any etcd v3 endpoint: throughput and latency.
    Bench(bench::BenchArgs),
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct CliError {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = match error.downcast_ref::<crate::pki::PkiError>() {
            Some(
                crate::pki::PkiError::InvalidName { .. }
                | crate::pki::PkiError::InvalidSan { .. }
                | crate::pki::PkiError::Usage(_),
            ) => exit::BAD_ARGS,
            Some(
                crate::pki::PkiError::Malformed { .. }
                | crate::pki::PkiError::KeyPermissions { .. },
            ) => exit::INVALID_INPUT,
            _ => exit::ERROR,
        };
        CliError { code, error }
    }
}

impl CliError {
    /// An error with an explicit exit code.
    pub fn with_code(code: u8, error: anyhow::Error) -> Self {
        CliError { code, error }
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Pki(cmd) => pki::run(cmd, cli.write_out),
        Command::Serve(cmd) => serve::run(cmd),
        Command::Kv(args) => kv::run(args, cli.write_out),
        Command::Endpoint(args) => endpoint::run(args, cli.write_out),
        Command::Snapshot(args) => endpoint::run_snapshot(args),
        Command::Member(args) => member::run(args, cli.write_out),
        Command::MoveLeader(args) => member::run_move_leader(args),
        Command::Bench(args) => bench::run(args, cli.write_out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { code, error }) => {
            eprintln!("Error: {}", render_chain(&error));
            ExitCode::from(code)
        }
    }
}

/// The error and its causes on one line, skipping causes already quoted by their parent.
fn render_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
