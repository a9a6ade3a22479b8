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

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use sha2::{Digest, Sha256};

use super::command;
use super::state_machine::{CF_SM_META, KEY_APPLIED, KEY_MEMBERSHIP};
use super::types::{LogId, StoredMembership, TypeConfig};
use crate::mvcc;

const MAGIC: &[u8; 16] = b"RAMPART-SNAPSHOT";
const VERSION: u32 = 1;
const EXTENSION: &str = "rsnap";

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
    let len = fs::metadata(path)?.len();
    if len < (MAGIC.len() + 4 + 4 + 1 + 32) as u64 {
        return Err(corrupt(format!(
            "{} is too short to be a snapshot",
            path.display()
        )));
    }
    let mut reader = BufReader::new(File::open(path)?).take(len - 32);
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut hasher)?;
    let mut tail = [0u8; 32];
    let mut file = reader.into_inner();
    file.read_exact(&mut tail)?;
    if hasher.finalize().as_slice() != tail {
        return Err(corrupt(format!("{}: checksum mismatch", path.display())));
    }
    Ok(())
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
    verify(&snapshot.path)?;
    let mut r = BufReader::new(File::open(&snapshot.path)?);
    let meta = read_header(&mut r)?;
    let cfs = state_cfs();
    let mut wb = WriteBatch::default();
    for name in &cfs {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| corrupt(format!("column family {name} missing")))?;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item.map_err(io::Error::other)?;
            wb.delete_cf(cf, key);
        }
    }
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        if tag[0] == 0 {
            break;
        }
        let name = cfs
            .get(usize::from(tag[0]) - 1)
            .ok_or_else(|| corrupt("unknown column family in snapshot"))?;
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| corrupt(format!("column family {name} missing")))?;
        let klen = read_u32(&mut r)? as usize;
        let key = read_exact_vec(&mut r, klen)?;
        let vlen = read_u32(&mut r)? as usize;
        let value = read_exact_vec(&mut r, vlen)?;
        wb.put_cf(cf, key, value);
    }
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(wb, &opts).map_err(io::Error::other)?;
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
