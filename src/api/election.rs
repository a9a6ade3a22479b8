//! The v3election Election service: leader election on a lease, with etcd's semantics.
//!
//! A candidate's key is `<name>/<lease hex>`, holding its proclaimed value; the oldest key under
//! `<name>/` is the leader. Campaign waits until it is the oldest; Proclaim rewrites the value
//! while still the leader; Resign deletes the key; Leader reads the oldest key; Observe streams
//! every value the leaders proclaim, in order.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::authz::Requester;
use super::core::Core;
use super::lock::ReleaseOnDrop;
use super::proto::v3electionpb as pb;
use super::recipes::{self, contender_key, created_at, oldest, prefix_of};
use super::stream::BoxStream;
use crate::auth::Access;
use crate::mvcc::{
    DeleteRangeRequest, EventKind, EventLimits, KeyValue, MvccError, Op, PutRequest, RangeRequest,
    TxnRequest,
};

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER: &str = "\"leader\" field must be provided";

/// etcd's Election service over a member's [`Core`].
#[derive(Clone)]
pub struct ElectionService {
    core: Arc<Core>,
}

impl ElectionService {
    /// The service.
    pub fn new(core: Arc<Core>) -> ElectionService {
        ElectionService { core }
    }
}

fn leader_kv(kv: KeyValue) -> super::proto::mvccpb::KeyValue {
    super::convert::key_value(kv)
}

/// Proclaim and Resign read (compare) and write the leader key.
fn authorize_leader_key(core: &Core, who: &Requester, key: &[u8]) -> Result<(), Status> {
    core.authorize(who, |v, u| {
        v.range(u, Access::Read, key, &[])?;
        v.range(u, Access::Write, key, &[])
    })
    .map(drop)
}

/// Rewrites the leader key's value, if `leader` still is the leader.
async fn proclaim(core: &Core, leader: &pb::LeaderKey, value: Vec<u8>) -> Result<i64, Status> {
    let req = TxnRequest {
        compare: vec![created_at(&leader.key, leader.rev)],
        success: vec![Op::Put(PutRequest {
            lease: leader.lease,
            ..PutRequest::new(leader.key.clone(), value)
        })],
        failure: vec![],
    };
    let res = recipes::txn(core, req).await?;
    if !res.succeeded {
        return Err(Status::new(Code::Unknown, NOT_LEADER));
    }
    Ok(res.revision)
}

#[tonic::async_trait]
impl pb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let core = &self.core;
        let who = Requester::of(&request);
        let r = request.into_inner();
        let key = contender_key(&r.name, r.lease);
        let prefix = prefix_of(&r.name);
        recipes::authorize_prefix(core, &who, &prefix, true)?;
        let joined = recipes::join(
            core,
            (&key, &prefix),
            r.lease,
            r.value.clone(),
            false,
            Status::new(Code::Unknown, NOT_LEADER),
        )
        .await?;
        let leader = |rev| pb::LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev,
            lease: r.lease,
        };
        let rev = joined.rev;
        // A campaign again with the same lease keeps its place in line and updates the value.
        if let Some(existing) = &joined.existing
            && existing.value != r.value
        {
            proclaim(core, &leader(rev), r.value.clone()).await?;
        }
        let guard = ReleaseOnDrop::new(core.clone(), key.clone(), rev);
        recipes::wait_for_older_to_go(core, &prefix, rev - 1).await?;
        guard.disarm();
        Ok(Response::new(pb::CampaignResponse {
            header: Some(core.header(joined.revision)),
            leader: Some(leader(rev)),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let who = Requester::of(&request);
        let r = request.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER))?;
        authorize_leader_key(&self.core, &who, &leader.key)?;
        let revision = proclaim(&self.core, &leader, r.value).await?;
        Ok(Response::new(pb::ProclaimResponse {
            header: Some(self.core.header(revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let who = Requester::of(&request);
        let name = request.into_inner().name;
        recipes::authorize_prefix(&self.core, &who, &prefix_of(&name), false)?;
        match oldest(&self.core, &prefix_of(&name)).await? {
            (Some(kv), revision) => Ok(Response::new(pb::LeaderResponse {
                header: Some(self.core.header(revision)),
                kv: Some(leader_kv(kv)),
            })),
            (None, _) => Err(Status::new(Code::Unknown, NO_LEADER)),
        }
    }

    type ObserveStream = BoxStream<pb::LeaderResponse>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let who = Requester::of(&request);
        let prefix = prefix_of(&request.into_inner().name);
        recipes::authorize_prefix(&self.core, &who, &prefix, false)?;
        let (tx, rx) = mpsc::channel(16);
        let core = self.core.clone();
        tokio::spawn(async move {
            if let Err(status) = observe(&core, &prefix, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let who = Requester::of(&request);
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::new(Code::Unknown, MISSING_LEADER))?;
        authorize_leader_key(&self.core, &who, &leader.key)?;
        // As etcd: resigning when no longer the leader is not an error.
        let req = TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![Op::DeleteRange(DeleteRangeRequest::key(leader.key.clone()))],
            failure: vec![],
        };
        let res = recipes::txn(&self.core, req).await?;
        Ok(Response::new(pb::ResignResponse {
            header: Some(self.core.header(res.revision)),
        }))
    }
}

type LeaderSender = mpsc::Sender<Result<pb::LeaderResponse, Status>>;

/// Sends the current leader, then every value it proclaims; when it goes, the next leader.
/// Ends when the client goes away.
async fn observe(core: &Arc<Core>, prefix: &[u8], tx: &LeaderSender) -> Result<(), Status> {
    let mut published = core.node.subscribe_revisions();
    let (mut leader, mut seen) = oldest(core, prefix).await?;
    loop {
        if let Some(kv) = &leader {
            let resp = pb::LeaderResponse {
                header: Some(core.header(seen)),
                kv: Some(leader_kv(kv.clone())),
            };
            if tx.send(Ok(resp)).await.is_err() {
                return Ok(());
            }
        }
        // Follow the history from `seen` until the leader proclaims, goes, or (when there is
        // none) someone campaigns.
        let next = loop {
            tokio::select! {
                changed = published.changed() => {
                    changed.map_err(|_| Status::from(super::status::EtcdError::Stopped))?;
                }
                () = tx.closed() => return Ok(()),
            }
            match follow(core, prefix, leader.as_ref(), seen) {
                Ok((Some(change), _)) => break change,
                Ok((None, through)) => seen = through,
                // History compacted under us: start over from the current state.
                Err(MvccError::Compacted { .. }) => break Change::Recheck,
                Err(e) => return Err(super::kv::mvcc_status(e)),
            }
        };
        match next {
            Change::Proclaimed(kv, at) => {
                leader = Some(kv);
                seen = at;
            }
            Change::Recheck => {
                let store = core.node.store();
                let req = RangeRequest {
                    limit: 1,
                    sort_order: crate::mvcc::SortOrder::Ascend,
                    sort_target: crate::mvcc::SortTarget::Create,
                    ..RangeRequest::prefix(prefix.to_vec())
                };
                let r = store.range(&req).map_err(super::kv::mvcc_status)?;
                leader = r.kvs.into_iter().next();
                seen = r.revision;
            }
        }
    }
}

enum Change {
    /// The leader wrote a new value (at this revision).
    Proclaimed(KeyValue, i64),
    /// The leader went, or a first candidate came: find the leader again.
    Recheck,
}

/// Looks through the history after `seen` for a change of leadership; returns it, or how far
/// it looked.
fn follow(
    core: &Core,
    prefix: &[u8],
    leader: Option<&KeyValue>,
    seen: i64,
) -> Result<(Option<Change>, i64), MvccError> {
    let store = core.node.store();
    let mut after = seen;
    loop {
        let batch = store.events_after(after, EventLimits::default())?;
        for e in &batch.events {
            match leader {
                Some(l) if e.kv.key == l.key => {
                    return Ok((
                        Some(match e.kind {
                            EventKind::Put => Change::Proclaimed(e.kv.clone(), e.revision()),
                            EventKind::Delete => Change::Recheck,
                        }),
                        e.revision(),
                    ));
                }
                None if e.kind == EventKind::Put && e.kv.key.starts_with(prefix) => {
                    return Ok((Some(Change::Recheck), e.revision()));
                }
                _ => {}
            }
        }
        if batch.through == after {
            return Ok((None, after));
        }
        after = batch.through;
    }
}
