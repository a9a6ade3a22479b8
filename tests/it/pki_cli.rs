//! `rampart pki` as a user drives it: outputs, and one clear error for each bad input.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{TestPki, run, run_ok, snapshot, tool};

#[test]
fn init_makes_the_local_cluster_pki_and_list_shows_it_valid() {
    let pki = TestPki::init(&[]);
    let json: serde_json::Value = serde_json::from_str(&run_ok(&[
        "pki",
        "list",
        "--dir",
        pki.dir_arg(),
        "-w",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["cluster"], "rampart");
    let certs = json["certificates"].as_array().unwrap();
    let names: Vec<&str> = certs.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["rampart CA", "rampart-0", "rampart-1", "rampart-2", "root"]
    );
    for cert in certs {
        assert_eq!(cert["status"], "valid", "{cert}");
    }
    assert_eq!(certs[1]["identity"], "spiffe://rampart/member/rampart-0");
    assert_eq!(
        certs[1]["sans"],
        serde_json::json!(["DNS:localhost", "IP:127.0.0.1", "IP:::1"])
    );
    assert_eq!(certs[4]["identity"], "spiffe://rampart/user/root");

    let table = run_ok(&["pki", "list", "--dir", pki.dir_arg(), "-w", "table"]);
    assert!(
        table.lines().nth(1).unwrap().contains("DAYS LEFT"),
        "{table}"
    );
    assert!(table.starts_with("+-"), "{table}");
    let simple = run_ok(&["pki", "list", "--dir", pki.dir_arg()]);
    assert_eq!(simple.lines().count(), 5, "{simple}");
    assert!(simple.lines().all(|l| l.ends_with(", valid")), "{simple}");
}

#[test]
fn kubernetes_form_names_members_after_the_statefulset() {
    let pki = TestPki::init(&[
        "--cluster-name",
        "prod",
        "--k8s-statefulset",
        "rampart",
        "--k8s-service",
        "rampart-peer",
        "--k8s-namespace",
        "db",
        "--replicas",
        "5",
    ]);
    let out = run_ok(&[
        "pki",
        "inspect",
        &pki.path("members/rampart-4.crt"),
        "--dir",
        pki.dir_arg(),
    ]);
    assert!(out.contains("spiffe://prod/member/rampart-4"), "{out}");
    assert!(
        out.contains("DNS:rampart-4.rampart-peer.db.svc.cluster.local"),
        "{out}"
    );
    assert!(out.contains("DNS:rampart-peer.db.svc"), "{out}");
    assert!(out.contains("Verdict: valid"), "{out}");
    assert!(pki.dir.join("members/rampart-4.key").exists());
    assert!(!pki.dir.join("members/rampart-5.crt").exists());
}

#[test]
fn issue_revoke_renew_and_inspect_tell_the_truth() {
    let pki = TestPki::init(&[
        "--member",
        "db-1=db-1.example.com,10.0.0.1",
        "--client",
        "root",
    ]);
    let dir = pki.dir_arg();
    run_ok(&["pki", "issue", "client", "alice", "--dir", dir]);
    run_ok(&[
        "pki",
        "issue",
        "member",
        "db-2",
        "--dns",
        "db-2.example.com",
        "--ip",
        "10.0.0.2",
        "--dir",
        dir,
    ]);

    let alice = pki.path("clients/alice.crt");
    let ok = run_ok(&["pki", "inspect", &alice, "--dir", dir]);
    assert!(ok.contains("Verdict: valid"), "{ok}");

    let revoked = run_ok(&[
        "pki",
        "revoke",
        "alice",
        "--dir",
        dir,
        "--reason",
        "key-compromise",
    ]);
    assert!(revoked.contains("CRL number 2"), "{revoked}");
    let out = run(&["pki", "inspect", &alice, "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOT valid")
            && text.contains("revoked on")
            && text.contains("key-compromise"),
        "{text}"
    );

    // Another CA's certificate: "not signed by this cluster's CA".
    let other = TestPki::init(&[]);
    let out = run(&[
        "pki",
        "inspect",
        &other.path("clients/root.crt"),
        "--dir",
        dir,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not signed by this cluster's CA"));

    // Renew gives a new serial and keeps the SANs; list reflects both changes.
    let before = run_ok(&["pki", "list", "--dir", dir, "-w", "json"]);
    run_ok(&["pki", "renew", "db-2", "--dir", dir, "--validity", "30d"]);
    let after: serde_json::Value =
        serde_json::from_str(&run_ok(&["pki", "list", "--dir", dir, "-w", "json"])).unwrap();
    let db2 = after["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "db-2")
        .unwrap();
    assert!(!before.contains(db2["serial"].as_str().unwrap()));
    assert_eq!(
        db2["sans"],
        serde_json::json!(["DNS:db-2.example.com", "IP:10.0.0.2"])
    );
    assert_eq!(
        db2["status"], "expiring",
        "30 days is inside the expiry warning window"
    );
    let alice_row = after["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alice")
        .unwrap();
    assert_eq!(alice_row["status"], "revoked");
}

#[test]
fn bundle_is_a_pkcs12_that_openssl_opens_with_the_password() {
    let Some(openssl) = tool("openssl") else {
        return;
    };
    let pki = TestPki::init(&[]);
    let pw = pki.tmp.path().join("pw");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    let out = pki.tmp.path().join("root.p12");
    run_ok(&[
        "pki",
        "bundle",
        "root",
        "--dir",
        pki.dir_arg(),
        "--out",
        out.to_str().unwrap(),
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let opened = std::process::Command::new(&openssl)
        .args(["pkcs12", "-in", out.to_str().unwrap(), "-nodes", "-passin"])
        .arg(format!("file:{}", pw.display()))
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let pem = String::from_utf8_lossy(&opened.stdout);
    assert!(pem.contains("BEGIN PRIVATE KEY"));
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf and CA");
    assert!(
        pem.contains("CN = root") || pem.contains("CN=root"),
        "{pem}"
    );

    let wrong = std::process::Command::new(&openssl)
        .args([
            "pkcs12",
            "-in",
            out.to_str().unwrap(),
            "-nodes",
            "-passin",
            "pass:wrong",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}

/// A directory nobody (not even root) can create files in.
fn unwritable_dir(tmp: &std::path::Path) -> String {
    if nix_is_root() {
        // sysfs refuses mkdir to everyone.
        "/sys/rampart-unwritable/pki".to_owned()
    } else {
        let d = tmp.join("ro");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o500)).unwrap();
        d.join("pki").to_string_lossy().into_owned()
    }
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn bad_input_gets_one_clear_error_and_changes_nothing() {
    type Setup = fn(&TestPki);
    let corrupt_key: Setup = |p| {
        // The generated key with its body replaced: still PEM-shaped, no longer a key.
        let text = std::fs::read_to_string(p.dir.join("ca.key")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mangled = format!("{}\nAAAA\n{}\n", lines[0], lines[lines.len() - 1]);
        std::fs::write(p.dir.join("ca.key"), mangled).unwrap()
    };
    let loose_key: Setup = |p| {
        std::fs::set_permissions(p.dir.join("ca.key"), std::fs::Permissions::from_mode(0o644))
            .unwrap()
    };
    let nothing: Setup = |_| {};
    // (case, setup, args after `pki` with DIR for the PKI dir, expected text, exit code)
    let cases: Vec<(&str, Setup, Vec<&str>, &str, i32)> = vec![
        (
            "existing PKI",
            nothing,
            vec!["init", "--dir", "DIR"],
            "already holds a PKI",
            1,
        ),
        (
            "bad member name",
            nothing,
            vec!["issue", "member", "Db_1", "--dir", "DIR"],
            "invalid member name \"Db_1\"",
            128,
        ),
        (
            "path in a name",
            nothing,
            vec!["issue", "client", "../../etc/x", "--dir", "DIR"],
            "invalid client name",
            128,
        ),
        (
            "bad SAN",
            nothing,
            vec![
                "issue",
                "member",
                "db-1",
                "--dns",
                "*.example.com",
                "--dir",
                "DIR",
            ],
            "wildcards are not issued",
            128,
        ),
        (
            "IP that is not one",
            nothing,
            vec![
                "issue",
                "member",
                "db-1",
                "--ip",
                "example.com",
                "--dir",
                "DIR",
            ],
            "is not an IP address",
            1,
        ),
        (
            "unknown member to revoke",
            nothing,
            vec!["revoke", "rampart-9", "--dir", "DIR"],
            "no certificate named or numbered \"rampart-9\"",
            1,
        ),
        (
            "unknown reason",
            nothing,
            vec!["revoke", "root", "--reason", "bored", "--dir", "DIR"],
            "unknown revocation reason \"bored\"",
            128,
        ),
        (
            "duplicate client",
            nothing,
            vec!["issue", "client", "root", "--dir", "DIR"],
            "already exists",
            1,
        ),
        (
            "corrupted CA key",
            corrupt_key,
            vec!["issue", "client", "bob", "--dir", "DIR"],
            "not a usable private key",
            3,
        ),
        (
            "0644 CA key",
            loose_key,
            vec!["issue", "client", "bob", "--dir", "DIR"],
            "is readable by others (mode 0644); run chmod 600",
            3,
        ),
        (
            "0644 CA key, revoke",
            loose_key,
            vec!["revoke", "root", "--dir", "DIR"],
            "chmod 600",
            3,
        ),
        (
            "no PKI there",
            nothing,
            vec!["list", "--dir", "DIR/nope"],
            "no PKI in",
            1,
        ),
    ];
    for (case, setup, args, expected, code) in cases {
        let pki = TestPki::init(&[]);
        setup(&pki);
        let before = snapshot(pki.tmp.path());
        let args: Vec<String> = std::iter::once("pki".to_owned())
            .chain(args.iter().map(|a| a.replace("DIR", pki.dir_arg())))
            .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{case}: exit code; stderr: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{case}: one error line, got: {stderr}"
        );
        assert!(stderr.starts_with("Error: "), "{case}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{case}: expected {expected:?} in {stderr}"
        );
        assert!(out.stdout.is_empty(), "{case}: no output on failure");
        assert_eq!(snapshot(pki.tmp.path()), before, "{case}: nothing changed");
    }

    // An unwritable place: the error names the path; nothing is left behind.
    let tmp = tempfile::tempdir().unwrap();
    let dir = unwritable_dir(tmp.path());
    let out = run(&["pki", "init", "--dir", &dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("Error: creating directory"), "{stderr}");
    assert!(
        stderr.contains("rampart-unwritable") || stderr.contains("/ro"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&dir).exists());
}
