//! Writes a follower forwards travel to the leader in batches: whatever queued while the
//! previous batch was being sent goes out as one peer request, several batches in flight.
//! One request per batch instead of one per write saves an HTTP/2 stream, its headers and a
//! round of encoding on both members for every forwarded write.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::forward::{Forwarded, ProposeOutcome};
use super::network::{FORWARD_TIMEOUT, PeerContext, PeerError, UnaryKind};
use super::types::{Node, NodeId};

/// Most writes in one forwarded batch.
const MAX_BATCH: usize = 256;
/// Batches in flight at once (to all leaders together).
const MAX_IN_FLIGHT: usize = 8;

/// Why a forwarded write got no outcome from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFailure {
    /// The leader did not answer in time (the write may or may not have happened).
    Timeout,
    /// The leader could not be reached.
    Unreachable,
}

struct Pending {
    target: NodeId,
    node: Node,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<ProposeOutcome, ForwardFailure>>,
}

/// The queue of writes to forward, and the task that sends them.
pub struct WriteBatcher {
    queue: mpsc::Sender<Pending>,
}

impl WriteBatcher {
    /// Starts the sending task (it ends when the batcher is dropped).
    pub fn start(peers: Arc<PeerContext>) -> WriteBatcher {
        let (queue, mut rx) = mpsc::channel::<Pending>(MAX_BATCH * MAX_IN_FLIGHT);
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            while let Some(first) = rx.recv().await {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return;
                };
                // Everything queued while we waited for a slot joins this batch.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let mut by_target: BTreeMap<NodeId, Vec<Pending>> = BTreeMap::new();
                for p in batch {
                    by_target.entry(p.target).or_default().push(p);
                }
                let peers = peers.clone();
                tokio::spawn(async move {
                    for (target, group) in by_target {
                        send(&peers, target, group).await;
                    }
                    drop(permit);
                });
            }
        });
        WriteBatcher { queue }
    }

    /// Forwards one encoded write to `target` (the leader at `node`) and waits for its outcome.
    pub async fn forward(
        &self,
        target: NodeId,
        node: Node,
        bytes: Vec<u8>,
    ) -> Result<ProposeOutcome, ForwardFailure> {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            target,
            node,
            bytes,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| ForwardFailure::Unreachable)?;
        outcome.await.map_err(|_| ForwardFailure::Unreachable)?
    }
}

async fn send(peers: &PeerContext, target: NodeId, group: Vec<Pending>) {
    let Some(node) = group.first().map(|p| p.node.clone()) else {
        return;
    };
    let (writes, replies): (Vec<Vec<u8>>, Vec<_>) =
        group.into_iter().map(|p| (p.bytes, p.reply)).unzip();
    let request = Forwarded::Writes(writes);
    let answer: Result<ProposeOutcome, PeerError> = peers
        .call(target, &node, UnaryKind::Propose, &request, FORWARD_TIMEOUT)
        .await;
    match answer {
        Ok(ProposeOutcome::Many(outcomes)) if outcomes.len() == replies.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(other) => {
            // A leader that cannot take batches as a whole (not the leader, stopped) answers
            // once for all of them.
            for reply in replies {
                let _ = reply.send(Ok(other.clone()));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "forwarding a batch of writes failed");
            let failure = match e {
                PeerError::Timeout { .. } => ForwardFailure::Timeout,
                _ => ForwardFailure::Unreachable,
            };
            for reply in replies {
                let _ = reply.send(Err(failure));
            }
        }
    }
}
