//! On-disk layout of the raft log: column family names and keys, all in one place.
//!
//! ```text
//! raft_log   index (u64 big-endian)        -> codec::FORMAT_V1 byte + postcard(Entry)
//! raft_meta  "data_version"                -> DATA_VERSION (u32 big-endian), written at creation
//!            "vote"                        -> codec value: Vote
//!            "committed"                   -> codec value: Option<LogId>
//!            "last_purged_log_id"          -> codec value: LogId
//! ```
//!
//! Big-endian index keys make RocksDB's byte order the log order, so the last entry is the
//! last key and a purge is one range delete.

/// Column family holding raft log entries, keyed by log index.
pub const CF_RAFT_LOG: &str = "raft_log";

/// Column family holding raft metadata: vote, committed log id, last purged log id, data version.
pub const CF_RAFT_META: &str = "raft_meta";

/// Every column family the raft log store needs. The database handed to
/// [`LogStore::open`](super::LogStore::open) must have been opened with all of these (plus the
/// default column family RocksDB always has).
pub const COLUMN_FAMILIES: &[&str] = &[CF_RAFT_LOG, CF_RAFT_META];

/// Version of this layout, stored under [`KEY_DATA_VERSION`] when the store is first created.
/// A store refuses to open data written with another version.
pub const DATA_VERSION: u32 = 1;

/// Meta key of the layout version.
pub(crate) const KEY_DATA_VERSION: &[u8] = b"data_version";
/// Meta key of the last saved vote.
pub(crate) const KEY_VOTE: &[u8] = b"vote";
/// Meta key of the last saved committed log id.
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
/// Meta key of the last purged log id.
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";

/// The `raft_log` key of a log index.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a `raft_log` key, or `None` if the key is not 8 bytes long.
pub(crate) fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_in_index_order() {
        let indexes = [0u64, 1, 255, 256, 65_536, u64::MAX - 1, u64::MAX];
        for pair in indexes.windows(2) {
            assert!(log_key(pair[0]) < log_key(pair[1]), "{pair:?}");
        }
        for i in indexes {
            assert_eq!(log_index(&log_key(i)), Some(i));
        }
        assert_eq!(log_index(b"short"), None);
    }
}
