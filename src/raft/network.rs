//! The client side of the peer transport: how this member reaches the others.
//!
//! One HTTP/2 connection (a tonic channel) per peer URL, dialed with this member's certificate
//! and refused unless the server presents the certificate of the member it should be. Every
//! call has a deadline (openraft's TTLs); connection failures and deadlines surface as
//! `Unreachable`, so openraft backs off instead of spinning on a dead peer. AppendEntries is
//! pipelined on one bidirectional stream.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyerror::AnyError;
use futures_util::{StreamExt, stream};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use rustls::ClientConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use super::command;
use super::peer_proto::peer_client::PeerClient;
use super::peer_proto::{PeerRequest, Sender, SnapshotChunk};
use super::snapshot::SnapshotFile;
use super::types::{Node, NodeId, TypeConfig, Vote};
use crate::tls::{TlsDialer, https_endpoint};

/// Largest peer message either side accepts. AppendEntries carries at most
/// [`MAX_PAYLOAD_ENTRIES`] entries of at most a client request each (etcd's 1.5 MiB
/// `--max-request-bytes` plus framing), so this bounds memory per message on purpose.
pub const MAX_PEER_MESSAGE_BYTES: usize = 160 * 1024 * 1024;
/// Entries per AppendEntries (openraft's `max_payload_entries`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Snapshot data per chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// The least time a peer gets to answer a raft message. openraft derives its deadlines from
/// the heartbeat interval; an fsync under load can take longer than that, and a slow answer
/// must not count as an unreachable peer (that would back replication off).
pub const MIN_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a receiver may take to check and install a snapshot once it has all of it.
pub const SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of a forwarded proposal or read-index request.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);

/// What every peer connection of this member shares: who we are and how we dial.
pub struct PeerContext {
    /// The cluster ID every message carries.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
    /// The trust domain (cluster name) of member certificates.
    pub trust_domain: String,
    tls: tokio::sync::watch::Sender<Arc<ClientConfig>>,
    /// Bumped when the TLS material changes: long-lived streams opened before then move to
    /// new connections at their next idle moment.
    generation: std::sync::atomic::AtomicU64,
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for PeerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerContext")
            .field("cluster_id", &format_args!("{:x}", self.cluster_id))
            .field("member_id", &format_args!("{:x}", self.member_id))
            .finish_non_exhaustive()
    }
}

/// Why a peer could not be reached or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The member has no usable peer URL.
    #[error("member {id:x} has no usable peer URL: {reason}")]
    NoUrl {
        /// The member.
        id: NodeId,
        /// Why.
        reason: String,
    },
    /// The call failed on the wire or the peer refused it.
    #[error("peer call to {id:x} failed: {status}")]
    Call {
        /// The member.
        id: NodeId,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The peer did not answer in time.
    #[error("peer {id:x} did not answer within {timeout:?}")]
    Timeout {
        /// The member.
        id: NodeId,
        /// The deadline.
        timeout: Duration,
    },
    /// The answer could not be decoded.
    #[error("peer {id:x} sent an undecodable {what}")]
    Undecodable {
        /// The member.
        id: NodeId,
        /// What was expected.
        what: &'static str,
    },
}

impl PeerContext {
    /// The context of member `member_id` of cluster `cluster_id`, dialing with `tls` (this
    /// member's client config, carrying its member certificate).
    pub fn new(
        cluster_id: u64,
        member_id: u64,
        trust_domain: String,
        tls: Arc<ClientConfig>,
    ) -> Arc<PeerContext> {
        Arc::new(PeerContext {
            cluster_id,
            member_id,
            trust_domain,
            tls: tokio::sync::watch::Sender::new(tls),
            generation: std::sync::atomic::AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
        })
    }

    /// Dials with `tls` from now on (reloaded certificates). Every call from now on uses a new
    /// connection that presents the new certificate; streams on the old connections move over
    /// when idle (see [`PeerContext::generation`]). So when the old material stops being
    /// trusted (the end of a CA rotation), no connection in use still depends on it.
    pub fn replace_tls(&self, tls: Arc<ClientConfig>) {
        self.tls.send_replace(tls);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How many times the TLS material was replaced: a stream opened under an older
    /// generation should end once nothing is in flight on it.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The `Sender` field of messages from this member.
    pub fn sender(&self) -> Sender {
        Sender {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
        }
    }

    /// A (cached, lazily connecting) channel to member `id` at `node`'s first peer URL.
    pub fn channel(&self, id: NodeId, node: &Node) -> Result<Channel, PeerError> {
        let url = node.peer_urls.first().ok_or_else(|| PeerError::NoUrl {
            id,
            reason: "the membership lists none".into(),
        })?;
        self.channel_to(
            id,
            url,
            (!node.name.is_empty()).then_some(node.name.as_str()),
        )
    }

    /// A (cached, lazily connecting) channel to `url`, which must be served by member `name`
    /// (any member of the cluster when `None`).
    pub fn channel_to(
        &self,
        id: NodeId,
        url: &str,
        name: Option<&str>,
    ) -> Result<Channel, PeerError> {
        let key = format!("{url}#{}", name.unwrap_or(""));
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let endpoint = https_endpoint(url)
            .map_err(|e| PeerError::NoUrl {
                id,
                reason: e.to_string(),
            })?
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let dialer = TlsDialer::to_member_live(self.tls.subscribe(), &self.trust_domain, name);
        let channel = endpoint.connect_with_connector_lazy(dialer);
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// A gRPC client for the peer service over `channel`, with the peer message limits.
    pub fn client(channel: Channel) -> PeerClient<Channel> {
        PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    /// Sends a unary request with `body` to member `id` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        id: NodeId,
        node: &Node,
        kind: UnaryKind,
        body: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let mut client = Self::client(self.channel(id, node)?);
        let request = PeerRequest {
            from: Some(self.sender()),
            body: command::encode(body),
        };
        let call = async {
            match kind {
                UnaryKind::Vote => client.vote(request).await,
                UnaryKind::PreVote => client.pre_vote(request).await,
                UnaryKind::Append => client.append(request).await,
                UnaryKind::TransferLeader => client.transfer_leader(request).await,
                UnaryKind::Propose => client.propose(request).await,
                UnaryKind::ReadIndex => client.read_index(request).await,
                UnaryKind::Lease => client.lease(request).await,
            }
        };
        let response = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| PeerError::Timeout { id, timeout })?
            .map_err(|status| PeerError::Call {
                id,
                status: Box::new(status),
            })?;
        command::decode(&response.into_inner().body).ok_or(PeerError::Undecodable {
            id,
            what: kind.answer(),
        })
    }
}

/// The unary RPCs of the peer service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryKind {
    /// Raft RequestVote.
    Vote,
    /// Raft pre-vote.
    PreVote,
    /// One AppendEntries.
    Append,
    /// Leadership transfer.
    TransferLeader,
    /// A forwarded write.
    Propose,
    /// A read index.
    ReadIndex,
    /// A lease question for the leader.
    Lease,
}

impl UnaryKind {
    fn answer(self) -> &'static str {
        match self {
            UnaryKind::Vote | UnaryKind::PreVote => "vote response",
            UnaryKind::Append => "append response",
            UnaryKind::TransferLeader => "transfer-leader response",
            UnaryKind::Propose => "proposal outcome",
            UnaryKind::ReadIndex => "read index",
            UnaryKind::Lease => "lease answer",
        }
    }
}

/// openraft's factory of peer clients.
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    context: Arc<PeerContext>,
}

impl PeerNetwork {
    /// A factory over `context`.
    pub fn new(context: Arc<PeerContext>) -> PeerNetwork {
        PeerNetwork { context }
    }
}

/// openraft's client for one peer.
#[derive(Debug)]
pub struct PeerLink {
    target: NodeId,
    node: Node,
    context: Arc<PeerContext>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerLink {
            target,
            node: node.clone(),
            context: self.context.clone(),
        }
    }
}

fn unreachable(e: &PeerError) -> Unreachable<TypeConfig> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

/// A failed call as openraft classifies it: a peer we cannot reach (or that does not answer in
/// time) is backed off; anything else is retried.
fn rpc_error(e: PeerError) -> RPCError<TypeConfig> {
    match &e {
        PeerError::Timeout { .. } | PeerError::NoUrl { .. } => {
            RPCError::Unreachable(unreachable(&e))
        }
        PeerError::Call { status, .. }
            if matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Unauthenticated
                    | tonic::Code::DeadlineExceeded
            ) =>
        {
            RPCError::Unreachable(unreachable(&e))
        }
        _ => RPCError::Network(NetworkError::new(&AnyError::error(e.to_string()))),
    }
}

fn streaming_error(e: RPCError<TypeConfig>) -> StreamingError<TypeConfig> {
    match e {
        RPCError::Unreachable(u) => StreamingError::Unreachable(u),
        RPCError::Network(n) => StreamingError::Network(n),
        RPCError::Timeout(t) => StreamingError::Timeout(t),
        RPCError::RemoteError(r) => {
            StreamingError::Network(NetworkError::new(&AnyError::error(r.to_string())))
        }
    }
}

impl PeerLink {
    async fn unary<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: UnaryKind,
        body: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.context
            .call(
                self.target,
                &self.node,
                kind,
                body,
                option.hard_ttl().max(MIN_ANSWER_TIMEOUT),
            )
            .await
            .map_err(rpc_error)
    }

    /// Streams the snapshot file in chunks; returns the receiver's answer.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let err = |what: String| {
            rpc_error(PeerError::NoUrl {
                id: self.target,
                reason: what,
            })
        };
        let path = snapshot.snapshot.path.clone();
        let file = std::fs::File::open(&path)
            .map_err(|e| err(format!("cannot read snapshot {}: {e}", path.display())))?;
        let first = SnapshotChunk {
            from: Some(self.context.sender()),
            meta: command::encode(&(vote, snapshot.meta)),
            offset: 0,
            data: Vec::new(),
            done: false,
        };
        // Read the file on a blocking thread, one chunk at a time, as the stream is polled;
        // `progress` records when the transport last took a chunk, for the stall check below.
        let reader = std::io::BufReader::with_capacity(SNAPSHOT_CHUNK_BYTES, file);
        let progress = Arc::new(Mutex::new(tokio::time::Instant::now()));
        let touched = progress.clone();
        let chunks = stream::unfold((reader, 0u64, false), move |(mut reader, offset, done)| {
            let touched = touched.clone();
            async move {
                if done {
                    return None;
                }
                *touched.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                    let mut filled = 0;
                    while filled < buf.len() {
                        match reader.read(&mut buf[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    buf.truncate(filled);
                    Ok((reader, buf))
                })
                .await;
                match read {
                    Ok(Ok((reader, data))) => {
                        let last = data.len() < SNAPSHOT_CHUNK_BYTES;
                        if last {
                            // All sent: the receiver now checks and installs it, which may take
                            // a while for a large state.
                            *touched.lock().unwrap_or_else(|e| e.into_inner()) =
                                tokio::time::Instant::now() + SNAPSHOT_INSTALL_TIMEOUT;
                        }
                        let len = data.len() as u64;
                        let chunk = SnapshotChunk {
                            from: None,
                            meta: Vec::new(),
                            offset,
                            data,
                            done: last,
                        };
                        Some((chunk, (reader, offset + len, last)))
                    }
                    // A read error ends the stream without `done`: the receiver discards it.
                    _ => None,
                }
            }
        });
        let request = stream::iter([first]).chain(chunks);
        let mut client = PeerContext::client(
            self.context
                .channel(self.target, &self.node)
                .map_err(rpc_error)?,
        );
        // The transfer may take long, but it may not stall: fail once no chunk has been taken
        // for the RPC's TTL.
        let ttl = option.hard_ttl();
        let stalled = async {
            loop {
                tokio::time::sleep(ttl / 4).await;
                let last = *progress.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() > ttl {
                    return;
                }
            }
        };
        let sent = tokio::select! {
            sent = client.install_snapshot(request) => sent,
            () = stalled => {
                return Err(rpc_error(PeerError::Timeout { id: self.target, timeout: ttl }));
            }
        };
        let response = sent
            .map_err(|status| {
                rpc_error(PeerError::Call {
                    id: self.target,
                    status: Box::new(status),
                })
            })?
            .into_inner();
        command::decode(&response.body).ok_or_else(|| {
            rpc_error(PeerError::Undecodable {
                id: self.target,
                what: "snapshot response",
            })
        })
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(UnaryKind::Append, &rpc, &option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            let target = self.target;
            let from = self.context.sender();
            // Answers are awaited with a deadline only while requests are outstanding: an
            // idle stream is not a dead peer.
            let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sent = outstanding.clone();
            let requests = input.map(move |rpc| {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                PeerRequest {
                    from: Some(from),
                    body: command::encode(&rpc),
                }
            });
            let mut client = PeerContext::client(
                self.context
                    .channel(target, &self.node)
                    .map_err(rpc_error)?,
            );
            let ttl = option.soft_ttl().max(MIN_ANSWER_TIMEOUT);
            let call_error = move |status: tonic::Status| {
                rpc_error(PeerError::Call {
                    id: target,
                    status: Box::new(status),
                })
            };
            let mut request = tonic::Request::new(requests);
            if let Ok(value) = super::peer_service::sender_metadata(&from).parse() {
                request
                    .metadata_mut()
                    .insert(super::peer_service::SENDER_METADATA, value);
            }
            let responses = tokio::time::timeout(ttl, client.append_stream(request))
                .await
                .map_err(|_| {
                    rpc_error(PeerError::Timeout {
                        id: target,
                        timeout: ttl,
                    })
                })?
                .map_err(call_error)?
                .into_inner();
            // Each answer must come within the soft TTL; the first error ends the stream.
            let answers = stream::unfold(Some(responses), move |state| {
                let outstanding = outstanding.clone();
                async move {
                    let mut responses = state?;
                    let idle = || outstanding.load(std::sync::atomic::Ordering::Relaxed) == 0;
                    let next = loop {
                        match tokio::time::timeout(ttl, responses.next()).await {
                            Err(_) if idle() => {}
                            other => break other,
                        }
                    };
                    if let Ok(Some(Ok(_))) = &next {
                        outstanding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let item = match next {
                        Err(_) => Err(rpc_error(PeerError::Timeout {
                            id: target,
                            timeout: ttl,
                        })),
                        Ok(None) => return None,
                        Ok(Some(Err(status))) => Err(call_error(status)),
                        Ok(Some(Ok(r))) => command::decode::<StreamAppendResult<TypeConfig>>(
                            &r.body,
                        )
                        .ok_or_else(|| {
                            rpc_error(PeerError::Undecodable {
                                id: target,
                                what: "append response",
                            })
                        }),
                    };
                    let next = item.is_ok().then_some(responses);
                    Some((item, next))
                }
            });
            Ok(Box::pin(answers) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(UnaryKind::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(UnaryKind::PreVote, &rpc, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, &option) => sent.map_err(streaming_error),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(UnaryKind::TransferLeader, &req, &option).await
    }
}
