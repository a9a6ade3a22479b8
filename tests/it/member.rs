//! A single member driven by real clients: etcdctl 3.4 and rampart's own CLI, over mutual TLS.

use std::process::Output;

use crate::harness::{Member, TestPki, tool};

fn ctl(member: &Member, args: &[&str]) -> Output {
    member.etcdctl("root", args)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn etcdctl_drives_every_kv_operation() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");

    assert_eq!(out(&ctl(&member, &["put", "foo", "bar"])), "OK\n");
    assert_eq!(out(&ctl(&member, &["put", "foo1", "v1"])), "OK\n");
    assert_eq!(out(&ctl(&member, &["put", "foo2", "v2"])), "OK\n");
    assert_eq!(out(&ctl(&member, &["put", "zoo", "z"])), "OK\n");
    assert_eq!(out(&ctl(&member, &["get", "foo"])), "foo\nbar\n");
    assert_eq!(
        out(&ctl(&member, &["get", "foo", "--prefix", "--keys-only"])),
        "foo\n\nfoo1\n\nfoo2\n\n"
    );
    assert_eq!(
        out(&ctl(&member, &["get", "foo", "--prefix", "--limit", "2"])),
        "foo\nbar\nfoo1\nv1\n"
    );
    assert_eq!(
        out(&ctl(
            &member,
            &[
                "get",
                "foo",
                "--prefix",
                "--order",
                "DESCEND",
                "--sort-by",
                "KEY",
                "--print-value-only"
            ]
        )),
        "v2\nv1\nbar\n"
    );
    assert_eq!(
        out(&ctl(&member, &["get", "foo", "zoo"])),
        "foo\nbar\nfoo1\nv1\nfoo2\nv2\n"
    );
    assert_eq!(
        out(&ctl(&member, &["get", "--from-key", "foo2"])),
        "foo2\nv2\nzoo\nz\n"
    );

    // Revisions: foo was written at revision 2; overwrite and read the past.
    assert_eq!(out(&ctl(&member, &["put", "foo", "baz"])), "OK\n");
    assert_eq!(
        out(&ctl(&member, &["get", "foo", "--rev", "2"])),
        "foo\nbar\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&out(&ctl(&member, &["get", "foo", "-w", "json"]))).unwrap();
    assert_eq!(json["kvs"][0]["version"], 2);
    assert_eq!(json["kvs"][0]["create_revision"], 2);
    assert_eq!(json["kvs"][0]["mod_revision"], 6);
    assert_eq!(json["header"]["revision"], 6);
    assert!(json["header"]["cluster_id"].as_u64().unwrap() > 0);
    assert!(json["header"]["raft_term"].as_u64().unwrap() > 0);

    // Transactions, both branches.
    let txn = |input: &str| member.etcdctl_with_stdin("root", &["txn"], input.as_bytes());
    let t = txn("value(\"foo\") = \"baz\"\n\nput foo qux\nget foo1\n\nput foo never\n\n");
    assert_eq!(out(&t), "SUCCESS\n\nOK\n\nfoo1\nv1\n", "{}", err(&t));
    let t = txn("mod(\"foo\") < \"3\"\n\nput foo never\n\ndel zoo\n\n");
    assert_eq!(out(&t), "FAILURE\n\n1\n", "{}", err(&t));
    assert_eq!(
        out(&ctl(&member, &["get", "foo", "--print-value-only"])),
        "qux\n"
    );

    // Delete.
    assert_eq!(out(&ctl(&member, &["del", "foo", "--prefix"])), "3\n");
    assert_eq!(out(&ctl(&member, &["get", "foo", "--prefix"])), "");

    // Compaction, and etcd's error for reads below it.
    let c = ctl(&member, &["compact", "5"]);
    assert_eq!(out(&c), "compacted revision 5\n", "{}", err(&c));
    let old = ctl(&member, &["get", "foo", "--rev", "3"]);
    assert!(!old.status.success());
    assert!(
        err(&old).contains("etcdserver: mvcc: required revision has been compacted"),
        "{}",
        err(&old)
    );
    let future = ctl(&member, &["get", "foo", "--rev", "1000"]);
    assert!(
        err(&future).contains("required revision is a future revision"),
        "{}",
        err(&future)
    );
}

#[test]
fn etcdctl_endpoint_status_health_and_snapshot() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    ctl(&member, &["put", "k", "v"]);

    let health = ctl(&member, &["endpoint", "health"]);
    assert!(health.status.success(), "{}", err(&health));
    assert!(
        err(&health).contains("is healthy: successfully committed proposal")
            || out(&health).contains("is healthy")
    );

    let status = ctl(&member, &["endpoint", "status", "-w", "table"]);
    let table = out(&status);
    assert!(
        table.contains("ENDPOINT") && table.contains("IS LEADER"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.contains(&member.client_url))
        .expect("a row for the member");
    assert!(row.contains(" 3.5.0 |") && row.contains(" true |"), "{row}");

    let json: serde_json::Value =
        serde_json::from_str(&out(&ctl(&member, &["endpoint", "status", "-w", "json"]))).unwrap();
    let s = &json[0]["Status"];
    assert_eq!(
        s["leader"], s["header"]["member_id"],
        "a single member leads itself"
    );
    assert!(s["raftIndex"].as_u64().unwrap() >= 2);

    let snap = pki.tmp.path().join("backup.db");
    let saved = ctl(&member, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(saved.status.success(), "{}", err(&saved));
    assert!(out(&saved).contains("Snapshot saved at"), "{}", out(&saved));
    let bytes = std::fs::read(&snap).unwrap();
    assert!(bytes.starts_with(b"RAMPART-SNAPSHOT"));
    // etcd's stream format: the content, then its SHA-256.
    use sha2::Digest;
    let (body, hash) = bytes.split_at(bytes.len() - 32);
    assert_eq!(sha2::Sha256::digest(body).as_slice(), hash);
}

#[test]
fn requests_over_the_size_limit_get_etcds_error() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    // Values go through stdin (etcdctl reads it when no value is given): too big for argv.
    let put_from_stdin = |key: &str, value: String| {
        member.etcdctl_with_stdin("root", &["put", key], value.as_bytes())
    };
    let r = put_from_stdin("big", "x".repeat(1024 * 1024 + 600 * 1024)); // 1.6 MiB > 1.5 MiB
    assert!(!r.status.success());
    assert!(
        err(&r).contains("etcdserver: request is too large"),
        "{}",
        err(&r)
    );
    let r = put_from_stdin("fits", "y".repeat(1024 * 1024));
    assert!(r.status.success(), "{}", err(&r));
    assert_eq!(
        out(&ctl(&member, &["get", "fits", "--print-value-only"])).len(),
        1024 * 1024 + 1
    );
}

#[test]
fn rampart_cli_speaks_to_the_member() {
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--endpoints",
            &member.client_url,
            "--pki-dir",
            pki.dir_arg(),
        ]);
        crate::harness::run(&all)
    };
    assert_eq!(out(&run(&["kv", "put", "a", "1"])), "OK\n");
    assert_eq!(out(&run(&["kv", "get", "a"])), "a\n1\n");
    let hash = run(&["endpoint", "hashkv"]);
    assert!(out(&hash).starts_with(&member.client_url), "{}", err(&hash));
    let table = out(&run(&["endpoint", "status", "-w", "table"]));
    assert!(table.contains("RAFT APPLIED INDEX"), "{table}");
    // The Auth API answers (no users yet); an unknown service is UNIMPLEMENTED, never a fake
    // success.
    if tool("etcdctl").is_some() {
        let w = member.etcdctl("root", &["user", "list"]);
        assert!(w.status.success(), "{}", err(&w));
        assert_eq!(out(&w), "");
    }
}

#[test]
fn restart_keeps_data_and_revisions_continue() {
    let pki = TestPki::init(&[]);
    let mut member = Member::start(&pki, "rampart-0");
    let run = |m: &Member, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--endpoints",
            &m.client_url,
            "--pki-dir",
            pki.dir_arg(),
            "-w",
            "json",
        ]);
        crate::harness::run(&all)
    };
    for i in 0..20 {
        assert!(
            run(&member, &["kv", "put", &format!("k{i}"), "v"])
                .status
                .success()
        );
    }
    member.restart();
    let v: serde_json::Value =
        serde_json::from_str(&out(&run(&member, &["kv", "put", "after", "x"]))).unwrap();
    assert_eq!(
        v["header"]["revision"], 22,
        "revisions continue after a restart"
    );
    let v: serde_json::Value =
        serde_json::from_str(&out(&run(&member, &["kv", "get", "k", "--prefix"]))).unwrap();
    assert_eq!(v["count"], 20);
}

#[test]
fn the_backend_quota_raises_nospace_and_refuses_puts_but_not_reads_or_deletes() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    // A quota the empty database already exceeds.
    let member = Member::start_with(&pki, "rampart-0", &["--quota-backend-bytes", "1"]);
    let put = ctl(&member, &["put", "k", "v"]);
    assert!(!put.status.success());
    assert!(
        err(&put).contains("etcdserver: mvcc: database space exceeded"),
        "{}",
        err(&put)
    );
    let alarms = out(&ctl(&member, &["alarm", "list"]));
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    // Reads and deletes still work, as in etcd.
    assert!(ctl(&member, &["get", "k"]).status.success());
    assert!(ctl(&member, &["del", "k"]).status.success());
    let status = out(&ctl(&member, &["endpoint", "status", "-w", "json"]));
    assert!(status.contains("NOSPACE"), "{status}");
}
