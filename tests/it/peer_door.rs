//! The peer port admits only this cluster's members, each as itself: every other caller is
//! refused, at the handshake or by the identity check on the message.

use std::path::Path;

use rampart::raft::PeerClient;
use rampart::raft::peer_proto::{ClusterInfoRequest, PeerRequest, Sender};
use rampart::tls::{Material, TlsFiles, client_config, connect_channel};

use crate::harness::{Member, TestPki, run_ok};

/// Calls the peer port at `url` with `cert`/`key`, trusting `ca`: `ClusterInfo` when `sender` is
/// `None` (a certificate check only), else a forwarded request in the name of `sender`.
fn peer_call(
    url: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    sender: Option<Sender>,
) -> Result<(), (tonic::Code, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let files = TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            ca: ca.to_owned(),
            crl: None,
        };
        let material = Material::load(&files).map_err(|e| (tonic::Code::Unknown, e.to_string()))?;
        let config = client_config(&material).map_err(|e| (tonic::Code::Unknown, e.to_string()))?;
        let channel = connect_channel(url, config)
            .await
            .map_err(|e| (tonic::Code::Unavailable, e.to_string()))?;
        let mut client = PeerClient::new(channel);
        let result = match sender {
            None => client
                .cluster_info(ClusterInfoRequest { from: None })
                .await
                .map(|_| ()),
            Some(from) => client
                .propose(PeerRequest {
                    from: Some(from),
                    body: Vec::new(),
                })
                .await
                .map(|_| ()),
        };
        result.map_err(|s| (s.code(), s.message().to_owned()))
    })
}

#[test]
fn the_peer_port_refuses_everyone_but_the_members_themselves() {
    let pki = TestPki::init(&[
        "--member",
        "rampart-0",
        "--member",
        "rampart-1",
        "--member",
        "rampart-2",
    ]);
    run_ok(&["pki", "revoke", "rampart-2", "--dir", pki.dir_arg()]);
    let other = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let status = member.status().expect("status");
    let cluster_id = status["header"]["cluster_id"].as_u64().expect("cluster id");
    let member_id = status["header"]["member_id"].as_u64().expect("member id");
    let url = member.peer_url.clone();
    let ca = pki.dir.join("ca.crt");
    let cert = |p: &TestPki, kind: &str, name: &str| {
        (
            p.dir.join(format!("{kind}/{name}.crt")),
            p.dir.join(format!("{kind}/{name}.key")),
        )
    };

    // A member certificate of this CA passes the handshake (the control).
    let (c1, k1) = cert(&pki, "members", "rampart-1");
    assert_eq!(peer_call(&url, &ca, &c1, &k1, None), Ok(()));

    // Refused at the handshake: a client certificate, another CA's member, a revoked member.
    let (croot, kroot) = cert(&pki, "clients", "root");
    assert!(
        peer_call(&url, &ca, &croot, &kroot, None).is_err(),
        "client certificate"
    );
    let (co, ko) = cert(&other, "members", "rampart-1");
    assert!(peer_call(&url, &ca, &co, &ko, None).is_err(), "other CA");
    let (c2, k2) = cert(&pki, "members", "rampart-2");
    assert!(
        peer_call(&url, &ca, &c2, &k2, None).is_err(),
        "revoked member"
    );

    // Refused by the identity check: rampart-1 claiming to be rampart-0, a member outside the
    // membership, a member of another cluster.
    let as_member = |cluster_id, member_id| {
        Some(Sender {
            cluster_id,
            member_id,
        })
    };
    let (code, message) = peer_call(&url, &ca, &c1, &k1, as_member(cluster_id, member_id))
        .expect_err("impersonation");
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(
        message.contains("certificate of member rampart-1 was presented for member rampart-0"),
        "{message}"
    );
    let (code, message) =
        peer_call(&url, &ca, &c1, &k1, as_member(cluster_id, 0x1234)).expect_err("not a member");
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(message.contains("not in the membership"), "{message}");
    let (code, message) =
        peer_call(&url, &ca, &c1, &k1, as_member(cluster_id ^ 1, member_id)).expect_err("cluster");
    assert_eq!(code, tonic::Code::FailedPrecondition, "{message}");

    // Plaintext: the port speaks only TLS.
    let plain = url.replace("https://", "http://");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plaintext = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(plain)
            .expect("url")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await;
        match channel {
            Err(_) => Err(()),
            Ok(ch) => PeerClient::new(ch)
                .cluster_info(ClusterInfoRequest { from: None })
                .await
                .map(|_| ())
                .map_err(|_| ()),
        }
    });
    assert!(plaintext.is_err(), "plaintext was served");

    let log = member.log_text();
    assert!(
        log.contains("peer request refused"),
        "refusals are logged:\n{log}"
    );
}
