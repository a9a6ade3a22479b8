//! The in-memory key index (etcd's `treeIndex`): for every key, the revisions at which it
//! changed, grouped in generations (a generation runs from a create to a delete).
//!
//! The index answers "which revision holds key K as of revision R" without touching RocksDB;
//! the values themselves live in the `kv` column family. Pure data structure, no I/O.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use super::types::Revision;

/// A key range in etcd's conventions, resolved from `(key, range_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// Only this key (`range_end` empty).
    Single(&'a [u8]),
    /// Every key `>=` this one (`range_end == [0]`).
    From(&'a [u8]),
    /// `[start, end)` with `start < end`.
    Between(&'a [u8], &'a [u8]),
    /// Nothing (`range_end <= key`).
    Empty,
}

impl<'a> KeyRange<'a> {
    /// Resolves etcd's `(key, range_end)` convention.
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == [0] {
            KeyRange::From(key)
        } else if range_end <= key {
            KeyRange::Empty
        } else {
            KeyRange::Between(key, range_end)
        }
    }

    /// Whether `k` is in the range.
    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(s) => k == s,
            KeyRange::From(s) => k >= s,
            KeyRange::Between(s, e) => k >= s && k < e,
            KeyRange::Empty => false,
        }
    }

    /// The range as `BTreeMap::range` bounds, `None` when empty.
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'a>> {
        match *self {
            KeyRange::Single(s) => Some((Bound::Included(s), Bound::Included(s))),
            KeyRange::From(s) => Some((Bound::Included(s), Bound::Unbounded)),
            KeyRange::Between(s, e) => Some((Bound::Included(s), Bound::Excluded(e))),
            KeyRange::Empty => None,
        }
    }
}

/// A key range as `BTreeMap::range` bounds.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// What the index knows about one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// The key.
    pub(crate) key: Vec<u8>,
    /// Revision of the record holding the key's value.
    pub(crate) mod_revision: Revision,
    /// Create revision of the key's generation.
    pub(crate) create_revision: i64,
    /// Version of the key at `mod_revision`.
    pub(crate) version: i64,
}

/// One life of a key: puts from its creation up to and including the tombstone that ended it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// Create revision (main) of the generation.
    created: i64,
    /// Version of the newest revision in `revs` (a tombstone counts as one, as in etcd).
    ver: i64,
    /// Revisions, ascending. In a closed generation the last one is the tombstone.
    revs: Vec<Revision>,
}

/// The history of one key. Invariant: at least one generation; only the last one is open
/// (has no tombstone), and it is empty exactly when the key is currently deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    fn open_generation(&mut self) -> &mut Generation {
        // The invariant keeps at least one generation; `push` restores it if a bug broke it.
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// Records a put at `rev` (newer than every revision already recorded), deriving create
    /// revision and version. Apply records them explicitly with `restore_put`.
    #[cfg(test)]
    pub(crate) fn put(&mut self, rev: Revision) {
        let g = self.open_generation();
        if g.revs.is_empty() {
            g.created = rev.main;
        }
        g.ver += 1;
        g.revs.push(rev);
    }

    /// Records a put read back from storage, whose create revision and version are known.
    pub(crate) fn restore_put(&mut self, rev: Revision, create_revision: i64, version: i64) {
        let g = self.open_generation();
        if g.revs.is_empty() {
            g.created = create_revision;
        }
        g.ver = version;
        g.revs.push(rev);
    }

    /// Records a delete at `rev`. Returns false (and records nothing) when the key is not live.
    pub(crate) fn tombstone(&mut self, rev: Revision) -> bool {
        let g = self.open_generation();
        if g.revs.is_empty() {
            return false;
        }
        g.ver += 1;
        g.revs.push(rev);
        self.generations.push(Generation::default());
        true
    }

    /// The key as of revision `at`: (record revision, create revision, version), or `None` if
    /// it did not exist then.
    pub(crate) fn get(&self, at: i64) -> Option<(Revision, i64, i64)> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(newest)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && newest.main <= at {
                // This generation ended (tombstone) at or before `at`, and no later one had
                // started by then.
                return None;
            }
            if first.main <= at {
                let n = g.revs.partition_point(|r| r.main <= at) - 1;
                let version = g.ver - (g.revs.len() - 1 - n) as i64;
                return Some((g.revs[n], g.created, version));
            }
        }
        None
    }

    /// Drops history that no read at or after `at` can need: for each generation, revisions
    /// older than the newest one `<= at`, and whole generations whose tombstone is `<= at`.
    /// Appends the dropped revisions to `removed`.
    pub(crate) fn compact(&mut self, at: i64, removed: &mut Vec<Revision>) {
        let last = self.generations.len().saturating_sub(1);
        let mut first_kept = last;
        for (i, g) in self.generations.iter_mut().enumerate() {
            let closed_before = i != last && g.revs.last().is_none_or(|t| t.main <= at);
            if closed_before {
                removed.extend_from_slice(&g.revs);
                continue;
            }
            let n = g.revs.partition_point(|r| r.main <= at);
            if n > 1 {
                removed.extend(g.revs.drain(..n - 1));
            }
            first_kept = i;
            break;
        }
        self.generations.drain(..first_kept);
    }

    /// True when nothing is left: the key is deleted and its history is gone.
    pub(crate) fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].revs.is_empty()
    }

    /// Every revision held.
    fn revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied())
    }
}

/// Every key's history, ordered by key.
#[derive(Debug, Clone, Default)]
pub(crate) struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    fn iter_range<'s>(
        &'s self,
        range: &KeyRange<'_>,
    ) -> Box<dyn Iterator<Item = (&'s Vec<u8>, &'s KeyIndex)> + 's> {
        match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(*k).into_iter()),
            _ => match range.bounds() {
                Some(b) => Box::new(self.keys.range::<[u8], _>(b)),
                None => Box::new(std::iter::empty()),
            },
        }
    }

    /// The keys of `range` that exist at revision `at`, ascending by key.
    pub(crate) fn range(&self, range: &KeyRange<'_>, at: i64) -> Vec<IndexEntry> {
        self.range_up_to(range, at, usize::MAX).0
    }

    /// The first `limit` keys of [`TreeIndex::range`], and how many there are in all (etcd's
    /// `Revisions` with a limit): keys past the limit are counted, not copied.
    pub(crate) fn range_up_to(
        &self,
        range: &KeyRange<'_>,
        at: i64,
        limit: usize,
    ) -> (Vec<IndexEntry>, usize) {
        let mut entries = Vec::new();
        let mut total = 0;
        for (k, ki) in self.iter_range(range) {
            let Some((rev, created, version)) = ki.get(at) else {
                continue;
            };
            total += 1;
            if entries.len() < limit {
                entries.push(IndexEntry {
                    key: k.clone(),
                    mod_revision: rev,
                    create_revision: created,
                    version,
                });
            }
        }
        (entries, total)
    }

    /// How many keys of `range` exist at revision `at`.
    pub(crate) fn count(&self, range: &KeyRange<'_>, at: i64) -> usize {
        self.iter_range(range)
            .filter(|(_, ki)| ki.get(at).is_some())
            .count()
    }

    /// Records a put of `key` at `rev`.
    #[cfg(test)]
    pub(crate) fn put(&mut self, key: &[u8], rev: Revision) {
        self.keys.entry(key.to_vec()).or_default().put(rev);
    }

    /// Records a put read back from storage.
    pub(crate) fn restore_put(&mut self, key: &[u8], rev: Revision, created: i64, version: i64) {
        self.keys
            .entry(key.to_vec())
            .or_default()
            .restore_put(rev, created, version);
    }

    /// Records a delete of `key` at `rev`; false when the key is not live.
    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Compacts every key at `at` (see [`KeyIndex::compact`]) and forgets keys with nothing
    /// left. Returns the dropped revisions, ascending.
    pub(crate) fn compact(&mut self, at: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut removed);
            !ki.is_empty()
        });
        removed.sort_unstable();
        removed
    }

    /// Every revision `<= at` still held, i.e. what survived compactions up to `at`.
    pub(crate) fn revisions_at_or_below(&self, at: i64) -> HashSet<Revision> {
        self.keys
            .values()
            .flat_map(|ki| ki.revisions().take_while(move |r| r.main <= at))
            .collect()
    }

    /// Number of keys with any history.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put@2 put@4 del@6 put@8 put@10 del@12 put@14
    fn sample() -> KeyIndex {
        let mut ki = KeyIndex::default();
        ki.put(r(2));
        ki.put(r(4));
        assert!(ki.tombstone(r(6)));
        ki.put(r(8));
        ki.put(r(10));
        assert!(ki.tombstone(r(12)));
        ki.put(r(14));
        ki
    }

    #[test]
    fn key_index_answers_by_revision_across_generations() {
        let ki = sample();
        assert_eq!(ki.get(1), None);
        assert_eq!(ki.get(2), Some((r(2), 2, 1)));
        assert_eq!(ki.get(5), Some((r(4), 2, 2)));
        assert_eq!(ki.get(6), None);
        assert_eq!(ki.get(7), None);
        assert_eq!(ki.get(8), Some((r(8), 8, 1)));
        assert_eq!(ki.get(11), Some((r(10), 8, 2)));
        assert_eq!(ki.get(12), None);
        assert_eq!(ki.get(14), Some((r(14), 14, 1)));
        assert_eq!(ki.get(100), Some((r(14), 14, 1)));
    }

    #[test]
    fn tombstone_of_a_deleted_key_records_nothing() {
        let mut ki = KeyIndex::default();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert_eq!(ki.get(4), None);
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        for at in 0..16 {
            let full = sample();
            let mut ki = sample();
            let mut removed = Vec::new();
            ki.compact(at, &mut removed);
            for read_at in at..16 {
                assert_eq!(
                    ki.get(read_at),
                    full.get(read_at),
                    "compact {at} read {read_at}"
                );
            }
            let kept: Vec<_> = ki.revisions().collect();
            for rev in &removed {
                assert!(!kept.contains(rev));
            }
            assert_eq!(kept.len() + removed.len(), 7, "compact {at}");
        }
        let mut ki = sample();
        let mut removed = Vec::new();
        ki.compact(5, &mut removed);
        assert_eq!(removed, vec![r(2)]);
        ki.compact(6, &mut removed);
        assert_eq!(removed, vec![r(2), r(4), r(6)]);
        ki.compact(13, &mut removed);
        assert_eq!(removed.len(), 6);
        assert_eq!(ki.get(13), None);
        assert!(!ki.is_empty());
    }

    #[test]
    fn compacting_past_the_last_delete_empties_the_key() {
        let mut tree = TreeIndex::default();
        tree.put(b"a", r(1));
        tree.put(b"b", r(2));
        assert!(tree.tombstone(b"a", r(3)));
        assert_eq!(tree.compact(2), Vec::<Revision>::new());
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.compact(3), vec![r(1), r(3)]);
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.count(&KeyRange::From(b""), 3), 1);
    }

    #[test]
    fn key_ranges_follow_etcd_conventions() {
        let mut tree = TreeIndex::default();
        for (i, k) in [&b"a"[..], b"ab", b"b", b"c"].into_iter().enumerate() {
            tree.put(k, r(i as i64 + 1));
        }
        let keys = |key: &[u8], end: &[u8]| -> Vec<Vec<u8>> {
            tree.range(&KeyRange::new(key, end), 10)
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        assert_eq!(keys(b"a", b""), vec![b"a".to_vec()]);
        assert_eq!(keys(b"aa", b""), Vec::<Vec<u8>>::new());
        assert_eq!(keys(b"a", b"b"), vec![b"a".to_vec(), b"ab".to_vec()]);
        assert_eq!(keys(b"ab", b"\0").len(), 3);
        assert_eq!(keys(b"", b"\0").len(), 4);
        assert_eq!(keys(b"c", b"a"), Vec::<Vec<u8>>::new());
        assert_eq!(keys(b"a", b"a"), Vec::<Vec<u8>>::new());
        assert_eq!(tree.range(&KeyRange::new(b"a", b"b"), 1).len(), 1);
    }
}
