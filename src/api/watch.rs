//! The Watch service: many watchers per stream, fed from the store's history.
//!
//! Each stream runs one task that owns its watchers. A watcher remembers only the next revision
//! it has to deliver; whenever the store publishes, the task reads the events after that
//! revision ([`crate::mvcc::MvccStore::events_after`]: from memory when recent, from RocksDB
//! otherwise) and sends each watcher what matches it. Sending waits for the client: a slow
//! reader just falls behind and is later served from history, so a stream holds at most a few
//! responses in memory and never slows down writes. The same path replays history for a
//! `start_revision` in the past, and continues unchanged across a leader change or a snapshot
//! install, since it only follows what this member applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authz::Requester;
use super::convert::key_value;
use super::core::Core;
use super::proto::etcdserverpb as pb;
use super::proto::mvccpb;
use super::stream::BoxStream;
use crate::auth::Access;
use crate::mvcc::{self, EventKind, EventLimits, MvccError};

/// The watch ID etcd uses in responses that concern no single watcher.
const NO_WATCH_ID: i64 = -1;
/// Responses queued per stream before the task waits for the client.
const STREAM_QUEUE: usize = 8;
/// How much history one read takes (whole revisions; etcd also sends 1000 at a time).
const READ_LIMITS: EventLimits = EventLimits {
    revisions: 1000,
    bytes: 1 << 20,
};

const COMPACTED_REASON: &str = "etcdserver: mvcc: required revision has been compacted";
const DUPLICATE_ID_REASON: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE_REASON: &str = "mvcc: watcher range is empty";
const PERMISSION_DENIED_REASON: &str = "etcdserver: permission denied";
const TOO_MANY_WATCHERS_REASON: &str =
    "rampart: too many watchers on this stream (--max-watchers-per-stream); open another stream";

/// etcd's Watch service over a member's [`Core`].
#[derive(Clone)]
pub struct WatchService {
    core: Arc<Core>,
}

impl WatchService {
    /// The service.
    pub fn new(core: Arc<Core>) -> WatchService {
        WatchService { core }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let who = Requester::of(&request);
        let mut incoming = request.into_inner();
        let (out_tx, out_rx) = mpsc::channel(STREAM_QUEUE);
        let (req_tx, req_rx) = mpsc::channel(STREAM_QUEUE);
        // Requests are read by their own task so that the stream task can wait on everything
        // else with cancel-safe receivers.
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                if req_tx.send(req).await.is_err() {
                    break;
                }
            }
        });
        let stream = WatchStream::new(self.core.clone(), who, out_tx);
        tokio::spawn(stream.run(req_rx));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }
}

/// Which keys a watcher sees: etcd's range rules (empty end = one key, `[0]` = every key from
/// `key` on, otherwise `[key, end)`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySpan {
    key: Vec<u8>,
    end: Vec<u8>,
}

impl KeySpan {
    fn contains(&self, k: &[u8]) -> bool {
        match self.end.as_slice() {
            [] => k == self.key.as_slice(),
            [0] => k >= self.key.as_slice(),
            end => k >= self.key.as_slice() && k < end,
        }
    }

    /// A range whose end is at or before its start selects nothing; etcd refuses it.
    fn is_empty(&self) -> bool {
        !matches!(self.end.as_slice(), [] | [0]) && self.key >= self.end
    }
}

#[derive(Debug)]
struct Watcher {
    span: KeySpan,
    /// The first revision not yet delivered.
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
    progress_notify: bool,
    /// Whether events went out since the last progress tick (etcd then skips the notice).
    sent_since_tick: bool,
}

impl Watcher {
    fn wants(&self, e: &mvcc::Event) -> bool {
        let filtered = match e.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && e.revision() >= self.next_rev && self.span.contains(&e.kv.key)
    }
}

/// Why a stream task stops.
enum Stop {
    /// The client went away (or the member is shutting down).
    Closed,
}

struct WatchStream {
    core: Arc<Core>,
    /// Whose permissions each new watcher is checked against.
    who: Requester,
    out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_auto_id: i64,
    /// A progress request waits until every watcher is up to date.
    progress_requested: bool,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let metrics = crate::metrics::get();
        metrics.watch_streams.dec();
        metrics.watchers.dec_by(self.watchers.len() as i64);
    }
}

impl WatchStream {
    fn new(
        core: Arc<Core>,
        who: Requester,
        out: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    ) -> Self {
        crate::metrics::get().watch_streams.inc();
        WatchStream {
            core,
            who,
            out,
            watchers: BTreeMap::new(),
            next_auto_id: 0,
            progress_requested: false,
        }
    }

    async fn run(mut self, mut requests: mpsc::Receiver<pb::WatchRequest>) {
        let mut published = self.core.node.subscribe_revisions();
        let interval = self.core.watch_progress_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.catch_up(&mut requests).await.is_err() {
                return;
            }
            let step = tokio::select! {
                req = requests.recv() => match req {
                    Some(req) => self.handle(req).await,
                    None => Err(Stop::Closed),
                },
                changed = published.changed() => changed.map_err(|_| Stop::Closed),
                _ = tick.tick() => self.progress_tick().await,
                _ = self.out.closed() => Err(Stop::Closed),
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, resp: pb::WatchResponse) -> Result<(), Stop> {
        self.out.send(Ok(resp)).await.map_err(|_| Stop::Closed)
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.core.header(revision))
    }

    async fn handle(&mut self, req: pb::WatchRequest) -> Result<(), Stop> {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    crate::metrics::get().watchers.dec();
                    let current = self.core.node.store().current_revision();
                    self.send(pb::WatchResponse {
                        header: self.header(current),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress_requested = true;
                Ok(())
            }
            // As etcd: an unknown request kind does not end the stream.
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), Stop> {
        let current = self.core.node.store().current_revision();
        let refuse = |reason: &str| pb::WatchResponse {
            header: self.header(current),
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_owned(),
            ..Default::default()
        };
        // etcd: no key means the smallest key.
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        let span = KeySpan {
            key,
            end: c.range_end,
        };
        let refusal = if c.start_revision < 0 {
            Some(COMPACTED_REASON)
        } else if span.is_empty() {
            Some(EMPTY_RANGE_REASON)
        } else if c.watch_id != 0 && self.watchers.contains_key(&c.watch_id) {
            Some(DUPLICATE_ID_REASON)
        } else if self.watchers.len() >= self.core.max_watchers_per_stream {
            Some(TOO_MANY_WATCHERS_REASON)
        } else if self
            .core
            .authorize(&self.who, |v, u| {
                v.range(u, Access::Read, &span.key, &span.end)
            })
            .is_err()
        {
            // As etcd: the watcher is refused in its created response, the stream goes on.
            Some(PERMISSION_DENIED_REASON)
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.send(refuse(reason)).await;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_auto_id) {
                self.next_auto_id += 1;
            }
            self.next_auto_id += 1;
            self.next_auto_id - 1
        };
        let filters = |f: pb::watch_create_request::FilterType| c.filters.contains(&(f as i32));
        crate::metrics::get().watchers.inc();
        self.watchers.insert(
            id,
            Watcher {
                span,
                next_rev: if c.start_revision == 0 {
                    current + 1
                } else {
                    c.start_revision
                },
                no_put: filters(pb::watch_create_request::FilterType::Noput),
                no_delete: filters(pb::watch_create_request::FilterType::Nodelete),
                prev_kv: c.prev_kv,
                fragment: c.fragment,
                progress_notify: c.progress_notify,
                sent_since_tick: false,
            },
        );
        self.send(pb::WatchResponse {
            header: self.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    /// Delivers history until every watcher has seen the current revision. Each round reads
    /// one batch for each distinct position (so a watcher replaying old history does not hold
    /// up the others), and takes new requests between rounds.
    async fn catch_up(
        &mut self,
        requests: &mut mpsc::Receiver<pb::WatchRequest>,
    ) -> Result<(), Stop> {
        loop {
            let store = self.core.node.store();
            let current = store.current_revision();
            let mut starts: BTreeSet<i64> = self
                .watchers
                .values()
                .map(|w| w.next_rev)
                .filter(|&r| r <= current)
                .collect();
            if starts.is_empty() {
                if self.progress_requested {
                    self.progress_requested = false;
                    self.send(pb::WatchResponse {
                        header: self.header(current),
                        watch_id: NO_WATCH_ID,
                        ..Default::default()
                    })
                    .await?;
                }
                return Ok(());
            }
            while let Some(start) = starts.pop_first() {
                match store.events_after(start - 1, READ_LIMITS) {
                    Ok(batch) => {
                        starts.retain(|&s| s > batch.through);
                        self.deliver(&store, start, &batch).await?;
                    }
                    Err(MvccError::Compacted { compacted, .. }) => {
                        self.cancel_compacted(compacted, current).await?;
                        starts.retain(|&s| s >= compacted);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading history for watchers failed");
                        let _ = self
                            .out
                            .send(Err(Status::internal("etcdserver: storage error")))
                            .await;
                        return Err(Stop::Closed);
                    }
                }
            }
            while let Ok(req) = requests.try_recv() {
                self.handle(req).await?;
            }
        }
    }

    /// Sends each watcher positioned in `[start, batch.through]` its events of the batch.
    async fn deliver(
        &mut self,
        store: &mvcc::MvccStore,
        start: i64,
        batch: &mvcc::EventBatch,
    ) -> Result<(), Stop> {
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_rev >= start && w.next_rev <= batch.through)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            let events: Vec<mvccpb::Event> = batch
                .events
                .iter()
                .filter(|e| w.wants(e))
                .map(|e| to_proto(store, e, w.prev_kv))
                .collect();
            let fragment = w.fragment;
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = batch.through + 1;
                w.sent_since_tick |= !events.is_empty();
            }
            if events.is_empty() {
                continue;
            }
            let resp = pb::WatchResponse {
                header: self.header(batch.through),
                watch_id: id,
                events,
                ..Default::default()
            };
            if fragment {
                for part in fragments(resp, self.core.limits.max_request_bytes) {
                    self.send(part).await?;
                }
            } else {
                self.send(resp).await?;
            }
        }
        Ok(())
    }

    /// Cancels the watchers whose next revision is compacted away, as etcd does: the
    /// compacted revision in the response, and the watcher gone.
    async fn cancel_compacted(&mut self, compacted: i64, current: i64) -> Result<(), Stop> {
        let lost: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.next_rev < compacted)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.watchers.remove(&id);
            crate::metrics::get().watchers.dec();
            self.send(pb::WatchResponse {
                header: self.header(current),
                watch_id: id,
                canceled: true,
                compact_revision: compacted,
                cancel_reason: COMPACTED_REASON.to_owned(),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Periodic progress notices for up-to-date watchers that asked for them and got no events
    /// since the last tick.
    async fn progress_tick(&mut self) -> Result<(), Stop> {
        let current = self.core.node.store().current_revision();
        let mut due = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if w.progress_notify && !w.sent_since_tick && w.next_rev > current {
                due.push(*id);
            }
            w.sent_since_tick = false;
        }
        for id in due {
            self.send(pb::WatchResponse {
                header: self.header(current),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

/// An event as etcd sends it; with `prev_kv`, the key's previous version is read from history
/// (none for a create, or when that history is compacted, as etcd).
fn to_proto(store: &mvcc::MvccStore, e: &mvcc::Event, prev_kv: bool) -> mvccpb::Event {
    let prev = if prev_kv && !e.is_create() {
        let mut req = mvcc::RangeRequest::key(e.kv.key.clone());
        req.revision = e.revision() - 1;
        store
            .range(&req)
            .ok()
            .and_then(|r| r.kvs.into_iter().next())
            .map(key_value)
    } else {
        None
    };
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv.clone())),
        prev_kv: prev,
    }
}

/// Splits a response larger than `limit` into parts of whole events, all but the last marked
/// `fragment`, as etcd does for watchers that asked for fragments.
fn fragments(resp: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if resp.encoded_len() < limit || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut parts = Vec::new();
    let mut current = pb::WatchResponse {
        events: Vec::new(),
        ..resp.clone()
    };
    for event in resp.events {
        current.events.push(event);
        if current.events.len() > 1 && current.encoded_len() >= limit {
            let overflow = current.events.pop();
            let mut full = pb::WatchResponse {
                events: overflow.into_iter().collect(),
                ..current.clone()
            };
            std::mem::swap(&mut full, &mut current);
            full.fragment = true;
            parts.push(full);
        }
    }
    parts.push(current);
    parts
}

/// How often watchers that asked for progress notices get one (etcd's
/// `--experimental-watch-progress-notify-interval`, 10 minutes).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn spans_follow_etcd_range_rules() {
        let one = KeySpan {
            key: b"a".to_vec(),
            end: vec![],
        };
        assert!(one.contains(b"a") && !one.contains(b"ab"));
        let from = KeySpan {
            key: b"b".to_vec(),
            end: vec![0],
        };
        assert!(from.contains(b"b") && from.contains(b"zz") && !from.contains(b"a"));
        let range = KeySpan {
            key: b"a".to_vec(),
            end: b"b".to_vec(),
        };
        assert!(range.contains(b"a") && range.contains(b"az") && !range.contains(b"b"));
        assert!(!range.is_empty() && !one.is_empty() && !from.is_empty());
        let backwards = KeySpan {
            key: b"b".to_vec(),
            end: b"a".to_vec(),
        };
        assert!(backwards.is_empty());
    }

    #[test]
    fn fragments_keep_every_event_once_and_mark_all_but_the_last() {
        let resp = pb::WatchResponse {
            watch_id: 7,
            events: (0..10).map(|i| event(&format!("k{i}"), 100)).collect(),
            ..Default::default()
        };
        let parts = fragments(resp.clone(), 350);
        assert!(parts.len() > 1);
        let last = parts.len() - 1;
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i != last);
            assert_eq!(p.watch_id, 7);
            assert!(!p.events.is_empty());
        }
        let keys: Vec<_> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(keys, resp.events);
        // Small enough, or a single event: sent as it is.
        assert_eq!(fragments(resp.clone(), 1 << 20), vec![resp]);
    }
}
