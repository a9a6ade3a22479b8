//! The openraft type configuration of rampart.
//!
//! Choices, and why:
//! - `NodeId = u64`: etcd member ids are u64.
//! - Leader ids are openraft's `leader_id_std`: standard Raft, at most one leader per term, as
//!   in etcd. A log id is then just (term, index), which is what etcd reports as `raft_term`.
//! - The entry payload is a [`Command`]: the bytes of a state machine command that the caller
//!   has already encoded. The raft layer (log store, replication) never looks inside, so the
//!   log store does not depend on the state machine and the command format can evolve there.
//!   A response is likewise a [`CommandResponse`] of bytes encoded by the state machine.

use std::fmt;

use bytes::Bytes;
use openraft::alias;
use serde::{Deserialize, Serialize};

/// A member id, as in etcd (`MemberID` in response headers, `member list`).
pub type NodeId = u64;

/// What the cluster knows about a member: stored in membership log entries and snapshots.
///
/// `Default` is an unnamed member with no URLs (etcd's "unstarted" member).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The member name (`--name`), which is also the CN of its certificate.
    pub name: String,
    /// `https://` URLs on which the member serves raft to its peers.
    pub peer_urls: Vec<String>,
    /// `https://` URLs on which the member serves the etcd API to clients.
    pub client_urls: Vec<String>,
}

/// An already-encoded state machine command: the application data of a normal log entry.
///
/// Raft stores, replicates and hands it to the state machine byte for byte; it never decodes it.
/// `Debug` and `Display` show only the length, so commands (user keys and values) are never logged.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Bytes);

/// The state machine's answer to one applied [`Command`], encoded by the state machine.
///
/// It travels from the state machine to the proposer only; it is never written to the log.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse(pub Bytes);

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({} bytes)", self.0.len())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for CommandResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandResponse({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// rampart's openraft type configuration; see the module docs for the choices.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = Node,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

/// A log id: (term, index) of a log entry.
pub type LogId = alias::LogIdOf<TypeConfig>;
/// A raft log entry.
pub type Entry = alias::EntryOf<TypeConfig>;
/// The payload of a raft log entry: blank, a [`Command`], or a membership change.
pub type EntryPayload = alias::EntryPayloadOf<TypeConfig>;
/// A vote: the term and the member voted for, and whether a quorum granted it.
pub type Vote = alias::VoteOf<TypeConfig>;
/// A membership (voters and learners with their [`Node`]s).
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership together with the log id of the entry that introduced it.
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_never_shown_in_logs() {
        let command = Command(Bytes::from_static(b"secret value"));
        assert_eq!(format!("{command}"), "Command(12 bytes)");
        assert_eq!(format!("{command:?}"), "Command(12 bytes)");
        let response = CommandResponse(Bytes::from_static(b"secret"));
        assert_eq!(format!("{response:?}"), "CommandResponse(6 bytes)");
    }
}
