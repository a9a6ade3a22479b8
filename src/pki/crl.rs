//! The certificate revocation list: built, read back and extended, never shrunk.

use std::path::Path;

use ::time::{Duration, OffsetDateTime};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber, SigningKey,
};
use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use x509_parser::prelude::*;

use super::PkiError;
use super::certinfo::hex;

/// One revoked certificate as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevokedEntry {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Revocation time, seconds since the Unix epoch.
    pub revoked_at: i64,
    /// RFC 5280 reason code, if one was given.
    pub reason: Option<u8>,
}

/// What a CRL file holds.
#[derive(Debug, Clone, Default)]
pub struct CrlState {
    /// Its CRL number (monotonic).
    pub number: u64,
    /// The revoked certificates.
    pub revoked: Vec<RevokedEntry>,
}

impl CrlState {
    /// Whether `serial` (normalised hex) is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.iter().any(|r| r.serial == serial)
    }
}

/// Revocation reasons `pki revoke --reason` accepts, by their RFC 5280 names.
pub const REASONS: &[(&str, RevocationReason)] = &[
    ("unspecified", RevocationReason::Unspecified),
    ("key-compromise", RevocationReason::KeyCompromise),
    ("ca-compromise", RevocationReason::CaCompromise),
    ("affiliation-changed", RevocationReason::AffiliationChanged),
    ("superseded", RevocationReason::Superseded),
    (
        "cessation-of-operation",
        RevocationReason::CessationOfOperation,
    ),
    ("privilege-withdrawn", RevocationReason::PrivilegeWithdrawn),
];

/// Parses a reason name; the error lists the accepted names.
pub fn parse_reason(text: &str) -> Result<RevocationReason, PkiError> {
    REASONS
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, r)| *r)
        .ok_or_else(|| {
            let names: Vec<&str> = REASONS.iter().map(|(n, _)| *n).collect();
            PkiError::Usage(format!(
                "unknown revocation reason {text:?}; use one of: {}",
                names.join(", ")
            ))
        })
}

/// Signs a CRL listing `state`, valid for `validity_days`.
pub fn sign(
    state: &CrlState,
    issuer: &Issuer<'_, impl SigningKey>,
    validity_days: u32,
) -> Result<String, PkiError> {
    let now = OffsetDateTime::now_utc();
    let revoked_certs = state
        .revoked
        .iter()
        .map(|entry| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex_to_bytes(&entry.serial)?),
                revocation_time: OffsetDateTime::from_unix_timestamp(entry.revoked_at)
                    .map_err(|e| PkiError::Profile(format!("revocation time: {e}")))?,
                reason_code: entry.reason.and_then(reason_from_code),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(i64::from(validity_days)),
        crl_number: SerialNumber::from_slice(&state.number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(issuer)
        .map_err(PkiError::generate("sign the CRL"))?
        .pem()
        .map_err(PkiError::generate("encode the CRL"))
}

/// The PEM blocks labelled `label` in `text`, each with its END line and a newline.
pub fn pem_blocks(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(stop) = rest[start..].find(&end) else {
            break;
        };
        let stop = start + stop + end.len();
        out.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

/// The CRLs of `crl.pem` after the first: those of the other CA trusted during a CA rotation,
/// kept as they are when the current CA rewrites its own.
pub fn other_cas_crls(path: &Path) -> Result<String, PkiError> {
    let bytes = super::files::read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(pem_blocks(&text, "X509 CRL").into_iter().skip(1).collect())
}

/// Reads a CRL file, checking that `ca_cert_der` signed it.
pub fn read(path: &Path, ca_cert_der: &[u8]) -> Result<CrlState, PkiError> {
    let bytes = super::files::read(path)?;
    let der = CertificateRevocationListDer::from_pem_slice(&bytes)
        .map_err(|e| PkiError::malformed(path, format!("no PEM CRL found ({e})")))?;
    parse(der.as_ref(), ca_cert_der, path)
}

fn parse(der: &[u8], ca_cert_der: &[u8], path: &Path) -> Result<CrlState, PkiError> {
    let (_, crl) = parse_x509_crl(der)
        .map_err(|e| PkiError::malformed(path, format!("not a valid CRL: {e}")))?;
    let (_, ca) = parse_x509_certificate(ca_cert_der)
        .map_err(|e| PkiError::malformed(path, format!("CA certificate unreadable: {e}")))?;
    crl.verify_signature(ca.public_key()).map_err(|_| {
        PkiError::malformed(
            path,
            "the CRL is not signed by this PKI's CA; restore crl.pem from this PKI (or a backup)",
        )
    })?;
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n.clone()).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedEntry {
            serial: super::certinfo::normalize_serial(&hex(r.raw_serial())).unwrap_or_default(),
            revoked_at: r.revocation_date.timestamp(),
            reason: r.reason_code().map(|(_, code)| code.0),
        })
        .collect();
    Ok(CrlState { number, revoked })
}

fn hex_to_bytes(hex: &str) -> Result<Vec<u8>, PkiError> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| PkiError::Usage(format!("{hex:?} is not a hexadecimal serial")))
        })
        .collect()
}

fn reason_from_code(code: u8) -> Option<RevocationReason> {
    Some(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// The name of a reason code, for display.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "key-compromise",
        2 => "ca-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        6 => "certificate-hold",
        8 => "remove-from-crl",
        9 => "privilege-withdrawn",
        10 => "aa-compromise",
        _ => "unknown",
    }
}
