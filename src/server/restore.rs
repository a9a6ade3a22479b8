//! Restoring a snapshot file into the data directory of a member of a new cluster (etcd's
//! `snapshot restore`).
//!
//! Each member of the new cluster is restored from the same file with the same
//! `--initial-cluster` and `--initial-cluster-token`, then started with `rampart serve`. The
//! restored data directory holds the snapshot's state (keys, revisions, leases, auth), the IDs
//! `rampart serve --initial-cluster-state new` would derive from those flags, a membership of
//! exactly those members, and a raft log that starts after the snapshot at the same log id on
//! every member. A member started on it behaves as a restarted member: it keeps its stored IDs
//! and membership whatever its flags say, and the members elect a leader among themselves.
//!
//! The directory is built beside the target under a temporary name and renamed into place at
//! the end: a failed restore leaves nothing behind.

use std::path::{Path, PathBuf};

use super::config::{ConfigError, InitialCluster};
use super::{member, storage};
use crate::pki::validate_name;
use crate::raft::{self, SnapshotFileError, SnapshotSummary};

/// What `rampart snapshot restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// This member's name (`--name`).
    pub name: String,
    /// `--initial-cluster`: `NAME=https://HOST:PORT,...`, the members of the new cluster.
    /// `None`: this member alone, at its `--initial-advertise-peer-urls`.
    pub initial_cluster: Option<String>,
    /// `--initial-cluster-token` (`None`: etcd's default, as `rampart serve`).
    pub initial_cluster_token: Option<String>,
    /// `--initial-advertise-peer-urls` (`None`: the URLs `--initial-cluster` lists for `name`).
    pub initial_advertise_peer_urls: Option<String>,
    /// `--data-dir` (`None`: `NAME.rampart`, as `rampart serve`).
    pub data_dir: Option<PathBuf>,
}

/// A restored data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Where it is.
    pub data_dir: PathBuf,
    /// The new cluster's ID.
    pub cluster_id: u64,
    /// This member's ID.
    pub member_id: u64,
    /// What the snapshot holds.
    pub summary: SnapshotSummary,
}

/// Why a restore was refused or failed. Nothing is left in the data directory's place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The flags are invalid or inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot file is unreadable or corrupt, or its state could not be written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotFileError),
    /// The data directory is already in use.
    #[error(
        "data directory {} already exists and is not empty; restore into a new directory, or remove this one first",
        .0.display()
    )]
    DataDirInUse(PathBuf),
    /// A file system operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The new database could not be created or written.
    #[error("{what}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: rocksdb::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_owned();
    move |source| RestoreError::Io { what, path, source }
}

/// Checks the flags, then the whole snapshot file, then builds the data directory. Blocking.
pub fn restore(options: &RestoreOptions) -> Result<Restored, RestoreError> {
    let name = options.name.as_str();
    validate_name("member", name).map_err(|e| ConfigError::Invalid {
        key: "name",
        reason: e.to_string(),
    })?;
    let initial = resolve_cluster(options)?;
    let data_dir = options
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.rampart")));
    if !is_free(&data_dir)? {
        return Err(RestoreError::DataDirInUse(data_dir));
    }
    // The whole file is checked before anything is written.
    let summary = raft::summarize_snapshot(&options.snapshot)?;

    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_error("creating", &parent))?;
    let leaf = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ConfigError::Invalid {
            key: "data-dir",
            reason: format!("{} does not name a directory", data_dir.display()),
        })?;
    let building = parent.join(format!(".{leaf}.restoring-{}", std::process::id()));
    let guard = RemoveOnDrop(Some(building.clone()));
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(io_error("removing", &building))?;
    }
    build(&building, &options.snapshot, &initial)?;
    std::fs::rename(&building, &data_dir).map_err(io_error("moving into place", &data_dir))?;
    guard.disarm();
    sync_dir(&parent)?;
    Ok(Restored {
        data_dir,
        cluster_id: initial.cluster_id,
        member_id: initial.member_id,
        summary,
    })
}

/// The initial cluster from the flags, as `rampart serve` reads it; the advertised peer URLs
/// default to those `--initial-cluster` lists for this member.
fn resolve_cluster(options: &RestoreOptions) -> Result<InitialCluster, RestoreError> {
    let name = options.name.as_str();
    let advertise = match (
        &options.initial_advertise_peer_urls,
        &options.initial_cluster,
    ) {
        (Some(urls), _) => urls.clone(),
        (None, Some(text)) => {
            let members = super::config::parse_initial_cluster(text)?;
            let urls = members.get(name).ok_or_else(|| ConfigError::Invalid {
                key: "initial-cluster",
                reason: format!(
                    "does not name this member {name:?}; list it as {name}=https://HOST:PORT, or pass the --name of a member it lists ({})",
                    members.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            urls.join(",")
        }
        (None, None) => {
            return Err(ConfigError::Invalid {
                key: "initial-cluster",
                reason: "missing: list the members of the new cluster as NAME=https://HOST:PORT,... (the same on every member)".into(),
            }
            .into());
        }
    };
    Ok(InitialCluster::resolve(
        name,
        options.initial_cluster.as_deref(),
        &advertise,
        options.initial_cluster_token.as_deref(),
    )?)
}

/// Whether `dir` is absent or an empty directory (which the restored directory replaces).
fn is_free(dir: &Path) -> Result<bool, RestoreError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_error("inspecting", dir)(e)),
        Ok(meta) if !meta.is_dir() => Ok(false),
        Ok(_) => Ok(std::fs::read_dir(dir)
            .map_err(io_error("reading", dir))?
            .next()
            .is_none()),
    }
}

/// Builds the member's data directory at `dir`.
fn build(dir: &Path, snapshot: &Path, initial: &InitialCluster) -> Result<(), RestoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_error("creating", dir))?;
    // As `rampart serve` leaves it: only the member's user may enter.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error("securing", dir))?;
    let db_dir = dir.join(storage::DB_DIR);
    let db = storage::open(&db_dir).map_err(|source| RestoreError::Storage {
        what: "creating the database",
        source,
    })?;
    let members = member::initial_nodes(&initial.members, &initial.token);
    raft::restore_snapshot_into(&db, snapshot, members, &dir.join(raft::SNAPSHOT_DIR))?;
    storage::write_ids(&db, (initial.cluster_id, initial.member_id)).map_err(|source| {
        RestoreError::Storage {
            what: "writing the member identity",
            source,
        }
    })?;
    // The database keeps its write-ahead log in memory between explicit flushes (see
    // `storage::open`): make everything durable before the directory is moved into place.
    db.flush_wal(true).map_err(|source| RestoreError::Storage {
        what: "syncing the database",
        source,
    })?;
    drop(db);
    sync_dir(&db_dir)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_error("syncing", dir))
}

/// Removes a half-built directory unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const CLUSTER: &str = "m1=https://127.0.0.1:2381,m2=https://127.0.0.1:2382";

    fn options(dir: &Path, snapshot: PathBuf) -> RestoreOptions {
        RestoreOptions {
            snapshot,
            name: "m1".into(),
            initial_cluster: Some(CLUSTER.into()),
            initial_cluster_token: Some("restored".into()),
            initial_advertise_peer_urls: None,
            data_dir: Some(dir.join("m1.data")),
        }
    }

    /// A snapshot of an empty store.
    fn empty_snapshot(dir: &Path) -> PathBuf {
        let db = storage::open(&dir.join("source")).unwrap();
        crate::mvcc::MvccStore::open(db.clone()).unwrap();
        let path = dir.join("empty.snap");
        raft::snapshot_to(&db, &path).unwrap();
        path
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restoring"))
            .collect()
    }

    #[test]
    fn restored_member_has_the_ids_serve_derives_from_the_same_flags() {
        let dir = tempfile::tempdir().unwrap();
        let o = options(dir.path(), empty_snapshot(dir.path()));
        let restored = restore(&o).unwrap();
        let expected = InitialCluster::resolve(
            "m1",
            Some(CLUSTER),
            "https://127.0.0.1:2381",
            Some("restored"),
        )
        .unwrap();
        assert_eq!(
            (restored.cluster_id, restored.member_id),
            (expected.cluster_id, expected.member_id)
        );
        let data_dir = dir.path().join("m1.data");
        let mode = std::fs::metadata(&data_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let db = storage::open(&data_dir.join(storage::DB_DIR)).unwrap();
        assert_eq!(
            storage::read_ids(&db).unwrap(),
            Some((expected.cluster_id, expected.member_id))
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn refused_restores_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let good = empty_snapshot(dir.path());
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.snap");
        std::fs::write(&truncated, &bytes[..bytes.len() - 1]).unwrap();
        type Tweak = fn(&mut RestoreOptions, &Path);
        let rows: &[(&str, Tweak, &str)] = &[
            (
                "name not in the cluster",
                |o, _| o.name = "m9".into(),
                "does not name this member \"m9\"",
            ),
            (
                "advertised URLs differ",
                |o, _| o.initial_advertise_peer_urls = Some("https://127.0.0.1:9999".into()),
                "make them the same",
            ),
            (
                "no cluster at all",
                |o, _| o.initial_cluster = None,
                "initial-cluster: missing",
            ),
            (
                "plaintext peer URL",
                |o, _| o.initial_cluster = Some("m1=http://127.0.0.1:2381".into()),
                "use https://127.0.0.1:2381",
            ),
            (
                "empty token",
                |o, _| o.initial_cluster_token = Some(String::new()),
                "initial-cluster-token: must not be empty",
            ),
            ("invalid name", |o, _| o.name = "M1".into(), "M1"),
            (
                "truncated file",
                |o, dir| o.snapshot = dir.join("truncated.snap"),
                "is not an intact rampart snapshot",
            ),
            (
                "missing file",
                |o, dir| o.snapshot = dir.join("absent.snap"),
                "cannot read snapshot",
            ),
        ];
        for (case, tweak, expected) in rows {
            let mut o = options(dir.path(), good.clone());
            tweak(&mut o, dir.path());
            let err = restore(&o).expect_err(case).to_string();
            assert!(err.contains(expected), "{case}: {err}");
            assert!(!dir.path().join("m1.data").exists(), "{case}: no data dir");
            assert!(leftovers(dir.path()).is_empty(), "{case}: no temp dir");
        }

        let in_use = dir.path().join("m1.data");
        std::fs::create_dir(&in_use).unwrap();
        std::fs::write(in_use.join("keep"), b"x").unwrap();
        let err = restore(&options(dir.path(), good.clone())).unwrap_err();
        assert!(matches!(err, RestoreError::DataDirInUse(_)), "{err}");
        assert_eq!(std::fs::read(in_use.join("keep")).unwrap(), b"x");

        // An empty directory (made by an installer, say) is taken.
        std::fs::remove_file(in_use.join("keep")).unwrap();
        restore(&options(dir.path(), good)).unwrap();
        assert!(in_use.join(storage::DB_DIR).is_dir());
    }
}
