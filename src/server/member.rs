//! Starting a member: TLS material, storage, raft, then the client port — in that order, so
//! the member serves only once it has replayed its log and knows a leader.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Server;
use tonic::{Request, Status};
use tracing::info;

use super::config::{ClusterState, MemberConfig};
use super::storage;
use crate::api::cluster::ClusterService;
use crate::api::core::{Core, Limits};
use crate::api::kv::KvService;
use crate::api::maintenance::MaintenanceService;
use crate::api::pending::{PendingAuth, PendingElection, PendingLease, PendingLock, PendingWatch};
use crate::api::proto::etcdserverpb as pb;
use crate::api::proto::{v3electionpb, v3lockpb};
use crate::pki::CertInfo;
use crate::raft::{Node, RaftNode, RaftSettings};
use crate::tls::{self, ClientPolicy, Material, PeerInfo, TlsFiles, TlsIncoming};

/// gRPC framing overhead allowed above --max-request-bytes before the transport refuses a
/// message outright (etcd allows the same 512 KiB); requests in between get etcd's
/// "request is too large".
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Why a member could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
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

/// The cluster ID and member ID, fixed at first start: a restarted member keeps them whatever
/// the flags now say, as etcd does.
fn stored_ids(db: &rocksdb::DB, config: &MemberConfig) -> Result<(u64, u64), ServeError> {
    let read = |key: &[u8]| -> Result<Option<u64>, ServeError> {
        let v = db
            .get(key)
            .map_err(|e| storage_error("reading member identity")(&e))?;
        Ok(v.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    };
    match (read(b"cluster_id")?, read(b"member_id")?) {
        (Some(cluster), Some(member)) => Ok((cluster, member)),
        _ => {
            db.put(b"cluster_id", config.cluster_id.to_be_bytes())
                .and_then(|_| db.put(b"member_id", config.member_id.to_be_bytes()))
                .map_err(|e| storage_error("writing member identity")(&e))?;
            Ok((config.cluster_id, config.member_id))
        }
    }
}

/// Runs a member until `shutdown` completes.
pub async fn serve(
    config: MemberConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if config.initial_cluster.len() > 1 {
        return Err(ServeError::Unsupported(format!(
            "--initial-cluster lists {} members, but this build runs single-member clusters only \
             (the peer transport is not built yet); list only {}",
            config.initial_cluster.len(),
            config.name
        )));
    }

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
    let cert_name = material.member_name(&cluster)?.to_owned();
    if cert_name != config.name {
        return Err(ServeError::Identity(format!(
            "{} is the certificate of member {cert_name}, not of {}; pass --name {cert_name} or this member's certificate",
            files.cert.display(),
            config.name
        )));
    }
    let server_config = tls::server_config(&material, ClientPolicy::AnyClient)?;

    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| storage_error(format!("creating {}", config.data_dir.display()))(&e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| storage_error(format!("securing {}", config.data_dir.display()))(&e))?;
    }
    let db_dir = config.data_dir.join("db");
    let db = tokio::task::spawn_blocking(move || storage::open(&db_dir))
        .await
        .map_err(|e| storage_error("opening the database")(&e))?
        .map_err(|e| {
            storage_error(format!(
                "opening the database in {}",
                config.data_dir.display()
            ))(&e)
        })?;
    let (cluster_id, member_id) = stored_ids(&db, &config)?;

    let members = BTreeMap::from([(
        member_id,
        Node {
            name: config.name.clone(),
            peer_urls: config.advertise_peer_urls.clone(),
            client_urls: config.advertise_client_urls.clone(),
        },
    )]);
    let node = RaftNode::start(
        member_id,
        db.clone(),
        &config.data_dir,
        members,
        config.initial_cluster_state == ClusterState::New,
        &RaftSettings::default(),
    )
    .await?;
    node.wait_for_leader(Duration::from_secs(30)).await?;
    // A linearizable barrier: everything committed before the restart is applied before the
    // first client request is served.
    node.linearize().await?;
    let status = node.status();
    info!(member = %config.name, id = %format!("{member_id:x}"), cluster = %format!("{cluster_id:x}"),
          term = status.term, applied = status.applied_index, revision = node.store().current_revision(),
          "log replayed");

    let limits = Limits {
        max_request_bytes: config.max_request_bytes as usize,
        max_txn_ops: config.max_txn_ops as usize,
        quota_backend_bytes: config.quota_backend_bytes,
    };
    let core = Arc::new(Core::new(
        node,
        cluster_id,
        member_id,
        limits,
        db,
        config.data_dir.join("tmp"),
    ));
    let decode_limit = limits.max_request_bytes + GRPC_OVERHEAD_BYTES;

    let (_config_tx, config_rx) = tokio::sync::watch::channel(server_config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for addr in &config.listen_client {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen {
                addr: *addr,
                source,
            })?;
        let incoming = TlsIncoming::new(listener, config_rx.clone(), cluster.clone());
        let kv = pb::kv_server::KvServer::new(KvService::new(core.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(usize::MAX);
        let maintenance =
            pb::maintenance_server::MaintenanceServer::new(MaintenanceService::new(core.clone()))
                .max_decoding_message_size(decode_limit)
                .max_encoding_message_size(usize::MAX);
        let cluster_svc = pb::cluster_server::ClusterServer::new(ClusterService::new(core.clone()));
        let router = Server::builder()
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
            .add_service(pb::watch_server::WatchServer::new(PendingWatch))
            .add_service(pb::lease_server::LeaseServer::new(PendingLease))
            .add_service(pb::auth_server::AuthServer::new(PendingAuth))
            .add_service(v3lockpb::lock_server::LockServer::new(PendingLock))
            .add_service(v3electionpb::election_server::ElectionServer::new(
                PendingElection,
            ));
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        info!(addr = %addr, "serving client requests over mutual TLS");
    }
    info!(member = %config.name, "ready to serve client requests");

    shutdown.await;
    info!(member = %config.name, "shutting down");
    let _ = stop_tx.send(true);
    for s in servers {
        let _ = s.await;
    }
    core.node.shutdown().await;
    Ok(())
}
