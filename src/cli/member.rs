//! `rampart member list|add|remove|promote|update` and `rampart move-leader`, as etcdctl's.

use anyhow::anyhow;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::ConnArgs;
use super::grpc::with_timeout;
use super::kv::header_json;
use super::output::{OutputFormat, table};
use super::{CliError, exit};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::api::proto::etcdserverpb::maintenance_client::MaintenanceClient;

/// Membership commands.
#[derive(Debug, Args)]
pub struct MemberArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// The members of the cluster.
    List {
        /// Ask the leader (a linearizable read) rather than the endpoint's own view.
        #[arg(long)]
        consistency_l: bool,
    },
    /// Add a member; prints the settings to start it with.
    Add {
        /// The new member's name (its certificate's name).
        name: String,
        /// Its peer URLs, comma-separated (https://HOST:PORT).
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (receives the log, does not vote); promote it later.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by its hex ID.
    Remove {
        /// The member's ID (hex, as `member list` shows it).
        id: String,
    },
    /// Make a learner a voting member once it has caught up.
    Promote {
        /// The learner's ID (hex).
        id: String,
    },
    /// Change a member's peer URLs.
    Update {
        /// The member's ID (hex).
        id: String,
        /// Its new peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
}

/// Leadership transfer.
#[derive(Debug, Args)]
pub struct MoveLeaderArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The member (hex ID) to hand leadership to.
    transferee: String,
}

fn parse_id(text: &str) -> Result<u64, CliError> {
    u64::from_str_radix(text, 16).map_err(|_| {
        CliError::with_code(
            exit::BAD_ARGS,
            anyhow!("bad member ID arg ({text:?}): expected the hex ID that `member list` shows"),
        )
    })
}

/// Runs a membership command.
pub fn run(args: MemberArgs, format: OutputFormat) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args, format))
}

async fn run_async(args: MemberArgs, format: OutputFormat) -> Result<(), CliError> {
    let channel = args.conn.connect().await?;
    let t = args.conn.command_timeout;
    let mut cluster = ClusterClient::new(channel);
    match args.command {
        MemberCommand::List { consistency_l } => {
            let resp = with_timeout(
                t,
                cluster.member_list(pb::MemberListRequest {
                    linearizable: consistency_l,
                }),
            )
            .await?;
            print_list(&resp, format);
        }
        MemberCommand::Add {
            name,
            peer_urls,
            learner,
        } => {
            let resp = with_timeout(
                t,
                cluster.member_add(pb::MemberAddRequest {
                    peer_ur_ls: peer_urls.clone(),
                    is_learner: learner,
                }),
            )
            .await?;
            print_added(&resp, &name, &peer_urls, format);
        }
        MemberCommand::Remove { id } => {
            let id = parse_id(&id)?;
            let resp =
                with_timeout(t, cluster.member_remove(pb::MemberRemoveRequest { id })).await?;
            print_changed(resp.header.as_ref(), id, "removed from", format);
        }
        MemberCommand::Promote { id } => {
            let id = parse_id(&id)?;
            let resp =
                with_timeout(t, cluster.member_promote(pb::MemberPromoteRequest { id })).await?;
            print_changed(resp.header.as_ref(), id, "promoted in", format);
        }
        MemberCommand::Update { id, peer_urls } => {
            let id = parse_id(&id)?;
            let resp = with_timeout(
                t,
                cluster.member_update(pb::MemberUpdateRequest {
                    id,
                    peer_ur_ls: peer_urls,
                }),
            )
            .await?;
            print_changed(resp.header.as_ref(), id, "updated in", format);
        }
    }
    Ok(())
}

fn member_json(m: &pb::Member) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("ID".into(), json!(m.id));
    if !m.name.is_empty() {
        v.insert("name".into(), json!(m.name));
    }
    v.insert("peerURLs".into(), json!(m.peer_ur_ls));
    if !m.client_ur_ls.is_empty() {
        v.insert("clientURLs".into(), json!(m.client_ur_ls));
    }
    if m.is_learner {
        v.insert("isLearner".into(), json!(true));
    }
    Value::Object(v)
}

fn print_list(resp: &pb::MemberListResponse, format: OutputFormat) {
    let status = |m: &pb::Member| {
        if m.name.is_empty() {
            "unstarted"
        } else {
            "started"
        }
    };
    match format {
        OutputFormat::Json => {
            let members: Vec<Value> = resp.members.iter().map(member_json).collect();
            println!(
                "{}",
                json!({"header": header_json(resp.header.as_ref()), "members": members})
            );
        }
        OutputFormat::Table => {
            let rows = resp
                .members
                .iter()
                .map(|m| {
                    vec![
                        format!("{:x}", m.id),
                        status(m).to_owned(),
                        m.name.clone(),
                        m.peer_ur_ls.join(","),
                        m.client_ur_ls.join(","),
                        m.is_learner.to_string(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "ID",
                        "STATUS",
                        "NAME",
                        "PEER ADDRS",
                        "CLIENT ADDRS",
                        "IS LEARNER"
                    ],
                    rows
                )
            );
        }
        _ => {
            for m in &resp.members {
                println!(
                    "{:x}, {}, {}, {}, {}, {}",
                    m.id,
                    status(m),
                    m.name,
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner
                );
            }
        }
    }
}

fn print_added(
    resp: &pb::MemberAddResponse,
    name: &str,
    peer_urls: &[String],
    format: OutputFormat,
) {
    let cluster_id = resp.header.map_or(0, |h| h.cluster_id);
    let id = resp.member.as_ref().map_or(0, |m| m.id);
    if format == OutputFormat::Json {
        let members: Vec<Value> = resp.members.iter().map(member_json).collect();
        println!(
            "{}",
            json!({
                "header": header_json(resp.header.as_ref()),
                "member": resp.member.as_ref().map(member_json),
                "members": members,
            })
        );
        return;
    }
    println!("Member {id:16x} added to cluster {cluster_id:16x}");
    // As etcdctl: the initial cluster the new member starts with, its own name included.
    let mut initial = Vec::new();
    for m in &resp.members {
        let member_name = if m.id == id { name } else { m.name.as_str() };
        if member_name.is_empty() {
            continue;
        }
        for u in &m.peer_ur_ls {
            initial.push(format!("{member_name}={u}"));
        }
    }
    println!();
    println!("ETCD_NAME=\"{name}\"");
    println!("ETCD_INITIAL_CLUSTER=\"{}\"", initial.join(","));
    println!(
        "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"",
        peer_urls.join(",")
    );
    println!("ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
    println!();
    println!("Start it with:");
    println!(
        "  rampart serve --name {name} --initial-advertise-peer-urls {} --initial-cluster {} --initial-cluster-state existing ...",
        peer_urls.join(","),
        initial.join(",")
    );
}

fn print_changed(header: Option<&pb::ResponseHeader>, id: u64, what: &str, format: OutputFormat) {
    if format == OutputFormat::Json {
        println!("{}", json!({"header": header_json(header)}));
        return;
    }
    let cluster_id = header.map_or(0, |h| h.cluster_id);
    println!("Member {id:16x} {what} cluster {cluster_id:16x}");
}

/// Runs `move-leader`: finds the leader among the endpoints and asks it to hand over.
pub fn run_move_leader(args: MoveLeaderArgs) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let target = parse_id(&args.transferee)?;
        let config = args.conn.client_config()?;
        let t = args.conn.command_timeout;
        for ep in args.conn.endpoint_list()? {
            let Ok(channel) = args.conn.connect_one(&ep, config.clone()).await else {
                continue;
            };
            let mut m = MaintenanceClient::new(channel);
            let Ok(status) = with_timeout(t, m.status(pb::StatusRequest {})).await else {
                continue;
            };
            let me = status.header.map_or(0, |h| h.member_id);
            if status.leader != me {
                continue;
            }
            with_timeout(
                t,
                m.move_leader(pb::MoveLeaderRequest { target_id: target }),
            )
            .await?;
            println!("Leadership transferred from {me:x} to {target:x}");
            return Ok(());
        }
        Err(CliError::with_code(
            exit::ERROR,
            anyhow!(
                "no leader endpoint given at {}; pass the leader's endpoint in --endpoints",
                args.conn.endpoint_list()?.join(",")
            ),
        ))
    })
}
