//! TEST DOUBLE, for openraft's storage conformance suite only.
//!
//! openraft's suite exercises a log store together with a state machine. This one records in
//! memory which log ids were applied and the last membership, and snapshots that record; it
//! persists nothing and interprets no command. It is not rampart's state machine (that one
//! applies commands to the MVCC store in RocksDB) and must never be used outside tests.

use std::io;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::OptionalSend;
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};

use super::types::{CommandResponse, LogId, StoredMembership, TypeConfig};

type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, SuiteSnapshot>;

/// The "state" of [`SuiteStateMachine`]: the log ids applied, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SuiteSnapshot {
    applied: Vec<LogId>,
}

#[derive(Default)]
struct Inner {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied: Vec<LogId>,
    current_snapshot: Option<Snapshot>,
}

/// An in-memory state machine that only records what it applied. Test double, see module docs.
#[derive(Clone, Default)]
pub(crate) struct SuiteStateMachine {
    inner: Arc<Mutex<Inner>>,
}

impl SuiteStateMachine {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("test double lock poisoned"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SuiteStateMachine {
    type SnapshotData = SuiteSnapshot;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        Ok(self.with(|inner| {
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_log_id: inner.last_applied,
                    last_membership: inner.membership.clone(),
                },
                snapshot: SuiteSnapshot {
                    applied: inner.applied.clone(),
                },
            };
            inner.current_snapshot = Some(snapshot.clone());
            snapshot
        }))
    }
}

impl RaftStateMachine<TypeConfig> for SuiteStateMachine {
    type SnapshotData = SuiteSnapshot;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok(self.with(|inner| (inner.last_applied, inner.membership.clone())))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            self.with(|inner| {
                if let Some(membership) = entry.get_membership() {
                    inner.membership = StoredMembership::new(Some(log_id), membership);
                }
                inner.applied.push(log_id);
                inner.last_applied = Some(log_id);
            });
            if let Some(responder) = responder {
                responder.send(CommandResponse::default());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SuiteSnapshot,
    ) -> Result<(), io::Error> {
        self.with(|inner| {
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.applied = snapshot.applied.clone();
            inner.current_snapshot = Some(Snapshot {
                meta: meta.clone(),
                snapshot,
            });
        });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.with(|inner| inner.current_snapshot.clone()))
    }
}
