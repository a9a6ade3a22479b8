//! `rampart lease grant|revoke|timetolive|list|keep-alive`: etcdctl's lease commands, flags
//! and output. Lease IDs are hex, as etcdctl prints and reads them.

use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::client::{ConnArgs, interrupted, parse_lease};
use super::grpc::with_timeout;
use super::kv::{b64, header_fields};
use super::output::{OutputFormat, emit};
use super::{CliError, exit};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::lease_client::LeaseClient;

/// Pause before opening the keep-alive stream again after it broke.
const RETRY_WAIT: Duration = Duration::from_millis(500);

/// etcd's text for a lease the server does not know.
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// The lease commands.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(Debug, Subcommand)]
enum LeaseCommand {
    /// Create a lease that expires TTL seconds after its last renewal.
    Grant {
        /// Time to live, in seconds.
        ttl: String,
    },
    /// Revoke a lease, deleting every key attached to it.
    Revoke {
        /// The lease ID (hex).
        id: String,
    },
    /// A lease's granted and remaining time to live.
    #[command(name = "timetolive")]
    TimeToLive {
        /// The lease ID (hex).
        id: String,
        /// Also list the keys attached to the lease.
        #[arg(long)]
        keys: bool,
    },
    /// Every active lease.
    List,
    /// Keep a lease alive: renew it every third of its TTL until Ctrl-C or until it is gone.
    KeepAlive {
        /// The lease ID (hex).
        id: String,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
}

/// A command with its arguments checked, before dialing.
enum Prepared {
    Grant(i64),
    Revoke(i64),
    TimeToLive(i64, bool),
    List,
    KeepAlive(i64, bool),
}

fn lease_id(text: &str) -> Result<i64, CliError> {
    parse_lease(text).ok_or_else(|| {
        CliError::with_code(
            exit::BAD_ARGS,
            anyhow!("bad lease ID arg ({text:?}), expecting ID in Hex"),
        )
    })
}

fn prepare(command: &LeaseCommand) -> Result<Prepared, CliError> {
    Ok(match command {
        LeaseCommand::Grant { ttl } => Prepared::Grant(ttl.parse().map_err(|_| {
            CliError::with_code(
                exit::BAD_ARGS,
                anyhow!("bad TTL ({ttl:?} is not a whole number of seconds)"),
            )
        })?),
        LeaseCommand::Revoke { id } => Prepared::Revoke(lease_id(id)?),
        LeaseCommand::TimeToLive { id, keys } => Prepared::TimeToLive(lease_id(id)?, *keys),
        LeaseCommand::List => Prepared::List,
        LeaseCommand::KeepAlive { id, once } => Prepared::KeepAlive(lease_id(id)?, *once),
    })
}

/// Runs a lease command.
pub fn run(args: LeaseArgs, format: OutputFormat) -> Result<(), CliError> {
    // Refused up front: etcdctl would find out only when printing, after granting or revoking.
    if format == OutputFormat::Table {
        return Err(CliError::with_code(
            exit::BAD_FEATURE,
            anyhow!("table not supported as output format"),
        ));
    }
    let prepared = prepare(&args.command)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = run_async(&args.conn, prepared, format) => result,
            () = interrupted() => Ok(()),
        }
    })
}

async fn run_async(
    conn: &ConnArgs,
    prepared: Prepared,
    format: OutputFormat,
) -> Result<(), CliError> {
    let channel = conn.connect().await?;
    let mut lease = LeaseClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let t = conn.command_timeout;
    let text = match prepared {
        Prepared::Grant(ttl) => {
            let r = with_timeout(t, lease.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 }))
                .await
                .map_err(|e| e.wrapped("failed to grant lease"))?;
            grant_text(format, &r)
        }
        Prepared::Revoke(id) => {
            let r = with_timeout(t, lease.lease_revoke(pb::LeaseRevokeRequest { id }))
                .await
                .map_err(|e| e.wrapped("failed to revoke lease"))?;
            revoke_text(format, id, &r)
        }
        Prepared::TimeToLive(id, keys) => {
            let r = with_timeout(
                t,
                lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys }),
            )
            .await
            .map_err(|e| e.exit_code(exit::BAD_CONNECTION))?;
            time_to_live_text(format, &r, keys)
        }
        Prepared::List => {
            let r = with_timeout(t, lease.lease_leases(pb::LeaseLeasesRequest {}))
                .await
                .map_err(|e| e.exit_code(exit::BAD_CONNECTION))?;
            leases_text(format, &r)
        }
        Prepared::KeepAlive(id, true) => {
            let r = keep_alive_once(channel, id, t)
                .await
                .map_err(|e| e.exit_code(exit::BAD_CONNECTION))?;
            keep_alive_text(format, &r)
        }
        Prepared::KeepAlive(id, false) => return keep_alive(conn, channel, id, format).await,
    };
    emit(&text)?;
    Ok(())
}

/// One renewal on a stream of its own. A TTL of 0 or less is the server saying the lease is
/// gone, which etcd's client turns into the not-found error.
async fn keep_alive_once(
    channel: Channel,
    id: i64,
    timeout: Duration,
) -> Result<pb::LeaseKeepAliveResponse, CliError> {
    let mut client = LeaseClient::new(channel);
    // The request side stays open until the answer is in, so no server ends the stream early.
    let requests =
        tokio_stream::once(pb::LeaseKeepAliveRequest { id }).chain(tokio_stream::pending());
    let call = async {
        let mut stream = client.lease_keep_alive(requests).await?.into_inner();
        let response = stream
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("the server closed the keep-alive stream"))?;
        Ok(tonic::Response::new(response))
    };
    let response = with_timeout(timeout, call).await?;
    if response.ttl <= 0 {
        return Err(CliError::with_code(exit::ERROR, anyhow!(LEASE_NOT_FOUND)));
    }
    Ok(response)
}

/// How long to wait for the first renewal, before the TTL is known: etcd's client allows
/// the dial timeout plus a second (5 s when there is no dial timeout).
fn first_renewal_wait(dial_timeout: Duration) -> Duration {
    if dial_timeout.is_zero() {
        Duration::from_secs(5)
    } else {
        dial_timeout + Duration::from_secs(1)
    }
}

/// Renews the lease every third of its TTL, as etcd's client does, printing each renewal.
/// Ends (exit 0) when the server answers that the lease is gone, or when no renewal came back
/// within the TTL; a broken stream is reopened meanwhile.
async fn keep_alive(
    conn: &ConnArgs,
    channel: Channel,
    id: i64,
    format: OutputFormat,
) -> Result<(), CliError> {
    let mut deadline = Instant::now() + first_renewal_wait(conn.dial_timeout);
    let mut channel = Some(channel);
    'streams: while Instant::now() < deadline {
        let channel = match channel.take() {
            Some(channel) => channel,
            None => match tokio::time::timeout_at(deadline, conn.connect()).await {
                Ok(Ok(channel)) => channel,
                Ok(Err(_)) => {
                    pause_before_retry(deadline).await;
                    continue;
                }
                Err(_) => break,
            },
        };
        let (requests, receiver) = tokio::sync::mpsc::channel(1);
        let mut client = LeaseClient::new(channel);
        let mut stream = match tokio::time::timeout_at(
            deadline,
            client.lease_keep_alive(ReceiverStream::new(receiver)),
        )
        .await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(_)) => {
                pause_before_retry(deadline).await;
                continue;
            }
            Err(_) => break,
        };
        loop {
            if requests
                .send(pb::LeaseKeepAliveRequest { id })
                .await
                .is_err()
            {
                pause_before_retry(deadline).await;
                continue 'streams;
            }
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => break 'streams,
                Ok(Ok(Some(response))) if response.ttl <= 0 => break 'streams,
                Ok(Ok(Some(response))) => {
                    emit(&keep_alive_text(format, &response))?;
                    let ttl = Duration::from_secs(response.ttl.unsigned_abs());
                    deadline = Instant::now() + ttl;
                    tokio::time::sleep(ttl / 3).await;
                }
                Ok(Ok(None) | Err(_)) => {
                    pause_before_retry(deadline).await;
                    continue 'streams;
                }
            }
        }
    }
    // As etcdctl, only the simple format says so.
    if format == OutputFormat::Simple {
        emit(&format!("lease {id:016x} expired or revoked.\n"))?;
    }
    Ok(())
}

async fn pause_before_retry(deadline: Instant) {
    tokio::time::sleep_until(deadline.min(Instant::now() + RETRY_WAIT)).await;
}

/// etcd's client responses embed the header, so Go's encoding/json prints its fields at the
/// top level, before the response's own.
fn flat(header: Option<&pb::ResponseHeader>, fields: Value) -> Value {
    let mut m = header_fields(header);
    if let Value::Object(own) = fields {
        m.extend(own);
    }
    Value::Object(m)
}

fn grant_text(format: OutputFormat, r: &pb::LeaseGrantResponse) -> String {
    match format {
        OutputFormat::Json => {
            let fields = json!({"ID": r.id, "TTL": r.ttl, "Error": r.error});
            format!("{}\n", flat(r.header.as_ref(), fields))
        }
        _ => format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl),
    }
}

fn revoke_text(format: OutputFormat, id: i64, r: &pb::LeaseRevokeResponse) -> String {
    match format {
        OutputFormat::Json => {
            let mut m = serde_json::Map::new();
            if r.header.is_some() {
                m.insert(
                    "header".into(),
                    Value::Object(header_fields(r.header.as_ref())),
                );
            }
            format!("{}\n", Value::Object(m))
        }
        _ => format!("lease {id:016x} revoked\n"),
    }
}

fn time_to_live_text(format: OutputFormat, r: &pb::LeaseTimeToLiveResponse, keys: bool) -> String {
    match format {
        OutputFormat::Json => {
            // Go writes an empty [][]byte as null.
            let keys = if r.keys.is_empty() {
                Value::Null
            } else {
                r.keys.iter().map(|k| json!(b64(k))).collect()
            };
            let fields =
                json!({"id": r.id, "ttl": r.ttl, "granted-ttl": r.granted_ttl, "keys": keys});
            format!("{}\n", flat(r.header.as_ref(), fields))
        }
        _ if r.granted_ttl == 0 && r.ttl == -1 => {
            format!("lease {:016x} already expired\n", r.id)
        }
        _ => {
            let mut text = format!(
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                r.id, r.granted_ttl, r.ttl
            );
            if keys {
                let names: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                text.push_str(&format!(", attached keys([{}])", names.join(" ")));
            }
            text.push('\n');
            text
        }
    }
}

fn leases_text(format: OutputFormat, r: &pb::LeaseLeasesResponse) -> String {
    match format {
        OutputFormat::Json => {
            let leases: Vec<Value> = r.leases.iter().map(|l| json!({"id": l.id})).collect();
            format!("{}\n", flat(r.header.as_ref(), json!({"leases": leases})))
        }
        _ => {
            let mut text = format!("found {} leases\n", r.leases.len());
            for lease in &r.leases {
                text.push_str(&format!("{:016x}\n", lease.id));
            }
            text
        }
    }
}

fn keep_alive_text(format: OutputFormat, r: &pb::LeaseKeepAliveResponse) -> String {
    match format {
        OutputFormat::Json => {
            let fields = json!({"ID": r.id, "TTL": r.ttl});
            format!("{}\n", flat(r.header.as_ref(), fields))
        }
        _ => format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const ID: i64 = 0x694d77aa9e38260f;

    fn header() -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: 17186838941855831277,
            member_id: 4845372305070271874,
            revision: 3,
            raft_term: 2,
        })
    }

    const SIMPLE: OutputFormat = OutputFormat::Simple;
    const JSON: OutputFormat = OutputFormat::Json;

    #[test]
    fn grant_and_revoke_print_as_etcdctl() {
        let r = pb::LeaseGrantResponse {
            header: header(),
            id: ID,
            ttl: 10,
            error: String::new(),
        };
        assert_eq!(
            grant_text(SIMPLE, &r),
            "lease 694d77aa9e38260f granted with TTL(10s)\n"
        );
        assert_eq!(
            grant_text(JSON, &r),
            "{\"cluster_id\":17186838941855831277,\"member_id\":4845372305070271874,\"revision\":3,\
             \"raft_term\":2,\"ID\":7587852521871779343,\"TTL\":10,\"Error\":\"\"}\n"
        );
        let r = pb::LeaseRevokeResponse { header: header() };
        assert_eq!(
            revoke_text(SIMPLE, ID, &r),
            "lease 694d77aa9e38260f revoked\n"
        );
        assert_eq!(
            revoke_text(JSON, ID, &r),
            "{\"header\":{\"cluster_id\":17186838941855831277,\"member_id\":4845372305070271874,\
             \"revision\":3,\"raft_term\":2}}\n"
        );
        assert_eq!(
            grant_text(
                SIMPLE,
                &pb::LeaseGrantResponse {
                    id: 0x10,
                    ttl: 5,
                    ..Default::default()
                }
            ),
            "lease 0000000000000010 granted with TTL(5s)\n",
            "IDs are padded to 16 digits"
        );
    }

    #[test]
    fn timetolive_prints_remaining_time_and_keys() {
        let r = pb::LeaseTimeToLiveResponse {
            header: header(),
            id: ID,
            ttl: 497,
            granted_ttl: 500,
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        };
        assert_eq!(
            time_to_live_text(SIMPLE, &r, false),
            "lease 694d77aa9e38260f granted with TTL(500s), remaining(497s)\n"
        );
        assert_eq!(
            time_to_live_text(SIMPLE, &r, true),
            "lease 694d77aa9e38260f granted with TTL(500s), remaining(497s), attached keys([a b])\n"
        );
        assert_eq!(
            time_to_live_text(JSON, &r, true),
            "{\"cluster_id\":17186838941855831277,\"member_id\":4845372305070271874,\"revision\":3,\
             \"raft_term\":2,\"id\":7587852521871779343,\"ttl\":497,\"granted-ttl\":500,\
             \"keys\":[\"YQ==\",\"Yg==\"]}\n"
        );
        let gone = pb::LeaseTimeToLiveResponse {
            header: Some(pb::ResponseHeader::default()),
            id: ID,
            ttl: -1,
            granted_ttl: 0,
            keys: vec![],
        };
        assert_eq!(
            time_to_live_text(SIMPLE, &gone, true),
            "lease 694d77aa9e38260f already expired\n"
        );
        assert_eq!(
            time_to_live_text(JSON, &gone, false),
            "{\"id\":7587852521871779343,\"ttl\":-1,\"granted-ttl\":0,\"keys\":null}\n",
            "an empty header leaves no fields, as Go's omitempty"
        );
    }

    #[test]
    fn list_and_keep_alive_print_as_etcdctl() {
        let r = pb::LeaseLeasesResponse {
            header: header(),
            leases: vec![pb::LeaseStatus { id: ID }, pb::LeaseStatus { id: 0x2a }],
        };
        assert_eq!(
            leases_text(SIMPLE, &r),
            "found 2 leases\n694d77aa9e38260f\n000000000000002a\n"
        );
        assert!(
            leases_text(JSON, &r)
                .ends_with("\"leases\":[{\"id\":7587852521871779343},{\"id\":42}]}\n")
        );
        let empty = pb::LeaseLeasesResponse {
            header: header(),
            leases: vec![],
        };
        assert_eq!(leases_text(SIMPLE, &empty), "found 0 leases\n");
        assert!(leases_text(JSON, &empty).ends_with("\"leases\":[]}\n"));
        let r = pb::LeaseKeepAliveResponse {
            header: header(),
            id: ID,
            ttl: 10,
        };
        assert_eq!(
            keep_alive_text(SIMPLE, &r),
            "lease 694d77aa9e38260f keepalived with TTL(10)\n"
        );
        assert!(keep_alive_text(JSON, &r).ends_with("\"ID\":7587852521871779343,\"TTL\":10}\n"));
    }

    #[test]
    fn bad_arguments_exit_128_before_dialing() {
        let parse = |args: &[&str]| {
            let cli = crate::cli::Cli::try_parse_from(args).unwrap();
            let crate::cli::Command::Lease(lease) = cli.command else {
                panic!("parsed as another command");
            };
            prepare(&lease.command)
        };
        let err = parse(&["rampart", "lease", "revoke", "xyz"]).err().unwrap();
        assert_eq!(err.code, exit::BAD_ARGS);
        assert_eq!(
            err.error.to_string(),
            "bad lease ID arg (\"xyz\"), expecting ID in Hex"
        );
        let err = parse(&["rampart", "lease", "grant", "ten"]).err().unwrap();
        assert_eq!(err.code, exit::BAD_ARGS);
        assert!(matches!(
            parse(&[
                "rampart",
                "lease",
                "timetolive",
                "694d77aa9e38260f",
                "--keys"
            ]),
            Ok(Prepared::TimeToLive(ID, true))
        ));
        assert!(matches!(
            parse(&["rampart", "lease", "keep-alive", "--once", "2a"]),
            Ok(Prepared::KeepAlive(42, true))
        ));
        assert!(matches!(
            parse(&["rampart", "lease", "list"]),
            Ok(Prepared::List)
        ));
    }

    #[test]
    fn the_first_renewal_waits_dial_timeout_plus_a_second() {
        assert_eq!(
            first_renewal_wait(Duration::from_secs(2)),
            Duration::from_secs(3)
        );
        assert_eq!(first_renewal_wait(Duration::ZERO), Duration::from_secs(5));
    }
}
