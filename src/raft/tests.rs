//! Tests of the raft log store: openraft's conformance suite, then our own guarantees
//! (durability across reopening, group commit, truncate/purge), on a real RocksDB on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use openraft::StorageError;
use openraft::entry::RaftEntry;
use openraft::impls::leader_id_std::LeaderId as StdLeaderId;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use rocksdb::{DB, Options};
use tempfile::TempDir;

use super::schema::{CF_RAFT_META, COLUMN_FAMILIES, KEY_DATA_VERSION};
use super::suite_state_machine::SuiteStateMachine;
use super::*;

fn open_db(dir: &Path) -> Arc<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    Arc::new(DB::open_cf(&options, dir, COLUMN_FAMILIES).expect("open test RocksDB"))
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(StdLeaderId::<u64, NodeId>::new_committed(term, 1), index)
}

fn command_entry(term: u64, index: u64) -> Entry {
    Entry::new_normal(
        log_id(term, index),
        Command(Bytes::from(format!("command {index}"))),
    )
}

/// Append and wait until the entries are reported durable.
async fn append_flushed(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append accepted");
    rx.await.expect("flush reported").expect("flush succeeded");
}

async fn read_all(store: &mut LogStore) -> Vec<Entry> {
    store
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .expect("read log")
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.index()).collect()
}

/// Builds a fresh store on a new temp directory for every test of openraft's suite.
struct RocksLogStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, SuiteStateMachine, TempDir> for RocksLogStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, SuiteStateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LogStore::open(open_db(dir.path()))
            .await
            .expect("open log store");
        Ok((dir, store, SuiteStateMachine::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::<TypeConfig, LogStore, SuiteStateMachine, RocksLogStoreBuilder, TempDir>::test_all(
        RocksLogStoreBuilder,
    )
    .await
    .expect("openraft storage suite");
}

#[tokio::test]
async fn log_vote_committed_and_purge_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(3, 7);
    {
        let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
        let node = Node {
            name: "m7".into(),
            peer_urls: vec!["https://127.0.0.1:2380".into()],
            client_urls: vec!["https://127.0.0.1:2379".into()],
        };
        let membership =
            Membership::new(vec![[7u64].into()], BTreeMap::from([(7u64, node)])).unwrap();
        let mut entries = vec![Entry::new_membership(log_id(1, 1), membership)];
        entries.extend((2..=6).map(|i| command_entry(2, i)));
        append_flushed(&mut store, entries).await;
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(log_id(2, 4))).await.unwrap();
        store.purge(log_id(1, 1)).await.unwrap();
        store.truncate_after(Some(log_id(2, 5))).await.unwrap();
        store.close().await;
    }

    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(2, 5)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2, 4)));
    let mut reader = store.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
    let entries = reader.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(
        entries,
        (2..=5).map(|i| command_entry(2, i)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn truncate_then_append_replaces_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    append_flushed(&mut store, (1..=10).map(|i| command_entry(1, i)).collect()).await;

    store.truncate_after(Some(log_id(1, 6))).await.unwrap();
    assert_eq!(
        indexes(&read_all(&mut store).await),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 6))
    );

    // A new leader's entries take the truncated indexes.
    append_flushed(&mut store, (7..=8).map(|i| command_entry(2, i)).collect()).await;
    let entries = read_all(&mut store).await;
    assert_eq!(indexes(&entries), (1..=8).collect::<Vec<_>>());
    assert_eq!(entries[6].log_id, log_id(2, 7));
    assert_eq!(
        store.get_log_state().await.unwrap().last_log_id,
        Some(log_id(2, 8))
    );

    // Truncating past the end changes nothing.
    store.truncate_after(Some(log_id(2, 20))).await.unwrap();
    assert_eq!(read_all(&mut store).await.len(), 8);

    store.close().await;
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let entries = read_all(&mut store).await;
    assert_eq!(indexes(&entries), (1..=8).collect::<Vec<_>>());
    assert_eq!(entries[7].log_id, log_id(2, 8));
}

#[tokio::test]
async fn purge_removes_the_head_and_may_pass_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    append_flushed(&mut store, (1..=10).map(|i| command_entry(1, i)).collect()).await;

    store.purge(log_id(1, 4)).await.unwrap();
    let mut reader = store.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(0..).await.unwrap()),
        (5..=10).collect::<Vec<_>>()
    );
    assert_eq!(reader.try_get_log_entries(2..4).await.unwrap(), vec![]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));

    // A snapshot installed past the log's end purges everything: the log continues after it.
    store.purge(log_id(3, 15)).await.unwrap();
    assert_eq!(read_all(&mut store).await, vec![]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 15)));
    assert_eq!(state.last_log_id, Some(log_id(3, 15)));
    append_flushed(&mut store, vec![command_entry(3, 16)]).await;

    store.close().await;
    drop(reader);
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 15)));
    assert_eq!(state.last_log_id, Some(log_id(3, 16)));
    assert_eq!(indexes(&read_all(&mut store).await), vec![16]);
}

/// Issue `total` single-entry appends from `tasks` concurrent tasks, each waiting for its own
/// flush; return the store (all appends acknowledged) and the elapsed seconds.
async fn concurrent_appends(store: LogStore, total: u64, tasks: u64) -> (LogStore, f64) {
    let store = Arc::new(tokio::sync::Mutex::new((store, 0u64)));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let (tx, rx) = TypeConfig::oneshot();
                {
                    // The lock only orders the indexes: the append returns before the fsync.
                    let mut guard = store.lock().await;
                    let (store, last) = &mut *guard;
                    if *last == total {
                        return;
                    }
                    *last += 1;
                    let entry = command_entry(1, *last);
                    store
                        .append([entry], IOFlushed::signal(tx))
                        .await
                        .expect("append accepted");
                }
                rx.await.expect("flush reported").expect("flush succeeded");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("append task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (store, _) = Arc::try_unwrap(store)
        .ok()
        .expect("tasks done")
        .into_inner();
    (store, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_are_all_durable() {
    const TOTAL: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(open_db(dir.path())).await.unwrap();
    let (store, _) = concurrent_appends(store, TOTAL, 64).await;

    let stats = store.writer_stats();
    assert_eq!(stats.appends, TOTAL, "{stats:?}");
    assert!(
        stats.sync_writes < TOTAL / 2,
        "group commit should share fsyncs: {stats:?}"
    );
    store.close().await;

    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let entries = read_all(&mut store).await;
    assert_eq!(
        entries,
        (1..=TOTAL).map(|i| command_entry(1, i)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn limited_reads_stop_near_the_byte_limit_but_return_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let big = |i| Entry::new_normal(log_id(1, i), Command(Bytes::from(vec![7u8; 1 << 20])));
    append_flushed(&mut store, (1..=6).map(big).collect()).await;
    let mut reader = store.get_log_reader().await;

    let some = reader.limited_get_log_entries(1, 7).await.unwrap();
    assert!((1..6).contains(&some.len()), "{} entries", some.len());
    assert_eq!(some[0].index(), 1);
    assert_eq!(reader.limited_get_log_entries(6, 7).await.unwrap().len(), 1);
    assert_eq!(reader.try_get_log_entries(1..7).await.unwrap().len(), 6);
}

#[tokio::test]
async fn unknown_data_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    LogStore::open(open_db(dir.path()))
        .await
        .unwrap()
        .close()
        .await;
    {
        let db = open_db(dir.path());
        let meta = db.cf_handle(CF_RAFT_META).unwrap();
        db.put_cf(meta, KEY_DATA_VERSION, 2u32.to_be_bytes())
            .unwrap();
    }
    let err = LogStore::open(open_db(dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            LogStoreError::UnsupportedDataVersion {
                found: 2,
                expected: 1
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn missing_column_family_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.create_if_missing(true);
    let db = Arc::new(DB::open(&options, dir.path()).unwrap());
    let err = LogStore::open(db).await.err().expect("refused");
    assert!(err.to_string().contains("raft_log"), "{err}");
}

/// Figures for the report, not a pass/fail test: `cargo test --lib group_commit_throughput --
/// --ignored --nocapture`. Set RAMPART_BENCH_DIR to measure on another disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run by hand"]
async fn group_commit_throughput() {
    const TOTAL: u64 = 10_000;
    const TASKS: u64 = 64;
    let dir = match std::env::var_os("RAMPART_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = LogStore::open(open_db(dir.path())).await.unwrap();
    let (store, secs) = concurrent_appends(store, TOTAL, TASKS).await;
    let stats = store.writer_stats();
    println!(
        "{TOTAL} single-entry appends from {TASKS} tasks in {secs:.3}s: {:.0} appends/s, {} fsyncs ({:.1} appends per fsync), {} batches",
        TOTAL as f64 / secs,
        stats.sync_writes,
        TOTAL as f64 / stats.sync_writes as f64,
        stats.batches,
    );

    // The same appends one at a time, each waiting for its fsync: the cost group commit saves.
    let dir = tempfile::tempdir_in(dir.path()).unwrap();
    let mut store = LogStore::open(open_db(dir.path())).await.unwrap();
    let started = Instant::now();
    for i in 1..=1_000 {
        append_flushed(&mut store, vec![command_entry(1, i)]).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "1000 sequential appends, one fsync each: {:.0} appends/s",
        1_000.0 / secs
    );
}
