//! Naming rules for clusters, members and users, and the identity URI that binds them.
//!
//! Names become file names (`members/NAME.crt`), DNS-like SANs and SPIFFE path segments,
//! so they follow DNS label rules: that excludes path separators, dots and anything a shell
//! or a URI would need to escape.

use std::fmt;
use std::net::IpAddr;

use super::PkiError;

/// Longest name we accept: one DNS label.
const MAX_NAME_LEN: usize = 63;

/// Checks that `name` is a DNS label: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), PkiError> {
    let refuse = |reason: &str| PkiError::InvalidName {
        what,
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(refuse("it is longer than 63 characters"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(refuse(&format!(
            "{bad:?} is not allowed; use lowercase letters, digits and '-' (a DNS label)"
        )));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(refuse("it must start and end with a letter or digit"));
    }
    Ok(())
}

/// A subject alternative name of a member certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl San {
    /// Parses an IP address, or else a DNS name (validated; no wildcards).
    pub fn parse(text: &str) -> Result<San, PkiError> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        // Bracketed IPv6 as people write it in URLs.
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))
            && let Ok(ip) = inner.parse::<IpAddr>()
        {
            return Ok(San::Ip(ip));
        }
        validate_dns_name(text)?;
        Ok(San::Dns(text.to_ascii_lowercase()))
    }
}

impl serde::Serialize for San {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => write!(f, "DNS:{name}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

fn validate_dns_name(name: &str) -> Result<(), PkiError> {
    let refuse = |reason: &str| PkiError::InvalidSan {
        san: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.len() > 253 {
        return Err(refuse("a DNS name is at most 253 characters"));
    }
    if name.contains('*') {
        return Err(refuse(
            "wildcards are not issued: name each member's DNS names explicitly",
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(refuse(
                "it has an empty label (two dots, or a leading/trailing dot)",
            ));
        }
        if label.len() > 63 {
            return Err(refuse("a label is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(refuse(
                "it is neither an IP address nor a DNS name (letters, digits, '-' and '.')",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(refuse("a label must start and end with a letter or digit"));
        }
    }
    Ok(())
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The cluster's certificate authority.
    Ca,
    /// A member: serves the client and peer ports and dials its peers.
    Member,
    /// A user of the cluster, authenticated by its certificate.
    Client,
}

impl Kind {
    /// The directory of this kind's certificates inside a PKI directory (none for the CA).
    pub fn dir_name(self) -> Option<&'static str> {
        match self {
            Kind::Ca => None,
            Kind::Member => Some("members"),
            Kind::Client => Some("clients"),
        }
    }

    /// The word used in messages and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ca => "ca",
            Kind::Member => "member",
            Kind::Client => "client",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a certificate carries in its URI SAN: `spiffe://<cluster>/member/<name>` or
/// `spiffe://<cluster>/user/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The trust domain: the cluster name.
    pub cluster: String,
    /// Member or client (a client's URI path says `user`, as etcd calls its principals).
    pub kind: Kind,
    /// The member or user name.
    pub name: String,
}

const SCHEME: &str = "spiffe://";

impl Identity {
    /// Parses an identity URI. Returns `None` for anything that is not exactly one of the two
    /// forms with valid names, so that a malformed SAN never grants an identity.
    pub fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SCHEME)?;
        let mut parts = rest.split('/');
        let cluster = parts.next()?;
        let kind = match parts.next()? {
            "member" => Kind::Member,
            "user" => Kind::Client,
            _ => return None,
        };
        let name = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        validate_name("cluster", cluster).ok()?;
        validate_name(kind.as_str(), name).ok()?;
        Some(Identity {
            cluster: cluster.to_owned(),
            kind,
            name: name.to_owned(),
        })
    }

    /// The URI form.
    pub fn uri(&self) -> String {
        let segment = match self.kind {
            Kind::Member => "member",
            Kind::Client => "user",
            // The CA's URI is the bare trust domain; it is never parsed as an Identity.
            Kind::Ca => return format!("{SCHEME}{}", self.cluster),
        };
        format!("{SCHEME}{}/{segment}/{}", self.cluster, self.name)
    }
}

/// The trust domain a CA certificate names in its URI SAN (`spiffe://<cluster>`).
pub fn parse_trust_domain(uri: &str) -> Option<&str> {
    let cluster = uri.strip_prefix(SCHEME)?;
    validate_name("cluster", cluster).ok()?;
    Some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for good in ["rampart-0", "a", "node1", "x-y-z", &"a".repeat(63)] {
            assert!(validate_name("member", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a/b",
            "..",
            "a_b",
            "ü",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(validate_name("member", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn invalid_name_message_says_what_is_allowed() {
        let err = validate_name("member", "../etc").unwrap_err().to_string();
        assert!(err.contains("invalid member name"), "{err}");
        assert!(err.contains("lowercase letters, digits and '-'"), "{err}");
    }

    #[test]
    fn sans_parse_as_ip_or_dns() {
        assert_eq!(
            San::parse("127.0.0.1").unwrap(),
            San::Ip([127, 0, 0, 1].into())
        );
        assert_eq!(San::parse("::1").unwrap(), San::Ip("::1".parse().unwrap()));
        assert_eq!(
            San::parse("[::1]").unwrap(),
            San::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            San::parse("Etcd-0.svc.cluster.local").unwrap(),
            San::Dns("etcd-0.svc.cluster.local".into())
        );
        for bad in [
            "",
            "*.example.com",
            "a..b",
            "-a.b",
            "a_b.c",
            "http://x",
            "a/b",
        ] {
            assert!(San::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identity_round_trips_and_rejects_lookalikes() {
        let id = Identity::parse("spiffe://prod/member/rampart-1").unwrap();
        assert_eq!(
            (id.cluster.as_str(), id.kind, id.name.as_str()),
            ("prod", Kind::Member, "rampart-1")
        );
        assert_eq!(id.uri(), "spiffe://prod/member/rampart-1");
        let user = Identity::parse("spiffe://prod/user/root").unwrap();
        assert_eq!(user.kind, Kind::Client);
        for bad in [
            "spiffe://prod/member/",
            "spiffe://prod/member/a/b",
            "spiffe://prod/admin/a",
            "spiffe://Prod/user/a",
            "https://prod/user/a",
            "spiffe://prod/user/a?x",
            "spiffe:///user/a",
        ] {
            assert!(Identity::parse(bad).is_none(), "{bad}");
        }
    }
}
