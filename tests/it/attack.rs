//! The attack matrix, against the real binary: each row is an attack and what must happen
//! instead. A row that is accepted fails the test. (SECURITY.md maps each threat to its row
//! here or to the test that covers it elsewhere.)

use std::process::Command;
use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::harness::{Member, TestPki, mint, run_ok, tool};

/// etcdctl with this certificate (none when `cert` is empty); `@peer` as the first argument
/// aims at the peer port instead of the client port.
fn etcdctl(member: &Member, cert: &str, key: &str, args: &[&str]) -> std::process::Output {
    let (endpoint, args) = match args.split_first() {
        Some((&"@peer", rest)) => (&member.peer_url, rest),
        _ => (&member.client_url, args),
    };
    let identity: Vec<&str> = if cert.is_empty() {
        vec![]
    } else {
        vec!["--cert", cert, "--key", key]
    };
    Command::new(tool("etcdctl").expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--cacert"])
        .arg(member_ca(member))
        .args(identity)
        .args(["--dial-timeout", "2s", "--command-timeout", "3s"])
        .args(args)
        .output()
        .expect("etcdctl runs")
}

fn member_ca(member: &Member) -> String {
    let args = member.etcdctl_args("root");
    args[3].clone()
}

/// Raw bytes through gRPC, to send what no generated client would.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// Calls `path` with `body` as root over mutual TLS; returns the status code.
async fn raw_call(
    member: &Member,
    pki: &TestPki,
    path: &'static str,
    body: Vec<u8>,
) -> tonic::Code {
    let layout = rampart::pki::PkiLayout::new(&pki.dir);
    let files = rampart::tls::TlsFiles::from_pki(&layout, rampart::pki::Kind::Client, "root");
    let material = rampart::tls::Material::load(&files).unwrap();
    let config = rampart::tls::client_config(&material).unwrap();
    let channel = rampart::tls::connect_channel(&member.client_url, config)
        .await
        .expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    match grpc
        .unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// A credential: certificate and key paths.
type Credential = (String, String);
/// An attack: its name, the credential used, the etcdctl command, what must be seen.
type Row<'a> = (&'a str, &'a Credential, Vec<&'a str>, &'a str);

#[test]
fn every_attack_on_the_client_port_is_refused() {
    if tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = TestPki::init(&["--client", "root", "--client", "app", "--client", "mallory"]);
    run_ok(&["pki", "revoke", "mallory", "--dir", pki.dir_arg()]);
    let other = TestPki::init(&[]);
    let member = Member::start_with(
        &pki,
        "rampart-0",
        &["--max-connections", "8", "--max-watchers-per-stream", "3"],
    );
    let root = (pki.path("clients/root.crt"), pki.path("clients/root.key"));
    // Users root (root role) and app; auth on.
    for args in [
        &["user", "add", "root", "--no-password"][..],
        &["user", "add", "app", "--no-password"],
        &["user", "add", "mallory", "--no-password"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "--prefix",
            "app/",
        ],
        &["user", "grant-role", "app", "app"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(&member, &root.0, &root.1, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let not_yet = mint(&pki, "future", |p| {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://rampart/user/root".try_into().unwrap(),
        )];
    });
    let server_only = mint(&pki, "server-only", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://rampart/user/root".try_into().unwrap(),
        )];
    });
    // The CN says root; the identity URI says mallory: the caller is mallory.
    let cn_spoof = mint(&pki, "cn-spoof", |p| {
        p.distinguished_name.push(rcgen::DnType::CommonName, "root");
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://rampart/user/mallory".try_into().unwrap(),
        )];
    });
    let expired = mint(&pki, "expired", |p| {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://rampart/user/root".try_into().unwrap(),
        )];
    });
    let no_cert = (String::new(), String::new());
    let other_ca = (
        other.path("clients/root.crt"),
        other.path("clients/root.key"),
    );
    let revoked = (
        pki.path("clients/mallory.crt"),
        pki.path("clients/mallory.key"),
    );
    // A member certificate is no user.
    let member_cert = (
        pki.path("members/rampart-1.crt"),
        pki.path("members/rampart-1.key"),
    );
    let app = (pki.path("clients/app.crt"), pki.path("clients/app.key"));

    let snapshot_path = pki.tmp.path().join("app.db").to_string_lossy().into_owned();
    // (attack, cert, key, command, what stderr or the member's log must show)
    let rows: Vec<Row> = vec![
        (
            "no client certificate",
            &no_cert,
            vec!["get", "k"],
            "log:presented no certificate",
        ),
        (
            "certificate of another CA",
            &other_ca,
            vec!["get", "k"],
            "log:not signed by this cluster's CA",
        ),
        (
            "expired certificate",
            &expired,
            vec!["get", "k"],
            "log:expired on",
        ),
        (
            "revoked certificate",
            &revoked,
            vec!["get", "k"],
            "log:revoked",
        ),
        (
            "client certificate on the peer port",
            &root,
            vec!["@peer", "get", "k"],
            "log:not a member",
        ),
        (
            "certificate not valid yet",
            &not_yet,
            vec!["get", "k"],
            "log:certificate not valid yet",
        ),
        (
            "server-only EKU as a client",
            &server_only,
            vec!["get", "k"],
            "log:extended key usage",
        ),
        (
            "CN spoof: CN root, URI mallory",
            &cn_spoof,
            vec!["put", "k", "v"],
            "etcdserver: permission denied",
        ),
        (
            "member certificate as a user",
            &member_cert,
            vec!["get", "k"],
            "etcdserver: permission denied",
        ),
        (
            "read outside the permissions",
            &app,
            vec!["get", "secret"],
            "etcdserver: permission denied",
        ),
        (
            "range wider than the permissions",
            &app,
            vec!["get", "app", "--prefix"],
            "etcdserver: permission denied",
        ),
        (
            "write outside the permissions",
            &app,
            vec!["put", "secret", "x"],
            "etcdserver: permission denied",
        ),
        (
            "delete outside the permissions",
            &app,
            vec!["del", "", "--from-key"],
            "etcdserver: permission denied",
        ),
        (
            "txn with a write outside",
            &app,
            vec!["txn"],
            "etcdserver: permission denied",
        ),
        (
            "compaction",
            &app,
            vec!["compaction", "1"],
            "etcdserver: permission denied",
        ),
        (
            "defragmentation",
            &app,
            vec!["defrag"],
            "etcdserver: permission denied",
        ),
        (
            "hash",
            &app,
            vec!["endpoint", "hashkv"],
            "etcdserver: permission denied",
        ),
        (
            "snapshot",
            &app,
            vec!["snapshot", "save", &snapshot_path],
            "etcdserver: permission denied",
        ),
        (
            "member add",
            &app,
            vec!["member", "add", "x", "--peer-urls", "https://127.0.0.1:1"],
            "etcdserver: permission denied",
        ),
        (
            "member remove",
            &app,
            vec!["member", "remove", "1"],
            "etcdserver: permission denied",
        ),
        (
            "move leader",
            &app,
            vec!["move-leader", "1"],
            "etcdserver: permission denied",
        ),
        (
            "(control) alarm list is open to users",
            &app,
            vec!["alarm", "list"],
            "",
        ),
        (
            "user add",
            &app,
            vec!["user", "add", "eve", "--no-password"],
            "etcdserver: permission denied",
        ),
        (
            "grant itself root",
            &app,
            vec!["user", "grant-role", "app", "root"],
            "etcdserver: permission denied",
        ),
        (
            "role change",
            &app,
            vec![
                "role",
                "grant-permission",
                "app",
                "readwrite",
                "",
                "--from-key",
            ],
            "etcdserver: permission denied",
        ),
        (
            "auth disable",
            &app,
            vec!["auth", "disable"],
            "etcdserver: permission denied",
        ),
        (
            "lock outside",
            &app,
            vec!["lock", "secret-lock", "true"],
            "etcdserver: permission denied",
        ),
        (
            "password login",
            &app,
            vec!["--user", "root:x", "get", "app/x"],
            "does not accept passwords",
        ),
    ];
    for (attack, (cert, key), args, expect) in rows {
        let out = if args == ["txn"] {
            crate_txn(&member, cert, key)
        } else {
            etcdctl(&member, cert, key, &args)
        };
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if expect.is_empty() {
            // Reading the alarm list is for everyone: the row proves the user is served.
            assert!(out.status.success(), "{attack}: {stderr}");
            continue;
        }
        assert!(
            !out.status.success(),
            "{attack}: accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        match expect.strip_prefix("log:") {
            Some(reason) => {
                let log = member.log_text();
                assert!(
                    log.contains(reason),
                    "{attack}: the member logs {reason:?}:\n{log}"
                );
            }
            None => assert!(stderr.contains(expect), "{attack}: {stderr}"),
        }
    }
    // The same user is served within its permissions (the rows failed for their reason).
    let ok = etcdctl(&member, &app.0, &app.1, &["put", "app/x", "1"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Malformed protobuf, an unknown service, an oversized request: errors, and the member
        // keeps serving.
        let garbage = vec![0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let code = raw_call(&member, &pki, "/etcdserverpb.KV/Range", garbage).await;
        assert!(
            !matches!(code, tonic::Code::Ok),
            "garbage decoded as a request"
        );
        let code = raw_call(&member, &pki, "/etcdserverpb.Nothing/Here", vec![]).await;
        assert_eq!(code, tonic::Code::Unimplemented);
        let huge = vec![0u8; 4 * 1024 * 1024];
        let code = raw_call(&member, &pki, "/etcdserverpb.KV/Put", huge).await;
        assert!(
            !matches!(code, tonic::Code::Ok),
            "a 4 MiB request was taken"
        );

        // Watchers per stream are bounded.
        let mut c = member.etcd_client().await;
        let mut stream = c.watch("a", None).await.unwrap();
        let _ = stream.message().await.unwrap();
        for k in ["b", "c", "d"] {
            stream.watch(k, None).await.unwrap();
        }
        // Three answers: b and c created, d refused.
        let mut refused = None;
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("answer in time")
                .unwrap()
                .expect("a response");
            if r.canceled() {
                refused = Some(r.cancel_reason().to_owned());
            }
        }
        let reason = refused.expect("the fourth watcher is refused");
        assert!(reason.contains("--max-watchers-per-stream"), "{reason}");

        // Connections are bounded: hold 8, the 9th is closed before its handshake. (A moment
        // first, for the member to see the earlier clients' connections close.)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut held = Vec::new();
        for _ in 0..7 {
            let mut c = member.etcd_client().await;
            c.get("x", None).await.unwrap();
            held.push(c);
        }
        let out = etcdctl(&member, &root.0, &root.1, &["get", "x"]);
        assert!(
            !out.status.success(),
            "a connection beyond --max-connections was served"
        );
        assert!(member.log_text().contains("--max-connections"));
        drop(held);
    });
}

/// A txn whose failure branch writes outside the user's permissions (etcdctl reads it from
/// stdin).
fn crate_txn(member: &Member, cert: &str, key: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(tool("etcdctl").expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &member.client_url, "--cacert"])
        .arg(member_ca(member))
        .args([
            "--cert",
            cert,
            "--key",
            key,
            "--command-timeout",
            "3s",
            "txn",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"value(\"app/x\") = \"1\"\n\nput app/y 2\n\nput secret 3\n\n")
        .unwrap();
    child.wait_with_output().unwrap()
}
