//! `rampart probe livez|readyz|health`: one HTTPS GET of a member's health endpoint with a
//! certificate, for Kubernetes exec probes and scripts.
//!
//! The health endpoints sit on the client port, which takes mutual TLS only. A kubelet
//! `httpGet` probe cannot present a client certificate (and with `scheme: HTTPS` it does not
//! verify the server either), so it would be refused at the handshake. An exec probe runs this
//! command inside the container instead, with the member's own certificate: the probe proves
//! the same TLS path every client takes, and no plaintext port is opened for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{normalize_endpoint, parse_duration};
use super::{CliError, exit};
use crate::pki::{Kind, PkiLayout};
use crate::tls::{Material, TlsFiles};

/// Largest answer read: the health endpoints answer a few bytes.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Which endpoint to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Check {
    /// The process serves its client port (liveness).
    Livez,
    /// The member knows a leader and no alarm is raised (readiness).
    Readyz,
    /// As readyz, answered in etcd's JSON.
    Health,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Livez => "/livez",
            Check::Readyz => "/readyz",
            Check::Health => "/health",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// livez, readyz or health.
    #[arg(value_enum)]
    check: Check,
    /// The member's client URL.
    #[arg(long, default_value = "https://127.0.0.1:2379")]
    endpoint: String,
    /// A `rampart pki` directory (or the one `rampart k8s member-pki` writes in a pod).
    #[arg(long, env = "RAMPART_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// With --pki-dir: present this member's certificate (members/NAME.crt).
    #[arg(long, env = "RAMPART_NAME", conflicts_with = "user")]
    name: Option<String>,
    /// With --pki-dir: present this client's certificate (clients/USER.crt).
    #[arg(long)]
    user: Option<String>,
    /// The CA bundle the member's certificate must chain to.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// The certificate to present.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its key (mode 0600).
    #[arg(long)]
    key: Option<PathBuf>,
    /// How long connecting and answering may take in all (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

impl ProbeArgs {
    fn tls_files(&self) -> anyhow::Result<TlsFiles> {
        let from_pki = match &self.pki_dir {
            None => None,
            Some(dir) => {
                let layout = PkiLayout::new(dir);
                let (kind, name) = match (&self.name, &self.user) {
                    (_, Some(user)) => (Kind::Client, user),
                    (Some(name), None) => (Kind::Member, name),
                    (None, None) => bail!(
                        "--pki-dir needs --name MEMBER (or RAMPART_NAME) or --user CLIENT: \
                         whose certificate to present"
                    ),
                };
                Some(TlsFiles::from_pki(&layout, kind, name))
            }
        };
        let ca = self
            .cacert
            .clone()
            .or_else(|| from_pki.as_ref().map(|f| f.ca.clone()));
        let cert = self
            .cert
            .clone()
            .or_else(|| from_pki.as_ref().map(|f| f.cert.clone()));
        let key = self
            .key
            .clone()
            .or_else(|| from_pki.as_ref().map(|f| f.key.clone()));
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => Ok(TlsFiles {
                cert,
                key,
                ca,
                crl: None,
            }),
            _ => Err(anyhow!(
                "no certificate to present: pass --pki-dir DIR with --name MEMBER or --user CLIENT, \
                 or --cacert, --cert and --key (the client port takes mutual TLS only)"
            )),
        }
    }
}

/// The status code and body of `GET path` on `endpoint`, over HTTP/1.1 in mutual TLS.
async fn get(
    endpoint: &str,
    path: &str,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(u16, String)> {
    let authority = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("{endpoint} is not an https:// URL"))?;
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("{endpoint} has no port; write https://HOST:PORT"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("{endpoint} has an invalid port"))?;
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| anyhow!("{host} is neither a DNS name nor an IP address"))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("{endpoint}: cannot connect"))?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .with_context(|| format!("{endpoint}: TLS handshake failed"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: rampart-probe\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    tls.flush().await?;
    let mut answer = Vec::new();
    // A server may close without close_notify after `Connection: close`: what was read counts.
    let read = (&mut tls)
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await;
    if answer.is_empty() {
        read.with_context(|| format!("{endpoint}: no answer"))?;
        bail!("{endpoint}: the connection closed without an answer");
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("{endpoint}: not an HTTP answer"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

pub(crate) fn run(args: ProbeArgs) -> Result<(), CliError> {
    let endpoint = normalize_endpoint(&args.endpoint)?;
    let material = Material::load(&args.tls_files()?)?;
    let mut config = Arc::unwrap_or_clone(crate::tls::client_config(&material)?);
    // The health endpoints answer HTTP/1.1 beside gRPC; one short request needs no HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = args.check.path();
    let answer = runtime
        .block_on(async {
            tokio::time::timeout(args.timeout, get(&endpoint, path, Arc::new(config))).await
        })
        .map_err(|_| anyhow!("{endpoint}{path}: no answer within {:?}", args.timeout))??;
    match answer {
        (200, body) => {
            println!("{body}");
            Ok(())
        }
        (status, body) => Err(CliError::with_code(
            exit::ERROR,
            anyhow!(
                "{endpoint}{path} answered {status}: {}",
                body.replace('\n', " ")
            ),
        )),
    }
}
