//! The raft state machine: committed commands applied to the MVCC store, exactly once.
//!
//! Each call to `apply` takes every entry openraft hands over, applies them in log order in one
//! MVCC batch (later entries see earlier ones), and writes the changes together with the last
//! applied log id and membership in ONE RocksDB WriteBatch. Replies go out after that write.
//!
//! Durability: the batch is written without its own fsync. The raft log shares this RocksDB
//! instance and its write-ahead log, and every log append is fsynced; RocksDB recovers a prefix
//! of its WAL, so after a crash the state is that of some applied log id, never torn, and
//! openraft re-applies the committed entries after it (they are in the fsynced log). Logs are
//! purged only up to a snapshot, and a snapshot reads the applied id from the same RocksDB view
//! as the data it copies, so purging never outruns durable state.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use futures_util::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{DB, WriteOptions};

use super::command::{self, Rejection, StateCommand, StateResult};
use super::snapshot::{self, SnapshotFile};
use super::types::{CommandResponse, LogId, StoredMembership, TypeConfig};
use crate::auth::{AuthState, AuthStore};
use crate::lease::Lessor;
use crate::mvcc::{ApplyBatch, MvccError, MvccStore};

/// Column family of the state machine's own metadata.
pub const CF_SM_META: &str = "sm_meta";
/// Key of the last applied log id in [`CF_SM_META`].
pub(crate) const KEY_APPLIED: &[u8] = b"applied";
/// Key of the last applied membership in [`CF_SM_META`].
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Key of the members with a raised NOSPACE alarm in [`CF_SM_META`].
pub(crate) const KEY_NOSPACE: &[u8] = b"alarms_nospace";
/// Key of the auth state (users, roles, permissions) in [`CF_SM_META`].
pub(crate) const KEY_AUTH: &[u8] = b"auth";

/// Reads the persisted auth state (the default, auth off, when there is none).
fn load_auth(db: &DB) -> io::Result<AuthState> {
    match db.get_cf(meta_cf(db)?, KEY_AUTH).map_err(storage_err)? {
        Some(bytes) => {
            command::decode(&bytes).ok_or_else(|| io::Error::other("corrupt auth state"))
        }
        None => Ok(AuthState::default()),
    }
}

/// The members whose NOSPACE alarm is raised: replicated state, read by the API on every write.
#[derive(Debug, Default)]
pub struct Alarms {
    nospace: RwLock<std::collections::BTreeSet<u64>>,
}

impl Alarms {
    fn load(db: &DB) -> io::Result<Alarms> {
        let set = match db.get_cf(meta_cf(db)?, KEY_NOSPACE).map_err(storage_err)? {
            Some(bytes) => {
                command::decode(&bytes).ok_or_else(|| io::Error::other("corrupt alarm list"))?
            }
            None => Default::default(),
        };
        Ok(Alarms {
            nospace: RwLock::new(set),
        })
    }

    fn reload(&self, db: &DB) -> io::Result<()> {
        let fresh = Alarms::load(db)?;
        *self.nospace.write().unwrap_or_else(|e| e.into_inner()) = fresh
            .nospace
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok(())
    }

    /// The members whose NOSPACE alarm is raised.
    pub fn nospace(&self) -> std::collections::BTreeSet<u64> {
        self.nospace
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether any member's NOSPACE alarm is raised (cheap: on every write).
    pub fn any_nospace(&self) -> bool {
        !self
            .nospace
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn apply(
        &self,
        db: &DB,
        wb: &mut rocksdb::WriteBatch,
        member: u64,
        raise: bool,
    ) -> io::Result<()> {
        let mut set = self.nospace.write().unwrap_or_else(|e| e.into_inner());
        match (raise, member) {
            (true, m) => {
                set.insert(m);
            }
            (false, 0) => set.clear(),
            (false, m) => {
                set.remove(&m);
            }
        }
        wb.put_cf(meta_cf(db)?, KEY_NOSPACE, command::encode(&*set));
        Ok(())
    }
}

/// The MVCC store of a member, replaceable as a whole when a snapshot is installed.
/// Readers clone the current `Arc` and read from it.
/// Watchers subscribe to the published revision ([`SharedStore::subscribe`]) and read the new
/// events from the current store.
#[derive(Debug)]
pub struct SharedStore {
    current: RwLock<Arc<MvccStore>>,
    published: tokio::sync::watch::Sender<i64>,
    applied: std::sync::Mutex<Applied>,
}

/// The last applied log index, and who waits for a later one. Each waiter is woken once, when
/// its index is applied (a watch channel would wake every waiter on every change).
#[derive(Debug, Default)]
struct Applied {
    index: u64,
    waiters: std::collections::BTreeMap<u64, Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl SharedStore {
    /// Wraps an opened store.
    pub fn new(store: MvccStore) -> Arc<SharedStore> {
        let (published, _) = tokio::sync::watch::channel(store.current_revision());
        Arc::new(SharedStore {
            current: RwLock::new(Arc::new(store)),
            published,
            applied: std::sync::Mutex::new(Applied::default()),
        })
    }

    /// `None` when log index `index` is applied already, else a receiver that completes once it
    /// is.
    pub fn applied_waiter(&self, index: u64) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if a.index >= index {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        a.waiters.entry(index).or_default().push(tx);
        Some(rx)
    }

    /// Records that the log is applied up to `index` and wakes those waiting for it.
    fn set_applied(&self, index: u64) {
        let mut a = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        a.index = a.index.max(index);
        let first_pending = a.index + 1;
        let later = a.waiters.split_off(&first_pending);
        let due = std::mem::replace(&mut a.waiters, later);
        drop(a);
        for tx in due.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// A receiver that sees each newly published revision (the latest one when several were
    /// published between looks).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.published.subscribe()
    }

    /// Tells subscribers that the current store published up to `revision`.
    fn announce(&self) {
        let revision = self.get().current_revision();
        self.published.send_replace(revision);
    }

    /// The current store.
    pub fn get(&self) -> Arc<MvccStore> {
        // A poisoned lock only means a panic elsewhere while swapping; the Arc inside is intact.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, store: MvccStore) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(store);
    }
}

/// rampart's [`RaftStateMachine`].
pub struct StateMachine {
    db: Arc<DB>,
    store: Arc<SharedStore>,
    lessor: Arc<Lessor>,
    alarms: Arc<Alarms>,
    auth: Arc<AuthStore>,
    snapshot_dir: PathBuf,
    applied: Option<LogId>,
    membership: StoredMembership,
}

fn storage_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

fn meta_cf(db: &DB) -> io::Result<&rocksdb::ColumnFamily> {
    db.cf_handle(CF_SM_META)
        .ok_or_else(|| io::Error::other(format!("RocksDB column family {CF_SM_META} is missing")))
}

impl StateMachine {
    /// Opens the state machine on `db` (which must have [`CF_SM_META`], the MVCC and the lease
    /// column families); snapshots live in `snapshot_dir`.
    pub fn open(
        db: Arc<DB>,
        store: Arc<SharedStore>,
        lessor: Arc<Lessor>,
        snapshot_dir: PathBuf,
    ) -> io::Result<StateMachine> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let cf = meta_cf(&db)?;
        let applied = match db.get_cf(cf, KEY_APPLIED).map_err(storage_err)? {
            Some(bytes) => command::decode::<Option<LogId>>(&bytes)
                .ok_or_else(|| io::Error::other("corrupt applied log id"))?,
            None => None,
        };
        let membership = match db.get_cf(cf, KEY_MEMBERSHIP).map_err(storage_err)? {
            Some(bytes) => command::decode::<StoredMembership>(&bytes)
                .ok_or_else(|| io::Error::other("corrupt membership"))?,
            None => StoredMembership::default(),
        };
        let alarms = Arc::new(Alarms::load(&db)?);
        let auth = Arc::new(AuthStore::new(load_auth(&db)?));
        if let Some(a) = applied {
            store.set_applied(a.index);
        }
        Ok(StateMachine {
            db,
            store,
            lessor,
            alarms,
            auth,
            snapshot_dir,
            applied,
            membership,
        })
    }

    /// The store readers use.
    pub fn store(&self) -> Arc<SharedStore> {
        self.store.clone()
    }

    /// The replicated alarms.
    pub fn alarms(&self) -> Arc<Alarms> {
        self.alarms.clone()
    }

    /// The replicated auth state.
    pub fn auth(&self) -> Arc<AuthStore> {
        self.auth.clone()
    }
}

fn rejection(e: MvccError) -> Result<Rejection, MvccError> {
    Ok(match e {
        MvccError::KeyNotFound => Rejection::KeyNotFound,
        MvccError::Compacted { .. } => Rejection::Compacted,
        MvccError::FutureRevision { .. } => Rejection::FutureRevision,
        MvccError::DuplicateKey => Rejection::DuplicateKey,
        MvccError::LeaseNotFound(_) => Rejection::LeaseNotFound,
        other => return Err(other),
    })
}

/// Where an applied batch writes besides the MVCC store.
struct ApplyContext<'a> {
    db: &'a DB,
    lessor: &'a Lessor,
    alarms: &'a Alarms,
    auth: &'a AuthStore,
}

fn apply_command(
    batch: &mut ApplyBatch<'_>,
    cx: &ApplyContext<'_>,
    bytes: &[u8],
) -> io::Result<StateResult> {
    let Some(cmd) = command::decode::<StateCommand>(bytes) else {
        return Ok(StateResult::Rejected(Rejection::Undecodable));
    };
    apply_decoded(batch, cx, &cmd)
}

fn apply_decoded(
    batch: &mut ApplyBatch<'_>,
    cx: &ApplyContext<'_>,
    cmd: &StateCommand,
) -> io::Result<StateResult> {
    match cmd {
        StateCommand::Guarded {
            auth_revision,
            command,
        } => {
            let view = cx.auth.view();
            if view.enabled() && view.state().revision > *auth_revision {
                return Ok(StateResult::Rejected(Rejection::AuthOldRevision));
            }
            return apply_decoded(batch, cx, command);
        }
        StateCommand::Auth(change) => {
            let mut state = cx.auth.view().state().clone();
            return Ok(match state.apply(change) {
                Ok(answer) => {
                    batch
                        .write_batch()
                        .put_cf(meta_cf(cx.db)?, KEY_AUTH, command::encode(&state));
                    // As the lease table: in memory before the batch is written; a failed
                    // write stops the node.
                    cx.auth.replace(state);
                    StateResult::Auth(Ok(answer))
                }
                Err(e) => StateResult::Auth(Err(e)),
            });
        }
        StateCommand::LeaseGrant { id, ttl } => {
            let granted = cx
                .lessor
                .apply_grant(cx.db, batch.write_batch(), *id, *ttl)
                .map_err(storage_err)?;
            return Ok(if granted {
                StateResult::LeaseGranted { id: *id, ttl: *ttl }
            } else {
                StateResult::Rejected(Rejection::LeaseExists)
            });
        }
        StateCommand::LeaseRevoke { id } => {
            let revoked = cx
                .lessor
                .apply_revoke(cx.db, batch.write_batch(), *id)
                .map_err(storage_err)?;
            if !revoked {
                return Ok(StateResult::Rejected(Rejection::LeaseNotFound));
            }
            let revision = batch.revoke_lease(*id).map_err(storage_err)?;
            return Ok(StateResult::LeaseRevoked { revision });
        }
        StateCommand::NoSpaceAlarm { member, raise } => {
            cx.alarms
                .apply(cx.db, batch.write_batch(), *member, *raise)?;
            return Ok(StateResult::Nothing);
        }
        _ => {}
    }
    // Counted as etcd counts them: every member, at apply.
    let metrics = crate::metrics::get();
    match cmd {
        StateCommand::Put(_) => metrics.mvcc_put.inc(),
        StateCommand::DeleteRange(_) => metrics.mvcc_delete.inc(),
        StateCommand::Txn(_) => metrics.mvcc_txn.inc(),
        _ => 0,
    };
    let outcome = match cmd {
        StateCommand::Put(req) => batch.put(req).map(StateResult::Put),
        StateCommand::DeleteRange(req) => batch.delete_range(req).map(StateResult::DeleteRange),
        StateCommand::Txn(req) => batch.txn(req).map(StateResult::Txn),
        StateCommand::Compact { revision } => {
            batch.compact(*revision).map(|_| StateResult::Compacted {
                revision: batch.revision(),
            })
        }
        StateCommand::LeaseGrant { .. }
        | StateCommand::LeaseRevoke { .. }
        | StateCommand::NoSpaceAlarm { .. }
        | StateCommand::Auth(_)
        | StateCommand::Guarded { .. } => {
            return Ok(StateResult::Nothing);
        }
    };
    match outcome {
        Ok(result) => Ok(result),
        Err(e) => rejection(e).map(StateResult::Rejected).map_err(storage_err),
    }
}

/// Applies `entries` in one batch and one RocksDB write; returns one result per entry.
///
/// The lease table changes in memory as entries apply, before the batch is written: if that
/// write fails, the node stops (a storage error is fatal to raft), so nobody acts on it.
fn apply_entries(
    db: &DB,
    store: &MvccStore,
    lessor: &Arc<Lessor>,
    alarms: &Alarms,
    auth: &AuthStore,
    entries: &[super::types::Entry],
    membership: &mut StoredMembership,
) -> io::Result<(Vec<StateResult>, Option<LogId>)> {
    let mut batch = store.begin_apply().map_err(storage_err)?;
    let check = lessor.clone();
    // Every member answers from the same table at the same log position: deterministic.
    batch.set_lease_check(move |id| check.exists(id));
    let cx = ApplyContext {
        db,
        lessor,
        alarms,
        auth,
    };
    let mut results = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        let result = match &entry.payload {
            EntryPayload::Blank => StateResult::Nothing,
            EntryPayload::Normal(cmd) => apply_command(&mut batch, &cx, &cmd.0)?,
            EntryPayload::Membership(m) => {
                *membership = StoredMembership::new(Some(entry.log_id()), m.clone());
                StateResult::Nothing
            }
        };
        results.push(result);
        last = Some(entry.log_id());
    }
    let cf = meta_cf(db)?;
    let wb = batch.write_batch();
    wb.put_cf(cf, KEY_APPLIED, command::encode(&last));
    wb.put_cf(cf, KEY_MEMBERSHIP, command::encode(membership));
    let pending = batch.finish().map_err(storage_err)?;
    let (wb, token) = pending.into_parts();
    let mut opts = WriteOptions::default();
    // See the module docs: the fsynced raft log in the same WAL makes this durable.
    opts.set_sync(false);
    let started = std::time::Instant::now();
    db.write_opt(wb, &opts).map_err(storage_err)?;
    crate::metrics::get()
        .backend_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    token.publish();
    Ok((results, last))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let store = self.store.get();
        let mut membership = self.membership.clone();
        // Inline, not on the blocking pool: the write never waits for an fsync (the log
        // writer syncs the WAL on its own), so a batch costs tens of microseconds, less than
        // handing it to another thread and back.
        let (results, last) = apply_entries(
            &self.db,
            &store,
            &self.lessor,
            &self.alarms,
            &self.auth,
            &batch,
            &mut membership,
        )?;
        self.applied = last;
        self.membership = membership;
        self.store.announce();
        if let Some(last) = last {
            self.store.set_applied(last.index);
        }
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(responder) = responder {
                responder.send(CommandResponse(command::encode(&result).into()));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &openraft::alias::SnapshotMetaOf<TypeConfig>,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let expected = meta.last_log_id;
        let lessor = self.lessor.clone();
        let alarms = self.alarms.clone();
        let auth = self.auth.clone();
        let store = tokio::task::spawn_blocking(move || -> io::Result<MvccStore> {
            let installed = snapshot::install(&db, &snapshot)?;
            if installed.last_log_id != expected {
                return Err(io::Error::other(
                    "snapshot content does not match its metadata",
                ));
            }
            snapshot::keep_only(&dir, &snapshot)?;
            lessor.reload(&db).map_err(storage_err)?;
            alarms.reload(&db)?;
            auth.replace(load_auth(&db)?);
            MvccStore::open(db).map_err(storage_err)
        })
        .await
        .map_err(io::Error::other)??;
        self.store.replace(store);
        self.store.announce();
        if let Some(last) = meta.last_log_id {
            self.store.set_applied(last.index);
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || snapshot::current(&dir))
            .await
            .map_err(io::Error::other)?
    }
}

/// Builds a snapshot file from a consistent RocksDB view.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let db = self.db.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let snap = snapshot::build(&db, &dir)?;
            snapshot::keep_only(&dir, &snap.snapshot)?;
            Ok(snap)
        })
        .await
        .map_err(io::Error::other)?
    }
}
