//! Where the `mvcc` module keeps its data in RocksDB: column family names, their options and
//! key layouts, all in one place.
//!
//! - [`CF_KV`]: the key-value history. One entry per change; the RocksDB key is the revision
//!   (`main` then `sub`, each big-endian u64, 16 bytes), so iteration is revision order; the
//!   value is a record (see `codec.rs`) holding the user key and either the put's fields or a
//!   tombstone mark.
//! - [`CF_META`]: small values: the data version (written when the store is first created),
//!   the current revision, the scheduled and the finished compaction revision. All integers
//!   big-endian.
//!
//! The opener of the database (elsewhere) creates these column families with
//! [`cf_descriptors`]; this module never opens a database itself.

use rocksdb::{BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, Options};

use super::error::MvccError;
use super::types::Revision;

/// Column family of the key-value history (revision-keyed).
pub const CF_KV: &str = "mvcc_kv";
/// Column family of the store's metadata (revisions, data version).
pub const CF_META: &str = "mvcc_meta";
/// Every column family this module reads or writes.
pub const COLUMN_FAMILIES: &[&str] = &[CF_KV, CF_META];

/// Version of the on-disk layout written by this build; stored in [`CF_META`] under
/// `data_version` when the store is created. A build refuses data of another version.
pub const DATA_VERSION: u64 = 1;

/// Meta key: layout version, u64.
pub(crate) const META_DATA_VERSION: &[u8] = b"data_version";
/// Meta key: revision of the last write request, i64; 1 in a new store (as etcd: the first
/// write takes revision 2).
pub(crate) const META_CURRENT_REVISION: &[u8] = b"current_revision";
/// Meta key: revision of the last accepted compaction, i64, 0 in a new store. Reads below it
/// fail from the moment it is durable, even while old history is still being removed.
pub(crate) const META_COMPACT_SCHEDULED: &[u8] = b"compact_scheduled_revision";
/// Meta key: revision of the last compaction whose history removal completed, i64.
pub(crate) const META_COMPACT_FINISHED: &[u8] = b"compact_finished_revision";

/// Options for the column family `name` (one of [`COLUMN_FAMILIES`]); the caller may add
/// database-wide settings (create_if_missing, ...) to its own `Options`.
pub fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == CF_KV {
        // Values are user data, often text: LZ4 is cheap on 2 cores. Point lookups by revision
        // dominate reads, so whole-key bloom filters pay off.
        opts.set_compression_type(DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        opts.set_block_based_table_factory(&table);
    }
    opts
}

/// Descriptors for every column family of this module, to pass to `DB::open_cf_descriptors`.
pub fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    COLUMN_FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)))
        .collect()
}

/// Length of a [`CF_KV`] key.
pub(crate) const REVISION_KEY_LEN: usize = 16;

/// The [`CF_KV`] key of `rev`. Revisions are never negative, so the big-endian bytes sort like
/// the numbers.
pub(crate) fn revision_key(rev: Revision) -> [u8; REVISION_KEY_LEN] {
    let mut k = [0u8; REVISION_KEY_LEN];
    k[..8].copy_from_slice(&rev.main.to_be_bytes());
    k[8..].copy_from_slice(&rev.sub.to_be_bytes());
    k
}

/// Parses a [`CF_KV`] key.
pub(crate) fn parse_revision_key(k: &[u8]) -> Result<Revision, MvccError> {
    let bytes: [u8; REVISION_KEY_LEN] = k
        .try_into()
        .map_err(|_| MvccError::Corrupt(format!("kv key has {} bytes, want 16", k.len())))?;
    let mut main = [0u8; 8];
    let mut sub = [0u8; 8];
    main.copy_from_slice(&bytes[..8]);
    sub.copy_from_slice(&bytes[8..]);
    let rev = Revision::new(i64::from_be_bytes(main), i64::from_be_bytes(sub));
    if rev.main < 0 || rev.sub < 0 {
        return Err(MvccError::Corrupt(format!(
            "negative revision in kv key {rev:?}"
        )));
    }
    Ok(rev)
}

/// Encodes a meta integer.
pub(crate) fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes a meta integer stored under `name`.
pub(crate) fn decode_i64(name: &[u8], v: &[u8]) -> Result<i64, MvccError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| {
        MvccError::Corrupt(format!(
            "meta {} has {} bytes, want 8",
            String::from_utf8_lossy(name),
            v.len()
        ))
    })?;
    Ok(i64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_keys_sort_like_revisions() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(i64::MAX, 3),
        ];
        for w in revs.windows(2) {
            assert!(revision_key(w[0]) < revision_key(w[1]));
        }
        for r in revs {
            assert_eq!(parse_revision_key(&revision_key(r)).unwrap(), r);
        }
        assert!(parse_revision_key(b"short").is_err());
    }
}
