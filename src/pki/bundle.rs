//! PKCS#12 bundles of a certificate, its key and the CA, for browsers and other tools.

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::PkiError;
use super::certinfo::CertInfo;

/// Builds a password-protected PKCS#12 file (AES-256, PBKDF2-SHA256, HMAC-SHA256).
pub fn pkcs12(
    leaf: &CertInfo,
    key_pem: &[u8],
    ca_der: &[u8],
    alias: &str,
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| PkiError::Bundle(format!("the private key is not PEM ({e})")))?;
    let PrivateKeyDer::Pkcs8(pkcs8) = key else {
        return Err(PkiError::Bundle("the private key is not PKCS#8".into()));
    };
    let key = PrivateKey::from_der(pkcs8.secret_pkcs8_der())
        .map_err(|e| PkiError::Bundle(format!("the private key: {e}")))?;
    let leaf_cert = Certificate::from_der(leaf.der.as_ref())
        .map_err(|e| PkiError::Bundle(format!("the certificate: {e}")))?;
    let ca_cert =
        Certificate::from_der(ca_der).map_err(|e| PkiError::Bundle(format!("the CA: {e}")))?;
    let local_key_id =
        ring::digest::digest(&ring::digest::SHA256, leaf.der.as_ref()).as_ref()[..20].to_vec();
    let chain = PrivateKeyChain::new(local_key_id, key, [leaf_cert, ca_cert]);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password)
        .encryption_iterations(200_000)
        .mac_iterations(200_000)
        .write()
        .map_err(|e| PkiError::Bundle(e.to_string()))
}
