//! `rampart endpoint status|health|hashkv`, as etcdctl's.

use std::time::Instant;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::ConnArgs;
use super::grpc::with_timeout;
use super::kv::header_json;
use super::output::{OutputFormat, table};
use super::{CliError, exit};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::kv_client::KvClient;
use crate::api::proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// Endpoint commands.
#[derive(Debug, Args)]
pub struct EndpointArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Ask every member of the cluster, not only the given endpoints (needs the Cluster API).
    #[arg(long, global = true)]
    cluster: bool,
    #[command(subcommand)]
    command: EndpointCommand,
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Version, database size, leadership and raft indexes of each endpoint.
    Status,
    /// Whether each endpoint commits a linearizable read.
    Health,
    /// The hash of the key-value history of each endpoint.
    Hashkv {
        /// The revision to hash up to (0 = current).
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// A byte count as etcdctl prints it (SI units, as Go's humanize.Bytes).
pub fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 10.0 {
        return format!("{n} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let e = (n.ln() / 1000f64.ln()).floor().min(5.0);
    let value = n / 1000f64.powf(e);
    let unit = units[e as usize];
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// Runs an endpoint command.
pub fn run(args: EndpointArgs, format: OutputFormat) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, format))
}

async fn endpoints(
    args: &EndpointArgs,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Vec<String>> {
    let given = args.conn.endpoint_list()?;
    if !args.cluster {
        return Ok(given);
    }
    let mut last = None;
    for endpoint in &given {
        match args.conn.connect_one(endpoint, config.clone()).await {
            Ok(channel) => {
                let mut cluster = pb::cluster_client::ClusterClient::new(channel);
                let list = with_timeout(
                    args.conn.command_timeout,
                    cluster.member_list(pb::MemberListRequest {
                        linearizable: false,
                    }),
                )
                .await
                .map_err(|e| anyhow!("{e:?}"))?;
                return Ok(list
                    .members
                    .iter()
                    .flat_map(|m| m.client_ur_ls.clone())
                    .collect());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no endpoints given")))
}

async fn run_async(args: EndpointArgs, format: OutputFormat) -> Result<(), CliError> {
    let config = args.conn.client_config()?;
    let list = endpoints(&args, config.clone()).await?;
    let timeout = args.conn.command_timeout;
    match &args.command {
        EndpointCommand::Status => {
            let mut rows = Vec::new();
            let mut failed = false;
            for ep in &list {
                let result = async {
                    let channel = args.conn.connect_one(ep, config.clone()).await?;
                    let mut m = MaintenanceClient::new(channel);
                    with_timeout(timeout, m.status(pb::StatusRequest {}))
                        .await
                        .map_err(|e| anyhow!("{e:?}"))
                }
                .await;
                match result {
                    Ok(s) => rows.push((ep.clone(), s)),
                    Err(e) => {
                        failed = true;
                        eprintln!("Failed to get the status of endpoint {ep} ({e:#})");
                    }
                }
            }
            print_status(&rows, format);
            if failed && rows.is_empty() {
                return Err(CliError::with_code(
                    exit::ERROR,
                    anyhow!("no endpoint answered"),
                ));
            }
            Ok(())
        }
        EndpointCommand::Health => {
            let mut results = Vec::new();
            for ep in &list {
                let start = Instant::now();
                let outcome = async {
                    let channel = args.conn.connect_one(ep, config.clone()).await?;
                    let mut kv = KvClient::new(channel);
                    // As etcdctl: a linearizable read of "health" proves a committed round trip;
                    // permission denied still proves it.
                    match tokio::time::timeout(
                        timeout,
                        kv.range(pb::RangeRequest {
                            key: b"health".to_vec(),
                            ..Default::default()
                        }),
                    )
                    .await
                    {
                        Err(_) => Err(anyhow!("context deadline exceeded")),
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(s)) if s.code() == tonic::Code::PermissionDenied => Ok(()),
                        Ok(Err(s)) => Err(anyhow!("{}", s.message())),
                    }
                }
                .await;
                results.push((ep.clone(), outcome.map(|()| start.elapsed())));
            }
            let unhealthy = results.iter().any(|(_, r)| r.is_err());
            print_health(&results, format);
            if unhealthy {
                return Err(CliError::with_code(
                    exit::ERROR,
                    anyhow!("unhealthy cluster"),
                ));
            }
            Ok(())
        }
        EndpointCommand::Hashkv { rev } => {
            let mut rows = Vec::new();
            for ep in &list {
                let channel = args.conn.connect_one(ep, config.clone()).await?;
                let mut m = MaintenanceClient::new(channel);
                let r =
                    with_timeout(timeout, m.hash_kv(pb::HashKvRequest { revision: *rev })).await?;
                rows.push((ep.clone(), r));
            }
            match format {
                OutputFormat::Json => {
                    let v: Vec<Value> = rows
                        .iter()
                        .map(|(ep, r)| json!({"Endpoint": ep, "HashKV": {"header": header_json(r.header.as_ref()), "hash": r.hash, "compact_revision": r.compact_revision}}))
                        .collect();
                    println!("{}", Value::Array(v));
                }
                OutputFormat::Table => println!(
                    "{}",
                    table(
                        &["endpoint", "hash"],
                        rows.iter()
                            .map(|(ep, r)| vec![ep.clone(), r.hash.to_string()])
                            .collect()
                    )
                ),
                OutputFormat::Simple => {
                    for (ep, r) in rows {
                        println!("{ep}, {}", r.hash);
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_status(rows: &[(String, pb::StatusResponse)], format: OutputFormat) {
    let fields = |ep: &str, s: &pb::StatusResponse| {
        let h = s.header.unwrap_or_default();
        vec![
            ep.to_owned(),
            format!("{:x}", h.member_id),
            s.version.clone(),
            human_bytes(s.db_size),
            (s.leader == h.member_id).to_string(),
            s.is_learner.to_string(),
            h.raft_term.to_string(),
            s.raft_index.to_string(),
            s.raft_applied_index.to_string(),
            s.errors.join(", "),
        ]
    };
    match format {
        OutputFormat::Json => {
            let v: Vec<Value> = rows
                .iter()
                .map(|(ep, s)| {
                    json!({"Endpoint": ep, "Status": {
                        "header": header_json(s.header.as_ref()), "version": s.version, "dbSize": s.db_size,
                        "leader": s.leader, "raftIndex": s.raft_index, "raftTerm": s.raft_term,
                        "raftAppliedIndex": s.raft_applied_index, "dbSizeInUse": s.db_size_in_use,
                        "isLearner": s.is_learner, "errors": s.errors,
                    }})
                })
                .collect();
            println!("{}", Value::Array(v));
        }
        OutputFormat::Table => println!(
            "{}",
            table(
                &[
                    "endpoint",
                    "id",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors"
                ],
                rows.iter().map(|(ep, s)| fields(ep, s)).collect()
            )
        ),
        OutputFormat::Simple => {
            for (ep, s) in rows {
                println!("{}", fields(ep, s).join(", "));
            }
        }
    }
}

fn print_health(results: &[(String, anyhow::Result<std::time::Duration>)], format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let v: Vec<Value> = results
                .iter()
                .map(|(ep, r)| match r {
                    Ok(took) => json!({"endpoint": ep, "health": true, "took": format!("{took:?}")}),
                    Err(e) => json!({"endpoint": ep, "health": false, "took": "", "error": format!("{e:#}")}),
                })
                .collect();
            println!("{}", Value::Array(v));
        }
        OutputFormat::Table => println!(
            "{}",
            table(
                &["endpoint", "health", "took", "error"],
                results
                    .iter()
                    .map(|(ep, r)| match r {
                        Ok(took) => vec![
                            ep.clone(),
                            "true".into(),
                            format!("{took:?}"),
                            String::new()
                        ],
                        Err(e) => vec![ep.clone(), "false".into(), String::new(), format!("{e:#}")],
                    })
                    .collect()
            )
        ),
        OutputFormat::Simple => {
            for (ep, r) in results {
                match r {
                    Ok(took) => println!(
                        "{ep} is healthy: successfully committed proposal: took = {took:?}"
                    ),
                    Err(e) => eprintln!("{ep} is unhealthy: failed to commit proposal: {e:#}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(2_147_483_648), "2.1 GB");
    }
}
