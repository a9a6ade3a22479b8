//! Encoding of stored values: one format byte, then the value in postcard.
//!
//! postcard is compact (varint integers, no field names) and has a stable, documented wire
//! format; the format byte lets a later release change the encoding of single values and
//! still read old ones. openraft's types keep their serde layout stable across releases for
//! positional formats like this one (see `SnapshotMeta`'s compatibility note in openraft).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::LogStoreError;

/// The format byte written in front of every value.
pub(crate) const FORMAT_V1: u8 = 1;

/// Encode `value` as `FORMAT_V1` + postcard.
pub(crate) fn encode<T: Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, LogStoreError> {
    let out = vec![FORMAT_V1];
    postcard::to_extend(value, out).map_err(|source| LogStoreError::Encode { what, source })
}

/// Decode a value written by [`encode`]; `what` names it in errors.
pub(crate) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, LogStoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|source| LogStoreError::Decode {
                what: what(),
                source,
            })
        }
        Some((&format, _)) => Err(LogStoreError::UnknownFormat {
            what: what(),
            format,
            expected: FORMAT_V1,
        }),
        None => Err(LogStoreError::UnknownFormat {
            what: what(),
            format: 0,
            expected: FORMAT_V1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::raft::types::{Command, Entry, LogId, Membership, Node, Vote};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_std::LeaderId::<u64, u64>::new_committed(term, 1),
            index,
        )
    }

    #[test]
    fn entries_round_trip_and_stay_compact() {
        let normal = Entry::new_normal(log_id(3, 7), Command(Bytes::from_static(b"put k v")));
        let bytes = encode(&normal, "entry").unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        // format byte + term + index + payload tag + length + 7 bytes: no field names.
        assert!(bytes.len() <= 16, "{} bytes: {bytes:?}", bytes.len());
        let back: Entry = decode(&bytes, || "entry".into()).unwrap();
        assert_eq!(back, normal);

        let node = Node {
            name: "m1".into(),
            peer_urls: vec!["https://10.0.0.1:2380".into()],
            client_urls: vec!["https://10.0.0.1:2379".into()],
        };
        let membership = Membership::new(
            vec![[1u64].into()],
            [(1u64, node)]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        let member = Entry::new_membership(log_id(1, 1), membership);
        let back: Entry = decode(&encode(&member, "entry").unwrap(), || "entry".into()).unwrap();
        assert_eq!(back, member);

        let blank = Entry::new_blank(log_id(2, 9));
        let back: Entry = decode(&encode(&blank, "entry").unwrap(), || "entry".into()).unwrap();
        assert_eq!(back, blank);
    }

    #[test]
    fn votes_round_trip() {
        use openraft::vote::RaftVote;
        let vote = Vote::from_leader_id(openraft::vote::RaftLeaderId::new(5, 2), true);
        let back: Vote = decode(&encode(&vote, "vote").unwrap(), || "vote".into()).unwrap();
        assert_eq!(back, vote);
    }

    #[test]
    fn unknown_format_and_garbage_are_errors() {
        let err = decode::<Vote>(&[9, 1, 2], || "vote".into()).unwrap_err();
        assert!(
            matches!(err, LogStoreError::UnknownFormat { format: 9, .. }),
            "{err}"
        );
        let err = decode::<Vote>(&[], || "vote".into()).unwrap_err();
        assert!(matches!(err, LogStoreError::UnknownFormat { .. }), "{err}");
        let err = decode::<Entry>(&[FORMAT_V1, 0xff], || "log entry 3".into()).unwrap_err();
        assert!(err.to_string().contains("log entry 3"), "{err}");
    }
}
