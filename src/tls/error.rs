//! The errors of the TLS layer: loading material, building configs, dialing, and why a
//! certificate names no acceptable identity.

use std::path::PathBuf;

use crate::pki::PkiError;

/// Everything that can go wrong while loading certificates and keys, building rustls configs
/// or dialing a TLS endpoint.
///
/// Messages say what happened and what to do about it; they never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading a file failed, or a key file is readable by others (the message says to
    /// `chmod 600` it).
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A PEM file holds no object of the expected type.
    #[error("{path}: no PEM {what} found; {hint}")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for ("certificate", "private key", "CRL").
        what: &'static str,
        /// What file to pass instead.
        hint: &'static str,
    },
    /// A PEM file could not be parsed, or holds something unusable.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error(
        "key file {key} does not belong to certificate {cert}; pass the .key file written beside it"
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate a member was started with is not one of the cluster's member
    /// certificates.
    #[error(
        "cert {cert} is not a member certificate of cluster {cluster:?} (its identity is {identity}); \
         use members/NAME.crt from that cluster's PKI"
    )]
    NotMember {
        /// The certificate file.
        cert: PathBuf,
        /// The cluster the member serves.
        cluster: String,
        /// What the certificate names instead.
        identity: String,
    },
    /// A server config was requested without a CRL; revocation must be enforced.
    #[error(
        "no CRL for the server: revocation is enforced at every handshake, so pass the PKI's \
         crl.pem (`rampart pki init` writes an empty one)"
    )]
    MissingCrl,
    /// rustls refused to build a certificate verifier (bad CA or CRL).
    #[error("could not build the certificate verifier from {ca}: {source}")]
    Verifier {
        /// The CA file the roots came from.
        ca: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the configuration (a bug if it happens: the policy is fixed).
    #[error("could not build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    /// An endpoint URL is not something we can dial.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// Dialing an endpoint failed (TCP, TLS handshake or HTTP/2 set-up).
    #[error("could not connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint dialed.
        endpoint: String,
        /// What failed.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Why a certificate names no identity we accept, in words fit for a log line and for the
/// TLS alert's local reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate is not parsable X.509.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// A `spiffe://` URI SAN that is not one of rampart's two identity forms.
    #[error(
        "malformed identity URI {0:?}: expected spiffe://<cluster>/member/<name> or \
         spiffe://<cluster>/user/<name>"
    )]
    MalformedUri(String),
    /// More than one identity URI: we refuse to guess which one counts.
    #[error(
        "the certificate carries more than one identity URI ({0}); issue one with a single identity"
    )]
    Ambiguous(String),
    /// The identity belongs to another trust domain.
    #[error("the certificate belongs to cluster {found:?}, not {expected:?} (identity {uri})")]
    OtherCluster {
        /// The cluster this side serves.
        expected: String,
        /// The cluster the certificate names.
        found: String,
        /// The identity URI.
        uri: String,
    },
    /// Neither an identity URI nor a common name.
    #[error("the certificate names nobody: no spiffe:// identity URI and no common name")]
    Anonymous,
    /// A valid identity that is not a member, presented where only members are admitted.
    #[error(
        "{caller} is not a member of cluster {cluster:?}; the peer port admits member certificates only"
    )]
    NotMember {
        /// Who the certificate names.
        caller: String,
        /// The cluster whose members are admitted.
        cluster: String,
    },
}
