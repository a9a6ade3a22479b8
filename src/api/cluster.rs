//! The Cluster service: MemberList from the raft membership; changes come with multi-member
//! clusters.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::core::Core;
use super::proto::etcdserverpb as pb;
use super::status::not_yet;

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
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(not_yet("membership changes (MemberAdd)"))
    }

    async fn member_remove(
        &self,
        _r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(not_yet("membership changes (MemberRemove)"))
    }

    async fn member_update(
        &self,
        _r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(not_yet("membership changes (MemberUpdate)"))
    }

    async fn member_promote(
        &self,
        _r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(not_yet("membership changes (MemberPromote)"))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.core
                .node
                .linearize()
                .await
                .map_err(super::core::raft_status)?;
        }
        let members = self
            .core
            .node
            .members()
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name,
                peer_ur_ls: m.peer_urls,
                client_ur_ls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect();
        let revision = self.core.node.store().current_revision();
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.core.header(revision)),
            members,
        }))
    }
}
