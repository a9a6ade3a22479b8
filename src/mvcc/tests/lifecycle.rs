//! Compaction, reopen, batched apply and publishing, concurrency, hashes, leases.

use super::*;

#[test]
fn compaction_removes_history_and_keeps_latest_values() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.put("b", "1"); // 4
    f.delete("b"); // 5
    f.put("c", "1"); // 6
    f.put("a", "3"); // 7
    assert_eq!(f.kv_records(), 6);
    let uncompacted = f.store().hash_kv(7).unwrap();

    assert_eq!(f.apply(|b| b.compact(6).unwrap()), 7);
    assert_eq!(f.store().compacted_revision(), 6);
    assert!(matches!(
        f.get_at("a", 5),
        Err(MvccError::Compacted {
            requested: 5,
            compacted: 6
        })
    ));
    // a@2 and b's whole life (put 4, tombstone 5) go; a@3, c@6, a@7 stay. The records are
    // deleted by the following batches, or by remove_compacted.
    assert_eq!(f.store().pending_compaction_deletes(), 3);
    assert_eq!(f.kv_records(), 6);
    let before = f.store().hash_kv(7).unwrap();
    assert_ne!(before.hash, uncompacted.hash);
    assert_eq!(before.compact_revision, 6);
    let sync = WriteOptions::default();
    assert_eq!(f.store().remove_compacted(&sync).unwrap(), 0);
    assert_eq!(f.kv_records(), 3);
    assert_eq!(f.get_at("a", 6).unwrap().unwrap().value, b"2");
    assert_eq!(f.get_at("b", 6).unwrap(), None);
    let a = f.get("a").unwrap();
    assert_eq!(
        (a.value.as_slice(), a.version, a.create_revision),
        (&b"3"[..], 3, 2)
    );
    // The hash of what survived is the same whatever was removed below it.
    assert_eq!(f.store().hash_kv(7).unwrap().hash, before.hash);
    assert!(matches!(
        f.store().hash_kv(6),
        Err(MvccError::Compacted { .. })
    ));

    let err = f.apply(|b| b.compact(6)).unwrap_err();
    assert!(matches!(err, MvccError::Compacted { .. }), "{err}");
    let err = f.apply(|b| b.compact(8)).unwrap_err();
    assert!(matches!(err, MvccError::FutureRevision { .. }), "{err}");

    // Compacting at the current revision after deleting everything removes everything.
    f.delete("c"); // 8
    f.apply(|b| b.delete_range(&DeleteRangeRequest::key("a")).unwrap()); // 9
    f.apply(|b| b.compact(9).unwrap());
    assert_eq!(f.store().remove_compacted(&sync).unwrap(), 0);
    assert_eq!(f.kv_records(), 0);
    assert_eq!(f.store().range(&RangeRequest::prefix("")).unwrap().count, 0);
    assert_eq!(f.put("a", "new").revision, 10);
    assert_eq!(f.get("a").unwrap().create_revision, 10);
}

#[test]
fn compacted_revision_survives_reopen_and_chunked_removal_resumes() {
    let mut f = Fixture::with_options(MvccOptions {
        compaction_batch_limit: 2,
    });
    for i in 0..5 {
        f.put("k", &i.to_string()); // 2..=6
    }
    f.delete("gone"); // nothing
    f.put("gone", "x"); // 7
    f.delete("gone"); // 8
    let hash = f.store().hash().unwrap();
    assert_eq!(f.kv_records(), 7);

    // Compaction at 8 removes k@2..5, gone@7, gone@8: six records, two per later batch.
    f.apply(|b| b.compact(8).unwrap());
    assert_eq!(f.store().pending_compaction_deletes(), 6);
    assert_eq!(f.kv_records(), 7);
    f.apply(|_| ());
    assert_eq!(f.store().pending_compaction_deletes(), 4);
    assert_eq!(f.kv_records(), 5);
    // Readers and hashes do not care how far the removal got.
    assert!(f.get_at("k", 7).is_err());
    assert_eq!(f.get("k").unwrap().value, b"4");
    let compacted_hash = f.store().hash().unwrap();
    assert_ne!(compacted_hash, hash);

    // A restart mid-way keeps the compaction and resumes the removal.
    f.reopen();
    assert_eq!(f.store().compacted_revision(), 8);
    assert_eq!(f.store().pending_compaction_deletes(), 4);
    assert_eq!(f.store().hash().unwrap(), compacted_hash);
    assert!(f.get_at("k", 7).is_err());
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
    assert_eq!(finished, 8i64.to_be_bytes());

    f.reopen();
    assert_eq!(f.store().compacted_revision(), 8);
    assert_eq!(f.store().pending_compaction_deletes(), 0);
    assert_eq!(f.get("k").unwrap().version, 5);
    assert_eq!(f.get("gone"), None);
}

#[test]
fn reopen_rebuilds_the_index_and_revisions_continue() {
    let mut f = Fixture::new();
    f.put("a", "1"); // 2
    f.put("a", "2"); // 3
    f.apply(|b| {
        b.put(&PutRequest {
            lease: 42,
            ..PutRequest::new("l", "x")
        })
        .unwrap()
    }); // 4
    f.delete("a"); // 5
    f.put("a", "3"); // 6
    let hash = f.store().hash().unwrap();
    f.reopen();
    assert_eq!(f.store().current_revision(), 6);
    assert_eq!(f.store().hash().unwrap(), hash);
    assert_eq!(f.get_at("a", 3).unwrap().unwrap().version, 2);
    assert_eq!(f.get_at("a", 5).unwrap(), None);
    assert_eq!(f.store().keys_with_lease(42), vec![b"l".to_vec()]);
    assert_eq!(f.put("a", "4").revision, 7);
    let a = f.get("a").unwrap();
    assert_eq!((a.create_revision, a.version), (6, 2));
}

#[test]
fn later_requests_in_a_batch_see_earlier_ones_and_readers_see_nothing_until_publish() {
    let f = Fixture::new();
    f.put("a", "0"); // 2
    let store = f.store();
    let mut batch = store.begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "1")).unwrap(); // 3
    let r = batch
        .txn(&TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(2))],
            success: vec![put_op("b", "saw-a-1")],
            failure: vec![],
        })
        .unwrap(); // 4
    assert!(r.succeeded);
    let d = batch
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..DeleteRangeRequest::prefix("")
        })
        .unwrap(); // 5
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs[1].value, b"saw-a-1");
    batch.put(&PutRequest::new("b", "again")).unwrap(); // 6
    assert_eq!(batch.revision(), 6);
    assert_eq!(
        batch
            .range(&RangeRequest {
                revision: 4,
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
    let limited = batch
        .range(&RangeRequest {
            limit: 1,
            revision: 4,
            ..RangeRequest::prefix("")
        })
        .unwrap();
    assert_eq!(
        (keys(&limited), limited.more, limited.count),
        (vec!["a".to_string()], true, 2)
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
    assert_eq!(reader(store), (2, vec!["a".to_string()]));
    let mut pending = batch.finish().unwrap();
    assert_eq!(pending.revision(), 6);
    pending.write_batch().put(b"applied", b"log id 7");
    assert_eq!(reader(store), (2, vec!["a".to_string()]));
    assert!(matches!(
        store.range(&RangeRequest {
            revision: 3,
            ..RangeRequest::key("a")
        }),
        Err(MvccError::FutureRevision { .. })
    ));
    let (wb, token) = pending.into_parts();
    store.db.write(wb).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(reader(store), (2, vec!["a".to_string()])))
            .join()
            .unwrap();
    });
    assert_eq!(token.publish(), 6);
    assert_eq!(reader(store), (6, vec!["b".to_string()]));
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
        // A new store is at revision 1; the 200 txns take revisions 2..=201.
        let mut last = 1;
        while !writer.is_finished() || last < 201 {
            let r = store.range(&RangeRequest::prefix("")).unwrap();
            assert!(r.revision >= last);
            last = r.revision;
            if r.revision > 1 {
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
    for rev in [0, 6, s1.current_revision()] {
        assert_eq!(s1.hash_kv(rev).unwrap(), s2.hash_kv(rev).unwrap());
    }
    assert_eq!(s1.hash().unwrap(), s2.hash().unwrap());
    one.put("k9", "x");
    two.put("k9", "y");
    assert_ne!(s1.hash_kv(0).unwrap().hash, s2.hash_kv(0).unwrap().hash);
    assert_ne!(s1.hash_kv(6).unwrap().hash, s1.hash_kv(0).unwrap().hash);
}

#[test]
fn a_synced_batch_survives_reopen() {
    let mut f = Fixture::new();
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("durable", "yes")).unwrap();
    batch.write_batch().put(b"applied_log_id", b"1-1");
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    assert_eq!(batch.finish().unwrap().commit(&sync).unwrap(), 2);
    f.reopen();
    assert_eq!(f.store().current_revision(), 2);
    assert_eq!(f.get("durable").unwrap().value, b"yes");
    assert_eq!(
        f.store().db.get(b"applied_log_id").unwrap().unwrap(),
        b"1-1"
    );
}

#[test]
fn a_dropped_unpublished_batch_is_detected() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    // Finished but never written: harmless, the next batch proceeds.
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "2")).unwrap();
    drop(batch.finish().unwrap());
    assert_eq!(f.put("b", "1").revision, 3);
    // Written but never published: the store is behind and says so.
    let mut batch = f.store().begin_apply().unwrap();
    batch.put(&PutRequest::new("a", "3")).unwrap();
    let (wb, token) = batch.finish().unwrap().into_parts();
    f.store().db.write(wb).unwrap();
    drop(token);
    assert!(matches!(
        f.store().begin_apply(),
        Err(MvccError::Unpublished {
            durable: 4,
            published: 3,
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

#[test]
fn the_store_is_shared_across_threads_and_a_batch_can_move_to_one() {
    fn shared<T: Send + Sync>() {}
    fn movable<T: Send>() {}
    shared::<MvccStore>();
    movable::<ApplyBatch<'static>>();
    movable::<PendingApply<'static>>();
    movable::<PublishToken<'static>>();
}

/// Rough numbers for the batch size and the read path; run with
/// `cargo test --release --lib mvcc::tests::lifecycle::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "timing report, not a check"]
fn throughput() {
    use std::time::Instant;
    let mut f = Fixture::new();
    let (keys, per_batch) = (100_000, 1_000);
    let value = vec![b'v'; 256];
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let t = Instant::now();
    for chunk in 0..keys / per_batch {
        let mut batch = f.store().begin_apply().unwrap();
        for i in 0..per_batch {
            let key = format!("key/{:08}", chunk * per_batch + i);
            batch.put(&PutRequest::new(key, value.clone())).unwrap();
        }
        batch.finish().unwrap().commit(&sync).unwrap();
    }
    let put = t.elapsed();
    let t = Instant::now();
    for i in (0..keys).step_by(7) {
        let r = f
            .store()
            .range(&RangeRequest::key(format!("key/{i:08}")))
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    }
    let gets = keys / 7;
    let get = t.elapsed();
    let t = Instant::now();
    let r = f
        .store()
        .range(&RangeRequest {
            limit: 100,
            ..RangeRequest::prefix("key/")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count), (100, keys as i64));
    let range = t.elapsed();
    let t = Instant::now();
    f.reopen();
    let reopen = t.elapsed();
    println!(
        "{keys} puts of 256 B in synced batches of {per_batch}: {put:?} ({:.0}/s); \
         {gets} point reads: {get:?} ({:.0}/s); prefix range limit 100 over {keys} keys: \
         {range:?}; reopen (index rebuild): {reopen:?}",
        keys as f64 / put.as_secs_f64(),
        gets as f64 / get.as_secs_f64(),
    );
}

#[test]
fn a_compaction_inside_a_batch_applies_to_the_requests_after_it() {
    let f = Fixture::new();
    f.put("a", "1"); // 2
    f.apply(|b| {
        b.put(&PutRequest::new("a", "2")).unwrap(); // 3
        assert_eq!(b.compact(3).unwrap(), 3);
        assert_eq!(b.compacted_revision(), 3);
        let old = RangeRequest {
            revision: 2,
            ..RangeRequest::key("a")
        };
        assert!(matches!(b.range(&old), Err(MvccError::Compacted { .. })));
        assert_eq!(b.range(&RangeRequest::key("a")).unwrap().kvs[0].value, b"2");
        // Readers still see revision 2 until the batch is published.
        assert_eq!(f.get("a").unwrap().value, b"1");
        b.put(&PutRequest::new("a", "3")).unwrap(); // 4
    });
    assert_eq!(f.store().compacted_revision(), 3);
    assert_eq!(f.get_at("a", 3).unwrap().unwrap().value, b"2");
    assert!(f.get_at("a", 2).is_err());
    assert_eq!(f.store().pending_compaction_deletes(), 1);
    assert_eq!(
        f.store()
            .remove_compacted(&WriteOptions::default())
            .unwrap(),
        0
    );
    assert_eq!(f.kv_records(), 2);
    assert_eq!(f.get("a").unwrap().version, 3);
}

#[test]
fn puts_with_an_unknown_lease_are_refused_when_the_batch_checks_leases() {
    let f = Fixture::new();
    let leased = |k: &str, lease| PutRequest {
        lease,
        ..PutRequest::new(k, "v")
    };
    f.apply(|b| {
        b.set_lease_check(|lease| lease == 1);
        b.put(&leased("a", 1)).unwrap();
        b.put(&leased("b", 0)).unwrap();
        assert!(matches!(
            b.put(&leased("c", 2)),
            Err(MvccError::LeaseNotFound(2))
        ));
        // In a txn the check covers only the branch taken, before anything changes.
        let t = TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Lease(1))],
            success: vec![put_op("d", "1"), Op::Put(leased("e", 2))],
            failure: vec![Op::Put(leased("e", 2))],
        };
        assert!(matches!(b.txn(&t), Err(MvccError::LeaseNotFound(2))));
        let t = TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Lease(7))],
            success: vec![Op::Put(leased("e", 2))],
            failure: vec![Op::Put(leased("e", 1))],
        };
        assert!(!b.txn(&t).unwrap().succeeded);
    });
    // a (2), b (3) and the second txn (4); the refused requests took no revision.
    assert_eq!(f.store().current_revision(), 4);
    assert_eq!(f.get("d"), None);
    assert_eq!(
        f.store().keys_with_lease(1),
        vec![b"a".to_vec(), b"e".to_vec()]
    );
}
