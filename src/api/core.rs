//! What every service of a member shares: the raft node, the IDs, the limits, the alarms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use rocksdb::DB;
use tonic::Status;

use super::proto::etcdserverpb as pb;
use super::status::EtcdError;
use crate::raft::{RaftNode, RaftNodeError, StateCommand};

/// The etcd API version rampart implements, reported by Status (clients gate features on it).
pub const API_VERSION: &str = "3.5.0";

/// Request limits, as etcd's flags.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// --max-request-bytes
    pub max_request_bytes: usize,
    /// --max-txn-ops
    pub max_txn_ops: usize,
    /// --quota-backend-bytes
    pub quota_backend_bytes: u64,
}

/// The state the etcd services of one member share.
pub struct Core {
    /// The raft node (proposals, linearizable reads, the MVCC store).
    pub node: RaftNode,
    /// The cluster ID.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
    /// Request limits.
    pub limits: Limits,
    /// The member's database (sizes, defragmentation, snapshots).
    pub db: Arc<DB>,
    /// Where temporary snapshot files go.
    pub tmp_dir: std::path::PathBuf,
    /// How often watchers that asked for progress notices get one.
    pub watch_progress_interval: Duration,
    /// Most watchers on one watch stream.
    pub max_watchers_per_stream: usize,
    /// IDs for leases granted without one.
    pub lease_ids: crate::lease::IdGenerator,
    /// Whether this member's database was over the quota when last measured.
    over_quota: AtomicBool,
    /// Wakes the task that raises this member's NOSPACE alarm through raft.
    raise_alarm: tokio::sync::Notify,
    /// Database size as last measured, and when (ms since `started`): the quota check runs on
    /// every write, RocksDB's size properties are not free, and a second of staleness is
    /// harmless next to a 2 GiB quota.
    cached_size: AtomicI64,
    measured_at_ms: AtomicI64,
    started: Instant,
}

/// How long a measured database size is reused by the quota check.
const SIZE_CACHE: Duration = Duration::from_secs(1);

impl Core {
    /// Bundles a member's shared state.
    pub fn new(
        node: RaftNode,
        cluster_id: u64,
        member_id: u64,
        limits: Limits,
        db: Arc<DB>,
        tmp_dir: std::path::PathBuf,
    ) -> Core {
        let core = Core {
            node,
            cluster_id,
            member_id,
            limits,
            db,
            tmp_dir,
            watch_progress_interval: super::watch::DEFAULT_PROGRESS_INTERVAL,
            max_watchers_per_stream: usize::MAX,
            lease_ids: crate::lease::IdGenerator::new(member_id),
            over_quota: AtomicBool::new(false),
            raise_alarm: tokio::sync::Notify::new(),
            cached_size: AtomicI64::new(0),
            measured_at_ms: AtomicI64::new(i64::MIN),
            started: Instant::now(),
        };
        // A member restarted over its quota raises the alarm again at once.
        core.check_quota();
        core
    }

    /// Sets the interval of watch progress notices.
    pub fn with_watch_progress_interval(mut self, interval: Duration) -> Core {
        self.watch_progress_interval = interval;
        self
    }

    /// Sets the limit of watchers per watch stream.
    pub fn with_max_watchers_per_stream(mut self, limit: usize) -> Core {
        self.max_watchers_per_stream = limit;
        self
    }

    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.term(),
        }
    }

    /// Refuses what a learner cannot serve (writes, linearizable reads, membership changes),
    /// as etcd does.
    pub fn refuse_on_learner(&self) -> Result<(), Status> {
        if self.node.is_learner() {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        Ok(())
    }

    /// Refuses a request larger than --max-request-bytes, as etcd does.
    pub fn check_size(&self, req: &impl Message) -> Result<(), Status> {
        if req.encoded_len() > self.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        Ok(())
    }

    /// Bytes the database occupies on disk (SST files and memtables of every column family).
    pub fn db_size(&self) -> i64 {
        self.db_property("rocksdb.total-sst-files-size")
            + self.db_property("rocksdb.cur-size-all-mem-tables")
    }

    /// Bytes of live data (what a defragmentation would leave).
    pub fn db_size_in_use(&self) -> i64 {
        self.db_property("rocksdb.estimate-live-data-size")
            + self.db_property("rocksdb.cur-size-all-mem-tables")
    }

    fn db_property(&self, name: &str) -> i64 {
        let mut total = 0u64;
        for cf in self.column_families() {
            if let Some(handle) = self.db.cf_handle(&cf)
                && let Ok(Some(v)) = self.db.property_int_value_cf(handle, name)
            {
                total += v;
            }
        }
        total as i64
    }

    /// Every column family of the member's database.
    pub fn column_families(&self) -> Vec<String> {
        crate::server::storage::all_column_families()
    }

    /// The database size, measured at most once per [`SIZE_CACHE`].
    fn recent_db_size(&self) -> i64 {
        let now = self.started.elapsed().as_millis() as i64;
        let last = self.measured_at_ms.load(Ordering::Relaxed);
        if last == i64::MIN || now - last >= SIZE_CACHE.as_millis() as i64 {
            self.measured_at_ms.store(now, Ordering::Relaxed);
            self.cached_size.store(self.db_size(), Ordering::Relaxed);
        }
        self.cached_size.load(Ordering::Relaxed)
    }

    /// Whether writes that add data must be refused: this member's database outgrew the quota,
    /// or any member's NOSPACE alarm is raised (the alarm is replicated, as etcd's: one full
    /// member stops writes on the whole cluster). Going over the quota raises this member's
    /// alarm through raft ([`spawn_alarm_raiser`]).
    pub fn check_quota(&self) -> bool {
        let over = self.recent_db_size() as u64 > self.limits.quota_backend_bytes;
        let was_over = self.over_quota.swap(over, Ordering::SeqCst);
        if over && (!was_over || !self.node.alarms().nospace().contains(&self.member_id)) {
            if !was_over {
                tracing::error!(
                    quota = self.limits.quota_backend_bytes,
                    size = self.db_size(),
                    "database space exceeded: raising the NOSPACE alarm; compact, defragment, then disarm the alarm"
                );
            }
            self.raise_alarm.notify_one();
        }
        over || self.node.alarms().any_nospace()
    }

    /// Whether writes that add data are refused now (without measuring again).
    pub fn nospace(&self) -> bool {
        self.over_quota.load(Ordering::SeqCst) || self.node.alarms().any_nospace()
    }

    /// Clears the NOSPACE alarm of `member` (0: of every member) through raft, as `etcdctl
    /// alarm disarm` asks; a member still over its quota raises its alarm again on the next write.
    pub async fn disarm_nospace(&self, member: u64) -> Result<(), Status> {
        // Measure again on the next write rather than trusting a size from before a defrag.
        self.measured_at_ms.store(i64::MIN, Ordering::Relaxed);
        self.over_quota.store(false, Ordering::SeqCst);
        let cmd = StateCommand::NoSpaceAlarm {
            member,
            raise: false,
        };
        self.node.propose(&cmd).await.map_err(raft_status)?;
        Ok(())
    }
}

/// The task that raises this member's NOSPACE alarm through raft when [`Core::check_quota`]
/// finds the database over the quota; retries while no quorum answers.
pub fn spawn_alarm_raiser(core: Arc<Core>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Also measure every second: a member over its quota raises its alarm again after a
        // disarm even if no write reaches it (etcd checks on every member's apply).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = core.raise_alarm.notified() => {}
                _ = tick.tick() => {
                    core.check_quota();
                }
            }
            while core.over_quota.load(Ordering::SeqCst)
                && !core.node.alarms().nospace().contains(&core.member_id)
            {
                let cmd = StateCommand::NoSpaceAlarm {
                    member: core.member_id,
                    raise: true,
                };
                if let Err(e) = core.node.propose(&cmd).await {
                    tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// A raft failure as etcd reports it.
pub fn raft_status(e: RaftNodeError) -> Status {
    match e {
        RaftNodeError::NoLeader => EtcdError::NoLeader.into(),
        RaftNodeError::LeaderChanged => EtcdError::LeaderChanged.into(),
        RaftNodeError::Stopped(_) => EtcdError::Stopped.into(),
        RaftNodeError::Timeout => EtcdError::Timeout.into(),
        RaftNodeError::LeaderUnreachable => EtcdError::TimeoutDueToLeaderFail.into(),
        RaftNodeError::Refused(reason) if reason == crate::raft::UNHEALTHY => {
            EtcdError::Unhealthy.into()
        }
        RaftNodeError::Refused(reason) => {
            Status::failed_precondition(format!("etcdserver: {reason}"))
        }
        _ => EtcdError::Corrupt.into(),
    }
}
