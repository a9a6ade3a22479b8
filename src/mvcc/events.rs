//! The store's history as a feed of change events, for watchers (etcd's watchable store).
//!
//! Every published batch also lands, as [`Event`]s in revision order, in a bounded in-memory
//! window of recent history; [`MvccStore::events_after`] serves from that window when it reaches
//! back far enough and reads the history column family otherwise. Watchers therefore never hold
//! events of their own: a watcher that falls behind just asks again from where it stopped, so
//! a slow reader costs no memory and never blocks writes.

use std::collections::VecDeque;
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::codec::{self, Record};
use super::error::MvccError;
use super::schema::{self, CF_KV};
use super::store::MvccStore;
use super::types::{KeyValue, Revision};

/// What a change did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change of one key (etcd's `mvccpb.Event` without `prev_kv`).
///
/// For a put, `kv` is the key as written; for a delete, only `kv.key` and `kv.mod_revision` (the
/// revision of the delete) are set, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change.
    pub kv: KeyValue,
}

impl Event {
    /// Whether this put created the key (etcd sends no previous value for those).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    fn approx_bytes(&self) -> usize {
        self.kv.key.len() + self.kv.value.len() + 64
    }

    fn from_record(rev: Revision, record: Record) -> Event {
        match record {
            Record::Put(kv) => Event {
                kind: EventKind::Put,
                kv,
            },
            Record::Tombstone(key) => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key,
                    mod_revision: rev.main,
                    ..Default::default()
                },
            },
        }
    }
}

/// The events of whole revisions `(after, through]`, in revision order.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// The events, oldest first; those of one revision are adjacent, in the order the
    /// request made them.
    pub events: Vec<Arc<Event>>,
    /// The last revision the batch covers; asking again from here continues without gaps.
    pub through: i64,
}

/// How much one [`MvccStore::events_after`] call may return; it always returns whole
/// revisions, and at least one revision when there is one.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Most revisions (etcd sends unsynced watchers 1000 revisions at a time).
    pub revisions: i64,
    /// Approximate most bytes of keys and values.
    pub bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            revisions: 1000,
            bytes: 4 << 20,
        }
    }
}

/// Recent history kept in memory: it answers watchers that are up to date without a read.
#[derive(Debug)]
pub(crate) struct RecentEvents {
    /// First revision whose events are all here (revisions before it may be partly evicted).
    from: i64,
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    budget: usize,
}

/// Default memory for recent events.
pub(crate) const RECENT_EVENTS_BYTES: usize = 16 << 20;

impl RecentEvents {
    /// An empty window whose first complete revision is `next`.
    pub(crate) fn starting_at(next: i64, budget: usize) -> Self {
        RecentEvents {
            from: next,
            events: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Appends a published batch's events (revision order), evicting whole old revisions to
    /// stay within the budget.
    pub(crate) fn push(&mut self, events: Vec<Arc<Event>>) {
        for e in events {
            self.bytes += e.approx_bytes();
            self.events.push_back(e);
        }
        while self.bytes > self.budget {
            let Some(oldest) = self.events.front().map(|e| e.revision()) else {
                break;
            };
            while self.events.front().is_some_and(|e| e.revision() == oldest) {
                if let Some(e) = self.events.pop_front() {
                    self.bytes -= e.approx_bytes();
                }
            }
            self.from = oldest + 1;
        }
    }

    /// The events of revisions `(after, through]` if the window holds all of them.
    fn get(&self, after: i64, through: i64, limits: EventLimits) -> Option<EventBatch> {
        if after + 1 < self.from {
            return None;
        }
        let start = self.events.partition_point(|e| e.revision() <= after);
        collect_whole_revisions(
            self.events.range(start..).cloned().map(Ok),
            after,
            through,
            limits,
        )
        .ok()
    }
}

/// Takes events (revision order, all after `after`) up to `through` and within `limits`,
/// never splitting a revision.
fn collect_whole_revisions(
    events: impl Iterator<Item = Result<Arc<Event>, MvccError>>,
    after: i64,
    through: i64,
    limits: EventLimits,
) -> Result<EventBatch, MvccError> {
    let last_allowed = through.min(after.saturating_add(limits.revisions.max(1)));
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut covered = last_allowed;
    for e in events {
        let e = e?;
        let rev = e.revision();
        if rev > last_allowed {
            break;
        }
        if bytes >= limits.bytes && out.last().is_some_and(|l: &Arc<Event>| l.revision() < rev) {
            covered = rev - 1;
            break;
        }
        bytes += e.approx_bytes();
        out.push(e);
    }
    Ok(EventBatch {
        events: out,
        through: covered.max(after),
    })
}

impl MvccStore {
    /// The events of the revisions after `after`, up to the current revision, within `limits`
    /// (whole revisions only).
    ///
    /// Errors: [`MvccError::Compacted`] when history right after `after` is compacted away
    /// (`after + 1 <` the compacted revision: etcd cancels such watchers); storage errors.
    pub fn events_after(&self, after: i64, limits: EventLimits) -> Result<EventBatch, MvccError> {
        let p = self.read_published();
        let (current, compacted) = (p.revision, p.compacted);
        // The snapshot pins every record of revisions above `compacted` for the read below.
        let snapshot = self.db.snapshot();
        drop(p);
        if after + 1 < compacted {
            return Err(MvccError::Compacted {
                requested: after + 1,
                compacted,
            });
        }
        if after >= current {
            return Ok(EventBatch {
                events: Vec::new(),
                through: after,
            });
        }
        if let Some(batch) = self.recent_events().get(after, current, limits) {
            return Ok(batch);
        }
        let cf = self.cf(CF_KV)?;
        let start = schema::revision_key(Revision::new(after + 1, 0));
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&snapshot);
        let records = self
            .db
            .iterator_cf_opt(cf, opts, IteratorMode::From(&start, Direction::Forward))
            .map(|item| -> Result<Arc<Event>, MvccError> {
                let (k, v) = item?;
                let rev = schema::parse_revision_key(&k)?;
                Ok(Arc::new(Event::from_record(rev, codec::decode(rev, &v)?)))
            });
        collect_whole_revisions(records, after, current, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, key: &str, value_len: usize) -> Arc<Event> {
        Arc::new(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: vec![b'x'; value_len],
                lease: 0,
            },
        })
    }

    #[test]
    fn window_evicts_whole_revisions_and_refuses_what_it_lost() {
        let mut w = RecentEvents::starting_at(2, 300);
        w.push(vec![put(2, "a", 50), put(2, "b", 50)]);
        w.push(vec![put(3, "c", 50)]);
        // 3 events of ~115 bytes: over 300, so revision 2 (both events) goes.
        assert_eq!(w.from, 3);
        assert_eq!(w.events.len(), 1);
        assert!(w.get(1, 3, EventLimits::default()).is_none());
        let b = w.get(2, 3, EventLimits::default()).unwrap();
        assert_eq!(b.through, 3);
        assert_eq!(b.events.len(), 1);
    }

    #[test]
    fn batches_stop_at_revision_boundaries() {
        let events = [
            put(2, "a", 10),
            put(2, "b", 10),
            put(3, "c", 10),
            put(4, "d", 10),
        ];
        let limits = EventLimits {
            revisions: 100,
            bytes: 1,
        };
        let b = collect_whole_revisions(events.iter().cloned().map(Ok), 1, 4, limits).unwrap();
        // The byte limit is reached inside revision 2, which is still returned whole.
        assert_eq!(b.events.len(), 2);
        assert_eq!(b.through, 2);
        let limits = EventLimits {
            revisions: 2,
            bytes: 1 << 20,
        };
        let b = collect_whole_revisions(events.iter().cloned().map(Ok), 1, 4, limits).unwrap();
        assert_eq!(b.through, 3);
        assert_eq!(b.events.len(), 3);
    }
}
