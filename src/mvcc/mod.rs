//! etcd's multi-version key-value model on RocksDB: the state of the KV service.
//!
//! ```text
//!   raft state machine ──▶ MvccStore::begin_apply ──▶ ApplyBatch (put / delete_range / txn / compact)
//!                             finish ──▶ WriteBatch (+ caller's applied log id) ──▶ RocksDB (sync)
//!                             publish ──▶ readers see the new revision
//!   api (reads) ──────────▶ MvccStore::range / read_txn / hash_kv      (any thread, concurrently)
//! ```
//!
//! Model (etcd v3.5): a new store is at revision 1; every write request that changes something
//! takes the next cluster-wide revision (so the first one takes 2); its changes are numbered by
//! sub-revision. Each key has `create_revision`, `mod_revision` and `version`; a delete writes a
//! tombstone and a later put starts the key over at version 1. History stays readable by
//! revision until compacted (a new store has compacted revision 0).
//!
//! Storage: the history in the `mvcc_kv` column family keyed by revision, small metadata in
//! `mvcc_meta` (see [`schema`]); an in-memory key index (etcd's `treeIndex`) rebuilt at open
//! maps keys to revisions. This module knows nothing of raft, gRPC or protobuf, and never opens
//! the database itself.
//!
//! Leases themselves live elsewhere: keys record their lease id, [`MvccStore::keys_with_lease`]
//! lists a lease's keys, and [`ApplyBatch::set_lease_check`] lets the lessor refuse unknown
//! leases. Watchers read the history as a feed of events ([`MvccStore::events_after`]); they are
//! told of new revisions by whoever publishes them (the raft state machine).
//!
//! Applying one batch of committed entries, with the caller's applied log id in the same
//! atomic write:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rampart::mvcc::{self, MvccStore, PutRequest, RangeRequest};
//! # fn demo(db: Arc<rocksdb::DB>) -> Result<(), mvcc::MvccError> {
//! let store = MvccStore::open(db.clone())?;
//! let mut batch = store.begin_apply()?;
//! batch.put(&PutRequest::new("a", "1"))?;
//! let seen = batch.range(&RangeRequest::key("a"))?; // later requests see earlier ones
//! assert_eq!(seen.kvs.len(), 1);
//! batch.write_batch().put(b"applied", b"term-index"); // the caller's own state
//! let mut sync = rocksdb::WriteOptions::default();
//! sync.set_sync(true);
//! let (wb, token) = batch.finish()?.into_parts();
//! db.write_opt(wb, &sync)?; // or finish()?.commit(&sync)
//! token.publish(); // only now do readers see the new revision
//! // As in etcd, a new store is at revision 1 and its first write takes revision 2.
//! assert_eq!(store.range(&RangeRequest::key("a"))?.revision, 2);
//! # Ok(())
//! # }
//! ```

mod apply;
mod check;
mod codec;
mod error;
mod events;
mod index;
mod read;
pub mod schema;
mod store;
mod tally;
mod types;

#[cfg(test)]
mod tests;

pub use apply::{ApplyBatch, PendingApply, PublishToken};
pub use check::{check_txn_duplicates, is_txn_read_only, txn_exceeds_max_ops};
pub use error::MvccError;
pub use events::{Event, EventBatch, EventKind, EventLimits};
pub use schema::{COLUMN_FAMILIES, cf_descriptors, cf_options};
pub use store::{MvccOptions, MvccStore};
pub use tally::KeyTally;
pub use types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteResult, HashKv, KeyValue, Op,
    OpResult, PutRequest, PutResult, RangeRequest, RangeResult, Revision, SortOrder, SortTarget,
    TxnRequest, TxnResult, prefix_range_end,
};
