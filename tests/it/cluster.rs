//! Multi-member clusters on loopback: real processes replicating over the mutual-TLS peer
//! port, driven by etcdctl 3.4 and rampart's CLI.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, Member, TestPki, initial_cluster, tool, wait_until};

const THREE: [&str; 3] = ["rampart-0", "rampart-1", "rampart-2"];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn put(m: &Member, key: &str, value: &str) -> bool {
    m.rampart(&["kv", "put", key, value]).status.success()
}

/// The value of `key` on `m` (`--consistency s` reads the member's own state).
fn get(m: &Member, key: &str, consistency: &str) -> Option<String> {
    let out = m.rampart(&[
        "kv",
        "get",
        key,
        "--print-value-only",
        "--consistency",
        consistency,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn pki_with(members: &[&str]) -> TestPki {
    let mut args = Vec::new();
    for m in members {
        args.push("--member");
        args.push(*m);
    }
    TestPki::init(&args)
}

#[test]
fn three_members_elect_one_leader_and_every_member_takes_writes() {
    let pki = TestPki::init(&[]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    let leader = c.leader();
    for (i, m) in c.members.iter().enumerate() {
        assert!(
            put(m, &format!("k{i}"), &format!("v{i}")),
            "put through {}",
            m.name
        );
    }
    // Each member reads every write, linearizably (followers ask the leader for a read index).
    for m in &c.members {
        for i in 0..3 {
            assert_eq!(
                get(m, &format!("k{i}"), "l").as_deref(),
                Some(format!("v{i}").as_str())
            );
        }
    }
    let status = c.members[0].rampart(&["endpoint", "status", "--cluster", "-w", "table"]);
    let table = text(&status);
    assert_eq!(table.matches("https://127.0.0.1:").count(), 3, "{table}");
    assert_eq!(
        table.matches("|      true |").count(),
        1,
        "one leader: {table}"
    );
    if tool("etcdctl").is_some() {
        let out = c.members[1].etcdctl("root", &["member", "list", "-w", "table"]);
        let list = text(&out);
        assert!(out.status.success(), "{list}");
        for name in THREE {
            assert!(list.contains(name), "{list}");
        }
        assert_eq!(list.matches("| started |").count(), 3, "{list}");
        let out = c.members[2].etcdctl("root", &["get", "k", "--prefix", "--keys-only"]);
        assert_eq!(text(&out).split_whitespace().count(), 3, "{}", text(&out));
    }
    assert!(leader < 3);
    c.agreed_hash();
}

#[test]
fn five_members_form_a_cluster() {
    let names = [
        "rampart-0",
        "rampart-1",
        "rampart-2",
        "rampart-3",
        "rampart-4",
    ];
    let pki = pki_with(&names);
    let mut c = Cluster::start(&pki, &names, &[]);
    c.leader();
    assert!(put(&c.members[4], "five", "yes"));
    assert_eq!(get(&c.members[0], "five", "l").as_deref(), Some("yes"));
    let out = c.members[2].rampart(&["member", "list"]);
    assert_eq!(text(&out).lines().count(), 5, "{}", text(&out));
    c.agreed_hash();
}

#[test]
fn seven_members_survive_three_failures_but_not_four() {
    let names: Vec<String> = (0..7).map(|i| format!("rampart-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = pki_with(&names);
    let mut c = Cluster::start(&pki, &names, &[]);
    let leader = c.leader();
    assert!(put(&c.members[6], "seven", "yes"));
    // Three down (the leader among them): four of seven are still a quorum.
    let mut down = vec![leader];
    down.extend((0..7).filter(|i| *i != leader).take(2));
    for i in &down {
        c.members[*i].kill();
    }
    let up: Vec<usize> = (0..7).filter(|i| !down.contains(i)).collect();
    let wrote = wait_until(Duration::from_secs(30), || {
        put(&c.members[up[0]], "after-three", "yes")
    });
    assert!(wrote, "four of seven members refused a write");
    assert_eq!(
        get(&c.members[up[3]], "after-three", "l").as_deref(),
        Some("yes")
    );
    // A fourth down: three of seven are a minority.
    c.members[up[3]].kill();
    let out = c.members[up[0]].rampart(&["kv", "put", "after-four", "no"]);
    assert!(!out.status.success(), "three of seven acknowledged a write");
}

#[test]
fn killing_the_leader_elects_another_and_no_acknowledged_write_is_lost() {
    let pki = TestPki::init(&[]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    let old = c.leader();
    let followers: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut killed = false;
    // Bounded in count and time: writes through the followers, the leader killed mid-way.
    // Writes fail until a new leader is elected; a failed write is simply not acknowledged.
    for n in 0..2000 {
        if acked.len() >= 60 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        if acked.len() == 20 && !killed {
            c.members[old].kill();
            killed = true;
        }
        let via = &c.members[followers[n % 2]];
        let key = format!("w{n:04}");
        if put(via, &key, &n.to_string()) {
            acked.push(key);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(
        killed && acked.len() >= 60,
        "writes resumed after the leader died: {} acknowledged",
        acked.len()
    );
    let new = c.leader();
    assert_ne!(new, old, "a surviving member leads");
    for i in &followers {
        for key in &acked {
            assert!(
                get(&c.members[*i], key, "l").is_some(),
                "{key} on {}",
                c.members[*i].name
            );
        }
    }
    c.members[old].start_again();
    c.agreed_hash();
    for key in &acked {
        assert!(
            get(&c.members[old], key, "s").is_some(),
            "{key} on the restarted member"
        );
    }
}

#[test]
fn a_stopped_member_catches_up_from_the_log_and_from_a_snapshot() {
    let pki = TestPki::init(&[]);
    let flags = [
        "--snapshot-count",
        "40",
        "--experimental-snapshot-catchup-entries",
        "5",
    ];
    let mut c = Cluster::start(&pki, &THREE, &flags);
    let leader = c.leader();
    let lagger = (leader + 1) % 3;
    let writer = (leader + 2) % 3;

    // From the log: a few entries while it is down. SIGTERM stops a member promptly, although
    // its peers keep their replication connections open.
    let stopping = Instant::now();
    c.members[lagger].stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        stopping.elapsed()
    );
    for i in 0..10 {
        assert!(put(&c.members[writer], &format!("log{i}"), "x"));
    }
    c.members[lagger].start_again();
    c.agreed_hash();
    assert!(
        !c.members[lagger]
            .log_text()
            .contains("installing a snapshot")
    );

    // From a snapshot: more entries than the leader keeps after its snapshots.
    c.members[lagger].stop();
    let out = c.members[writer].rampart(&[
        "bench",
        "put",
        "--total",
        "300",
        "--clients",
        "8",
        "--conns",
        "2",
        "--key-space-size",
        "1000",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    c.members[lagger].start_again();
    c.agreed_hash();
    let log = c.members[lagger].log_text();
    assert!(
        log.contains("installing a snapshot"),
        "caught up from a snapshot:\n{log}"
    );
    assert_eq!(get(&c.members[lagger], "log9", "s").as_deref(), Some("x"));
}

#[test]
fn a_minority_refuses_writes_and_linearizable_reads() {
    let pki = TestPki::init(&[]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    assert!(put(&c.members[0], "before", "1"));
    c.agreed_hash();
    let leader = c.leader();
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            c.members[i].kill();
        }
    }
    let m = &c.members[survivor];
    let out = m.rampart(&["kv", "put", "after", "2"]);
    assert!(!out.status.success(), "a minority acknowledged a write");
    let err = text(&out);
    assert!(
        ["request timed out", "no leader", "deadline exceeded"]
            .iter()
            .any(|e| err.contains(e)),
        "{err}"
    );
    let out = m.rampart(&["kv", "get", "before"]);
    assert!(
        !out.status.success(),
        "a minority answered a linearizable read: {}",
        text(&out)
    );
    // A serializable read is the member's own (possibly stale) view, as etcd's.
    assert_eq!(get(m, "before", "s").as_deref(), Some("1"));
    assert_eq!(get(m, "after", "s"), None);
}

#[test]
fn a_learner_is_added_and_promoted_and_a_member_removed() {
    let Some(_) = tool("etcdctl") else {
        return;
    };
    let pki = pki_with(&["rampart-0", "rampart-1", "rampart-2", "rampart-3"]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    for i in 0..5 {
        assert!(put(&c.members[0], &format!("pre{i}"), "x"));
    }
    let mut learner = Member::prepare(&pki, "rampart-3", &[]);
    let add = c.members[1].etcdctl(
        "root",
        &[
            "member",
            "add",
            "rampart-3",
            "--learner",
            &format!("--peer-urls={}", learner.peer_url),
        ],
    );
    let added = text(&add);
    assert!(
        add.status.success() && added.contains("added to cluster"),
        "{added}"
    );
    assert!(
        added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{added}"
    );

    let initial = format!(
        "{},rampart-3={}",
        initial_cluster(&c.members),
        learner.peer_url
    );
    learner.add_flags(&[
        "--initial-cluster".into(),
        initial,
        "--initial-cluster-state".into(),
        "existing".into(),
    ]);
    learner.launch();
    learner.wait_ready();

    let refused = learner.rampart(&["kv", "put", "nope", "1"]);
    assert!(
        text(&refused).contains("rpc not supported for learner"),
        "{}",
        text(&refused)
    );
    assert!(wait_until(Duration::from_secs(30), || get(
        &learner, "pre4", "s"
    )
    .is_some()));

    let id = c.members[0]
        .rampart(&["member", "list", "-w", "json"])
        .stdout;
    let list: serde_json::Value = serde_json::from_slice(&id).expect("member list json");
    let learner_id = list["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["isLearner"] == true))
        .and_then(|m| m["ID"].as_u64())
        .expect("a learner is listed");
    let promoted = wait_until(Duration::from_secs(30), || {
        c.members[2]
            .etcdctl("root", &["member", "promote", &format!("{learner_id:x}")])
            .status
            .success()
    });
    assert!(promoted, "the learner was promoted once in sync");
    c.members.push(learner);
    let out = c.members[0].etcdctl("root", &["member", "list"]);
    assert_eq!(
        text(&out).matches(", started, ").count(),
        4,
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains("true"),
        "no learner is left: {}",
        text(&out)
    );
    assert!(
        put(&c.members[3], "by-promoted", "1"),
        "the promoted member takes writes"
    );

    // Remove a follower that is not the new member.
    let leader = c.leader();
    let gone = (0..3).find(|i| *i != leader).unwrap_or(0);
    let gone_id = c.ids()[gone];
    let out = c.members[leader].etcdctl("root", &["member", "remove", &format!("{gone_id:x}")]);
    assert!(
        text(&out).contains("removed from cluster"),
        "{}",
        text(&out)
    );
    // As etcd, the removed member stops by itself.
    let mut removed = c.members.remove(gone);
    assert!(
        wait_until(Duration::from_secs(30), || !removed.is_running()),
        "the removed member stopped"
    );
    assert!(removed.log_text().contains("removed from the cluster"));
    let out = c.members[0].rampart(&["member", "list"]);
    assert_eq!(text(&out).lines().count(), 3, "{}", text(&out));
    assert!(put(&c.members[0], "after-remove", "1"));
    c.agreed_hash();
}

#[test]
fn move_leader_hands_leadership_to_the_named_member() {
    let Some(_) = tool("etcdctl") else {
        return;
    };
    let pki = TestPki::init(&[]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    let leader = c.leader();
    let target = (leader + 1) % 3;
    let target_id = c.ids()[target];
    let mut args = c.members[0].etcdctl_args("root");
    args[1] = c.endpoints();
    let out = std::process::Command::new(tool("etcdctl").expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args(&args)
        .args(["move-leader", &format!("{target_id:x}")])
        .output()
        .expect("etcdctl runs");
    assert!(
        text(&out).contains("Leadership transferred"),
        "{}",
        text(&out)
    );
    assert_eq!(c.leader(), target);
    // And back, with rampart's own command (it finds the leader among the endpoints).
    let back = c.ids()[leader];
    let out = crate::harness::rampart()
        .args([
            "move-leader",
            &format!("{back:x}"),
            "--endpoints",
            &c.endpoints(),
            "--pki-dir",
        ])
        .arg(&pki.dir)
        .output()
        .expect("rampart runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(c.leader(), leader);
    assert!(put(&c.members[target], "after-move", "1"));

    // A leader stopped with SIGTERM hands leadership over first.
    c.members[leader].stop();
    let log = std::fs::read_to_string(c.members[leader].log_path()).unwrap_or_default();
    assert!(
        log.contains("handed leadership over before stopping"),
        "{log}"
    );
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    assert!(others.contains(&c.leader()));
    assert!(put(&c.members[others[0]], "after-stop", "1"));
}

#[test]
fn a_member_whose_flags_give_another_cluster_refuses_to_start() {
    let pki = TestPki::init(&[]);
    let mut members: Vec<Member> = THREE
        .iter()
        .map(|n| Member::prepare(&pki, n, &[]))
        .collect();
    let initial = initial_cluster(&members);
    for m in members.iter_mut().take(2) {
        m.add_flags(&["--initial-cluster".into(), initial.clone()]);
        m.launch();
    }
    for m in members.iter_mut().take(2) {
        m.wait_ready();
    }
    let odd = &mut members[2];
    odd.add_flags(&[
        "--initial-cluster".into(),
        initial,
        "--initial-cluster-token".into(),
        "another-token".into(),
    ]);
    odd.launch();
    assert!(
        wait_until(Duration::from_secs(30), || !odd.is_running()),
        "it exits"
    );
    let log = odd.log_text();
    assert!(
        log.contains("already runs cluster") && log.contains("same flags"),
        "{log}"
    );
}

#[test]
fn membership_changes_that_would_risk_the_quorum_are_refused() {
    let pki = pki_with(&["rampart-0", "rampart-1", "rampart-2", "rampart-3"]);
    let mut c = Cluster::start(&pki, &THREE, &[]);
    assert!(put(&c.members[0], "k", "v"));
    let ids = c.ids();
    let leader = c.leader();
    let down = (leader + 1) % 3;
    let alive = (leader + 2) % 3;
    c.members[down].kill();
    // The leader notices the member is gone after etcd's health interval (5 s).
    let m = &c.members[leader];
    let refused = |out: &std::process::Output| {
        !out.status.success() && text(out).contains("etcdserver: unhealthy cluster")
    };
    // Until then an add may still pass: as a learner with its own URL each time, one that
    // slips through changes no quorum.
    let mut last = String::new();
    let mut port = 9;
    let add_refused = wait_until(Duration::from_secs(30), || {
        port += 1;
        let out = m.rampart(&[
            "member",
            "add",
            "rampart-3",
            "--learner",
            "--peer-urls",
            &format!("https://127.0.0.1:{port}"),
        ]);
        last = text(&out);
        refused(&out)
    });
    assert!(add_refused, "adding a member with a voter down: {last}");
    // Removing a live voter would leave one live member of two: refused.
    let out = m.rampart(&["member", "remove", &format!("{:x}", ids[alive])]);
    assert!(refused(&out), "{}", text(&out));
    // Removing the member that is down is what an operator should do, and is allowed.
    let out = m.rampart(&["member", "remove", &format!("{:x}", ids[down])]);
    assert!(out.status.success(), "{}", text(&out));
    let list = text(&m.rampart(&["member", "list"]));
    assert!(!list.contains(&format!("{:x}", ids[down])), "{list}");
    assert!(put(&c.members[alive], "after", "1"));
}

#[test]
fn one_member_over_its_quota_stops_writes_on_the_whole_cluster() {
    if tool("etcdctl").is_none() {
        return;
    }
    let pki = TestPki::init(&[]);
    let mut members: Vec<Member> = THREE
        .iter()
        .map(|n| Member::prepare(&pki, n, &[]))
        .collect();
    let initial = initial_cluster(&members);
    for (i, m) in members.iter_mut().enumerate() {
        m.add_flags(&["--initial-cluster".into(), initial.clone()]);
        if i == 2 {
            // A quota the empty database already exceeds.
            m.add_flags(&["--quota-backend-bytes".into(), "1".into()]);
        }
        m.launch();
    }
    for m in &mut members {
        m.wait_ready();
    }
    let c = Cluster { members };
    let full_id = c.ids()[2];
    let refused = |m: &Member| {
        let out = m.rampart(&["kv", "put", "k", "v"]);
        !out.status.success() && text(&out).contains("database space exceeded")
    };
    // The alarm travels through raft: a member with room refuses writes too.
    assert!(wait_until(Duration::from_secs(30), || refused(
        &c.members[0]
    )));
    let alarms = text(&c.members[0].etcdctl("root", &["alarm", "list"]));
    assert!(
        alarms.contains(&format!("memberID:{full_id} alarm:NOSPACE")),
        "{alarms}"
    );
    // Reads still work everywhere.
    let read = c.members[1].rampart(&["kv", "get", "k"]);
    assert!(read.status.success(), "{}", text(&read));
    // Disarming clears the alarm cluster-wide; the member still over its quota raises it again.
    let out = c.members[1].etcdctl("root", &["alarm", "disarm"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(30), || {
        text(&c.members[0].etcdctl("root", &["alarm", "list"])).contains("alarm:NOSPACE")
    }));
}
