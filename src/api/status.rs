//! The one place where failures become gRPC statuses, with etcd's exact codes and messages:
//! etcd clients (etcdctl, clientv3, jetcd) match on these strings, so they are wire facts.

use tonic::{Code, Status};

/// Every etcd server error rampart can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EtcdError {
    /// A request without a key.
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// A value given together with `ignore_value`.
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    LeaseProvided,
    /// More operations in a txn than `--max-txn-ops`.
    TooManyOps,
    /// Two writes to the same key in one txn.
    DuplicateKey,
    /// The revision asked for has been compacted.
    Compacted,
    /// The revision asked for is in the future.
    FutureRev,
    /// The backend quota is exhausted (NOSPACE alarm).
    NoSpace,
    /// The lease does not exist.
    LeaseNotFound,
    /// LeaseGrant with an ID that is taken.
    LeaseExists,
    /// LeaseGrant with a TTL above the maximum.
    LeaseTtlTooLarge,
    /// The request is larger than `--max-request-bytes`.
    RequestTooLarge,
    /// Too many requests in flight.
    TooManyRequests,
    /// The caller may not do this.
    PermissionDenied,
    /// No leader is known.
    NoLeader,
    /// The leader changed while the request was in flight.
    LeaderChanged,
    /// The member is shutting down.
    Stopped,
    /// The request did not complete in time.
    Timeout,
    /// The leader could not be reached; it may have failed.
    TimeoutDueToLeaderFail,
    /// Stored data is inconsistent.
    Corrupt,
    /// The member is a learner and cannot serve this.
    NotSupportedForLearner,
    /// MemberAdd with peer URLs another member already has.
    PeerUrlExists,
    /// Peer URLs that are not valid `https://HOST:PORT` URLs.
    MemberBadUrls,
    /// No member with this ID.
    MemberNotFound,
    /// MemberPromote of a member that is not a learner.
    MemberNotLearner,
    /// MemberPromote of a learner that lags behind the leader.
    LearnerNotReady,
    /// MoveLeader sent to a member that is not the leader.
    NotLeader,
    /// MoveLeader to a member that cannot lead (unknown or a learner).
    BadLeaderTransferee,
    /// A membership change while some voters are unreachable.
    Unhealthy,
}

impl EtcdError {
    /// The gRPC code and message etcd uses.
    pub fn code_and_message(self) -> (Code, &'static str) {
        use EtcdError::*;
        match self {
            EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
            KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
            ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
            LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
            TooManyOps => (
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            DuplicateKey => (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            Compacted => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            FutureRev => (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            NoSpace => (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
            LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
            LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL"),
            RequestTooLarge => (Code::InvalidArgument, "etcdserver: request is too large"),
            TooManyRequests => (Code::ResourceExhausted, "etcdserver: too many requests"),
            PermissionDenied => (Code::PermissionDenied, "etcdserver: permission denied"),
            NoLeader => (Code::Unavailable, "etcdserver: no leader"),
            LeaderChanged => (Code::Unavailable, "etcdserver: leader changed"),
            Stopped => (Code::Unavailable, "etcdserver: server stopped"),
            Timeout => (Code::Unavailable, "etcdserver: request timed out"),
            TimeoutDueToLeaderFail => (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            Corrupt => (Code::DataLoss, "etcdserver: corrupt cluster"),
            NotSupportedForLearner => (
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
            PeerUrlExists => (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            MemberBadUrls => (
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            MemberNotFound => (Code::NotFound, "etcdserver: member not found"),
            MemberNotLearner => (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            LearnerNotReady => (
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            NotLeader => (Code::FailedPrecondition, "etcdserver: not leader"),
            Unhealthy => (Code::Unavailable, "etcdserver: unhealthy cluster"),
            BadLeaderTransferee => (
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Status {
        let (code, message) = e.code_and_message();
        Status::new(code, message)
    }
}

/// `UNIMPLEMENTED` for a service a later release fills in, naming the feature — never a fake
/// success.
pub fn not_yet(feature: &str) -> Status {
    Status::unimplemented(format!("rampart: {feature} is not implemented yet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_etcds_exact_text() {
        let s: Status = EtcdError::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = EtcdError::RequestTooLarge.into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        assert_eq!(not_yet("Watch").code(), Code::Unimplemented);
    }
}
