//! rustls configurations: one provider (ring), TLS 1.3 only, ALPN h2, client certificates
//! required and checked against the CA and its CRL.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::caller::identity;
use super::error::{IdentityError, TlsError};
use super::material::Material;
use crate::pki::validate_name;

/// The only protocol version we speak.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The only application protocol we speak: gRPC runs on HTTP/2, and grpc-go clients (etcdctl)
/// refuse a TLS connection that did not select it.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider of every config: ring, built explicitly so that a second provider
/// compiled into the binary can never be picked (or make rustls panic) by accident.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which client certificates a server port admits. Every policy first requires a certificate
/// that chains to the CA, carries the clientAuth usage (if it has extended key usages), is
/// within its validity and is not revoked by the CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientPolicy {
    /// The client port: any such certificate. Who the caller is (user or member) is decided
    /// afterwards from the certificate (see [`super::PeerInfo::caller`]).
    AnyClient,
    /// The peer port: additionally, the certificate must name a member of `cluster`
    /// (`spiffe://<cluster>/member/<name>`); anything else is refused at the handshake.
    MembersOf {
        /// The cluster (trust domain) whose members are admitted.
        cluster: String,
    },
}

/// Which port a server config is for.
enum PolicyKind {
    AnyClient,
    Members,
}

/// The check a server makes of client certificates with this material: chains to one of its
/// CAs, within its validity, clientAuth, not revoked by its CRLs. Also used to re-check the
/// certificates of open connections after a reload.
pub fn client_verifier(material: &Material) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(material.roots().clone(), crypto_provider())
        .with_crls(material.crls().iter().cloned())
        .build()
        .map_err(|source| TlsError::Verifier {
            ca: material.files().ca.clone(),
            source,
        })
}

/// A server config for one port: TLS 1.3 only, ALPN h2, client certificate required per
/// `policy`, revocation checked against the material's CRLs (an unknown status is refused).
///
/// Refuses material without a CRL ([`TlsError::MissingCrl`]): a server always enforces
/// revocation. Session resumption is off, so every connection presents and has its
/// certificate checked against the current CA and CRL.
pub fn server_config(
    material: &Material,
    policy: ClientPolicy,
) -> Result<Arc<ServerConfig>, TlsError> {
    if material.crls().is_empty() {
        return Err(TlsError::MissingCrl);
    }
    let provider = crypto_provider();
    let webpki = client_verifier(material)?;
    let policy_kind = match &policy {
        ClientPolicy::AnyClient => PolicyKind::AnyClient,
        ClientPolicy::MembersOf { .. } => PolicyKind::Members,
    };
    let verifier: Arc<dyn ClientCertVerifier> = match policy {
        ClientPolicy::AnyClient => webpki,
        ClientPolicy::MembersOf { cluster } => {
            validate_name("cluster", &cluster)?;
            Arc::new(MemberVerifier {
                inner: webpki,
                cluster,
            })
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            material.certified_key().clone(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    if matches!(policy_kind, PolicyKind::AnyClient) {
        // The client port also serves etcd's HTTP endpoints (/health ...) to HTTP/1.1 clients.
        config.alpn_protocols.push(b"http/1.1".to_vec());
    }
    // A resumed session skips certificate verification: a revoked or expired client could
    // keep reconnecting on an old ticket. gRPC connections are long-lived; full handshakes
    // cost little.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A client config (CLI, members dialing peers): TLS 1.3 only, ALPN h2, our certificate as the
/// client certificate, the server verified against the CA (and the CRLs, if loaded) with its
/// name checked against the server certificate's DNS/IP SANs.
pub fn client_config(material: &Material) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crypto_provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(material.roots().clone(), provider.clone())
            .with_crls(material.crls().iter().cloned())
            .build()
            .map_err(|source| TlsError::Verifier {
                ca: material.files().ca.clone(),
                source,
            })?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_webpki_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            material.certified_key().clone(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The peer port's verifier: WebPki first, then the member identity of our cluster.
#[derive(Debug)]
struct MemberVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    cluster: String,
}

impl MemberVerifier {
    fn check_member(&self, end_entity: &CertificateDer<'_>) -> Result<(), IdentityError> {
        let caller = identity(end_entity)?.caller(&self.cluster)?;
        if !caller.is_member() {
            return Err(IdentityError::NotMember {
                caller: caller.to_string(),
                cluster: self.cluster.clone(),
            });
        }
        Ok(())
    }
}

impl ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.check_member(end_entity).map_err(|reason| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
