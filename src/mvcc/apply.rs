//! Applying committed write requests in batches: [`ApplyBatch`] → [`PendingApply`] →
//! (RocksDB write) → [`PublishToken::publish`].

use std::collections::BTreeMap;
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions};

use super::check::{check_txn_duplicates, is_txn_read_only};
use super::codec;
use super::error::MvccError;
use super::events::{Event, EventKind};
use super::index::{IndexEntry, KeyRange};
use super::read::{self, ReadSource, TxnPath};
use super::schema::{
    self, CF_KV, CF_META, META_COMPACT_FINISHED, META_COMPACT_SCHEDULED, META_CURRENT_REVISION,
};
use super::store::{ApplyState, MvccStore, decode_entry};
use super::types::{
    DeleteRangeRequest, DeleteResult, KeyValue, Op, OpResult, PutRequest, PutResult, RangeRequest,
    RangeResult, Revision, TxnRequest, TxnResult,
};

/// One change made by the batch, not yet visible to readers.
#[derive(Debug)]
struct Pending {
    rev: Revision,
    /// `None` for a delete.
    put: Option<PendingPut>,
}

#[derive(Debug)]
struct PendingPut {
    create_revision: i64,
    version: i64,
    lease: i64,
    value: Vec<u8>,
}

/// The batch's changes, by key; each key's changes in revision order.
type Overlay = BTreeMap<Vec<u8>, Vec<Pending>>;

/// The revision a write request will take and the changes it made so far.
struct WriteTxn {
    main: i64,
    sub: i64,
    touched: Vec<Vec<u8>>,
}

impl WriteTxn {
    /// The revision reads inside the request see: its own changes included (etcd 3.5 reads in
    /// a write txn see the txn's writes).
    fn read_revision(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }
}

/// An open batch of committed write requests, applied in order; each request sees the ones
/// before it. Obtained from [`MvccStore::begin_apply`]; only one batch is open at a time.
///
/// Nothing is visible to readers until the batch is [finished](ApplyBatch::finish), written to
/// RocksDB and [published](PublishToken::publish). A request that returns `Err` changed
/// nothing; the batch stays usable. Dropping the batch discards it.
///
/// Callers must feed every committed request exactly once, in log order, and write the
/// [`WriteBatch`] they get back (with their own applied log id in it, see
/// [`ApplyBatch::write_batch`]) before publishing.
pub struct ApplyBatch<'a> {
    store: &'a MvccStore,
    state: Option<ApplyState>,
    wb: WriteBatch,
    /// Published revision when the batch began.
    base: i64,
    /// Revision after the requests applied so far.
    revision: i64,
    /// Compacted revision, including compactions in this batch.
    compacted: i64,
    /// Newest compaction applied in this batch.
    compaction: Option<i64>,
    overlay: Overlay,
    lease_exists: Option<LeaseCheck<'a>>,
}

/// Tells whether a lease exists.
type LeaseCheck<'a> = Box<dyn Fn(i64) -> bool + Send + 'a>;

impl std::fmt::Debug for ApplyBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyBatch")
            .field("base", &self.base)
            .field("revision", &self.revision)
            .field("compacted", &self.compacted)
            .field("changed_keys", &self.overlay.len())
            .finish_non_exhaustive()
    }
}

impl MvccStore {
    /// Opens an apply batch on the newest published revision.
    ///
    /// Errors: [`MvccError::ApplyInProgress`] while another batch (or its unpublished token) is
    /// alive; [`MvccError::Unpublished`] when an earlier batch was written but dropped without
    /// being published (the store must be reopened).
    pub fn begin_apply(&self) -> Result<ApplyBatch<'_>, MvccError> {
        let state = self.take_apply_state()?;
        let p = self.read_published();
        let (base, compacted) = (p.revision, p.compacted);
        drop(p);
        Ok(ApplyBatch {
            store: self,
            state: Some(state),
            wb: WriteBatch::default(),
            base,
            revision: base,
            compacted,
            compaction: None,
            overlay: Overlay::new(),
            lease_exists: None,
        })
    }
}

impl ReadSource for ApplyBatch<'_> {
    fn entries(&self, range: &KeyRange<'_>, at: i64) -> Result<Vec<IndexEntry>, MvccError> {
        if at < self.compacted {
            return Err(MvccError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        // The published index holds everything up to `base`; the overlay what came after.
        // Published state cannot change while this batch holds the apply state.
        let mut out = self
            .store
            .read_published()
            .index
            .range(range, at.min(self.base));
        if at <= self.base {
            return Ok(out);
        }
        let Some(bounds) = range.bounds() else {
            return Ok(out);
        };
        let decided: Vec<(&Vec<u8>, &Pending)> = self
            .overlay
            .range::<[u8], _>(bounds)
            .filter_map(|(k, changes)| {
                changes
                    .iter()
                    .rev()
                    .find(|c| c.rev.main <= at)
                    .map(|c| (k, c))
            })
            .collect();
        if decided.is_empty() {
            return Ok(out);
        }
        out.retain(|e| {
            decided
                .binary_search_by(|(k, _)| k.as_slice().cmp(e.key.as_slice()))
                .is_err()
        });
        out.extend(decided.into_iter().filter_map(|(k, c)| {
            c.put.as_ref().map(|p| IndexEntry {
                key: k.clone(),
                mod_revision: c.rev,
                create_revision: p.create_revision,
                version: p.version,
            })
        }));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn count(&self, range: &KeyRange<'_>, at: i64) -> Result<usize, MvccError> {
        Ok(self.entries(range, at)?.len())
    }

    fn fetch(&self, entries: &[IndexEntry]) -> Result<Vec<KeyValue>, MvccError> {
        let cf = self.store.cf(CF_KV)?;
        let stored: Vec<_> = entries
            .iter()
            .filter(|e| e.mod_revision.main <= self.base)
            .map(|e| (cf, schema::revision_key(e.mod_revision)))
            .collect();
        let mut stored = self.store.db.multi_get_cf(stored).into_iter();
        entries
            .iter()
            .map(|e| {
                if e.mod_revision.main <= self.base {
                    let bytes = stored.next().transpose()?.flatten();
                    return decode_entry(e, bytes);
                }
                self.overlay
                    .get(&e.key)
                    .and_then(|changes| changes.iter().find(|c| c.rev == e.mod_revision))
                    .and_then(|c| c.put.as_ref())
                    .map(|p| KeyValue {
                        key: e.key.clone(),
                        create_revision: p.create_revision,
                        mod_revision: e.mod_revision.main,
                        version: p.version,
                        value: p.value.clone(),
                        lease: p.lease,
                    })
                    .ok_or_else(|| {
                        MvccError::Corrupt(format!(
                            "apply batch lost its change at revision {:?}",
                            e.mod_revision
                        ))
                    })
            })
            .collect()
    }
}

impl<'a> ApplyBatch<'a> {
    /// The revision after the requests applied so far (readers still see the published one).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compacted revision, including compactions applied in this batch.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// The RocksDB batch this apply will write, for the caller's own state (the applied log
    /// id, membership, ...), so that it commits atomically with the key-value changes. The
    /// caller must not touch this module's column families.
    pub fn write_batch(&mut self) -> &mut WriteBatch {
        &mut self.wb
    }

    /// Makes puts that attach a lease (non-zero `lease`) fail with
    /// [`MvccError::LeaseNotFound`] unless `exists(lease)`, as etcd's lessor lookup does. The
    /// check must answer the same on every member for the same log position. Without it, any
    /// lease id is accepted.
    pub fn set_lease_check(&mut self, exists: impl Fn(i64) -> bool + Send + 'a) {
        self.lease_exists = Some(Box::new(exists));
    }

    fn check_lease(&self, lease: i64) -> Result<(), MvccError> {
        match &self.lease_exists {
            Some(exists) if lease != 0 && !exists(lease) => Err(MvccError::LeaseNotFound(lease)),
            _ => Ok(()),
        }
    }

    /// etcd's Range, seeing the requests applied so far in this batch.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResult, MvccError> {
        read::range(self, req, self.revision, self.compacted)
    }

    /// etcd's Put: one new revision. Errors: [`MvccError::LeaseNotFound`] (see
    /// [`ApplyBatch::set_lease_check`]), then [`MvccError::KeyNotFound`] for `ignore_value` or
    /// `ignore_lease` on a missing key.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResult, MvccError> {
        self.write_request(|b, w| b.exec_put(w, req))
    }

    /// etcd's DeleteRange: one new revision if any key was deleted, none otherwise.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteResult, MvccError> {
        self.write_request(|b, w| b.exec_delete(w, req))
    }

    /// etcd's Txn: compares (also those of nested transactions) are judged on the state before
    /// the transaction; the chosen operations then run in order, each seeing the ones before.
    /// All its changes share one new revision (sub-revisions 0, 1, ...); a transaction that
    /// changes nothing takes no revision.
    ///
    /// Errors, all before anything changes: [`MvccError::DuplicateKey`] (see
    /// [`check_txn_duplicates`](super::check_txn_duplicates)); [`MvccError::KeyNotFound`],
    /// [`MvccError::LeaseNotFound`];
    /// [`MvccError::FutureRevision`] / [`MvccError::Compacted`] for a read revision.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResult, MvccError> {
        check_txn_duplicates(req)?;
        let (current, compacted) = (self.revision, self.compacted);
        let path = read::eval_path(&*self, req, current)?;
        // etcd's order: the put checks (write transactions only), then the read revisions.
        if !is_txn_read_only(req) {
            self.check_puts(req, &path, current)?;
        }
        read::check_ranges(req, &path, current, compacted)?;
        self.write_request(|b, w| b.exec_txn(w, req, &path))
    }

    /// Deletes every key attached to `lease` (as of the requests applied so far), in one new
    /// revision, as etcd's lease revoke does; none when no key carries it. Returns the
    /// revision after the delete. Whether the lease itself exists is the caller's business.
    pub fn revoke_lease(&mut self, lease: i64) -> Result<i64, MvccError> {
        let mut candidates: Vec<Vec<u8>> = self.store.keys_with_lease(lease);
        candidates.extend(self.overlay.iter().filter_map(|(k, changes)| {
            let last = changes.last()?;
            (last.put.as_ref()?.lease == lease).then(|| k.clone())
        }));
        candidates.sort_unstable();
        candidates.dedup();
        let at = self.revision;
        let mut attached = Vec::new();
        for key in candidates {
            let Some(entry) = self.entries(&KeyRange::Single(&key), at)?.pop() else {
                continue;
            };
            let kv = self.fetch(std::slice::from_ref(&entry))?;
            if kv.first().is_some_and(|kv| kv.lease == lease) {
                attached.push(key);
            }
        }
        self.write_request(|b, w| {
            for key in attached {
                b.record(w, key, None);
            }
            Ok(())
        })?;
        Ok(self.revision)
    }

    /// etcd's Compact: from now on reads below `revision` fail with [`MvccError::Compacted`].
    /// Each key keeps its newest record at or below `revision` (unless that is a delete); the
    /// older records are deleted from RocksDB in this and the following batches, at most
    /// [`MvccOptions::compaction_batch_limit`](super::MvccOptions) per batch, oldest first
    /// (a restart resumes the work). Takes no revision; returns the current one.
    ///
    /// Errors: [`MvccError::FutureRevision`] above the current revision,
    /// [`MvccError::Compacted`] at or below the compacted one.
    pub fn compact(&mut self, revision: i64) -> Result<i64, MvccError> {
        if revision > self.revision {
            return Err(MvccError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= self.compacted {
            return Err(MvccError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        self.compaction = Some(revision);
        self.compacted = revision;
        Ok(self.revision)
    }

    fn write_request<T>(
        &mut self,
        f: impl FnOnce(&mut Self, &mut WriteTxn) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        let mut w = WriteTxn {
            main: self.revision + 1,
            sub: 0,
            touched: Vec::new(),
        };
        match f(self, &mut w) {
            Ok(t) => {
                if w.sub > 0 {
                    self.revision = w.main;
                }
                Ok(t)
            }
            Err(e) => {
                for key in &w.touched {
                    if let Some(changes) = self.overlay.get_mut(key) {
                        changes.retain(|c| c.rev.main != w.main);
                        if changes.is_empty() {
                            self.overlay.remove(key);
                        }
                    }
                }
                Err(e)
            }
        }
    }

    fn record(&mut self, w: &mut WriteTxn, key: Vec<u8>, put: Option<PendingPut>) {
        let rev = Revision::new(w.main, w.sub);
        w.sub += 1;
        w.touched.push(key.clone());
        self.overlay
            .entry(key)
            .or_default()
            .push(Pending { rev, put });
    }

    fn exec_put(&mut self, w: &mut WriteTxn, req: &PutRequest) -> Result<PutResult, MvccError> {
        self.check_lease(req.lease)?;
        let at = w.read_revision();
        let prev = self.entries(&KeyRange::Single(&req.key), at)?.pop();
        let needs_prev = req.prev_kv || req.ignore_value || req.ignore_lease;
        let prev_kv = match &prev {
            Some(e) if needs_prev => self.fetch(std::slice::from_ref(e))?.pop(),
            _ => None,
        };
        let (value, lease) = match (&prev_kv, req.ignore_value, req.ignore_lease) {
            (None, true, _) | (None, _, true) => return Err(MvccError::KeyNotFound),
            (Some(p), iv, il) => (
                if iv {
                    p.value.clone()
                } else {
                    req.value.clone()
                },
                if il { p.lease } else { req.lease },
            ),
            (None, false, false) => (req.value.clone(), req.lease),
        };
        let (create_revision, version) = prev
            .as_ref()
            .map_or((w.main, 1), |e| (e.create_revision, e.version + 1));
        self.record(
            w,
            req.key.clone(),
            Some(PendingPut {
                create_revision,
                version,
                lease,
                value,
            }),
        );
        Ok(PutResult {
            prev_kv: prev_kv.filter(|_| req.prev_kv),
            revision: w.main,
        })
    }

    fn exec_delete(
        &mut self,
        w: &mut WriteTxn,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteResult, MvccError> {
        let entries = self.entries(&KeyRange::new(&req.key, &req.range_end), w.read_revision())?;
        let prev_kvs = if req.prev_kv {
            self.fetch(&entries)?
        } else {
            Vec::new()
        };
        for e in &entries {
            self.record(w, e.key.clone(), None);
        }
        Ok(DeleteResult {
            deleted: entries.len() as i64,
            prev_kvs,
            revision: w.read_revision(),
        })
    }

    fn exec_txn(
        &mut self,
        w: &mut WriteTxn,
        txn: &TxnRequest,
        path: &TxnPath,
    ) -> Result<TxnResult, MvccError> {
        let mut responses = Vec::new();
        for (op, nested) in path.ops(txn) {
            responses.push(match (op, nested) {
                (Op::Range(r), _) => {
                    OpResult::Range(read::range(&*self, r, w.read_revision(), self.compacted)?)
                }
                (Op::Put(p), _) => OpResult::Put(self.exec_put(w, p)?),
                (Op::DeleteRange(d), _) => OpResult::DeleteRange(self.exec_delete(w, d)?),
                (Op::Txn(t), Some(p)) => OpResult::Txn(self.exec_txn(w, t, p)?),
                (Op::Txn(_), None) => {
                    return Err(MvccError::Corrupt("txn path does not match the txn".into()));
                }
            });
        }
        Ok(TxnResult {
            succeeded: path.succeeded,
            responses,
            revision: w.read_revision(),
        })
    }

    /// etcd's `checkPut` over the taken branches: `ignore_value` / `ignore_lease` need the key
    /// to exist before the transaction, and an attached lease must exist.
    fn check_puts(&self, txn: &TxnRequest, path: &TxnPath, at: i64) -> Result<(), MvccError> {
        for (op, nested) in path.ops(txn) {
            match (op, nested) {
                (Op::Put(p), _) => {
                    if (p.ignore_value || p.ignore_lease)
                        && self.entries(&KeyRange::Single(&p.key), at)?.is_empty()
                    {
                        return Err(MvccError::KeyNotFound);
                    }
                    self.check_lease(p.lease)?;
                }
                (Op::Txn(t), Some(np)) => self.check_puts(t, np, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Ends the batch: adds its changes, revisions and due compaction work to the write batch.
    /// The caller then writes it and publishes (see [`PendingApply`]).
    pub fn finish(mut self) -> Result<PendingApply<'a>, MvccError> {
        let store: &'a MvccStore = self.store;
        let kv = store.cf(CF_KV)?;
        let meta = store.cf(CF_META)?;
        let mut events = Vec::new();
        for (key, changes) in &mut self.overlay {
            for c in changes.iter_mut() {
                let (record, event) = match &mut c.put {
                    Some(p) => {
                        let bytes =
                            codec::encode_put(key, p.create_revision, p.version, p.lease, &p.value);
                        // Publishing needs no values: they move to the watchers' events.
                        let kv = KeyValue {
                            key: key.clone(),
                            create_revision: p.create_revision,
                            mod_revision: c.rev.main,
                            version: p.version,
                            value: std::mem::take(&mut p.value),
                            lease: p.lease,
                        };
                        (
                            bytes,
                            Event {
                                kind: EventKind::Put,
                                kv,
                            },
                        )
                    }
                    None => (
                        codec::encode_tombstone(key),
                        Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                mod_revision: c.rev.main,
                                ..Default::default()
                            },
                        },
                    ),
                };
                self.wb.put_cf(kv, schema::revision_key(c.rev), record);
                events.push((c.rev, Arc::new(event)));
            }
        }
        events.sort_unstable_by_key(|(rev, _)| *rev);
        let events = events.into_iter().map(|(_, e)| e).collect();
        if self.revision != self.base {
            self.wb.put_cf(
                meta,
                META_CURRENT_REVISION,
                schema::encode_i64(self.revision),
            );
        }
        if let Some(c) = self.compaction {
            self.wb
                .put_cf(meta, META_COMPACT_SCHEDULED, schema::encode_i64(c));
        }
        let Some(state) = self.state.take() else {
            return Err(MvccError::ApplyInProgress);
        };
        let deletes = state
            .debt
            .len()
            .min(self.store.options.compaction_batch_limit);
        for rev in state.debt.iter().take(deletes) {
            self.wb.delete_cf(kv, schema::revision_key(*rev));
        }
        let finished = (deletes == state.debt.len() && state.finished < state.debt_revision)
            .then_some(state.debt_revision);
        if let Some(f) = finished {
            self.wb
                .put_cf(meta, META_COMPACT_FINISHED, schema::encode_i64(f));
        }
        Ok(PendingApply {
            wb: std::mem::take(&mut self.wb),
            token: PublishToken {
                store: self.store,
                state: Some(state),
                base: self.base,
                revision: self.revision,
                compaction: self.compaction,
                overlay: std::mem::take(&mut self.overlay),
                events,
                deletes,
                finished,
            },
        })
    }
}

impl Drop for ApplyBatch<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.store.return_apply_state(state);
        }
    }
}

/// A finished batch: the RocksDB write to make, and the token that publishes it.
pub struct PendingApply<'a> {
    wb: WriteBatch,
    token: PublishToken<'a>,
}

impl std::fmt::Debug for PendingApply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingApply")
            .field("writes", &self.wb.len())
            .field("token", &self.token)
            .finish()
    }
}

impl<'a> PendingApply<'a> {
    /// The write batch, to add the caller's own state if not done on the [`ApplyBatch`].
    pub fn write_batch(&mut self) -> &mut WriteBatch {
        &mut self.wb
    }

    /// The revision readers will see once published.
    pub fn revision(&self) -> i64 {
        self.token.revision
    }

    /// Writes the batch with `opts` (use `set_sync(true)` for the durability the raft state
    /// machine promises), then publishes it. On a write error nothing is published and the
    /// error is returned; the next [`MvccStore::begin_apply`] checks whether the write landed.
    pub fn commit(self, opts: &WriteOptions) -> Result<i64, MvccError> {
        let (wb, token) = self.into_parts();
        token.store.db.write_opt(wb, opts)?;
        Ok(token.publish())
    }

    /// Splits into the write batch (for the caller to write) and the token to publish after
    /// that write succeeded.
    pub fn into_parts(self) -> (WriteBatch, PublishToken<'a>) {
        (self.wb, self.token)
    }
}

/// Makes a written batch visible to readers. Only one exists at a time; no new batch begins
/// until it is published or dropped.
///
/// The caller must call [`PublishToken::publish`] only after the batch's [`WriteBatch`] was
/// written to RocksDB successfully, and must call it then (dropping it instead after a
/// successful write leaves the store behind; the next [`MvccStore::begin_apply`] detects that
/// and fails with [`MvccError::Unpublished`]).
#[derive(Debug)]
#[must_use = "a written batch must be published"]
pub struct PublishToken<'a> {
    store: &'a MvccStore,
    state: Option<ApplyState>,
    base: i64,
    revision: i64,
    compaction: Option<i64>,
    overlay: Overlay,
    /// The batch's changes as watchers see them, in revision order.
    events: Vec<Arc<Event>>,
    deletes: usize,
    finished: Option<i64>,
}

impl PublishToken<'_> {
    /// The revision readers will see once published.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Publishes the batch: readers see its revision from now on. Returns that revision.
    pub fn publish(mut self) -> i64 {
        let Some(mut state) = self.state.take() else {
            return self.revision;
        };
        let mut removed = Vec::new();
        // Into the window first: a watcher that sees the new revision finds its events there.
        self.store
            .recent_events()
            .push(std::mem::take(&mut self.events));
        {
            let mut p = self.store.write_published();
            debug_assert_eq!(p.revision, self.base, "batches publish in order");
            for (key, changes) in &self.overlay {
                for c in changes {
                    match &c.put {
                        Some(put) => {
                            p.index
                                .restore_put(key, c.rev, put.create_revision, put.version);
                        }
                        None => {
                            p.index.tombstone(key, c.rev);
                        }
                    }
                }
                if let Some(last) = changes.last() {
                    let lease = last.put.as_ref().map_or(0, |put| put.lease);
                    p.leases.set(key, lease);
                }
            }
            p.revision = self.revision;
            if let Some(c) = self.compaction {
                p.compacted = c;
                removed = p.index.compact(c);
            }
        }
        state.debt.drain(..self.deletes);
        if let Some(f) = self.finished {
            state.finished = f;
        }
        if let Some(c) = self.compaction {
            state.scheduled = c;
            state.debt_revision = c;
            state.debt.extend(removed);
            state.debt.make_contiguous().sort_unstable();
        }
        self.store.return_apply_state(state);
        self.revision
    }
}

impl Drop for PublishToken<'_> {
    fn drop(&mut self) {
        if let Some(mut state) = self.state.take() {
            state.unverified = true;
            self.store.return_apply_state(state);
        }
    }
}
