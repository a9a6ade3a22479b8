//! The peer network openraft uses to reach other members.
//!
//! A single member has no peers, and a multi-member cluster is refused at configuration time
//! until the mutual-TLS peer transport lands; so every RPC here answers `Unreachable` with
//! that reason instead of pretending to deliver anything.

use std::future::Future;

use anyerror::AnyError;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::snapshot::SnapshotFile;
use super::types::{Node, NodeId, TypeConfig, Vote};

/// Creates [`NoPeers`] clients.
#[derive(Debug, Clone, Default)]
pub struct PeerNetwork;

/// A client for a peer this build cannot reach.
#[derive(Debug)]
pub struct NoPeers {
    target: NodeId,
}

fn unreachable(target: NodeId) -> Unreachable<TypeConfig> {
    Unreachable::new(&AnyError::error(format!(
        "member {target:x} is unreachable: this build has no peer transport (single-member clusters only)"
    )))
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = NoPeers;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Self::Network {
        NoPeers { target }
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeers {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable(self.target)))
    }
}
