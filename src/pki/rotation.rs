//! Replacing the CA with no downtime, in three steps that each leave a working cluster:
//!
//! 1. [`start`]: a new CA is created beside the current one. `ca.crt` becomes a bundle,
//!    current CA first (it still issues), new CA second; `crl.pem` holds one CRL per CA in the
//!    same order; the new key waits in `ca-next.key`. Distribute `ca.crt` and `crl.pem` to
//!    every member and client: everyone now trusts both CAs.
//! 2. [`reissue`]: the new CA becomes the issuing one (`ca.crt` = new, old; `ca.key` = new) and
//!    every member and client certificate is reissued from it with a new key. The old CA's key
//!    is destroyed. Distribute the new certificates and keys; members reload them.
//! 3. [`finish`]: once every certificate comes from the new CA, the old CA leaves `ca.crt` and
//!    `crl.pem` (it is kept in `retired/`). Distribute both: the old CA is trusted nowhere.
//!
//! Members re-read the files on change or SIGHUP, so the certificates of live connections
//! never stop being trusted while a step is under way.

use std::path::Path;

use rcgen::KeyPair;

use super::PkiError;
use super::authority::{Authority, new_ca};
use super::certinfo::{CertInfo, parse_cert_pem};
use super::crl::{self, pem_blocks};
use super::files::{self, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};
use super::layout::PkiLayout;

/// The staged key of the next CA, between [`start`] and [`reissue`].
pub const NEXT_CA_KEY: &str = "ca-next.key";
/// Where the old CA certificate goes after [`finish`].
pub const RETIRED_DIR: &str = "retired";

/// Where a PKI stands in a CA rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One CA: no rotation under way.
    Idle,
    /// Both CAs trusted, the old one still issues ([`start`] done).
    Started,
    /// Both CAs trusted, the new one issues ([`reissue`] done).
    Reissued,
}

fn ca_blocks(layout: &PkiLayout) -> Result<Vec<String>, PkiError> {
    let text = String::from_utf8_lossy(&files::read(&layout.ca_cert())?).into_owned();
    Ok(pem_blocks(&text, "CERTIFICATE"))
}

fn crl_blocks(layout: &PkiLayout) -> Result<Vec<String>, PkiError> {
    let text = String::from_utf8_lossy(&files::read(&layout.crl())?).into_owned();
    Ok(pem_blocks(&text, "X509 CRL"))
}

/// Whether the PEM CRL `pem` is signed by the CA `ca`.
fn crl_signed_by(pem: &str, ca: &rustls_pki_types::CertificateDer<'_>) -> bool {
    use rustls_pki_types::pem::PemObject;
    let Ok(der) = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
    else {
        return false;
    };
    let (Ok((_, crl)), Ok((_, ca))) = (
        x509_parser::parse_x509_crl(der.as_ref()),
        x509_parser::parse_x509_certificate(ca.as_ref()),
    ) else {
        return false;
    };
    crl.verify_signature(ca.public_key()).is_ok()
}

/// The rotation phase of the PKI in `dir`.
pub fn phase(dir: &Path) -> Result<Phase, PkiError> {
    let layout = PkiLayout::new(dir);
    let cas = ca_blocks(&layout)?.len();
    let staged = dir.join(NEXT_CA_KEY).exists();
    match (cas, staged) {
        // A key staged by a `start` that stopped before publishing the bundle: nothing uses it
        // yet, and `start` replaces it.
        (1, _) => Ok(Phase::Idle),
        (2, true) => Ok(Phase::Started),
        (2, false) => Ok(Phase::Reissued),
        _ => Err(PkiError::malformed(
            layout.ca_cert(),
            format!(
                "{cas} CA certificates{}: not a state a CA rotation leaves; restore ca.crt, ca.key and crl.pem from your backup",
                if staged {
                    " and a staged ca-next.key"
                } else {
                    ""
                }
            ),
        )),
    }
}

fn refuse(expected: &str, found: Phase) -> PkiError {
    let hint = match found {
        Phase::Idle => "no rotation is under way; run `rampart pki rotate-ca start`",
        Phase::Started => "the new CA is staged; run `rampart pki rotate-ca reissue` next",
        Phase::Reissued => "certificates were reissued; run `rampart pki rotate-ca finish` next",
    };
    PkiError::Usage(format!("cannot {expected}: {hint}"))
}

/// Step 1: creates the next CA and makes both CAs trusted. Returns the new CA certificate.
pub fn start(dir: &Path, ca_validity_days: Option<u32>) -> Result<CertInfo, PkiError> {
    let found = phase(dir)?;
    if found != Phase::Idle {
        return Err(refuse("start a rotation", found));
    }
    let authority = Authority::open(dir)?;
    let layout = authority.layout().clone();
    // A subject of its own: certificates and CRLs are matched to their CA by issuer name, and
    // two CAs with one name would be confused while both are trusted.
    let generation = time::OffsetDateTime::now_utc().unix_timestamp();
    let ca = new_ca(authority.cluster(), ca_validity_days, Some(generation))?;
    let key = ca.issuer.key().serialize_pem();

    // The key first (nothing refers to it yet), then the bundle, then the CRLs: every moment
    // in between is a valid state for a member that reloads, and `reissue` completes a start
    // that stopped before writing the CRLs.
    files::write_atomic(&dir.join(NEXT_CA_KEY), key.as_bytes(), PRIVATE_FILE_MODE)?;
    let mut bundle: String = ca_blocks(&layout)?.concat();
    bundle.push_str(&ca.cert_pem);
    files::write_atomic(&layout.ca_cert(), bundle.as_bytes(), PUBLIC_FILE_MODE)?;
    let mut crls: String = crl_blocks(&layout)?.concat();
    crls.push_str(&ca.crl_pem);
    files::write_atomic(&layout.crl(), crls.as_bytes(), PUBLIC_FILE_MODE)?;
    CertInfo::from_der(ca.cert_der, &layout.ca_cert())
}

/// Step 2: the new CA issues from now on, and every member and client certificate is
/// reissued from it (new keys, same identities and SANs). Returns the new certificates.
pub fn reissue(dir: &Path) -> Result<Vec<CertInfo>, PkiError> {
    let found = phase(dir)?;
    let layout = PkiLayout::new(dir);
    if found == Phase::Started {
        let next_key_path = dir.join(NEXT_CA_KEY);
        let next_key_pem = files::read_private_key(&next_key_path)?;
        let next_key = KeyPair::from_pem(&String::from_utf8_lossy(&next_key_pem))
            .map_err(|e| PkiError::malformed(&next_key_path, format!("unusable key ({e})")))?;
        // Which CA the staged key belongs to: the second one, or the first when an earlier
        // `reissue` stopped after reordering ca.crt (so the step can be repeated).
        let cas = ca_blocks(&layout)?;
        let ders = cas
            .iter()
            .map(|pem| parse_cert_pem(pem.as_bytes(), &layout.ca_cert()))
            .collect::<Result<Vec<_>, _>>()?;
        let owns = |der: &rustls_pki_types::CertificateDer<'_>| {
            x509_parser::parse_x509_certificate(der.as_ref()).is_ok_and(|(_, c)| {
                c.public_key().subject_public_key.data.as_ref() == next_key.public_key_raw()
            })
        };
        let Some(new) = ders.iter().position(owns) else {
            return Err(PkiError::malformed(
                &next_key_path,
                "belongs to neither CA of ca.crt; restore ca.crt, ca.key and ca-next.key from your backup",
            ));
        };
        let old = 1 - new;
        // One CRL per CA, in the CAs' order; the new CA's is signed now if a `start` stopped
        // before writing it.
        let crls = crl_blocks(&layout)?;
        let crl_of = |ca: usize| crls.iter().find(|c| crl_signed_by(c, &ders[ca])).cloned();
        let new_crl = match crl_of(new) {
            Some(c) => c,
            None => {
                let issuer = rcgen::Issuer::from_ca_cert_der(&ders[new], next_key)
                    .map_err(PkiError::generate("load the new CA as issuer"))?;
                crl::sign(
                    &crl::CrlState {
                        number: 1,
                        revoked: vec![],
                    },
                    &issuer,
                    super::profiles()?.crl.validity_days,
                )?
            }
        };
        let old_crl = crl_of(old).ok_or_else(|| {
            PkiError::malformed(
                layout.crl(),
                "holds no CRL of the current CA; restore crl.pem from your backup",
            )
        })?;
        // New CA first in both files, then its key becomes ca.key; the old key is destroyed.
        files::write_atomic(
            &layout.ca_cert(),
            format!("{}{}", cas[new], cas[old]).as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        files::write_atomic(
            &layout.crl(),
            format!("{new_crl}{old_crl}").as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        files::write_atomic(&layout.ca_key(), &next_key_pem, PRIVATE_FILE_MODE)?;
        std::fs::remove_file(&next_key_path)
            .map_err(|e| PkiError::io("removing", &next_key_path, e))?;
        files::sync_parent(&next_key_path)?;
    } else if found != Phase::Reissued {
        return Err(refuse("reissue", found));
    }
    // Reissue whatever the new CA did not issue yet (so an interrupted run can be repeated).
    let authority = Authority::open(dir)?;
    let issuer = authority.ca_subject()?;
    let mut out = Vec::new();
    for cert in super::current_certificates(&layout)? {
        if cert.issuer == issuer {
            continue;
        }
        let id = cert.parsed_identity().ok_or_else(|| {
            PkiError::Usage(format!(
                "{} carries no rampart identity; remove it or issue a new one",
                cert.common_name
            ))
        })?;
        out.push(authority.renew(&format!("{}/{}", id.kind.as_str(), id.name), None)?);
    }
    Ok(out)
}

/// Step 3: the old CA is trusted no more. Refused while a current certificate still comes
/// from it.
pub fn finish(dir: &Path) -> Result<CertInfo, PkiError> {
    let found = phase(dir)?;
    if found != Phase::Reissued {
        return Err(refuse("finish", found));
    }
    let layout = PkiLayout::new(dir);
    let authority = Authority::open(dir)?;
    let issuer = authority.ca_subject()?;
    let left: Vec<String> = super::current_certificates(&layout)?
        .into_iter()
        .filter(|c| c.issuer != issuer)
        .map(|c| c.common_name)
        .collect();
    if !left.is_empty() {
        return Err(PkiError::Usage(format!(
            "still issued by the old CA: {}; run `rampart pki rotate-ca reissue` again",
            left.join(", ")
        )));
    }
    let cas = ca_blocks(&layout)?;
    let crls = crl_blocks(&layout)?;
    let old = CertInfo::from_der(
        parse_cert_pem(cas[1].as_bytes(), &layout.ca_cert())?,
        &layout.ca_cert(),
    )?;
    let retired = dir.join(RETIRED_DIR);
    if !retired.exists() {
        files::create_private_dir(&retired)?;
    }
    files::write_atomic(
        &retired.join(format!("ca-{}.crt", old.serial)),
        cas[1].as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    // The CRL first: a bundle without the old CA but with its CRL would be refused.
    files::write_atomic(&layout.crl(), crls[0].as_bytes(), PUBLIC_FILE_MODE)?;
    files::write_atomic(&layout.ca_cert(), cas[0].as_bytes(), PUBLIC_FILE_MODE)?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Kind;
    use crate::tls::{Material, TlsFiles};

    fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
        crate::pki::authority::tests::fresh_dir()
    }

    /// What a member of `dir` would load for `name`: must succeed at every step.
    fn member_material(dir: &Path, name: &str) -> Material {
        Material::load(&TlsFiles::from_pki(
            &PkiLayout::new(dir),
            Kind::Member,
            name,
        ))
        .unwrap()
    }

    fn count(path: std::path::PathBuf, label: &str) -> usize {
        pem_blocks(&std::fs::read_to_string(path).unwrap(), label).len()
    }

    #[test]
    fn the_three_steps_move_every_certificate_to_the_new_ca_and_each_state_loads() {
        let (_tmp, dir) = fresh();
        let layout = PkiLayout::new(&dir);
        let old_subject = Authority::open(&dir).unwrap().ca_subject().unwrap();
        assert_eq!(phase(&dir).unwrap(), Phase::Idle);
        assert!(matches!(reissue(&dir), Err(PkiError::Usage(_))));
        assert!(matches!(finish(&dir), Err(PkiError::Usage(_))));

        let new_ca = start(&dir, None).unwrap();
        assert_eq!(phase(&dir).unwrap(), Phase::Started);
        assert_eq!(count(layout.ca_cert(), "CERTIFICATE"), 2);
        assert_eq!(count(layout.crl(), "X509 CRL"), 2);
        assert_ne!(
            new_ca.subject, old_subject,
            "the two CAs have distinct names"
        );
        assert_eq!(member_material(&dir, "rampart-0").roots().len(), 2);
        assert!(matches!(start(&dir, None), Err(PkiError::Usage(_))));

        // A revocation mid-rotation keeps the other CA's CRL.
        Authority::open(&dir)
            .unwrap()
            .revoke("alice", None)
            .unwrap();
        assert_eq!(count(layout.crl(), "X509 CRL"), 2);
        member_material(&dir, "rampart-1");

        let reissued = reissue(&dir).unwrap();
        assert_eq!(reissued.len(), 5, "three members and two clients");
        assert!(reissued.iter().all(|c| c.issuer == new_ca.subject));
        assert_eq!(phase(&dir).unwrap(), Phase::Reissued);
        assert!(!dir.join(NEXT_CA_KEY).exists());
        assert_eq!(
            Authority::open(&dir).unwrap().ca_subject().unwrap(),
            new_ca.subject
        );
        member_material(&dir, "rampart-2");
        assert!(
            reissue(&dir).unwrap().is_empty(),
            "repeatable: nothing left"
        );

        let old = finish(&dir).unwrap();
        assert_eq!(old.subject, old_subject);
        assert_eq!(phase(&dir).unwrap(), Phase::Idle);
        assert_eq!(count(layout.ca_cert(), "CERTIFICATE"), 1);
        assert_eq!(count(layout.crl(), "X509 CRL"), 1);
        assert!(
            dir.join(RETIRED_DIR)
                .join(format!("ca-{}.crt", old.serial))
                .exists()
        );
        let m = member_material(&dir, "rampart-0");
        assert_eq!(m.roots().len(), 1);
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;
    use crate::pki::Kind;
    use crate::tls::{Material, TlsFiles};

    fn member_loads(dir: &Path) {
        Material::load(&TlsFiles::from_pki(
            &PkiLayout::new(dir),
            Kind::Member,
            "rampart-0",
        ))
        .unwrap();
    }

    #[test]
    fn each_step_can_be_repeated_after_stopping_half_way() {
        let (_tmp, dir) = crate::pki::authority::tests::fresh_dir();
        let layout = PkiLayout::new(&dir);
        let original_crl = std::fs::read(layout.crl()).unwrap();

        // `start` stopped after staging its key: still idle, and `start` runs again.
        std::fs::write(dir.join(NEXT_CA_KEY), b"half").unwrap();
        assert_eq!(phase(&dir).unwrap(), Phase::Idle);
        start(&dir, None).unwrap();

        // `start` stopped before writing the CRLs: `reissue` signs the new CA's CRL itself.
        std::fs::write(layout.crl(), &original_crl).unwrap();
        // ... and `reissue` stopped right after reordering ca.crt: repeating it completes.
        let cas = ca_blocks(&layout).unwrap();
        std::fs::write(layout.ca_cert(), format!("{}{}", cas[1], cas[0])).unwrap();
        let reissued = reissue(&dir).unwrap();
        assert_eq!(reissued.len(), 5);
        assert_eq!(phase(&dir).unwrap(), Phase::Reissued);
        assert_eq!(crl_blocks(&layout).unwrap().len(), 2);
        member_loads(&dir);
        finish(&dir).unwrap();
        member_loads(&dir);
    }
}
