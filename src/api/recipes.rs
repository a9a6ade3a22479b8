//! What the Lock and Election services are built from, the way etcd's concurrency recipes are:
//! a key per contender (`<name>/<lease in hex>`, attached to the contender's lease), ordered by
//! create revision; the oldest key wins, and the others wait until every older key is deleted.
//! Everything goes through the same raft proposals and reads as the KV service.

use std::sync::Arc;

use tonic::Status;

use super::core::{Core, raft_status};
use super::kv::{mvcc_status, rejection_status};
use super::status::EtcdError;
use crate::mvcc::{
    Compare, CompareResult, CompareTarget, KeyValue, Op, OpResult, PutRequest, RangeRequest,
    SortOrder, SortTarget, TxnRequest, TxnResult,
};
use crate::raft::{StateCommand, StateResult};

/// The key a contender with `lease` holds under `name` (etcd: `name + "/" + hex(lease)`).
pub fn contender_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix_of(name);
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// The prefix of every contender key under `name`.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// Checks that `who` may read — and with `write`, also write — every key under `prefix` (a
/// lock's or an election's keys, as the recipe's own KV requests would be checked).
pub fn authorize_prefix(
    core: &Core,
    who: &super::authz::Requester,
    prefix: &[u8],
    write: bool,
) -> Result<(), Status> {
    let end = crate::mvcc::prefix_range_end(prefix);
    core.authorize(who, |v, u| {
        v.range(u, crate::auth::Access::Read, prefix, &end)?;
        if write {
            v.range(u, crate::auth::Access::Write, prefix, &end)?;
        }
        Ok(())
    })
    .map(drop)
}

/// Proposes a transaction and returns its result (refusals as etcd's statuses).
pub async fn txn(core: &Core, req: TxnRequest) -> Result<TxnResult, Status> {
    core.refuse_on_learner()?;
    if core.check_quota() {
        return Err(EtcdError::NoSpace.into());
    }
    match core
        .node
        .propose(&StateCommand::Txn(req))
        .await
        .map_err(raft_status)?
    {
        StateResult::Txn(r) => Ok(r),
        StateResult::Rejected(r) => Err(rejection_status(r)),
        _ => Err(Status::internal(
            "etcdserver: unexpected state machine answer",
        )),
    }
}

/// Where a contender stands after [`join`].
pub struct Joined {
    /// The create revision of the contender's key: its place in line.
    pub rev: i64,
    /// The key as it was, when it existed already (an earlier call with the same lease).
    pub existing: Option<KeyValue>,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The create revision of the oldest key under `prefix`, when asked for.
    pub oldest: Option<i64>,
}

/// Joins the line under `prefix`: puts `key` (attached to `lease`, holding `value`) unless it
/// exists, in one transaction that also reads the oldest key under `prefix` when `see_oldest`.
/// `gone` is the error when the key vanished between (its lease expired).
pub async fn join(
    core: &Core,
    (key, prefix): (&[u8], &[u8]),
    lease: i64,
    value: Vec<u8>,
    see_oldest: bool,
    gone: Status,
) -> Result<Joined, Status> {
    let mut success = vec![Op::Put(PutRequest {
        lease,
        ..PutRequest::new(key.to_vec(), value)
    })];
    let mut failure = vec![Op::Range(RangeRequest::key(key.to_vec()))];
    if see_oldest {
        success.push(oldest_op(prefix));
        failure.push(oldest_op(prefix));
    }
    let req = TxnRequest {
        compare: vec![created_at(key, 0)],
        success,
        failure,
    };
    let res = txn(core, req).await?;
    let existing = if res.succeeded {
        None
    } else {
        Some(first_range(&res).into_iter().next().ok_or(gone)?)
    };
    let oldest = match (see_oldest, res.responses.last()) {
        (true, Some(OpResult::Range(r))) => r.kvs.first().map(|kv| kv.create_revision),
        _ => None,
    };
    Ok(Joined {
        rev: existing
            .as_ref()
            .map_or(res.revision, |kv| kv.create_revision),
        existing,
        revision: res.revision,
        oldest,
    })
}

/// A compare: the create revision of `key` equals `rev` (0 = the key does not exist).
pub fn created_at(key: &[u8], rev: i64) -> Compare {
    Compare::key(
        key.to_vec(),
        CompareResult::Equal,
        CompareTarget::Create(rev),
    )
}

/// The key-values of the first read in a transaction's responses.
fn first_range(r: &TxnResult) -> Vec<KeyValue> {
    r.responses
        .iter()
        .find_map(|op| match op {
            OpResult::Range(range) => Some(range.kvs.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A read of the oldest key (by create revision) under `prefix`, for use inside a txn.
fn oldest_op(prefix: &[u8]) -> Op {
    Op::Range(RangeRequest {
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::prefix(prefix.to_vec())
    })
}

/// The oldest key under `prefix` now, after a linearizable barrier; and the revision read.
pub async fn oldest(core: &Core, prefix: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
    core.node.linearize().await.map_err(raft_status)?;
    let store = core.node.store();
    let req = RangeRequest {
        limit: 1,
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        ..RangeRequest::prefix(prefix.to_vec())
    };
    let r = store.range(&req).map_err(mvcc_status)?;
    Ok((r.kvs.into_iter().next(), r.revision))
}

/// Waits until no key under `prefix` has a create revision at or below `max_create`: the
/// contenders ahead of this one are gone (deleted, or their lease expired). Returns the
/// revision at which that was seen.
pub async fn wait_for_older_to_go(
    core: &Arc<Core>,
    prefix: &[u8],
    max_create: i64,
) -> Result<i64, Status> {
    let mut published = core.node.subscribe_revisions();
    core.node.linearize().await.map_err(raft_status)?;
    loop {
        let store = core.node.store();
        // `kvs` is after the filter (`count` would be before it).
        let req = RangeRequest {
            max_create_revision: max_create,
            keys_only: true,
            ..RangeRequest::prefix(prefix.to_vec())
        };
        let r = store.range(&req).map_err(mvcc_status)?;
        if r.kvs.is_empty() {
            return Ok(r.revision);
        }
        published
            .changed()
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
    }
}
