//! Writes a follower forwards to the leader travel on one long-lived stream per leader
//! (`ProposeStream`) instead of one gRPC call each: a forwarded write then costs one HTTP/2 data
//! frame each way rather than a new stream with its headers and trailers, which is most of
//! what forwarding cost. Writes are numbered; the leader answers each as soon as it is applied,
//! in any order, and nothing waits for a batch to fill.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::command;
use super::forward::ProposeOutcome;
use super::network::{PeerContext, PeerError};
use super::peer_proto::PeerRequest;
use super::types::{Node, NodeId};

/// A message of the forwarding stream: a write (follower → leader) or its outcome (back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Numbered<T> {
    /// Pairs an answer with its write.
    pub seq: u64,
    /// The encoded write, or its outcome.
    pub item: T,
}

/// Writes waiting on one stream, by number.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<ProposeOutcome>>>>;

/// Writes queued for sending on one stream before senders wait.
const QUEUE: usize = 1024;

struct Link {
    /// The TLS generation of the connection (see [`PeerContext::generation`]).
    generation: u64,
    requests: mpsc::Sender<PeerRequest>,
    pending: Pending,
    next: AtomicU64,
    closed: Arc<AtomicBool>,
}

/// The forwarding streams of a member, one per leader it forwarded to.
pub struct Forwarder {
    context: Arc<PeerContext>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Maps of waiting writes stay consistent under a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Forwarder {
    /// No streams yet; they open on first use.
    pub fn new(context: Arc<PeerContext>) -> Forwarder {
        Forwarder {
            context,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// Sends the encoded write `bytes` to `target` (the leader, at `node`) and waits up to
    /// `timeout` for its outcome.
    pub async fn propose(
        &self,
        target: NodeId,
        node: &Node,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<ProposeOutcome, PeerError> {
        let link = self.link(target, node)?;
        let seq = link.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&link.pending).insert(seq, tx);
        let closed = |why: &str| PeerError::Call {
            id: target,
            status: Box::new(tonic::Status::unavailable(format!(
                "the forwarding stream to {target:x} {why}"
            ))),
        };
        let request = PeerRequest {
            from: Some(self.context.sender()),
            body: command::encode(&Numbered { seq, item: bytes }),
        };
        if link.requests.send(request).await.is_err() {
            lock(&link.pending).remove(&seq);
            return Err(closed("is closed"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(closed("broke")),
            Err(_) => {
                lock(&link.pending).remove(&seq);
                Err(PeerError::Timeout {
                    id: target,
                    timeout,
                })
            }
        }
    }

    /// The open stream to `target`, opening one when there is none or the last one broke.
    fn link(&self, target: NodeId, node: &Node) -> Result<Arc<Link>, PeerError> {
        let mut links = lock(&self.links);
        let generation = self.context.generation();
        // A stream opened before a certificate reload is left to drain: the writes on it are
        // answered, and it ends when the last of them lets go of it.
        if let Some(l) = links.get(&target)
            && !l.closed.load(Ordering::Acquire)
            && l.generation == generation
        {
            return Ok(l.clone());
        }
        let channel = self.context.channel(target, node)?;
        let (requests, rx) = mpsc::channel(QUEUE);
        let link = Arc::new(Link {
            generation,
            requests,
            pending: Pending::default(),
            next: AtomicU64::new(0),
            closed: Arc::new(AtomicBool::new(false)),
        });
        let (pending, closed) = (link.pending.clone(), link.closed.clone());
        let sender = self.context.sender();
        tokio::spawn(async move {
            let mut client = PeerContext::client(channel);
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            if let Ok(value) = super::peer_service::sender_metadata(&sender).parse() {
                request
                    .metadata_mut()
                    .insert(super::peer_service::SENDER_METADATA, value);
            }
            match client.propose_stream(request).await {
                Ok(response) => {
                    let mut answers = response.into_inner();
                    while let Ok(Some(answer)) = answers.message().await {
                        let Some(n) = command::decode::<Numbered<ProposeOutcome>>(&answer.body)
                        else {
                            tracing::warn!(leader = %format!("{target:x}"), "undecodable answer on the forwarding stream");
                            break;
                        };
                        if let Some(waiter) = lock(&pending).remove(&n.seq) {
                            let _ = waiter.send(n.item);
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(leader = %format!("{target:x}"), error = %status, "opening the forwarding stream failed");
                }
            }
            // Writes still waiting learn that the stream broke (their fate is unknown, as
            // with any failed forward); the next write opens a new stream.
            closed.store(true, Ordering::Release);
            lock(&pending).clear();
        });
        links.insert(target, link.clone());
        Ok(link)
    }
}
