//! The Cluster service: the membership as etcd shows it, and changes to it (add, promote,
//! remove, update), carried out by the leader through raft.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::authz::Requester;
use super::core::{Core, raft_status};
use super::proto::etcdserverpb as pb;
use super::status::EtcdError;
use crate::raft::{MemberInfo, Node, NodeId};
use crate::tls::https_endpoint;

/// etcd's Cluster service over a member's [`Core`].
#[derive(Clone)]
pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    /// The service.
    pub fn new(core: Arc<Core>) -> ClusterService {
        ClusterService { core }
    }

    fn members(&self) -> Vec<MemberInfo> {
        self.core.node.members()
    }

    fn member(&self, id: NodeId) -> Result<MemberInfo, Status> {
        self.members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| EtcdError::MemberNotFound.into())
    }

    fn header(&self) -> pb::ResponseHeader {
        self.core.header(self.core.node.store().current_revision())
    }

    fn member_list(&self) -> Vec<pb::Member> {
        self.members().into_iter().map(to_pb).collect()
    }
}

fn to_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

/// Peer URLs must be `https://HOST:PORT`: every port is mutual TLS.
fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty()
        || urls
            .iter()
            .any(|u| !u.starts_with("https://") || https_endpoint(u).is_err())
    {
        return Err(EtcdError::MemberBadUrls.into());
    }
    Ok(())
}

fn sorted(urls: &[String]) -> Vec<String> {
    let mut v = urls.to_vec();
    v.sort();
    v
}

/// A fresh member ID: non-zero and unused (etcd also mixes in the time, so that a re-added
/// member never reuses an old ID).
fn new_member_id(taken: &[MemberInfo]) -> u64 {
    loop {
        let mut b = [0u8; 8];
        rand::fill(&mut b);
        let id = u64::from_be_bytes(b);
        if id != 0 && !taken.iter().any(|m| m.id == id) {
            return id;
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        self.core.refuse_on_learner()?;
        let req = request.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        let members = self.members();
        let wanted = sorted(&req.peer_ur_ls);
        if members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| wanted.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists.into());
        }
        let id = new_member_id(&members);
        let node = Node {
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        // A voter joins as a learner first, then becomes a voter in the same call, as raft
        // requires; until it has started it counts against the quorum, as in etcd.
        self.core
            .node
            .add_learner(id, node, !req.is_learner)
            .await
            .map_err(raft_status)?;
        if !req.is_learner {
            self.core
                .node
                .promote_unchecked(id)
                .await
                .map_err(raft_status)?;
        }
        let member = pb::Member {
            id,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.header()),
            member: Some(member),
            members: self.member_list(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        self.core.refuse_on_learner()?;
        let id = request.into_inner().id;
        self.member(id)?;
        self.core.node.remove(id).await.map_err(raft_status)?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.header()),
            members: self.member_list(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        self.core.refuse_on_learner()?;
        let req = request.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        let current = self.member(req.id)?;
        let wanted = sorted(&req.peer_ur_ls);
        if self
            .members()
            .iter()
            .any(|m| m.id != req.id && m.peer_urls.iter().any(|u| wanted.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists.into());
        }
        let node = Node {
            name: current.name,
            peer_urls: req.peer_ur_ls,
            client_urls: current.client_urls,
        };
        self.core
            .node
            .update_member(req.id, node)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.header()),
            members: self.member_list(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.core.authorize_admin(&Requester::of(&request))?;
        self.core.refuse_on_learner()?;
        let id = request.into_inner().id;
        if !self.member(id)?.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        self.core.node.promote(id).await.map_err(raft_status)?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.header()),
            members: self.member_list(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.core.refuse_on_learner()?;
            self.core.node.linearize().await.map_err(raft_status)?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: self.member_list(),
        }))
    }
}
