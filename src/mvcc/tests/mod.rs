//! Tests of the store as a whole, on a real RocksDB in a temporary directory.

mod kv;
mod lifecycle;
mod txn;

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
