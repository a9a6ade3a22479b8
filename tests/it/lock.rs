//! Locks and elections: the v3lock and v3election services (through the etcd-client crate,
//! which calls them) and etcdctl's client-side `lock` and `elect` recipes, each with two
//! competing clients.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use etcd_client::{LockOptions, ProclaimOptions, ResignOptions};

use crate::etcd_client::connect;
use crate::harness::{Member, TestPki, tool};

/// How long any single wait may take before the test gives up (only to avoid hanging).
const LIMIT: Duration = Duration::from_secs(20);

/// A long-running etcdctl whose stdout lines arrive on a channel; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(member: &Member, args: &[&str]) -> Running {
        let mut child = Command::new(tool("etcdctl").expect("etcdctl is installed"))
            .env("ETCDCTL_API", "3")
            .args(member.etcdctl_args("root"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines.recv_timeout(LIMIT).expect("a line from etcdctl")
    }

    fn silent_for(&self, d: Duration) -> bool {
        self.lines.recv_timeout(d).is_err()
    }

    /// SIGTERM: etcdctl releases what it holds (lock, candidacy) before it exits.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn etcdctl_lock_makes_the_second_holder_wait_for_the_first() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let first = Running::start(&member, &["lock", "jobs"]);
    let first_key = first.next_line();
    assert!(first_key.starts_with("jobs/"), "{first_key}");
    let second = Running::start(&member, &["lock", "jobs"]);
    // The second waits while the first holds the lock.
    assert!(second.silent_for(Duration::from_secs(2)));
    first.stop();
    let second_key = second.next_line();
    assert!(second_key.starts_with("jobs/"), "{second_key}");
    assert_ne!(first_key, second_key);
}

#[test]
fn etcdctl_elect_hands_leadership_to_the_next_candidate() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let observer = Running::start(&member, &["elect", "-l", "web"]);
    let alice = Running::start(&member, &["elect", "web", "alice"]);
    assert!(alice.next_line().starts_with("web/"));
    assert_eq!(alice.next_line(), "alice");
    let bob = Running::start(&member, &["elect", "web", "bob"]);
    assert!(bob.silent_for(Duration::from_secs(2)));
    // The observer saw alice (key line, then value line).
    assert!(observer.next_line().starts_with("web/"));
    assert_eq!(observer.next_line(), "alice");
    alice.stop();
    assert!(bob.next_line().starts_with("web/"));
    assert_eq!(bob.next_line(), "bob");
    assert!(observer.next_line().starts_with("web/"));
    assert_eq!(observer.next_line(), "bob");
}

#[test]
fn the_lock_service_serializes_holders_and_frees_the_lock_when_a_lease_expires() {
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a = connect(&pki, &member).await;
        let mut b = connect(&pki, &member).await;
        let lease_a = a.lease_grant(60, None).await.unwrap().id();
        let lease_b = b.lease_grant(60, None).await.unwrap().id();
        let held = a
            .lock("db", Some(LockOptions::new().with_lease(lease_a)))
            .await
            .unwrap();
        assert_eq!(held.key(), format!("db/{lease_a:x}").as_bytes());

        // b waits for a.
        let mut waiting = tokio::spawn(async move {
            let r = b
                .lock("db", Some(LockOptions::new().with_lease(lease_b)))
                .await;
            (b, r)
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut waiting)
                .await
                .is_err(),
            "the second Lock returned while the first holds the lock"
        );
        a.unlock(held.key()).await.unwrap();
        let (mut b, got) = tokio::time::timeout(LIMIT, waiting)
            .await
            .expect("the second Lock returns once the first unlocks")
            .unwrap();
        let got = got.unwrap();
        assert_eq!(got.key(), format!("db/{lease_b:x}").as_bytes());

        // A holder whose lease expires loses the lock: the next waiter gets it.
        let short = a.lease_grant(2, None).await.unwrap().id();
        b.unlock(got.key()).await.unwrap();
        a.lock("db", Some(LockOptions::new().with_lease(short)))
            .await
            .unwrap();
        let waiter = b
            .lock("db", Some(LockOptions::new().with_lease(lease_b)))
            .await;
        assert!(
            waiter.is_ok(),
            "the waiter gets the lock once the holder's lease expires"
        );
        let keys = b
            .get("db/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let keys: Vec<_> = keys.kvs().iter().map(|kv| kv.key().to_vec()).collect();
        assert_eq!(keys, vec![format!("db/{lease_b:x}").into_bytes()]);
    });
}

#[test]
fn the_election_service_campaigns_proclaims_observes_and_resigns() {
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut a = connect(&pki, &member).await;
        let mut b = connect(&pki, &member).await;
        let mut watcher = connect(&pki, &member).await;
        let err = watcher.leader("svc").await.unwrap_err();
        assert!(err.to_string().contains("election: no leader"), "{err}");

        let lease_a = a.lease_grant(60, None).await.unwrap().id();
        let lease_b = b.lease_grant(60, None).await.unwrap().id();
        let mut won = a.campaign("svc", "alpha", lease_a).await.unwrap();
        let leader_a = won.take_leader().expect("a leader key");
        assert_eq!(leader_a.lease(), lease_a);
        let mut observe = watcher.observe("svc").await.unwrap();
        let first = tokio::time::timeout(LIMIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.kv().unwrap().value(), b"alpha");

        let mut campaign_b = tokio::spawn(async move {
            let r = b.campaign("svc", "beta", lease_b).await;
            (b, r)
        });
        assert!(
            tokio::time::timeout(Duration::from_secs(2), &mut campaign_b)
                .await
                .is_err(),
            "a second candidate won while the first leads"
        );

        a.proclaim(
            "alpha-2",
            Some(ProclaimOptions::new().with_leader(leader_a.clone())),
        )
        .await
        .unwrap();
        let proclaimed = tokio::time::timeout(LIMIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(proclaimed.kv().unwrap().value(), b"alpha-2");
        let now = watcher.leader("svc").await.unwrap();
        assert_eq!(now.kv().unwrap().value(), b"alpha-2");

        a.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
            .await
            .unwrap();
        let (_b, won_b) = tokio::time::timeout(LIMIT, campaign_b)
            .await
            .expect("the second candidate wins after the first resigns")
            .unwrap();
        let leader_b = won_b.unwrap().take_leader().expect("a leader key");
        assert_eq!(leader_b.lease(), lease_b);
        let next = tokio::time::timeout(LIMIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.kv().unwrap().value(), b"beta");

        // The old leader can no longer proclaim.
        let err = a
            .proclaim("stale", Some(ProclaimOptions::new().with_leader(leader_a)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("election: not leader"), "{err}");
    });
}
