//! `rampart snapshot save|status|restore`, as etcdctl's (3.5): save streams a member's state to
//! a file; status and restore work on the file offline.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::ConnArgs;
use super::endpoint::human_bytes;
use super::grpc::status_error;
use super::output::{OutputFormat, table};
use super::{CliError, exit};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::raft::SnapshotSummary;
use crate::server::restore::{RestoreError, RestoreOptions, restore};

/// Snapshot commands.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Stream a consistent snapshot of one member's data to FILE.
    Save {
        /// Where to write it.
        file: PathBuf,
        // Only save talks to a member; status and restore work on the file alone.
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Check a snapshot file and show its hash, revision, number of keys and size.
    Status {
        /// The snapshot file.
        file: PathBuf,
    },
    /// Build the data directory of a member of a new cluster from a snapshot file.
    Restore(RestoreArgs),
}

/// `rampart snapshot restore` flags: etcdctl's names, read as `rampart serve` reads them.
#[derive(Debug, Args)]
struct RestoreArgs {
    /// The snapshot file (from `rampart snapshot save` or `etcdctl snapshot save` against rampart).
    file: PathBuf,
    /// This member's name in the new cluster.
    #[arg(long)]
    name: String,
    /// The members of the new cluster, NAME=https://HOST:PORT,... (the same for every member).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// The new cluster's token (the same for every member; default as `rampart serve`).
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// This member's peer URLs (default: those --initial-cluster lists for --name).
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// The data directory to create; it must not exist or be empty (default: NAME.rampart).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Runs a snapshot command.
pub fn run(args: SnapshotArgs, format: OutputFormat) -> Result<(), CliError> {
    match args.command {
        SnapshotCommand::Save { file, conn } => save(&conn, &file),
        SnapshotCommand::Status { file } => status(&file, format),
        SnapshotCommand::Restore(restore_args) => run_restore(restore_args),
    }
}

fn save(conn: &ConnArgs, file: &std::path::Path) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let endpoints = conn.endpoint_list()?;
        if endpoints.len() != 1 {
            return Err(CliError::with_code(
                exit::BAD_ARGS,
                anyhow!(
                    "snapshot must be requested to one selected node, not multiple {endpoints:?}"
                ),
            ));
        }
        let channel = conn.connect().await?;
        let mut m = MaintenanceClient::new(channel).max_decoding_message_size(64 << 20);
        let mut stream = m
            .snapshot(pb::SnapshotRequest {})
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        let partial = file.with_extension("part");
        let mut out = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut hasher = Sha256::new();
        let mut tail: Vec<u8> = Vec::new();
        let mut total: u64 = 0;
        while let Some(chunk) = stream.message().await.map_err(|s| status_error(&s))? {
            // The stream ends with the SHA-256 of everything before it: hold back 32 bytes.
            tail.extend_from_slice(&chunk.blob);
            if tail.len() > 32 {
                let body: Vec<u8> = tail.drain(..tail.len() - 32).collect();
                hasher.update(&body);
                out.write_all(&body).await?;
                total += body.len() as u64;
            }
        }
        if tail.len() != 32 || hasher.finalize().as_slice() != tail.as_slice() {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(CliError::with_code(
                exit::ERROR,
                anyhow!("snapshot stream is corrupt: its SHA-256 does not match"),
            ));
        }
        // etcd's snapshot files keep the hash at the end, so tools can verify them offline.
        out.write_all(&tail).await?;
        out.sync_all().await?;
        drop(out);
        tokio::fs::rename(&partial, file).await?;
        println!(
            "Snapshot saved at {} ({} bytes)",
            file.display(),
            total + 32
        );
        Ok(())
    })
}

fn status(file: &std::path::Path, format: OutputFormat) -> Result<(), CliError> {
    let summary = crate::raft::summarize_snapshot(file)?;
    print!("{}", render_status(&summary, format));
    Ok(())
}

/// etcdctl's `snapshot status` output (hash in hex in simple and table output, a number in
/// JSON, as etcdctl prints them).
fn render_status(s: &SnapshotSummary, format: OutputFormat) -> String {
    let row = vec![
        format!("{:x}", s.hash),
        s.revision.to_string(),
        s.total_keys.to_string(),
        human_bytes(i64::try_from(s.total_size).unwrap_or(i64::MAX)),
    ];
    match format {
        OutputFormat::Simple => format!("{}\n", row.join(", ")),
        OutputFormat::Json => format!(
            "{}\n",
            json!({
                "hash": s.hash,
                "revision": s.revision,
                "totalKey": s.total_keys,
                "totalSize": s.total_size,
            })
        ),
        OutputFormat::Table => table(&["hash", "revision", "total keys", "total size"], vec![row]),
    }
}

fn run_restore(args: RestoreArgs) -> Result<(), CliError> {
    let options = RestoreOptions {
        snapshot: args.file,
        name: args.name,
        initial_cluster: args.initial_cluster,
        initial_cluster_token: args.initial_cluster_token,
        initial_advertise_peer_urls: args.initial_advertise_peer_urls,
        data_dir: args.data_dir,
    };
    let restored = restore(&options).map_err(|e| {
        let code = match e {
            RestoreError::Config(_) => exit::BAD_ARGS,
            _ => exit::ERROR,
        };
        CliError::with_code(code, e.into())
    })?;
    println!(
        "Restored snapshot {} (revision {}, {} keys) into {} as member {} ({:x}) of new cluster {:x}",
        options.snapshot.display(),
        restored.summary.revision,
        restored.summary.total_keys,
        restored.data_dir.display(),
        options.name,
        restored.member_id,
        restored.cluster_id,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_as_etcdctl() {
        let s = SnapshotSummary {
            hash: 0xfe01_cf57,
            revision: 10,
            total_keys: 7,
            total_size: 20480,
        };
        assert_eq!(
            render_status(&s, OutputFormat::Simple),
            "fe01cf57, 10, 7, 20 kB\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_status(&s, OutputFormat::Json)).unwrap();
        assert_eq!(
            v,
            json!({"hash": 0xfe01_cf57u32, "revision": 10, "totalKey": 7, "totalSize": 20480})
        );
        let t = render_status(&s, OutputFormat::Table);
        assert!(
            t.contains("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |"),
            "{t}"
        );
        assert!(
            t.contains("| fe01cf57 |       10 |          7 |      20 kB |"),
            "{t}"
        );
    }
}
