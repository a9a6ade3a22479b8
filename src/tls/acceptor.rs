//! Our own TLS acceptor: a stream of authenticated connections for tonic's
//! `serve_with_incoming`.
//!
//! One task accepts TCP connections; each connection's handshake runs in its own task under a
//! timeout, so a slow or malicious client delays nobody else. Completed handshakes go through a
//! bounded channel to the stream; refused ones are logged and dropped, never yielded as errors
//! (an error item would make a server stop accepting). Each handshake uses the server config
//! current at accept time, read from a `watch` channel, so certificates and CRL reload without
//! a restart.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tracing::{debug, error, warn};

use super::caller::{Caller, identity};

/// How long a client may take to complete its handshake unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in flight at most; beyond that, accepting waits (the kernel backlog queues).
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Authenticated connections waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a gRPC handler knows about the connection a request came on: tonic puts it in the
/// request extensions (`request.extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// Who the verified client certificate names in our cluster; `None` when it names no
    /// acceptable identity (see [`super::identity`]): refuse such a caller's requests.
    pub caller: Option<Caller>,
    /// The client's leaf certificate, verified by the handshake.
    pub peer_certificate: CertificateDer<'static>,
}

/// An authenticated TLS connection, as [`TlsIncoming`] yields it.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Closes the connection from outside (its certificate was revoked).
    closer: Arc<Closer>,
    /// Keeps the connection listed in its listener's [`LiveConnections`] while it is open.
    _listed: Listed,
}

/// Lets another task close a connection: once set, every read and write of the connection
/// fails, so the HTTP/2 server drops it with all its streams.
#[derive(Debug, Default)]
struct Closer {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Closer {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the connection was closed; else the task is woken when it is.
    fn poll_closed(&self, cx: &Context<'_>) -> Poll<io::Error> {
        self.waker.register(cx.waker());
        if self.closed.load(Ordering::Acquire) {
            Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the peer's certificate is no longer accepted",
            ))
        } else {
            Poll::Pending
        }
    }
}

/// An open connection as a reload sees it.
#[derive(Debug)]
struct LiveEntry {
    remote: SocketAddr,
    certificate: CertificateDer<'static>,
    closer: Arc<Closer>,
}

/// The open connections of a listener, so that when the CA bundle or CRL changes, those whose
/// certificate is no longer accepted are closed at once (a revoked client loses its
/// connection and watch streams, not only its next handshake).
#[derive(Debug, Clone, Default)]
pub struct LiveConnections {
    inner: Arc<Mutex<LiveTable>>,
}

#[derive(Debug, Default)]
struct LiveTable {
    next: u64,
    open: HashMap<u64, LiveEntry>,
}

/// Removes a connection from its table when the connection is dropped.
#[derive(Debug)]
struct Listed {
    table: LiveConnections,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.table.lock().open.remove(&self.id);
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveTable> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(
        &self,
        remote: SocketAddr,
        certificate: CertificateDer<'static>,
    ) -> (Arc<Closer>, Listed) {
        let closer = Arc::new(Closer::default());
        let mut table = self.lock();
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            LiveEntry {
                remote,
                certificate,
                closer: closer.clone(),
            },
        );
        (
            closer,
            Listed {
                table: self.clone(),
                id,
            },
        )
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection whose certificate `refuse` gives a reason to refuse, logging
    /// the reason; returns how many were closed.
    pub fn close_refused(
        &self,
        mut refuse: impl FnMut(&CertificateDer<'static>) -> Option<String>,
    ) -> usize {
        let table = self.lock();
        let mut closed = 0;
        for entry in table.open.values() {
            if let Some(reason) = refuse(&entry.certificate) {
                warn!(remote = %entry.remote, reason = %reason, "closing a connection whose certificate is no longer accepted");
                entry.closer.close();
                closed += 1;
            }
        }
        closed
    }
}

impl TlsConnection {
    /// Who is on the other end.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.info
    }

    /// The negotiated application protocol (`h2` with our configs, unless the client offered
    /// no ALPN at all).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.stream.get_ref().1.alpn_protocol()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.closer.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.closer.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.closer.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// A stream of authenticated connections on one listener, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// It never yields an error and never ends while it is alive: refused handshakes are logged
/// (`TLS handshake refused`, with the remote address and reason) and dropped. Dropping it stops
/// accepting, closes the listener and abandons handshakes in flight.
#[derive(Debug)]
pub struct TlsIncoming {
    ready: mpsc::Receiver<TlsConnection>,
    accept_loop: JoinHandle<()>,
    live: LiveConnections,
}

impl TlsIncoming {
    /// Starts accepting on `listener` with the [`DEFAULT_HANDSHAKE_TIMEOUT`]. Each handshake
    /// uses the config current in `config` when its TCP connection was accepted; `cluster` is
    /// the trust domain in which callers are named.
    ///
    /// Must be called inside a Tokio runtime (it spawns the accept task).
    pub fn new(
        listener: TcpListener,
        config: watch::Receiver<Arc<ServerConfig>>,
        cluster: impl Into<String>,
    ) -> TlsIncoming {
        TlsIncoming::with_handshake_timeout(listener, config, cluster, DEFAULT_HANDSHAKE_TIMEOUT)
    }

    /// As [`TlsIncoming::new`], with a handshake timeout: a connection that has not completed
    /// its handshake after `handshake_timeout` is closed.
    pub fn with_handshake_timeout(
        listener: TcpListener,
        config: watch::Receiver<Arc<ServerConfig>>,
        cluster: impl Into<String>,
        handshake_timeout: Duration,
    ) -> TlsIncoming {
        TlsIncoming::with_limits(
            listener,
            config,
            cluster,
            ListenerLimits {
                listener: "client",
                handshake_timeout,
                max_connections: usize::MAX,
            },
        )
    }

    /// As [`TlsIncoming::with_handshake_timeout`], with at most `limits.max_connections` open
    /// at once: a TCP connection beyond that is closed before its handshake (and the refusal
    /// logged and counted under `limits.listener`).
    pub fn with_limits(
        listener: TcpListener,
        config: watch::Receiver<Arc<ServerConfig>>,
        cluster: impl Into<String>,
        limits: ListenerLimits,
    ) -> TlsIncoming {
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let live = LiveConnections::default();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            config,
            Arc::from(cluster.into()),
            limits,
            ready_tx,
            live.clone(),
        ));
        TlsIncoming {
            ready,
            accept_loop,
            live,
        }
    }

    /// The connections this listener has accepted and that are still open.
    pub fn live(&self) -> LiveConnections {
        self.live.clone()
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().ready.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        // Dropping the accept task drops the listener and its JoinSet, which aborts every
        // handshake in flight.
        self.accept_loop.abort();
    }
}

/// What one listener admits.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// The listener's name in metrics: `client`, `peer` or `metrics`.
    pub listener: &'static str,
    /// A connection without a complete handshake after this long is closed.
    pub handshake_timeout: Duration,
    /// Connections open at once (handshakes included); more are closed at once.
    pub max_connections: usize,
}

/// Logs refused handshakes, at most [`REFUSALS_PER_SECOND`] a second: a flood of bad clients
/// must not flood the log (nor slow the member down writing it). The rest are counted and
/// reported in one line.
#[derive(Debug, Default)]
struct RefusalLog {
    window: Mutex<(Option<std::time::Instant>, u32, u64)>,
}

/// Refused handshakes logged one by one per second, per listener.
const REFUSALS_PER_SECOND: u32 = 10;

impl RefusalLog {
    /// Whether this refusal may be logged on its own line.
    fn admit(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let (start, logged, suppressed) = &mut *w;
        if start.is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1)) {
            if *suppressed > 0 {
                warn!(
                    count = *suppressed,
                    "more TLS handshakes refused (not logged one by one)"
                );
            }
            *start = Some(now);
            *logged = 0;
            *suppressed = 0;
        }
        if *logged < REFUSALS_PER_SECOND {
            *logged += 1;
            true
        } else {
            *suppressed += 1;
            false
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    cluster: Arc<str>,
    limits: ListenerLimits,
    ready: mpsc::Sender<TlsConnection>,
    live: LiveConnections,
) {
    let refusals = Arc::new(RefusalLog::default());
    let mut handshakes = JoinSet::new();
    loop {
        if handshakes.len() >= MAX_PENDING_HANDSHAKES {
            reap(handshakes.join_next().await);
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    if live.len() + handshakes.len() >= limits.max_connections {
                        crate::metrics::get().handshake_refused(limits.listener, "too_many_connections");
                        if refusals.admit() {
                            warn!(remote = %remote, limit = limits.max_connections, "connection refused: the member holds its maximum of connections (--max-connections)");
                        }
                        drop(tcp);
                        continue;
                    }
                    let acceptor = TlsAcceptor::from(config.borrow().clone());
                    handshakes.spawn(handshake(
                        tcp,
                        remote,
                        acceptor,
                        HandshakeContext {
                            listener: limits.listener,
                            timeout: limits.handshake_timeout,
                            cluster: cluster.clone(),
                            ready: ready.clone(),
                            live: live.clone(),
                            refusals: refusals.clone(),
                        },
                    ));
                }
                Err(e) => {
                    warn!(reason = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            done = handshakes.join_next(), if !handshakes.is_empty() => reap(done),
            () = ready.closed() => return,
        }
    }
}

fn reap(done: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = done
        && e.is_panic()
    {
        error!(reason = %e, "a TLS handshake task panicked");
    }
}

/// What a handshake task shares with its listener.
struct HandshakeContext {
    listener: &'static str,
    timeout: Duration,
    cluster: Arc<str>,
    ready: mpsc::Sender<TlsConnection>,
    live: LiveConnections,
    refusals: Arc<RefusalLog>,
}

async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    cx: HandshakeContext,
) {
    let HandshakeContext {
        listener,
        timeout: handshake_timeout,
        cluster,
        ready,
        live,
        refusals,
    } = cx;
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(remote = %remote, reason = %e, "could not set TCP_NODELAY");
    }
    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            crate::metrics::get().handshake_refused(listener, refusal_kind(&e));
            if refusals.admit() {
                warn!(remote = %remote, reason = %refusal_reason(&e), "TLS handshake refused");
            }
            return;
        }
        Err(_) => {
            crate::metrics::get().handshake_refused(listener, "timeout");
            if refusals.admit() {
                warn!(
                    remote = %remote,
                    reason = %format_args!("no complete handshake within {handshake_timeout:?}"),
                    "TLS handshake refused"
                );
            }
            return;
        }
    };
    // The handshake is complete, so this is the certificate the verifier accepted.
    let Some(peer_certificate) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned())
    else {
        crate::metrics::get().handshake_refused(listener, "no_certificate");
        warn!(remote = %remote, reason = "no client certificate", "TLS handshake refused");
        return;
    };
    let caller = match identity(&peer_certificate).and_then(|id| id.caller(&cluster)) {
        Ok(caller) => Some(caller),
        Err(reason) => {
            warn!(
                remote = %remote,
                reason = %reason,
                "client certificate names no usable identity; its requests will be refused"
            );
            None
        }
    };
    debug!(remote = %remote, caller = ?caller, "TLS handshake accepted");
    let (closer, listed) = live.add(remote, peer_certificate.clone());
    let connection = TlsConnection {
        stream,
        closer,
        _listed: listed,
        info: PeerInfo {
            remote_addr: remote,
            caller,
            peer_certificate,
        },
    };
    // Fails only when the server stopped taking connections; the connection is dropped.
    let _ = ready.send(connection).await;
}

/// The handshake error as a short fixed label, for the refusal counter.
fn refusal_kind(error: &io::Error) -> &'static str {
    use rustls::{CertificateError, Error, InvalidMessage, PeerIncompatible};
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    else {
        return "io";
    };
    match rustls_error {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "unknown_ca",
        Error::InvalidCertificate(CertificateError::Revoked) => "revoked",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not_yet_valid",
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => "wrong_usage",
        // Our own verifier's refusals: not a member of this cluster, wrong identity.
        Error::InvalidCertificate(CertificateError::Other(_)) => "identity",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => "not_tls",
        Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired) => {
            "old_tls_version"
        }
        Error::PeerIncompatible(_) | Error::PeerMisbehaved(_) => "incompatible",
        _ => "other",
    }
}

/// The handshake error in words an operator can act on; rustls's own text follows in
/// parentheses. rustls prints our own refusals (certificate error `Other`) with `Debug`, so
/// those print their message instead.
fn refusal_reason(error: &io::Error) -> String {
    use rustls::{CertificateError, Error, InvalidMessage, PeerIncompatible};
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
    else {
        return error.to_string();
    };
    let hint = match rustls_error {
        Error::InvalidCertificate(CertificateError::Other(other)) => {
            return format!("invalid peer certificate: {}", other.0);
        }
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => "the client certificate is not signed by this cluster's CA",
        Error::InvalidCertificate(CertificateError::Revoked) => {
            "the client certificate is revoked by the cluster's CRL"
        }
        Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }) => {
            return format!(
                "the client certificate expired on {}; issue a new one (`rampart pki renew NAME`) (certificate expired)",
                crate::pki::format_time(not_after.as_secs() as i64)
            );
        }
        Error::InvalidCertificate(CertificateError::NotValidYetContext { not_before, .. }) => {
            return format!(
                "the client certificate is not valid before {}; check the clocks of the issuer and this member (certificate not valid yet)",
                crate::pki::format_time(not_before.as_secs() as i64)
            );
        }
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => {
            "the client does not speak TLS (plaintext, http:// ?)"
        }
        Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired) => {
            "the client does not offer TLS 1.3, the only version served"
        }
        Error::NoCertificatesPresented => {
            "the client presented no certificate; a certificate of the cluster CA is required"
        }
        _ => return rustls_error.to_string(),
    };
    format!("{hint} ({rustls_error})")
}
