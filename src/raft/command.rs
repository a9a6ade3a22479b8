//! What the state machine applies, and what it answers: the payload of normal log entries.
//!
//! Commands are encoded by the proposer and decoded by every member's state machine, so the
//! encoding is versioned like every stored value (format byte + postcard).

use serde::{Deserialize, Serialize};

use crate::mvcc;

/// A state change, proposed through raft and applied in log order on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateCommand {
    /// etcd's Put.
    Put(mvcc::PutRequest),
    /// etcd's DeleteRange.
    DeleteRange(mvcc::DeleteRangeRequest),
    /// etcd's Txn (one revision for the whole transaction).
    Txn(mvcc::TxnRequest),
    /// etcd's Compact.
    Compact {
        /// Compact history below this revision.
        revision: i64,
    },
    /// etcd's LeaseGrant; the ID and the TTL (already raised to the minimum) are chosen by the
    /// proposer, so every member applies the same lease.
    LeaseGrant {
        /// The lease ID (positive).
        id: i64,
        /// Granted TTL in seconds.
        ttl: i64,
    },
    /// etcd's LeaseRevoke, also proposed by the leader when a lease expires: the lease goes and
    /// its keys are deleted in one revision.
    LeaseRevoke {
        /// The lease ID.
        id: i64,
    },
    /// Raise or clear the NOSPACE alarm of a member (0 clears every member's): while any member
    /// has it raised, the whole cluster refuses writes that add data, as etcd does.
    NoSpaceAlarm {
        /// The member.
        member: u64,
        /// Raise (true) or clear (false).
        raise: bool,
    },
    /// A change to users, roles or permissions (etcd's Auth API).
    Auth(crate::auth::AuthCommand),
    /// A client's command checked against the auth state of this revision: applied only if
    /// the permissions have not changed since (else etcd's "revision of auth store is old"),
    /// so a revoked permission can never be used by a request checked on a lagging member.
    Guarded {
        /// The auth revision the request was checked against.
        auth_revision: u64,
        /// The command.
        command: Box<StateCommand>,
    },
}

/// Why an applied command changed nothing. Deterministic: every member reaches the same
/// rejection for the same command, so a rejection is an answer, not a failure of the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// `ignore_value`/`ignore_lease` on a missing key.
    KeyNotFound,
    /// The revision is already compacted.
    Compacted,
    /// The revision is in the future.
    FutureRevision,
    /// A transaction writes a key twice.
    DuplicateKey,
    /// The lease does not exist.
    LeaseNotFound,
    /// A lease with this ID exists already.
    LeaseExists,
    /// The command could not be decoded (written by a newer release).
    Undecodable,
    /// The auth state changed after the request was checked.
    AuthOldRevision,
}

/// The answer to an applied [`StateCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateResult {
    /// Answer to a put.
    Put(mvcc::PutResult),
    /// Answer to a delete.
    DeleteRange(mvcc::DeleteResult),
    /// Answer to a transaction.
    Txn(mvcc::TxnResult),
    /// A compaction took effect; the store's revision.
    Compacted {
        /// The store's revision when the compaction was applied.
        revision: i64,
    },
    /// A lease was granted.
    LeaseGranted {
        /// Its ID.
        id: i64,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// A lease was revoked; the store's revision after its keys were deleted.
    LeaseRevoked {
        /// The revision.
        revision: i64,
    },
    /// The answer to an auth change: the new auth revision, or etcd's refusal.
    Auth(Result<crate::auth::AuthAnswer, crate::auth::AuthError>),
    /// The command changed nothing, for this reason.
    Rejected(Rejection),
    /// An entry without a command (blank or membership).
    Nothing,
}

const FORMAT_V1: u8 = 1;

/// Encodes a command or result: a format byte, then postcard.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard only fails on writers that run out of space or on types serde cannot encode;
    // neither exists for these enums and a growable Vec.
    postcard::to_extend(value, vec![FORMAT_V1]).unwrap_or_else(|_| vec![FORMAT_V1])
}

/// Decodes what [`encode`] wrote; `None` for an unknown format or corrupt bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_unknown_formats_are_refused() {
        let cmd = StateCommand::Txn(mvcc::TxnRequest {
            compare: vec![mvcc::Compare::key(
                b"k".to_vec(),
                mvcc::CompareResult::Equal,
                mvcc::CompareTarget::Version(0),
            )],
            success: vec![mvcc::Op::Put(mvcc::PutRequest::new(
                b"k".to_vec(),
                b"v".to_vec(),
            ))],
            failure: vec![],
        });
        let bytes = encode(&cmd);
        assert_eq!(decode::<StateCommand>(&bytes), Some(cmd));
        let mut future = bytes.clone();
        future[0] = 9;
        assert_eq!(decode::<StateCommand>(&future), None);
        assert_eq!(decode::<StateCommand>(&[]), None);
    }
}
