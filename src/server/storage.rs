//! The member's one RocksDB instance: every column family of every module, opened together
//! so that the raft log and the state share one write-ahead log (see `raft::state_machine`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};

use crate::{lease, mvcc, raft};

/// Directory, inside a member's data directory, of its RocksDB database.
pub const DB_DIR: &str = "db";

/// Names of every column family, in one list.
pub fn all_column_families() -> Vec<String> {
    raft::COLUMN_FAMILIES
        .iter()
        .chain(mvcc::COLUMN_FAMILIES)
        .chain(lease::COLUMN_FAMILIES)
        .chain([raft::CF_SM_META].iter())
        .map(|s| (*s).to_owned())
        .collect()
}

/// Opens (creating if needed) the member's database in `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Two cores: one background job for flushes, one for compactions.
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    // The raft log writer flushes and syncs the WAL itself after each batch (see
    // `raft::log_store`); other writes only fill the WAL buffer and never wait on an fsync.
    opts.set_manual_wal_flush(true);
    let mut descriptors: Vec<ColumnFamilyDescriptor> = mvcc::cf_descriptors();
    descriptors.extend(lease::cf_descriptors());
    for name in raft::COLUMN_FAMILIES
        .iter()
        .chain([raft::CF_SM_META].iter())
    {
        descriptors.push(ColumnFamilyDescriptor::new(*name, Options::default()));
    }
    DB::open_cf_descriptors(&opts, dir, descriptors).map(Arc::new)
}

/// Default-column-family keys of the IDs a member keeps from its first start.
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const KEY_MEMBER_ID: &[u8] = b"member_id";

/// The (cluster ID, member ID) stored at the member's first start, if any.
pub fn read_ids(db: &DB) -> Result<Option<(u64, u64)>, rocksdb::Error> {
    let read = |key: &[u8]| -> Result<Option<u64>, rocksdb::Error> {
        Ok(db
            .get(key)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes))
    };
    match (read(KEY_CLUSTER_ID)?, read(KEY_MEMBER_ID)?) {
        (Some(cluster), Some(member)) => Ok(Some((cluster, member))),
        _ => Ok(None),
    }
}

/// Stores the member's (cluster ID, member ID), synced: a restarted member keeps them whatever
/// its flags say, as etcd does.
pub fn write_ids(db: &DB, (cluster, member): (u64, u64)) -> Result<(), rocksdb::Error> {
    let mut batch = rocksdb::WriteBatch::default();
    batch.put(KEY_CLUSTER_ID, cluster.to_be_bytes());
    batch.put(KEY_MEMBER_ID, member.to_be_bytes());
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)
}
