//! A member's raft node: openraft wired to rampart's log store, state machine and network,
//! behind an API in rampart's own terms so that nothing outside `raft` names openraft types.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::rt::WatchReceiver;
use rocksdb::DB;

use super::command::{self, StateCommand, StateResult};
use super::log_store::LogStore;
use super::network::PeerNetwork;
use super::state_machine::{SharedStore, StateMachine};
use super::types::{Command, Node, NodeId, TypeConfig};
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
            snapshot_count: 10_000,
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
    id: NodeId,
}

impl RaftNode {
    /// Opens storage in `db`, starts raft as member `id`, and — when `bootstrap` and the log is
    /// empty — forms a new cluster of `members`. A restarted member ignores `members` and
    /// recovers from its log, as etcd does.
    pub async fn start(
        id: NodeId,
        db: Arc<DB>,
        data_dir: &Path,
        members: BTreeMap<NodeId, Node>,
        bootstrap: bool,
        settings: &RaftSettings,
    ) -> Result<RaftNode, RaftNodeError> {
        let start = |e: &dyn std::fmt::Display| RaftNodeError::Start(e.to_string());
        let log = LogStore::open(db.clone()).await.map_err(|e| start(&e))?;
        let mvcc_db = db.clone();
        let mvcc = tokio::task::spawn_blocking(move || MvccStore::open(mvcc_db))
            .await
            .map_err(|e| start(&e))?
            .map_err(|e| start(&e))?;
        let store = SharedStore::new(mvcc);
        let sm = StateMachine::open(db, store.clone(), data_dir.join("snapshots"))
            .map_err(|e| start(&e))?;
        let election = settings.election_timeout.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "rampart".to_owned(),
            heartbeat_interval: settings.heartbeat.as_millis() as u64,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_count),
            max_in_snapshot_log_to_keep: settings.keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| start(&e))?;
        let raft = openraft::Raft::new(id, Arc::new(config), PeerNetwork, log, sm)
            .await
            .map_err(|e| start(&e))?;
        if bootstrap && !raft.is_initialized().await.map_err(|e| start(&e))? {
            raft.initialize(members).await.map_err(|e| start(&e))?;
        }
        Ok(RaftNode { raft, store, id })
    }

    /// Proposes `cmd` and waits until it is committed and applied here; returns the state
    /// machine's answer. Acknowledged means durable on a quorum.
    pub async fn propose(&self, cmd: &StateCommand) -> Result<StateResult, RaftNodeError> {
        let bytes = command::encode(cmd);
        match self.raft.client_write(Command(bytes.into())).await {
            Ok(resp) => command::decode(&resp.data.0).ok_or(RaftNodeError::BadResponse),
            Err(openraft::error::RaftError::Fatal(f)) => Err(RaftNodeError::Stopped(f.to_string())),
            Err(openraft::error::RaftError::APIError(e)) => match e {
                openraft::error::ClientWriteError::ForwardToLeader(_) => {
                    Err(RaftNodeError::NoLeader)
                }
                _ => Err(RaftNodeError::LeaderChanged),
            },
        }
    }

    /// Waits until a read here would be linearizable: the leader confirmed its leadership with
    /// a quorum (read-index) and this member applied up to that index.
    pub async fn linearize(&self) -> Result<(), RaftNodeError> {
        match self
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
        {
            Ok(_) => Ok(()),
            Err(openraft::error::RaftError::Fatal(f)) => Err(RaftNodeError::Stopped(f.to_string())),
            Err(openraft::error::RaftError::APIError(_)) => Err(RaftNodeError::NoLeader),
        }
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

    /// Stops raft; pending proposals fail.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
