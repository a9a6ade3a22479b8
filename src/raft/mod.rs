//! Replication: openraft's type configuration, the raft log store in RocksDB, the state
//! machine over the MVCC store, snapshots, and the node that ties them together.
//!
//! This is the only module that names openraft types; the rest of the crate sees the aliases
//! and types re-exported here.
//!
//! ```text
//!   openraft core ──append/vote/truncate/purge──▶ LogStore ──queue──▶ log-writer thread
//!                                                   │                  (one synced WriteBatch
//!   replication tasks ──read──▶ LogReader ◀─────────┘                   per drain: group commit)
//! ```
//!
//! Durability contract: an appended entry is reported flushed, and a vote save returns, only
//! after RocksDB has fsynced it. Column families and keys: [`schema`].

mod codec;
mod command;
mod error;
mod forward;
mod forward_stream;
mod log_store;
mod network;
mod node;
pub mod peer_proto;
mod peer_service;
pub mod schema;
mod snapshot;
mod state_machine;
#[cfg(test)]
mod suite_state_machine;
#[cfg(test)]
mod tests;
mod types;

pub use command::{Rejection, StateCommand, StateResult};
pub use error::{LogStoreError, SnapshotFileError};
pub use forward::{LEARNER_NOT_READY, LeaseAnswer, LeaseQuery, NOT_ENOUGH_STARTED, UNHEALTHY};
pub use log_store::{LogReader, LogStore, WriterStats};
pub use network::{MAX_PEER_MESSAGE_BYTES, PeerContext, PeerError};
pub use node::{MemberInfo, NodeStatus, RaftNode, RaftNodeError, RaftSettings};
pub use peer_proto::peer_client::PeerClient;
pub use peer_proto::{ClusterInfoRequest, ClusterInfoResponse};
pub use peer_service::{PeerService, decode_members};
pub use schema::{CF_RAFT_LOG, CF_RAFT_META, COLUMN_FAMILIES};
pub use snapshot::{
    SNAPSHOT_DIR, SnapshotFile, SnapshotSummary, restore_into as restore_snapshot_into,
    summarize as summarize_snapshot, write_to as snapshot_to,
};
pub use state_machine::{Alarms, CF_SM_META, SharedStore, StateMachine};
pub use types::{
    Command, CommandResponse, Entry, EntryPayload, LogId, Membership, Node, NodeId,
    StoredMembership, TypeConfig, Vote,
};
