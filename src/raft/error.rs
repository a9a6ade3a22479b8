//! Errors of the raft log store.

use std::sync::Arc;

/// What went wrong opening, reading or writing the raft log store.
///
/// openraft's storage traits speak `std::io::Error`; there each of these is wrapped with
/// `io::Error::other`, so the cause chain stays intact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogStoreError {
    /// The database was opened without a column family the log store needs.
    #[error(
        "RocksDB column family {0:?} is missing; open the database with every name in raft::COLUMN_FAMILIES"
    )]
    MissingColumnFamily(&'static str),

    /// The data was written by a layout version this binary does not understand.
    #[error(
        "raft log data version is {found}, this binary reads version {expected}; run the rampart release that wrote it, or restore the member from a snapshot"
    )]
    UnsupportedDataVersion {
        /// The version found on disk.
        found: u32,
        /// The version this binary writes and reads.
        expected: u32,
    },

    /// A stored value could not be decoded: the data is corrupt or of an unknown format.
    #[error("cannot decode the stored {what}; the raft log is corrupt or from a newer release")]
    Decode {
        /// Which value (for example `log entry 42`).
        what: String,
        /// Why decoding failed.
        #[source]
        source: postcard::Error,
    },

    /// A stored value has a format byte this binary does not know.
    #[error("the stored {what} has format {format}, this binary reads format {expected}")]
    UnknownFormat {
        /// Which value.
        what: String,
        /// The format byte found.
        format: u8,
        /// The format byte this binary writes.
        expected: u8,
    },

    /// A value could not be encoded (should not happen for the types we store).
    #[error("cannot encode the {what}")]
    Encode {
        /// Which value.
        what: &'static str,
        /// Why encoding failed.
        #[source]
        source: postcard::Error,
    },

    /// The log has a gap where an entry must be: the data is corrupt.
    #[error(
        "raft log entry {missing} is missing between entries that are present; the raft log is corrupt"
    )]
    Hole {
        /// The first missing index.
        missing: u64,
    },

    /// A log key is not an 8-byte big-endian index, or the entry under it has another index.
    #[error(
        "raft log key {key:02x?} does not match the entry stored under it; the raft log is corrupt"
    )]
    BadLogKey {
        /// The offending key.
        key: Vec<u8>,
    },

    /// The database holds raft data but no data version: it was not written by this store.
    #[error(
        "the raft_meta column family has data but no data_version key; this database was not written by rampart"
    )]
    MissingDataVersion,

    /// A log was to be seeded in a database that already holds raft data.
    #[error("the database already holds a raft log; seed only a new database")]
    NotEmpty,

    /// RocksDB failed.
    #[error("RocksDB failed on the raft log")]
    Rocks(
        #[from]
        #[source]
        rocksdb::Error,
    ),

    /// A write failed; the log writer then refuses every later write too, since applying
    /// them could leave a hole in the log. The member must be restarted.
    #[error(
        "a raft log write failed and the log accepts no more writes; restart the member once the cause is fixed"
    )]
    WriterFailed(#[source] Arc<LogStoreError>),

    /// The log writer thread has exited (the store is shutting down).
    #[error("the raft log writer has stopped")]
    WriterStopped,

    /// The log writer thread could not be started.
    #[error("cannot start the raft log writer thread")]
    SpawnWriter(#[source] std::io::Error),

    /// A blocking RocksDB task could not be run to completion.
    #[error("a blocking raft log task failed")]
    Blocking(#[source] tokio::task::JoinError),
}

impl From<LogStoreError> for std::io::Error {
    fn from(e: LogStoreError) -> Self {
        std::io::Error::other(e)
    }
}

/// Why a snapshot file could not be read, checked or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// The file is not a complete, intact rampart snapshot: truncated, altered, or another
    /// format. Nothing was written.
    #[error(
        "{} is not an intact rampart snapshot: {reason}; use a file written by `rampart snapshot save`",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read snapshot {}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The restored state could not be written.
    #[error("cannot write the restored state")]
    Write(#[source] std::io::Error),
}
