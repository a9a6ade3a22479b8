//! Request checks that need no state: the ones `api` runs before proposing (and the apply path
//! repeats, so that a bad entry in the log fails the same way on every member).

use std::collections::HashSet;

use super::error::MvccError;
use super::index::KeyRange;
use super::types::{Op, TxnRequest};

/// Whether `txn` has more operations than `max_txn_ops` (etcd's `--max-txn-ops`, default 128),
/// counted as etcd does: a level counts the largest of its compares, success ops and failure
/// ops, and a nested transaction gets what is left of its parent's budget. `api` answers a true
/// here with etcd's `etcdserver: too many operations in txn request`.
pub fn txn_exceeds_max_ops(txn: &TxnRequest, max_txn_ops: usize) -> bool {
    let ops = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > max_txn_ops {
        return true;
    }
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        Op::Txn(nested) => txn_exceeds_max_ops(nested, max_txn_ops - ops),
        _ => false,
    })
}

/// Whether `txn` writes nothing in any branch, however deep (etcd's `isTxnReadonly`). A
/// read-only transaction can be served from [`crate::mvcc::MvccStore::read_txn`].
pub fn is_txn_read_only(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match op {
        Op::Range(_) => true,
        Op::Put(_) | Op::DeleteRange(_) => false,
        Op::Txn(nested) => is_txn_read_only(nested),
    })
}

/// Refuses a transaction that could write one key twice, with etcd's `checkIntervals` rules:
/// within one branch, a key put twice, or put and also inside a deleted range, is a
/// [`MvccError::DuplicateKey`]; deletes may overlap each other; the success and failure
/// branches of a nested transaction may put the same key (only one runs). Each top-level
/// branch is checked on its own.
///
/// One deliberate difference from etcd 3.5: a delete with `range_end == [0]` (every key from
/// `key` on) counts as that whole range here. etcd builds an empty interval from it, accepts a
/// transaction that deletes from `a` and then puts `b` with `ignore_value`, and then panics
/// while applying it on every member; refusing it up front is the safe behaviour.
pub fn check_txn_duplicates(txn: &TxnRequest) -> Result<(), MvccError> {
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    Ok(())
}

type Intervals<'a> = (HashSet<&'a [u8]>, Vec<KeyRange<'a>>);

fn check_intervals(ops: &[Op]) -> Result<Intervals<'_>, MvccError> {
    let mut dels: Vec<KeyRange<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            Op::DeleteRange(d) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));

    // Nested transactions first: their puts must not meet this level's deletes, nor puts of
    // earlier siblings.
    let mut puts: HashSet<&[u8]> = HashSet::new();
    for op in ops {
        let Op::Txn(nested) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Op::Put(p) = op else { continue };
        if !puts.insert(p.key.as_slice()) || deleted(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::types::{DeleteRangeRequest, PutRequest, RangeRequest};

    fn put(k: &str) -> Op {
        Op::Put(PutRequest::new(k, "v"))
    }
    fn del(k: &str, end: &str) -> Op {
        Op::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }
    fn txn(success: Vec<Op>, failure: Vec<Op>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_keys_are_found_as_etcd_finds_them() {
        let ok = |t: TxnRequest| assert!(check_txn_duplicates(&t).is_ok(), "{t:?}");
        let dup = |t: TxnRequest| {
            assert!(
                matches!(check_txn_duplicates(&t), Err(MvccError::DuplicateKey)),
                "{t:?}"
            )
        };
        ok(txn(vec![put("a"), put("b")], vec![put("a")]));
        dup(txn(vec![put("a"), put("a")], vec![]));
        dup(txn(vec![], vec![put("a"), put("a")]));
        dup(txn(vec![put("a"), del("a", "")], vec![]));
        dup(txn(vec![del("a", "c"), put("b")], vec![]));
        ok(txn(vec![del("a", "c"), put("c")], vec![]));
        ok(txn(vec![del("a", "c"), del("b", "d")], vec![]));
        dup(txn(vec![del("a", "\0"), put("z")], vec![]));
        ok(txn(vec![del("b", "\0"), put("a")], vec![]));
        // Nested: both branches of one nested txn may put the same key...
        ok(txn(
            vec![Op::Txn(txn(vec![put("a")], vec![put("a")]))],
            vec![],
        ));
        // ...but not a key put by the outer level or a sibling.
        dup(txn(
            vec![put("a"), Op::Txn(txn(vec![put("a")], vec![]))],
            vec![],
        ));
        dup(txn(
            vec![
                Op::Txn(txn(vec![put("a")], vec![])),
                Op::Txn(txn(vec![], vec![put("a")])),
            ],
            vec![],
        ));
        // Outer delete against nested put, nested delete against outer put.
        dup(txn(
            vec![del("a", "b"), Op::Txn(txn(vec![put("a")], vec![]))],
            vec![],
        ));
        dup(txn(
            vec![Op::Txn(txn(vec![del("a", "")], vec![])), put("a")],
            vec![],
        ));
        // A nested put followed by a sibling's delete is accepted by etcd too.
        ok(txn(
            vec![
                Op::Txn(txn(vec![put("a")], vec![])),
                Op::Txn(txn(vec![del("a", "")], vec![])),
            ],
            vec![],
        ));
    }

    #[test]
    fn op_budget_is_counted_per_level_as_etcd_does() {
        let wide = txn((0..4).map(|i| put(&i.to_string())).collect(), vec![]);
        assert!(!txn_exceeds_max_ops(&wide, 4));
        assert!(txn_exceeds_max_ops(&wide, 3));
        let nested = txn(
            vec![put("x"), Op::Txn(txn(vec![put("y"), put("z")], vec![]))],
            vec![],
        );
        assert!(!txn_exceeds_max_ops(&nested, 4));
        assert!(txn_exceeds_max_ops(&nested, 3));
    }

    #[test]
    fn read_only_means_no_write_in_any_branch() {
        let read = Op::Range(RangeRequest::key("a"));
        assert!(is_txn_read_only(&txn(vec![read.clone()], vec![])));
        assert!(!is_txn_read_only(&txn(vec![read.clone()], vec![put("a")])));
        assert!(!is_txn_read_only(&txn(
            vec![Op::Txn(txn(vec![], vec![del("a", "")]))],
            vec![]
        )));
    }
}
