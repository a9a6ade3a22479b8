//! Certificates, keys, CA bundle and CRL re-read without a restart: on SIGHUP, and when any
//! of the files changes (checked every [`POLL`]).
//!
//! A new file set replaces the working one only when all of it is valid: every file parses,
//! each key matches its certificate and is private (0600), the member's own certificates chain
//! to the new CA bundle and are not revoked by the new CRL, and they still name this member.
//! A broken set is logged and ignored; the old material stays in use. After a reload, open
//! connections whose client certificate the new bundle or CRL refuses are closed at once.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::UnixTime;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::member::{ServeError, check_member_cert};
use crate::pki::CertInfo;
use crate::raft::PeerContext;
use crate::tls::{self, ClientPolicy, LiveConnections, Material, TlsFiles};

/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// What a reload swaps: the server configs of both ports, the peer dialer's config, and the
/// open connections to re-check.
pub struct Reloader {
    /// The member's name (its certificates must keep naming it).
    pub name: String,
    /// The cluster (trust domain).
    pub cluster: String,
    /// The client port's files.
    pub client_files: TlsFiles,
    /// The peer port's files.
    pub peer_files: TlsFiles,
    /// Where the client port takes its config from.
    pub client_config: watch::Sender<Arc<ServerConfig>>,
    /// Where the peer port takes its config from.
    pub peer_config: watch::Sender<Arc<ServerConfig>>,
    /// The peer dialer.
    pub peers: Arc<PeerContext>,
    /// Open connections of the client port.
    pub client_live: Vec<LiveConnections>,
    /// Open connections of the peer port.
    pub peer_live: Vec<LiveConnections>,
}

/// A digest of every file's content (never the content itself: it includes the keys).
fn fingerprint(files: &[&TlsFiles]) -> Vec<u8> {
    let mut h = Sha256::new();
    for f in files {
        for path in [Some(&f.cert), Some(&f.key), Some(&f.ca), f.crl.as_ref()]
            .into_iter()
            .flatten()
        {
            h.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(path) {
                Ok(bytes) => h.update(Sha256::digest(&bytes)),
                Err(e) => h.update(e.to_string().as_bytes()),
            }
        }
    }
    h.finalize().to_vec()
}

/// Why an open connection's certificate is no longer accepted by `material`, if it is not.
fn refusal(
    verifier: &Arc<dyn rustls::server::danger::ClientCertVerifier>,
    cert: &rustls_pki_types::CertificateDer<'static>,
) -> Option<String> {
    verifier
        .verify_client_cert(cert, &[], UnixTime::now())
        .err()
        .map(|e| e.to_string())
}

/// The member's own certificate must pass the same check as any client's.
fn check_own(material: &Material, files: &TlsFiles) -> Result<(), ServeError> {
    let verifier = tls::client_verifier(material)?;
    let own = material.cert_chain().first().ok_or_else(|| {
        ServeError::Identity(format!("{} holds no certificate", files.cert.display()))
    })?;
    if let Some(reason) = refusal(&verifier, own) {
        return Err(ServeError::Identity(format!(
            "{} is not accepted by {} and its CRL: {reason}",
            files.cert.display(),
            files.ca.display()
        )));
    }
    Ok(())
}

/// What the member's certificate files hold and when each expires: (kind, name, not-after).
/// Unreadable parts are skipped: the gauges describe what could be read.
fn expiries(client: &TlsFiles, peer: &TlsFiles) -> Vec<(&'static str, String, i64)> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    let leaf = |kind, path: &std::path::Path, out: &mut Vec<_>| {
        if let Ok(info) = CertInfo::from_pem_file(path) {
            out.push((kind, info.common_name, info.not_after));
        }
    };
    leaf("client-server", &client.cert, &mut out);
    leaf("peer", &peer.cert, &mut out);
    let mut bundles = vec![&client.ca];
    if peer.ca != client.ca {
        bundles.push(&peer.ca);
    }
    for bundle in bundles {
        let Ok(certs) = rustls_pki_types::CertificateDer::pem_file_iter(bundle) else {
            continue;
        };
        for der in certs.flatten() {
            if let Ok(info) = CertInfo::from_der(der, bundle) {
                out.push(("ca", info.common_name, info.not_after));
            }
        }
    }
    let mut crls: Vec<&std::path::PathBuf> = client.crl.iter().collect();
    if peer.crl != client.crl {
        crls.extend(peer.crl.iter());
    }
    for path in crls {
        let Ok(list) = rustls_pki_types::CertificateRevocationListDer::pem_file_iter(path) else {
            continue;
        };
        for der in list.flatten() {
            if let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref())
                && let Some(next) = crl.next_update()
            {
                let issuer = crl
                    .issuer()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                out.push(("crl", issuer, next.timestamp()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Sets `rampart_certificate_expiry_timestamp_seconds` from the files in use.
pub fn publish_expiry(client: &TlsFiles, peer: &TlsFiles) {
    crate::metrics::get().set_certificate_expiry(&expiries(client, peer));
}

impl Reloader {
    /// Loads and checks a complete new set, then swaps it in; the old set stays on error.
    pub fn reload(&self) -> Result<(usize, usize), ServeError> {
        let client = Material::load(&self.client_files)?;
        check_member_cert(&client, &self.cluster, &self.name, &self.client_files)?;
        check_own(&client, &self.client_files)?;
        let client_server = tls::server_config(&client, ClientPolicy::AnyClient)?;
        let peer = Material::load(&self.peer_files)?;
        check_member_cert(&peer, &self.cluster, &self.name, &self.peer_files)?;
        check_own(&peer, &self.peer_files)?;
        let peer_server = tls::server_config(
            &peer,
            ClientPolicy::MembersOf {
                cluster: self.cluster.clone(),
            },
        )?;
        let peer_client = tls::client_config(&peer)?;
        let client_verifier = tls::client_verifier(&client)?;
        let peer_verifier = tls::client_verifier(&peer)?;

        // Everything is valid: swap, then close what the new material refuses.
        self.client_config.send_replace(client_server);
        self.peer_config.send_replace(peer_server);
        self.peers.replace_tls(peer_client);
        let closed_clients: usize = self
            .client_live
            .iter()
            .map(|l| l.close_refused(|c| refusal(&client_verifier, c)))
            .sum();
        publish_expiry(&self.client_files, &self.peer_files);
        let closed_peers: usize = self
            .peer_live
            .iter()
            .map(|l| l.close_refused(|c| refusal(&peer_verifier, c)))
            .sum();
        Ok((closed_clients, closed_peers))
    }

    /// Reloads on SIGHUP and whenever the files change, until the task is dropped.
    pub async fn run(self) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot handle SIGHUP; certificates reload only when their files change");
                None
            }
        };
        let mut seen = fingerprint(&[&self.client_files, &self.peer_files]);
        let mut ticker = tokio::time::interval(POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = ticker.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let now = fingerprint(&[&self.client_files, &self.peer_files]);
            if !forced && now == seen {
                continue;
            }
            // A set that failed stays "seen": it is retried when a file changes again or on
            // SIGHUP, not logged every poll.
            seen = now;
            match self.reload() {
                Ok((clients, peers)) => info!(
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    closed_client_connections = clients,
                    closed_peer_connections = peers,
                    "TLS certificates, keys, CA bundle and CRL reloaded"
                ),
                Err(e) => warn!(
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    error = %e,
                    "new TLS files refused; the current ones stay in use"
                ),
            }
        }
    }
}
