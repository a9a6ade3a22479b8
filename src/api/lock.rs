//! The v3lock Lock service: a distributed mutex on a lease, with etcd's semantics.
//!
//! Lock puts `<name>/<lease hex>` (attached to the caller's lease) unless it exists, then waits
//! until every older key under `<name>/` is gone; the key is the lock. Unlock deletes it, and
//! so does the lease's expiry. A caller that goes away while waiting leaves no key behind.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::authz::Requester;
use super::core::{Core, raft_status};
use super::kv::rejection_status;
use super::proto::v3lockpb as pb;
use super::recipes::{self, contender_key, created_at, prefix_of};
use crate::auth::Access;
use crate::mvcc::{DeleteRangeRequest, Op, RangeRequest, TxnRequest};
use crate::raft::{StateCommand, StateResult};

/// etcd's message when the lock key vanished while waiting (the lease expired).
const SESSION_EXPIRED: &str = "mutex: session is expired";

/// etcd's Lock service over a member's [`Core`].
#[derive(Clone)]
pub struct LockService {
    core: Arc<Core>,
}

impl LockService {
    /// The service.
    pub fn new(core: Arc<Core>) -> LockService {
        LockService { core }
    }
}

/// Deletes `key` (when `rev` is its create revision) if dropped while armed: a Lock or
/// Campaign whose caller went away must not leave its key to block the others.
pub(crate) struct ReleaseOnDrop {
    core: Arc<Core>,
    key: Vec<u8>,
    rev: i64,
    armed: bool,
}

impl ReleaseOnDrop {
    pub(crate) fn new(core: Arc<Core>, key: Vec<u8>, rev: i64) -> Self {
        ReleaseOnDrop {
            core,
            key,
            rev,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (core, key, rev) = (self.core.clone(), std::mem::take(&mut self.key), self.rev);
        tokio::spawn(async move {
            let req = TxnRequest {
                compare: vec![created_at(&key, rev)],
                success: vec![Op::DeleteRange(DeleteRangeRequest::key(key.clone()))],
                failure: vec![],
            };
            if let Err(e) = recipes::txn(&core, req).await {
                tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e, "releasing an abandoned lock or campaign key failed; its lease will release it");
            }
        });
    }
}

#[tonic::async_trait]
impl pb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let core = &self.core;
        let who = Requester::of(&request);
        let r = request.into_inner();
        let key = contender_key(&r.name, r.lease);
        let prefix = prefix_of(&r.name);
        recipes::authorize_prefix(core, &who, &prefix, true)?;
        // Join the queue (or find our key from an earlier call), and see who holds the lock.
        let joined = recipes::join(
            core,
            (&key, &prefix),
            r.lease,
            Vec::new(),
            true,
            Status::new(Code::Unknown, SESSION_EXPIRED),
        )
        .await?;
        let (my_rev, owner) = (joined.rev, joined.oldest);
        if owner.is_none() || owner == Some(my_rev) {
            return Ok(Response::new(pb::LockResponse {
                header: Some(core.header(joined.revision)),
                key,
            }));
        }
        let guard = ReleaseOnDrop::new(core.clone(), key.clone(), my_rev);
        recipes::wait_for_older_to_go(core, &prefix, my_rev - 1).await?;
        // The lease may have expired while waiting: then the key is gone, and so is the lock.
        core.node.linearize().await.map_err(raft_status)?;
        let store = core.node.store();
        let mine = store
            .range(&RangeRequest::key(key.clone()))
            .map_err(super::kv::mvcc_status)?;
        if mine.kvs.is_empty() {
            guard.disarm();
            return Err(Status::new(Code::Unknown, SESSION_EXPIRED));
        }
        guard.disarm();
        Ok(Response::new(pb::LockResponse {
            header: Some(core.header(mine.revision)),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let who = Requester::of(&request);
        let key = request.into_inner().key;
        let checked = core.authorize(&who, |v, u| v.range(u, Access::Write, &key, &[]))?;
        let cmd = checked.guard(StateCommand::DeleteRange(DeleteRangeRequest::key(key)));
        match core.node.propose(&cmd).await.map_err(raft_status)? {
            StateResult::DeleteRange(r) => Ok(Response::new(pb::UnlockResponse {
                header: Some(core.header(r.revision)),
            })),
            StateResult::Rejected(r) => Err(rejection_status(r)),
            _ => Err(Status::internal(
                "etcdserver: unexpected state machine answer",
            )),
        }
    }
}
