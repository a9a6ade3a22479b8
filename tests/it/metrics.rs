//! Prometheus `/metrics`: etcd's metric names on the client port and on `--listen-metrics-urls`,
//! over mutual TLS only, with values that follow what the member does.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::harness::{Member, TestPki, free_port, tool, wait_until};

/// `curl` against `url` with (or without) root's certificate: (body, HTTP code).
fn curl(pki: &TestPki, url: &str, with_cert: bool) -> (String, String) {
    let curl = tool("curl").expect("curl");
    let mut cmd = Command::new(curl);
    cmd.args(["-s", "-w", "\n%{http_code}", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.crt"));
    if with_cert {
        cmd.args(["--cert", &pki.path("clients/root.crt")])
            .args(["--key", &pki.path("clients/root.key")]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.rsplit_once('\n') {
        Some((body, code)) => (body.to_owned(), code.to_owned()),
        None => (String::new(), text),
    }
}

/// The value of the sample whose name and labels are exactly `series`, if exported.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape(pki: &TestPki, url: &str) -> String {
    let (body, code) = curl(pki, &format!("{url}/metrics"), true);
    assert_eq!(code, "200", "scrape of {url} failed: {body}");
    body
}

#[test]
fn metrics_follow_the_member_with_etcds_names() {
    if tool("curl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let metrics_url = format!("https://127.0.0.1:{}", free_port());
    let member = Member::start_with(
        &pki,
        "rampart-0",
        &["--listen-metrics-urls", metrics_url.as_str()],
    );
    let ok = |args: &[&str]| {
        let out = member.rampart(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["kv", "put", "a", "1"]);
    ok(&["kv", "put", "b", "2"]);
    ok(&["kv", "get", "a"]);
    // A compaction beyond the current revision fails with OutOfRange.
    assert!(!member.rampart(&["kv", "compact", "1000"]).status.success());
    // A handshake without a certificate, and one with another cluster's certificate.
    let (_, code) = curl(&pki, &format!("{}/metrics", member.client_url), false);
    assert_eq!(code, "000", "answered without a client certificate");
    let other = TestPki::init(&["--cluster-name", "other"]);
    let foreign = member.rampart(&[
        "kv",
        "get",
        "a",
        "--cacert",
        &pki.path("ca.crt"),
        "--cert",
        &other.path("clients/root.crt"),
        "--key",
        &other.path("clients/root.key"),
    ]);
    assert!(!foreign.status.success());

    // A watcher open while scraping.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["watch", "a", "--endpoints", &member.client_url, "--pki-dir"])
        .arg(pki.dir_arg())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch starts");
    let watching = wait_until(Duration::from_secs(10), || {
        sample(
            &scrape(&pki, &member.client_url),
            "etcd_debugging_mvcc_watcher_total",
        ) == Some(1.0)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(watching, "the open watcher is not counted");

    let text = scrape(&pki, &member.client_url);
    for (series, expected) in [
        ("etcd_server_has_leader", 1.0),
        ("etcd_server_is_leader", 1.0),
        ("etcd_server_is_learner", 0.0),
        ("etcd_mvcc_put_total", 2.0),
        ("etcd_debugging_mvcc_current_revision", 3.0),
        ("etcd_server_proposals_pending", 0.0),
        (
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Put\",grpc_code=\"OK\"}",
            2.0,
        ),
        (
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"etcdserverpb.KV\",grpc_method=\"Compact\",grpc_code=\"OutOfRange\"}",
            1.0,
        ),
        (
            "rampart_tls_handshake_refused_total{listener=\"client\",reason=\"no_certificate\"}",
            1.0,
        ),
    ] {
        assert_eq!(
            sample(&text, series),
            Some(expected),
            "{series} in:\n{text}"
        );
    }
    // (The client may retry a refused handshake, so at least one.)
    for series in [
        "rampart_tls_handshake_refused_total{listener=\"client\",reason=\"unknown_ca\"}",
        "etcd_server_leader_changes_seen_total",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_mvcc_db_total_size_in_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v >= 1.0),
            "{series} in:\n{text}"
        );
    }
    // The member's certificates: a year ahead; the CA: ten.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let year = 365.0 * 86400.0;
    for (series, years) in [
        (
            "rampart_certificate_expiry_timestamp_seconds{kind=\"client-server\",name=\"rampart-0\"}",
            1.0,
        ),
        (
            "rampart_certificate_expiry_timestamp_seconds{kind=\"peer\",name=\"rampart-0\"}",
            1.0,
        ),
        (
            "rampart_certificate_expiry_timestamp_seconds{kind=\"ca\",name=\"rampart CA\"}",
            10.0,
        ),
    ] {
        let at = sample(&text, series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
        let left = (at - now) / year;
        assert!((left - years).abs() < 0.1, "{series}: {left} years left");
    }

    // A renewed member certificate shows in the gauges once the member reloads it.
    crate::harness::run_ok(&[
        "pki",
        "renew",
        "member/rampart-0",
        "--dir",
        pki.dir_arg(),
        "--validity",
        "30d",
    ]);
    let renewed = wait_until(Duration::from_secs(20), || {
        let text = scrape(&pki, &member.client_url);
        sample(
            &text,
            "rampart_certificate_expiry_timestamp_seconds{kind=\"client-server\",name=\"rampart-0\"}",
        )
        .is_some_and(|at| ((at - now) / 86400.0 - 30.0).abs() < 1.0)
    });
    assert!(
        renewed,
        "the expiry gauge does not follow a renewed certificate"
    );

    // The watcher is gone with its stream.
    assert!(
        wait_until(Duration::from_secs(10), || {
            sample(
                &scrape(&pki, &member.client_url),
                "etcd_debugging_mvcc_watcher_total",
            ) == Some(0.0)
        }),
        "the closed watcher is still counted"
    );

    // The metrics listener: the same metrics and health, mutual TLS only, no gRPC.
    let text = scrape(&pki, &metrics_url);
    assert_eq!(sample(&text, "etcd_server_has_leader"), Some(1.0));
    assert_eq!(curl(&pki, &format!("{metrics_url}/readyz"), true).1, "200");
    assert_eq!(
        curl(&pki, &format!("{metrics_url}/metrics"), false).1,
        "000"
    );
    let grpc = crate::harness::rampart()
        .args(["kv", "get", "a", "--endpoints", &metrics_url, "--pki-dir"])
        .arg(pki.dir_arg())
        .args(["--command-timeout", "5s"])
        .output()
        .expect("rampart runs");
    assert!(
        !grpc.status.success(),
        "the metrics listener served a gRPC request"
    );
}
