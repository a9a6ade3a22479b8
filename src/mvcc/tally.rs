//! Counting a key space from raw records, without opening a store: what offline tools
//! (`snapshot status`) report about a copy of the MVCC column families.

use std::collections::HashSet;

use super::codec::{self, Record};
use super::error::MvccError;
use super::schema::{self, CF_KV, CF_META, META_CURRENT_REVISION};

/// The live keys and the current revision of a key space, fed record by record.
#[derive(Debug, Default)]
pub struct KeyTally {
    live: HashSet<Vec<u8>>,
    current_revision: i64,
}

impl KeyTally {
    /// An empty tally.
    pub fn new() -> KeyTally {
        KeyTally::default()
    }

    /// Takes one record of column family `cf` (records of other column families are ignored).
    /// The history records of [`CF_KV`] must come in key order, which is revision order, as
    /// RocksDB iterates them.
    pub fn add(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<(), MvccError> {
        if cf == CF_KV {
            let rev = schema::parse_revision_key(key)?;
            match codec::decode(rev, value)? {
                Record::Put(kv) => {
                    self.live.insert(kv.key);
                }
                Record::Tombstone(k) => {
                    self.live.remove(&k);
                }
            }
        } else if cf == CF_META && key == META_CURRENT_REVISION {
            self.current_revision = schema::decode_i64(key, value)?;
        }
        Ok(())
    }

    /// Keys that exist at the current revision (put and not deleted since).
    pub fn live_keys(&self) -> u64 {
        self.live.len() as u64
    }

    /// The revision of the last write (0 when no meta record was seen).
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::types::Revision;

    #[test]
    fn counts_keys_alive_at_the_current_revision() {
        let mut t = KeyTally::new();
        let put = |t: &mut KeyTally, rev: i64, sub: i64, key: &[u8]| {
            let k = schema::revision_key(Revision::new(rev, sub));
            t.add(CF_KV, &k, &codec::encode_put(key, rev, 1, 0, b"v"))
                .unwrap();
        };
        put(&mut t, 2, 0, b"a");
        put(&mut t, 3, 0, b"b");
        put(&mut t, 4, 0, b"a");
        let k = schema::revision_key(Revision::new(5, 0));
        t.add(CF_KV, &k, &codec::encode_tombstone(b"b")).unwrap();
        put(&mut t, 6, 0, b"c");
        t.add(CF_META, META_CURRENT_REVISION, &schema::encode_i64(6))
            .unwrap();
        t.add("lease", b"anything", b"else").unwrap();
        assert_eq!(t.live_keys(), 2);
        assert_eq!(t.current_revision(), 6);
    }

    #[test]
    fn a_corrupt_record_is_an_error() {
        let mut t = KeyTally::new();
        assert!(t.add(CF_KV, b"short", b"").is_err());
        let k = schema::revision_key(Revision::new(2, 0));
        assert!(t.add(CF_KV, &k, &[9, 9]).is_err());
    }
}
