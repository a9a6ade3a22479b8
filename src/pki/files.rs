//! Durable, atomic file operations and the permission rules for key files.
//!
//! Every write goes to a temporary file in the same directory, is fsynced, renamed over the
//! target and the directory fsynced: a crash leaves either the old or the new file, never a
//! torn one. Files are created with their final mode, so a key is never briefly readable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PkiError;

/// Mode of private keys and of PKI directories' files that must stay private.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of certificates and CRLs: public material.
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of every PKI directory.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Writes `contents` to `path` atomically and durably, with `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = temp_sibling(path, "tmp");
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        PkiError::io("renaming into place", path, e)
    })?;
    sync_parent(path)
}

/// Creates `path` (which must not exist), writes and fsyncs it.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    #[cfg(test)]
    failpoint::check(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| PkiError::io("creating", path, e))?;
    // The umask may have narrowed the mode; public files must stay readable for other tools.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| PkiError::io("setting the mode of", path, e))?;
    file.write_all(contents)
        .map_err(|e| PkiError::io("writing", path, e))?;
    file.sync_all()
        .map_err(|e| PkiError::io("syncing", path, e))
}

/// Creates a directory with mode 0700 (the parent must exist).
pub fn create_private_dir(path: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .map_err(|e| PkiError::io("creating directory", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .map_err(|e| PkiError::io("setting the mode of", path, e))
}

/// Fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(path: &Path) -> Result<(), PkiError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| PkiError::io("syncing directory", path, e))
}

/// Fsyncs the directory holding `path`.
pub fn sync_parent(path: &Path) -> Result<(), PkiError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|e| PkiError::io("reading", path, e))
}

/// Reads a private key file after checking that only its owner can read it.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, PkiError> {
    check_private_mode(path)?;
    read(path)
}

/// Refuses a key file that group or others may read or write.
pub fn check_private_mode(path: &Path) -> Result<(), PkiError> {
    let meta = fs::metadata(path).map_err(|e| PkiError::io("reading", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PkiError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// A hidden name beside `path`, unique to this process and moment.
pub fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 6];
    rand::fill(&mut nonce);
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    path.with_file_name(format!(".{name}.{tag}-{}-{nonce}", std::process::id()))
}

/// A certificate and its key, replaced together.
///
/// Both files are first written as `.NAME.crt.next` / `.NAME.key.next` (key first), then
/// renamed key first, cert second. [`recover_pair`] completes an interrupted replacement, so
/// a reader never pairs a new certificate with an old key for long.
pub fn replace_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), PkiError> {
    let cert_next = next_path(cert_path);
    let key_next = next_path(key_path);
    for stale in [&cert_next, &key_next] {
        remove_if_exists(stale)?;
    }
    write_new(&key_next, key_pem, PRIVATE_FILE_MODE)?;
    write_new(&cert_next, cert_pem, PUBLIC_FILE_MODE)?;
    sync_parent(cert_path)?;
    finish_pair(cert_path, key_path)
}

/// Completes or discards a replacement that [`replace_pair`] did not finish.
pub fn recover_pair(cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
    let cert_next = next_path(cert_path);
    let key_next = next_path(key_path);
    match (cert_next.exists(), key_next.exists()) {
        // Both staged: the staging finished; roll forward.
        (true, _) => finish_pair(cert_path, key_path),
        // Only a key staged: staging was interrupted before the cert; discard it.
        (false, true) => {
            remove_if_exists(&key_next)?;
            sync_parent(key_path)
        }
        (false, false) => Ok(()),
    }
}

fn finish_pair(cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
    let cert_next = next_path(cert_path);
    let key_next = next_path(key_path);
    if key_next.exists() {
        fs::rename(&key_next, key_path)
            .map_err(|e| PkiError::io("renaming into place", key_path, e))?;
    }
    fs::rename(&cert_next, cert_path)
        .map_err(|e| PkiError::io("renaming into place", cert_path, e))?;
    sync_parent(cert_path)
}

fn next_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.next"))
}

fn remove_if_exists(path: &Path) -> Result<(), PkiError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PkiError::io("removing", path, e)),
    }
}

/// Test-only fault injection: make the Nth next file creation on this thread fail, to prove
/// that an operation interrupted half way leaves the previous state intact.
#[cfg(test)]
pub(crate) mod failpoint {
    use std::cell::Cell;
    use std::path::Path;

    use super::PkiError;

    thread_local! {
        static WRITES_LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// Lets `n` more file creations succeed, then fails the next one.
    pub(crate) fn fail_after(n: usize) {
        WRITES_LEFT.with(|w| w.set(Some(n)));
    }

    /// Disarms the failpoint.
    pub(crate) fn clear() {
        WRITES_LEFT.with(|w| w.set(None));
    }

    pub(super) fn check(path: &Path) -> Result<(), PkiError> {
        WRITES_LEFT.with(|w| match w.get() {
            Some(0) => {
                w.set(None);
                Err(PkiError::io(
                    "creating",
                    path,
                    std::io::Error::other("injected failure"),
                ))
            }
            Some(n) => {
                w.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_atomic(&path, b"one", PRIVATE_FILE_MODE).unwrap();
        write_atomic(&path, b"two", PRIVATE_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn loose_key_mode_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        write_new(&path, b"secret", 0o644).unwrap();
        let err = read_private_key(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn interrupted_pair_replacement_rolls_forward_or_back() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("a.crt");
        let key = dir.path().join("a.key");
        replace_pair(&cert, b"cert1", &key, b"key1").unwrap();

        // Crash after staging both, before any rename: roll forward.
        write_new(&next_path(&key), b"key2", PRIVATE_FILE_MODE).unwrap();
        write_new(&next_path(&cert), b"cert2", PUBLIC_FILE_MODE).unwrap();
        recover_pair(&cert, &key).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"cert2");
        assert_eq!(fs::read(&key).unwrap(), b"key2");

        // Crash after the key was renamed: the staged cert completes the pair.
        write_new(&next_path(&cert), b"cert3", PUBLIC_FILE_MODE).unwrap();
        fs::write(&key, b"key3").unwrap();
        recover_pair(&cert, &key).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"cert3");

        // Crash while staging (only the key staged): the old pair stays.
        write_new(&next_path(&key), b"key4", PRIVATE_FILE_MODE).unwrap();
        recover_pair(&cert, &key).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"cert3");
        assert_eq!(fs::read(&key).unwrap(), b"key3");
        assert!(!next_path(&key).exists());
    }
}
