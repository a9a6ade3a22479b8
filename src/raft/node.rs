//! A member's raft node: openraft wired to rampart's log store, state machine and network,
//! behind an API in rampart's own terms so that nothing outside `raft` names openraft types.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::rt::WatchReceiver;
use rocksdb::DB;

use super::command::{self, StateCommand, StateResult};
use super::forward::{self, Forwarded, LeaseAnswer, LeaseQuery, ProposeOutcome, ReadIndexOutcome};
use super::forward_stream::Forwarder;
use super::log_store::LogStore;
use super::network::{FORWARD_TIMEOUT, MAX_PAYLOAD_ENTRIES, PeerContext, PeerNetwork, UnaryKind};
use super::peer_proto::peer_server::PeerServer;
use super::peer_service::PeerService;
use super::state_machine::{Alarms, SharedStore, StateMachine};
use super::types::{Node, NodeId, TypeConfig};
use crate::lease::Lessor;
use crate::mvcc::MvccStore;

/// Timing and log-retention settings, etcd's defaults.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Leader heartbeat interval (etcd: 100 ms).
    pub heartbeat: Duration,
    /// Election timeout lower bound (etcd: 1000 ms); the upper bound is twice this.
    pub election_timeout: Duration,
    /// Take a snapshot after this many applied entries (etcd's --snapshot-count).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot so slow followers catch up from the log (etcd: 5000).
    pub keep_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_count: 100_000,
            keep_after_snapshot: 5_000,
        }
    }
}

/// Why a proposal or a linearizable read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftNodeError {
    /// No leader is known (no quorum, or an election is running).
    #[error("no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; its outcome is unknown.
    #[error("leader changed")]
    LeaderChanged,
    /// The leader refused the request (a membership rule, for example).
    #[error("{0}")]
    Refused(String),
    /// The request did not complete in time (no quorum).
    #[error("request timed out")]
    Timeout,
    /// The leader could not be reached to forward the request to; it may have failed.
    #[error("the leader is unreachable")]
    LeaderUnreachable,
    /// The node stopped (shut down, or a fatal storage error).
    #[error("raft node stopped: {0}")]
    Stopped(String),
    /// The state machine's answer could not be decoded.
    #[error("undecodable state machine response")]
    BadResponse,
    /// Start-up failed.
    #[error("starting raft: {0}")]
    Start(String),
}

/// What `endpoint status` reports about raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// This member's id.
    pub id: NodeId,
    /// The current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last committed entry.
    pub committed_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// A member as the membership lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its ID.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs.
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// A running raft node.
pub struct RaftNode {
    raft: openraft::Raft<TypeConfig, StateMachine>,
    store: Arc<SharedStore>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    auth: Arc<crate::auth::AuthStore>,
    id: NodeId,
    peers: Arc<PeerContext>,
    forwarder: Forwarder,
    snapshot_dir: std::path::PathBuf,
    election_timeout: Duration,
}

/// Counts a proposal in `etcd_server_proposals_pending` while it lives.
struct PendingProposal;

impl Drop for PendingProposal {
    fn drop(&mut self) {
        crate::metrics::get().proposals_pending.dec();
    }
}

/// A failed call to the leader as the client sees it.
fn forward_error(e: &super::network::PeerError) -> RaftNodeError {
    tracing::debug!(error = %e, "a request to the leader failed");
    match e {
        super::network::PeerError::Timeout { .. } => RaftNodeError::Timeout,
        _ => RaftNodeError::LeaderUnreachable,
    }
}

/// How long a write or linearizable read may wait for a leader and a quorum before failing
/// with "request timed out" (etcd: 5 s plus two election timeouts).
fn request_timeout(election: Duration) -> Duration {
    Duration::from_secs(5) + 2 * election
}

impl RaftNode {
    /// Opens storage in `db`, starts raft as member `id`, and — when `bootstrap` and the log is
    /// empty — forms a new cluster of `members`. A restarted member ignores `members` and
    /// recovers from its log, as etcd does. Peers are reached through `peers`.
    pub async fn start(
        id: NodeId,
        db: Arc<DB>,
        data_dir: &Path,
        members: BTreeMap<NodeId, Node>,
        bootstrap: bool,
        settings: &RaftSettings,
        peers: Arc<PeerContext>,
    ) -> Result<RaftNode, RaftNodeError> {
        let start = |e: &dyn std::fmt::Display| RaftNodeError::Start(e.to_string());
        let log = LogStore::open(db.clone()).await.map_err(|e| start(&e))?;
        let mvcc_db = db.clone();
        let mvcc = tokio::task::spawn_blocking(move || MvccStore::open(mvcc_db))
            .await
            .map_err(|e| start(&e))?
            .map_err(|e| start(&e))?;
        let store = SharedStore::new(mvcc);
        let lessor = Lessor::open(&db).map_err(|e| start(&e))?;
        let snapshot_dir = data_dir.join(super::snapshot::SNAPSHOT_DIR);
        let sm = StateMachine::open(db, store.clone(), lessor.clone(), snapshot_dir.clone())
            .map_err(|e| start(&e))?;
        let alarms = sm.alarms();
        let auth = sm.auth();
        let election = settings.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "rampart".to_owned(),
            heartbeat_interval: settings.heartbeat.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_count),
            max_in_snapshot_log_to_keep: settings.keep_after_snapshot,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // As etcd 3.5: a member that cannot win an election does not disturb the leader.
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| start(&e))?;
        let network = PeerNetwork::new(peers.clone());
        let raft = openraft::Raft::new(id, Arc::new(config), network, log, sm)
            .await
            .map_err(|e| start(&e))?;
        if bootstrap && !raft.is_initialized().await.map_err(|e| start(&e))? {
            raft.initialize(members).await.map_err(|e| start(&e))?;
        }
        Ok(RaftNode {
            raft,
            store,
            lessor,
            alarms,
            auth,
            id,
            forwarder: Forwarder::new(peers.clone()),
            peers,
            snapshot_dir,
            election_timeout: settings.election_timeout,
        })
    }

    /// The peer service that serves this node's raft to the other members; `initial` is the
    /// initial cluster, trusted only until this member knows a membership.
    pub fn peer_service(&self, initial: BTreeMap<NodeId, Node>) -> PeerServer<Arc<PeerService>> {
        let service = PeerService::new(
            self.raft.clone(),
            self.peers.clone(),
            initial,
            self.snapshot_dir.clone(),
            self.lessor.clone(),
            self.election_timeout,
        );
        PeerServer::new(Arc::new(service))
            .max_decoding_message_size(super::network::MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(super::network::MAX_PEER_MESSAGE_BYTES)
    }

    /// The node a member ID names in the current membership.
    fn node_of(&self, id: NodeId) -> Option<Node> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
    }

    /// Waits until this member has applied `index` (after a forwarded write or read index).
    async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), RaftNodeError> {
        let Some(applied) = self.store.applied_waiter(index) else {
            return Ok(());
        };
        tokio::time::timeout_at(deadline, applied)
            .await
            .map_err(|_| RaftNodeError::Timeout)?
            .map_err(|_| RaftNodeError::Stopped("the state machine stopped".into()))
    }

    /// Waits for a leader other than "none", up to `deadline`.
    async fn leader_before(&self, deadline: tokio::time::Instant) -> Result<NodeId, RaftNodeError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_for_leader(left.min(2 * self.election_timeout))
            .await
    }

    /// Proposes `cmd` and waits until it is committed and applied here; returns the state
    /// machine's answer. Acknowledged means durable on a quorum. A follower forwards the
    /// command to the leader and answers once it has applied the entry itself, so a client
    /// reads its own writes on the member it wrote through.
    pub async fn propose(&self, cmd: &StateCommand) -> Result<StateResult, RaftNodeError> {
        let metrics = crate::metrics::get();
        metrics.proposals_pending.inc();
        // Dropped also when the caller gives up on the proposal (a cancelled request).
        let _pending = PendingProposal;
        let result = self
            .submit(Forwarded::Write(command::encode(cmd)))
            .await
            .inspect_err(|_| {
                metrics.proposals_failed.inc();
            })?;
        command::decode(&result).ok_or(RaftNodeError::BadResponse)
    }

    /// Carries out `request` on the leader — here, or forwarded — and waits until this member
    /// has applied it; returns the leader's answer bytes.
    async fn submit(&self, request: Forwarded) -> Result<Vec<u8>, RaftNodeError> {
        let deadline = tokio::time::Instant::now() + request_timeout(self.election_timeout);
        // Start with the leader this member knows of: proposing on a follower only to be told
        // to forward costs a round through openraft (and an error in its log).
        let mut leader = self
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .or(Some(self.id));
        loop {
            let target = match leader {
                Some(l) => l,
                None => self.leader_before(deadline).await?,
            };
            let outcome = if target == self.id {
                tokio::time::timeout_at(deadline, forward::execute(&self.raft, request.clone()))
                    .await
                    .map_err(|_| RaftNodeError::Timeout)?
            } else {
                let node = self.node_of(target).ok_or(RaftNodeError::NoLeader)?;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let timeout = left.min(FORWARD_TIMEOUT);
                match &request {
                    Forwarded::Write(bytes) => self
                        .forwarder
                        .propose(target, &node, bytes.clone(), timeout)
                        .await
                        .map_err(|e| forward_error(&e))?,
                    _ => self
                        .peers
                        .call(target, &node, UnaryKind::Propose, &request, timeout)
                        .await
                        .map_err(|e| forward_error(&e))?,
                }
            };
            match outcome {
                ProposeOutcome::Applied { index, result } => {
                    if target != self.id {
                        self.wait_applied(index, deadline).await?;
                    }
                    return Ok(result);
                }
                ProposeOutcome::NotLeader { leader: next } => {
                    // Leadership moved (or is moving): retry with the leader named, in time.
                    if tokio::time::Instant::now() >= deadline {
                        return Err(RaftNodeError::Timeout);
                    }
                    if next == Some(target) || next.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    leader = next;
                }
                ProposeOutcome::Unknown => return Err(RaftNodeError::LeaderChanged),
                ProposeOutcome::Refused(reason) => return Err(RaftNodeError::Refused(reason)),
            }
        }
    }

    /// Waits until a read here would be linearizable: the leader confirmed its leadership with
    /// a quorum (read-index) and this member applied up to that index.
    pub async fn linearize(&self) -> Result<(), RaftNodeError> {
        let deadline = tokio::time::Instant::now() + request_timeout(self.election_timeout);
        loop {
            let here = self
                .raft
                .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex);
            let leader = match tokio::time::timeout_at(deadline, here)
                .await
                .map_err(|_| RaftNodeError::Timeout)?
            {
                Ok(_) => return Ok(()),
                Err(openraft::error::RaftError::Fatal(f)) => {
                    return Err(RaftNodeError::Stopped(f.to_string()));
                }
                Err(openraft::error::RaftError::APIError(
                    openraft::error::LinearizableReadError::ForwardToLeader(f),
                )) => f.leader_id,
                Err(openraft::error::RaftError::APIError(_)) => return Err(RaftNodeError::Timeout),
            };
            let leader = match leader {
                Some(l) => l,
                None => self.leader_before(deadline).await?,
            };
            if leader == self.id {
                // Leadership is arriving here (a transfer or an election in progress).
                if tokio::time::Instant::now() >= deadline {
                    return Err(RaftNodeError::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            let node = self.node_of(leader).ok_or(RaftNodeError::NoLeader)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let outcome: ReadIndexOutcome = self
                .peers
                .call(
                    leader,
                    &node,
                    UnaryKind::ReadIndex,
                    &(),
                    left.min(FORWARD_TIMEOUT),
                )
                .await
                .map_err(|e| forward_error(&e))?;
            match outcome {
                ReadIndexOutcome::Index(index) => return self.wait_applied(index, deadline).await,
                ReadIndexOutcome::NotLeader { .. } => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(RaftNodeError::Timeout);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ReadIndexOutcome::NoQuorum => return Err(RaftNodeError::Timeout),
            }
        }
    }

    /// Asks the leader (this member or another) a lease question; retries while leadership
    /// moves, until the request timeout.
    pub async fn lease(&self, query: LeaseQuery) -> Result<LeaseAnswer, RaftNodeError> {
        let deadline = tokio::time::Instant::now() + request_timeout(self.election_timeout);
        loop {
            let known = self.raft.metrics().borrow_watched().current_leader;
            let leader = match known {
                Some(l) => l,
                None => self.leader_before(deadline).await?,
            };
            let answer = if leader == self.id {
                forward::answer_lease(&self.raft, &self.lessor, self.election_timeout, query)
            } else {
                let node = self.node_of(leader).ok_or(RaftNodeError::NoLeader)?;
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.peers
                    .call(
                        leader,
                        &node,
                        UnaryKind::Lease,
                        &query,
                        left.min(FORWARD_TIMEOUT),
                    )
                    .await
                    .map_err(|e| forward_error(&e))?
            };
            match answer {
                LeaseAnswer::NotLeader { .. } => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(RaftNodeError::Timeout);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return Ok(other),
            }
        }
    }

    /// The replicated alarms.
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// The replicated users, roles and permissions.
    pub fn auth(&self) -> &Arc<crate::auth::AuthStore> {
        &self.auth
    }

    /// The member's lease table.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// The leader term this member leads in, if it is the leader.
    pub fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        (m.current_leader == Some(self.id)).then_some(m.current_term)
    }

    /// The election timeout (a new leader extends leases by it).
    pub fn election_timeout(&self) -> Duration {
        self.election_timeout
    }

    /// Makes this member's entry in the membership say `me` (name and URLs), retrying until
    /// it does; a member does this once it is up, as etcd publishes its attributes.
    pub async fn publish(&self, me: Node) {
        let mut delay = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if self.node_of(self.id).as_ref() == Some(&me) {
                return;
            }
            match self
                .submit(Forwarded::SetNode {
                    id: self.id,
                    node: me.clone(),
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(name = %me.name, "published this member's attributes");
                    return;
                }
                Err(RaftNodeError::Stopped(_)) => return,
                // Members publish at about the same time and membership changes go one at a
                // time, so a few refusals are expected.
                Err(e) if attempts < 5 => {
                    tracing::debug!(error = %e, "publishing attributes: retrying")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing this member's attributes failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Adds a member as a learner (it receives the log but does not vote).
    pub async fn add_learner(
        &self,
        id: NodeId,
        node: Node,
        voter: bool,
    ) -> Result<(), RaftNodeError> {
        self.submit(Forwarded::AddLearner { id, node, voter })
            .await
            .map(|_| ())
    }

    /// Makes a learner a voter once it has caught up with the leader (etcd's MemberPromote).
    pub async fn promote(&self, id: NodeId) -> Result<(), RaftNodeError> {
        self.submit(Forwarded::Promote {
            ids: std::collections::BTreeSet::from([id]),
            require_sync: true,
        })
        .await
        .map(|_| ())
    }

    /// Makes a just-added learner a voter at once (the second step of adding a voter).
    pub async fn promote_unchecked(&self, id: NodeId) -> Result<(), RaftNodeError> {
        self.submit(Forwarded::Promote {
            ids: std::collections::BTreeSet::from([id]),
            require_sync: false,
        })
        .await
        .map(|_| ())
    }

    /// Removes a member from the membership.
    pub async fn remove(&self, id: NodeId) -> Result<(), RaftNodeError> {
        self.submit(Forwarded::Remove { id }).await.map(|_| ())
    }

    /// Replaces a member's attributes (MemberUpdate).
    pub async fn update_member(&self, id: NodeId, node: Node) -> Result<(), RaftNodeError> {
        self.submit(Forwarded::SetNode { id, node })
            .await
            .map(|_| ())
    }

    /// Hands leadership to `to` (this member must lead) and waits until `to` leads.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), RaftNodeError> {
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| RaftNodeError::Stopped(e.to_string()))?;
        self.raft
            .wait(Some(request_timeout(self.election_timeout)))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await
            .map(|_| ())
            .map_err(|_| RaftNodeError::Timeout)
    }

    /// How far each member's log matches the leader's (leader only): member → matched index.
    pub fn replication(&self) -> Option<BTreeMap<NodeId, u64>> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.replication.map(|r| {
            r.iter()
                .map(|(id, matched)| (*id, matched.as_ref().map_or(0, |l| l.index)))
                .collect()
        })
    }

    /// Waits up to `timeout` for a leader to be known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, RaftNodeError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|_| RaftNodeError::NoLeader)?;
        metrics.current_leader.ok_or(RaftNodeError::NoLeader)
    }

    /// Counts leader changes in `etcd_server_leader_changes_seen_total` until the node stops:
    /// every time a leader becomes known that differs from the last one known (as etcd counts).
    /// It watches the server metrics only, which change with the term, role or membership and
    /// not with every appended or applied entry: no wake-up on the write path.
    pub fn count_leader_changes(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut watched = self.raft.server_metrics();
        async move {
            let mut last = None;
            loop {
                let leader = watched.borrow_watched().current_leader;
                if leader.is_some() && leader != last {
                    crate::metrics::get().leader_changes.inc();
                    last = leader;
                }
                if watched.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// This member's raft status.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let is_learner = m
            .membership_config
            .membership()
            .learner_ids()
            .any(|l| l == self.id);
        NodeStatus {
            id: self.id,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: m.local_committed.as_ref().map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.as_ref().map(|l| l.index).unwrap_or(0),
            is_learner,
        }
    }

    /// Whether this member is a learner (cheap: no copy of the metrics).
    pub fn is_learner(&self) -> bool {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .learner_ids()
            .any(|l| l == self.id)
    }

    /// This member's ID.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current term (cheap: no copy of the metrics).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The members of the current membership, voters first.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let membership = m.membership();
        let learners: std::collections::BTreeSet<NodeId> = membership.learner_ids().collect();
        let mut out: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                name: node.name.clone(),
                peer_urls: node.peer_urls.clone(),
                client_urls: node.client_urls.clone(),
                is_learner: learners.contains(id),
            })
            .collect();
        out.sort_by_key(|m| (m.is_learner, m.id));
        out
    }

    /// The MVCC store readers use (replaced when a snapshot is installed: fetch per request).
    pub fn store(&self) -> Arc<MvccStore> {
        self.store.get()
    }

    /// Sees every newly published revision (watchers wake on it, then read the new events
    /// from [`RaftNode::store`]).
    pub fn subscribe_revisions(&self) -> tokio::sync::watch::Receiver<i64> {
        self.store.subscribe()
    }

    /// Stops raft; pending proposals fail.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
