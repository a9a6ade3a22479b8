//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::authz::Requester;
use super::convert;
use super::core::{Core, raft_status};
use super::proto::etcdserverpb as pb;
use super::status::EtcdError;
use crate::auth::Access;
use crate::mvcc::{self, MvccError};
use crate::raft::{Rejection, StateCommand, StateResult};

/// etcd's KV service over a member's [`Core`].
#[derive(Clone)]
pub struct KvService {
    core: Arc<Core>,
}

impl KvService {
    /// The service.
    pub fn new(core: Arc<Core>) -> KvService {
        KvService { core }
    }
}

/// A store error on the read path as etcd reports it.
pub fn mvcc_status(e: MvccError) -> Status {
    match e {
        MvccError::Compacted { .. } => EtcdError::Compacted.into(),
        MvccError::FutureRevision { .. } => EtcdError::FutureRev.into(),
        MvccError::KeyNotFound => EtcdError::KeyNotFound.into(),
        MvccError::DuplicateKey => EtcdError::DuplicateKey.into(),
        MvccError::LeaseNotFound(_) => EtcdError::LeaseNotFound.into(),
        other => {
            tracing::error!(error = %other, "storage error on a read");
            Status::internal("etcdserver: storage error")
        }
    }
}

/// A deterministic refusal of the state machine as etcd reports it.
pub fn rejection_status(r: Rejection) -> Status {
    match r {
        Rejection::KeyNotFound => EtcdError::KeyNotFound.into(),
        Rejection::Compacted => EtcdError::Compacted.into(),
        Rejection::FutureRevision => EtcdError::FutureRev.into(),
        Rejection::DuplicateKey => EtcdError::DuplicateKey.into(),
        Rejection::LeaseNotFound => EtcdError::LeaseNotFound.into(),
        Rejection::LeaseExists => EtcdError::LeaseExists.into(),
        Rejection::Undecodable => EtcdError::Corrupt.into(),
        Rejection::AuthOldRevision => {
            super::authz::auth_status(crate::auth::AuthError::OldRevision)
        }
    }
}

fn txn_has_put(txn: &mvcc::TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        mvcc::Op::Put(_) => true,
        mvcc::Op::Txn(t) => txn_has_put(t),
        _ => false,
    })
}

impl KvService {
    async fn propose(&self, cmd: StateCommand) -> Result<StateResult, Status> {
        self.core.refuse_on_learner()?;
        match self.core.node.propose(&cmd).await.map_err(raft_status)? {
            StateResult::Rejected(r) => Err(rejection_status(r)),
            other => Ok(other),
        }
    }

    /// Refuses writes that add data while NOSPACE is raised, as etcd's quota does.
    fn check_space(&self) -> Result<(), Status> {
        if self.core.check_quota() {
            return Err(EtcdError::NoSpace.into());
        }
        Ok(())
    }
}

fn unexpected() -> Status {
    Status::internal("etcdserver: unexpected state machine answer")
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let who = Requester::of(&request);
        let req = request.into_inner();
        self.core.check_size(&req)?;
        let domain = convert::range_request(&req)?;
        if !req.serializable {
            self.core.refuse_on_learner()?;
            self.core.node.linearize().await.map_err(raft_status)?;
        }
        // Checked after the read index: a linearizable read sees permissions at least as new
        // as the data.
        self.core.authorize(&who, |v, u| {
            v.range(u, Access::Read, &domain.key, &domain.range_end)
        })?;
        // Reads come from the in-memory index and RocksDB's block cache: short enough to run on
        // the runtime thread rather than pay a thread hand-off per request.
        let result = self.core.node.store().range(&domain).map_err(mvcc_status)?;
        crate::metrics::get().mvcc_range.inc();
        let header = self.core.header(result.revision);
        Ok(Response::new(convert::range_response(result, header)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let who = Requester::of(&request);
        let req = request.into_inner();
        self.core.check_size(&req)?;
        let domain = convert::put_request(&req)?;
        let checked = self.core.authorize(&who, |v, u| v.put(u, &domain))?;
        self.check_space()?;
        match self
            .propose(checked.guard(StateCommand::Put(domain)))
            .await?
        {
            StateResult::Put(r) => {
                let header = self.core.header(r.revision);
                Ok(Response::new(convert::put_response(r, header)))
            }
            _ => Err(unexpected()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let who = Requester::of(&request);
        let req = request.into_inner();
        self.core.check_size(&req)?;
        let domain = convert::delete_request(&req)?;
        let checked = self.core.authorize(&who, |v, u| v.delete(u, &domain))?;
        match self
            .propose(checked.guard(StateCommand::DeleteRange(domain)))
            .await?
        {
            StateResult::DeleteRange(r) => {
                let header = self.core.header(r.revision);
                Ok(Response::new(convert::delete_response(r, header)))
            }
            _ => Err(unexpected()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let who = Requester::of(&request);
        let req = request.into_inner();
        self.core.check_size(&req)?;
        let domain = convert::txn_request(&req)?;
        if mvcc::txn_exceeds_max_ops(&domain, self.core.limits.max_txn_ops) {
            return Err(EtcdError::TooManyOps.into());
        }
        mvcc::check_txn_duplicates(&domain).map_err(mvcc_status)?;
        if mvcc::is_txn_read_only(&domain) {
            // As etcd: a read-only transaction is a linearizable read, not a proposal.
            self.core.refuse_on_learner()?;
            self.core.node.linearize().await.map_err(raft_status)?;
            self.core.authorize(&who, |v, u| v.txn(u, &domain))?;
            let result = self
                .core
                .node
                .store()
                .read_txn(&domain)
                .map_err(mvcc_status)?;
            let header = self.core.header(result.revision);
            return Ok(Response::new(convert::txn_response(result, header)));
        }
        let checked = self.core.authorize(&who, |v, u| v.txn(u, &domain))?;
        if txn_has_put(&domain) {
            self.check_space()?;
        }
        match self
            .propose(checked.guard(StateCommand::Txn(domain)))
            .await?
        {
            StateResult::Txn(r) => {
                let header = self.core.header(r.revision);
                Ok(Response::new(convert::txn_response(r, header)))
            }
            _ => Err(unexpected()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        // Compaction destroys history every user may depend on: root only (with auth on).
        let checked = self.core.authorize_admin(&Requester::of(&request))?;
        let req = request.into_inner();
        match self
            .propose(checked.guard(StateCommand::Compact {
                revision: req.revision,
            }))
            .await?
        {
            StateResult::Compacted { revision } => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.core.header(revision)),
            })),
            _ => Err(unexpected()),
        }
    }
}
