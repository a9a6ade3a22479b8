//! Dialing a rampart (or etcd) endpoint: a tonic channel over our own TLS client config.
//!
//! tonic's built-in TLS would pick its own rustls settings; we dial TCP and run the handshake
//! with [`super::client_config`] ourselves, so the CLI and the peer transport speak exactly
//! the policy the servers enforce.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::caller::{Caller, caller_from_cert};
use super::config::ALPN_H2;
use super::error::TlsError;

/// How long dialing (TCP connect plus TLS handshake) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `endpoint` (`https://HOST:PORT`, or `HOST:PORT`) now and returns a channel that
/// reconnects by itself, always through `config`. Fails if the first connection fails, so a
/// command can report an unreachable or refusing server at once.
pub async fn connect_channel(
    endpoint: &str,
    config: Arc<ClientConfig>,
) -> Result<Channel, TlsError> {
    https_endpoint(endpoint)?
        .connect_with_connector(TlsDialer::new(config))
        .await
        .map_err(|source| TlsError::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })
}

/// As [`connect_channel`], but connects on first use (for peers, which may be down at start).
/// Fails only on a malformed endpoint.
pub fn lazy_channel(endpoint: &str, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    Ok(https_endpoint(endpoint)?.connect_with_connector_lazy(TlsDialer::new(config)))
}

/// A tonic endpoint for `https://HOST:PORT` (or `HOST:PORT`) with [`DEFAULT_CONNECT_TIMEOUT`],
/// for callers that tune it (keep-alive, timeouts) before connecting it with a [`TlsDialer`].
/// `http://` and other schemes are refused with the `https://` form to use.
pub fn https_endpoint(endpoint: &str) -> Result<Endpoint, TlsError> {
    let invalid = |reason: String| TlsError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let url = if let Some(rest) = endpoint.strip_prefix("http://") {
        return Err(invalid(format!(
            "plaintext is not supported, every port is TLS; use https://{rest}"
        )));
    } else if endpoint.starts_with("https://") {
        endpoint.to_owned()
    } else if endpoint.contains("://") {
        return Err(invalid("the scheme must be https://".into()));
    } else {
        format!("https://{endpoint}")
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("not a URL ({e}); write https://HOST:PORT")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("no host; write https://HOST:PORT".into()));
    }
    if uri.port_u16().is_none() {
        return Err(invalid("no port; write https://HOST:PORT".into()));
    }
    // The TLS is ours (TlsDialer), so tonic must not try its own: hand it the same authority
    // under an `http` scheme. (A tonic built with its TLS features refuses an https URI that
    // comes without its own TLS config.)
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| invalid("no host; write https://HOST:PORT".into()))?;
    let inner: Uri = format!("http://{authority}")
        .parse()
        .map_err(|e| invalid(format!("not a URL ({e}); write https://HOST:PORT")))?;
    Ok(Endpoint::from(inner).connect_timeout(DEFAULT_CONNECT_TIMEOUT))
}

/// The connector tonic calls to open each connection of a channel
/// (`Endpoint::connect_with_connector`): TCP with `TCP_NODELAY`, then a TLS handshake with the
/// given config (server name = the URI's host), then a check that the server selected ALPN
/// `h2`; all within [`DEFAULT_CONNECT_TIMEOUT`].
#[derive(Clone)]
pub struct TlsDialer {
    tls: DialConfig,
    expect: Option<ExpectedMember>,
}

/// The client config of a dialer: fixed, or the current one of a reloadable source (so a
/// reconnect after a certificate reload presents the new certificate and trusts the new CAs).
#[derive(Clone)]
enum DialConfig {
    Fixed(tokio_rustls::TlsConnector),
    Live(tokio::sync::watch::Receiver<Arc<ClientConfig>>),
}

impl DialConfig {
    fn connector(&self) -> tokio_rustls::TlsConnector {
        match self {
            DialConfig::Fixed(c) => c.clone(),
            DialConfig::Live(rx) => tokio_rustls::TlsConnector::from(rx.borrow().clone()),
        }
    }
}

/// The member a peer connection must reach: the server's certificate must name a member of
/// `cluster`, and `name` when it is known (a member added but not yet started has none).
#[derive(Debug, Clone)]
struct ExpectedMember {
    cluster: String,
    name: Option<String>,
}

impl std::fmt::Debug for TlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsDialer").finish_non_exhaustive()
    }
}

impl TlsDialer {
    /// A dialer that uses `config` (normally [`super::client_config`]) for every connection.
    pub fn new(config: Arc<ClientConfig>) -> TlsDialer {
        TlsDialer {
            tls: DialConfig::Fixed(tokio_rustls::TlsConnector::from(config)),
            expect: None,
        }
    }

    /// A dialer for the peer port: besides the usual checks, the server's certificate must be
    /// that of a member of `cluster` — of member `name` when given — or the connection fails.
    pub fn to_member(config: Arc<ClientConfig>, cluster: &str, name: Option<&str>) -> TlsDialer {
        TlsDialer {
            tls: DialConfig::Fixed(tokio_rustls::TlsConnector::from(config)),
            expect: Some(ExpectedMember {
                cluster: cluster.to_owned(),
                name: name.map(str::to_owned),
            }),
        }
    }

    /// As [`TlsDialer::to_member`], each connection made with the config current in `config`.
    pub fn to_member_live(
        config: tokio::sync::watch::Receiver<Arc<ClientConfig>>,
        cluster: &str,
        name: Option<&str>,
    ) -> TlsDialer {
        TlsDialer {
            tls: DialConfig::Live(config),
            expect: Some(ExpectedMember {
                cluster: cluster.to_owned(),
                name: name.map(str::to_owned),
            }),
        }
    }
}

impl tonic::codegen::Service<Uri> for TlsDialer {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.connector();
        let expect = self.expect.clone();
        Box::pin(async move {
            tokio::time::timeout(DEFAULT_CONNECT_TIMEOUT, dial(uri, tls, expect))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TLS connection within {DEFAULT_CONNECT_TIMEOUT:?}"),
                    )
                })?
        })
    }
}

async fn dial(
    uri: Uri,
    tls: tokio_rustls::TlsConnector,
    expect: Option<ExpectedMember>,
) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
    let invalid =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
    // `Uri::host` keeps the brackets of an IPv6 literal.
    let host = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .ok_or_else(|| invalid("no host"))?
        .to_owned();
    let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
    let server_name =
        ServerName::try_from(host.clone()).map_err(|_| invalid("not a DNS name or IP address"))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connect(server_name, tcp).await?;
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{host}:{port} did not select ALPN h2; is it a gRPC server?"),
        ));
    }
    if let Some(expect) = expect {
        check_member(&stream, &expect).map_err(|reason| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{host}:{port} {reason}"),
            )
        })?;
    }
    Ok(TokioIo::new(stream))
}

/// Whether the server of `stream` presented the certificate of the expected member.
fn check_member(stream: &TlsStream<TcpStream>, expect: &ExpectedMember) -> Result<(), String> {
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("presented no certificate")?;
    match (caller_from_cert(cert, &expect.cluster), &expect.name) {
        (Some(Caller::Member(found)), Some(name)) if &found != name => Err(format!(
            "presented the certificate of member {found}, not of {name}; check the peer URLs of {name}"
        )),
        (Some(Caller::Member(_)), _) => Ok(()),
        (other, _) => Err(format!(
            "presented a certificate that is not a member certificate of cluster {} ({}); only members serve the peer port",
            expect.cluster,
            other.map_or("no identity".to_owned(), |c| c.to_string())
        )),
    }
}
