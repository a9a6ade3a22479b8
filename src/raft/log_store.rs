//! The raft log in RocksDB, with group commit.
//!
//! ```text
//!  append() ──▶ pending (memory, readable at once) ──▶ bounded queue ──▶ log-writer thread
//!  save_vote(), truncate_after(), purge(), save_committed() ──────────▶      │
//!                                                 one WriteBatch per drain, sync=true (fsync)
//!                                                 then every callback/reply, in queue order
//! ```
//!
//! All writes go through one queue to one `std::thread`, so they reach RocksDB in the order
//! openraft issued them (openraft requires write IO to be serialized, votes included). The
//! thread takes every request queued while the previous fsync ran and writes them in a single
//! synced batch: many appends, one fsync. Nothing here blocks a tokio worker: the writer is its
//! own thread and reads run on `spawn_blocking`.
//!
//! Entries handed to [`append`](RaftLogStorage::append) are kept in memory until their batch is
//! written, so readers see them as soon as `append` returns, as openraft requires. A reader takes
//! the in-memory part and a RocksDB snapshot under one lock, so each read is one atomic view.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use super::codec;
use super::error::LogStoreError;
use super::schema::{
    CF_RAFT_LOG, CF_RAFT_META, COLUMN_FAMILIES, DATA_VERSION, KEY_COMMITTED, KEY_DATA_VERSION,
    KEY_LAST_PURGED, KEY_VOTE, log_index, log_key,
};
use super::types::{Entry, LogId, TypeConfig, Vote};

/// Requests the writer queue holds before `append` and friends wait for room.
const WRITE_QUEUE_CAPACITY: usize = 4096;
/// The writer stops adding requests to a batch once it holds this many bytes...
const MAX_BATCH_BYTES: usize = 32 << 20;
/// ... or this many requests.
const MAX_BATCH_REQUESTS: usize = WRITE_QUEUE_CAPACITY;
/// `limited_get_log_entries` stops after about this many bytes of entries (always returning at
/// least one entry), so one replication message stays well below gRPC message limits.
const LIMITED_READ_BYTES: usize = 2 << 20;

/// The raft log store: openraft's [`RaftLogStorage`] over RocksDB.
///
/// Callers may rely on:
/// - durability: an append's callback reports success only after its entries are fsynced;
///   [`save_vote`](RaftLogStorage::save_vote) returns only after the vote is fsynced;
/// - order: writes reach the disk in the order they were issued, so a later write is never
///   durable without the earlier ones;
/// - visibility: appended entries are readable (by this store and every [`LogReader`]) as soon
///   as `append` returns, before they are durable.
///
/// Dropping the store stops its writer thread once the queued writes are done; [`close`](Self::close)
/// waits for that. The database stays open while the writer or any [`LogReader`] holds it.
pub struct LogStore {
    shared: Arc<Shared>,
    /// `None` once the store is closing.
    writer: Option<mpsc::Sender<WriteRequest>>,
    writer_exited: Option<oneshot::Receiver<()>>,
    /// Joined on drop, so the writer never outlives the store: a RocksDB handle still in use
    /// while the process exits aborts it ("pthread lock: Invalid argument").
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; waiting for it
        // here is short (at most one batch) and guarantees it no longer uses the database.
        drop(self.writer.take());
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

/// A read-only handle on the log, for replication tasks. Cheap to clone.
///
/// It sees every entry appended to its [`LogStore`], including entries not yet durable, and the
/// last durable vote.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// Counters of the log writer, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches written with fsync. With group commit this is usually far below `appends`.
    pub sync_writes: u64,
    /// Batches written, with or without fsync.
    pub batches: u64,
    /// Append requests made durable.
    pub appends: u64,
}

struct Shared {
    db: Arc<DB>,
    state: Mutex<State>,
    sync_writes: AtomicU64,
    batches: AtomicU64,
    appends: AtomicU64,
}

/// What the store keeps in memory. Never held across an `.await`.
struct State {
    /// The last durable vote.
    vote: Option<Vote>,
    /// The last saved committed log id (durable once a later synced batch is written).
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// The last entry appended (durable or not), or `last_purged` when the log is empty.
    last_log_id: Option<LogId>,
    /// Entries appended but not yet written to RocksDB, by index. Always above every entry that
    /// is in RocksDB and visible (at or below `last_log_id`).
    pending: BTreeMap<u64, Entry>,
    /// Set by the first failed write; every later write fails with it.
    failed: Option<Arc<LogStoreError>>,
}

enum WriteRequest {
    Append {
        entries: Vec<Entry>,
        flushed: IOFlushed<TypeConfig>,
    },
    SaveVote {
        vote: Vote,
        done: oneshot::Sender<Result<(), LogStoreError>>,
    },
    SaveCommitted {
        committed: Option<LogId>,
    },
    /// Delete every entry at or above `since`.
    Truncate {
        since: u64,
        done: oneshot::Sender<Result<(), LogStoreError>>,
    },
    Purge {
        upto: LogId,
        done: oneshot::Sender<Result<(), LogStoreError>>,
    },
}

impl LogStore {
    /// Open the log store on `db`, creating its metadata on first use, and start its writer
    /// thread.
    ///
    /// `db` must have been opened with every column family in
    /// [`COLUMN_FAMILIES`](super::COLUMN_FAMILIES). The store must be the only writer of
    /// those column families.
    pub async fn open(db: Arc<DB>) -> Result<LogStore, LogStoreError> {
        let state = tokio::task::spawn_blocking({
            let db = db.clone();
            move || load_state(&db)
        })
        .await
        .map_err(LogStoreError::Blocking)??;
        info!(
            last_log_id = ?state.last_log_id,
            last_purged = ?state.last_purged,
            vote = ?state.vote,
            "raft log opened"
        );
        let shared = Arc::new(Shared {
            db,
            state: Mutex::new(state),
            sync_writes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        });
        let (writer, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let (exited_tx, writer_exited) = oneshot::channel();
        let writer_thread = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    run_writer(&shared, queue);
                    // Release the database before signalling the exit that `close` waits for.
                    // (Should the writer panic, the sender is dropped too, which signals as well.)
                    drop(shared);
                    drop(exited_tx);
                }
            })
            .map_err(LogStoreError::SpawnWriter)?;
        Ok(LogStore {
            shared,
            writer: Some(writer),
            writer_exited: Some(writer_exited),
            writer_thread: Some(writer_thread),
        })
    }

    /// Stop accepting writes and wait until every queued write is done and the writer thread
    /// has released the database.
    pub async fn close(mut self) {
        drop(self.writer.take());
        // An error only means the thread is gone, which is what we wait for.
        if let Some(exited) = self.writer_exited.take() {
            let _ = exited.await;
        }
        // Drop joins the (finished) thread.
    }

    /// Counters of the writer so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.shared.stats()
    }

    async fn send(&self, request: WriteRequest) -> Result<(), LogStoreError> {
        self.writer
            .as_ref()
            .ok_or(LogStoreError::WriterStopped)?
            .send(request)
            .await
            .map_err(|_| LogStoreError::WriterStopped)
    }

    /// Queue `request` and wait for the writer's reply on `done`.
    async fn send_and_wait(
        &self,
        request: WriteRequest,
        done: oneshot::Receiver<Result<(), LogStoreError>>,
    ) -> Result<(), LogStoreError> {
        self.send(request).await?;
        done.await.map_err(|_| LogStoreError::WriterStopped)?
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock, so poisoning cannot happen; if it ever did,
        // the state itself is still consistent (every update is a single assignment or map op).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, LogStoreError> {
        self.db
            .cf_handle(name)
            .ok_or(LogStoreError::MissingColumnFamily(name))
    }

    fn stats(&self) -> WriterStats {
        WriterStats {
            sync_writes: self.sync_writes.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
        }
    }

    fn check_writable(&self) -> Result<(), LogStoreError> {
        match &self.state().failed {
            Some(cause) => Err(LogStoreError::WriterFailed(cause.clone())),
            None => Ok(()),
        }
    }

    /// Entries with index in `[start, end)`, as one atomic view. Stops after about
    /// `limit_bytes` (but returns at least one entry) when given. Blocking: RocksDB reads.
    fn read_entries(
        &self,
        start: u64,
        end: u64,
        limit_bytes: Option<usize>,
    ) -> Result<Vec<Entry>, LogStoreError> {
        let cf = self.cf(CF_RAFT_LOG)?;
        let (lo, hi, pending, snapshot) = {
            let state = self.state();
            let first_present = state.last_purged.as_ref().map_or(0, |id| id.index + 1);
            let past_last = state
                .last_log_id
                .as_ref()
                .map_or(0, |id| id.index.saturating_add(1));
            let lo = start.max(first_present);
            let hi = end.min(past_last);
            if lo >= hi {
                return Ok(Vec::new());
            }
            let pending: Vec<Entry> = state
                .pending
                .range(lo..hi)
                .map(|(_, e)| e.clone())
                .collect();
            // Taken under the lock: the writer removes entries from `pending` under this lock
            // only after writing them, so snapshot + pending is a consistent view.
            (lo, hi, pending, self.db.snapshot())
        };

        let db_end = pending.first().map_or(hi, |e| e.index());
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        let is_full = |entries: &Vec<Entry>, bytes: usize| {
            limit_bytes.is_some_and(|limit| !entries.is_empty() && bytes >= limit)
        };
        if lo < db_end {
            let mut options = ReadOptions::default();
            options.set_iterate_upper_bound(log_key(db_end));
            let iter = snapshot.iterator_cf_opt(
                cf,
                options,
                IteratorMode::From(&log_key(lo), Direction::Forward),
            );
            for item in iter {
                let (key, value) = item?;
                let entry = decode_entry(&key, &value)?;
                bytes += value.len();
                entries.push(entry);
                if is_full(&entries, bytes) {
                    break;
                }
            }
        }
        for entry in pending {
            if is_full(&entries, bytes) {
                break;
            }
            bytes += approximate_size(&entry);
            entries.push(entry);
        }
        check_consecutive(&entries)?;
        Ok(entries)
    }
}

/// The entry stored under `key`, checking that the key is its index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, LogStoreError> {
    let bad_key = || LogStoreError::BadLogKey { key: key.to_vec() };
    let index = log_index(key).ok_or_else(bad_key)?;
    let entry: Entry = codec::decode(value, || format!("log entry {index}"))?;
    if entry.index() != index {
        return Err(bad_key());
    }
    Ok(entry)
}

/// Roughly the encoded size of an entry not yet encoded, for read limits.
fn approximate_size(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(command) => command.0.len() + 24,
        _ => 256,
    }
}

fn check_consecutive(entries: &[Entry]) -> Result<(), LogStoreError> {
    for pair in entries.windows(2) {
        let expected = pair[0].index() + 1;
        if pair[1].index() != expected {
            return Err(LogStoreError::Hole { missing: expected });
        }
    }
    Ok(())
}

/// `[start, end)` of a range of log indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// Writes the metadata of a log that starts after `upto`: nothing stored, everything up to and
/// including `upto` purged and committed, no vote. This is the log of a member whose state
/// machine was seeded with the state at `upto` (a restored member). `db` must hold no raft
/// data yet; the write is synced. Blocking: RocksDB.
pub(crate) fn seed_purged(db: &DB, upto: LogId) -> Result<(), LogStoreError> {
    let cf = |name| {
        db.cf_handle(name)
            .ok_or(LogStoreError::MissingColumnFamily(name))
    };
    let meta = cf(CF_RAFT_META)?;
    let log = cf(CF_RAFT_LOG)?;
    let is_empty = |cf| db.iterator_cf(cf, IteratorMode::Start).next().is_none();
    if !is_empty(meta) || !is_empty(log) {
        return Err(LogStoreError::NotEmpty);
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(meta, KEY_DATA_VERSION, DATA_VERSION.to_be_bytes());
    batch.put_cf(
        meta,
        KEY_LAST_PURGED,
        codec::encode(&upto, "last purged log id")?,
    );
    batch.put_cf(
        meta,
        KEY_COMMITTED,
        codec::encode(&Some(upto), "committed log id")?,
    );
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options)?;
    Ok(())
}

/// Read what the store keeps in memory from `db`, creating the metadata of a new store.
/// Blocking: RocksDB.
fn load_state(db: &DB) -> Result<State, LogStoreError> {
    for name in COLUMN_FAMILIES {
        db.cf_handle(name)
            .ok_or(LogStoreError::MissingColumnFamily(name))?;
    }
    let cf = |name| {
        db.cf_handle(name)
            .ok_or(LogStoreError::MissingColumnFamily(name))
    };
    let meta = cf(CF_RAFT_META)?;
    let log = cf(CF_RAFT_LOG)?;

    match db.get_cf(meta, KEY_DATA_VERSION)? {
        Some(raw) => {
            let found = <[u8; 4]>::try_from(raw.as_slice()).map_or(0, u32::from_be_bytes);
            if found != DATA_VERSION {
                return Err(LogStoreError::UnsupportedDataVersion {
                    found,
                    expected: DATA_VERSION,
                });
            }
        }
        None => {
            let is_empty = |cf| db.iterator_cf(cf, IteratorMode::Start).next().is_none();
            if !is_empty(meta) || !is_empty(log) {
                return Err(LogStoreError::MissingDataVersion);
            }
            let mut options = WriteOptions::default();
            options.set_sync(true);
            db.put_cf_opt(meta, KEY_DATA_VERSION, DATA_VERSION.to_be_bytes(), &options)?;
        }
    }

    let get = |key: &[u8]| db.get_cf(meta, key);
    let vote: Option<Vote> = match get(KEY_VOTE)? {
        Some(raw) => Some(codec::decode(&raw, || "vote".into())?),
        None => None,
    };
    let committed: Option<LogId> = match get(KEY_COMMITTED)? {
        Some(raw) => codec::decode(&raw, || "committed log id".into())?,
        None => None,
    };
    let last_purged: Option<LogId> = match get(KEY_LAST_PURGED)? {
        Some(raw) => Some(codec::decode(&raw, || "last purged log id".into())?),
        None => None,
    };
    let last_entry = match db.iterator_cf(log, IteratorMode::End).next() {
        Some(item) => {
            let (key, value) = item?;
            Some(decode_entry(&key, &value)?.log_id())
        }
        None => None,
    };
    let last_log_id = last_entry.max(last_purged);
    Ok(State {
        vote,
        committed,
        last_purged,
        last_log_id,
        pending: BTreeMap::new(),
        failed: None,
    })
}

impl WriteRequest {
    /// Whether the request must be durable before it is reported done. Only the committed
    /// log id may wait for a later fsync: it is a hint openraft can do without.
    fn needs_sync(&self) -> bool {
        !matches!(self, WriteRequest::SaveCommitted { .. })
    }

    /// Add this request's writes to `batch`.
    fn write_into(&self, shared: &Shared, batch: &mut WriteBatch) -> Result<(), LogStoreError> {
        match self {
            WriteRequest::Append { entries, .. } => {
                let log = shared.cf(CF_RAFT_LOG)?;
                for entry in entries {
                    batch.put_cf(
                        log,
                        log_key(entry.index()),
                        codec::encode(entry, "log entry")?,
                    );
                }
            }
            WriteRequest::SaveVote { vote, .. } => {
                batch.put_cf(
                    shared.cf(CF_RAFT_META)?,
                    KEY_VOTE,
                    codec::encode(vote, "vote")?,
                );
            }
            WriteRequest::SaveCommitted { committed } => {
                let value = codec::encode(committed, "committed log id")?;
                batch.put_cf(shared.cf(CF_RAFT_META)?, KEY_COMMITTED, value);
            }
            WriteRequest::Truncate { since, .. } => {
                let log = shared.cf(CF_RAFT_LOG)?;
                batch.delete_range_cf(log, log_key(*since), log_key(u64::MAX));
                batch.delete_cf(log, log_key(u64::MAX));
            }
            WriteRequest::Purge { upto, .. } => {
                let log = shared.cf(CF_RAFT_LOG)?;
                batch.delete_range_cf(log, log_key(0), log_key(upto.index));
                batch.delete_cf(log, log_key(upto.index));
                let value = codec::encode(upto, "last purged log id")?;
                batch.put_cf(shared.cf(CF_RAFT_META)?, KEY_LAST_PURGED, value);
            }
        }
        Ok(())
    }

    /// Report the outcome to whoever waits for it.
    fn complete(self, result: Result<(), &Arc<LogStoreError>>) {
        let error = |cause: &Arc<LogStoreError>| LogStoreError::WriterFailed(cause.clone());
        // A dropped receiver means the caller gave up waiting; the write happened regardless.
        match self {
            WriteRequest::Append { flushed, .. } => {
                flushed.io_completed(result.map_err(|cause| error(cause).into()));
            }
            WriteRequest::SaveVote { done, .. }
            | WriteRequest::Truncate { done, .. }
            | WriteRequest::Purge { done, .. } => {
                let _ = done.send(result.map_err(error));
            }
            WriteRequest::SaveCommitted { .. } => {}
        }
    }
}

/// The log-writer thread: drain the queue, write one batch, fsync once, reply to all.
fn run_writer(shared: &Shared, mut queue: mpsc::Receiver<WriteRequest>) {
    let unsynced = WriteOptions::default();

    while let Some(first) = queue.blocking_recv() {
        let mut requests = vec![first];
        let mut batch = WriteBatch::default();
        let mut built = Ok(());
        loop {
            let newest = requests.last().map(|r| r.write_into(shared, &mut batch));
            if let Some(Err(e)) = newest {
                built = Err(e);
                break;
            }
            if batch.size_in_bytes() >= MAX_BATCH_BYTES || requests.len() >= MAX_BATCH_REQUESTS {
                break;
            }
            match queue.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }

        let earlier_failure = shared.state().failed.clone();
        if let Some(cause) = earlier_failure {
            for request in requests {
                request.complete(Err(&cause));
            }
            continue;
        }

        let needs_sync = requests.iter().any(WriteRequest::needs_sync);
        // The batch goes into the WAL without a sync, and the WAL is then flushed and synced
        // on its own: other writers of the database (the state machine's applies) then never
        // queue behind this fsync inside RocksDB's write path. Everything in the WAL before
        // the sync is durable after it, so the log keeps its promise either way.
        let written = built.and_then(|()| {
            shared
                .db
                .write_opt(batch, &unsynced)
                .and_then(|()| {
                    if needs_sync {
                        let started = std::time::Instant::now();
                        let synced = shared.db.flush_wal(true);
                        crate::metrics::get()
                            .wal_fsync_seconds
                            .observe(started.elapsed().as_secs_f64());
                        synced
                    } else {
                        Ok(())
                    }
                })
                .map_err(LogStoreError::from)
        });
        if let Err(e) = written {
            error!(error = %e, requests = requests.len(), "raft log write failed; the log accepts no more writes");
            let cause = Arc::new(e);
            shared.state().failed = Some(cause.clone());
            for request in requests {
                request.complete(Err(&cause));
            }
            continue;
        }

        shared.batches.fetch_add(1, Ordering::Relaxed);
        if needs_sync {
            shared.sync_writes.fetch_add(1, Ordering::Relaxed);
        }
        let mut appends = 0;
        {
            let mut state = shared.state();
            for request in &requests {
                match request {
                    WriteRequest::Append { entries, .. } => {
                        appends += 1;
                        for entry in entries {
                            // Only if it is still the entry we wrote: a truncation may have
                            // replaced it in memory meanwhile.
                            let index = entry.index();
                            if state
                                .pending
                                .get(&index)
                                .is_some_and(|p| p.log_id == entry.log_id)
                            {
                                state.pending.remove(&index);
                            }
                        }
                    }
                    WriteRequest::SaveVote { vote, .. } => state.vote = Some(*vote),
                    _ => {}
                }
            }
        }
        shared.appends.fetch_add(appends, Ordering::Relaxed);
        debug!(
            requests = requests.len(),
            appends,
            synced = needs_sync,
            "raft log batch written"
        );
        for request in requests {
            request.complete(Ok(()));
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = index_range(&range);
        self.read(start, end, None).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.shared.state().vote)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.read(start, end, Some(LIMITED_READ_BYTES)).await
    }
}

impl LogReader {
    async fn read(
        &self,
        start: u64,
        end: u64,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, io::Error> {
        let shared = self.shared.clone();
        let entries = tokio::task::spawn_blocking(move || shared.read_entries(start, end, limit))
            .await
            .map_err(LogStoreError::Blocking)??;
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.shared.state();
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id: state.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let (done, wait) = oneshot::channel();
        let request = WriteRequest::SaveVote { vote: *vote, done };
        Ok(self.send_and_wait(request, wait).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.shared.check_writable()?;
        self.shared.state().committed = committed;
        // Not awaited: the committed log id is a hint, made durable by the next synced batch.
        Ok(self.send(WriteRequest::SaveCommitted { committed }).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.shared.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.shared.check_writable()?;
        {
            let mut state = self.shared.state();
            for entry in &entries {
                state.pending.insert(entry.index(), entry.clone());
            }
            if let Some(last) = entries.last() {
                state.last_log_id = Some(last.log_id());
            }
        }
        // Even an empty append goes through the queue: its callback must not report flushed
        // before the writes queued ahead of it are.
        let request = WriteRequest::Append {
            entries,
            flushed: callback,
        };
        Ok(self.send(request).await?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let since = last_log_id.as_ref().map_or(0, |id| id.index + 1);
        {
            let mut state = self.shared.state();
            let is_past_end = state
                .last_log_id
                .as_ref()
                .is_none_or(|last| since > last.index);
            if is_past_end {
                return Ok(());
            }
            drop(state.pending.split_off(&since));
            state.last_log_id = last_log_id.or_else(|| state.last_purged);
        }
        let (done, wait) = oneshot::channel();
        Ok(self
            .send_and_wait(WriteRequest::Truncate { since, done }, wait)
            .await?)
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        {
            let mut state = self.shared.state();
            if state.last_purged.as_ref() >= Some(&upto) {
                return Ok(());
            }
            let kept = state.pending.split_off(&(upto.index.saturating_add(1)));
            state.pending = kept;
            if state.last_log_id < Some(upto) {
                state.last_log_id = Some(upto);
            }
            state.last_purged = Some(upto);
        }
        let (done, wait) = oneshot::channel();
        Ok(self
            .send_and_wait(WriteRequest::Purge { upto, done }, wait)
            .await?)
    }
}
