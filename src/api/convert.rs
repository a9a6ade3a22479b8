//! etcd protobuf messages to the store's domain types and back. The only place where the two
//! vocabularies meet; validation that etcd does at the API edge happens here too.

use super::proto::etcdserverpb as pb;
use super::proto::mvccpb;
use super::status::EtcdError;
use crate::mvcc;

/// etcd's sort order enum value to ours (unknown values read as "none", as Go's enum does).
fn sort_order(value: i32) -> mvcc::SortOrder {
    match pb::range_request::SortOrder::try_from(value) {
        Ok(pb::range_request::SortOrder::Ascend) => mvcc::SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => mvcc::SortOrder::Descend,
        _ => mvcc::SortOrder::None,
    }
}

fn sort_target(value: i32) -> mvcc::SortTarget {
    use pb::range_request::SortTarget as T;
    match T::try_from(value) {
        Ok(T::Version) => mvcc::SortTarget::Version,
        Ok(T::Create) => mvcc::SortTarget::Create,
        Ok(T::Mod) => mvcc::SortTarget::Mod,
        Ok(T::Value) => mvcc::SortTarget::Value,
        _ => mvcc::SortTarget::Key,
    }
}

fn require_key(key: &[u8]) -> Result<(), EtcdError> {
    if key.is_empty() {
        Err(EtcdError::EmptyKey)
    } else {
        Ok(())
    }
}

/// A RangeRequest, validated as etcd does (a key is required).
pub fn range_request(r: &pb::RangeRequest) -> Result<mvcc::RangeRequest, EtcdError> {
    require_key(&r.key)?;
    Ok(mvcc::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: sort_order(r.sort_order),
        sort_target: sort_target(r.sort_target),
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// A PutRequest, validated as etcd does.
pub fn put_request(r: &pb::PutRequest) -> Result<mvcc::PutRequest, EtcdError> {
    require_key(&r.key)?;
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(mvcc::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    })
}

/// A DeleteRangeRequest, validated as etcd does.
pub fn delete_request(r: &pb::DeleteRangeRequest) -> Result<mvcc::DeleteRangeRequest, EtcdError> {
    require_key(&r.key)?;
    Ok(mvcc::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    })
}

fn compare(c: &pb::Compare) -> Result<mvcc::Compare, EtcdError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    require_key(&c.key)?;
    let result = match R::try_from(c.result) {
        Ok(R::Greater) => mvcc::CompareResult::Greater,
        Ok(R::Less) => mvcc::CompareResult::Less,
        Ok(R::NotEqual) => mvcc::CompareResult::NotEqual,
        _ => mvcc::CompareResult::Equal,
    };
    // As etcd's generated getters: the union field that matches the target, else its zero value.
    let union = c.target_union.as_ref();
    let int = |pick: fn(&U) -> Option<i64>| union.and_then(pick).unwrap_or(0);
    let target = match T::try_from(c.target) {
        Ok(T::Create) => mvcc::CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Mod) => mvcc::CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(T::Value) => mvcc::CompareTarget::Value(match union {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        Ok(T::Lease) => mvcc::CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        _ => mvcc::CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
    };
    Ok(mvcc::Compare {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        result,
        target,
    })
}

fn request_op(op: &pb::RequestOp) -> Result<mvcc::Op, EtcdError> {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(r)) => Ok(mvcc::Op::Range(range_request(r)?)),
        Some(Request::RequestPut(r)) => Ok(mvcc::Op::Put(put_request(r)?)),
        Some(Request::RequestDeleteRange(r)) => Ok(mvcc::Op::DeleteRange(delete_request(r)?)),
        Some(Request::RequestTxn(r)) => Ok(mvcc::Op::Txn(txn_request(r)?)),
        // etcd answers an empty RequestOp with an empty ResponseOp; an empty range of no key is
        // the closest domain op and is refused the same way etcd refuses a keyless range.
        None => Err(EtcdError::EmptyKey),
    }
}

/// A TxnRequest with every nested op and compare converted and validated.
pub fn txn_request(r: &pb::TxnRequest) -> Result<mvcc::TxnRequest, EtcdError> {
    Ok(mvcc::TxnRequest {
        compare: r.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: r.success.iter().map(request_op).collect::<Result<_, _>>()?,
        failure: r.failure.iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

/// A key-value as etcd sends it.
pub fn key_value(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A RangeResponse (header filled by the caller).
pub fn range_response(r: mvcc::RangeResult, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A PutResponse.
pub fn put_response(r: mvcc::PutResult, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

/// A DeleteRangeResponse.
pub fn delete_response(
    r: mvcc::DeleteResult,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// A TxnResponse; nested responses carry the same header, as etcd's do.
pub fn txn_response(r: mvcc::TxnResult, header: pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                mvcc::OpResult::Range(r) => Response::ResponseRange(range_response(r, header)),
                mvcc::OpResult::Put(r) => Response::ResponsePut(put_response(r, header)),
                mvcc::OpResult::DeleteRange(r) => {
                    Response::ResponseDeleteRange(delete_response(r, header))
                }
                mvcc::OpResult::Txn(r) => Response::ResponseTxn(txn_response(r, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses,
    }
}
