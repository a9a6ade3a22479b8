//! Backup and restore: `snapshot save` from a running cluster while it takes writes,
//! `snapshot status` on the file, `snapshot restore` into the members of a new cluster that
//! then serve the same data and take new writes.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Cluster, Member, TestPki, initial_cluster, run, tool, wait_until};

const THREE: [&str; 3] = ["rampart-0", "rampart-1", "rampart-2"];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(m: &Member, args: &[&str]) -> String {
    let out = m.rampart(args);
    assert!(
        out.status.success(),
        "rampart {args:?} on {} failed: {}",
        m.name,
        stderr(&out)
    );
    stdout(&out)
}

fn json_of(m: &Member, args: &[&str]) -> Value {
    let text = ok(m, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// `snapshot status -w json` of `file`.
fn status_json(file: &Path) -> Value {
    let out = run(&["snapshot", "status", file.to_str().unwrap(), "-w", "json"]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every key under `k` at revision `rev` (0: current), as `kv get -w json` prints them.
fn kvs_at(m: &Member, rev: i64) -> Value {
    let rev = rev.to_string();
    json_of(
        m,
        &["kv", "get", "k", "--prefix", "--rev", &rev, "-w", "json"],
    )["kvs"]
        .clone()
}

fn hash_at(m: &Member, rev: i64) -> u64 {
    let v = json_of(
        m,
        &[
            "endpoint",
            "hashkv",
            "--rev",
            &rev.to_string(),
            "-w",
            "json",
        ],
    );
    v[0]["HashKV"]["hash"].as_u64().expect("a hash")
}

fn cluster_id(m: &Member) -> u64 {
    m.status().expect("status")["header"]["cluster_id"]
        .as_u64()
        .expect("cluster id")
}

/// `snapshot restore FILE` with `args`, from a fresh process.
fn restore(file: &Path, args: &[&str]) -> Output {
    let mut all = vec!["snapshot", "restore", file.to_str().unwrap()];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn a_snapshot_saved_under_writes_restores_into_a_new_cluster_that_serves_it() {
    let pki = TestPki::init(&[]);
    let source = Cluster::start(&pki, &THREE, &[]);
    let m0 = &source.members[0];
    // Replicated state besides keys: a lease with a key on it, and a role.
    let lease = json_of(m0, &["lease", "grant", "600", "-w", "json"])["ID"]
        .as_i64()
        .expect("lease id");
    let lease_hex = format!("{lease:x}");
    ok(
        m0,
        &["kv", "put", "k-leased", "on a lease", "--lease", &lease_hex],
    );
    ok(m0, &["role", "add", "restored-role"]);

    // Writes run through another member while member 0 streams its snapshot.
    let file = pki.tmp.path().join("backup.snap");
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = &source.members[1];
        let (done, stop) = (&done, &stop);
        s.spawn(move || {
            let started = Instant::now();
            for i in 0..400usize {
                if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                let key = format!("k-{:02}", i % 40);
                let args = if i % 7 == 6 {
                    vec!["kv".to_owned(), "del".to_owned(), key]
                } else {
                    vec!["kv".into(), "put".into(), key, format!("value {i}")]
                };
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(writer, &args);
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
        assert!(
            wait_until(Duration::from_secs(60), || done.load(Ordering::SeqCst)
                >= 30),
            "writes are running"
        );
        let saved = ok(m0, &["snapshot", "save", file.to_str().unwrap()]);
        assert!(saved.contains("Snapshot saved at"), "{saved}");
        let at_save = done.load(Ordering::SeqCst);
        wait_until(Duration::from_secs(60), || {
            done.load(Ordering::SeqCst) >= at_save + 20
        });
        stop.store(true, Ordering::SeqCst);
    });

    let status = status_json(&file);
    let rev = status["revision"].as_i64().expect("revision");
    // At least most of the 30 writes acknowledged before the save: member 0 may apply the
    // last of them (made through member 1) a moment after, and a delete of an absent key
    // makes no revision.
    assert!(
        rev > 20,
        "the snapshot holds the writes made before it: {status}"
    );
    let expected = kvs_at(m0, rev);
    let live = expected.as_array().map_or(0, Vec::len);
    assert!(live > 10, "{expected}");
    assert_eq!(status["totalKey"].as_u64(), Some(live as u64), "{status}");
    let source_hash = hash_at(m0, rev);
    eprintln!(
        "snapshot at revision {rev} holds {live} keys; {} writes ran around it",
        done.load(Ordering::SeqCst)
    );
    let source_cluster = cluster_id(m0);
    drop(source);

    // Three new members on new ports, with a new token, each restored from the same file.
    let mut restored: Vec<Member> = THREE
        .iter()
        .map(|n| {
            let mut m = Member::prepare(&pki, n, &[]);
            m.data_dir = pki.tmp.path().join(format!("{n}.restored"));
            m
        })
        .collect();
    let initial = initial_cluster(&restored);
    for m in &restored {
        let out = restore(
            &file,
            &[
                "--name",
                &m.name,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                "restored-cluster",
                "--initial-advertise-peer-urls",
                &m.peer_url,
                "--data-dir",
                m.data_dir.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "restore {}: {}", m.name, stderr(&out));
        assert!(
            stdout(&out).contains(&format!("revision {rev}")),
            "{}",
            stdout(&out)
        );
    }
    for m in &mut restored {
        m.add_flags(&[
            "--initial-cluster".into(),
            initial.clone(),
            "--initial-cluster-token".into(),
            "restored-cluster".into(),
        ]);
        m.launch();
    }
    for m in &mut restored {
        m.wait_ready();
    }
    let mut cluster = Cluster { members: restored };
    cluster.leader();

    for m in &cluster.members {
        assert_eq!(kvs_at(m, rev), expected, "{}: keys at {rev}", m.name);
        assert_eq!(kvs_at(m, 0), expected, "{}: current keys", m.name);
        assert_eq!(hash_at(m, rev), source_hash, "{}: HashKV at {rev}", m.name);
        assert_ne!(cluster_id(m), source_cluster, "{}: a new cluster", m.name);
        let leases = ok(m, &["lease", "list"]);
        assert!(leases.contains(&format!("{lease:016x}")), "{leases}");
        let roles = ok(m, &["role", "list"]);
        assert!(roles.contains("restored-role"), "{roles}");
    }

    let members = json_of(&cluster.members[0], &["member", "list", "-w", "json"]);
    let mut listed: Vec<(String, Vec<String>)> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let urls = m["peerURLs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (m["name"].as_str().unwrap_or("").to_owned(), urls)
        })
        .collect();
    listed.sort();
    let wanted: Vec<(String, Vec<String>)> = cluster
        .members
        .iter()
        .map(|m| (m.name.clone(), vec![m.peer_url.clone()]))
        .collect();
    assert_eq!(listed, wanted, "exactly the new members: {members}");

    let put = json_of(
        &cluster.members[2],
        &["kv", "put", "k-after-restore", "new", "-w", "json"],
    );
    assert_eq!(put["header"]["revision"].as_i64(), Some(rev + 1), "{put}");
    for m in &cluster.members {
        let v = ok(m, &["kv", "get", "k-after-restore", "--print-value-only"]);
        assert_eq!(v.trim(), "new", "{}", m.name);
    }
    assert_eq!(cluster.agreed_hash(), hash_at(&cluster.members[0], 0));
}

/// The names of entries in `dir` left by a restore that did not finish.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restoring"))
        .collect()
}

#[test]
fn snapshot_status_reports_a_known_snapshot_and_damaged_files_are_refused() {
    let pki = TestPki::init(&[]);
    let m = Member::start(&pki, "rampart-0");
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")] {
        ok(&m, &["kv", "put", k, v]);
    }
    let del = json_of(&m, &["kv", "del", "b", "-w", "json"]);
    let rev = del["header"]["revision"].as_i64().expect("revision");
    let file = pki.tmp.path().join("known.snap");
    ok(&m, &["snapshot", "save", file.to_str().unwrap()]);
    let size = std::fs::metadata(&file).unwrap().len();

    let json = status_json(&file);
    assert_eq!(json["revision"].as_i64(), Some(rev), "{json}");
    assert_eq!(json["totalKey"].as_u64(), Some(2), "a and c: {json}");
    assert_eq!(json["totalSize"].as_u64(), Some(size), "{json}");
    let hash = format!("{:x}", json["hash"].as_u64().expect("hash"));

    let path = file.to_str().unwrap();
    let table = stdout(&run(&["snapshot", "status", path, "-w", "table"]));
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert_eq!(
        cells(lines[1]),
        ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
        "{table}"
    );
    let row = cells(lines[3]);
    assert_eq!(
        row[..3],
        [hash.clone(), rev.to_string(), "2".into()],
        "{table}"
    );
    assert!(row[3].ends_with("kB") || row[3].ends_with(" B"), "{table}");
    let simple = stdout(&run(&["snapshot", "status", path]));
    assert_eq!(simple, format!("{hash}, {rev}, 2, {}\n", row[3]));

    // etcdctl saves the same stream; the file is rampart's format and reads the same.
    if let Some(_etcdctl) = tool("etcdctl") {
        let theirs = pki.tmp.path().join("etcdctl.snap");
        let out = m.etcdctl("root", &["snapshot", "save", theirs.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "etcdctl snapshot save: {}",
            stderr(&out)
        );
        let s = status_json(&theirs);
        assert_eq!(
            (s["revision"].as_i64(), s["totalKey"].as_u64()),
            (Some(rev), Some(2))
        );
    }
    drop(m);

    let bytes = std::fs::read(&file).unwrap();
    let truncated = pki.tmp.path().join("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let flipped = pki.tmp.path().join("flipped.snap");
    let mut altered = bytes.clone();
    altered[bytes.len() / 2] ^= 0x20;
    std::fs::write(&flipped, &altered).unwrap();
    let target = pki.tmp.path().join("never.data");
    let target_arg = target.to_str().unwrap();
    let flags = [
        "--name",
        "rampart-0",
        "--initial-cluster",
        "rampart-0=https://127.0.0.1:2380",
        "--data-dir",
        target_arg,
    ];
    for bad in [&truncated, &flipped] {
        let out = run(&["snapshot", "status", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "status of {}", bad.display());
        let err = stderr(&out);
        assert!(err.contains("is not an intact rampart snapshot"), "{err}");
        assert_eq!(err.lines().count(), 1, "one clear error: {err}");
        assert!(stdout(&out).is_empty());

        let out = restore(bad, &flags);
        assert!(!out.status.success(), "restore of {}", bad.display());
        assert!(
            stderr(&out).contains("is not an intact rampart snapshot"),
            "{}",
            stderr(&out)
        );
        assert!(!target.exists(), "no data dir after a refused restore");
        assert!(leftovers(pki.tmp.path()).is_empty());
    }

    // Into a directory in use: refused, untouched.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let out = restore(&file, &flags);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already exists and is not empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");
    std::fs::remove_dir_all(&target).unwrap();

    // A name the initial cluster does not list: a usage error, nothing written.
    let out = restore(
        &file,
        &[
            "--name",
            "rampart-9",
            "--initial-cluster",
            "rampart-0=https://127.0.0.1:2380",
            "--data-dir",
            target_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(128), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not name this member"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());
    assert!(leftovers(pki.tmp.path()).is_empty());
}
