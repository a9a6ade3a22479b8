//! Transactions: compares, branches, nesting, revisions, validation.

use super::*;

#[test]
fn txn_compares_choose_the_branch() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "2"); // 3
    f.put("a", "3"); // 4
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (cmp("a", Equal, Version(2)), true),
        (cmp("a", Greater, Version(1)), true),
        (cmp("a", Less, Version(2)), false),
        (cmp("a", Equal, Create(2)), true),
        (cmp("a", Equal, Mod(4)), true),
        (cmp("a", NotEqual, Mod(4)), false),
        (cmp("a", Equal, Value(b"3".to_vec())), true),
        (cmp("a", Greater, Value(b"2".to_vec())), true),
        (cmp("a", Equal, Lease(0)), true),
        // A missing key has version/create/mod/lease 0, and no value to compare.
        (cmp("zz", Equal, Version(0)), true),
        (cmp("zz", Equal, Create(0)), true),
        (cmp("zz", Equal, Value(Vec::new())), false),
        (cmp("zz", NotEqual, Value(b"x".to_vec())), false),
    ];
    for (c, want) in cases {
        let t = TxnRequest {
            compare: vec![c.clone()],
            success: vec![get_op("a")],
            failure: vec![get_op("b")],
        };
        let r = f.store().read_txn(&t).unwrap();
        assert_eq!(r.succeeded, want, "{c:?}");
        let OpResult::Range(rr) = &r.responses[0] else {
            panic!()
        };
        assert_eq!(keys(rr), [if want { "a" } else { "b" }]);
    }

    // A compare over a range holds only if it holds for every key in it.
    let range_cmp = |result, target| Compare {
        key: b"a".to_vec(),
        range_end: b"c".to_vec(),
        result,
        target,
    };
    let holds = |c: Compare| {
        f.store()
            .read_txn(&TxnRequest {
                compare: vec![c],
                ..Default::default()
            })
            .unwrap()
            .succeeded
    };
    assert!(holds(range_cmp(Greater, Mod(2))));
    assert!(!holds(range_cmp(Greater, Mod(3))));
    assert!(holds(range_cmp(Less, Version(3))));
    assert!(!holds(range_cmp(Equal, Version(2))));
    // An empty range is judged like a missing key.
    assert!(holds(Compare {
        key: b"x".to_vec(),
        range_end: b"y".to_vec(),
        result: Equal,
        target: Create(0)
    }));
    // Several compares: all must hold.
    let t = TxnRequest {
        compare: vec![cmp("a", Equal, Version(2)), cmp("b", Equal, Version(9))],
        ..Default::default()
    };
    assert!(!f.store().read_txn(&t).unwrap().succeeded);
}

#[test]
fn a_txn_takes_one_revision_and_reads_its_own_writes() {
    let f = Fixture::new();
    f.put("a", "0"); // 2
    let t = TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
        success: vec![
            get_op("b"),
            put_op("b", "1"),
            get_op("b"),
            put_op("c", "1"),
            Op::DeleteRange(DeleteRangeRequest {
                prev_kv: true,
                ..DeleteRangeRequest::key("a")
            }),
            Op::Range(RangeRequest::prefix("")),
        ],
        failure: vec![],
    };
    let r = f.txn(&t).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    assert_eq!(f.store().current_revision(), 3);
    let rr = |i: usize| match &r.responses[i] {
        OpResult::Range(rr) => rr.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((rr(0).kvs.len(), rr(0).revision), (0, 2));
    assert_eq!(rr(2).kvs[0].value, b"1");
    assert_eq!(rr(2).revision, 3);
    let OpResult::DeleteRange(d) = &r.responses[4] else {
        panic!()
    };
    assert_eq!((d.deleted, d.prev_kvs[0].value.as_slice()), (1, &b"0"[..]));
    assert_eq!(keys(&rr(5)), ["b", "c"]);

    // All changes share revision 3; the history shows sub-revisions in op order.
    let b = f.get("b").unwrap();
    let c = f.get("c").unwrap();
    assert_eq!((b.mod_revision, c.mod_revision), (3, 3));
    assert_eq!(f.get_at("a", 2).unwrap().unwrap().value, b"0");
    assert_eq!(f.get_at("a", 3).unwrap(), None);
    let db = &f.store().db;
    let revs: Vec<_> = db
        .iterator_cf(db.cf_handle(CF_KV).unwrap(), IteratorMode::Start)
        .map(|kv| schema::parse_revision_key(&kv.unwrap().0).unwrap())
        .collect();
    assert_eq!(
        revs,
        [
            Revision::new(2, 0),
            Revision::new(3, 0),
            Revision::new(3, 1),
            Revision::new(3, 2)
        ]
    );
}

#[test]
fn txns_that_write_nothing_take_no_revision() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    // Read-only.
    let r = f
        .txn(&TxnRequest {
            success: vec![get_op("a")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.revision, 2);
    // Writes only in the branch not taken.
    let r = f
        .txn(&TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(5))],
            success: vec![put_op("a", "2")],
            failure: vec![get_op("a")],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 2);
    // A delete of nothing.
    let r = f
        .txn(&TxnRequest {
            success: vec![Op::DeleteRange(DeleteRangeRequest::prefix("zz"))],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(f.store().current_revision(), 2);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    let nested = TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
        success: vec![put_op("n", "saw-old-a")],
        failure: vec![put_op("n", "saw-new-a")],
    };
    let t = TxnRequest {
        compare: vec![],
        success: vec![put_op("a", "2"), Op::Txn(nested), get_op("n")],
        failure: vec![],
    };
    let r = f.txn(&t).unwrap();
    assert_eq!(r.revision, 3);
    let OpResult::Txn(inner) = &r.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    let OpResult::Range(read) = &r.responses[2] else {
        panic!()
    };
    assert_eq!(read.kvs[0].value, b"saw-old-a");
    assert_eq!(f.get("n").unwrap().mod_revision, 3);
}

#[test]
fn invalid_txns_are_refused_before_changing_anything() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    let dup = TxnRequest {
        success: vec![put_op("x", "1"), put_op("x", "2")],
        ..Default::default()
    };
    assert!(matches!(f.txn(&dup), Err(MvccError::DuplicateKey)));
    let missing = TxnRequest {
        success: vec![
            put_op("x", "1"),
            Op::Put(PutRequest {
                ignore_value: true,
                ..PutRequest::new("nope", "")
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(f.txn(&missing), Err(MvccError::KeyNotFound)));
    let future = TxnRequest {
        success: vec![
            put_op("x", "1"),
            Op::Range(RangeRequest {
                revision: 3,
                ..RangeRequest::key("a")
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(
        f.txn(&future),
        Err(MvccError::FutureRevision { .. })
    ));
    assert_eq!(f.store().current_revision(), 2);
    assert_eq!(f.get("x"), None);

    // The batch stays usable after a refused request.
    f.apply(|b| {
        assert!(b.txn(&dup).is_err());
        b.put(&PutRequest::new("x", "ok")).unwrap();
    });
    assert_eq!(f.get("x").unwrap().mod_revision, 3);

    assert!(matches!(
        f.store().read_txn(&TxnRequest {
            failure: vec![put_op("x", "1")],
            ..Default::default()
        }),
        Err(MvccError::NotReadOnly)
    ));
}
