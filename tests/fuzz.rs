//! Property tests, bounded in cases (they run with `make test`): request decoding and
//! transaction evaluation take anything a client can send without panicking, and the
//! permission check of a transaction agrees with checking each of its parts.

use proptest::prelude::*;
use prost::Message;

use rampart::api::convert;
use rampart::api::proto::etcdserverpb as pb;
use rampart::auth::{Access, AuthCommand, AuthState, AuthView, PermKind, Permission, ROOT};
use rampart::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, MvccStore, Op, PutRequest,
    RangeRequest, TxnRequest,
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes, as any request message: decoded or refused, never a panic.
    #[test]
    fn request_decoding_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(r) = pb::RangeRequest::decode(bytes.as_slice()) {
            let _ = convert::range_request(&r);
        }
        if let Ok(r) = pb::PutRequest::decode(bytes.as_slice()) {
            let _ = convert::put_request(&r);
        }
        if let Ok(r) = pb::DeleteRangeRequest::decode(bytes.as_slice()) {
            let _ = convert::delete_request(&r);
        }
        if let Ok(t) = pb::TxnRequest::decode(bytes.as_slice())
            .map_err(|_| ())
            .and_then(|r| convert::txn_request(&r).map_err(|_| ()))
        {
            let _ = rampart::mvcc::check_txn_duplicates(&t);
            let _ = rampart::mvcc::txn_exceeds_max_ops(&t, 128);
            let _ = rampart::mvcc::is_txn_read_only(&t);
        }
        let _ = pb::WatchRequest::decode(bytes.as_slice());
        let _ = pb::LeaseGrantRequest::decode(bytes.as_slice());
    }
}

/// Keys from a small alphabet, so that operations collide.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(vec![0]),
        proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)],
            1..4
        ),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    (key(), key(), 0..3u8, 0..5u8, any::<i64>(), key()).prop_map(|(k, end, r, t, n, v)| Compare {
        key: k,
        range_end: end,
        result: match r {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            _ => CompareResult::Less,
        },
        target: match t {
            0 => CompareTarget::Version(n),
            1 => CompareTarget::Create(n),
            2 => CompareTarget::Mod(n),
            3 => CompareTarget::Lease(n),
            _ => CompareTarget::Value(v),
        },
    })
}

fn op() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        (key(), key(), any::<i64>()).prop_map(|(k, end, rev)| {
            let mut r = RangeRequest::key(k);
            r.range_end = end;
            r.revision = rev % 8;
            Op::Range(r)
        }),
        (key(), key(), any::<bool>()).prop_map(|(k, v, prev)| {
            let mut p = PutRequest::new(k, v);
            p.prev_kv = prev;
            Op::Put(p)
        }),
        (key(), key(), any::<bool>()).prop_map(|(k, end, prev)| Op::DeleteRange(
            DeleteRangeRequest {
                key: k,
                range_end: end,
                prev_kv: prev,
            }
        )),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        (
            proptest::collection::vec(compare(), 0..3),
            proptest::collection::vec(inner.clone(), 0..3),
            proptest::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| {
                Op::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    })
}

fn txn() -> impl Strategy<Value = TxnRequest> {
    (
        proptest::collection::vec(compare(), 0..3),
        proptest::collection::vec(op(), 0..4),
        proptest::collection::vec(op(), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

/// Auth on; user `u` may read and write `a`..`b` and read the key `b`.
fn view() -> AuthView {
    let mut s = AuthState::default();
    for c in [
        AuthCommand::UserAdd { name: ROOT.into() },
        AuthCommand::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        },
        AuthCommand::UserAdd { name: "u".into() },
        AuthCommand::RoleAdd { name: "r".into() },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            permission: Permission {
                kind: PermKind::ReadWrite,
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
            },
        },
        AuthCommand::RoleGrantPermission {
            role: "r".into(),
            permission: Permission {
                kind: PermKind::Read,
                key: b"b".to_vec(),
                range_end: vec![],
            },
        },
        AuthCommand::UserGrantRole {
            user: "u".into(),
            role: "r".into(),
        },
        AuthCommand::Enable,
    ] {
        s.apply(&c).expect("setup");
    }
    AuthView::new(s)
}

/// Every (access, key, range end) a transaction touches, as its parts would be checked alone.
fn parts(t: &TxnRequest, out: &mut Vec<(Access, Vec<u8>, Vec<u8>)>) {
    for c in &t.compare {
        out.push((Access::Read, c.key.clone(), c.range_end.clone()));
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            Op::Range(r) => out.push((Access::Read, r.key.clone(), r.range_end.clone())),
            Op::Put(p) => {
                out.push((Access::Write, p.key.clone(), vec![]));
                if p.prev_kv {
                    out.push((Access::Read, p.key.clone(), vec![]));
                }
            }
            Op::DeleteRange(d) => {
                out.push((Access::Write, d.key.clone(), d.range_end.clone()));
                if d.prev_kv {
                    out.push((Access::Read, d.key.clone(), d.range_end.clone()));
                }
            }
            Op::Txn(inner) => parts(inner, out),
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// A transaction is allowed exactly when each compare and operation, at every depth and in
    /// both branches, is allowed on its own; root may do all of it.
    #[test]
    fn a_txn_check_is_the_check_of_all_its_parts(t in txn()) {
        let v = view();
        let mut all = Vec::new();
        parts(&t, &mut all);
        let each = all.iter().all(|(a, k, e)| v.range(Some("u"), *a, k, e).is_ok());
        prop_assert_eq!(v.txn(Some("u"), &t).is_ok(), each);
        prop_assert!(v.txn(Some(ROOT), &t).is_ok());
        prop_assert_eq!(v.txn(None, &t).is_ok(), all.is_empty());
    }
}

#[test]
fn transactions_of_any_shape_evaluate_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let db = rampart::server::storage::open(tmp.path()).unwrap();
    let store = MvccStore::open(db).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&txn(), |t| {
            if rampart::mvcc::check_txn_duplicates(&t).is_err() {
                return Ok(());
            }
            if rampart::mvcc::is_txn_read_only(&t) {
                let _ = store.read_txn(&t);
                return Ok(());
            }
            let mut batch = store.begin_apply().expect("begin");
            // Refusals (compacted, future revision, missing lease...) are answers, not panics.
            let _ = batch.txn(&t);
            batch
                .finish()
                .expect("finish")
                .commit(&rocksdb::WriteOptions::default())
                .expect("commit");
            Ok(())
        })
        .unwrap();
}
