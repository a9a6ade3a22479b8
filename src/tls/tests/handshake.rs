//! Who gets in on which port, and why not: one table per port, plus the acceptor's promises
//! (concurrency, timeouts, reload, a stream that never ends).

use rcgen::ExtendedKeyUsagePurpose;

use super::*;

/// What the server must do with a client.
#[derive(Debug)]
enum Expect {
    /// Handed on, naming this caller.
    Accepted(Option<Caller>),
    /// Refused at the handshake; the server's log line says why (contains this).
    Refused(&'static str),
}

fn user(name: &str) -> Expect {
    Expect::Accepted(Some(Caller::User(name.into())))
}

fn member(name: &str) -> Expect {
    Expect::Accepted(Some(Caller::Member(name.into())))
}

/// Runs each row against `server` and asserts the outcome, the reason and that nothing
/// refused was handed on. Returns the rows that could not run (openssl absent).
async fn check_rows(server: &mut TestServer, logs: &Logs, rows: Vec<(&str, Client, Expect)>) {
    for (case, client, expected) in rows {
        logs.clear();
        let outcome = attempt(server.addr, &client).await;
        match (&expected, outcome) {
            (_, Err(None)) => {
                eprintln!("NOTICE: {case}: skipped, openssl is not installed");
            }
            (Expect::Accepted(caller), Ok(())) => {
                let info = tokio::time::timeout(STEP, server.accepted.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{case}: accepted but no PeerInfo"))
                    .unwrap();
                assert_eq!(&info.caller, caller, "{case}");
                assert!(info.remote_addr.ip().is_loopback(), "{case}");
            }
            (Expect::Refused(reason), Err(Some(client_error))) => {
                let log = logs
                    .wait_for(&["TLS handshake refused", reason])
                    .await
                    .unwrap_or_else(|log| {
                        panic!("{case}: refused ({client_error}) but not for {reason:?}:\n{log}")
                    });
                assert!(log.contains("remote=127.0.0.1:"), "{case}: {log}");
                assert!(
                    server.accepted.try_recv().is_err(),
                    "{case}: a refused client was handed on"
                );
            }
            (_, outcome) => panic!("{case}: expected {expected:?}, got {outcome:?}"),
        }
        assert!(server.is_serving(), "{case}: the incoming stream ended");
    }
}

#[tokio::test]
async fn client_port_admits_valid_client_certificates_only() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = TestPki::new("prod");
    let other = TestPki::new("prod");
    let mut server = TestServer::start(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::AnyClient,
        "prod",
    )
    .await;

    let expired = pki.mint("old", |p| {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::hours(1);
    });
    let server_auth_only = pki.mint("srv", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    let cn_only = pki.mint("alice", |p| p.subject_alt_names.clear());
    let foreign_identity = pki.mint("eve", |p| {
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://staging/user/eve".try_into().unwrap(),
        )];
    });

    let rows = vec![
        (
            "valid client",
            Client::with(&pki.files(Kind::Client, "root")),
            user("root"),
        ),
        (
            "member on the client port",
            Client::with(&pki.files(Kind::Member, "rampart-1")),
            member("rampart-1"),
        ),
        ("cn only, etcd style", Client::with(&cn_only), user("alice")),
        (
            "identity of another cluster: in, but nobody",
            Client::with(&foreign_identity),
            Expect::Accepted(None),
        ),
        (
            "no client certificate",
            Client::without_cert(&pki),
            Expect::Refused("presented no certificate"),
        ),
        // Same cluster name, so the same CA subject: the issuer matches by name, not by key.
        (
            "certificate of another CA",
            Client::with(&pki.trusted_by(other.files(Kind::Client, "root"))),
            Expect::Refused(
                "not signed by this cluster's CA (invalid peer certificate: BadSignature)",
            ),
        ),
        (
            "expired",
            Client::with(&expired),
            Expect::Refused("certificate expired"),
        ),
        (
            "serverAuth only",
            Client::with(&server_auth_only),
            Expect::Refused("extended key usage for client authentication"),
        ),
        (
            "plaintext",
            Client::Plaintext,
            Expect::Refused("the client does not speak TLS"),
        ),
        (
            "TLS 1.2 only",
            Client::OpensslTls12(pki.files(Kind::Client, "root")),
            Expect::Refused("does not offer TLS 1.3"),
        ),
        (
            "valid client after the refusals",
            Client::with(&pki.files(Kind::Client, "root")),
            user("root"),
        ),
    ];
    check_rows(&mut server, &logs, rows).await;
}

#[tokio::test]
async fn peer_port_admits_members_of_its_cluster_only() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = TestPki::new("prod");
    let staging = TestPki::new("staging");
    let mut server = TestServer::start(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::MembersOf {
            cluster: "prod".into(),
        },
        "prod",
    )
    .await;

    let cn_only = pki.mint("rampart-2", |p| p.subject_alt_names.clear());
    let staging_member_by_our_ca = pki.mint("m9", |p| {
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://staging/member/m9".try_into().unwrap(),
        )];
    });

    let rows = vec![
        (
            "member",
            Client::with(&pki.files(Kind::Member, "rampart-1")),
            member("rampart-1"),
        ),
        (
            "client certificate",
            Client::with(&pki.files(Kind::Client, "root")),
            Expect::Refused("user root is not a member of cluster \"prod\""),
        ),
        (
            "cn only",
            Client::with(&cn_only),
            Expect::Refused("user rampart-2 is not a member"),
        ),
        (
            "member of another cluster's PKI",
            Client::with(&pki.trusted_by(staging.files(Kind::Member, "rampart-1"))),
            Expect::Refused(
                "not signed by this cluster's CA (invalid peer certificate: UnknownIssuer)",
            ),
        ),
        (
            "member identity of another cluster, signed by our CA",
            Client::with(&staging_member_by_our_ca),
            Expect::Refused("belongs to cluster \"staging\""),
        ),
        (
            "no client certificate",
            Client::without_cert(&pki),
            Expect::Refused("presented no certificate"),
        ),
        (
            "member after the refusals",
            Client::with(&pki.files(Kind::Member, "rampart-2")),
            member("rampart-2"),
        ),
    ];
    check_rows(&mut server, &logs, rows).await;
}

#[tokio::test]
async fn revoked_client_is_refused_once_the_new_crl_is_published() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = TestPki::new("prod");
    let member_files = pki.files(Kind::Member, "rampart-0");
    let mut server = TestServer::start(
        &Material::load(&member_files).unwrap(),
        ClientPolicy::AnyClient,
        "prod",
    )
    .await;
    let root = Client::with(&pki.files(Kind::Client, "root"));

    let ca = pki::Authority::open(pki.layout.root()).unwrap();
    ca.revoke("root", None).unwrap();
    // Until the new CRL is loaded, the running config still has the old one.
    check_rows(
        &mut server,
        &logs,
        vec![("before reload", root, user("root"))],
    )
    .await;

    let reloaded = server_config(
        &Material::load(&member_files).unwrap(),
        ClientPolicy::AnyClient,
    )
    .unwrap();
    server.config.send(reloaded).unwrap();
    let rows = vec![
        (
            "revoked",
            Client::with(&pki.files(Kind::Client, "root")),
            Expect::Refused("revoked by the cluster's CRL"),
        ),
        (
            "not revoked",
            Client::with(&pki.files(Kind::Member, "rampart-1")),
            member("rampart-1"),
        ),
    ];
    check_rows(&mut server, &logs, rows).await;
}

#[tokio::test]
async fn a_silent_client_does_not_delay_another_handshake() {
    let pki = TestPki::new("prod");
    let mut server = TestServer::start(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::AnyClient,
        "prod",
    )
    .await;
    // Connected, nothing sent; and one that stops half way through a record header.
    let _silent = TcpStream::connect(server.addr).await.unwrap();
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();

    let root = Client::with(&pki.files(Kind::Client, "root"));
    tokio::time::timeout(Duration::from_secs(2), attempt(server.addr, &root))
        .await
        .expect("a good client waited behind silent ones")
        .unwrap();
    assert!(server.accepted.recv().await.is_some());
}

#[tokio::test]
async fn a_handshake_that_does_not_finish_in_time_is_closed() {
    let logs = Logs::default();
    let _guard = logs.install();
    let pki = TestPki::new("prod");
    let server = TestServer::start_with_timeout(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::AnyClient,
        "prod",
        Duration::from_millis(200),
    )
    .await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed = tokio::time::timeout(STEP, silent.read(&mut [0u8; 1])).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {closed:?}"
    );
    logs.wait_for(&[
        "TLS handshake refused",
        "no complete handshake within 200ms",
    ])
    .await
    .unwrap();
    assert!(server.is_serving());
}

#[tokio::test]
async fn many_refused_handshakes_do_not_end_the_incoming_stream() {
    let pki = TestPki::new("prod");
    let other = TestPki::new("prod");
    let mut server = TestServer::start(
        &pki.material(Kind::Member, "rampart-0"),
        ClientPolicy::AnyClient,
        "prod",
    )
    .await;
    let bad = [
        Client::Plaintext,
        Client::without_cert(&pki),
        Client::with(&pki.trusted_by(other.files(Kind::Client, "root"))),
    ];
    // Concurrently, so that refusals overlap.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..4 {
        for client in &bad {
            let (addr, client) = (server.addr, client.clone());
            attempts.spawn(async move { attempt(addr, &client).await });
        }
    }
    while let Some(outcome) = attempts.join_next().await {
        assert!(outcome.unwrap().is_err());
    }
    assert!(server.is_serving());
    attempt(server.addr, &Client::with(&pki.files(Kind::Client, "root")))
        .await
        .unwrap();
    let info = server.accepted.recv().await.unwrap();
    assert_eq!(info.caller, Some(Caller::User("root".into())));
    let root_cert = pki.material(Kind::Client, "root").cert_chain()[0].clone();
    assert_eq!(info.peer_certificate, root_cert);
    assert!(
        server.accepted.try_recv().is_err(),
        "a refused client was handed on"
    );
}
