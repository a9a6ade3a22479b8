//! Revisions, puts, deletes and every range option.

use super::*;

#[test]
fn a_new_store_starts_at_revision_one_with_its_data_version() {
    let f = Fixture::new();
    // As etcd: a new store is at revision 1 and has never been compacted.
    assert_eq!(f.store().current_revision(), 1);
    assert_eq!(f.store().compacted_revision(), 0);
    let db = &f.store().db;
    let v = db
        .get_cf(db.cf_handle(CF_META).unwrap(), b"data_version")
        .unwrap()
        .unwrap();
    assert_eq!(v, schema::DATA_VERSION.to_be_bytes());
}

#[test]
fn revisions_and_versions_follow_put_delete_and_recreate() {
    let f = Fixture::new();
    // As etcd: the first write takes revision 2.
    assert_eq!(f.put("a", "1").revision, 2);
    assert_eq!(f.put("b", "x").revision, 3);
    assert_eq!(f.put("a", "2").revision, 4);
    let a = f.get("a").unwrap();
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (2, 4, 2, &b"2"[..])
    );

    let d = f.delete("a");
    assert_eq!((d.deleted, d.revision), (1, 5));
    assert_eq!(f.get("a"), None);
    // A delete that matches nothing takes no revision.
    let d = f.delete("a");
    assert_eq!((d.deleted, d.revision), (0, 5));
    assert_eq!(f.store().current_revision(), 5);

    assert_eq!(f.put("a", "3").revision, 6);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
    let b = f.get("b").unwrap();
    assert_eq!((b.create_revision, b.mod_revision, b.version), (3, 3, 1));
}

#[test]
fn put_returns_prev_kv_and_can_keep_value_or_lease() {
    let f = Fixture::new();
    let r = f.apply(|b| {
        b.put(&PutRequest {
            prev_kv: true,
            ..PutRequest::new("k", "v1")
        })
        .unwrap()
    });
    assert_eq!(r.prev_kv, None);
    f.apply(|b| {
        b.put(&PutRequest {
            lease: 7,
            ..PutRequest::new("k", "v2")
        })
        .unwrap()
    });

    let r = f.apply(|b| {
        b.put(&PutRequest {
            ignore_value: true,
            prev_kv: true,
            lease: 9,
            ..PutRequest::new("k", "")
        })
        .unwrap()
    });
    assert_eq!(r.prev_kv.unwrap().value, b"v2");
    let k = f.get("k").unwrap();
    assert_eq!((k.value.as_slice(), k.lease, k.version), (&b"v2"[..], 9, 3));

    f.apply(|b| {
        b.put(&PutRequest {
            ignore_lease: true,
            ..PutRequest::new("k", "v4")
        })
        .unwrap()
    });
    let k = f.get("k").unwrap();
    assert_eq!((k.value.as_slice(), k.lease), (&b"v4"[..], 9));

    // On a missing key both flags fail, and change nothing.
    let before = f.store().current_revision();
    for req in [
        PutRequest {
            ignore_value: true,
            ..PutRequest::new("missing", "")
        },
        PutRequest {
            ignore_lease: true,
            ..PutRequest::new("missing", "v")
        },
    ] {
        let err = f.apply(|b| b.put(&req)).unwrap_err();
        assert!(matches!(err, MvccError::KeyNotFound), "{err}");
    }
    assert_eq!(f.store().current_revision(), before);
    assert_eq!(f.get("missing"), None);
}

#[test]
fn ranges_at_old_revisions_see_the_state_of_that_revision() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("b", "1"); // 3
    f.put("a", "2"); // 4
    f.delete("b"); // 5
    f.put("c", "1"); // 6

    let at = |rev: i64| {
        let mut req = RangeRequest::prefix("");
        req.revision = rev;
        f.store().range(&req).unwrap()
    };
    // Revision 1 is the empty store.
    assert_eq!(keys(&at(1)), Vec::<String>::new());
    assert_eq!(keys(&at(2)), ["a"]);
    assert_eq!(keys(&at(3)), ["a", "b"]);
    assert_eq!(at(3).kvs[0].value, b"1");
    assert_eq!(at(4).kvs[0].value, b"2");
    assert_eq!(keys(&at(5)), ["a"]);
    assert_eq!(keys(&at(6)), ["a", "c"]);
    // The header revision is the store's, not the one read at.
    assert_eq!(at(3).revision, 6);
    assert_eq!(f.get_at("a", 2).unwrap().unwrap().version, 1);

    let err = f.get_at("a", 7).unwrap_err();
    assert!(
        matches!(
            err,
            MvccError::FutureRevision {
                requested: 7,
                current: 6
            }
        ),
        "{err}"
    );
}

#[test]
fn range_options_behave_as_in_etcd() {
    let f = Fixture::new();
    // key: (value, number of puts)
    f.put("k1", "c"); // 2
    f.put("k2", "a"); // 3
    f.put("k3", "b"); // 4
    f.put("k2", "d"); // 5
    f.put("k3", "e"); // 6
    f.put("k3", "f"); // 7
    f.put("x", "z"); // 8
    let range = |req: RangeRequest| f.store().range(&req).unwrap();

    // prefix, from-key, [key, end), end <= key
    assert_eq!(keys(&range(RangeRequest::prefix("k"))), ["k1", "k2", "k3"]);
    let from = |k: &str| RangeRequest {
        range_end: vec![0],
        ..RangeRequest::key(k)
    };
    assert_eq!(keys(&range(from("k2"))), ["k2", "k3", "x"]);
    let between = |k: &str, e: &str| RangeRequest {
        range_end: e.into(),
        ..RangeRequest::key(k)
    };
    assert_eq!(keys(&range(between("k1", "k3"))), ["k1", "k2"]);
    assert_eq!(range(between("k3", "k1")).count, 0);

    // limit, more, count
    let r = range(RangeRequest {
        limit: 2,
        ..RangeRequest::prefix("")
    });
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["k1".into(), "k2".into()], true, 4)
    );
    let r = range(RangeRequest {
        limit: 4,
        ..RangeRequest::prefix("")
    });
    assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));

    // sort: each target, each order
    let sorted = |order, target| {
        keys(&range(RangeRequest {
            sort_order: order,
            sort_target: target,
            ..RangeRequest::prefix("k")
        }))
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Ascend, Key), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Descend, Key), ["k3", "k2", "k1"]);
    // versions 1, 2, 3; creates 2, 3, 4; mods 2, 5, 7; values c, d, f
    assert_eq!(sorted(Descend, Version), ["k3", "k2", "k1"]);
    assert_eq!(sorted(None, Version), ["k1", "k2", "k3"]); // NONE + non-key target = ascend
    assert_eq!(sorted(Descend, Create), ["k3", "k2", "k1"]);
    assert_eq!(sorted(Ascend, Mod), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Descend, Mod), ["k3", "k2", "k1"]);
    assert_eq!(sorted(Ascend, Value), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Descend, Value), ["k3", "k2", "k1"]);
    f.put("k1", "zz"); // 9
    assert_eq!(sorted(Descend, Value), ["k1", "k3", "k2"]);
    assert_eq!(sorted(None, Value), ["k2", "k3", "k1"]);
    // Sort happens before the limit.
    let r = range(RangeRequest {
        limit: 1,
        sort_order: Descend,
        sort_target: Mod,
        ..RangeRequest::prefix("")
    });
    assert_eq!((keys(&r), r.more), (vec!["k1".to_string()], true));

    // keys_only, count_only
    let r = range(RangeRequest {
        keys_only: true,
        ..RangeRequest::prefix("k")
    });
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
    let r = range(RangeRequest {
        count_only: true,
        limit: 1,
        ..RangeRequest::prefix("k")
    });
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 3, false));

    // min/max mod and create revision filters; count stays the unfiltered total
    let filtered = |req: RangeRequest| {
        let r = range(req);
        (keys(&r), r.count)
    };
    // mods now: k1 9, k2 5, k3 7; creates: 2, 3, 4
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 6,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k1".into(), "k3".into()], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 7,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k2".into(), "k3".into()], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 3,
            max_create_revision: 3,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k2".into()], 3)
    );
    // A filter that drops everything below the limit leaves `more` false.
    let r = range(RangeRequest {
        limit: 1,
        min_create_revision: 4,
        ..RangeRequest::prefix("k")
    });
    assert_eq!((keys(&r), r.more), (vec!["k3".to_string()], false));
}
