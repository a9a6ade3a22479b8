//! Domain types of the key-value service, in etcd's vocabulary.
//!
//! These are our own types: `api/` converts the etcd protobuf messages to and from them. Field
//! meanings follow etcd v3.5 (`mvccpb.KeyValue`, `etcdserverpb.RangeRequest`, ...).

/// A point in the store's history: `main` is the cluster-wide revision of one write request,
/// `sub` orders the changes inside that request (0, 1, ...).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Revision {
    /// Revision of the write request (etcd's `header.revision`).
    pub main: i64,
    /// Index of the change inside the request.
    pub sub: i64,
}

impl Revision {
    /// The revision `main`, sub-revision `sub`.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// One key as seen at some revision (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the put that created this generation of the key.
    pub create_revision: i64,
    /// Revision of the last put of the key.
    pub mod_revision: i64,
    /// Number of puts since the key was (re)created; 1 for a new key.
    pub version: i64,
    /// The value (empty when a range asked for keys only).
    pub value: Vec<u8>,
    /// Lease attached to the key, 0 for none.
    pub lease: i64,
}

/// Order of a range's results (etcd's `RangeRequest.SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SortOrder {
    /// No order requested: results come ascending by key, unless the target is not the key
    /// (then etcd sorts ascending by the target).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// Field a range's results are sorted by (etcd's `RangeRequest.SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SortTarget {
    /// The key bytes.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value bytes.
    Value,
}

/// A read of one key or a key range (etcd's `RangeRequest`).
///
/// Key range conventions (etcd): `range_end` empty = the single key `key`; `range_end == [0]` =
/// every key `>= key`; otherwise `[key, range_end)` (empty when `range_end <= key`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range, see the type's docs.
    pub range_end: Vec<u8>,
    /// Most results to return, 0 = no limit; `more` tells whether some were left out.
    pub limit: i64,
    /// Revision to read at; 0 or negative = the current revision.
    pub revision: i64,
    /// Order of the results.
    pub sort_order: SortOrder,
    /// Field to sort by.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop keys whose mod revision is lower (0 = no filter).
    pub min_mod_revision: i64,
    /// Drop keys whose mod revision is higher (0 = no filter).
    pub max_mod_revision: i64,
    /// Drop keys whose create revision is lower (0 = no filter).
    pub min_create_revision: i64,
    /// Drop keys whose create revision is higher (0 = no filter).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A read of the single key `key` at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    /// A read of every key starting with `prefix` (all keys when `prefix` is empty).
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_range_end(&key);
        RangeRequest {
            key,
            range_end,
            ..Default::default()
        }
    }
}

/// The `range_end` that selects every key starting with `prefix`, as etcd clients compute it
/// (`clientv3.GetPrefixRangeEnd`): the prefix with its last non-0xff byte incremented, or `[0]`
/// (every key from `prefix` on) when there is none.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Answer to a [`RangeRequest`] (etcd's `RangeResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RangeResult {
    /// The keys, after filters, sort and limit; empty for `count_only`.
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` left some keys out.
    pub more: bool,
    /// Number of keys in the range at the read revision, before filters and limit.
    pub count: i64,
    /// The store's revision when the read was served (etcd's `header.revision`), not the
    /// revision read at.
    pub revision: i64,
}

/// A write of one key (etcd's `PutRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value (must be empty with `ignore_value`, checked by `api`).
    pub value: Vec<u8>,
    /// Lease to attach, 0 for none (must be 0 with `ignore_lease`, checked by `api`).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value; the key must exist.
    pub ignore_value: bool,
    /// Keep the current lease; the key must exist.
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }
    }
}

/// Answer to a [`PutRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PutResult {
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
    /// The store's revision after the put (etcd's `header.revision`).
    pub revision: i64,
}

/// A delete of one key or a key range (etcd's `DeleteRangeRequest`); range conventions as
/// [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeleteRangeRequest {
    /// First key.
    pub key: Vec<u8>,
    /// End of the range.
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A delete of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    /// A delete of every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_range_end(&key);
        DeleteRangeRequest {
            key,
            range_end,
            ..Default::default()
        }
    }
}

/// Answer to a [`DeleteRangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeleteResult {
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
    /// The store's revision after the delete (unchanged when nothing was deleted).
    pub revision: i64,
}

/// How a [`Compare`] relates the key's field to the target value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareResult {
    /// field == target
    Equal,
    /// field > target
    Greater,
    /// field < target
    Less,
    /// field != target
    NotEqual,
}

/// The field a [`Compare`] reads, with the value it is compared to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareTarget {
    /// The version (0 for a missing key).
    Version(i64),
    /// The create revision (0 for a missing key).
    Create(i64),
    /// The mod revision (0 for a missing key).
    Mod(i64),
    /// The value; a compare of a value never holds on a missing key.
    Value(Vec<u8>),
    /// The lease (0 for a missing key or no lease).
    Lease(i64),
}

/// One condition of a transaction (etcd's `Compare`).
///
/// With a `range_end` (conventions as [`RangeRequest`]) the compare holds only if it holds for
/// every key in the range; on an empty range it is evaluated against a missing key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compare {
    /// The key.
    pub key: Vec<u8>,
    /// End of the range, empty for a single key.
    pub range_end: Vec<u8>,
    /// The relation.
    pub result: CompareResult,
    /// The field and the value to compare with.
    pub target: CompareTarget,
}

impl Compare {
    /// A compare of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            range_end: Vec::new(),
            result,
            target,
        }
    }
}

/// One operation of a transaction branch (etcd's `RequestOp`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// A transaction (etcd's `TxnRequest`): if every compare holds, `success` runs, else `failure`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TxnRequest {
    /// The conditions, evaluated against the state before the transaction.
    pub compare: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<Op>,
    /// Operations run otherwise.
    pub failure: Vec<Op>,
}

/// Answer to one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OpResult {
    /// Answer to a read.
    Range(RangeResult),
    /// Answer to a put.
    Put(PutResult),
    /// Answer to a delete.
    DeleteRange(DeleteResult),
    /// Answer to a nested transaction.
    Txn(TxnResult),
}

/// Answer to a [`TxnRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TxnResult {
    /// Whether every compare held (so `success` ran).
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<OpResult>,
    /// The store's revision after the transaction (unchanged when it wrote nothing).
    pub revision: i64,
}

/// Answer to [`crate::mvcc::MvccStore::hash_kv`] (etcd's `HashKVResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashKv {
    /// CRC-32 of the key-value history up to `hash_revision`.
    pub hash: u32,
    /// The compacted revision when the hash was taken.
    pub compact_revision: i64,
    /// The revision the hash covers.
    pub hash_revision: i64,
    /// The store's revision when the hash was taken.
    pub revision: i64,
}
