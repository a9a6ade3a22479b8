//! Leases (etcd's lessor): which leases exist, and — on the leader — when each one expires.
//!
//! Two halves with different rules:
//! - **Replicated**: the set of leases and their granted TTLs. Changed only by applying
//!   committed grant and revoke commands, in log order, on every member, and stored in the
//!   [`CF_LEASE`] column family in the same RocksDB write as the rest of the applied batch.
//! - **Leader-local**: expiry deadlines. Only the leader's clock counts: it renews leases
//!   (keep-alive) and proposes a revoke for each lease past its deadline. A member that becomes
//!   leader gives every lease its full TTL plus an election timeout (etcd's `Promote`), so a
//!   failover never makes a lease expire early; a follower keeps no deadlines.
//!
//! The keys attached to a lease are the MVCC store's business (each key records its lease).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch};

/// Column family of the replicated lease table: key = lease ID (8 bytes big-endian), value =
/// a format byte then the granted TTL in seconds (8 bytes big-endian).
pub const CF_LEASE: &str = "lease";
/// Every column family of this module.
pub const COLUMN_FAMILIES: &[&str] = &[CF_LEASE];

/// Longest TTL a lease may have (etcd's `MaxLeaseTTL`, in seconds).
pub const MAX_TTL: i64 = 9_000_000_000;

const FORMAT_1: u8 = 1;

/// Descriptors of this module's column families.
pub fn cf_descriptors() -> Vec<ColumnFamilyDescriptor> {
    COLUMN_FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()))
        .collect()
}

/// What can go wrong with the lease table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// RocksDB failed.
    #[error("lease table: storage error")]
    Storage(#[from] rocksdb::Error),
    /// The column family is missing.
    #[error("lease table: column family {CF_LEASE} is missing")]
    MissingColumnFamily,
    /// A stored record does not decode.
    #[error("lease table: corrupt record for lease {0:x}")]
    Corrupt(i64),
}

/// The answer of a renewal (keep-alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed for this many seconds (the granted TTL).
    Renewed(i64),
    /// No such lease (never granted, revoked, or already expired).
    NotFound,
    /// This member does not keep deadlines (it is not the leader).
    NotPrimary,
}

/// A lease's time to live as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeToLive {
    /// Whole seconds left (0 once due; the revoke is on its way).
    pub remaining: i64,
    /// The TTL it was granted.
    pub granted: i64,
}

#[derive(Debug, Clone, Copy)]
struct LeaseState {
    ttl: i64,
    /// Deadline, kept only while this member is the primary (leader).
    expiry: Option<Instant>,
    /// When a revoke for it was last proposed (to retry, not to repeat every tick).
    revoke_proposed: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    leases: BTreeMap<i64, LeaseState>,
    /// The leader term this member keeps deadlines for.
    primary_term: Option<u64>,
}

/// A member's lease table; see the module docs.
#[derive(Debug)]
pub struct Lessor {
    table: Mutex<Table>,
}

fn encode(ttl: i64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = FORMAT_1;
    v[1..].copy_from_slice(&ttl.to_be_bytes());
    v
}

fn decode(id: i64, v: &[u8]) -> Result<i64, LeaseError> {
    match v {
        [FORMAT_1, rest @ ..] if rest.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(rest);
            Ok(i64::from_be_bytes(b))
        }
        _ => Err(LeaseError::Corrupt(id)),
    }
}

fn cf(db: &DB) -> Result<&rocksdb::ColumnFamily, LeaseError> {
    db.cf_handle(CF_LEASE)
        .ok_or(LeaseError::MissingColumnFamily)
}

/// How long to wait before proposing the revoke of an expired lease again, when the first
/// proposal did not take effect (no quorum, leader change).
const REVOKE_RETRY: Duration = Duration::from_secs(3);

impl Lessor {
    /// Loads the lease table of `db`.
    pub fn open(db: &DB) -> Result<Arc<Lessor>, LeaseError> {
        let lessor = Lessor {
            table: Mutex::new(Table::default()),
        };
        lessor.reload(db)?;
        Ok(Arc::new(lessor))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table is replaced whole or changed one entry at a time: a panic elsewhere leaves
        // it consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the table again from `db` (after a snapshot replaced it). Deadlines restart as
    /// after a promotion if this member is the primary.
    pub fn reload(&self, db: &DB) -> Result<(), LeaseError> {
        let mut leases = BTreeMap::new();
        for item in db.iterator_cf(cf(db)?, IteratorMode::Start) {
            let (k, v) = item?;
            let key: [u8; 8] = k.as_ref().try_into().map_err(|_| LeaseError::Corrupt(0))?;
            let id = i64::from_be_bytes(key);
            leases.insert(
                id,
                LeaseState {
                    ttl: decode(id, &v)?,
                    expiry: None,
                    revoke_proposed: None,
                },
            );
        }
        let mut t = self.lock();
        t.leases = leases;
        if t.primary_term.is_some() {
            let now = Instant::now();
            for l in t.leases.values_mut() {
                l.expiry = Some(now + secs(l.ttl));
            }
        }
        Ok(())
    }

    // ---- replicated half: called while applying committed commands, in log order ----

    /// Whether lease `id` exists (as of the commands applied so far).
    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Applies a grant: records the lease in `wb` and in memory. Returns `false` (and changes
    /// nothing) when the ID is taken. `wb` must be written by the caller together with the
    /// rest of the applied batch.
    pub fn apply_grant(
        &self,
        db: &DB,
        wb: &mut WriteBatch,
        id: i64,
        ttl: i64,
    ) -> Result<bool, LeaseError> {
        let mut t = self.lock();
        if t.leases.contains_key(&id) {
            return Ok(false);
        }
        wb.put_cf(cf(db)?, id.to_be_bytes(), encode(ttl));
        let expiry = t.primary_term.map(|_| Instant::now() + secs(ttl));
        t.leases.insert(
            id,
            LeaseState {
                ttl,
                expiry,
                revoke_proposed: None,
            },
        );
        Ok(true)
    }

    /// Applies a revoke: removes the lease in `wb` and in memory (its keys are deleted by the
    /// caller). Returns `false` when there is no such lease.
    pub fn apply_revoke(&self, db: &DB, wb: &mut WriteBatch, id: i64) -> Result<bool, LeaseError> {
        let mut t = self.lock();
        if t.leases.remove(&id).is_none() {
            return Ok(false);
        }
        wb.delete_cf(cf(db)?, id.to_be_bytes());
        Ok(true)
    }

    /// How many leases are live.
    pub fn len(&self) -> usize {
        self.lock().leases.len()
    }

    /// Whether no lease is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every lease ID, ascending.
    pub fn ids(&self) -> Vec<i64> {
        self.lock().leases.keys().copied().collect()
    }

    /// The granted TTL of lease `id`.
    pub fn granted_ttl(&self, id: i64) -> Option<i64> {
        self.lock().leases.get(&id).map(|l| l.ttl)
    }

    // ---- leader-local half ----

    /// Makes this member the primary for leader term `term`: every lease gets its full TTL
    /// plus `extend` from now (etcd's Promote). Does nothing when already primary for `term`.
    pub fn promote(&self, term: u64, extend: Duration) {
        let mut t = self.lock();
        if t.primary_term == Some(term) {
            return;
        }
        t.primary_term = Some(term);
        let now = Instant::now();
        for l in t.leases.values_mut() {
            l.expiry = Some(now + secs(l.ttl) + extend);
            l.revoke_proposed = None;
        }
    }

    /// Stops keeping deadlines (this member is no longer the leader).
    pub fn demote(&self) {
        let mut t = self.lock();
        if t.primary_term.take().is_some() {
            for l in t.leases.values_mut() {
                l.expiry = None;
                l.revoke_proposed = None;
            }
        }
    }

    /// The term this member is primary for, if any.
    pub fn primary_term(&self) -> Option<u64> {
        self.lock().primary_term
    }

    /// Renews lease `id` for its full TTL (a keep-alive). An expired lease is not renewed: its
    /// revoke is already due.
    pub fn renew(&self, id: i64) -> Renewal {
        let mut t = self.lock();
        if t.primary_term.is_none() {
            return Renewal::NotPrimary;
        }
        let now = Instant::now();
        match t.leases.get_mut(&id) {
            Some(l) if l.expiry.is_some_and(|e| e > now) => {
                l.expiry = Some(now + secs(l.ttl));
                Renewal::Renewed(l.ttl)
            }
            _ => Renewal::NotFound,
        }
    }

    /// Lease `id`'s time to live, or `None` when there is no such lease. Remaining time is
    /// known only on the primary; elsewhere it reads as the granted TTL.
    pub fn time_to_live(&self, id: i64) -> Option<TimeToLive> {
        let t = self.lock();
        let l = t.leases.get(&id)?;
        let remaining = match l.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            None => l.ttl,
        };
        Some(TimeToLive {
            remaining,
            granted: l.ttl,
        })
    }

    /// Leases past their deadline whose revoke should be proposed now (at most `max`); each
    /// is marked so that it is proposed again only after a retry delay.
    pub fn take_expired(&self, max: usize) -> Vec<i64> {
        let mut t = self.lock();
        if t.primary_term.is_none() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in t.leases.iter_mut() {
            if out.len() >= max {
                break;
            }
            let due = l.expiry.is_some_and(|e| e <= now);
            let retry = l.revoke_proposed.is_none_or(|p| now >= p + REVOKE_RETRY);
            if due && retry {
                l.revoke_proposed = Some(now);
                out.push(*id);
            }
        }
        out
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

/// Lease IDs chosen by the server, unique across members and restarts in practice: the low 16
/// bits of the member ID, then a counter that starts from the clock (etcd's scheme).
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    counter: AtomicU64,
}

const SUFFIX_BITS: u32 = 48;
const SUFFIX_MASK: u64 = (1 << SUFFIX_BITS) - 1;

impl IdGenerator {
    /// A generator for member `member_id`.
    pub fn new(member_id: u64) -> IdGenerator {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        IdGenerator {
            prefix: (member_id & 0xffff) << SUFFIX_BITS,
            counter: AtomicU64::new((millis << 8) & SUFFIX_MASK),
        }
    }

    /// The next ID: positive and non-zero.
    pub fn next(&self) -> i64 {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed) & SUFFIX_MASK;
            let id = ((self.prefix | n) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, DB) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&opts, dir.path(), cf_descriptors()).unwrap();
        (dir, db)
    }

    #[test]
    fn grants_and_revokes_persist_and_reload() {
        let (_dir, db) = db();
        let lessor = Lessor::open(&db).unwrap();
        let mut wb = WriteBatch::default();
        assert!(lessor.apply_grant(&db, &mut wb, 7, 10).unwrap());
        assert!(!lessor.apply_grant(&db, &mut wb, 7, 20).unwrap());
        assert!(lessor.apply_grant(&db, &mut wb, 9, 30).unwrap());
        db.write(wb).unwrap();
        let mut wb = WriteBatch::default();
        assert!(lessor.apply_revoke(&db, &mut wb, 9).unwrap());
        assert!(!lessor.apply_revoke(&db, &mut wb, 9).unwrap());
        db.write(wb).unwrap();
        let again = Lessor::open(&db).unwrap();
        assert_eq!(again.ids(), vec![7]);
        assert_eq!(again.granted_ttl(7), Some(10));
    }

    #[test]
    fn only_the_primary_renews_and_expires() {
        let (_dir, db) = db();
        let lessor = Lessor::open(&db).unwrap();
        let mut wb = WriteBatch::default();
        lessor.apply_grant(&db, &mut wb, 1, 0).unwrap();
        lessor.apply_grant(&db, &mut wb, 2, 100).unwrap();
        assert_eq!(lessor.renew(2), Renewal::NotPrimary);
        assert!(lessor.take_expired(10).is_empty());
        lessor.promote(3, Duration::ZERO);
        assert_eq!(lessor.renew(2), Renewal::Renewed(100));
        assert_eq!(lessor.renew(5), Renewal::NotFound);
        // Lease 1 (TTL 0) is due at once, and proposed once until the retry delay passes.
        assert_eq!(lessor.take_expired(10), vec![1]);
        assert!(lessor.take_expired(10).is_empty());
        assert_eq!(lessor.renew(1), Renewal::NotFound);
        let ttl = lessor.time_to_live(2).unwrap();
        assert_eq!(ttl.granted, 100);
        assert!(ttl.remaining >= 99);
        lessor.demote();
        assert_eq!(lessor.renew(2), Renewal::NotPrimary);
    }

    #[test]
    fn generated_ids_are_positive_distinct_and_carry_the_member() {
        let g = IdGenerator::new(0xabcd_1234);
        let a = g.next();
        let b = g.next();
        assert!(a > 0 && b > 0 && a != b);
        assert_eq!((a as u64) >> SUFFIX_BITS, 0x1234);
    }
}
