//! Who a certificate names: the one place a peer certificate becomes an identity.
//!
//! [`identity`] parses; [`PeerIdentity::caller`] applies the cluster's trust domain. Both are
//! pure functions over DER, so every rule is unit-tested without a socket. Call them only on
//! certificates the TLS verifier has already accepted: parsing proves nothing by itself.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::error::IdentityError;
use crate::pki::{Identity, Kind};

/// Who is calling, as far as authorization is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A user: from the `spiffe://<cluster>/user/<name>` URI SAN, else the certificate's CN
    /// (as etcd takes the user name from the CN).
    User(String),
    /// A member of the cluster: from the `spiffe://<cluster>/member/<name>` URI SAN.
    Member(String),
}

impl Caller {
    /// The user or member name.
    pub fn name(&self) -> &str {
        match self {
            Caller::User(name) | Caller::Member(name) => name,
        }
    }

    /// Whether this is a member of the cluster.
    pub fn is_member(&self) -> bool {
        matches!(self, Caller::Member(_))
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::User(name) => write!(f, "user {name}"),
            Caller::Member(name) => write!(f, "member {name}"),
        }
    }
}

/// What a certificate says about its holder, before the trust domain is applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerIdentity {
    /// A rampart identity URI SAN (`spiffe://<cluster>/member|user/<name>`).
    Rampart(Identity),
    /// No identity URI: the subject's common name (certificates from other tooling, etcd style).
    CommonName(String),
}

impl PeerIdentity {
    /// The caller this identity is in `cluster`. A rampart identity of another cluster is
    /// refused; a bare common name is a user of any cluster (the CA vouches for it).
    pub fn caller(&self, cluster: &str) -> Result<Caller, IdentityError> {
        match self {
            PeerIdentity::Rampart(id) if id.cluster != cluster => {
                Err(IdentityError::OtherCluster {
                    expected: cluster.to_owned(),
                    found: id.cluster.clone(),
                    uri: id.uri(),
                })
            }
            PeerIdentity::Rampart(id) => match id.kind {
                Kind::Member => Ok(Caller::Member(id.name.clone())),
                Kind::Client => Ok(Caller::User(id.name.clone())),
                // `Identity::parse` never yields a CA; a CA is nobody's caller anyway.
                Kind::Ca => Err(IdentityError::MalformedUri(id.uri())),
            },
            PeerIdentity::CommonName(cn) => Ok(Caller::User(cn.clone())),
        }
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Rampart(id) => f.write_str(&id.uri()),
            PeerIdentity::CommonName(cn) => write!(f, "CN={cn:?} (no identity URI)"),
        }
    }
}

const SPIFFE: &str = "spiffe://";

/// Parses who a certificate names. The rules, in order:
///
/// 1. any `spiffe://` URI SAN that is not a valid rampart identity refuses the certificate
///    (never fall back to the CN when the URI is there but wrong);
/// 2. two different identity URIs refuse it (no guessing);
/// 3. one identity URI is the identity;
/// 4. else the first subject common name, if non-empty and free of control characters;
/// 5. else the certificate names nobody.
///
/// Other URI SANs (not `spiffe://`) are ignored.
pub fn identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;

    let mut found: Vec<Identity> = Vec::new();
    let san = x509
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        if !uri.starts_with(SPIFFE) {
            continue;
        }
        let id = Identity::parse(uri).ok_or_else(|| IdentityError::MalformedUri((*uri).into()))?;
        if !found.contains(&id) {
            found.push(id);
        }
    }
    match found.len() {
        0 => {}
        1 => return Ok(PeerIdentity::Rampart(found.remove(0))),
        _ => {
            let uris: Vec<String> = found.iter().map(Identity::uri).collect();
            return Err(IdentityError::Ambiguous(uris.join(", ")));
        }
    }

    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if cn.is_empty() || cn.chars().any(char::is_control) {
        return Err(IdentityError::Anonymous);
    }
    Ok(PeerIdentity::CommonName(cn.to_owned()))
}

/// The caller a verified client certificate names in `cluster`, or `None` when it names no
/// acceptable identity (see [`identity`] for the rules; requests from such a caller must be
/// refused).
pub fn caller_from_cert(cert: &CertificateDer<'_>, cluster: &str) -> Option<Caller> {
    identity(cert).and_then(|id| id.caller(cluster)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, uris: &[&str]) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .chain([SanType::DnsName("localhost".try_into().unwrap())])
            .collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// The caller a certificate names in cluster "prod", or a word of the refusal.
    type Expected = Result<Caller, String>;

    fn user(name: &str) -> Expected {
        Ok(Caller::User(name.into()))
    }

    fn member(name: &str) -> Expected {
        Ok(Caller::Member(name.into()))
    }

    #[test]
    fn each_certificate_shape_names_the_expected_caller() {
        // (case, CN, URI SANs, expected)
        let cases: &[(&str, Option<&str>, &[&str], Expected)] = &[
            (
                "user uri",
                Some("root"),
                &["spiffe://prod/user/root"],
                user("root"),
            ),
            (
                "uri wins over cn",
                Some("cn-name"),
                &["spiffe://prod/user/alice"],
                user("alice"),
            ),
            (
                "member uri",
                Some("m0"),
                &["spiffe://prod/member/m0"],
                member("m0"),
            ),
            ("cn only", Some("alice"), &[], user("alice")),
            (
                "cn with at sign",
                Some("alice@example.com"),
                &[],
                user("alice@example.com"),
            ),
            (
                "non-spiffe uri ignored",
                Some("bob"),
                &["https://example.com/bob"],
                user("bob"),
            ),
            (
                "duplicate uri",
                None,
                &["spiffe://prod/user/a", "spiffe://prod/user/a"],
                user("a"),
            ),
            ("no cn no uri", None, &[], Err("names nobody".into())),
            ("empty cn", Some(""), &[], Err("names nobody".into())),
            (
                "control char cn",
                Some("ro\not"),
                &[],
                Err("names nobody".into()),
            ),
            (
                "other cluster",
                Some("root"),
                &["spiffe://staging/user/root"],
                Err("cluster \"staging\"".into()),
            ),
            (
                "other cluster member",
                None,
                &["spiffe://staging/member/m0"],
                Err("not \"prod\"".into()),
            ),
            (
                "unknown kind",
                Some("root"),
                &["spiffe://prod/admin/root"],
                Err("malformed".into()),
            ),
            (
                "bad name",
                Some("root"),
                &["spiffe://prod/user/Root"],
                Err("malformed".into()),
            ),
            (
                "extra path",
                Some("root"),
                &["spiffe://prod/user/a/b"],
                Err("malformed".into()),
            ),
            (
                "trust domain only",
                Some("root"),
                &["spiffe://prod"],
                Err("malformed".into()),
            ),
            (
                "malformed beside valid",
                None,
                &["spiffe://prod/user/a", "spiffe://prod/x"],
                Err("malformed".into()),
            ),
            (
                "two identities",
                None,
                &["spiffe://prod/user/a", "spiffe://prod/member/a"],
                Err("more than one".into()),
            ),
        ];
        for (case, cn, uris, expected) in cases {
            let got = identity(&cert(*cn, uris))
                .and_then(|id| id.caller("prod"))
                .map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(want), Ok(got)) => assert_eq!(want, got, "{case}"),
                (Err(word), Err(msg)) => assert!(msg.contains(word.as_str()), "{case}: {msg}"),
                _ => panic!("{case}: expected {expected:?}, got {got:?}"),
            }
            assert_eq!(
                caller_from_cert(&cert(*cn, uris), "prod"),
                expected.clone().ok(),
                "{case}"
            );
        }
    }

    #[test]
    fn garbage_is_unparsable_not_anonymous() {
        let err = identity(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])).unwrap_err();
        assert!(matches!(err, IdentityError::Unparsable(_)), "{err:?}");
    }

    #[test]
    fn callers_read_well_in_logs() {
        assert_eq!(Caller::User("root".into()).to_string(), "user root");
        assert_eq!(Caller::Member("m0".into()).to_string(), "member m0");
        assert_eq!(Caller::Member("m0".into()).name(), "m0");
        assert!(Caller::Member("m0".into()).is_member());
    }
}
