//! The Lease service (grant, revoke, keep-alive, time to live, list) and the leader's expiry
//! loop.
//!
//! Grants and revokes go through raft like writes. Keep-alives and time-to-live questions go to
//! the leader, which alone keeps deadlines (see [`crate::lease`]); a follower forwards them.
//! The leader proposes a revoke for every lease past its deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authz::Requester;
use super::core::{Core, raft_status};
use super::kv::rejection_status;
use super::proto::etcdserverpb as pb;
use super::status::EtcdError;
use super::stream::BoxStream;
use crate::auth::Access;
use crate::lease::MAX_TTL;
use crate::raft::{LeaseAnswer, LeaseQuery, StateCommand, StateResult};

/// etcd's Lease service over a member's [`Core`].
#[derive(Clone)]
pub struct LeaseService {
    core: Arc<Core>,
}

impl LeaseService {
    /// The service.
    pub fn new(core: Arc<Core>) -> LeaseService {
        LeaseService { core }
    }
}

/// The shortest TTL a lease gets (etcd: 1.5 election timeouts, rounded up to whole seconds,
/// so that a lease cannot expire during a leader election).
pub fn min_ttl(election_timeout: Duration) -> i64 {
    let ms = election_timeout.as_millis() as i64 * 3 / 2;
    (ms + 999) / 1000
}

fn unexpected() -> Status {
    Status::internal("etcdserver: unexpected state machine answer")
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let r = request.into_inner();
        if r.ttl > MAX_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        if core.check_quota() {
            return Err(EtcdError::NoSpace.into());
        }
        let id = if r.id == 0 {
            core.lease_ids.next()
        } else {
            r.id
        };
        let ttl = r.ttl.max(min_ttl(core.node.election_timeout()));
        let cmd = StateCommand::LeaseGrant { id, ttl };
        match core.node.propose(&cmd).await.map_err(raft_status)? {
            StateResult::LeaseGranted { id, ttl } => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(core.header(core.node.store().current_revision())),
                id,
                ttl,
                error: String::new(),
            })),
            StateResult::Rejected(r) => Err(rejection_status(r)),
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let who = Requester::of(&request);
        let id = request.into_inner().id;
        // Revoking deletes the lease's keys: the caller must be allowed to delete each of them
        // (looked up only when auth is on).
        let checked = core.authorize(&who, |v, u| {
            if !v.enabled() {
                return Ok(());
            }
            core.node
                .store()
                .keys_with_lease(id)
                .iter()
                .try_for_each(|k| v.range(u, Access::Write, k, &[]))
        })?;
        let cmd = checked.guard(StateCommand::LeaseRevoke { id });
        match core.node.propose(&cmd).await.map_err(raft_status)? {
            StateResult::LeaseRevoked { revision } => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(core.header(revision)),
            })),
            StateResult::Rejected(r) => Err(rejection_status(r)),
            _ => Err(unexpected()),
        }
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.core.refuse_on_learner()?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                let reply = match core.node.lease(LeaseQuery::Renew(req.id)).await {
                    Ok(LeaseAnswer::Renewed(ttl)) => Ok(ttl),
                    // As etcd: an unknown or expired lease answers TTL 0, the stream goes on.
                    Ok(_) => Ok(0),
                    Err(e) => Err(raft_status(e)),
                };
                let failed = reply.is_err();
                let resp = reply.map(|ttl| pb::LeaseKeepAliveResponse {
                    header: Some(core.header(core.node.store().current_revision())),
                    id: req.id,
                    ttl,
                });
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let core = &self.core;
        core.refuse_on_learner()?;
        let who = Requester::of(&request);
        let r = request.into_inner();
        let answer = core
            .node
            .lease(LeaseQuery::TimeToLive(r.id))
            .await
            .map_err(raft_status)?;
        let store = core.node.store();
        let header = Some(core.header(store.current_revision()));
        Ok(Response::new(match answer {
            LeaseAnswer::TimeToLive { remaining, granted } => pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: remaining,
                granted_ttl: granted,
                keys: if r.keys {
                    // Listing the keys reads them.
                    let keys = store.keys_with_lease(r.id);
                    core.authorize(&who, |v, u| {
                        keys.iter()
                            .try_for_each(|k| v.range(u, Access::Read, k, &[]))
                    })?;
                    keys
                } else {
                    Vec::new()
                },
            },
            // As etcd: a lease that is gone answers TTL -1, not an error.
            _ => pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let core = &self.core;
        let leases = core
            .node
            .lessor()
            .ids()
            .into_iter()
            .map(|id| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(core.header(core.node.store().current_revision())),
            leases,
        }))
    }
}

/// How often the expiry loop looks at deadlines and leadership.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
/// Most revokes proposed per tick (etcd revokes at most 1000 leases a second).
const REVOKES_PER_TICK: usize = 100;

/// The loop that keeps lease deadlines on the leader: takes them over when this member
/// becomes leader, drops them when it stops leading, and proposes a revoke for each lease
/// past its deadline. Runs until the member stops (the returned task is aborted then).
pub fn spawn_expiry(core: Arc<Core>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lessor = core.node.lessor();
            match core.node.leading_term() {
                Some(term) => lessor.promote(term, core.node.election_timeout()),
                None => {
                    lessor.demote();
                    continue;
                }
            }
            for id in lessor.take_expired(REVOKES_PER_TICK) {
                let core = core.clone();
                tokio::spawn(async move {
                    let cmd = StateCommand::LeaseRevoke { id };
                    match core.node.propose(&cmd).await {
                        Ok(_) => {
                            tracing::debug!(lease = format!("{id:x}"), "expired lease revoked")
                        }
                        // Retried after a delay while this member still leads.
                        Err(e) => {
                            tracing::debug!(lease = format!("{id:x}"), error = %e, "revoking an expired lease failed")
                        }
                    }
                });
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(Duration::from_millis(1000)), 2);
        assert_eq!(min_ttl(Duration::from_millis(2000)), 3);
        assert_eq!(min_ttl(Duration::from_millis(100)), 1);
    }
}
