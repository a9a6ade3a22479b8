//! Certificates and CRL reloaded without a restart: a revocation closes the revoked client's
//! open connection and watch within seconds, a broken file set is refused while the old one
//! keeps serving, and SIGHUP reloads at once.

use std::time::{Duration, Instant};

use crate::harness::{Member, TestPki, run_ok, wait_until};

/// How long a reload may take to be noticed (the files are polled every 2 s; bound only to
/// avoid hanging).
const LIMIT: Duration = Duration::from_secs(20);

fn served(member: &Member, user: &str) -> bool {
    member
        .etcdctl(user, &["get", "k", "--command-timeout", "3s"])
        .status
        .success()
}

#[test]
fn a_revocation_closes_open_connections_and_watches_within_seconds() {
    if crate::harness::tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = TestPki::init(&["--client", "root", "--client", "mallory"]);
    let member = Member::start(&pki, "rampart-0");
    assert!(served(&member, "mallory"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut mallory = member.etcd_client_as("mallory").await;
        let mut watch = mallory.watch("k", None).await.unwrap();
        let created = watch.message().await.unwrap().expect("created");
        assert!(created.created());

        run_ok(&["pki", "revoke", "mallory", "--dir", pki.dir_arg()]);
        let revoked_at = Instant::now();
        // The open stream ends (an error or its end), without any new event.
        let ended = tokio::time::timeout(LIMIT, async {
            loop {
                match watch.message().await {
                    Ok(Some(r)) if r.events().is_empty() => continue,
                    Ok(Some(r)) => return Err(format!("an event reached a revoked client: {r:?}")),
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        })
        .await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the revoked client's watch stayed open: {ended:?}"
        );
        eprintln!(
            "watch closed {:?} after the revocation",
            revoked_at.elapsed()
        );
        // Its other calls fail too: a new handshake is refused.
        assert!(mallory.get("k", None).await.is_err());
    });
    assert!(!served(&member, "mallory"), "new handshakes are refused");
    assert!(served(&member, "root"), "others are untouched");
    let log = member.log_text();
    assert!(
        log.contains("closing a connection whose certificate is no longer accepted"),
        "{log}"
    );
    assert!(log.contains("TLS certificates, keys, CA bundle and CRL reloaded"));
}

#[test]
fn a_broken_file_set_is_refused_and_the_old_one_keeps_serving() {
    if crate::harness::tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let cert = pki.dir.join("members/rampart-0.crt");
    let good = std::fs::read(&cert).unwrap();

    // Another member's certificate: valid, but not this member's identity.
    std::fs::copy(pki.dir.join("members/rampart-1.crt"), &cert).unwrap();
    assert!(wait_until(LIMIT, || member
        .log_text()
        .contains("new TLS files refused")));
    assert!(served(&member, "root"), "the old material still serves");

    // Not PEM at all.
    std::fs::write(&cert, b"garbage").unwrap();
    assert!(wait_until(LIMIT, || member
        .log_text()
        .matches("new TLS files refused")
        .count()
        >= 2));
    assert!(served(&member, "root"));

    // Restored, then SIGHUP reloads even without a change.
    std::fs::write(&cert, &good).unwrap();
    assert!(wait_until(LIMIT, || member
        .log_text()
        .contains("trigger=\"file change\"")
        && member.log_text().contains("CRL reloaded")));
    let pid = member.pid().expect("running");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(wait_until(LIMIT, || member.log_text().contains("SIGHUP")));
    assert!(served(&member, "root"));
    let log = member.log_text();
    assert!(
        !log.contains("BEGIN"),
        "no key or certificate text in the log"
    );
}
