//! The Lease service seen by real clients: etcdctl 3.4's `lease` commands and the
//! `etcd-client` crate, across restarts and a leader failover.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_client::{
    EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchOptions,
};

use crate::harness::{Cluster, Member, TestPki, tool, wait_until};

const THREE: [&str; 3] = ["rampart-0", "rampart-1", "rampart-2"];
/// Longest wait for something that should happen at once (only to avoid hanging).
const LIMIT: Duration = Duration::from_secs(20);

fn ctl(member: &Member, args: &[&str]) -> std::process::Output {
    member.etcdctl("root", args)
}

fn ok(member: &Member, args: &[&str]) -> String {
    let out = ctl(member, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs etcdctl expecting it to fail, and returns its stderr.
fn fails(member: &Member, args: &[&str]) -> String {
    let out = ctl(member, args);
    assert!(
        !out.status.success(),
        "etcdctl {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `lease grant TTL`: checks the output line and returns the lease ID as etcdctl prints it.
fn grant(member: &Member, ttl: &str, granted_secs: i64) -> String {
    let out = ok(member, &["lease", "grant", ttl]);
    let id = out
        .strip_prefix("lease ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected grant output {out:?}"))
        .to_owned();
    assert_eq!(id.len(), 16, "{out:?}");
    assert_eq!(
        out,
        format!("lease {id} granted with TTL({granted_secs}s)\n")
    );
    id
}

/// Parses `lease ID granted with TTL(Ns), remaining(Ms)REST` into (N, M, REST).
fn time_to_live(out: &str, id: &str) -> (i64, i64, String) {
    let parse = || -> Option<(i64, i64, String)> {
        let rest = out.strip_prefix(&format!("lease {id} granted with TTL("))?;
        let (granted, rest) = rest.split_once("s), remaining(")?;
        let (remaining, rest) = rest.split_once("s)")?;
        Some((
            granted.parse().ok()?,
            remaining.parse().ok()?,
            rest.to_owned(),
        ))
    };
    parse().unwrap_or_else(|| panic!("unexpected timetolive output {out:?}"))
}

/// The member's current revision.
fn revision(member: &Member) -> i64 {
    let out = ok(member, &["get", "any", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["header"]["revision"].as_i64().expect("a revision")
}

fn lease_list(member: &Member) -> BTreeSet<String> {
    let out = ok(member, &["lease", "list"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let ids: BTreeSet<String> = lines.map(str::to_owned).collect();
    assert_eq!(header, format!("found {} leases", ids.len()), "{out:?}");
    ids
}

#[test]
fn etcdctl_grants_attaches_expires_keeps_alive_and_revokes_leases() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");

    let long = grant(&member, "100", 100);
    ok(&member, &["put", "--lease", &long, "k1", "v1"]);
    ok(&member, &["put", "--lease", &long, "k2", "v2"]);
    let (granted, remaining, rest) = time_to_live(
        &ok(&member, &["lease", "timetolive", "--keys", &long]),
        &long,
    );
    assert_eq!(granted, 100);
    assert!((90..=100).contains(&remaining), "remaining {remaining}");
    assert_eq!(rest, ", attached keys([k1 k2])\n");
    assert_eq!(lease_list(&member), BTreeSet::from([long.clone()]));

    // Expiry: a TTL under the minimum (2 s: 1.5 election timeouts) is raised to it; the keys
    // go with the lease, each as a DELETE event.
    let short = grant(&member, "1", 2);
    ok(&member, &["put", "--lease", &short, "e/1", "a"]);
    ok(&member, &["put", "--lease", &short, "e/2", "b"]);
    let before = revision(&member);
    let watch = member.etcdctl_spawn(
        "root",
        &["watch", "--prefix", "e/", "--rev", "1", "--prev-kv"],
    );
    assert!(
        watch.wait_for(LIMIT, |l| l.len() >= 16),
        "expiry events: {:?}\n{}",
        watch.lines(),
        watch.stderr()
    );
    let seen = watch.lines();
    assert_eq!(seen[..6], ["PUT", "e/1", "a", "PUT", "e/2", "b"]);
    // The keys of one lease go in one revision, in no promised order.
    let deletes: BTreeSet<Vec<String>> = seen[6..].chunks(5).map(<[String]>::to_vec).collect();
    let expected: BTreeSet<Vec<String>> = [
        ["DELETE", "e/1", "a", "e/1", ""],
        ["DELETE", "e/2", "b", "e/2", ""],
    ]
    .iter()
    .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    assert_eq!(deletes, expected);
    assert_eq!(revision(&member), before + 1, "one revision deletes both");
    assert_eq!(ok(&member, &["get", "e/", "--prefix"]), "");
    assert_eq!(
        ok(&member, &["lease", "timetolive", &short]),
        format!("lease {short} already expired\n")
    );

    // Keep-alive holds a 2 s lease well past its TTL; once it stops, the lease expires.
    let kept = grant(&member, "2", 2);
    ok(&member, &["put", "--lease", &kept, "ka", "x"]);
    let started = Instant::now();
    let keeper = member.etcdctl_spawn("root", &["lease", "keep-alive", &kept]);
    let renewed = format!("lease {kept} keepalived with TTL(2)");
    assert!(
        keeper.wait_for(LIMIT, |l| started.elapsed() >= Duration::from_secs(5)
            && l.len() >= 3),
        "keep-alive: {:?}\n{}",
        keeper.lines(),
        keeper.stderr()
    );
    assert!(
        keeper.lines().iter().all(|l| *l == renewed),
        "{:?}",
        keeper.lines()
    );
    assert_eq!(ok(&member, &["get", "ka", "--print-value-only"]), "x\n");
    let (granted, remaining, _) =
        time_to_live(&ok(&member, &["lease", "timetolive", &kept]), &kept);
    assert_eq!(granted, 2);
    assert!(remaining > 0, "remaining {remaining}");
    drop(keeper);
    assert!(
        wait_until(LIMIT, || ok(&member, &["get", "ka"]).is_empty()),
        "the lease outlived its keep-alive"
    );

    // Revoke deletes the keys at once; a second revoke finds no lease.
    let revoked = grant(&member, "100", 100);
    ok(&member, &["put", "--lease", &revoked, "r/1", "x"]);
    assert_eq!(
        ok(&member, &["lease", "revoke", &revoked]),
        format!("lease {revoked} revoked\n")
    );
    assert_eq!(ok(&member, &["get", "r/1"]), "");
    let err = fails(&member, &["lease", "revoke", &revoked]);
    assert!(
        err.contains("Error: failed to revoke lease (etcdserver: requested lease not found)"),
        "{err}"
    );
    assert_eq!(lease_list(&member), BTreeSet::from([long.clone()]));
    // The long lease's keys are untouched by the others' expiry and revoke.
    assert_eq!(
        ok(&member, &["get", "k", "--prefix", "--print-value-only"]),
        "v1\nv2\n"
    );
}

#[test]
fn unknown_leases_too_long_ttls_and_chosen_ids_are_checked() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let member = Member::start(&pki, "rampart-0");

    let err = fails(&member, &["put", "--lease", "1234", "k", "v"]);
    assert!(
        err.contains("Error: etcdserver: requested lease not found"),
        "{err}"
    );
    assert_eq!(ok(&member, &["get", "k"]), "", "no key written");

    // A keep-alive of an unknown lease is answered with TTL 0, which clients read as
    // "not found".
    let err = fails(&member, &["lease", "keep-alive", "--once", "1234"]);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );

    let err = fails(&member, &["lease", "grant", "9000000001"]);
    assert!(err.contains("etcdserver: too large lease TTL"), "{err}");
    // The maximum itself is fine.
    let max = grant(&member, "9000000000", 9_000_000_000);
    let (granted, _, _) = time_to_live(&ok(&member, &["lease", "timetolive", &max]), &max);
    assert_eq!(granted, 9_000_000_000);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = member.etcd_client().await;
        let err = c.lease_grant(9_000_000_001, None).await.unwrap_err();
        assert!(
            err.to_string().contains("etcdserver: too large lease TTL"),
            "{err}"
        );

        let chosen = c
            .lease_grant(10, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await
            .unwrap();
        assert_eq!(chosen.id(), 0x1234);
        assert_eq!(chosen.ttl(), 10);
        let err = c
            .lease_grant(20, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("etcdserver: lease already exists"),
            "{err}"
        );
        let ttl = c
            .lease_time_to_live(0x1234, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(ttl.granted_ttl(), 10, "the second grant changed nothing");
    });

    // etcdctl takes lease IDs in hex: the chosen ID 0x1234 now exists.
    ok(&member, &["put", "--lease", "1234", "k", "v"]);
    let (granted, _, rest) = time_to_live(
        &ok(&member, &["lease", "timetolive", "--keys", "1234"]),
        "0000000000001234",
    );
    assert_eq!((granted, rest.as_str()), (10, ", attached keys([k])\n"));
}

#[test]
fn leases_and_their_keys_survive_a_restart() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let mut member = Member::start(&pki, "rampart-0");
    let long = grant(&member, "100", 100);
    ok(&member, &["put", "--lease", &long, "kept", "v"]);
    let short = grant(&member, "3", 3);
    ok(&member, &["put", "--lease", &short, "brief", "v"]);

    member.restart();

    assert_eq!(ok(&member, &["get", "kept", "--print-value-only"]), "v\n");
    let (granted, remaining, rest) = time_to_live(
        &ok(&member, &["lease", "timetolive", "--keys", &long]),
        &long,
    );
    assert_eq!(granted, 100);
    assert!((1..=100).contains(&remaining), "remaining {remaining}");
    assert_eq!(rest, ", attached keys([kept])\n");
    assert!(lease_list(&member).contains(&long));
    assert_eq!(
        ok(&member, &["lease", "keep-alive", "--once", &long]),
        format!("lease {long} keepalived with TTL(100)\n")
    );
    // Deadlines come back with the leases: the short one still expires.
    assert!(
        wait_until(LIMIT, || ok(&member, &["get", "brief"]).is_empty()),
        "the short lease did not expire after the restart"
    );
    assert_eq!(
        ok(&member, &["lease", "timetolive", &short]),
        format!("lease {short} already expired\n")
    );
    assert_eq!(ok(&member, &["get", "kept", "--print-value-only"]), "v\n");
}

/// Keeps lease `id` alive through `client` every 500 ms until `stop`, opening a new
/// keep-alive stream after any error; returns the TTLs the server answered.
async fn keep_alive(
    mut client: etcd_client::Client,
    id: i64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<i64> {
    let mut ttls = Vec::new();
    while !*stop.borrow() {
        let Ok(Ok((mut keeper, mut answers))) =
            tokio::time::timeout(Duration::from_secs(3), client.lease_keep_alive(id)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !*stop.borrow() {
            let renew = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            match tokio::time::timeout(Duration::from_secs(3), renew).await {
                Ok(Ok(Some(answer))) => ttls.push(answer.ttl()),
                // An error, the end of the stream or no answer: start a new stream.
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    ttls
}

#[test]
fn a_kept_lease_outlives_a_leader_kill_and_an_abandoned_one_expires() {
    let pki = TestPki::init(&[]);
    let mut cluster = Cluster::start(&pki, &THREE, &[]);
    let leader = cluster.leader();
    let others: Vec<usize> = (0..THREE.len()).filter(|i| *i != leader).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = cluster.members[others[0]].etcd_client().await;
        let mut w = cluster.members[others[1]].etcd_client().await;
        // Short enough that a failover without keep-alives would outlast it.
        let kept = c.lease_grant(3, None).await.unwrap().id();
        let abandoned = c.lease_grant(5, None).await.unwrap().id();
        c.put("l/kept", "k", Some(PutOptions::new().with_lease(kept)))
            .await
            .unwrap();
        c.put(
            "l/abandoned",
            "a",
            Some(PutOptions::new().with_lease(abandoned)),
        )
        .await
        .unwrap();
        let mut events = w
            .watch("l/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        let created = tokio::time::timeout(LIMIT, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(created.created());

        // Keep-alive through a follower: the follower asks the leader.
        let (mut keeper, mut answers) = c.lease_keep_alive(kept).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let answer = tokio::time::timeout(LIMIT, answers.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((answer.id(), answer.ttl()), (kept, 3));
        drop((keeper, answers));

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let keeping = tokio::spawn(keep_alive(c.clone(), kept, stop_rx));
        let ttl = c.lease_time_to_live(abandoned, None).await.unwrap();
        assert!(
            ttl.ttl() > 0,
            "the abandoned lease is alive before the kill"
        );

        cluster.members[leader].kill();

        // The new leader expires the lease nobody keeps alive...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        let mut deleted = Vec::new();
        while !deleted.contains(&"l/abandoned".to_owned()) {
            let r = tokio::time::timeout_at(deadline, events.message())
                .await
                .expect("the abandoned lease expires after the failover")
                .unwrap()
                .expect("the watch stream stays open");
            for e in r.events() {
                if e.event_type() == EventType::Delete {
                    deleted.push(e.kv().unwrap().key_str().unwrap().to_owned());
                }
            }
        }
        // ...and keeps the one kept alive: its key is still there, well past its TTL.
        assert_eq!(deleted, ["l/abandoned"]);
        let get = w
            .get("l/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let keys: Vec<&str> = get.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, ["l/kept"]);
        let ttl = c.lease_time_to_live(kept, None).await.unwrap();
        assert!(ttl.ttl() > 0 && ttl.granted_ttl() == 3, "{ttl:?}");
        let gone = c.lease_time_to_live(abandoned, None).await.unwrap();
        assert_eq!(gone.ttl(), -1, "{gone:?}");

        stop_tx.send(true).unwrap();
        let ttls = tokio::time::timeout(LIMIT, keeping).await.unwrap().unwrap();
        assert!(!ttls.is_empty());
        assert!(
            ttls.iter().all(|t| *t == 3),
            "a keep-alive found the lease gone: {ttls:?}"
        );
    });
}
