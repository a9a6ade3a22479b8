//! Client and admin commands, and their output formatting.
//!
//! This is the binary's edge: errors are `anyhow` here, printed once as `Error: ...` on
//! stderr with etcdctl's exit codes.

mod auth;
mod bench;
mod client;
mod endpoint;
mod grpc;
mod install;
mod k8s;
mod kv;
mod lease;
mod member;
mod output;
mod pki;
mod probe;
mod serve;
mod snapshot;
mod txn_parse;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::OutputFormat;

/// etcdctl's exit codes, so scripts can tell failures apart.
pub mod exit {
    /// A command failed.
    pub const ERROR: u8 = 1;
    /// The cluster could not be reached or answered with an error (lease queries, keep-alive).
    pub const BAD_CONNECTION: u8 = 2;
    /// The input (names, files) was invalid.
    pub const INVALID_INPUT: u8 = 3;
    /// The command cannot print in the requested output format.
    pub const BAD_FEATURE: u8 = 4;
    /// A stream ended from the server side (a canceled watch).
    pub const INTERRUPTED: u8 = 5;
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
    // Boxed: its many member flags would otherwise make every `Command` as large.
    Serve(Box<serve::ServeCommand>),
    /// Key-value commands (put, get, del, txn, compact), as etcdctl's.
    Kv(kv::KvArgs),
    /// Watch a key or range and print its events until interrupted, as etcdctl's.
    Watch(watch::WatchArgs),
    /// Leases: grant, revoke, timetolive, list, keep-alive, as etcdctl's.
    Lease(lease::LeaseArgs),
    /// Endpoint status, health and hash, as etcdctl's.
    Endpoint(endpoint::EndpointArgs),
    /// Snapshots: save one from a member, check a file, restore a file into a new cluster.
    Snapshot(snapshot::SnapshotArgs),
    /// Cluster membership: list, add, remove, promote, update.
    Member(member::MemberArgs),
    /// Hand leadership to another member.
    MoveLeader(member::MoveLeaderArgs),
    /// Load generator for any etcd v3 endpoint: throughput and latency.
    Bench(bench::BenchArgs),
    /// Users (named by their client certificates) and their roles, as etcdctl's.
    User(auth::UserArgs),
    /// Roles and their key-range permissions, as etcdctl's.
    Role(auth::RoleArgs),
    /// Turn permission checks on or off, or show their status, as etcdctl's.
    Auth(auth::AuthArgs),
    /// Install this member as a hardened systemd service (user, config, certificates, unit).
    Install(Box<install::InstallArgs>),
    /// Remove the service; configuration and data stay unless --purge.
    Uninstall(install::UninstallArgs),
    /// Kubernetes: manifests for a StatefulSet of members, and the pods' init step.
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    /// Ask a member's /livez, /readyz or /health over mutual TLS (for exec probes).
    Probe(probe::ProbeArgs),
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

    /// An exit code for a failure the command has already explained on stderr in its own
    /// words (etcdctl exits without an `Error:` line in those cases).
    pub fn reported(code: u8) -> Self {
        CliError {
            code,
            error: anyhow::Error::new(Reported),
        }
    }

    /// The same error, exiting with `code` instead.
    pub fn exit_code(self, code: u8) -> Self {
        CliError { code, ..self }
    }

    /// The error worded as etcdctl wraps a failed call: `what (cause)`.
    pub fn wrapped(self, what: &str) -> Self {
        let error = anyhow::anyhow!("{what} ({})", render_chain(&self.error));
        CliError { error, ..self }
    }
}

/// Marks an error whose message is already on stderr.
#[derive(Debug, thiserror::Error)]
#[error("the command has reported its failure")]
struct Reported;

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Pki(cmd) => pki::run(cmd, cli.write_out),
        Command::Serve(cmd) => serve::run(*cmd),
        Command::Kv(args) => kv::run(args, cli.write_out),
        Command::Watch(args) => watch::run(args, cli.write_out),
        Command::Lease(args) => lease::run(args, cli.write_out),
        Command::Endpoint(args) => endpoint::run(args, cli.write_out),
        Command::Snapshot(args) => snapshot::run(args, cli.write_out),
        Command::Member(args) => member::run(args, cli.write_out),
        Command::MoveLeader(args) => member::run_move_leader(args),
        Command::Bench(args) => bench::run(args, cli.write_out),
        Command::User(args) => auth::run_user(args, cli.write_out),
        Command::Role(args) => auth::run_role(args, cli.write_out),
        Command::Auth(args) => auth::run_auth(args, cli.write_out),
        Command::Install(args) => install::run_install(*args),
        Command::Uninstall(args) => install::run_uninstall(args),
        Command::K8s(cmd) => k8s::run(cmd),
        Command::Probe(args) => probe::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { code, error }) => {
            if !error.is::<Reported>() {
                eprintln!("Error: {}", render_chain(&error));
            }
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
