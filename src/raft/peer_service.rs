//! The server side of the peer transport: the `rampart.peer.v1.Peer` service on the peer port.
//!
//! The TLS acceptor admits only member certificates of this cluster's CA (and CRL). Here every
//! request is checked once more, against raft's own view: the message must come from this
//! cluster (cluster ID), its sender must be a member of the membership (or, before this member
//! has one, of the initial cluster), the certificate must name that very member, and a raft
//! message's vote must be the sender's own. Each refusal is logged with its reason.
//!
//! Snapshots are written to a file, checksummed and checked against the sender's vote and
//! this member's committed log before openraft sees them: openraft treats an inconsistent
//! snapshot as corruption and stops the process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{Stream, StreamExt};
use openraft::raft::{
    AppendEntriesRequest, ReadPolicy, StreamAppendResult, TransferLeaderRequest, VoteRequest,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::command;
use super::forward::{self, Forwarded, LeaseQuery, ReadIndexOutcome};
use super::forward_stream::Numbered;
use super::network::PeerContext;
use super::peer_proto::peer_server::Peer;
use super::peer_proto::{
    ClusterInfoRequest, ClusterInfoResponse, PeerRequest, PeerResponse, Sender, SnapshotChunk,
};
use super::snapshot::{self, SnapshotFile};
use super::state_machine::StateMachine;
use super::types::{Membership, Node, NodeId, TypeConfig, Vote};
use crate::lease::Lessor;
use crate::tls::{Caller, PeerInfo};

type Raft = openraft::Raft<TypeConfig, StateMachine>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// The peer service of one member.
pub struct PeerService {
    raft: Raft,
    context: Arc<PeerContext>,
    initial: BTreeMap<NodeId, Node>,
    snapshot_dir: PathBuf,
    lessor: Arc<Lessor>,
    election_timeout: std::time::Duration,
    received: AtomicU64,
}

fn encode_response<T: Serialize>(value: &T) -> Result<Response<PeerResponse>, Status> {
    Ok(Response::new(PeerResponse {
        body: command::encode(value),
    }))
}

fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, Status> {
    command::decode(body).ok_or_else(|| {
        Status::invalid_argument(format!(
            "undecodable {what}; are both members the same rampart release?"
        ))
    })
}

fn stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

impl PeerService {
    /// The service for `raft`; `initial` is the initial cluster (id → member), consulted only
    /// until this member knows a membership.
    pub fn new(
        raft: Raft,
        context: Arc<PeerContext>,
        initial: BTreeMap<NodeId, Node>,
        snapshot_dir: PathBuf,
        lessor: Arc<Lessor>,
        election_timeout: std::time::Duration,
    ) -> PeerService {
        PeerService {
            raft,
            context,
            initial,
            snapshot_dir,
            lessor,
            election_timeout,
            received: AtomicU64::new(0),
        }
    }

    fn membership(&self) -> Membership {
        use openraft::rt::WatchReceiver;
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone()
    }

    /// Refuses a request unless it comes from the member it claims to come from; returns the
    /// sender's member ID.
    fn authenticate(&self, info: Option<&PeerInfo>, from: Option<&Sender>) -> Result<u64, Status> {
        let refuse = |reason: String| {
            tracing::warn!(
                remote = %info.map_or("unknown".to_owned(), |p| p.remote_addr.to_string()),
                reason = %reason,
                "peer request refused"
            );
            Status::permission_denied(reason)
        };
        let name = match info.and_then(|p| p.caller.as_ref()) {
            Some(Caller::Member(name)) => name,
            Some(other) => {
                return Err(refuse(format!(
                    "{other} is not a member; the peer port admits only member certificates"
                )));
            }
            None => return Err(refuse("the certificate names no member".into())),
        };
        let from =
            from.ok_or_else(|| refuse(format!("member {name} sent a message without a sender")))?;
        if from.cluster_id != self.context.cluster_id {
            let reason = format!(
                "member {name} belongs to cluster {:x}, this is cluster {:x}",
                from.cluster_id, self.context.cluster_id
            );
            tracing::warn!(reason = %reason, "peer request refused");
            return Err(Status::failed_precondition(reason));
        }
        let id = from.member_id;
        let membership = self.membership();
        let known: BTreeMap<NodeId, String> = if membership.nodes().next().is_some() {
            membership
                .nodes()
                .map(|(id, n)| (*id, n.name.clone()))
                .collect()
        } else {
            self.initial
                .iter()
                .map(|(id, n)| (*id, n.name.clone()))
                .collect()
        };
        match known.get(&id) {
            None => Err(refuse(format!(
                "member {name} (id {id:x}) is not in the membership of cluster {:x}",
                self.context.cluster_id
            ))),
            Some(claimed) if claimed.is_empty() => {
                // A member added but not yet started has no name yet: accept it unless the
                // certificate is that of another, named member.
                match known.iter().find(|(other, n)| **other != id && *n == name) {
                    Some((other, _)) => Err(refuse(format!(
                        "the certificate of member {name} (id {other:x}) was presented for member id {id:x}"
                    ))),
                    None => Ok(id),
                }
            }
            Some(claimed) if claimed != name => Err(refuse(format!(
                "the certificate of member {name} was presented for member {claimed} (id {id:x})"
            ))),
            Some(_) => Ok(id),
        }
    }

    fn check_vote_is_sender(&self, vote: &Vote, sender: u64, what: &str) -> Result<(), Status> {
        let claimed = vote.leader_id.voted_for;
        if claimed != sender {
            let reason =
                format!("member {sender:x} sent a {what} in the name of member {claimed:x}");
            tracing::warn!(reason = %reason, "peer request refused");
            return Err(Status::permission_denied(reason));
        }
        Ok(())
    }

    /// Refuses a snapshot openraft would treat as corruption (see the module docs).
    fn check_snapshot(&self, vote: &Vote, meta: &SnapshotMeta) -> Result<(), Status> {
        use openraft::rt::WatchReceiver;
        let Some(last) = meta.last_log_id else {
            return Err(Status::invalid_argument("snapshot without a last log id"));
        };
        if last.leader_id.term > vote.leader_id.term {
            return Err(Status::invalid_argument(format!(
                "snapshot ends at term {} beyond the sender's term {}",
                last.leader_id.term, vote.leader_id.term
            )));
        }
        let committed = self.raft.metrics().borrow_watched().local_committed;
        if let Some(committed) = committed
            && last > committed
            && last.index <= committed.index
        {
            return Err(Status::failed_precondition(format!(
                "snapshot at {last} contradicts this member's committed log at {committed}"
            )));
        }
        Ok(())
    }

    async fn receive_snapshot(
        &self,
        first: SnapshotChunk,
        mut rest: Streaming<SnapshotChunk>,
    ) -> Result<
        (
            Vote,
            SnapshotMeta,
            openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        ),
        Status,
    > {
        let (vote, meta): (Vote, SnapshotMeta) = decode_body(&first.meta, "snapshot metadata")?;
        let n = self.received.fetch_add(1, Ordering::Relaxed);
        tokio::fs::create_dir_all(&self.snapshot_dir)
            .await
            .map_err(|e| Status::internal(format!("snapshot directory: {e}")))?;
        let tmp = self.snapshot_dir.join(format!(".receiving-{n}"));
        let cleanup = |e: String| {
            let _ = std::fs::remove_file(&tmp);
            Status::internal(e)
        };
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| cleanup(format!("creating {}: {e}", tmp.display())))?;
        let mut offset = 0u64;
        let mut done = first.done;
        while !done {
            let chunk = match rest.next().await {
                Some(Ok(c)) => c,
                Some(Err(status)) => {
                    return Err(cleanup(format!("snapshot stream failed: {status}")));
                }
                None => {
                    return Err(cleanup(
                        "snapshot stream ended before its last chunk".into(),
                    ));
                }
            };
            if chunk.offset != offset {
                return Err(cleanup(format!(
                    "snapshot chunk at offset {} where {offset} was expected",
                    chunk.offset
                )));
            }
            file.write_all(&chunk.data)
                .await
                .map_err(|e| cleanup(format!("writing snapshot: {e}")))?;
            offset += chunk.data.len() as u64;
            done = chunk.done;
        }
        file.sync_all()
            .await
            .map_err(|e| cleanup(format!("syncing snapshot: {e}")))?;
        drop(file);
        let dir = self.snapshot_dir.clone();
        let path = tmp.clone();
        let adopted = tokio::task::spawn_blocking(move || snapshot::adopt(&dir, &path))
            .await
            .map_err(|e| cleanup(e.to_string()))?
            .map_err(|e| Status::invalid_argument(format!("received snapshot refused: {e}")))?;
        if adopted.meta != meta {
            let _ = std::fs::remove_file(&adopted.snapshot.path);
            return Err(Status::invalid_argument(
                "the snapshot's content does not match the metadata it was sent with",
            ));
        }
        Ok((vote, meta, adopted))
    }
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Peer for Arc<PeerService> {
    async fn vote(&self, request: Request<PeerRequest>) -> Result<Response<PeerResponse>, Status> {
        let sender =
            self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let rpc: VoteRequest<TypeConfig> = decode_body(&request.get_ref().body, "vote request")?;
        self.check_vote_is_sender(&rpc.vote, sender, "vote request")?;
        let resp = self.raft.vote(rpc).await.map_err(stopped)?;
        encode_response(&resp)
    }

    async fn pre_vote(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerResponse>, Status> {
        let sender =
            self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let rpc: VoteRequest<TypeConfig> =
            decode_body(&request.get_ref().body, "pre-vote request")?;
        self.check_vote_is_sender(&rpc.vote, sender, "pre-vote request")?;
        let resp = self.raft.pre_vote(rpc).await.map_err(stopped)?;
        encode_response(&resp)
    }

    async fn append(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerResponse>, Status> {
        let sender =
            self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode_body(&request.get_ref().body, "append request")?;
        self.check_vote_is_sender(&rpc.vote, sender, "append request")?;
        let resp = self.raft.append_entries(rpc).await.map_err(stopped)?;
        encode_response(&resp)
    }

    type AppendStreamStream = BoxedStream<PeerResponse>;

    async fn append_stream(
        &self,
        request: Request<Streaming<PeerRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        // The stream is authenticated by its metadata, before any message: the sender may
        // wait for the response headers before it sends. Every message must then name the same
        // sender and carry that sender's vote.
        let from = sender_from_metadata(request.metadata());
        let sender = self.authenticate(request.extensions().get(), from.as_ref())?;
        let incoming = request.into_inner();
        let cluster_id = self.context.cluster_id;
        // A bad message ends the input; the reason goes to the log (the response stream
        // carries only raft's answers).
        let rest = incoming.scan((), move |(), item| {
            let next = match item {
                Ok(m) => match (m.from, command::decode::<AppendEntriesRequest<TypeConfig>>(&m.body)) {
                    (Some(Sender { cluster_id: c, member_id }), Some(rpc))
                        if c == cluster_id
                            && member_id == sender
                            && rpc.vote.leader_id.voted_for == sender =>
                    {
                        Some(rpc)
                    }
                    _ => {
                        tracing::warn!(sender = %format!("{sender:x}"), "append stream refused: a message changed sender or is undecodable");
                        None
                    }
                },
                Err(_) => None,
            };
            futures_util::future::ready(next)
        });
        let output = self.raft.stream_append(rest).map(|item| match item {
            Ok(result) => Ok(PeerResponse {
                body: command::encode::<StreamAppendResult<TypeConfig>>(&result),
            }),
            Err(fatal) => Err(stopped(fatal)),
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<PeerResponse>, Status> {
        let info = request.extensions().get::<PeerInfo>().cloned();
        let mut chunks = request.into_inner();
        let first = match chunks.next().await {
            Some(Ok(c)) => c,
            Some(Err(status)) => return Err(status),
            None => return Err(Status::invalid_argument("empty snapshot stream")),
        };
        let sender = self.authenticate(info.as_ref(), first.from.as_ref())?;
        let (vote, meta): (Vote, SnapshotMeta) = decode_body(&first.meta, "snapshot metadata")?;
        self.check_vote_is_sender(&vote, sender, "snapshot")?;
        self.check_snapshot(&vote, &meta)?;
        let (vote, _, snapshot) = self.receive_snapshot(first, chunks).await?;
        tracing::info!(from = %format!("{sender:x}"), last = ?snapshot.meta.last_log_id, "installing a snapshot from the leader");
        let resp = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(stopped)?;
        encode_response(&resp)
    }

    async fn transfer_leader(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerResponse>, Status> {
        let sender =
            self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let rpc: TransferLeaderRequest<TypeConfig> =
            decode_body(&request.get_ref().body, "transfer-leader request")?;
        self.check_vote_is_sender(rpc.from_leader(), sender, "transfer-leader request")?;
        let resp = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(stopped)?;
        encode_response(&resp)
    }

    async fn propose(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerResponse>, Status> {
        let sender =
            self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let forwarded: Forwarded = decode_body(&request.get_ref().body, "forwarded request")?;
        // A member may publish only its own name: the one its certificate carries.
        if let Forwarded::SetNode { id, node } = &forwarded {
            let name = match request
                .extensions()
                .get::<PeerInfo>()
                .and_then(|p| p.caller.as_ref())
            {
                Some(Caller::Member(name)) => name.clone(),
                _ => String::new(),
            };
            if *id != sender || node.name != name {
                let reason = format!(
                    "member {name} (id {sender:x}) tried to set the attributes of member {id:x} ({})",
                    node.name
                );
                tracing::warn!(reason = %reason, "peer request refused");
                return Err(Status::permission_denied(reason));
            }
        }
        let outcome = forward::execute(&self.raft, forwarded).await;
        encode_response(&outcome)
    }

    type ProposeStreamStream = BoxedStream<PeerResponse>;

    async fn propose_stream(
        &self,
        request: Request<Streaming<PeerRequest>>,
    ) -> Result<Response<Self::ProposeStreamStream>, Status> {
        // Authenticated by its metadata, like the append stream; every message must then name
        // the same sender.
        let from = sender_from_metadata(request.metadata());
        let sender = self.authenticate(request.extensions().get(), from.as_ref())?;
        let mut incoming = request.into_inner();
        let cluster_id = self.context.cluster_id;
        let raft = self.raft.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            while let Ok(Some(m)) = incoming.message().await {
                let write = match (m.from, command::decode::<Numbered<Vec<u8>>>(&m.body)) {
                    (
                        Some(Sender {
                            cluster_id: c,
                            member_id,
                        }),
                        Some(w),
                    ) if c == cluster_id && member_id == sender => w,
                    _ => {
                        tracing::warn!(sender = %format!("{sender:x}"), "forwarding stream refused: a message changed sender or is undecodable");
                        break;
                    }
                };
                let (raft, tx) = (raft.clone(), tx.clone());
                // Each write runs on its own: raft batches concurrent proposals itself.
                tokio::spawn(async move {
                    let outcome = forward::execute(&raft, Forwarded::Write(write.item)).await;
                    let answer = PeerResponse {
                        body: command::encode(&Numbered {
                            seq: write.seq,
                            item: outcome,
                        }),
                    };
                    let _ = tx.send(Ok(answer)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn read_index(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerResponse>, Status> {
        self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let outcome = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => ReadIndexOutcome::Index(linearizer.read_log_id().index()),
            Err(openraft::error::RaftError::APIError(e)) => match e {
                openraft::error::LinearizableReadError::ForwardToLeader(f) => {
                    ReadIndexOutcome::NotLeader {
                        leader: f.leader_id,
                    }
                }
                _ => ReadIndexOutcome::NoQuorum,
            },
            Err(openraft::error::RaftError::Fatal(f)) => return Err(stopped(f)),
        };
        encode_response(&outcome)
    }

    async fn lease(&self, request: Request<PeerRequest>) -> Result<Response<PeerResponse>, Status> {
        self.authenticate(request.extensions().get(), request.get_ref().from.as_ref())?;
        let query: LeaseQuery = decode_body(&request.get_ref().body, "lease question")?;
        let answer = forward::answer_lease(&self.raft, &self.lessor, self.election_timeout, query);
        encode_response(&answer)
    }

    async fn cluster_info(
        &self,
        request: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        // A joining member does not know its member ID yet: only its certificate is checked.
        match request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.caller.as_ref())
        {
            Some(Caller::Member(_)) => {}
            _ => {
                return Err(Status::permission_denied(
                    "the peer port admits only member certificates",
                ));
            }
        }
        let members: BTreeMap<NodeId, (Node, bool)> = {
            let m = self.membership();
            let voters: std::collections::BTreeSet<NodeId> = m.voter_ids().collect();
            m.nodes()
                .map(|(id, n)| (*id, (n.clone(), voters.contains(id))))
                .collect()
        };
        let leader_id = {
            use openraft::rt::WatchReceiver;
            self.raft
                .metrics()
                .borrow_watched()
                .current_leader
                .unwrap_or(0)
        };
        Ok(Response::new(ClusterInfoResponse {
            cluster_id: self.context.cluster_id,
            member_id: self.context.member_id,
            members: command::encode(&members),
            leader_id,
        }))
    }
}

/// Decodes the membership a [`ClusterInfoResponse`] carries: member → (attributes, is voter).
pub fn decode_members(bytes: &[u8]) -> Option<BTreeMap<NodeId, (Node, bool)>> {
    command::decode(bytes)
}

/// Metadata key of the sender of a streaming request: `<cluster id hex>/<member id hex>`.
pub const SENDER_METADATA: &str = "rampart-sender";

/// The sender a streaming request's metadata names.
fn sender_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Sender> {
    let value = metadata.get(SENDER_METADATA)?.to_str().ok()?;
    let (cluster, member) = value.split_once('/')?;
    Some(Sender {
        cluster_id: u64::from_str_radix(cluster, 16).ok()?,
        member_id: u64::from_str_radix(member, 16).ok()?,
    })
}

/// The metadata value naming `sender` (see [`SENDER_METADATA`]).
pub fn sender_metadata(sender: &Sender) -> String {
    format!("{:x}/{:x}", sender.cluster_id, sender.member_id)
}
