//! The member's one RocksDB instance: every column family of every module, opened together
//! so that the raft log and the state share one write-ahead log (see `raft::state_machine`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};

use crate::{lease, mvcc, raft};

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
