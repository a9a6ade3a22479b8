//! Loading a certificate, its key, the CA bundle and the CRL from PEM files, checked once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::caller::{PeerIdentity, identity};
use super::config::crypto_provider;
use super::error::{IdentityError, TlsError};
use crate::pki::{self, Kind, PkiLayout};

/// The PEM files one side of a TLS connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Our certificate (leaf first; intermediates may follow).
    pub cert: PathBuf,
    /// Our private key; must not be readable by group or others.
    pub key: PathBuf,
    /// The CA certificate(s) we trust (several during a CA rotation).
    pub ca: PathBuf,
    /// The CRL of that CA. Required to serve (see [`super::server_config`]); optional to dial.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of member or client `name` in a rampart PKI directory, CRL included.
    pub fn from_pki(layout: &PkiLayout, kind: Kind, name: &str) -> TlsFiles {
        TlsFiles {
            cert: layout.cert(kind, name),
            key: layout.key(kind, name),
            ca: layout.ca_cert(),
            crl: Some(layout.crl()),
        }
    }
}

/// Parsed, checked TLS material: a certificate chain with the key that belongs to it, the
/// trusted roots, the CRLs (each signed by one of the roots) and who our certificate names.
///
/// Holding a `Material` means every check in [`Material::load`] passed. It never prints its
/// key (`Debug` shows the files and identity only).
#[derive(Clone)]
pub struct Material {
    files: TlsFiles,
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    identity: Result<PeerIdentity, IdentityError>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("files", &self.files)
            .field("identity", &self.identity)
            .field("roots", &self.roots.len())
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads and checks the files: the key's mode (no group/other bits: the message says to
    /// `chmod 600`), that the key belongs to the certificate, that the CA file holds usable
    /// roots and that every CRL is signed by one of them.
    pub fn load(files: &TlsFiles) -> Result<Material, TlsError> {
        let chain = read_certs(&files.cert, "pass the member or client .crt file")?;

        pki::files::check_private_mode(&files.key)?;
        let key_pem = pki::files::read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::NoPem {
                path: files.key.clone(),
                what: "private key",
                hint: "pass the .key file written beside the certificate",
            },
            // The parser's details could quote the file; say only what was expected.
            _ => TlsError::Malformed {
                path: files.key.clone(),
                reason: "not a PEM private key (PKCS#8, SEC1 or PKCS#1)".into(),
            },
        })?;
        let signing_key = crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Malformed {
                path: files.key.clone(),
                reason: format!("unusable private key: {e}"),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(TlsError::KeyMismatch {
                    cert: files.cert.clone(),
                    key: files.key.clone(),
                });
            }
            Err(e) => {
                return Err(TlsError::Malformed {
                    path: files.cert.clone(),
                    reason: format!("cannot check the key against this certificate: {e}"),
                });
            }
        }

        let cas = read_certs(&files.ca, "pass the cluster's ca.crt")?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots.add(ca.clone()).map_err(|e| TlsError::Malformed {
                path: files.ca.clone(),
                reason: format!("not usable as a CA certificate: {e}"),
            })?;
        }

        let crls = match &files.crl {
            Some(path) => read_crls(path, &cas)?,
            None => Vec::new(),
        };

        let identity = identity(certified.end_entity_cert().map_err(TlsError::Config)?);
        Ok(Material {
            files: files.clone(),
            certified: Arc::new(certified),
            roots: Arc::new(roots),
            crls,
            identity,
        })
    }

    /// The files this material was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Our certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The certificate chain with its signing key, as rustls resolves it.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// The trusted CA certificates (never empty).
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The CRLs, each signed by one of the roots; empty when no CRL file was given.
    pub fn crls(&self) -> &[CertificateRevocationListDer<'static>] {
        &self.crls
    }

    /// Who our certificate names, if anyone (see [`super::identity`]).
    pub fn identity(&self) -> Option<&PeerIdentity> {
        self.identity.as_ref().ok()
    }

    /// Our member name, if our certificate is a member certificate of `cluster`; else an
    /// error that names the certificate and what it is instead.
    pub fn member_name(&self, cluster: &str) -> Result<&str, TlsError> {
        match &self.identity {
            Ok(PeerIdentity::Rampart(id)) if id.cluster == cluster && id.kind == Kind::Member => {
                Ok(&id.name)
            }
            other => Err(TlsError::NotMember {
                cert: self.files.cert.clone(),
                cluster: cluster.to_owned(),
                identity: match other {
                    Ok(id) => id.to_string(),
                    Err(reason) => format!("unusable: {reason}"),
                },
            }),
        }
    }
}

fn read_certs(path: &Path, hint: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = pki::files::read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            path: path.to_owned(),
            reason: format!("unreadable PEM certificate ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what: "certificate",
            hint,
        });
    }
    Ok(certs)
}

fn read_crls(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = pki::files::read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            path: path.to_owned(),
            reason: format!("unreadable PEM CRL ({e})"),
        })?;
    if crls.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what: "CRL",
            hint: "pass the PKI's crl.pem",
        });
    }
    for crl in &crls {
        check_crl_signed_by_a_ca(crl, cas, path)?;
    }
    Ok(crls)
}

/// A CRL no root signed would make every handshake fail (revocation status unknown), so refuse
/// it at load time with a message rather than at the first client.
fn check_crl_signed_by_a_ca(
    crl: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'static>],
    path: &Path,
) -> Result<(), TlsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let malformed = |reason: String| TlsError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
        .map_err(|e| malformed(format!("not a valid CRL: {e}")))?;
    let signed = cas.iter().any(|ca| {
        X509Certificate::from_der(ca.as_ref())
            .is_ok_and(|(_, ca)| parsed.verify_signature(ca.public_key()).is_ok())
    });
    if !signed {
        return Err(malformed(
            "the CRL is not signed by the CA we trust; pass the crl.pem of the same PKI as the CA"
                .into(),
        ));
    }
    Ok(())
}
