//! Refused at the door: what a member's client port does with callers it must not serve.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::harness::{Member, TestPki, mint, run_ok, tool};

/// An expired client certificate signed by the PKI's CA; returns (cert, key) paths.
fn expired_client(pki: &TestPki) -> (String, String) {
    mint(pki, "old", |p| {
        let now = time::OffsetDateTime::now_utc();
        p.distinguished_name.push(rcgen::DnType::CommonName, "old");
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://rampart/user/old".try_into().unwrap(),
        )];
    })
}

#[test]
fn the_client_port_refuses_every_caller_it_must_not_serve() {
    let Some(etcdctl) = tool("etcdctl") else {
        return;
    };
    let pki = TestPki::init(&["--client", "root", "--client", "mallory"]);
    // Revoked before the member starts (live CRL reload is a separate feature).
    run_ok(&["pki", "revoke", "mallory", "--dir", pki.dir_arg()]);
    let member = Member::start(&pki, "rampart-0");
    let other = TestPki::init(&[]);
    let (old_crt, old_key) = expired_client(&pki);
    let ca = pki.path("ca.crt");

    let get = |extra: &[&str]| {
        Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &member.client_url,
                "--cacert",
                &ca,
                "--dial-timeout",
                "2s",
                "--command-timeout",
                "3s",
            ])
            .args(extra)
            .args(["get", "k"])
            .output()
            .unwrap()
    };
    let ok = get(&[
        "--cert",
        &pki.path("clients/root.crt"),
        "--key",
        &pki.path("clients/root.key"),
    ]);
    assert!(
        ok.status.success(),
        "the valid client is served: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("no client certificate", vec![], "sent no certificate"),
        (
            "a certificate from another CA",
            vec![
                "--cert".into(),
                other.path("clients/root.crt"),
                "--key".into(),
                other.path("clients/root.key"),
            ],
            "not signed by this cluster's CA",
        ),
        (
            "an expired certificate",
            vec!["--cert".into(), old_crt, "--key".into(), old_key],
            "expired",
        ),
        (
            "a revoked certificate",
            vec![
                "--cert".into(),
                pki.path("clients/mallory.crt"),
                "--key".into(),
                pki.path("clients/mallory.key"),
            ],
            "revoked",
        ),
    ];
    for (case, args, reason) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = get(&args);
        assert!(!r.status.success(), "{case}: must be refused");
        assert!(r.stdout.is_empty(), "{case}: nothing served");
        let log = member.log_text();
        assert!(
            log.contains(reason),
            "{case}: the member logs why ({reason}); log:\n{log}"
        );
    }

    // Plaintext: the connection is closed without an HTTP or gRPC answer.
    let addr = member.client_url.trim_start_matches("https://");
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plaintext got an answer"
    );

    // TLS 1.2, even with a valid certificate.
    if let Some(openssl) = tool("openssl") {
        let r = Command::new(openssl)
            .args([
                "s_client",
                "-connect",
                addr,
                "-tls1_2",
                "-cert",
                &pki.path("clients/root.crt"),
                "-key",
                &pki.path("clients/root.key"),
                "-CAfile",
                &ca,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&r.stdout).into_owned() + &String::from_utf8_lossy(&r.stderr);
        assert!(
            !text.contains("Protocol  : TLSv1.2") || text.contains("alert"),
            "TLS 1.2 was accepted: {text}"
        );
        assert!(!r.status.success() || text.contains("alert"), "{text}");
    }
}

#[test]
fn a_member_refuses_to_start_on_bad_configuration_with_one_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let pki = TestPki::init(&[]);
    let loose = pki.tmp.path().join("loose.key");
    std::fs::copy(pki.dir.join("members/rampart-0.key"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = pki.tmp.path().join("data");
    let base = |name: &str| -> Vec<String> {
        vec![
            "serve".into(),
            "--name".into(),
            name.into(),
            "--pki-dir".into(),
            pki.dir_arg().into(),
            "--data-dir".into(),
            data.to_string_lossy().into_owned(),
            "--listen-client-urls".into(),
            format!("https://127.0.0.1:{}", crate::harness::free_port()),
        ]
    };
    let with = |name: &str, extra: &[&str]| {
        let mut v = base(name);
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "plaintext URL",
            with(
                "rampart-0",
                &["--listen-peer-urls", "http://127.0.0.1:2380"],
            ),
            "use https://127.0.0.1:2380",
        ),
        (
            "0644 key",
            with("rampart-0", &["--key-file", loose.to_str().unwrap()]),
            "chmod 600",
        ),
        (
            "another member's certificate",
            with(
                "rampart-0",
                &[
                    "--cert-file",
                    &pki.path("members/rampart-1.crt"),
                    "--key-file",
                    &pki.path("members/rampart-1.key"),
                ],
            ),
            "certificate of member rampart-1",
        ),
        (
            "a client certificate",
            with(
                "rampart-0",
                &[
                    "--cert-file",
                    &pki.path("clients/root.crt"),
                    "--key-file",
                    &pki.path("clients/root.key"),
                ],
            ),
            "not a member certificate",
        ),
        (
            "a missing key file",
            with("rampart-0", &["--key-file", "/nonexistent/rampart.key"]),
            "/nonexistent/rampart.key",
        ),
        ("no such member in the PKI", base("rampart-9"), "rampart-9"),
    ];
    for (case, args, expected) in cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::harness::run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: must not start");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("Error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{case}: one error line, got: {stderr}");
        assert!(
            errors[0].contains(expected),
            "{case}: expected {expected:?} in {stderr}"
        );
        assert!(!data.join("db").exists(), "{case}: no data written");
    }
}
