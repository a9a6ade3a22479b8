//! The one error type of the `mvcc` module.

/// What can go wrong in the `mvcc` module.
///
/// `api/status.rs` maps these to etcd's exact status strings; the `Display` texts here add
/// detail for logs and are not meant for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// The revision asked for is older than the compacted revision (etcd: `mvcc: required
    /// revision has been compacted`).
    #[error(
        "mvcc: required revision {requested} has been compacted (compacted revision is \
         {compacted}); read at a newer revision"
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compacted revision.
        compacted: i64,
    },
    /// The revision asked for is newer than the store's (etcd: `mvcc: required revision is a
    /// future revision`).
    #[error(
        "mvcc: required revision {requested} is a future revision (current revision is \
         {current})"
    )]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// A put with `ignore_value` or `ignore_lease` on a key that does not exist (etcd:
    /// `etcdserver: key not found`).
    #[error(
        "etcdserver: key not found (put with ignore_value or ignore_lease needs an existing key)"
    )]
    KeyNotFound,
    /// A put names a lease that does not exist (etcd: `etcdserver: requested lease not
    /// found`); only reported when the batch has a lease check
    /// ([`crate::mvcc::ApplyBatch::set_lease_check`]).
    #[error("etcdserver: requested lease not found (lease {0:x}); grant it first")]
    LeaseNotFound(i64),
    /// A transaction writes one key twice (etcd: `etcdserver: duplicate key given in txn
    /// request`).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A write operation was given to a read-only entry point.
    #[error("mvcc: the transaction writes; it must be applied through an apply batch")]
    NotReadOnly,
    /// Another apply batch is open; batches are applied one at a time.
    #[error("mvcc: another apply batch is in progress; finish or drop it first")]
    ApplyInProgress,
    /// A finished batch was dropped without being published, and RocksDB shows it was written:
    /// the in-memory state is behind the durable one.
    #[error(
        "mvcc: a written apply batch was never published (durable {what} {durable}, in memory \
         {published}); reopen the store"
    )]
    Unpublished {
        /// Which value differs.
        what: &'static str,
        /// Value found in RocksDB.
        durable: i64,
        /// Value in memory.
        published: i64,
    },
    /// A column family the module needs is missing from the database.
    #[error("mvcc: column family {0} is missing; open the database with mvcc::COLUMN_FAMILIES")]
    MissingColumnFamily(&'static str),
    /// The data was written by an unknown version of this module.
    #[error("mvcc: data version {found} is not supported (this build reads version {supported})")]
    UnsupportedDataVersion {
        /// The version found on disk.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// RocksDB failed.
    #[error("mvcc: storage error")]
    Storage(#[source] rocksdb::Error),
    /// Stored data does not decode or contradicts itself.
    #[error("mvcc: corrupt data: {0}")]
    Corrupt(String),
}

impl From<rocksdb::Error> for MvccError {
    fn from(e: rocksdb::Error) -> Self {
        MvccError::Storage(e)
    }
}
