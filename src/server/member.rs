//! Starting a member: TLS material, storage, raft, then the client port — in that order, so
//! the member serves only once it has replayed its log and knows a leader.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;
use tonic::{Request, Status};
use tracing::{info, warn};

use super::config::{ClusterState, MemberConfig};
use super::{ids, storage};
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::core::{Core, Limits, spawn_alarm_raiser};
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::{LeaseService, spawn_expiry};
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::{v3electionpb, v3lockpb};
use crate::api::watch::WatchService;
use crate::pki::CertInfo;
use crate::raft::{ClusterInfoRequest, Node, NodeId, PeerContext, RaftNode, RaftSettings};
use crate::tls::{self, ClientPolicy, Material, PeerInfo, TlsFiles, TlsIncoming};

/// gRPC framing overhead allowed above --max-request-bytes before the transport refuses a
/// message outright (etcd allows the same 512 KiB); requests in between get etcd's
/// "request is too large".
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Why a member could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS material is missing, unreadable or wrong.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The certificate does not belong to this member.
    #[error("{0}")]
    Identity(String),
    /// The data directory or database cannot be used.
    #[error("{what}: {reason}")]
    Storage {
        /// What failed.
        what: String,
        /// Why.
        reason: String,
    },
    /// Raft did not start or lost its leader during start-up.
    #[error("raft: {0}")]
    Raft(#[from] crate::raft::RaftNodeError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn storage_error(what: impl Into<String>) -> impl FnOnce(&dyn std::fmt::Display) -> ServeError {
    let what = what.into();
    move |e| ServeError::Storage {
        what,
        reason: e.to_string(),
    }
}

/// Refuses requests from connections whose certificate names no usable identity.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
fn require_identity(request: Request<()>) -> Result<Request<()>, Status> {
    match request.extensions().get::<PeerInfo>() {
        Some(peer) if peer.caller.is_some() => Ok(request),
        _ => Err(Status::permission_denied("etcdserver: permission denied")),
    }
}

/// The cluster ID and member ID stored at first start, if any: a restarted member keeps them
/// whatever the flags now say, as etcd does.
fn stored_ids(db: &rocksdb::DB) -> Result<Option<(u64, u64)>, ServeError> {
    storage::read_ids(db).map_err(|e| storage_error("reading member identity")(&e))
}

fn store_ids(db: &rocksdb::DB, ids: (u64, u64)) -> Result<(), ServeError> {
    storage::write_ids(db, ids).map_err(|e| storage_error("writing member identity")(&e))
}

fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// The membership a new cluster starts with: every member of `initial_cluster` as a voter,
/// with its ID derived from its peer URLs and `token`. Client URLs are published later, once
/// each member serves.
pub(crate) fn initial_nodes(
    initial_cluster: &BTreeMap<String, Vec<String>>,
    token: &str,
) -> BTreeMap<NodeId, Node> {
    initial_cluster
        .iter()
        .map(|(name, urls)| {
            let node = Node {
                name: name.clone(),
                peer_urls: urls.clone(),
                client_urls: Vec::new(),
            };
            (ids::member_id(urls, token), node)
        })
        .collect()
}

/// One peer's answer to "who are you": its name, cluster ID and membership.
type PeerAnswer = (String, u64, BTreeMap<NodeId, (Node, bool)>);

/// Asks the other members of the initial cluster who they are, each within `timeout`.
/// Returns the answers, and for each peer that gave none, `NAME (URL): why` — a name that does
/// not resolve (yet) is one of those, never an error: in Kubernetes a pod's DNS record appears
/// only some time after the pod starts.
async fn ask_peers(
    config: &MemberConfig,
    probe: &PeerContext,
    timeout: Duration,
) -> (Vec<PeerAnswer>, Vec<String>) {
    let asks = config
        .initial_cluster
        .iter()
        .filter(|(name, _)| **name != config.name)
        .flat_map(|(name, urls)| urls.iter().map(move |u| (name.clone(), u.clone())))
        .map(|(name, url)| async move {
            let answer = async {
                let channel = probe
                    .channel_to(0, &url, Some(&name))
                    .map_err(|e| e.to_string())?;
                let mut client = PeerContext::client(channel);
                let request = ClusterInfoRequest {
                    from: Some(probe.sender()),
                };
                let answer = tokio::time::timeout(timeout, client.cluster_info(request))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
                    .map_err(|status| status.message().to_owned())?
                    .into_inner();
                let members = crate::raft::decode_members(&answer.members)
                    .ok_or_else(|| "an undecodable membership".to_owned())?;
                Ok::<_, String>((name.clone(), answer.cluster_id, members))
            };
            answer.await.map_err(|why| format!("{name} ({url}): {why}"))
        });
    let mut answers = Vec::new();
    let mut silent = Vec::new();
    for result in futures_util::future::join_all(asks).await {
        match result {
            Ok(answer) => answers.push(answer),
            Err(why) => silent.push(why),
        }
    }
    (answers, silent)
}

/// First and longest pause between two rounds of asking the peers of a joining member.
const JOIN_RETRY_FIRST: Duration = Duration::from_secs(1);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(30);

/// Decides the cluster and member IDs of a member without stored ones. A new cluster's IDs come
/// from the flags, but a member whose peers already run another cluster refuses to start; a
/// member joining an existing cluster learns the cluster ID from its peers and finds itself in
/// their membership by its peer URLs (as etcd).
async fn first_ids(config: &MemberConfig, probe: &PeerContext) -> Result<(u64, u64), ServeError> {
    let others = config.initial_cluster.len() > 1;
    match config.initial_cluster_state {
        ClusterState::New => {
            if others {
                let (answers, silent) = ask_peers(config, probe, Duration::from_secs(2)).await;
                if !silent.is_empty() {
                    // Not an error: the others may not run (or resolve) yet; raft keeps
                    // dialing them with backoff.
                    info!(peers = %silent.join("; "), "peers not reachable yet; starting anyway");
                }
                for (name, cluster_id, _) in answers {
                    if cluster_id != config.cluster_id {
                        return Err(ServeError::Identity(format!(
                            "member {name} already runs cluster {cluster_id:x}, but this member's --initial-cluster and \
                             --initial-cluster-token give cluster {:x}; start every member with the same flags, or \
                             join the running cluster with `member add` and --initial-cluster-state existing",
                            config.cluster_id
                        )));
                    }
                }
            }
            Ok((config.cluster_id, config.member_id))
        }
        ClusterState::Existing => {
            if !others {
                return Err(ServeError::Identity(
                    "--initial-cluster-state existing needs --initial-cluster to list at least one running member to join"
                        .into(),
                ));
            }
            // Ask until one answers: a joining pod may start before its peers' names resolve
            // (or before its own address is published), and that is no reason to exit.
            let mut pause = JOIN_RETRY_FIRST;
            let (name, cluster_id, members) = loop {
                let (answers, silent) = ask_peers(config, probe, Duration::from_secs(5)).await;
                if let Some(answer) = answers.into_iter().next() {
                    break answer;
                }
                warn!(
                    peers = %silent.join("; "),
                    retry_in = ?pause,
                    "no member of --initial-cluster answered on its peer URL yet; start this member once the cluster runs"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(JOIN_RETRY_MAX);
            };
            let mine = sorted(&config.advertise_peer_urls);
            match members
                .iter()
                .find(|(_, (node, _))| sorted(&node.peer_urls) == mine)
            {
                Some((id, _)) => {
                    info!(cluster = %format!("{cluster_id:x}"), id = %format!("{id:x}"), via = %name, "joining an existing cluster");
                    Ok((cluster_id, *id))
                }
                None => Err(ServeError::Identity(format!(
                    "the cluster (asked {name}) has no member with peer URLs {}; add this member first: \
                     rampart member add {} --peer-urls {}",
                    mine.join(","),
                    config.name,
                    mine.join(",")
                ))),
            }
        }
    }
}

/// Binds `addr` and accepts mutual-TLS connections on it with the (reloadable) `config`.
async fn listen(
    addr: &std::net::SocketAddr,
    config: &tokio::sync::watch::Receiver<Arc<rustls::ServerConfig>>,
    cluster: &str,
    listener_name: &'static str,
    max_connections: usize,
) -> Result<TlsIncoming, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: *addr,
            source,
        })?;
    Ok(TlsIncoming::with_limits(
        listener,
        config.clone(),
        cluster.to_owned(),
        crate::tls::ListenerLimits {
            listener: listener_name,
            handshake_timeout: crate::tls::DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections,
        },
    ))
}

/// Refuses TLS material whose certificate is not the member certificate of `name`.
pub(crate) fn check_member_cert(
    material: &Material,
    cluster: &str,
    name: &str,
    files: &TlsFiles,
) -> Result<(), ServeError> {
    let cert_name = material.member_name(cluster)?;
    if cert_name != name {
        return Err(ServeError::Identity(format!(
            "{} is the certificate of member {cert_name}, not of {name}; pass --name {cert_name} or this member's certificate",
            files.cert.display(),
        )));
    }
    Ok(())
}

/// Completes once this member has been removed from the cluster: either its own membership no
/// longer lists it, or the leader does not. A removed member may never receive the entry that
/// removes it (the leader stops replicating to it), so it asks the leader every few seconds.
async fn watch_removal(core: &Core, peers: &PeerContext) {
    let me = core.member_id;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let members = core.node.members();
        if !members.iter().any(|m| m.id == me) {
            return;
        }
        let leader = core.node.status().leader;
        if leader == Some(me) {
            continue;
        }
        // Ask the leader we know of, or everyone when we know none; believe only an answer
        // from a member that leads.
        for m in members
            .iter()
            .filter(|m| m.id != me && leader.is_none_or(|l| l == m.id))
        {
            let Some(url) = m.peer_urls.first() else {
                continue;
            };
            let name = (!m.name.is_empty()).then_some(m.name.as_str());
            let Ok(channel) = peers.channel_to(m.id, url, name) else {
                continue;
            };
            let request = ClusterInfoRequest {
                from: Some(peers.sender()),
            };
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                PeerContext::client(channel).cluster_info(request),
            )
            .await;
            let Ok(Ok(answer)) = answer else { continue };
            let answer = answer.into_inner();
            if answer.cluster_id != core.cluster_id
                || answer.leader_id == 0
                || answer.leader_id != answer.member_id
            {
                continue;
            }
            let listed =
                crate::raft::decode_members(&answer.members).is_some_and(|ms| ms.contains_key(&me));
            if !listed {
                return;
            }
        }
    }
}

/// Runs a member until `shutdown` completes.
pub async fn serve(
    config: MemberConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let mut shutdown = Box::pin(shutdown);

    // TLS first: a member with the wrong certificate must not touch its data.
    let files = TlsFiles {
        cert: config.client_tls.cert.clone(),
        key: config.client_tls.key.clone(),
        ca: config.client_tls.ca.clone(),
        crl: config.client_tls.crl.clone(),
    };
    let material = Material::load(&files)?;
    let ca = CertInfo::from_pem_file(&files.ca).map_err(|e| ServeError::Identity(e.to_string()))?;
    let cluster = ca.cluster.clone().ok_or_else(|| {
        ServeError::Identity(format!(
            "{} names no spiffe:// trust domain; use the ca.crt of a `rampart pki` directory",
            files.ca.display()
        ))
    })?;
    check_member_cert(&material, &cluster, &config.name, &files)?;
    let server_config = tls::server_config(&material, ClientPolicy::AnyClient)?;
    let peer_files = TlsFiles {
        cert: config.peer_tls.cert.clone(),
        key: config.peer_tls.key.clone(),
        ca: config.peer_tls.ca.clone(),
        crl: config.peer_tls.crl.clone(),
    };
    let peer_material = Material::load(&peer_files)?;
    check_member_cert(&peer_material, &cluster, &config.name, &peer_files)?;
    let peer_server_config = tls::server_config(
        &peer_material,
        ClientPolicy::MembersOf {
            cluster: cluster.clone(),
        },
    )?;
    let peer_client_config = tls::client_config(&peer_material)?;

    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| storage_error(format!("creating {}", config.data_dir.display()))(&e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| storage_error(format!("securing {}", config.data_dir.display()))(&e))?;
    }
    let db_dir = config.data_dir.join(storage::DB_DIR);
    let db = tokio::task::spawn_blocking(move || storage::open(&db_dir))
        .await
        .map_err(|e| storage_error("opening the database")(&e))?
        .map_err(|e| {
            storage_error(format!(
                "opening the database in {}",
                config.data_dir.display()
            ))(&e)
        })?;

    let initial = initial_nodes(&config.initial_cluster, &config.initial_cluster_token);
    let (cluster_id, member_id, fresh) = match stored_ids(&db)? {
        Some((cluster_id, member_id)) => (cluster_id, member_id, false),
        None => {
            let probe = PeerContext::new(0, 0, cluster.clone(), peer_client_config.clone());
            // Asking the peers may take long (a joining member waits for one to answer):
            // a stop request ends it.
            let ids = tokio::select! {
                ids = first_ids(&config, &probe) => ids?,
                () = &mut shutdown => return Ok(()),
            };
            store_ids(&db, ids)?;
            (ids.0, ids.1, true)
        }
    };
    let peers = PeerContext::new(cluster_id, member_id, cluster.clone(), peer_client_config);
    let peer_context = peers.clone();
    let node = RaftNode::start(
        member_id,
        db.clone(),
        &config.data_dir,
        initial.clone(),
        fresh && config.initial_cluster_state == ClusterState::New,
        &RaftSettings {
            snapshot_count: config.snapshot_count,
            keep_after_snapshot: config.snapshot_catchup_entries,
            ..RaftSettings::default()
        },
        peers,
    )
    .await?;

    let leader_changes = tokio::spawn(node.count_leader_changes());
    super::reload::publish_expiry(&files, &peer_files);

    // The peer port comes up before anything waits for a leader: the others need it to elect one.
    let (peer_config_tx, peer_config_rx) = tokio::sync::watch::channel(peer_server_config);
    let mut peer_live = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for addr in &config.listen_peer {
        // Peers are few and authenticated by the handshake; the bound only stops a flood.
        let incoming = listen(
            addr,
            &peer_config_rx,
            &cluster,
            "peer",
            PEER_MAX_CONNECTIONS,
        )
        .await?;
        peer_live.push(incoming.live());
        let router = Server::builder()
            .http2_adaptive_window(Some(true))
            .add_service(node.peer_service(initial.clone()));
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        info!(addr = %addr, "serving peers over mutual TLS (members only)");
    }

    // Wait for a leader (a quorum of members), however long it takes, unless told to stop.
    loop {
        tokio::select! {
            leader = node.wait_for_leader(Duration::from_secs(10)) => match leader {
                Ok(_) => break,
                Err(_) => tracing::warn!(member = %config.name, "no leader yet: waiting for a quorum of the cluster's members"),
            },
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                node.shutdown().await;
                return Ok(());
            }
        }
    }
    // A linearizable barrier: everything committed before the restart is applied before the
    // first client request is served.
    loop {
        tokio::select! {
            done = node.linearize() => match done {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "waiting to catch up with the leader"),
            },
            () = &mut shutdown => {
                let _ = stop_tx.send(true);
                node.shutdown().await;
                return Ok(());
            }
        }
    }
    let status = node.status();
    info!(member = %config.name, id = %format!("{member_id:x}"), cluster = %format!("{cluster_id:x}"),
          term = status.term, applied = status.applied_index, revision = node.store().current_revision(),
          "log replayed");

    let limits = Limits {
        max_request_bytes: config.max_request_bytes as usize,
        max_txn_ops: config.max_txn_ops as usize,
        quota_backend_bytes: config.quota_backend_bytes,
    };
    let core = Arc::new(
        Core::new(
            node,
            cluster_id,
            member_id,
            limits,
            db,
            config.data_dir.join("tmp"),
        )
        .with_watch_progress_interval(config.watch_progress_notify_interval)
        .with_max_watchers_per_stream(config.max_watchers_per_stream as usize),
    );
    let decode_limit = limits.max_request_bytes + GRPC_OVERHEAD_BYTES;

    // Publish this member's name and client URLs in the membership (as etcd publishes its
    // attributes), in the background: it needs the leader, and serving must not wait for it.
    {
        let core = core.clone();
        let me = Node {
            name: config.name.clone(),
            peer_urls: config.advertise_peer_urls.clone(),
            client_urls: config.advertise_client_urls.clone(),
        };
        tokio::spawn(async move { core.node.publish(me).await });
    }

    crate::api::health::describe_member(&core);
    let expiry = spawn_expiry(core.clone());
    let alarm_raiser = spawn_alarm_raiser(core.clone());
    let (config_tx, config_rx) = tokio::sync::watch::channel(server_config);
    let mut client_live = Vec::new();
    for addr in &config.listen_client {
        let incoming = listen(
            addr,
            &config_rx,
            &cluster,
            "client",
            config.max_connections as usize,
        )
        .await?;
        client_live.push(incoming.live());
        let kv = pb::kv_server::KvServer::new(KvService::new(core.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(usize::MAX);
        let maintenance =
            pb::maintenance_server::MaintenanceServer::new(MaintenanceService::new(core.clone()))
                .max_decoding_message_size(decode_limit)
                .max_encoding_message_size(usize::MAX);
        let cluster_svc = pb::cluster_server::ClusterServer::new(ClusterService::new(core.clone()));
        let watch = pb::watch_server::WatchServer::new(WatchService::new(core.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(usize::MAX);
        let lease = pb::lease_server::LeaseServer::new(LeaseService::new(core.clone()));
        // Dead or silent clients are dropped by HTTP/2 pings; one connection cannot open
        // unbounded concurrent requests.
        let routes = tonic::service::Routes::default()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                kv,
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                maintenance,
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                cluster_svc,
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                watch,
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                lease,
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                pb::auth_server::AuthServer::new(AuthService::new(core.clone())),
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                v3lockpb::lock_server::LockServer::new(LockService::new(core.clone())),
                require_identity,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                v3electionpb::election_server::ElectionServer::new(ElectionService::new(
                    core.clone(),
                )),
                require_identity,
            ));
        // etcd's /health, /livez, /readyz and /version beside gRPC (HTTP/1.1 or HTTP/2).
        let routes = tonic::service::Routes::from(
            routes
                .into_axum_router()
                .merge(crate::api::health::routes(core.clone())),
        );
        let router = Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(Some(config.max_concurrent_streams))
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .layer(crate::api::grpc_metrics::GrpcMetricsLayer)
            .add_routes(routes);
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        info!(addr = %addr, "serving client requests over mutual TLS");
    }
    for addr in &config.listen_metrics {
        let incoming = listen(
            addr,
            &config_rx,
            &cluster,
            "metrics",
            METRICS_MAX_CONNECTIONS,
        )
        .await?;
        client_live.push(incoming.live());
        let router = axum::Router::new().merge(crate::api::health::routes(core.clone()));
        let service = tonic::service::Routes::from(router);
        let server = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_routes(service);
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(server.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        info!(addr = %addr, "serving /metrics and health over mutual TLS");
    }
    info!(member = %config.name, "ready to serve client requests");
    super::notify::ready(&format!("serving client requests as {}", config.name));
    let watchdog = super::notify::spawn_watchdog();
    let reloader = tokio::spawn(
        super::reload::Reloader {
            name: config.name.clone(),
            cluster: cluster.clone(),
            client_files: files.clone(),
            peer_files: peer_files.clone(),
            client_config: config_tx,
            peer_config: peer_config_tx,
            peers: peer_context.clone(),
            client_live,
            peer_live,
        }
        .run(),
    );

    // As etcd: a member removed from the cluster stops (it would otherwise campaign forever).
    let removed = watch_removal(&core, &peer_context);
    tokio::select! {
        () = &mut shutdown => info!(member = %config.name, "shutting down"),
        () = removed => tracing::error!(
            member = %config.name,
            "this member was removed from the cluster; stopping. To rejoin, `member add` it again and start it with an empty --data-dir and --initial-cluster-state existing"
        ),
    }
    // Stop accepting, stop raft (which ends the peers' replication streams), then give open
    // connections a moment to finish their requests: peers keep their connections open
    // forever, so a graceful close alone would never complete.
    super::notify::stopping();
    hand_over_leadership(&core).await;
    let _ = stop_tx.send(true);
    if let Some(w) = watchdog {
        w.abort();
    }
    expiry.abort();
    alarm_raiser.abort();
    leader_changes.abort();
    reloader.abort();
    core.node.shutdown().await;
    for mut s in servers {
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut s).await.is_err() {
            s.abort();
        }
    }
    Ok(())
}

/// How long a stopping leader waits for another member to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// A stopping leader hands leadership to the voter whose log is most up to date (as etcd
/// does on SIGTERM), so the cluster does not wait an election timeout to elect another.
async fn hand_over_leadership(core: &Core) {
    let node = &core.node;
    if node.status().leader != Some(node.id()) {
        return;
    }
    let voters: Vec<u64> = node
        .members()
        .into_iter()
        .filter(|m| !m.is_learner && m.id != node.id())
        .map(|m| m.id)
        .collect();
    let matched = node.replication().unwrap_or_default();
    let Some(to) = voters
        .into_iter()
        .max_by_key(|id| matched.get(id).copied().unwrap_or(0))
    else {
        return;
    };
    match tokio::time::timeout(HANDOVER_WAIT, node.transfer_leader(to)).await {
        Ok(Ok(())) => info!(to = %format!("{to:x}"), "handed leadership over before stopping"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not hand leadership over before stopping"),
        Err(_) => tracing::warn!("leadership was not taken over in time; stopping anyway"),
    }
}

/// Open connections on a metrics listener at most: scrapers are few.
const METRICS_MAX_CONNECTIONS: usize = 64;
/// Open connections on the peer port at most.
const PEER_MAX_CONNECTIONS: usize = 1024;
/// How often an idle client connection is pinged, and how long the answer may take before the
/// connection is dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections may take to finish when the member stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
