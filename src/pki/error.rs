//! The one error type of the certificate authority.

use std::path::PathBuf;

/// Everything that can go wrong while creating, reading or changing a PKI directory.
///
/// Messages say what happened and what to do about it; they never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A name (member, client, cluster) breaks the naming rules.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// What kind of name it is ("member", "client", "cluster").
        what: &'static str,
        /// The offending name.
        name: String,
        /// Why it is refused and what is allowed.
        reason: String,
    },
    /// A subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {san:?}: {reason}")]
    InvalidSan {
        /// The offending SAN.
        san: String,
        /// Why it is refused.
        reason: String,
    },
    /// The command-line arguments contradict each other.
    #[error("{0}")]
    Usage(String),
    /// `pki init` found a PKI (or other files) where it was asked to create one.
    #[error(
        "{dir} already holds a PKI (or other files); refusing to touch it. Use another --dir, \
         or pass --force to move the existing directory aside and create a new CA"
    )]
    AlreadyExists {
        /// The directory that is in use.
        dir: PathBuf,
    },
    /// A command that needs an existing PKI found none.
    #[error("no PKI in {dir}: {path} is missing; create one with `rampart pki init --dir {dir}`")]
    NotInitialized {
        /// The PKI directory.
        dir: PathBuf,
        /// The file that is missing.
        path: PathBuf,
    },
    /// A certificate for this name already exists.
    #[error(
        "a {kind} certificate named {name:?} already exists ({path}); use `rampart pki renew {name}` to replace it"
    )]
    EntityExists {
        /// "member" or "client".
        kind: &'static str,
        /// The name.
        name: String,
        /// Its certificate file.
        path: PathBuf,
    },
    /// No issued certificate matches the given name or serial.
    #[error(
        "no certificate named or numbered {0:?} in this PKI; `rampart pki list` shows what exists"
    )]
    UnknownEntity(String),
    /// A name matches both a member and a client.
    #[error("{0:?} is both a member and a client; say which with member/{0} or client/{0}")]
    Ambiguous(String),
    /// A private key file is readable by group or others.
    #[error("key file {path} is readable by others (mode {mode:04o}); run chmod 600 on it")]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file could not be read, written, synced or renamed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not contain what it should (bad PEM, bad DER, wrong key, ...).
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificate or CRL generation failed.
    #[error("could not {action}: {source}")]
    Generate {
        /// What was being generated.
        action: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The compiled-in profiles are unusable (a bug, caught by tests).
    #[error("certificate profile: {0}")]
    Profile(String),
    /// PKCS#12 encoding failed.
    #[error("could not build the PKCS#12 bundle: {0}")]
    Bundle(String),
}

impl PkiError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        PkiError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        PkiError::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn generate(action: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| PkiError::Generate { action, source }
    }
}
