//! [`MvccStore`]: the published state of the key-value service and every read of it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rocksdb::{ColumnFamily, DB, IteratorMode, ReadOptions, SnapshotWithThreadMode, WriteBatch};

use super::codec::{self, Record};
use super::error::MvccError;
use super::events::{RECENT_EVENTS_BYTES, RecentEvents};
use super::index::{IndexEntry, KeyRange, TreeIndex};
use super::read::{self, ReadSource};
use super::schema::{
    self, CF_KV, CF_META, COLUMN_FAMILIES, DATA_VERSION, META_COMPACT_FINISHED,
    META_COMPACT_SCHEDULED, META_CURRENT_REVISION, META_DATA_VERSION,
};
use super::types::{HashKv, KeyValue, RangeRequest, RangeResult, Revision, TxnRequest, TxnResult};

/// Tuning of an [`MvccStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MvccOptions {
    /// Most compacted history records one apply batch deletes (etcd's
    /// `--experimental-compaction-batch-limit`); the rest waits for the next batches.
    pub compaction_batch_limit: usize,
}

impl Default for MvccOptions {
    fn default() -> Self {
        MvccOptions {
            compaction_batch_limit: 10_000,
        }
    }
}

/// Which keys carry which lease, for the current revision.
#[derive(Debug, Default)]
pub(crate) struct LeaseIndex {
    of_key: HashMap<Vec<u8>, i64>,
    keys: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl LeaseIndex {
    /// Attaches `key` to `lease` (0 = to none), detaching it from its previous lease.
    pub(crate) fn set(&mut self, key: &[u8], lease: i64) {
        let old = if lease == 0 {
            self.of_key.remove(key)
        } else {
            self.of_key.insert(key.to_vec(), lease)
        };
        if old == Some(lease) {
            return;
        }
        if let Some(old) = old
            && let Some(set) = self.keys.get_mut(&old)
        {
            set.remove(key);
            if set.is_empty() {
                self.keys.remove(&old);
            }
        }
        if lease != 0 {
            self.keys.entry(lease).or_default().insert(key.to_vec());
        }
    }
}

/// What readers see: always a whole, durable revision.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) index: TreeIndex,
    pub(crate) revision: i64,
    pub(crate) compacted: i64,
    pub(crate) leases: LeaseIndex,
}

/// State owned by whoever applies: one apply batch at a time holds it.
#[derive(Debug, Default)]
pub(crate) struct ApplyState {
    /// History records compacted away in memory but maybe still in RocksDB, ascending.
    pub(crate) debt: VecDeque<Revision>,
    /// The compaction whose removal `debt` completes.
    pub(crate) debt_revision: i64,
    /// Durable `compact_finished_revision`.
    pub(crate) finished: i64,
    /// Durable `compact_scheduled_revision`.
    pub(crate) scheduled: i64,
    /// A finished batch was dropped unpublished: it may or may not have been written.
    pub(crate) unverified: bool,
}

/// etcd's multi-version key-value store on RocksDB: revisions, per-key history, historical
/// reads, transactions, compaction and hashes.
///
/// Writes go through an [`ApplyBatch`](super::ApplyBatch) ([`MvccStore::begin_apply`]);
/// reads ([`MvccStore::range`], [`MvccStore::read_txn`], ...) may run on any thread at the same
/// time. Callers may rely on:
/// - a read sees exactly one revision, all of it: every change of each write request up to
///   that revision and none after it;
/// - a read never sees a revision before its batch was written to RocksDB and published;
/// - reads do not wait on RocksDB writes (they hold a lock only to look up the in-memory index).
///
/// The key index lives in memory and is rebuilt at [`MvccStore::open`] by a scan of the whole
/// history, like etcd's.
#[derive(Debug)]
pub struct MvccStore {
    pub(crate) db: Arc<DB>,
    pub(crate) options: MvccOptions,
    published: RwLock<Published>,
    apply: Mutex<Option<ApplyState>>,
    recent: Mutex<RecentEvents>,
}

/// A read view over published revisions: the index under a short lock, values from a RocksDB
/// snapshot taken under that lock (so no compaction can remove a value the view still needs).
struct View<'a> {
    store: &'a MvccStore,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl ReadSource for View<'_> {
    fn entries(&self, range: &KeyRange<'_>, at: i64) -> Result<Vec<IndexEntry>, MvccError> {
        let p = self.store.read_published();
        check_not_compacted(at, p.compacted)?;
        Ok(p.index.range(range, at))
    }

    fn count(&self, range: &KeyRange<'_>, at: i64) -> Result<usize, MvccError> {
        let p = self.store.read_published();
        check_not_compacted(at, p.compacted)?;
        Ok(p.index.count(range, at))
    }

    fn entries_up_to(
        &self,
        range: &KeyRange<'_>,
        at: i64,
        limit: usize,
    ) -> Result<(Vec<IndexEntry>, usize), MvccError> {
        let p = self.store.read_published();
        check_not_compacted(at, p.compacted)?;
        Ok(p.index.range_up_to(range, at, limit))
    }

    fn fetch(&self, entries: &[IndexEntry]) -> Result<Vec<KeyValue>, MvccError> {
        let cf = self.store.cf(CF_KV)?;
        let keys: Vec<_> = entries
            .iter()
            .map(|e| (cf, schema::revision_key(e.mod_revision)))
            .collect();
        let values = self.snapshot.multi_get_cf(keys);
        entries
            .iter()
            .zip(values)
            .map(|(e, v)| decode_entry(e, v?))
            .collect()
    }
}

fn check_not_compacted(at: i64, compacted: i64) -> Result<(), MvccError> {
    if at < compacted {
        return Err(MvccError::Compacted {
            requested: at,
            compacted,
        });
    }
    Ok(())
}

/// Decodes the record an index entry points to; it must be a put of the same key.
pub(crate) fn decode_entry(e: &IndexEntry, bytes: Option<Vec<u8>>) -> Result<KeyValue, MvccError> {
    let bytes = bytes.ok_or_else(|| {
        MvccError::Corrupt(format!(
            "no record at revision {:?} that the index holds",
            e.mod_revision
        ))
    })?;
    match codec::decode(e.mod_revision, &bytes)? {
        Record::Put(kv) if kv.key == e.key => Ok(kv),
        other => Err(MvccError::Corrupt(format!(
            "record at revision {:?} is not a put of the indexed key: {:?}",
            e.mod_revision,
            other.key()
        ))),
    }
}

fn get_i64(db: &DB, cf: &ColumnFamily, name: &[u8]) -> Result<Option<i64>, MvccError> {
    db.get_cf(cf, name)?
        .map(|v| schema::decode_i64(name, &v))
        .transpose()
}

impl MvccStore {
    /// Opens the store kept in `db`, whose column families must include
    /// [`COLUMN_FAMILIES`](super::COLUMN_FAMILIES). On an empty store it writes the initial
    /// metadata (data version, revision 1 as in etcd, never compacted). Rebuilds the key index by reading the whole
    /// history, and resumes a compaction whose history removal was not finished.
    pub fn open(db: Arc<DB>) -> Result<Self, MvccError> {
        Self::open_with_options(db, MvccOptions::default())
    }

    /// [`MvccStore::open`] with tuning options.
    pub fn open_with_options(db: Arc<DB>, options: MvccOptions) -> Result<Self, MvccError> {
        for name in COLUMN_FAMILIES {
            db.cf_handle(name)
                .ok_or(MvccError::MissingColumnFamily(name))?;
        }
        let store = MvccStore {
            db,
            options,
            published: RwLock::new(Published::default()),
            apply: Mutex::new(None),
            recent: Mutex::new(RecentEvents::starting_at(i64::MAX, RECENT_EVENTS_BYTES)),
        };
        let (published, state) = store.load()?;
        *store.recent_events() =
            RecentEvents::starting_at(published.revision + 1, RECENT_EVENTS_BYTES);
        *store.write_published() = published;
        *store.lock_apply() = Some(state);
        Ok(store)
    }

    fn load(&self) -> Result<(Published, ApplyState), MvccError> {
        let (db, kv, meta) = (&*self.db, self.cf(CF_KV)?, self.cf(CF_META)?);
        match db.get_cf(meta, META_DATA_VERSION)? {
            None => {
                let has_data = db.iterator_cf(kv, IteratorMode::Start).next().is_some()
                    || db.iterator_cf(meta, IteratorMode::Start).next().is_some();
                if has_data {
                    return Err(MvccError::Corrupt(
                        "mvcc data present but no data_version; not written by rampart".into(),
                    ));
                }
                let mut wb = WriteBatch::default();
                wb.put_cf(meta, META_DATA_VERSION, DATA_VERSION.to_be_bytes());
                // As etcd: a new store is at revision 1, so the first write takes revision 2.
                wb.put_cf(meta, META_CURRENT_REVISION, schema::encode_i64(1));
                wb.put_cf(meta, META_COMPACT_SCHEDULED, schema::encode_i64(0));
                wb.put_cf(meta, META_COMPACT_FINISHED, schema::encode_i64(0));
                let mut opts = rocksdb::WriteOptions::default();
                opts.set_sync(true);
                db.write_opt(wb, &opts)?;
            }
            Some(v) => {
                let found = u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                    MvccError::Corrupt(format!("data_version has {} bytes, want 8", v.len()))
                })?);
                if found != DATA_VERSION {
                    return Err(MvccError::UnsupportedDataVersion {
                        found,
                        supported: DATA_VERSION,
                    });
                }
            }
        }
        let revision = get_i64(db, meta, META_CURRENT_REVISION)?
            .ok_or_else(|| MvccError::Corrupt("current_revision missing".into()))?;
        let scheduled = get_i64(db, meta, META_COMPACT_SCHEDULED)?.unwrap_or(0);
        let finished = get_i64(db, meta, META_COMPACT_FINISHED)?.unwrap_or(0);

        let mut p = Published {
            revision,
            compacted: scheduled,
            ..Default::default()
        };
        // Tombstones whose puts an unfinished compaction already removed.
        let mut orphans = Vec::new();
        for item in db.iterator_cf(kv, IteratorMode::Start) {
            let (k, v) = item?;
            let rev = schema::parse_revision_key(&k)?;
            if rev.main > revision {
                return Err(MvccError::Corrupt(format!(
                    "record at revision {rev:?} is newer than the current revision {revision}"
                )));
            }
            match codec::decode(rev, &v)? {
                Record::Put(kv) => {
                    p.index
                        .restore_put(&kv.key, rev, kv.create_revision, kv.version);
                    p.leases.set(&kv.key, kv.lease);
                }
                Record::Tombstone(key) => {
                    if !p.index.tombstone(&key, rev) {
                        if rev.main > scheduled {
                            return Err(MvccError::Corrupt(format!(
                                "tombstone at revision {rev:?} of a key that does not exist"
                            )));
                        }
                        orphans.push(rev);
                    }
                    p.leases.set(&key, 0);
                }
            }
        }
        let mut debt = if scheduled > 0 {
            p.index.compact(scheduled)
        } else {
            Vec::new()
        };
        debt.extend(orphans);
        debt.sort_unstable();
        let state = ApplyState {
            debt: debt.into(),
            debt_revision: scheduled,
            finished,
            scheduled,
            unverified: false,
        };
        Ok((p, state))
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily, MvccError> {
        self.db
            .cf_handle(name)
            .ok_or(MvccError::MissingColumnFamily(name))
    }

    // A panic while the index is being changed leaves it half-updated; carrying on would serve
    // wrong data, so a poisoned lock propagates the panic.
    pub(crate) fn read_published(&self) -> RwLockReadGuard<'_, Published> {
        self.published
            .read()
            .expect("mvcc index lock poisoned by an earlier panic")
    }

    pub(crate) fn write_published(&self) -> RwLockWriteGuard<'_, Published> {
        self.published
            .write()
            .expect("mvcc index lock poisoned by an earlier panic")
    }

    pub(crate) fn recent_events(&self) -> MutexGuard<'_, RecentEvents> {
        // The window holds only copies of durable history: whatever a panic left is safe.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_apply(&self) -> MutexGuard<'_, Option<ApplyState>> {
        self.apply
            .lock()
            .expect("mvcc apply lock poisoned by an earlier panic")
    }

    /// Takes the apply state for a new batch, checking the store after an unpublished batch.
    pub(crate) fn take_apply_state(&self) -> Result<ApplyState, MvccError> {
        let mut slot = self.lock_apply();
        let mut state = slot.take().ok_or(MvccError::ApplyInProgress)?;
        if state.unverified {
            if let Err(e) = self.verify_durable(&mut state) {
                *slot = Some(state);
                return Err(e);
            }
            state.unverified = false;
        }
        Ok(state)
    }

    /// Gives the apply state back when a batch ends.
    pub(crate) fn return_apply_state(&self, state: ApplyState) {
        *self.lock_apply() = Some(state);
    }

    /// After a batch was finished but not published: its write either never happened (then
    /// RocksDB still matches what readers see) or did (then this store is behind and must be
    /// reopened).
    fn verify_durable(&self, state: &mut ApplyState) -> Result<(), MvccError> {
        let meta = self.cf(CF_META)?;
        let durable = get_i64(&self.db, meta, META_CURRENT_REVISION)?
            .ok_or_else(|| MvccError::Corrupt("current_revision missing".into()))?;
        let published = self.read_published().revision;
        if durable != published {
            return Err(MvccError::Unpublished {
                what: "current revision",
                durable,
                published,
            });
        }
        let scheduled = get_i64(&self.db, meta, META_COMPACT_SCHEDULED)?.unwrap_or(0);
        if scheduled != state.scheduled {
            return Err(MvccError::Unpublished {
                what: "compaction revision",
                durable: scheduled,
                published: state.scheduled,
            });
        }
        // A dropped batch may have finished a compaction's history removal; deleting the same
        // records again is harmless, so only the marker needs catching up.
        state.finished = get_i64(&self.db, meta, META_COMPACT_FINISHED)?.unwrap_or(0);
        Ok(())
    }

    /// A view of the newest published revision: (view, revision, compacted revision).
    fn view(&self) -> (View<'_>, i64, i64) {
        let p = self.read_published();
        let snapshot = self.db.snapshot();
        let (revision, compacted) = (p.revision, p.compacted);
        drop(p);
        (
            View {
                store: self,
                snapshot,
            },
            revision,
            compacted,
        )
    }

    /// The revision of the last published write request (etcd's `header.revision`); 1 on a
    /// new store, whose first write takes revision 2, as in etcd.
    pub fn current_revision(&self) -> i64 {
        self.read_published().revision
    }

    /// The revision of the last compaction (0 on a store never compacted); reads below it fail
    /// with [`MvccError::Compacted`].
    pub fn compacted_revision(&self) -> i64 {
        self.read_published().compacted
    }

    /// etcd's Range on the newest published revision (or the revision the request names).
    /// Errors: [`MvccError::FutureRevision`], [`MvccError::Compacted`], storage errors.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResult, MvccError> {
        let (view, revision, compacted) = self.view();
        read::range(&view, req, revision, compacted)
    }

    /// Serves a transaction that writes nothing (see
    /// [`is_txn_read_only`](super::is_txn_read_only)) at the newest published revision, without
    /// an apply batch: etcd's serializable read-only Txn. Every compare and read sees the same
    /// revision. Errors with [`MvccError::NotReadOnly`] if any branch writes.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResult, MvccError> {
        let (view, revision, compacted) = self.view();
        read::read_txn(&view, req, revision, compacted)
    }

    /// The keys that carry `lease` at the current revision, ascending (for lease revocation
    /// and expiry, which delete them through an apply batch).
    pub fn keys_with_lease(&self, lease: i64) -> Vec<Vec<u8>> {
        self.read_published()
            .leases
            .keys
            .get(&lease)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of compacted history records still waiting to be deleted from RocksDB; each
    /// apply batch deletes up to [`MvccOptions::compaction_batch_limit`] of them.
    pub fn pending_compaction_deletes(&self) -> usize {
        self.lock_apply().as_ref().map_or(0, |s| s.debt.len())
    }

    /// Deletes the next chunk (at most [`MvccOptions::compaction_batch_limit`]) of compacted
    /// history records, with `opts`, and returns how many are still waiting. Every apply batch
    /// does this too; call it to finish a compaction while no requests come. It changes
    /// nothing readers can see. Errors as [`MvccStore::begin_apply`] or the RocksDB write.
    pub fn remove_compacted(&self, opts: &rocksdb::WriteOptions) -> Result<usize, MvccError> {
        self.begin_apply()?.finish()?.commit(opts)?;
        Ok(self.pending_compaction_deletes())
    }

    /// etcd's HashKV: a CRC-32 (IEEE) of every history record with revision `<= revision` (0 or
    /// negative = current) that survived compaction, in revision order, over our record encoding. Members
    /// that applied the same requests get the same hash, whatever their batching and however
    /// far their compacted-record removal has got. Not comparable with etcd's own hashes.
    /// Errors: [`MvccError::Compacted`] when `revision <= ` the compacted revision,
    /// [`MvccError::FutureRevision`] when it is newer than the current one.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        let p = self.read_published();
        let (current, compacted) = (p.revision, p.compacted);
        if revision > 0 && revision <= compacted {
            return Err(MvccError::Compacted {
                requested: revision,
                compacted,
            });
        }
        if revision > current {
            return Err(MvccError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let at = if revision <= 0 { current } else { revision };
        let keep = p.index.revisions_at_or_below(compacted);
        let snapshot = self.db.snapshot();
        drop(p);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(CF_KV.as_bytes());
        self.hash_records(&snapshot, &mut hasher, at, compacted, &keep)?;
        Ok(HashKv {
            hash: hasher.finalize(),
            compact_revision: compacted,
            hash_revision: at,
            revision: current,
        })
    }

    /// A CRC-32 of the whole logical state: every surviving history record plus the current
    /// and compacted revisions. Returns (hash, revision). Like [`MvccStore::hash_kv`] it is
    /// independent of batching and of pending record removal (etcd hashes its raw database
    /// file instead, which is not comparable across members mid-compaction).
    pub fn hash(&self) -> Result<(u32, i64), MvccError> {
        let p = self.read_published();
        let (current, compacted) = (p.revision, p.compacted);
        let keep = p.index.revisions_at_or_below(compacted);
        let snapshot = self.db.snapshot();
        drop(p);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(CF_KV.as_bytes());
        self.hash_records(&snapshot, &mut hasher, current, compacted, &keep)?;
        hasher.update(CF_META.as_bytes());
        hasher.update(&current.to_be_bytes());
        hasher.update(&compacted.to_be_bytes());
        Ok((hasher.finalize(), current))
    }

    fn hash_records(
        &self,
        snapshot: &SnapshotWithThreadMode<'_, DB>,
        hasher: &mut crc32fast::Hasher,
        at: i64,
        compacted: i64,
        keep: &HashSet<Revision>,
    ) -> Result<(), MvccError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(schema::revision_key(Revision::new(at + 1, 0)).to_vec());
        for item in snapshot.iterator_cf_opt(self.cf(CF_KV)?, opts, IteratorMode::Start) {
            let (k, v) = item?;
            let rev = schema::parse_revision_key(&k)?;
            if rev.main <= compacted && !keep.contains(&rev) {
                continue;
            }
            hasher.update(&k);
            hasher.update(&v);
        }
        Ok(())
    }
}
