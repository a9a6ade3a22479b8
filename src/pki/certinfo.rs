//! Reading certificates: the facts `pki list` and `pki inspect` show, parsed once.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::*;

use super::PkiError;
use super::names::{Identity, Kind, San, parse_trust_domain};

/// What a certificate says about itself (no verification: see [`super::verify`]).
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    /// Subject common name.
    pub common_name: String,
    /// Full subject, RFC 4514 style.
    pub subject: String,
    /// Full issuer, RFC 4514 style.
    pub issuer: String,
    /// CA, member or client; derived from the identity URI (or CA basic constraints).
    pub kind: Option<Kind>,
    /// The identity URI SAN, if the certificate carries a valid one.
    pub identity: Option<String>,
    /// The cluster (trust domain) named by the identity.
    pub cluster: Option<String>,
    /// DNS and IP SANs.
    pub sans: Vec<San>,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Whether the certificate may act as a CA.
    pub is_ca: bool,
    /// Extended key usages by name.
    pub extended_key_usage: Vec<String>,
    /// Key algorithm, e.g. "ECDSA P-256".
    pub key_algorithm: String,
    /// SHA-256 of the DER encoding, lowercase hex with colons.
    pub sha256_fingerprint: String,
    /// The DER encoding.
    #[serde(skip)]
    pub der: CertificateDer<'static>,
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: CertificateDer<'static>, origin: &Path) -> Result<CertInfo, PkiError> {
        let (_, cert) = parse_x509_certificate(der.as_ref()).map_err(|e| {
            PkiError::malformed(origin, format!("not a valid X.509 certificate: {e}"))
        })?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();

        let mut sans = Vec::new();
        let mut identity = None;
        let mut trust_domain = None;
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => sans.push(San::Dns((*dns).to_owned())),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            sans.push(San::Ip(ip));
                        }
                    }
                    GeneralName::URI(uri) => {
                        if let Some(id) = Identity::parse(uri) {
                            identity.get_or_insert(id);
                        } else if let Some(domain) = parse_trust_domain(uri) {
                            trust_domain.get_or_insert(domain.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }

        let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let mut eku = Vec::new();
        if let Ok(Some(ext)) = cert.extended_key_usage() {
            if ext.value.server_auth {
                eku.push("serverAuth".to_owned());
            }
            if ext.value.client_auth {
                eku.push("clientAuth".to_owned());
            }
            if ext.value.any {
                eku.push("any".to_owned());
            }
        }
        let (kind, identity_uri, cluster) = match (&identity, is_ca) {
            (_, true) => (
                Some(Kind::Ca),
                trust_domain.as_ref().map(|d| format!("spiffe://{d}")),
                trust_domain.clone(),
            ),
            (Some(id), false) => (Some(id.kind), Some(id.uri()), Some(id.cluster.clone())),
            (None, false) => (None, None, None),
        };

        Ok(CertInfo {
            common_name,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            kind,
            identity: identity_uri,
            cluster,
            sans,
            serial: hex(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca,
            extended_key_usage: eku,
            key_algorithm: key_algorithm(cert.public_key()),
            sha256_fingerprint: fingerprint(der.as_ref()),
            der,
        })
    }

    /// Reads the first certificate of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<CertInfo, PkiError> {
        let bytes = super::files::read(path)?;
        let der = parse_cert_pem(&bytes, path)?;
        CertInfo::from_der(der, path)
    }

    /// The identity this certificate carries, parsed.
    pub fn parsed_identity(&self) -> Option<Identity> {
        match self.kind {
            Some(Kind::Ca) | None => None,
            Some(_) => self.identity.as_deref().and_then(Identity::parse),
        }
    }

    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(86_400)
    }
}

/// Parses the first `CERTIFICATE` block of a PEM document.
pub fn parse_cert_pem(pem: &[u8], origin: &Path) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem)
        .map_err(|e| PkiError::malformed(origin, format!("no PEM certificate found ({e})")))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises a serial as users type it: case-insensitive, ':' separators and leading zero
/// bytes ignored.
pub fn normalize_serial(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let trimmed = cleaned.trim_start_matches('0');
    let digits = if trimmed.len() % 2 == 1 {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    };
    Some(digits)
}

fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(point)) => match point.key_size() {
            256 => "ECDSA P-256".to_owned(),
            384 => "ECDSA P-384".to_owned(),
            bits => format!("ECDSA ({bits} bits)"),
        },
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
            "Ed25519".to_owned()
        }
        _ => spki.algorithm.algorithm.to_id_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalise_as_people_type_them() {
        assert_eq!(normalize_serial("0A:1b:ff").as_deref(), Some("0a1bff"));
        assert_eq!(normalize_serial("00a1").as_deref(), Some("a1"));
        assert_eq!(normalize_serial("abc").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }
}
