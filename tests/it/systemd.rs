//! The appliance side: `rampart install` into a staging root (paths, modes, idempotence, a
//! protected configuration), the unit checked by `systemd-analyze`, and the sd_notify
//! protocol spoken to a socket of the test's own (PID 1 here is not systemd).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Member, TestPki, run, run_ok, tool};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_writes_every_file_with_its_mode_and_is_idempotent() {
    let pki = TestPki::init(&[]);
    let root = pki.tmp.path().join("root");
    let install = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "--name",
            "rampart-1",
            "--pki-dir",
            pki.dir_arg(),
            "--root",
            root.to_str().unwrap(),
            "--initial-cluster",
            "rampart-0=https://10.0.0.1:2380,rampart-1=https://10.0.0.2:2380,rampart-2=https://10.0.0.3:2380",
            "--advertise-host",
            "10.0.0.2",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };

    // --dry-run lists and writes nothing.
    let dry = install(&["--dry-run"]);
    assert!(dry.status.success());
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listing.contains("members/rampart-1.key (mode 0600, owner rampart"),
        "{listing}"
    );
    assert!(!root.exists());

    let first = install(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("systemctl enable --now rampart"));
    let expected = [
        ("usr/local/bin/rampart", 0o755),
        ("usr/lib/sysusers.d/rampart.conf", 0o644),
        ("usr/lib/tmpfiles.d/rampart.conf", 0o644),
        ("etc/systemd/system/rampart.service", 0o644),
        ("etc/rampart", 0o750),
        ("etc/rampart/rampart.toml", 0o640),
        ("etc/rampart/pki", 0o750),
        ("etc/rampart/pki/ca.crt", 0o644),
        ("etc/rampart/pki/crl.pem", 0o644),
        ("etc/rampart/pki/members/rampart-1.crt", 0o644),
        ("etc/rampart/pki/members/rampart-1.key", 0o600),
        ("var/lib/rampart", 0o700),
    ];
    for (path, want) in expected {
        assert_eq!(mode(&root.join(path)), want, "{path}");
    }
    // Only this member's key: no other member's, no client's, never the CA key.
    for absent in [
        "etc/rampart/pki/ca.key",
        "etc/rampart/pki/members/rampart-0.key",
        "etc/rampart/pki/clients",
    ] {
        assert!(
            !root.join(absent).exists(),
            "{absent} must not be installed"
        );
    }
    let config = std::fs::read_to_string(root.join("etc/rampart/rampart.toml")).unwrap();
    assert!(config.contains("name = \"rampart-1\""));
    assert!(config.contains("advertise-client-urls = \"https://10.0.0.2:2379\""));
    assert!(config.contains("initial-cluster = \"rampart-0=https://10.0.0.1:2380,"));
    let tmpfiles = std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/rampart.conf")).unwrap();
    assert!(tmpfiles.contains("z /etc/rampart/pki/members/rampart-1.key 0600 rampart rampart"));

    // Again: nothing to write.
    let again = install(&[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("(0 files written)"));

    // A configuration changed by hand is kept unless --force.
    std::fs::write(root.join("etc/rampart/rampart.toml"), "# mine\n").unwrap();
    let refused = install(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/rampart/rampart.toml")).unwrap(),
        "# mine\n"
    );
    assert!(install(&["--force"]).status.success());

    // Uninstall keeps configuration and data; --purge removes them.
    run_ok(&["uninstall", "--root", root.to_str().unwrap()]);
    assert!(!root.join("etc/systemd/system/rampart.service").exists());
    assert!(root.join("etc/rampart/rampart.toml").exists());
    assert!(root.join("var/lib/rampart").exists());
    run_ok(&["uninstall", "--root", root.to_str().unwrap(), "--purge"]);
    assert!(!root.join("etc/rampart").exists());
    assert!(!root.join("var/lib/rampart").exists());
}

#[test]
fn the_unit_verifies_and_scores_ok_in_systemd_analyze_security() {
    let Some(analyze) = tool("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let pki = TestPki::init(&[]);
    let root = pki.tmp.path().join("root");
    run_ok(&[
        "install",
        "--name",
        "rampart-0",
        "--pki-dir",
        pki.dir_arg(),
        "--root",
        root.to_str().unwrap(),
    ]);
    // The staging root stands for a system with systemd's own units and /bin/kill.
    let units = root.join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let copied = std::process::Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();

    let verify = std::process::Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("rampart.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && stderr.is_empty(),
        "systemd-analyze verify: {stderr}"
    );

    let security = std::process::Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.display()))
        .arg("rampart.service")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0: {text}");
    let score: f32 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for rampart.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in {text}"));
    assert!(score <= 2.0, "{score}: {text}");
}

#[test]
fn ready_is_sent_only_once_the_client_port_serves_and_stopping_on_shutdown() {
    let pki = TestPki::init(&[]);
    let socket_path = pki.tmp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut member = Member::prepare(&pki, "rampart-0", &[]);
    member.add_env("NOTIFY_SOCKET", socket_path.to_str().unwrap());
    member.add_env("WATCHDOG_USEC", "400000");
    member.launch();

    let started = Instant::now();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains("READY=1") {
                // At the moment of READY the client port answers requests.
                let out = member.rampart(&["kv", "put", "ready", "yes"]);
                assert!(
                    out.status.success(),
                    "READY before serving: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                messages.push(text);
                break;
            }
            messages.push(text);
        }
    }
    assert!(
        messages.iter().any(|m| m.contains("READY=1")),
        "no READY=1: {messages:?}"
    );
    // Watchdog pings at half the interval.
    let mut pings = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until && pings < 2 {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            pings += 1;
        }
    }
    assert!(pings >= 2, "watchdog pings: {pings}");
    member.stop();
    let mut stopping = false;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !stopping {
        if let Ok(n) = socket.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1");
}

#[test]
fn health_endpoints_answer_over_mutual_tls_only() {
    let Some(curl) = tool("curl") else {
        eprintln!("skipped: curl is not installed");
        return;
    };
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let get = |path: &str, with_cert: bool, http1: bool| {
        let mut cmd = std::process::Command::new(&curl);
        cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "5", "--cacert"])
            .arg(pki.path("ca.crt"));
        if with_cert {
            cmd.args(["--cert", &pki.path("clients/root.crt")])
                .args(["--key", &pki.path("clients/root.key")]);
        }
        if http1 {
            cmd.arg("--http1.1");
        }
        let out = cmd
            .arg(format!("{}{path}", member.client_url))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        get("/health", true, false),
        "{\"health\":\"true\",\"reason\":\"\"}\n200"
    );
    assert_eq!(
        get("/health", true, true),
        "{\"health\":\"true\",\"reason\":\"\"}\n200"
    );
    assert_eq!(get("/livez", true, true), "ok\n\n200");
    assert_eq!(get("/readyz", true, false), "ok\n\n200");
    assert!(get("/version", true, false).starts_with("{\"etcdserver\":\"3.5.0\""));
    // No certificate, no answer.
    assert!(!get("/health", false, true).contains("health"));
    assert!(
        member.rampart(&["kv", "put", "k", "v"]).status.success(),
        "gRPC still served"
    );
}
