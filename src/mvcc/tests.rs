//! Tests of the store as a whole, on a real RocksDB in a temporary directory.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{DB, IteratorMode, Options, WriteOptions};
use tempfile::TempDir;

use super::schema::{CF_KV, CF_META};
use super::*;

fn open_db(dir: &Path) -> Arc<DB> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    Arc::new(DB::open_cf_descriptors(&opts, dir, cf_descriptors()).unwrap())
}

struct Fixture {
    dir: TempDir,
    store: Option<MvccStore>,
}

impl Fixture {
    fn new() -> Self {
        Self::with_options(MvccOptions::default())
    }

    fn with_options(options: MvccOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open_with_options(open_db(dir.path()), options).unwrap();
        Fixture {
            dir,
            store: Some(store),
        }
    }

    fn store(&self) -> &MvccStore {
        self.store.as_ref().unwrap()
    }

    /// Closes the database and opens it again.
    fn reopen(&mut self) {
        let options = self.store().options;
        self.store = None;
        let db = open_db(self.dir.path());
        self.store = Some(MvccStore::open_with_options(db, options).unwrap());
    }

    /// Applies one batch and publishes it.
    fn apply<T>(&self, f: impl FnOnce(&mut ApplyBatch<'_>) -> T) -> T {
        let mut batch = self.store().begin_apply().unwrap();
        let t = f(&mut batch);
        batch
            .finish()
            .unwrap()
            .commit(&WriteOptions::default())
            .unwrap();
        t
    }

    fn put(&self, key: &str, value: &str) -> PutResult {
        self.apply(|b| b.put(&PutRequest::new(key, value)).unwrap())
    }

    fn delete(&self, key: &str) -> DeleteResult {
        self.apply(|b| b.delete_range(&DeleteRangeRequest::key(key)).unwrap())
    }

    fn txn(&self, txn: &TxnRequest) -> Result<TxnResult, MvccError> {
        self.apply(|b| b.txn(txn))
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.get_at(key, 0).unwrap()
    }

    fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let mut req = RangeRequest::key(key);
        req.revision = revision;
        Ok(self.store().range(&req)?.kvs.pop())
    }

    fn kv_records(&self) -> usize {
        let db = &self.store().db;
        db.iterator_cf(db.cf_handle(CF_KV).unwrap(), IteratorMode::Start)
            .count()
    }
}

fn keys(r: &RangeResult) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn put_op(k: &str, v: &str) -> Op {
    Op::Put(PutRequest::new(k, v))
}

fn get_op(k: &str) -> Op {
    Op::Range(RangeRequest::key(k))
}

fn cmp(k: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare::key(k, result, target)
}

#[test]
fn a_new_store_starts_at_revision_zero_with_its_data_version() {
    let f = Fixture::new();
    assert_eq!(f.store().current_revision(), 0);
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
    assert_eq!(f.put("a", "1").revision, 1);
    assert_eq!(f.put("b", "x").revision, 2);
    assert_eq!(f.put("a", "2").revision, 3);
    let a = f.get("a").unwrap();
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (1, 3, 2, &b"2"[..])
    );

    let d = f.delete("a");
    assert_eq!((d.deleted, d.revision), (1, 4));
    assert_eq!(f.get("a"), None);
    // A delete that matches nothing takes no revision.
    let d = f.delete("a");
    assert_eq!((d.deleted, d.revision), (0, 4));
    assert_eq!(f.store().current_revision(), 4);

    assert_eq!(f.put("a", "3").revision, 5);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    let b = f.get("b").unwrap();
    assert_eq!((b.create_revision, b.mod_revision, b.version), (2, 2, 1));
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
    f.put("a", "1"); // 1
    f.put("b", "1"); // 2
    f.put("a", "2"); // 3
    f.delete("b"); // 4
    f.put("c", "1"); // 5

    let at = |rev: i64| {
        let mut req = RangeRequest::prefix("");
        req.revision = rev;
        f.store().range(&req).unwrap()
    };
    assert_eq!(keys(&at(1)), ["a"]);
    assert_eq!(keys(&at(2)), ["a", "b"]);
    assert_eq!(at(2).kvs[0].value, b"1");
    assert_eq!(at(3).kvs[0].value, b"2");
    assert_eq!(keys(&at(4)), ["a"]);
    assert_eq!(keys(&at(5)), ["a", "c"]);
    // The header revision is the store's, not the one read at.
    assert_eq!(at(2).revision, 5);
    assert_eq!(f.get_at("a", 1).unwrap().unwrap().version, 1);

    let err = f.get_at("a", 6).unwrap_err();
    assert!(
        matches!(
            err,
            MvccError::FutureRevision {
                requested: 6,
                current: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn range_options_behave_as_in_etcd() {
    let f = Fixture::new();
    // key: (value, number of puts)
    f.put("k1", "c"); // 1
    f.put("k2", "a"); // 2
    f.put("k3", "b"); // 3
    f.put("k2", "d"); // 4
    f.put("k3", "e"); // 5
    f.put("k3", "f"); // 6
    f.put("x", "z"); // 7
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
    // versions 1, 2, 3; creates 1, 2, 3; mods 1, 4, 6; values c, d, f
    assert_eq!(sorted(Descend, Version), ["k3", "k2", "k1"]);
    assert_eq!(sorted(None, Version), ["k1", "k2", "k3"]); // NONE + non-key target = ascend
    assert_eq!(sorted(Descend, Create), ["k3", "k2", "k1"]);
    assert_eq!(sorted(Ascend, Mod), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Descend, Mod), ["k3", "k2", "k1"]);
    assert_eq!(sorted(Ascend, Value), ["k1", "k2", "k3"]);
    assert_eq!(sorted(Descend, Value), ["k3", "k2", "k1"]);
    f.put("k1", "zz"); // 8
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
    // mods now: k1 8, k2 4, k3 6; creates: 1, 2, 3
    assert_eq!(
        filtered(RangeRequest {
            min_mod_revision: 5,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k1".into(), "k3".into()], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            max_mod_revision: 6,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k2".into(), "k3".into()], 3)
    );
    assert_eq!(
        filtered(RangeRequest {
            min_create_revision: 2,
            max_create_revision: 2,
            ..RangeRequest::prefix("k")
        }),
        (vec!["k2".into()], 3)
    );
    // A filter that drops everything below the limit leaves `more` false.
    let r = range(RangeRequest {
        limit: 1,
        min_create_revision: 3,
        ..RangeRequest::prefix("k")
    });
    assert_eq!((keys(&r), r.more), (vec!["k3".to_string()], false));
}

#[test]
fn txn_compares_choose_the_branch() {
    let f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("b", "2"); // 2
    f.put("a", "3"); // 3
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (cmp("a", Equal, Version(2)), true),
        (cmp("a", Greater, Version(1)), true),
        (cmp("a", Less, Version(2)), false),
        (cmp("a", Equal, Create(1)), true),
        (cmp("a", Equal, Mod(3)), true),
        (cmp("a", NotEqual, Mod(3)), false),
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
    assert!(holds(range_cmp(Greater, Mod(1))));
    assert!(!holds(range_cmp(Greater, Mod(2))));
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
    f.put("a", "0"); // 1
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
    assert_eq!(r.revision, 2);
    assert_eq!(f.store().current_revision(), 2);
    let rr = |i: usize| match &r.responses[i] {
        OpResult::Range(rr) => rr.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((rr(0).kvs.len(), rr(0).revision), (0, 1));
    assert_eq!(rr(2).kvs[0].value, b"1");
    assert_eq!(rr(2).revision, 2);
    let OpResult::DeleteRange(d) = &r.responses[4] else {
        panic!()
    };
    assert_eq!((d.deleted, d.prev_kvs[0].value.as_slice()), (1, &b"0"[..]));
    assert_eq!(keys(&rr(5)), ["b", "c"]);

    // All changes share revision 2; the history shows sub-revisions in op order.
    let b = f.get("b").unwrap();
    let c = f.get("c").unwrap();
    assert_eq!((b.mod_revision, c.mod_revision), (2, 2));
    assert_eq!(f.get_at("a", 1).unwrap().unwrap().value, b"0");
    assert_eq!(f.get_at("a", 2).unwrap(), None);
    let db = &f.store().db;
    let revs: Vec<_> = db
        .iterator_cf(db.cf_handle(CF_KV).unwrap(), IteratorMode::Start)
        .map(|kv| schema::parse_revision_key(&kv.unwrap().0).unwrap())
        .collect();
    assert_eq!(
        revs,
        [
            Revision::new(1, 0),
            Revision::new(2, 0),
            Revision::new(2, 1),
            Revision::new(2, 2)
        ]
    );
}

#[test]
fn txns_that_write_nothing_take_no_revision() {
    let f = Fixture::new();
    f.put("a", "1");
    // Read-only.
    let r = f
        .txn(&TxnRequest {
            success: vec![get_op("a")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.revision, 1);
    // Writes only in the branch not taken.
    let r = f
        .txn(&TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(5))],
            success: vec![put_op("a", "2")],
            failure: vec![get_op("a")],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 1);
    // A delete of nothing.
    let r = f
        .txn(&TxnRequest {
            success: vec![Op::DeleteRange(DeleteRangeRequest::prefix("zz"))],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.revision, 1);
    assert_eq!(f.store().current_revision(), 1);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_txn() {
    let f = Fixture::new();
    f.put("a", "1"); // 1
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
    assert_eq!(r.revision, 2);
    let OpResult::Txn(inner) = &r.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    let OpResult::Range(read) = &r.responses[2] else {
        panic!()
    };
    assert_eq!(read.kvs[0].value, b"saw-old-a");
    assert_eq!(f.get("n").unwrap().mod_revision, 2);
}

#[test]
fn invalid_txns_are_refused_before_changing_anything() {
    let f = Fixture::new();
    f.put("a", "1"); // 1
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
                revision: 2,
                ..RangeRequest::key("a")
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(
        f.txn(&future),
        Err(MvccError::FutureRevision { .. })
    ));
    assert_eq!(f.store().current_revision(), 1);
    assert_eq!(f.get("x"), None);

    // The batch stays usable after a refused request.
    f.apply(|b| {
        assert!(b.txn(&dup).is_err());
        b.put(&PutRequest::new("x", "ok")).unwrap();
    });
    assert_eq!(f.get("x").unwrap().mod_revision, 2);

    assert!(matches!(
        f.store().read_txn(&TxnRequest {
            failure: vec![put_op("x", "1")],
            ..Default::default()
        }),
        Err(MvccError::NotReadOnly)
    ));
}

#[test]
fn compaction_removes_history_and_keeps_latest_values() {
    let f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("a", "2"); // 2
    f.put("b", "1"); // 3
    f.delete("b"); // 4
    f.put("c", "1"); // 5
    f.put("a", "3"); // 6
    assert_eq!(f.kv_records(), 6);
    let uncompacted = f.store().hash_kv(6).unwrap();

    assert_eq!(f.apply(|b| b.compact(5).unwrap()), 6);
    assert_eq!(f.store().compacted_revision(), 5);
    assert!(matches!(
        f.get_at("a", 4),
        Err(MvccError::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    // a@1 and b's whole life (put 3, tombstone 4) go; a@2, c@5, a@6 stay. The records are
    // deleted by the following batches, or by remove_compacted.
    assert_eq!(f.store().pending_compaction_deletes(), 3);
    assert_eq!(f.kv_records(), 6);
    let before = f.store().hash_kv(6).unwrap();
    assert_ne!(before.hash, uncompacted.hash);
    assert_eq!(before.compact_revision, 5);
    let sync = WriteOptions::default();
    assert_eq!(f.store().remove_compacted(&sync).unwrap(), 0);
    assert_eq!(f.kv_records(), 3);
    assert_eq!(f.get_at("a", 5).unwrap().unwrap().value, b"2");
    assert_eq!(f.get_at("b", 5).unwrap(), None);
    let a = f.get("a").unwrap();
    assert_eq!(
        (a.value.as_slice(), a.version, a.create_revision),
        (&b"3"[..], 3, 1)
    );
    // The hash of what survived is the same whatever was removed below it.
    assert_eq!(f.store().hash_kv(6).unwrap().hash, before.hash);
    assert!(matches!(
        f.store().hash_kv(5),
        Err(MvccError::Compacted { .. })
    ));

    let err = f.apply(|b| b.compact(5)).unwrap_err();
    assert!(matches!(err, MvccError::Compacted { .. }), "{err}");
    let err = f.apply(|b| b.compact(7)).unwrap_err();
    assert!(matches!(err, MvccError::FutureRevision { .. }), "{err}");

    // Compacting at the current revision after deleting everything removes everything.
    f.delete("c"); // 7
    f.apply(|b| b.delete_range(&DeleteRangeRequest::key("a")).unwrap()); // 8
    f.apply(|b| b.compact(8).unwrap());
    assert_eq!(f.store().remove_compacted(&sync).unwrap(), 0);
    assert_eq!(f.kv_records(), 0);
    assert_eq!(f.store().range(&RangeRequest::prefix("")).unwrap().count, 0);
    assert_eq!(f.put("a", "new").revision, 9);
    assert_eq!(f.get("a").unwrap().create_revision, 9);
}

#[test]
fn compacted_revision_survives_reopen_and_chunked_removal_resumes() {
    let mut f = Fixture::with_options(MvccOptions {
        compaction_batch_limit: 2,
    });
    for i in 0..5 {
        f.put("k", &i.to_string()); // 1..=5
    }
    f.delete("gone"); // nothing
    f.put("gone", "x"); // 6
    f.delete("gone"); // 7
    let hash = f.store().hash().unwrap();
    assert_eq!(f.kv_records(), 7);

    // Compaction at 7 removes k@1..4, gone@6, gone@7: six records, two per later batch.
    f.apply(|b| b.compact(7).unwrap());
    assert_eq!(f.store().pending_compaction_deletes(), 6);
    assert_eq!(f.kv_records(), 7);
    f.apply(|_| ());
    assert_eq!(f.store().pending_compaction_deletes(), 4);
    assert_eq!(f.kv_records(), 5);
    // Readers and hashes do not care how far the removal got.
    assert!(f.get_at("k", 6).is_err());
    assert_eq!(f.get("k").unwrap().value, b"4");
    let compacted_hash = f.store().hash().unwrap();
    assert_ne!(compacted_hash, hash);

    // A restart mid-way keeps the compaction and resumes the removal.
    f.reopen();
    assert_eq!(f.store().compacted_revision(), 7);
    assert_eq!(f.store().pending_compaction_deletes(), 4);
    assert_eq!(f.store().hash().unwrap(), compacted_hash);
    assert!(f.get_at("k", 6).is_err());
    f.apply(|_| ());
    f.apply(|_| ());
    assert_eq!(f.store().pending_compaction_deletes(), 0);
    assert_eq!(f.kv_records(), 1);
    assert_eq!(f.store().hash().unwrap(), compacted_hash);
    let db = &f.store().db;
    let finished = db
        .get_cf(db.cf_handle(CF_META).unwrap(), b"compact_finished_revision")
        .unwrap()
        .unwrap();
    assert_eq!(finished, 7i64.to_be_bytes());

    f.reopen();
    assert_eq!(f.store().compacted_revision(), 7);
    assert_eq!(f.store().pending_compaction_deletes(), 0);
    assert_eq!(f.get("k").unwrap().version, 5);
    assert_eq!(f.get("gone"), None);
}

#[test]
fn reopen_rebuilds_the_index_and_revisions_continue() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 1
    f.put("a", "2"); // 2
    f.apply(|b| {
        b.put(&PutRequest {
            lease: 42,
            ..PutRequest::new("l", "x")
        })
        .unwrap()
    }); // 3
    f.delete("a"); // 4
    f.put("a", "3"); // 5
    let hash = f.store().hash().unwrap();
    f.reopen();
    assert_eq!(f.store().current_revision(), 5);
    assert_eq!(f.store().hash().unwrap(), hash);
    assert_eq!(f.get_at("a", 2).unwrap().unwrap().version, 2);
    assert_eq!(f.get_at("a", 4).unwrap(), None);
    assert_eq!(f.store().keys_with_lease(42), vec![b"l".to_vec()]);
    assert_eq!(f.put("a", "4").revision, 6);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.version), (5, 2));
}

#[test]
fn later_requests_in_a_batch_see_earlier_ones_and_readers_see_nothing_until_publish() {
    let f = Fixture::new();
    f.put("a", "0"); // 1
    let store = f.store();
    let mut batch = store.begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "1")).unwrap(); // 2
    let r = batch
        .txn(&TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(2))],
            success: vec![put_op("b", "saw-a-1")],
            failure: vec![],
        })
        .unwrap(); // 3
    assert!(r.succeeded);
    let d = batch
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..DeleteRangeRequest::prefix("")
        })
        .unwrap(); // 4
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs[1].value, b"saw-a-1");
    batch.put(&PutRequest::new("b", "again")).unwrap(); // 5
    assert_eq!(batch.revision(), 5);
    assert_eq!(
        batch
            .range(&RangeRequest {
                revision: 3,
                ..RangeRequest::prefix("")
            })
            .unwrap()
            .count,
        2
    );
    assert_eq!(
        batch.range(&RangeRequest::key("b")).unwrap().kvs[0].version,
        1
    );
    assert!(matches!(
        store.begin_apply(),
        Err(MvccError::ApplyInProgress)
    ));

    // Not visible to readers, not even after finish or after the write.
    let reader = |store: &MvccStore| {
        let r = store.range(&RangeRequest::prefix("")).unwrap();
        (r.revision, keys(&r))
    };
    assert_eq!(reader(store), (1, vec!["a".to_string()]));
    let mut pending = batch.finish().unwrap();
    assert_eq!(pending.revision(), 5);
    pending.write_batch().put(b"applied", b"log id 7");
    assert_eq!(reader(store), (1, vec!["a".to_string()]));
    assert!(matches!(
        store.range(&RangeRequest {
            revision: 2,
            ..RangeRequest::key("a")
        }),
        Err(MvccError::FutureRevision { .. })
    ));
    let (wb, token) = pending.into_parts();
    store.db.write(wb).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(reader(store), (1, vec!["a".to_string()])))
            .join()
            .unwrap();
    });
    assert_eq!(token.publish(), 5);
    assert_eq!(reader(store), (5, vec!["b".to_string()]));
    assert_eq!(store.db.get(b"applied").unwrap().unwrap(), b"log id 7");
}

#[test]
fn concurrent_readers_always_see_whole_transactions() {
    let f = Fixture::new();
    let store = f.store();
    // Every txn writes x and y with the same value; a reader must never see them differ.
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..200 {
                let v = i.to_string();
                let mut batch = store.begin_apply().unwrap();
                batch
                    .txn(&TxnRequest {
                        success: vec![put_op("x", &v), put_op("y", &v)],
                        ..Default::default()
                    })
                    .unwrap();
                batch
                    .finish()
                    .unwrap()
                    .commit(&WriteOptions::default())
                    .unwrap();
            }
        });
        let mut last = 0;
        while !writer.is_finished() || last < 200 {
            let r = store.range(&RangeRequest::prefix("")).unwrap();
            assert!(r.revision >= last);
            last = r.revision;
            if r.revision > 0 {
                assert_eq!(r.kvs.len(), 2);
                assert_eq!(r.kvs[0].value, r.kvs[1].value);
                assert_eq!(r.kvs[0].mod_revision, r.revision);
            }
        }
        writer.join().unwrap();
    });
}

#[test]
fn hash_kv_is_equal_on_stores_fed_the_same_requests() {
    let requests: Vec<TxnRequest> = (0..20)
        .map(|i| TxnRequest {
            compare: vec![cmp("k0", CompareResult::Less, CompareTarget::Version(3))],
            success: vec![put_op(&format!("k{}", i % 4), &i.to_string())],
            failure: vec![Op::DeleteRange(DeleteRangeRequest::prefix("k"))],
        })
        .collect();
    let one = Fixture::new();
    let two = Fixture::new();
    // Same requests, different batching.
    for r in &requests {
        one.txn(r).unwrap();
    }
    for chunk in requests.chunks(7) {
        two.apply(|b| {
            for r in chunk {
                b.txn(r).unwrap();
            }
        });
    }
    let (s1, s2) = (one.store(), two.store());
    assert_eq!(s1.current_revision(), s2.current_revision());
    for rev in [0, 5, s1.current_revision()] {
        assert_eq!(s1.hash_kv(rev).unwrap(), s2.hash_kv(rev).unwrap());
    }
    assert_eq!(s1.hash().unwrap(), s2.hash().unwrap());
    one.put("k9", "x");
    two.put("k9", "y");
    assert_ne!(s1.hash_kv(0).unwrap().hash, s2.hash_kv(0).unwrap().hash);
    assert_ne!(s1.hash_kv(5).unwrap().hash, s1.hash_kv(0).unwrap().hash);
}

#[test]
fn a_synced_batch_survives_reopen() {
    let mut f = Fixture::new();
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("durable", "yes")).unwrap();
    batch.write_batch().put(b"applied_log_id", b"1-1");
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    assert_eq!(batch.finish().unwrap().commit(&sync).unwrap(), 1);
    f.reopen();
    assert_eq!(f.store().current_revision(), 1);
    assert_eq!(f.get("durable").unwrap().value, b"yes");
    assert_eq!(
        f.store().db.get(b"applied_log_id").unwrap().unwrap(),
        b"1-1"
    );
}

#[test]
fn a_dropped_unpublished_batch_is_detected() {
    let f = Fixture::new();
    f.put("a", "1");
    // Finished but never written: harmless, the next batch proceeds.
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "2")).unwrap();
    drop(batch.finish().unwrap());
    assert_eq!(f.put("b", "1").revision, 2);
    // Written but never published: the store is behind and says so.
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "3")).unwrap();
    let (wb, token) = batch.finish().unwrap().into_parts();
    f.store().db.write(wb).unwrap();
    drop(token);
    assert!(matches!(
        f.store().begin_apply(),
        Err(MvccError::Unpublished {
            durable: 3,
            published: 2,
            ..
        })
    ));
}

#[test]
fn keys_with_lease_follow_puts_and_deletes() {
    let f = Fixture::new();
    let leased = |k: &str, lease| PutRequest {
        lease,
        ..PutRequest::new(k, "v")
    };
    f.apply(|b| {
        b.put(&leased("a", 1)).unwrap();
        b.put(&leased("b", 1)).unwrap();
        b.put(&leased("c", 2)).unwrap();
        b.put(&leased("b", 2)).unwrap();
    });
    assert_eq!(f.store().keys_with_lease(1), vec![b"a".to_vec()]);
    assert_eq!(
        f.store().keys_with_lease(2),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    f.delete("c");
    f.apply(|b| b.put(&leased("a", 0)).unwrap());
    assert!(f.store().keys_with_lease(1).is_empty());
    assert_eq!(f.store().keys_with_lease(2), vec![b"b".to_vec()]);
}

#[test]
fn foreign_or_newer_data_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_db(dir.path());
        db.put_cf(
            db.cf_handle(CF_META).unwrap(),
            b"data_version",
            99u64.to_be_bytes(),
        )
        .unwrap();
        assert!(matches!(
            MvccStore::open(db),
            Err(MvccError::UnsupportedDataVersion { found: 99, .. })
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    db.put_cf(db.cf_handle(CF_KV).unwrap(), b"junk", b"junk")
        .unwrap();
    assert!(matches!(MvccStore::open(db), Err(MvccError::Corrupt(_))));

    let dir = tempfile::tempdir().unwrap();
    let mut opts = Options::default();
    opts.create_if_missing(true);
    let db = Arc::new(DB::open(&opts, dir.path()).unwrap());
    assert!(matches!(
        MvccStore::open(db),
        Err(MvccError::MissingColumnFamily(_))
    ));
}
