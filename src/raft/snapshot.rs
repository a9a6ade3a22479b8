//! Snapshot files: a consistent copy of the state column families, with the raft metadata
//! they correspond to, checksummed.
//!
//! ```text
//! "RAMPART-SNAPSHOT" | version u32 | meta length u32 | meta (format byte + postcard)
//! records: cf u8 (1-based index into STATE_CFS) | key length u32 | key | value length u32 | value
//! 0u8 (end) | SHA-256 of everything before it
//! ```
//!
//! The metadata (last applied log id, membership) is read from the same RocksDB snapshot as
//! the data, so a snapshot is always exactly the state at its log id. Integers are big-endian.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use sha2::{Digest, Sha256};

use super::command;
use super::error::SnapshotFileError;
use super::log_store;
use super::state_machine::{CF_SM_META, KEY_APPLIED, KEY_MEMBERSHIP, KEY_NOSPACE};
use super::types::{LogId, Membership, Node, NodeId, StoredMembership, TypeConfig};
use crate::mvcc;

const MAGIC: &[u8; 16] = b"RAMPART-SNAPSHOT";
const VERSION: u32 = 1;
const EXTENSION: &str = "rsnap";

/// Directory, inside a member's data directory, of its current snapshot.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Column families a snapshot carries: the whole replicated state.
pub fn state_cfs() -> Vec<&'static str> {
    let mut cfs: Vec<&'static str> = mvcc::COLUMN_FAMILIES.to_vec();
    cfs.extend_from_slice(crate::lease::COLUMN_FAMILIES);
    cfs.push(CF_SM_META);
    cfs
}

/// A snapshot on disk. Cheap to move around; the data stays in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
}

type Meta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Hashes everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn file_name(last: &Option<LogId>) -> String {
    match last {
        Some(id) => format!(
            "snapshot-{:020}-{:020}.{EXTENSION}",
            id.leader_id.term, id.index
        ),
        None => format!("snapshot-empty.{EXTENSION}"),
    }
}

/// Writes a snapshot of the current state into `dir`; returns it with its metadata.
pub fn build(db: &DB, dir: &Path) -> io::Result<Snapshot> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".building-{}", std::process::id()));
    let meta = write_to(db, &tmp)?;
    let path = dir.join(file_name(&meta.last_log_id));
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(Snapshot {
        meta,
        snapshot: SnapshotFile { path },
    })
}

/// Writes a snapshot of the current state to `path` (fsynced); returns its metadata.
pub fn write_to(db: &DB, path: &Path) -> io::Result<Meta> {
    let view = db.snapshot();
    let meta_cf = db
        .cf_handle(CF_SM_META)
        .ok_or_else(|| corrupt("sm_meta column family missing"))?;
    let last_log_id: Option<LogId> = match view
        .get_cf(meta_cf, KEY_APPLIED)
        .map_err(io::Error::other)?
    {
        Some(b) => command::decode(&b).ok_or_else(|| corrupt("applied log id"))?,
        None => None,
    };
    let last_membership: StoredMembership = match view
        .get_cf(meta_cf, KEY_MEMBERSHIP)
        .map_err(io::Error::other)?
    {
        Some(b) => command::decode(&b).ok_or_else(|| corrupt("membership"))?,
        None => StoredMembership::default(),
    };
    let meta = Meta {
        last_log_id,
        last_membership,
    };

    let file = File::create(path)?;
    let mut out = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        written: 0,
    };
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_be_bytes())?;
    let meta_bytes = command::encode(&meta);
    out.write_all(&(meta_bytes.len() as u32).to_be_bytes())?;
    out.write_all(&meta_bytes)?;
    for (i, name) in state_cfs().iter().enumerate() {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| corrupt(format!("column family {name} missing")))?;
        for item in view.iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item.map_err(io::Error::other)?;
            out.write_all(&[(i + 1) as u8])?;
            out.write_all(&(key.len() as u32).to_be_bytes())?;
            out.write_all(&key)?;
            out.write_all(&(value.len() as u32).to_be_bytes())?;
            out.write_all(&value)?;
        }
    }
    out.write_all(&[0])?;
    let digest = out.hasher.finalize_reset();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error())?;
    file.write_all(&digest)?;
    file.sync_all()?;
    Ok(meta)
}

fn read_exact_vec(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Checks the trailing SHA-256 of a snapshot file.
pub fn verify(path: &Path) -> io::Result<()> {
    check_file(path).map_err(io::Error::from)
}

impl From<SnapshotFileError> for io::Error {
    fn from(e: SnapshotFileError) -> Self {
        match e {
            SnapshotFileError::Read { source, .. } | SnapshotFileError::Write(source) => source,
            corrupt @ SnapshotFileError::Corrupt { .. } => {
                io::Error::new(io::ErrorKind::InvalidData, corrupt.to_string())
            }
        }
    }
}

/// Checks the trailing SHA-256 of a snapshot file: a file saved from a member (where the
/// checksum covers the padding the stream adds too) or one from a member's snapshot directory.
fn check_file(path: &Path) -> Result<(), SnapshotFileError> {
    let read = |source| SnapshotFileError::Read {
        path: path.to_owned(),
        source,
    };
    let corrupt = |reason: &str| SnapshotFileError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let len = fs::metadata(path).map_err(read)?.len();
    if len < (MAGIC.len() + 4 + 4 + 1 + 32) as u64 {
        return Err(corrupt("it is too short to be a snapshot"));
    }
    let mut reader = BufReader::new(File::open(path).map_err(read)?).take(len - 32);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher).map_err(read)?;
    let mut tail = [0u8; 32];
    let mut file = reader.into_inner();
    file.read_exact(&mut tail).map_err(read)?;
    if hasher.finalize().as_slice() != tail {
        return Err(corrupt(
            "its SHA-256 checksum does not match (the file is truncated or altered)",
        ));
    }
    Ok(())
}

/// Hashes everything read through it.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks a snapshot file, then hands each record to `visit` as (tag, column family, key,
/// value), in file order; returns the metadata. Every record is read after the file's checksum
/// matched, and the content checksum after the end marker is checked as well.
fn walk(
    path: &Path,
    mut visit: impl FnMut(u8, &'static str, &[u8], &[u8]) -> Result<(), SnapshotFileError>,
) -> Result<Meta, SnapshotFileError> {
    check_file(path)?;
    let corrupt = |reason: String| SnapshotFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let fail = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt("it ends inside a record".into()),
        io::ErrorKind::InvalidData => corrupt(e.to_string()),
        _ => SnapshotFileError::Read {
            path: path.to_owned(),
            source: e,
        },
    };
    let file = File::open(path).map_err(fail)?;
    let mut r = HashingReader {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    let meta = read_header(&mut r).map_err(fail)?;
    let cfs = state_cfs();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(fail)?;
        if tag[0] == 0 {
            break;
        }
        let name = *cfs
            .get(usize::from(tag[0]) - 1)
            .ok_or_else(|| corrupt(format!("it names an unknown column family {}", tag[0])))?;
        let klen = read_u32(&mut r).map_err(fail)? as usize;
        let key = read_exact_vec(&mut r, klen).map_err(fail)?;
        let vlen = read_u32(&mut r).map_err(fail)? as usize;
        let value = read_exact_vec(&mut r, vlen).map_err(fail)?;
        visit(tag[0], name, &key, &value)?;
    }
    let digest = r.hasher.finalize_reset();
    let mut inner = [0u8; 32];
    r.inner.read_exact(&mut inner).map_err(fail)?;
    if digest.as_slice() != inner {
        return Err(corrupt("its content checksum does not match".into()));
    }
    Ok(meta)
}

/// What `snapshot status` reports about a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// CRC-32 (IEEE) of the records the snapshot carries — every column family record (tag,
    /// key, value) as stored in the file, in file order. Like etcd's 32-bit hash it covers
    /// the content only, not the header, padding or checksums.
    pub hash: u32,
    /// The MVCC current revision of the state in the snapshot.
    pub revision: i64,
    /// Keys that exist at that revision (not history records, not deleted keys).
    pub total_keys: u64,
    /// Size of the file in bytes.
    pub total_size: u64,
}

/// Checks a snapshot file and reports what it holds.
pub fn summarize(path: &Path) -> Result<SnapshotSummary, SnapshotFileError> {
    let total_size = fs::metadata(path)
        .map_err(|source| SnapshotFileError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    let mut crc = crc32fast::Hasher::new();
    let mut tally = mvcc::KeyTally::new();
    walk(path, |tag, name, key, value| {
        crc.update(&[tag]);
        crc.update(&(key.len() as u32).to_be_bytes());
        crc.update(key);
        crc.update(&(value.len() as u32).to_be_bytes());
        crc.update(value);
        tally
            .add(name, key, value)
            .map_err(|e| SnapshotFileError::Corrupt {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    })?;
    Ok(SnapshotSummary {
        hash: crc.finalize(),
        revision: tally.current_revision(),
        total_keys: tally.live_keys(),
        total_size,
    })
}

fn read_header(r: &mut impl Read) -> io::Result<Meta> {
    let magic = read_exact_vec(r, MAGIC.len())?;
    if magic != MAGIC {
        return Err(corrupt("not a rampart snapshot"));
    }
    let version = read_u32(r)?;
    if version != VERSION {
        return Err(corrupt(format!(
            "snapshot version {version} is not supported (this build reads {VERSION})"
        )));
    }
    let len = read_u32(r)? as usize;
    let meta_bytes = read_exact_vec(r, len)?;
    command::decode(&meta_bytes).ok_or_else(|| corrupt("snapshot metadata"))
}

/// Replaces the state column families with the snapshot's content in one synced write.
/// The file is verified first; nothing changes if it is corrupt.
pub fn install(db: &DB, snapshot: &SnapshotFile) -> io::Result<Meta> {
    install_checked(db, &snapshot.path).map_err(io::Error::from)
}

fn install_checked(db: &DB, path: &Path) -> Result<Meta, SnapshotFileError> {
    let storage = |what: String| SnapshotFileError::Write(io::Error::other(what));
    let handle = |name: &str| {
        db.cf_handle(name)
            .ok_or_else(|| storage(format!("column family {name} missing")))
    };
    // Deletes first, then the snapshot's records, in one write that happens only after the
    // whole file has been read and checked.
    let mut wb = WriteBatch::default();
    for name in state_cfs() {
        let cf = handle(name)?;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item.map_err(|e| SnapshotFileError::Write(io::Error::other(e)))?;
            wb.delete_cf(cf, key);
        }
    }
    let meta = walk(path, |_, name, key, value| {
        wb.put_cf(handle(name)?, key, value);
        Ok(())
    })?;
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(wb, &opts)
        .map_err(|e| SnapshotFileError::Write(io::Error::other(e)))?;
    Ok(meta)
}

/// Takes a snapshot file received from a peer at `received` into `dir`: verifies its checksum,
/// reads its metadata and renames it to its canonical name. A corrupt file is removed.
pub fn adopt(dir: &Path, received: &Path) -> io::Result<Snapshot> {
    let checked =
        verify(received).and_then(|()| read_header(&mut BufReader::new(File::open(received)?)));
    let meta = match checked {
        Ok(meta) => meta,
        Err(e) => {
            let _ = fs::remove_file(received);
            return Err(e);
        }
    };
    let path = dir.join(file_name(&meta.last_log_id));
    fs::rename(received, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(Snapshot {
        meta,
        snapshot: SnapshotFile { path },
    })
}

/// The newest snapshot in `dir`, if any.
pub fn current(dir: &Path) -> io::Result<Option<Snapshot>> {
    let mut newest: Option<(PathBuf, Meta)> = None;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != EXTENSION) {
            continue;
        }
        let meta = read_header(&mut BufReader::new(File::open(&path)?))?;
        let newer = match &newest {
            None => true,
            Some((_, m)) => meta.last_log_id > m.last_log_id,
        };
        if newer {
            newest = Some((path, meta));
        }
    }
    Ok(newest.map(|(path, meta)| Snapshot {
        meta,
        snapshot: SnapshotFile { path },
    }))
}

/// Removes every snapshot in `dir` but `keep`.
pub fn keep_only(dir: &Path, keep: &SnapshotFile) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path != keep.path && path.extension().is_some_and(|x| x == EXTENSION) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The log id at which a restored member's state stands: the same on every member restored
/// from one file, so that their logs agree and they elect a leader among themselves; the new
/// cluster's own entries follow it (its first leader, of term 1 or later, appends index 2).
pub(crate) fn restored_log_id() -> LogId {
    LogId::new_term_index(1, 1)
}

/// Seeds a new, empty database `db` as a member of a new cluster of `members` whose state is
/// the snapshot at `path`: the state column families from the file; the applied log id set to
/// (term 1, index 1) and the membership to `members` (not the one recorded in the file);
/// NOSPACE alarms dropped (they name the old cluster's members); the raft log purged and
/// committed up to that log id with no vote; and that state written as the member's current
/// snapshot in `snapshot_dir`, for members that join later. openraft then starts this member
/// as an initialized member at that log id, as after a restart.
///
/// The file is checked completely before anything is written.
pub fn restore_into(
    db: &DB,
    path: &Path,
    members: BTreeMap<NodeId, Node>,
    snapshot_dir: &Path,
) -> Result<(), SnapshotFileError> {
    let write = SnapshotFileError::Write;
    install_checked(db, path)?;
    let at = restored_log_id();
    let membership = StoredMembership::new(Some(at), Membership::from(members));
    let cf = db
        .cf_handle(CF_SM_META)
        .ok_or_else(|| write(io::Error::other("sm_meta column family missing")))?;
    let mut wb = WriteBatch::default();
    wb.put_cf(cf, KEY_APPLIED, command::encode(&Some(at)));
    wb.put_cf(cf, KEY_MEMBERSHIP, command::encode(&membership));
    wb.delete_cf(cf, KEY_NOSPACE);
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(wb, &opts)
        .map_err(|e| write(io::Error::other(e)))?;
    log_store::seed_purged(db, at).map_err(|e| write(io::Error::other(e)))?;
    build(db, snapshot_dir).map_err(write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    use rocksdb::Options;

    use super::*;
    use crate::mvcc::{DeleteRangeRequest, MvccStore, PutRequest, RangeRequest};
    use crate::raft::log_store::LogStore;
    use crate::raft::state_machine::{SharedStore, StateMachine};

    fn open_db(dir: &Path) -> Arc<DB> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let mut names: Vec<&str> = super::super::COLUMN_FAMILIES.to_vec();
        names.extend(state_cfs());
        Arc::new(DB::open_cf(&options, dir, names).expect("open test RocksDB"))
    }

    /// A snapshot of a store where a=3 (created at 2, modified at 4), b was put at 3 and
    /// deleted at 5.
    fn source_snapshot(dir: &Path) -> PathBuf {
        let db = open_db(&dir.join("source"));
        let store = MvccStore::open(db.clone()).unwrap();
        let apply = |f: &dyn Fn(&mut mvcc::ApplyBatch<'_>)| {
            let mut batch = store.begin_apply().unwrap();
            f(&mut batch);
            batch
                .finish()
                .unwrap()
                .commit(&WriteOptions::default())
                .unwrap();
        };
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            apply(&|b| {
                b.put(&PutRequest::new(k, v)).unwrap();
            });
        }
        apply(&|b| {
            b.delete_range(&DeleteRangeRequest::key("b")).unwrap();
        });
        let path = dir.join("saved.rsnap");
        write_to(&db, &path).unwrap();
        path
    }

    fn members() -> BTreeMap<NodeId, Node> {
        (1..=3u64)
            .map(|i| {
                let node = Node {
                    name: format!("m{i}"),
                    peer_urls: vec![format!("https://127.0.0.1:{}", 2380 + i)],
                    client_urls: Vec::new(),
                };
                (i, node)
            })
            .collect()
    }

    #[test]
    fn summary_reports_the_revision_and_the_live_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = source_snapshot(dir.path());
        let s = summarize(&path).unwrap();
        assert_eq!(s.revision, 5);
        assert_eq!(s.total_keys, 1);
        assert_eq!(s.total_size, fs::metadata(&path).unwrap().len());
        assert_eq!(summarize(&path).unwrap().hash, s.hash, "deterministic");
    }

    #[test]
    fn truncated_or_altered_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = source_snapshot(dir.path());
        let bytes = fs::read(&path).unwrap();
        let cut = dir.path().join("cut");
        fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let flipped = dir.path().join("flipped");
        let mut altered = bytes.clone();
        altered[40] ^= 0x01;
        fs::write(&flipped, &altered).unwrap();
        let tiny = dir.path().join("tiny");
        fs::write(&tiny, b"RAMPART").unwrap();
        for bad in [&cut, &flipped, &tiny] {
            let err = summarize(bad).unwrap_err();
            assert!(
                matches!(err, SnapshotFileError::Corrupt { .. }),
                "{}: {err}",
                bad.display()
            );
            let db = open_db(
                &dir.path()
                    .join(format!("into-{}", bad.display().to_string().len())),
            );
            assert!(restore_into(&db, bad, members(), &dir.path().join("snaps")).is_err());
            let cf = db.cf_handle(CF_SM_META).unwrap();
            assert!(
                db.iterator_cf(cf, IteratorMode::Start).next().is_none(),
                "nothing written"
            );
        }
        let missing = summarize(&dir.path().join("absent")).unwrap_err();
        assert!(
            matches!(missing, SnapshotFileError::Read { .. }),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn a_restored_database_starts_as_an_initialized_member_at_the_restored_log_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = source_snapshot(dir.path());
        let db = open_db(&dir.path().join("restored"));
        let snaps = dir.path().join("snapshots");
        restore_into(&db, &path, members(), &snaps).unwrap();

        let at = restored_log_id();
        let mut log = LogStore::open(db.clone()).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(at));
        assert_eq!(state.last_log_id, Some(at));
        assert_eq!(log.read_committed().await.unwrap(), Some(at));

        let store = SharedStore::new(MvccStore::open(db.clone()).unwrap());
        let lessor = crate::lease::Lessor::open(&db).unwrap();
        let mut sm = StateMachine::open(db.clone(), store.clone(), lessor, snaps.clone()).unwrap();
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(at));
        assert_eq!(membership.log_id(), &Some(at));
        let voters: Vec<NodeId> = membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![1, 2, 3]);
        let current = sm
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(at));
        assert_eq!(current.meta.last_membership, membership);

        let mvcc = store.get();
        assert_eq!(mvcc.current_revision(), 5);
        let a = mvcc.range(&RangeRequest::key("a")).unwrap().kvs;
        assert_eq!(a.len(), 1);
        assert_eq!(
            (
                a[0].value.as_slice(),
                a[0].create_revision,
                a[0].mod_revision,
                a[0].version
            ),
            (&b"3"[..], 2, 4, 2)
        );
        assert!(mvcc.range(&RangeRequest::key("b")).unwrap().kvs.is_empty());
        log.close().await;
    }
}
