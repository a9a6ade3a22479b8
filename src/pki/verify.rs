//! Does a certificate verify against a PKI, and if not, why not — in plain words.
//!
//! The chain, validity and revocation checks use webpki, the verifier rustls runs at every
//! handshake, so `pki inspect` and `pki list` agree with what a member will do. Each problem is
//! checked on its own so that an expired *and* revoked certificate reports both.

use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use webpki::{EndEntityCert, KeyUsage, RevocationCheckDepth, UnknownStatusPolicy};

use super::PkiError;
use super::certinfo::CertInfo;
use super::crl::{CrlState, reason_name};
use super::layout::PkiLayout;
use super::names::Kind;

/// What a cluster trusts: its CA, its name and its CRL (both as DER for webpki and parsed).
#[derive(Debug, Clone)]
pub struct Trust {
    /// The cluster name (trust domain).
    pub cluster: String,
    /// The CA certificate.
    pub ca_der: CertificateDer<'static>,
    /// The CRL as DER, for webpki.
    pub crl_der: Option<Vec<u8>>,
    /// The CRL, parsed and signature-checked.
    pub crl: Option<CrlState>,
}

impl Trust {
    /// Reads `ca.crt` and `crl.pem` of a PKI directory (no private key needed).
    pub fn load(layout: &PkiLayout) -> Result<Trust, PkiError> {
        let (cluster, ca_der) = super::read_ca_cert(layout)?;
        let crl_path = layout.crl();
        let crl_pem = super::files::read(&crl_path)?;
        let crl_der = <rustls_pki_types::CertificateRevocationListDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(&crl_pem)
            .map_err(|e| PkiError::malformed(&crl_path, format!("no PEM CRL found ({e})")))?;
        let crl = super::crl::read(&crl_path, ca_der.as_ref())?;
        Ok(Trust {
            cluster,
            ca_der,
            crl_der: Some(crl_der.as_ref().to_vec()),
            crl: Some(crl),
        })
    }
}

/// One reason a certificate would be refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// Past its notAfter.
    Expired {
        /// notAfter, seconds since the epoch.
        not_after: i64,
    },
    /// Before its notBefore.
    NotYetValid {
        /// notBefore, seconds since the epoch.
        not_before: i64,
    },
    /// Not signed by this PKI's CA.
    OtherCa,
    /// Listed in the CRL.
    Revoked {
        /// When, seconds since the epoch.
        revoked_at: i64,
        /// Why, if recorded.
        reason: Option<String>,
    },
    /// Lacks an extended key usage its role needs.
    WrongUsage {
        /// The usage that is missing.
        missing: String,
    },
    /// Carries no `spiffe://` identity URI SAN.
    MissingIdentity,
    /// Names another cluster.
    OtherCluster {
        /// The cluster it names.
        cluster: String,
    },
    /// Any other reason webpki gives.
    Other {
        /// webpki's description.
        detail: String,
    },
}

impl Problem {
    /// The problem in plain words, with what to do.
    pub fn explain(&self) -> String {
        match self {
            Problem::Expired { not_after } => format!(
                "expired on {}; renew it with `rampart pki renew NAME`",
                super::format_time(*not_after)
            ),
            Problem::NotYetValid { not_before } => format!(
                "not valid until {}; check this machine's clock",
                super::format_time(*not_before)
            ),
            Problem::OtherCa => {
                "not signed by this cluster's CA (issued by another CA, or altered)".to_owned()
            }
            Problem::Revoked { revoked_at, reason } => format!(
                "revoked on {}{}",
                super::format_time(*revoked_at),
                reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Problem::WrongUsage { missing } => {
                format!("wrong key usage: the certificate lacks {missing}, which its role needs")
            }
            Problem::MissingIdentity => "no rampart identity: it carries no \
                spiffe://<cluster>/member/<name> or spiffe://<cluster>/user/<name> URI SAN"
                .to_owned(),
            Problem::OtherCluster { cluster } => {
                format!("it names another cluster ({cluster:?})")
            }
            Problem::Other { detail } => format!("refused by the TLS verifier: {detail}"),
        }
    }
}

/// Checks `cert` against a cluster's CA, CRL and name at time `now`.
/// An empty result means a member would accept it.
pub fn verify(cert: &CertInfo, trust: &Trust, now: i64) -> Vec<Problem> {
    let (ca_der, cluster) = (&trust.ca_der, trust.cluster.as_str());
    let (crl_der, crl) = (trust.crl_der.as_deref(), trust.crl.as_ref());
    let mut problems = Vec::new();
    if now > cert.not_after {
        problems.push(Problem::Expired {
            not_after: cert.not_after,
        });
    }
    if now < cert.not_before {
        problems.push(Problem::NotYetValid {
            not_before: cert.not_before,
        });
    }
    if cert.kind == Some(Kind::Ca) {
        // A CA is checked for its signature only (self-signed = this CA).
        if cert.der.as_ref() != ca_der.as_ref() {
            problems.push(Problem::OtherCa);
        }
        return problems;
    }

    match cert.parsed_identity() {
        None => problems.push(Problem::MissingIdentity),
        Some(id) if id.cluster != cluster => problems.push(Problem::OtherCluster {
            cluster: id.cluster,
        }),
        Some(_) => {}
    }
    let needs_server = cert.kind == Some(Kind::Member);
    for (needed, name) in [(needs_server, "serverAuth"), (true, "clientAuth")] {
        if needed
            && !cert
                .extended_key_usage
                .iter()
                .any(|u| u == name || u == "any")
        {
            problems.push(Problem::WrongUsage {
                missing: name.to_owned(),
            });
        }
    }
    if let Some(entry) = crl.and_then(|c| c.revoked.iter().find(|r| r.serial == cert.serial)) {
        problems.push(Problem::Revoked {
            revoked_at: entry.revoked_at,
            reason: entry.reason.map(|r| reason_name(r).to_owned()),
        });
    }

    let Ok(anchor) = webpki::anchor_from_trusted_cert(ca_der) else {
        problems.push(Problem::Other {
            detail: "the CA certificate cannot be used as a trust anchor".to_owned(),
        });
        return problems;
    };
    let Ok(end_entity) = EndEntityCert::try_from(&cert.der) else {
        problems.push(Problem::Other {
            detail: "the certificate cannot be parsed by the TLS verifier".to_owned(),
        });
        return problems;
    };
    let anchors = [anchor];
    // Signature only: at a moment inside its validity, any usage, no revocation.
    let inside_validity = cert.not_before.max(0) as u64 + 1;
    let signature = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(inside_validity)),
        KeyUsage::client_auth(),
        None,
        None,
    );
    if let Err(e) = signature {
        match e {
            webpki::Error::UnknownIssuer
            | webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                problems.push(Problem::OtherCa)
            }
            // Usage is reported by our own check above.
            webpki::Error::RequiredEkuNotFoundContext(_) => {}
            other => problems.push(Problem::Other {
                detail: format!("{other:?}"),
            }),
        }
        return problems;
    }
    if !problems.is_empty() {
        return problems;
    }

    // Everything at once, exactly as a handshake at `now` would check it.
    let parsed_crl = crl_der.and_then(|der| webpki::OwnedCertRevocationList::from_der(der).ok());
    let crls: Vec<webpki::CertRevocationList<'_>> =
        parsed_crl.into_iter().map(Into::into).collect();
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
        .ok()
        .map(|b| {
            b.with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Deny)
                .build()
        });
    let full = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64)),
        KeyUsage::client_auth(),
        revocation,
        None,
    );
    if let Err(e) = full {
        problems.push(Problem::Other {
            detail: format!("{e:?}"),
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{InitOptions, PkiLayout, files, init, local_members, read_ca_cert};
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    use std::path::Path;

    fn pki(
        dir: &Path,
        cluster: &str,
    ) -> (String, CertificateDer<'static>, Issuer<'static, KeyPair>) {
        init(&InitOptions {
            dir: dir.to_owned(),
            cluster: cluster.into(),
            members: local_members().unwrap(),
            clients: vec!["root".into()],
            validity_days: None,
            ca_validity_days: None,
            force: false,
        })
        .unwrap();
        let layout = PkiLayout::new(dir);
        let (cluster, ca_der) = read_ca_cert(&layout).unwrap();
        let key_pem = String::from_utf8(files::read(&layout.ca_key()).unwrap()).unwrap();
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, KeyPair::from_pem(&key_pem).unwrap()).unwrap();
        (cluster, ca_der, issuer)
    }

    /// A certificate shaped by `tweak`, signed by `issuer`.
    fn leaf(issuer: &Issuer<'_, KeyPair>, tweak: impl FnOnce(&mut CertificateParams)) -> CertInfo {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "x");
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.subject_alt_names = vec![SanType::URI("spiffe://prod/user/x".try_into().unwrap())];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        CertInfo::from_der(cert.der().clone(), Path::new("test")).unwrap()
    }

    #[test]
    fn each_reason_a_certificate_is_refused_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (cluster, ca_der, issuer) = pki(&tmp.path().join("a"), "prod");
        let (_, _, other_issuer) = pki(&tmp.path().join("b"), "prod");
        let now = crate::pki::now_unix();
        let trust = Trust {
            cluster,
            ca_der,
            crl_der: None,
            crl: None,
        };
        let check = |info: &CertInfo| verify(info, &trust, now);

        assert_eq!(check(&leaf(&issuer, |_| {})), vec![]);

        let expired = leaf(&issuer, |p| {
            p.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        });
        assert!(matches!(
            check(&expired).as_slice(),
            [Problem::Expired { .. }]
        ));

        assert_eq!(check(&leaf(&other_issuer, |_| {})), vec![Problem::OtherCa]);

        let server_only = leaf(&issuer, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        });
        assert_eq!(
            check(&server_only),
            vec![Problem::WrongUsage {
                missing: "clientAuth".into()
            }]
        );

        let member_without_server_auth = leaf(&issuer, |p| {
            p.subject_alt_names = vec![SanType::URI("spiffe://prod/member/m".try_into().unwrap())];
        });
        assert_eq!(
            check(&member_without_server_auth),
            vec![Problem::WrongUsage {
                missing: "serverAuth".into()
            }]
        );

        let anonymous = leaf(&issuer, |p| p.subject_alt_names.clear());
        assert_eq!(check(&anonymous), vec![Problem::MissingIdentity]);

        let foreign = leaf(&issuer, |p| {
            p.subject_alt_names = vec![SanType::URI("spiffe://staging/user/x".try_into().unwrap())];
        });
        assert_eq!(
            check(&foreign),
            vec![Problem::OtherCluster {
                cluster: "staging".into()
            }]
        );

        // Several at once are all reported.
        let expired_foreign = leaf(&other_issuer, |p| {
            p.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        });
        let problems = check(&expired_foreign);
        assert!(problems.contains(&Problem::OtherCa), "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, Problem::Expired { .. })),
            "{problems:?}"
        );
    }

    #[test]
    fn a_revoked_certificate_is_refused_by_the_crl_as_a_handshake_would() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a");
        let (cluster, ca_der, _) = pki(&dir, "prod");
        let ca = crate::pki::Authority::open(&dir).unwrap();
        let root = ca.find("root").unwrap();
        ca.revoke("root", None).unwrap();
        let mut trust = Trust::load(ca.layout()).unwrap();
        assert_eq!(trust.cluster, cluster);
        assert_eq!(trust.ca_der, ca_der);
        let now = crate::pki::now_unix();
        let problems = verify(&root, &trust, now);
        assert!(
            matches!(problems.as_slice(), [Problem::Revoked { .. }]),
            "{problems:?}"
        );
        // webpki alone (no parsed state) reaches the same verdict.
        trust.crl = None;
        let problems = verify(&root, &trust, now);
        assert!(
            matches!(problems.as_slice(), [Problem::Other { detail }] if detail.contains("Revoked")),
            "{problems:?}"
        );
    }
}
