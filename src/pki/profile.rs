//! Certificate profiles: what goes into each kind of certificate.
//!
//! The profiles are data (`pki/profiles.toml` at the top of the repository), compiled in so
//! that the binary and its documentation cannot drift apart.

use std::sync::OnceLock;

use serde::Deserialize;

use super::PkiError;

const PROFILES_TOML: &str = include_str!("../../pki/profiles.toml");

/// All profiles, as written in `pki/profiles.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profiles {
    /// The certificate authority.
    pub ca: CaProfile,
    /// Member (server + peer) certificates.
    pub member: MemberProfile,
    /// Client (user) certificates.
    pub client: ClientProfile,
    /// SAN templates for members of a Kubernetes StatefulSet.
    pub kubernetes: KubernetesProfile,
    /// The certificate revocation list.
    pub crl: CrlProfile,
    /// Thresholds for `pki list`.
    pub status: StatusProfile,
}

/// The CA's profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaProfile {
    /// Key algorithm.
    pub algorithm: Algorithm,
    /// Lifetime in days.
    pub validity_days: u32,
    /// Subject CN template.
    pub common_name: String,
    /// Subject O.
    pub organization: String,
    /// URI SAN template naming the trust domain.
    pub identity: String,
    /// Key usages.
    pub key_usage: Vec<KeyUsage>,
    /// Basic constraints path length.
    pub path_len: u8,
}

/// The member profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberProfile {
    /// Key algorithm.
    pub algorithm: Algorithm,
    /// Default lifetime in days.
    pub validity_days: u32,
    /// URI SAN template.
    pub identity: String,
    /// Key usages.
    pub key_usage: Vec<KeyUsage>,
    /// Extended key usages.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// SAN templates for `--member NAME` without a list.
    pub default_sans: Vec<String>,
    /// Member names of the local cluster.
    pub local_members: Vec<String>,
    /// SANs of the local cluster's members.
    pub local_sans: Vec<String>,
}

/// The client profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientProfile {
    /// Key algorithm.
    pub algorithm: Algorithm,
    /// Default lifetime in days.
    pub validity_days: u32,
    /// URI SAN template.
    pub identity: String,
    /// Key usages.
    pub key_usage: Vec<KeyUsage>,
    /// Extended key usages.
    pub extended_key_usage: Vec<ExtendedKeyUsage>,
    /// Clients `pki init` issues by default.
    pub default_clients: Vec<String>,
}

/// SAN templates for Kubernetes StatefulSets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesProfile {
    /// SAN templates per member pod.
    pub member_sans: Vec<String>,
    /// The cluster domain when `--cluster-domain` is not given.
    pub default_domain: String,
}

/// The CRL's profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlProfile {
    /// Days until nextUpdate.
    pub validity_days: u32,
}

/// Thresholds for status reporting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusProfile {
    /// At most this many days left is "expiring".
    pub expiring_within_days: u32,
}

/// Key algorithms rampart issues. All are supported by rustls/ring, Go and OpenSSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl Algorithm {
    /// rcgen's signature algorithm for this key type.
    pub fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Algorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// X.509 key usages, by their RFC 5280 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyUsage {
    /// digitalSignature
    DigitalSignature,
    /// keyCertSign
    KeyCertSign,
    /// cRLSign
    #[serde(rename = "cRLSign")]
    CrlSign,
}

impl KeyUsage {
    /// rcgen's value.
    pub fn rcgen(self) -> rcgen::KeyUsagePurpose {
        match self {
            KeyUsage::DigitalSignature => rcgen::KeyUsagePurpose::DigitalSignature,
            KeyUsage::KeyCertSign => rcgen::KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => rcgen::KeyUsagePurpose::CrlSign,
        }
    }
}

/// Extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExtendedKeyUsage {
    /// TLS server authentication.
    ServerAuth,
    /// TLS client authentication.
    ClientAuth,
}

impl ExtendedKeyUsage {
    /// rcgen's value.
    pub fn rcgen(self) -> rcgen::ExtendedKeyUsagePurpose {
        match self {
            ExtendedKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        }
    }
}

/// The compiled-in profiles.
pub fn profiles() -> Result<&'static Profiles, PkiError> {
    static PARSED: OnceLock<Result<Profiles, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| toml::from_str(PROFILES_TOML).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| PkiError::Profile(e.clone()))
}

/// Fills `{placeholder}`s of a template.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in vars {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_profiles_parse_and_match_the_identity_model() {
        let p = profiles().expect("pki/profiles.toml must parse");
        assert_eq!(p.ca.path_len, 0);
        assert!(p.ca.key_usage.contains(&KeyUsage::KeyCertSign));
        assert!(p.ca.key_usage.contains(&KeyUsage::CrlSign));
        assert_eq!(
            p.member.extended_key_usage,
            vec![ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
        );
        assert_eq!(
            p.client.extended_key_usage,
            vec![ExtendedKeyUsage::ClientAuth]
        );
        assert_eq!(p.member.identity, "spiffe://{cluster}/member/{name}");
        assert_eq!(p.client.identity, "spiffe://{cluster}/user/{name}");
        assert_eq!(p.ca.algorithm, Algorithm::EcdsaP256);
        assert_eq!(p.ca.validity_days, 3650);
        assert_eq!(p.member.validity_days, 365);
    }

    #[test]
    fn render_fills_every_placeholder() {
        assert_eq!(
            render(
                "{pod}.{service}.{namespace}.svc",
                &[("pod", "r-0"), ("service", "r"), ("namespace", "db")]
            ),
            "r-0.r.db.svc"
        );
    }
}
