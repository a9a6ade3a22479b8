//! Reads, shared by readers of the published state and by apply batches: etcd's range
//! (filters, sort, limit), compares, and the choice of a transaction's branches.
//!
//! Everything here works on a [`ReadSource`], which answers from the index and fetches values;
//! the policy (which revision is current, what is compacted) is passed in.

use std::cmp::Ordering;

use super::error::MvccError;
use super::index::{IndexEntry, KeyRange};
use super::types::{
    Compare, CompareResult, CompareTarget, KeyValue, Op, OpResult, RangeRequest, RangeResult,
    SortOrder, SortTarget, TxnRequest, TxnResult,
};

/// A consistent view of the store to read from.
pub(crate) trait ReadSource {
    /// The keys of `range` that exist at revision `at`, ascending by key. Fails with
    /// [`MvccError::Compacted`] when `at` is below the view's compacted revision.
    fn entries(&self, range: &KeyRange<'_>, at: i64) -> Result<Vec<IndexEntry>, MvccError>;

    /// How many keys of `range` exist at revision `at`.
    fn count(&self, range: &KeyRange<'_>, at: i64) -> Result<usize, MvccError>;

    /// The first `limit` entries of [`ReadSource::entries`], and how many there are in all.
    fn entries_up_to(
        &self,
        range: &KeyRange<'_>,
        at: i64,
        limit: usize,
    ) -> Result<(Vec<IndexEntry>, usize), MvccError> {
        let mut entries = self.entries(range, at)?;
        let total = entries.len();
        entries.truncate(limit);
        Ok((entries, total))
    }

    /// The key-values of `entries`, in the same order.
    fn fetch(&self, entries: &[IndexEntry]) -> Result<Vec<KeyValue>, MvccError>;
}

/// A key-value built from the index alone: no value, no lease.
fn kv_from_entry(e: &IndexEntry) -> KeyValue {
    KeyValue {
        key: e.key.clone(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision.main,
        version: e.version,
        value: Vec::new(),
        lease: 0,
    }
}

/// etcd's range (`applierV3backend.Range` over `rangeKeys`) on a view whose revision is
/// `current` and whose compacted revision is `compacted`.
pub(crate) fn range(
    src: &impl ReadSource,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResult, MvccError> {
    if req.revision > current {
        return Err(MvccError::FutureRevision {
            requested: req.revision,
            current,
        });
    }
    let at = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if at < compacted {
        return Err(MvccError::Compacted {
            requested: at,
            compacted,
        });
    }
    let keys = KeyRange::new(&req.key, &req.range_end);
    if req.count_only {
        return Ok(RangeResult {
            kvs: Vec::new(),
            more: false,
            count: src.count(&keys, at)? as i64,
            revision: current,
        });
    }

    // etcd's defaulting: entries already come ascending by key, so NONE means "ascending by
    // the target" unless the target is the key, and ASCEND by key needs no sort.
    let order = match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => {
            SortOrder::None
        }
        (SortOrder::None, _) => SortOrder::Ascend,
        (order, _) => order,
    };
    let limit = usize::try_from(req.limit)
        .ok()
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let filtered = req.max_mod_revision != 0
        || req.min_mod_revision != 0
        || req.max_create_revision != 0
        || req.min_create_revision != 0;

    // etcd counts before the revision filters and the limit. Without sort or filters only the
    // first `limit` entries are needed.
    let (mut entries, count) = if order == SortOrder::None && !filtered {
        src.entries_up_to(&keys, at, limit)?
    } else {
        let entries = src.entries(&keys, at)?;
        let count = entries.len();
        (entries, count)
    };
    let count = count as i64;
    entries.retain(|e| {
        let m = e.mod_revision.main;
        let c = e.create_revision;
        (req.max_mod_revision == 0 || m <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || m >= req.min_mod_revision)
            && (req.max_create_revision == 0 || c <= req.max_create_revision)
            && (req.min_create_revision == 0 || c >= req.min_create_revision)
    });
    let directed = |o: Ordering| {
        if order == SortOrder::Descend {
            o.reverse()
        } else {
            o
        }
    };
    let (mut kvs, more) = if order != SortOrder::None && req.sort_target == SortTarget::Value {
        // Sorting by value needs every value.
        let mut kvs = src.fetch(&entries)?;
        kvs.sort_by(|a, b| directed(a.value.cmp(&b.value)));
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        (kvs, more)
    } else {
        if order != SortOrder::None {
            // Stable: ties stay ascending by key.
            entries.sort_by(|a, b| {
                directed(match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => Ordering::Equal,
                })
            });
        }
        // Unfiltered, every key counts (even those `entries_up_to` left out).
        let more = if filtered {
            entries.len() > limit
        } else {
            count as usize > limit
        };
        entries.truncate(limit);
        (src.fetch(&entries)?, more)
    };
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    Ok(RangeResult {
        kvs,
        more,
        count,
        revision: current,
    })
}

/// Whether `kv` satisfies `cmp` (etcd's `compareKV`).
fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    let ord = match &cmp.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
    };
    match cmp.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Whether `cmp` holds at revision `at` (etcd's `applyCompare`): over a range it must hold for
/// every key; with no key it is judged against an empty key-value, except that a value compare
/// on a missing key never holds.
fn compare_holds(src: &impl ReadSource, cmp: &Compare, at: i64) -> Result<bool, MvccError> {
    let entries = src.entries(&KeyRange::new(&cmp.key, &cmp.range_end), at)?;
    if entries.is_empty() {
        return Ok(match cmp.target {
            CompareTarget::Value(_) => false,
            _ => compare_kv(cmp, &KeyValue::default()),
        });
    }
    Ok(match cmp.target {
        CompareTarget::Value(_) | CompareTarget::Lease(_) => {
            src.fetch(&entries)?.iter().all(|kv| compare_kv(cmp, kv))
        }
        _ => entries.iter().all(|e| compare_kv(cmp, &kv_from_entry(e))),
    })
}

/// Which branch a transaction and each transaction nested in that branch takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnPath {
    /// Whether every compare held.
    pub(crate) succeeded: bool,
    /// One path per `Op::Txn` of the taken branch, in order.
    pub(crate) nested: Vec<TxnPath>,
}

impl TxnPath {
    /// The operations of the branch `txn` takes.
    pub(crate) fn branch<'t>(&self, txn: &'t TxnRequest) -> &'t [Op] {
        if self.succeeded {
            &txn.success
        } else {
            &txn.failure
        }
    }

    /// Pairs each operation of the taken branch with its nested path (for `Op::Txn`).
    pub(crate) fn ops<'p, 't>(
        &'p self,
        txn: &'t TxnRequest,
    ) -> impl Iterator<Item = (&'t Op, Option<&'p TxnPath>)> {
        let mut nested = self.nested.iter();
        self.branch(txn).iter().map(move |op| match op {
            Op::Txn(_) => (op, nested.next()),
            _ => (op, None),
        })
    }
}

/// Evaluates every compare of `txn`, and of the transactions nested in the branches taken, at
/// revision `at` (etcd's `compareToPath`: nested compares see the state before the outer
/// transaction, not its writes).
pub(crate) fn eval_path(
    src: &impl ReadSource,
    txn: &TxnRequest,
    at: i64,
) -> Result<TxnPath, MvccError> {
    let mut succeeded = true;
    for cmp in &txn.compare {
        if !compare_holds(src, cmp, at)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let nested = branch
        .iter()
        .filter_map(|op| match op {
            Op::Txn(t) => Some(eval_path(src, t, at)),
            _ => None,
        })
        .collect::<Result<_, _>>()?;
    Ok(TxnPath { succeeded, nested })
}

/// etcd's `checkRange` over the taken branches: an explicit read revision must be neither in
/// the future nor compacted, judged before the transaction runs.
pub(crate) fn check_ranges(
    txn: &TxnRequest,
    path: &TxnPath,
    current: i64,
    compacted: i64,
) -> Result<(), MvccError> {
    for (op, nested) in path.ops(txn) {
        match (op, nested) {
            (Op::Range(r), _) if r.revision > current => {
                return Err(MvccError::FutureRevision {
                    requested: r.revision,
                    current,
                });
            }
            (Op::Range(r), _) if r.revision > 0 && r.revision < compacted => {
                return Err(MvccError::Compacted {
                    requested: r.revision,
                    compacted,
                });
            }
            (Op::Txn(t), Some(p)) => check_ranges(t, p, current, compacted)?,
            _ => {}
        }
    }
    Ok(())
}

/// Runs a transaction that writes nothing, at revision `current` of `src`.
pub(crate) fn read_txn(
    src: &impl ReadSource,
    txn: &TxnRequest,
    current: i64,
    compacted: i64,
) -> Result<TxnResult, MvccError> {
    if !super::check::is_txn_read_only(txn) {
        return Err(MvccError::NotReadOnly);
    }
    let path = eval_path(src, txn, current)?;
    check_ranges(txn, &path, current, compacted)?;
    run_reads(src, txn, &path, current, compacted)
}

fn run_reads(
    src: &impl ReadSource,
    txn: &TxnRequest,
    path: &TxnPath,
    current: i64,
    compacted: i64,
) -> Result<TxnResult, MvccError> {
    let mut responses = Vec::new();
    for (op, nested) in path.ops(txn) {
        responses.push(match (op, nested) {
            (Op::Range(r), _) => OpResult::Range(range(src, r, current, compacted)?),
            (Op::Txn(t), Some(p)) => OpResult::Txn(run_reads(src, t, p, current, compacted)?),
            _ => return Err(MvccError::NotReadOnly),
        });
    }
    Ok(TxnResult {
        succeeded: path.succeeded,
        responses,
        revision: current,
    })
}
