//! RBAC seen by real clients: etcdctl 3.4's `user`, `role` and `auth` commands set it up, the
//! client certificate names the user, and every kind of request is checked — nested
//! transactions and watches included — on one member, across a restart, and on a 3-member
//! cluster where a revocation applies at once through every member.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp, WatchOptions};

use crate::harness::{Cluster, Member, TestPki, tool};

const DENIED: &str = "etcdserver: permission denied";

fn ctl(member: &Member, user: &str, args: &[&str]) -> std::process::Output {
    member.etcdctl(user, args)
}

fn ok(member: &Member, user: &str, args: &[&str]) -> String {
    let out = ctl(member, user, args);
    assert!(
        out.status.success(),
        "etcdctl as {user} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(member: &Member, user: &str, args: &[&str]) -> String {
    let out = ctl(member, user, args);
    assert!(
        !out.status.success(),
        "etcdctl as {user} {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn denied(member: &Member, user: &str, args: &[&str]) {
    let err = fails(member, user, args);
    assert!(err.contains(DENIED), "etcdctl as {user} {args:?}: {err}");
}

fn pki() -> TestPki {
    TestPki::init(&["--client", "root", "--client", "alice", "--client", "bob"])
}

/// Users root, alice, bob; role `app` with readwrite on prefix `app/` and read on key `cfg`,
/// granted to alice; then auth enabled (etcdctl grants root its role on the way).
fn set_up(m: &Member) {
    let err = fails(m, "root", &["auth", "enable"]);
    assert!(
        err.contains("etcdserver: root user does not exist"),
        "{err}"
    );
    for user in ["root", "alice", "bob"] {
        assert_eq!(
            ok(m, "root", &["user", "add", user, "--no-password"]),
            format!("User {user} created\n")
        );
    }
    let err = fails(
        m,
        "root",
        &["user", "add", "carol", "--new-user-password=secret"],
    );
    assert!(err.contains("does not accept passwords"), "{err}");
    let err = fails(m, "root", &["user", "add", "alice", "--no-password"]);
    assert!(
        err.contains("etcdserver: user name already exists"),
        "{err}"
    );
    assert_eq!(ok(m, "root", &["role", "add", "app"]), "Role app created\n");
    ok(
        m,
        "root",
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "--prefix",
            "app/",
        ],
    );
    ok(
        m,
        "root",
        &["role", "grant-permission", "app", "read", "cfg"],
    );
    assert_eq!(
        ok(m, "root", &["user", "grant-role", "alice", "app"]),
        "Role app is granted to user alice\n"
    );
    let err = fails(m, "root", &["user", "grant-role", "alice", "nope"]);
    assert!(err.contains("etcdserver: role name not found"), "{err}");
    ok(m, "root", &["put", "cfg", "v1"]);
    ok(m, "root", &["put", "secret", "s"]);
    assert_eq!(
        ok(m, "root", &["auth", "enable"]),
        "Authentication Enabled\n"
    );
}

#[test]
fn the_certificate_names_the_user_and_every_request_kind_is_checked() {
    if tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = pki();
    let mut m = Member::start(&pki, "rampart-0");
    set_up(&m);

    // alice: her prefix read-write, cfg read-only, nothing else.
    ok(&m, "alice", &["put", "app/x", "1"]);
    assert_eq!(
        ok(&m, "alice", &["get", "app/x", "--print-value-only"]),
        "1\n"
    );
    assert_eq!(
        ok(&m, "alice", &["get", "cfg", "--print-value-only"]),
        "v1\n"
    );
    ok(&m, "alice", &["get", "app/", "--prefix"]);
    denied(&m, "alice", &["put", "cfg", "x"]);
    denied(&m, "alice", &["get", "secret"]);
    denied(&m, "alice", &["get", "", "--prefix"]);
    denied(&m, "alice", &["del", "secret"]);
    denied(&m, "alice", &["compaction", "1"]);
    denied(&m, "alice", &["defrag"]);
    denied(
        &m,
        "alice",
        &["member", "add", "x", "--peer-urls", "https://127.0.0.1:1"],
    );
    denied(&m, "alice", &["user", "list"]);
    denied(&m, "alice", &["role", "add", "mine"]);
    denied(&m, "alice", &["user", "grant-role", "alice", "root"]);
    denied(&m, "alice", &["auth", "disable"]);
    let snap = pki.tmp.path().join("alice.db");
    denied(&m, "alice", &["snapshot", "save", snap.to_str().unwrap()]);
    denied(&m, "alice", &["endpoint", "hashkv"]);
    // A user may read its own entry and roles.
    assert!(ok(&m, "alice", &["user", "get", "alice"]).contains("Roles: app"));
    let role = ok(&m, "alice", &["role", "get", "app"]);
    assert!(role.contains("[app/, app0) (prefix app/)"), "{role}");
    denied(&m, "alice", &["user", "get", "bob"]);
    // bob has no role; the status of auth is for everyone.
    denied(&m, "bob", &["get", "app/x"]);
    let status = crate::harness::rampart()
        .args([
            "auth",
            "status",
            "--user",
            "bob",
            "--endpoints",
            &m.client_url,
        ])
        .args(["--pki-dir", pki.dir_arg()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with("Authentication Status: true\nAuthRevision: "),
        "{text}"
    );
    // Reads, lists and status stay open for root.
    assert_eq!(ok(&m, "root", &["user", "list"]), "alice\nbob\nroot\n");
    ok(&m, "root", &["endpoint", "status"]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut alice = m.etcd_client_as("alice").await;
        // Both branches, at every depth, are checked before anything runs.
        let nested = Txn::new()
            .when([Compare::version("app/x", CompareOp::Greater, 0)])
            .and_then([
                TxnOp::put("app/from-txn", "1", None),
                TxnOp::txn(Txn::new().or_else([TxnOp::txn(
                    Txn::new().and_then([TxnOp::delete("secret", None)]),
                )])),
            ]);
        let err = alice.txn(nested).await.unwrap_err();
        assert!(err.to_string().contains(DENIED), "{err}");
        let compare_outside = Txn::new()
            .when([Compare::value("secret", CompareOp::Equal, "s")])
            .and_then([TxnOp::put("app/from-txn", "1", None)]);
        let err = alice.txn(compare_outside).await.unwrap_err();
        assert!(err.to_string().contains(DENIED), "{err}");
        let fine = Txn::new()
            .when([Compare::version("app/x", CompareOp::Greater, 0)])
            .and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put(
                "app/from-txn",
                "1",
                None,
            )]))])
            .or_else([TxnOp::get("cfg", None)]);
        assert!(alice.txn(fine).await.unwrap().succeeded());
        let mut root = m.etcd_client().await;
        let untouched = root.get("secret", None).await.unwrap();
        assert_eq!(untouched.kvs()[0].value(), b"s");

        // A watch outside the user's permissions is refused in its created response.
        let mut stream = alice.watch("secret", None).await.unwrap();
        let created = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("created response in time")
            .unwrap()
            .expect("a response");
        assert!(created.created() && created.canceled(), "{created:?}");
        assert_eq!(created.cancel_reason(), DENIED);
        let mut mine = alice
            .watch("app/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let created = mine.message().await.unwrap().expect("a response");
        assert!(created.created() && !created.canceled(), "{created:?}");

        // Revoking a lease deletes its keys: only for someone who may delete each of them.
        let lease = root.lease_grant(60, None).await.unwrap().id();
        root.put(
            "secret-leased",
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
        let err = alice.lease_revoke(lease).await.unwrap_err();
        assert!(err.to_string().contains(DENIED), "{err}");
        root.lease_revoke(lease).await.unwrap();

        // Passwords are not a way in.
        let err = root
            .auth_client()
            .authenticate("root".into(), "x".into())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("does not accept passwords"),
            "{err}"
        );
    });

    // Revoking the permission takes effect on the next request; the state survives a restart.
    ok(
        &m,
        "root",
        &["role", "revoke-permission", "app", "app/", "--prefix"],
    );
    denied(&m, "alice", &["get", "app/x"]);
    m.restart();
    denied(&m, "alice", &["get", "app/x"]);
    assert_eq!(
        ok(&m, "alice", &["get", "cfg", "--print-value-only"]),
        "v1\n"
    );
    let status = m.rampart(&["auth", "status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("Authentication Status: true"), "{status}");
    // Root cannot lock everyone out while auth is on.
    let err = fails(&m, "root", &["user", "delete", "root"]);
    assert!(err.contains("etcdserver: invalid auth management"), "{err}");
    assert_eq!(
        ok(&m, "root", &["auth", "disable"]),
        "Authentication Disabled\n"
    );
    assert_eq!(
        ok(&m, "bob", &["get", "secret", "--print-value-only"]),
        "s\n"
    );

    // rampart's own commands print as etcdctl does.
    let out = m.rampart(&["auth", "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Authentication Status: false"));
    let out = m.rampart(&["role", "get", "app"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Role app\nKV Read:\n\tcfg\nKV Write:\n"
    );
    let out = m.rampart(&["user", "add", "dave"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-password"));
}

#[test]
fn auth_changes_replicate_and_a_revocation_holds_on_every_member_at_once() {
    if tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = pki();
    let cluster = Cluster::start(&pki, &["rampart-0", "rampart-1", "rampart-2"], &[]);
    let [a, b, c] = [
        &cluster.members[0],
        &cluster.members[1],
        &cluster.members[2],
    ];
    set_up(a);
    ok(b, "alice", &["put", "app/k", "1"]);
    ok(c, "alice", &["get", "app/k"]);
    denied(c, "alice", &["put", "secret", "x"]);
    for round in 0..3 {
        // Revoke through one member, then ask another at once: a linearizable read on a
        // follower waits for the revocation, and a write checked against an older state is
        // refused when it commits.
        ok(a, "root", &["user", "revoke-role", "alice", "app"]);
        denied(b, "alice", &["get", "app/k"]);
        denied(c, "alice", &["put", "app/k", &round.to_string()]);
        ok(c, "root", &["user", "grant-role", "alice", "app"]);
        ok(b, "alice", &["put", "app/k", &round.to_string()]);
    }
    assert_eq!(ok(c, "root", &["user", "list"]), "alice\nbob\nroot\n");
}
