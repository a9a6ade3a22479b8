//! The binary encoding of one history record (a value in [`super::schema::CF_KV`]).
//!
//! Format 1, all integers unsigned LEB128 (i64 fields cast to u64):
//!
//! ```text
//! put:       0x01 0x00 key_len key create_revision version lease value...
//! tombstone: 0x01 0x01 key_len key
//! ```
//!
//! The first byte is the format; a reader refuses formats it does not know. The mod revision
//! is the record's RocksDB key, so it is not repeated here. The encoding is deterministic, so
//! equal histories hash equal on every member.

use super::error::MvccError;
use super::types::{KeyValue, Revision};

const FORMAT_1: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;

/// One decoded history record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A put; `mod_revision` is filled from the record's revision.
    Put(KeyValue),
    /// A delete of `key`.
    Tombstone(Vec<u8>),
}

impl Record {
    /// The user key of the record.
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Record::Put(kv) => &kv.key,
            Record::Tombstone(k) => k,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, MvccError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf
            .split_first()
            .ok_or_else(|| MvccError::Corrupt("record ends inside a varint".into()))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(MvccError::Corrupt(
        "record varint longer than 10 bytes".into(),
    ))
}

/// Encodes a put (the mod revision is the record's RocksDB key, not stored here).
pub(crate) fn encode_put(
    key: &[u8],
    create_revision: i64,
    version: i64,
    lease: i64,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + value.len() + 24);
    out.push(FORMAT_1);
    out.push(KIND_PUT);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(&mut out, create_revision as u64);
    put_varint(&mut out, version as u64);
    put_varint(&mut out, lease as u64);
    out.extend_from_slice(value);
    out
}

/// Encodes a tombstone of `key`.
pub(crate) fn encode_tombstone(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 4);
    out.push(FORMAT_1);
    out.push(KIND_TOMBSTONE);
    put_varint(&mut out, key.len() as u64);
    out.extend_from_slice(key);
    out
}

/// Decodes the record stored at `rev`.
pub(crate) fn decode(rev: Revision, bytes: &[u8]) -> Result<Record, MvccError> {
    let corrupt = |what: &str| MvccError::Corrupt(format!("record at revision {rev:?}: {what}"));
    let (&format, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    if format != FORMAT_1 {
        return Err(corrupt(&format!("unknown record format {format}")));
    }
    let (&kind, mut rest) = rest.split_first().ok_or_else(|| corrupt("no kind"))?;
    let key_len = usize::try_from(get_varint(&mut rest)?).map_err(|_| corrupt("key length"))?;
    if key_len > rest.len() {
        return Err(corrupt("key longer than record"));
    }
    let (key, mut rest) = rest.split_at(key_len);
    match kind {
        KIND_TOMBSTONE if rest.is_empty() => Ok(Record::Tombstone(key.to_vec())),
        KIND_TOMBSTONE => Err(corrupt("trailing bytes after tombstone")),
        KIND_PUT => {
            let create_revision = get_varint(&mut rest)? as i64;
            let version = get_varint(&mut rest)? as i64;
            let lease = get_varint(&mut rest)? as i64;
            Ok(Record::Put(KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev.main,
                version,
                value: rest.to_vec(),
                lease,
            }))
        }
        other => Err(corrupt(&format!("unknown record kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_tombstone_records_round_trip() {
        let rev = Revision::new(300, 2);
        let kv = KeyValue {
            key: b"k\x00\xff".to_vec(),
            create_revision: 7,
            mod_revision: 300,
            version: 1 << 40,
            value: vec![9; 1000],
            lease: -5,
        };
        let bytes = encode_put(&kv.key, kv.create_revision, kv.version, kv.lease, &kv.value);
        assert_eq!(decode(rev, &bytes).unwrap(), Record::Put(kv));
        let empty = KeyValue {
            mod_revision: 300,
            ..Default::default()
        };
        assert_eq!(
            decode(rev, &encode_put(b"", 0, 0, 0, b"")).unwrap(),
            Record::Put(empty)
        );
        assert_eq!(
            decode(rev, &encode_tombstone(b"gone")).unwrap(),
            Record::Tombstone(b"gone".to_vec())
        );
    }

    #[test]
    fn damaged_records_are_refused() {
        let rev = Revision::new(1, 0);
        for bad in [
            &b""[..],
            &[2, 0, 0][..],
            &[1, 9, 0][..],
            &[1, 0, 5, b'a'][..],
            &[1, 1, 1, b'a', b'x'][..],
            &[1, 0, 0, 0x80][..],
        ] {
            assert!(decode(rev, bad).is_err(), "{bad:?}");
        }
    }
}
