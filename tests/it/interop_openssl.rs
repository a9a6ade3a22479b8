//! OpenSSL, an independent X.509 and TLS stack, accepts what rampart issues.

use std::process::Command;
use std::time::Duration;

use crate::harness::{Proc, TestPki, free_port, is_listening, run_ok, tool, wait_until};

#[test]
fn openssl_verify_with_crl_accepts_members_and_clients_and_rejects_the_revoked() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let pki = TestPki::init(&["--client", "root", "--client", "alice"]);
    let verify = |cert: &str| {
        Command::new(&openssl)
            .args([
                "verify",
                "-CAfile",
                &pki.path("ca.crt"),
                "-crl_check",
                "-CRLfile",
                &pki.path("crl.pem"),
            ])
            .arg(pki.path(cert))
            .output()
            .unwrap()
    };
    for cert in [
        "members/rampart-0.crt",
        "members/rampart-1.crt",
        "members/rampart-2.crt",
        "clients/root.crt",
        "clients/alice.crt",
    ] {
        let out = verify(cert);
        assert!(
            out.status.success(),
            "{cert}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Purpose checks: members may serve, clients may not.
    let purpose = |cert: &str, purpose: &str| {
        Command::new(&openssl)
            .args([
                "verify",
                "-CAfile",
                &pki.path("ca.crt"),
                "-purpose",
                purpose,
            ])
            .arg(pki.path(cert))
            .status()
            .unwrap()
            .success()
    };
    assert!(purpose("members/rampart-0.crt", "sslserver"));
    assert!(purpose("members/rampart-0.crt", "sslclient"));
    assert!(purpose("clients/root.crt", "sslclient"));
    assert!(!purpose("clients/root.crt", "sslserver"));

    run_ok(&["pki", "revoke", "alice", "--dir", pki.dir_arg()]);
    let out = verify("clients/alice.crt");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("certificate revoked"), "{text}");
    assert!(
        verify("clients/root.crt").status.success(),
        "others stay valid"
    );
}

/// `openssl s_server` with a member certificate requiring a client certificate; returns the
/// client's combined output and whether it succeeded.
fn handshake(
    pki: &TestPki,
    server_cert: &str,
    client_cert: &str,
    crl: bool,
) -> (bool, String, String) {
    let openssl = tool("openssl").expect("checked by caller");
    let port = free_port();
    let accept = format!("127.0.0.1:{port}");
    let mut server_cmd = Command::new(&openssl);
    server_cmd.args([
        "s_server",
        "-accept",
        &accept,
        "-tls1_3",
        "-naccept",
        "1",
        "-www",
        "-cert",
        &pki.path(&format!("{server_cert}.crt")),
        "-key",
        &pki.path(&format!("{server_cert}.key")),
        "-CAfile",
        &pki.path("ca.crt"),
        "-Verify",
        "1",
        "-verify_return_error",
    ]);
    if crl {
        server_cmd.args(["-crl_check", "-CRL", &pki.path("crl.pem")]);
    }
    let mut server = Proc::spawn(
        "s_server",
        server_cmd,
        pki.tmp.path().join(format!("s_server-{port}.log")),
    );
    assert!(
        wait_until(Duration::from_secs(10), || is_listening(port)),
        "s_server did not start: {}",
        server.log_text()
    );
    let mut client = Command::new(&openssl)
        .args([
            "s_client",
            "-connect",
            &accept,
            "-tls1_3",
            "-ign_eof",
            "-cert",
            &pki.path(&format!("{client_cert}.crt")),
            "-key",
            &pki.path(&format!("{client_cert}.key")),
            "-CAfile",
            &pki.path("ca.crt"),
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = client.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"GET / HTTP/1.0\r\n\r\n");
    }
    let out = client.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let ok = out.status.success()
        && text.contains("Verify return code: 0 (ok)")
        && text.contains("HTTP/1.0 200 ok");
    // s_server exits after its one connection and flushes its side of the story.
    wait_until(Duration::from_secs(5), || !server.is_running());
    (ok, text, server.log_text())
}

#[test]
fn openssl_completes_mutual_tls_1_3_with_member_and_client_certificates() {
    if tool("openssl").is_none() {
        return;
    }
    let pki = TestPki::init(&["--client", "root", "--client", "mallory"]);

    // A client talking to a member.
    let (ok, client, server) = handshake(&pki, "members/rampart-0", "clients/root", true);
    assert!(ok, "client: {client}\nserver: {server}");
    assert!(client.contains("TLSv1.3"), "{client}");
    assert!(
        server.contains("CN = root") || server.contains("CN=root"),
        "server saw the client cert: {server}"
    );

    // A member dialing a peer (member certs are also client certs).
    let (ok, client, server) = handshake(&pki, "members/rampart-1", "members/rampart-2", true);
    assert!(ok, "client: {client}\nserver: {server}");

    // A client certificate cannot serve: the verifying client refuses it.
    let (ok, _, _) = handshake(&pki, "clients/root", "clients/mallory", false);
    assert!(!ok, "a client certificate must not be accepted as a server");

    // A revoked client is refused at the handshake.
    run_ok(&["pki", "revoke", "mallory", "--dir", pki.dir_arg()]);
    let (ok, client, server) = handshake(&pki, "members/rampart-0", "clients/mallory", true);
    assert!(!ok, "revoked client accepted: {client}");
    assert!(server.contains("revoked"), "{server}");
}
