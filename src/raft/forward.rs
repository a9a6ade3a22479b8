//! Requests a member hands to the leader, and how the leader carries them out.
//!
//! Writes and membership changes must be proposed on the leader. A follower forwards them
//! over the peer transport ([`Forwarded`]); the leader — or the member itself, when it leads —
//! runs [`execute`].

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use super::state_machine::StateMachine;
use super::types::{Command, Node, NodeId, TypeConfig};
use crate::lease::{Lessor, Renewal};

type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// A request only the leader can carry out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    /// An encoded state machine command.
    Write(Vec<u8>),
    /// Set a member's attributes (name and URLs): a member publishing itself, or MemberUpdate.
    SetNode {
        /// The member.
        id: NodeId,
        /// Its attributes.
        node: Node,
    },
    /// Add a member as a learner (MemberAdd; a voter is added as a learner, then promoted).
    AddLearner {
        /// The new member's ID.
        id: NodeId,
        /// Its attributes.
        node: Node,
        /// Whether it is added to become a voter (the quorum checks then count it).
        voter: bool,
    },
    /// Make learners voters (MemberPromote, or the second step of adding a voter).
    Promote {
        /// The learners.
        ids: BTreeSet<NodeId>,
        /// Refuse learners that lag behind the leader (MemberPromote); a member just added
        /// as a voter is promoted at once.
        require_sync: bool,
    },
    /// Remove a member (MemberRemove).
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// What the leader answers to a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ProposeOutcome {
    /// Committed and applied on the leader at `index`; `result` is the state machine's answer
    /// (empty for a membership change).
    Applied {
        /// The entry's log index.
        index: u64,
        /// The encoded `StateResult`.
        result: Vec<u8>,
    },
    /// The receiver is not the leader; `leader` is who it believes is.
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// The request's fate is unknown (the leader changed while it was in flight).
    Unknown,
    /// The leader refused the request; the reason is for the client.
    Refused(String),
}

/// What the leader answers to a read-index request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadIndexOutcome {
    /// Leadership confirmed by a quorum; reads are linearizable once this index is applied.
    Index(u64),
    /// The receiver is not the leader.
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// The leader could not reach a quorum.
    NoQuorum,
}

/// A lease question only the leader answers: it alone keeps lease deadlines.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum LeaseQuery {
    /// Renew the lease with this ID (a keep-alive).
    Renew(i64),
    /// How long the lease with this ID has left.
    TimeToLive(i64),
}

/// The leader's answer to a [`LeaseQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAnswer {
    /// Renewed for this many seconds.
    Renewed(i64),
    /// The lease's remaining and granted TTL, in seconds.
    TimeToLive {
        /// Seconds left.
        remaining: i64,
        /// The granted TTL.
        granted: i64,
    },
    /// No such lease (or it already expired).
    NotFound,
    /// The receiver is not the leader.
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
}

/// Answers `query` on this member if it leads. A new leader takes over the lease deadlines
/// here at the latest (every lease gets its full TTL plus `extend`: see [`Lessor::promote`]).
pub fn answer_lease(
    raft: &Raft,
    lessor: &Lessor,
    extend: std::time::Duration,
    query: LeaseQuery,
) -> LeaseAnswer {
    let (leader, term, me) = {
        use openraft::rt::WatchReceiver;
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        (m.current_leader, m.current_term, m.id)
    };
    if leader != Some(me) {
        lessor.demote();
        return LeaseAnswer::NotLeader { leader };
    }
    lessor.promote(term, extend);
    match query {
        LeaseQuery::Renew(id) => match lessor.renew(id) {
            Renewal::Renewed(ttl) => LeaseAnswer::Renewed(ttl),
            Renewal::NotFound => LeaseAnswer::NotFound,
            Renewal::NotPrimary => LeaseAnswer::NotLeader { leader },
        },
        LeaseQuery::TimeToLive(id) => match lessor.time_to_live(id) {
            Some(t) => LeaseAnswer::TimeToLive {
                remaining: t.remaining,
                granted: t.granted,
            },
            None => LeaseAnswer::NotFound,
        },
    }
}

fn outcome(
    written: Result<
        openraft::raft::ClientWriteResponse<TypeConfig>,
        RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    >,
) -> ProposeOutcome {
    match written {
        Ok(resp) => ProposeOutcome::Applied {
            index: resp.log_id.index,
            result: resp.data.0.to_vec(),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            ProposeOutcome::NotLeader {
                leader: f.leader_id,
            }
        }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => ProposeOutcome::Unknown,
        Err(RaftError::APIError(other)) => ProposeOutcome::Refused(other.to_string()),
        Err(RaftError::Fatal(f)) => ProposeOutcome::Refused(format!("raft stopped: {f}")),
    }
}

/// etcd's refusal of a promotion while the learner lags.
pub const LEARNER_NOT_READY: &str =
    "can only promote a learner member which is in sync with leader";

/// A learner is in sync, as etcd judges it, once it has matched 90 % of the leader's log.
fn not_in_sync(raft: &Raft, ids: &BTreeSet<NodeId>) -> Option<ProposeOutcome> {
    use openraft::rt::WatchReceiver;
    let metrics = raft.metrics().borrow_watched().clone();
    let replication = metrics.replication.as_ref()?;
    let last = metrics.last_log_index.unwrap_or(0);
    for id in ids {
        let matched = replication
            .get(id)
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.index);
        if (matched as f64) < last as f64 * 0.9 {
            return Some(ProposeOutcome::Refused(LEARNER_NOT_READY.to_owned()));
        }
    }
    None
}

/// Waits (a bounded while) until no membership change is in flight: raft takes one at a time,
/// and members publishing themselves at start-up would otherwise collide.
async fn settle_membership(raft: &Raft) {
    use openraft::rt::WatchReceiver;
    for _ in 0..100 {
        let pending = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config.log_id().as_ref().map(|l| l.index)
                > m.last_applied.as_ref().map(|l| l.index)
        };
        if !pending {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// etcd's refusal of a membership change while some voters are unreachable.
pub const UNHEALTHY: &str = "unhealthy cluster";
/// etcd's refusal of a membership change that too few started members could not survive.
pub const NOT_ENOUGH_STARTED: &str = "re-configuration failed due to not enough started members";

/// How recently a member must have answered the leader to count as connected (etcd's
/// HealthInterval).
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// What etcd's strict reconfiguration check looks at, as this leader sees it.
struct Health {
    voters: BTreeSet<NodeId>,
    /// Voters that have published their attributes (etcd's "started" members).
    started: BTreeSet<NodeId>,
    /// Members that answered this leader within [`HEALTH_INTERVAL`], this leader included.
    connected: BTreeSet<NodeId>,
}

fn health(raft: &Raft) -> Health {
    use openraft::rt::WatchReceiver;
    let metrics = raft.metrics().borrow_watched().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let started = membership
        .nodes()
        .filter(|(id, n)| voters.contains(id) && !n.client_urls.is_empty())
        .map(|(id, _)| *id)
        .collect();
    let mut connected: BTreeSet<NodeId> = metrics
        .heartbeat
        .iter()
        .flatten()
        .filter_map(|(id, at)| {
            at.as_ref()
                .filter(|t| openraft::Instant::elapsed(&***t) < HEALTH_INTERVAL)
                .map(|_| *id)
        })
        .collect();
    connected.insert(metrics.id);
    Health {
        voters,
        started,
        connected,
    }
}

/// etcd's `--strict-reconfig-check` (on by default): a membership change must not leave the
/// cluster without a quorum of started, connected members.
fn quorum_check(raft: &Raft, request: &Forwarded) -> Option<ProposeOutcome> {
    let h = health(raft);
    let refuse = |reason: &str| Some(ProposeOutcome::Refused(reason.to_owned()));
    let quorum = |members: usize| members / 2 + 1;
    match request {
        Forwarded::AddLearner { voter, .. } => {
            if *voter {
                let (members, started) = (h.voters.len() + 1, h.started.len());
                if !(started == 1 && members == 2) && started < quorum(members) {
                    return refuse(NOT_ENOUGH_STARTED);
                }
            }
            if !h.voters.iter().all(|v| h.connected.contains(v)) {
                return refuse(UNHEALTHY);
            }
        }
        Forwarded::Promote {
            ids,
            require_sync: true,
        } => {
            let members = h.voters.len() + ids.len();
            if h.started.len() + ids.len() < quorum(members) {
                return refuse(NOT_ENOUGH_STARTED);
            }
        }
        Forwarded::Remove { id } if h.voters.contains(id) => {
            let remaining = h.voters.len() - 1;
            let started = h.started.iter().filter(|v| *v != id).count();
            if started < quorum(remaining) {
                return refuse(NOT_ENOUGH_STARTED);
            }
            // A member that is down is not part of the working quorum: removing it is safe.
            if h.connected.contains(id) {
                let active = h.voters.iter().filter(|v| h.connected.contains(v)).count();
                if active - 1 < quorum(remaining) {
                    return refuse(UNHEALTHY);
                }
            }
        }
        _ => {}
    }
    None
}

/// Carries out `request` on this member, which should be the leader.
pub async fn execute(raft: &Raft, request: Forwarded) -> ProposeOutcome {
    if !matches!(request, Forwarded::Write(_)) {
        settle_membership(raft).await;
        if let Some(refusal) = quorum_check(raft, &request) {
            return refusal;
        }
    }
    match request {
        Forwarded::Write(bytes) => outcome(raft.client_write(Command(bytes.into())).await),
        Forwarded::SetNode { id, node } => outcome(
            raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), false)
                .await,
        ),
        Forwarded::AddLearner { id, node, .. } => outcome(raft.add_learner(id, node, false).await),
        Forwarded::Promote { ids, require_sync } => {
            if require_sync && let Some(refusal) = not_in_sync(raft, &ids) {
                return refusal;
            }
            outcome(
                raft.change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await,
            )
        }
        Forwarded::Remove { id } => {
            let membership = {
                use openraft::rt::WatchReceiver;
                raft.metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .clone()
            };
            let is_voter = membership.voter_ids().any(|v| v == id);
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            // retain=false: a removed voter is dropped from the membership entirely.
            outcome(raft.change_membership(change, false).await)
        }
    }
}
