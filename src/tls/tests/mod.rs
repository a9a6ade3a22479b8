//! Real handshakes on 127.0.0.1: a PKI minted per test, servers behind [`TlsIncoming`], and
//! clients that are rustls, raw TCP or `openssl s_client`.

mod grpc;
mod handshake;
mod material;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use super::*;
use crate::pki::{self, InitOptions, Kind, PkiLayout, files};

/// How long any single step of a test may take before it counts as a hang.
const STEP: Duration = Duration::from_secs(5);

/// A PKI made by `pki init` in a temp dir, with its CA key loaded to mint odd certificates.
pub(super) struct TestPki {
    _dir: tempfile::TempDir,
    pub layout: PkiLayout,
    pub cluster: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    /// Members rampart-0..2 (SANs localhost, 127.0.0.1, ::1) and client `root`.
    pub fn new(cluster: &str) -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pki");
        pki::init(&InitOptions {
            dir: root.clone(),
            cluster: cluster.into(),
            members: pki::local_members().unwrap(),
            clients: vec!["root".into()],
            validity_days: None,
            ca_validity_days: None,
            force: false,
        })
        .unwrap();
        let layout = PkiLayout::new(root);
        let (_, ca_der) = pki::read_ca_cert(&layout).unwrap();
        let key_pem = String::from_utf8(files::read(&layout.ca_key()).unwrap()).unwrap();
        let issuer =
            Issuer::from_ca_cert_der(&ca_der, KeyPair::from_pem(&key_pem).unwrap()).unwrap();
        TestPki {
            _dir: dir,
            layout,
            cluster: cluster.into(),
            issuer,
        }
    }

    pub fn files(&self, kind: Kind, name: &str) -> TlsFiles {
        TlsFiles::from_pki(&self.layout, kind, name)
    }

    pub fn material(&self, kind: Kind, name: &str) -> Material {
        Material::load(&self.files(kind, name)).unwrap()
    }

    /// A certificate `pki` would not issue, signed by this CA. Before `tweak`: CN = `name`,
    /// URI SAN `spiffe://<cluster>/user/<name>`, clientAuth, valid from yesterday for 30 days.
    pub fn mint(&self, name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> TlsFiles {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = format!("spiffe://{}/user/{name}", self.cluster);
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let dir = self.layout.root().join("minted");
        if !dir.exists() {
            files::create_private_dir(&dir).unwrap();
        }
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        files::write_atomic(&cert_path, cert.pem().as_bytes(), files::PUBLIC_FILE_MODE).unwrap();
        files::write_atomic(
            &key_path,
            key.serialize_pem().as_bytes(),
            files::PRIVATE_FILE_MODE,
        )
        .unwrap();
        TlsFiles {
            cert: cert_path,
            key: key_path,
            ca: self.layout.ca_cert(),
            crl: Some(self.layout.crl()),
        }
    }

    /// `files` with this PKI's CA as the trusted root: a client of another PKI that still
    /// trusts our server, so only the server's verdict on its certificate is tested.
    pub fn trusted_by(&self, mut files: TlsFiles) -> TlsFiles {
        files.ca = self.layout.ca_cert();
        files.crl = None;
        files
    }
}

/// Log lines captured from the test's thread (and the tasks it polls: tests run on a
/// current-thread runtime), to assert why the server refused a handshake.
#[derive(Clone, Default)]
pub(super) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Waits until a line contains every one of `needles`; returns the log either way.
    pub async fn wait_for(&self, needles: &[&str]) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let text = self.text();
            if text
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                return Ok(text);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(text);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server port behind [`TlsIncoming`] that answers `ok` on every connection it is handed
/// and reports the connection's [`PeerInfo`].
pub(super) struct TestServer {
    pub addr: SocketAddr,
    pub config: watch::Sender<Arc<ServerConfig>>,
    pub accepted: mpsc::UnboundedReceiver<PeerInfo>,
    serving: JoinHandle<()>,
}

impl TestServer {
    pub async fn start(material: &Material, policy: ClientPolicy, cluster: &str) -> TestServer {
        TestServer::start_with_timeout(material, policy, cluster, DEFAULT_HANDSHAKE_TIMEOUT).await
    }

    pub async fn start_with_timeout(
        material: &Material,
        policy: ClientPolicy,
        cluster: &str,
        handshake_timeout: Duration,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (config, config_rx) = watch::channel(server_config(material, policy).unwrap());
        let mut incoming =
            TlsIncoming::with_handshake_timeout(listener, config_rx, cluster, handshake_timeout);
        let (accepted_tx, accepted) = mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Some(conn) = incoming.next().await {
                let mut conn = conn.expect("TlsIncoming never yields an error");
                assert_eq!(conn.alpn_protocol(), Some(ALPN_H2));
                accepted_tx.send(conn.peer_info().clone()).unwrap();
                tokio::spawn(async move {
                    conn.write_all(b"ok").await.ok();
                    conn.flush().await.ok();
                    // Hold the connection until the client is done with it.
                    let _ = conn.read(&mut [0u8; 1]).await;
                });
            }
        });
        TestServer {
            addr,
            config,
            accepted,
            serving,
        }
    }

    /// Whether the incoming stream is still being served (it never ends on its own).
    pub fn is_serving(&self) -> bool {
        !self.serving.is_finished()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// How a test client talks to the server.
#[derive(Clone)]
pub(super) enum Client {
    /// rustls with this config (ALPN h2, TLS 1.3).
    Tls(Arc<ClientConfig>),
    /// Bytes that are not TLS.
    Plaintext,
    /// `openssl s_client -tls1_2` with these files.
    OpensslTls12(TlsFiles),
}

impl Client {
    /// Our client config over `files`.
    pub fn with(files: &TlsFiles) -> Client {
        Client::Tls(client_config(&Material::load(files).unwrap()).unwrap())
    }

    /// TLS 1.3 and ALPN h2 as ours, but no client certificate.
    pub fn without_cert(pki: &TestPki) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let (_, ca) = pki::read_ca_cert(&pki.layout).unwrap();
        roots.add(ca).unwrap();
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Client::Tls(Arc::new(config))
    }
}

/// Connects and reads the server's `ok`: `Ok` means the server handed the connection on.
/// `Err(None)` means the client could not run (openssl absent).
pub(super) async fn attempt(addr: SocketAddr, client: &Client) -> Result<(), Option<String>> {
    match client {
        Client::Tls(config) => {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = tokio::time::timeout(STEP, connector.connect(name, tcp))
                .await
                .map_err(|_| Some("client handshake hung".to_owned()))?
                .map_err(|e| Some(format!("handshake: {e}")))?;
            // TLS 1.3: the client finishes before the server has judged its certificate, so
            // the verdict arrives on the first read (an alert, or the server's `ok`).
            let mut buf = [0u8; 2];
            match tokio::time::timeout(STEP, tls.read_exact(&mut buf)).await {
                Ok(Ok(_)) if &buf == b"ok" => Ok(()),
                Ok(Ok(_)) => Err(Some(format!("unexpected bytes {buf:?}"))),
                Ok(Err(e)) => Err(Some(format!("read: {e}"))),
                Err(_) => Err(Some("no answer".into())),
            }
        }
        Client::Plaintext => {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            match tokio::time::timeout(STEP, tcp.read_to_end(&mut answer)).await {
                Ok(_) if answer.ends_with(b"ok") => Ok(()),
                Ok(_) => Err(Some(format!("closed after {} bytes", answer.len()))),
                Err(_) => Err(Some("no answer".into())),
            }
        }
        Client::OpensslTls12(files) => openssl_tls12(addr, files).await,
    }
}

async fn openssl_tls12(addr: SocketAddr, files: &TlsFiles) -> Result<(), Option<String>> {
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let args = vec![
        "s_client".to_owned(),
        "-connect".into(),
        addr.to_string(),
        "-tls1_2".into(),
        "-alpn".into(),
        "h2".into(),
        "-cert".into(),
        path(&files.cert),
        "-key".into(),
        path(&files.key),
        "-CAfile".into(),
        path(&files.ca),
    ];
    let run = tokio::process::Command::new("openssl")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(STEP, run).await {
        Err(_) => return Err(Some("openssl s_client hung".into())),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Err(None),
        Ok(Err(e)) => panic!("running openssl: {e}"),
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() && stdout.contains("Protocol  : TLSv1.2") {
        Ok(())
    } else {
        Err(Some(format!(
            "openssl exited with {}: {}",
            output.status,
            stderr.trim()
        )))
    }
}
