//! Where things live in a PKI directory. Other tools and tests depend on these names.
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key  DIR/crl.pem
//! DIR/members/NAME.crt  DIR/members/NAME.key
//! DIR/clients/NAME.crt  DIR/clients/NAME.key
//! DIR/issued/SERIAL.crt        every certificate ever issued (public), for revoke-by-serial
//! ```

use std::path::{Path, PathBuf};

use super::names::Kind;

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.crt";
/// The CA private key's file name.
pub const CA_KEY: &str = "ca.key";
/// The CRL's file name.
pub const CRL: &str = "crl.pem";
/// The archive of issued certificates.
pub const ISSUED_DIR: &str = "issued";

/// Paths inside one PKI directory.
#[derive(Debug, Clone)]
pub struct PkiLayout {
    root: PathBuf,
}

impl PkiLayout {
    /// A layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> PkiLayout {
        PkiLayout { root: root.into() }
    }

    /// The PKI directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join(CA_CERT)
    }

    /// `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join(CA_KEY)
    }

    /// `crl.pem`.
    pub fn crl(&self) -> PathBuf {
        self.root.join(CRL)
    }

    /// `members/` or `clients/`.
    pub fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.dir_name().unwrap_or_default())
    }

    /// The certificate of a member or client.
    pub fn cert(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Ca => self.ca_cert(),
            _ => self.kind_dir(kind).join(format!("{name}.crt")),
        }
    }

    /// The private key of a member or client.
    pub fn key(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Ca => self.ca_key(),
            _ => self.kind_dir(kind).join(format!("{name}.key")),
        }
    }

    /// The archive directory.
    pub fn issued_dir(&self) -> PathBuf {
        self.root.join(ISSUED_DIR)
    }

    /// The archived copy of the certificate with this serial.
    pub fn issued(&self, serial: &str) -> PathBuf {
        self.issued_dir().join(format!("{serial}.crt"))
    }
}
