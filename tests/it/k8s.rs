//! Kubernetes: `rampart k8s manifests` (parsed back, checked field by field and against the
//! Kubernetes schemas), the pod's init step and probe against a real member, and a member
//! whose peers' names do not resolve yet (as in a StatefulSet starting in parallel).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::harness::{Member, Proc, TestPki, free_port, is_listening, run, run_ok, tool};

/// Every YAML document of `text`, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("every document is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {docs:#?}"))
}

fn manifests(replicas: u32, extra: &[&str]) -> String {
    let replicas = replicas.to_string();
    let mut args = vec![
        "k8s",
        "manifests",
        "--name",
        "etcd",
        "--namespace",
        "db",
        "--replicas",
        &replicas,
    ];
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// The value of `--flag=` among a container's args.
fn arg<'a>(container: &'a Value, flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {flag} in {container:#}"))
}

#[test]
fn manifests_for_3_5_and_7_members_name_exactly_their_members() {
    for n in [3u32, 5, 7] {
        let text = manifests(n, &[]);
        assert!(!text.contains("PRIVATE KEY"), "no key without --pki-dir");
        let docs = documents(&text);
        let kinds: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("Service", "etcd"),
                ("Service", "etcd-client"),
                ("PodDisruptionBudget", "etcd"),
                ("StatefulSet", "etcd"),
            ]
        );
        assert!(docs.iter().all(|d| d["metadata"]["namespace"] == "db"));

        let headless = &find(&docs, "Service", "etcd")["spec"];
        assert_eq!(headless["clusterIP"], "None");
        assert_eq!(headless["publishNotReadyAddresses"], true);
        let ports: Vec<(&str, u64)> = headless["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["port"].as_u64().unwrap()))
            .collect();
        assert_eq!(ports, vec![("client", 2379), ("peer", 2380)]);
        let client = &find(&docs, "Service", "etcd-client")["spec"];
        assert_eq!(client["ports"][0]["port"], 2379);
        assert_eq!(client["ports"].as_array().unwrap().len(), 1);
        assert_eq!(
            find(&docs, "PodDisruptionBudget", "etcd")["spec"]["maxUnavailable"],
            1
        );

        let sts = &find(&docs, "StatefulSet", "etcd")["spec"];
        assert_eq!(sts["replicas"], n);
        assert_eq!(sts["serviceName"], "etcd");
        assert_eq!(sts["podManagementPolicy"], "Parallel");
        assert_eq!(
            sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "10Gi"
        );
        let pod = &sts["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
                [0]["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        let member = &pod["containers"][0];
        assert_eq!(member["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(member["securityContext"]["capabilities"]["drop"][0], "ALL");
        assert_eq!(arg(member, "--name"), "$(POD_NAME)");
        assert_eq!(
            member["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(arg(member, "--listen-peer-urls"), "https://0.0.0.0:2380");
        assert_eq!(
            arg(member, "--initial-advertise-peer-urls"),
            "https://$(POD_NAME).etcd.db.svc.cluster.local:2380"
        );
        assert_eq!(
            arg(member, "--advertise-client-urls"),
            "https://$(POD_NAME).etcd.db.svc.cluster.local:2379"
        );
        assert_eq!(arg(member, "--initial-cluster-token"), "etcd-db");

        // Exactly the StatefulSet's pods: etcd-0 … etcd-(n-1), never etcd-n.
        let cluster: Vec<&str> = arg(member, "--initial-cluster").split(',').collect();
        let expected: Vec<String> = (0..n)
            .map(|i| format!("etcd-{i}=https://etcd-{i}.etcd.db.svc.cluster.local:2380"))
            .collect();
        assert_eq!(cluster, expected);

        // Probes over mutual TLS, by exec: an httpGet probe has no client certificate.
        for (probe, check) in [
            ("startupProbe", "livez"),
            ("livenessProbe", "livez"),
            ("readinessProbe", "readyz"),
        ] {
            let command = &member[probe]["exec"]["command"];
            assert_eq!(command[0], "rampart", "{probe}");
            assert_eq!(command[1], "probe", "{probe}");
            assert_eq!(command[2], check, "{probe}");
            assert!(member[probe].get("httpGet").is_none());
        }

        // The member container sees its own copy only; the init step alone mounts the Secrets.
        let secrets = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "member-secrets")
            .expect("the members' Secrets volume");
        let names: Vec<&str> = secrets["projected"]["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["secret"]["name"].as_str().unwrap())
            .collect();
        let wanted: Vec<String> = (0..n).map(|i| format!("etcd-{i}-tls")).collect();
        assert_eq!(names, wanted);
        assert!(
            member["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["name"] != "member-secrets")
        );
        assert_eq!(pod["initContainers"][0]["command"][1], "k8s");
    }
}

#[test]
fn manifests_with_a_pki_dir_give_each_member_its_own_secret() {
    let pki = TestPki::init(&[
        "--k8s-statefulset",
        "etcd",
        "--k8s-service",
        "etcd",
        "--k8s-namespace",
        "db",
        "--replicas",
        "3",
    ]);
    let docs = documents(&manifests(3, &["--pki-dir", pki.dir_arg()]));
    let read = |rel: &str| std::fs::read(pki.dir.join(rel)).expect("PKI file");
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 text"))
            .expect("base64")
    };
    for i in 0..3 {
        let secret = find(&docs, "Secret", &format!("etcd-{i}-tls"));
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let data = &secret["data"];
        assert_eq!(
            decode(&data["tls.crt"]),
            read(&format!("members/etcd-{i}.crt"))
        );
        assert_eq!(
            decode(&data["tls.key"]),
            read(&format!("members/etcd-{i}.key"))
        );
        assert_eq!(decode(&data["ca.crt"]), read("ca.crt"));
        assert_eq!(decode(&data["crl.pem"]), read("crl.pem"));
    }
    assert_eq!(docs.iter().filter(|d| d["kind"] == "Secret").count(), 3);
    let ca_key = String::from_utf8(read("ca.key")).unwrap();
    let all = serde_json::to_string(&docs).unwrap();
    assert!(
        !all.contains(&base64::engine::general_purpose::STANDARD.encode(ca_key)),
        "the CA key never leaves the PKI directory"
    );
}

#[test]
fn manifests_refuse_a_pki_made_for_another_statefulset() {
    let pki = TestPki::init(&[
        "--k8s-statefulset",
        "etcd",
        "--k8s-service",
        "etcd",
        "--k8s-namespace",
        "db",
        "--replicas",
        "3",
    ]);
    let dir = pki.dir_arg();
    for (what, args, expected) in [
        (
            "more replicas",
            vec!["--namespace", "db", "--replicas", "5"],
            "no certificate for etcd-3, etcd-4",
        ),
        (
            "fewer replicas",
            vec!["--namespace", "db", "--replicas", "1"],
            "made for more than 1 replica",
        ),
        (
            "another namespace",
            vec!["--namespace", "prod", "--replicas", "3"],
            "does not name etcd-0.etcd.prod.svc.cluster.local",
        ),
        (
            "another domain",
            vec![
                "--namespace",
                "db",
                "--replicas",
                "3",
                "--cluster-domain",
                "corp.internal",
            ],
            "does not name etcd-0.etcd.db.svc.corp.internal",
        ),
    ] {
        let mut full = vec!["k8s", "manifests", "--name", "etcd", "--pki-dir", dir];
        full.extend(args);
        let out = run(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: nothing printed on refusal");
    }
    let other = run(&[
        "k8s",
        "manifests",
        "--name",
        "other",
        "--namespace",
        "db",
        "--pki-dir",
        dir,
    ]);
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("no certificate for other-0"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
}

#[test]
fn manifests_refuse_bad_requests_and_warn_of_even_sizes() {
    for (args, expected) in [
        (vec!["--name", "etcd", "--replicas", "0"], "at least 1"),
        (vec!["--name", "etcd", "--replicas", "9"], "at most 7"),
        (vec!["--name", "Etcd"], "invalid StatefulSet name"),
        (vec!["--name", "etcd", "--namespace", "a.b"], "namespace"),
        (vec!["--name", "etcd", "--storage", "lots"], "quantity"),
    ] {
        let mut full = vec!["k8s", "manifests"];
        full.extend(&args);
        let out = run(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(128), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = run(&["k8s", "manifests", "--name", "etcd", "--replicas", "4"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is even"));
}

/// `kubernetes-validate` from the venv `make deps` creates (`RAMPART_VENV`, else `.local/venv`),
/// else from PATH.
fn validator() -> Option<PathBuf> {
    let venv = std::env::var_os("RAMPART_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/venv"));
    let local = venv.join("bin/kubernetes-validate");
    if local.is_file() {
        return Some(local);
    }
    tool("kubernetes-validate")
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(validator) = validator() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for n in [3u32, 5, 7] {
        let replicas = n.to_string();
        let pki_dir = tmp.path().join(format!("pki-{n}"));
        run_ok(&[
            "pki",
            "init",
            "--dir",
            pki_dir.to_str().unwrap(),
            "--k8s-statefulset",
            "etcd",
            "--k8s-service",
            "etcd",
            "--k8s-namespace",
            "db",
            "--replicas",
            &replicas,
        ]);
        for (label, extra) in [
            ("plain", vec![]),
            (
                "with secrets",
                vec![
                    "--pki-dir",
                    pki_dir.to_str().unwrap(),
                    "--anti-affinity",
                    "required",
                    "--storage-class",
                    "fast-ssd",
                ],
            ),
        ] {
            let file = tmp
                .path()
                .join(format!("etcd-{n}-{}.yaml", label.replace(' ', "-")));
            std::fs::write(&file, manifests(n, &extra)).unwrap();
            let out = Command::new(&validator)
                .arg("--strict")
                .arg(&file)
                .output()
                .expect("kubernetes-validate runs");
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{n} members, {label}:\n{report}");
            let passed = report.matches(" passed for resource ").count();
            let expected = if extra.is_empty() { 4 } else { 4 + n as usize };
            assert_eq!(passed, expected, "{n} members, {label}:\n{report}");
        }
    }
}

/// What a pod does: the init step copies its member's files out of the mounted Secrets into
/// a PKI directory, the member serves from it, and the probes ask it over mutual TLS.
#[test]
fn the_init_step_and_probes_work_as_in_a_pod() {
    let pki = TestPki::init(&[
        "--k8s-statefulset",
        "etcd",
        "--k8s-service",
        "etcd",
        "--k8s-namespace",
        "db",
        "--replicas",
        "1",
    ]);
    let tmp = pki.tmp.path();
    // The Secret volume as the kubelet lays it out: group-readable files, not 0600.
    let mounted = tmp.join("secrets/etcd-0");
    std::fs::create_dir_all(&mounted).unwrap();
    for (key, rel) in [
        ("tls.crt", "members/etcd-0.crt"),
        ("tls.key", "members/etcd-0.key"),
        ("ca.crt", "ca.crt"),
        ("crl.pem", "crl.pem"),
    ] {
        let to = mounted.join(key);
        std::fs::copy(pki.dir.join(rel), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let out_dir = tmp.join("pod-pki");
    let secrets = tmp.join("secrets");
    let init = |name: &str| {
        crate::harness::rampart()
            .args(["k8s", "member-pki", "--secrets-dir"])
            .arg(&secrets)
            .arg("--out")
            .arg(&out_dir)
            .env("RAMPART_NAME", name)
            .output()
            .unwrap()
    };
    let refused = init("etcd-1");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("etcd-1-tls"));
    let done = init("etcd-0");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    let client_port = free_port();
    let peer_port = free_port();
    let mut serve = crate::harness::rampart();
    serve
        .args(["serve", "--name", "etcd-0", "--pki-dir"])
        .arg(&out_dir)
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .args([
            "--listen-client-urls",
            &format!("https://127.0.0.1:{client_port}"),
            "--listen-peer-urls",
            &format!("https://127.0.0.1:{peer_port}"),
        ]);
    let mut member = Proc::spawn("etcd-0", serve, tmp.join("etcd-0.log"));
    let endpoint = format!("https://127.0.0.1:{client_port}");
    let probe = |check: &str| {
        crate::harness::rampart()
            .args(["probe", check, "--endpoint", &endpoint, "--pki-dir"])
            .arg(&out_dir)
            .env("RAMPART_NAME", "etcd-0")
            .output()
            .unwrap()
    };
    let ready = crate::harness::wait_until(Duration::from_secs(60), || {
        probe("readyz").status.success() || !member.is_running()
    });
    assert!(ready && member.is_running(), "{}", member.log_text());
    let live = probe("livez");
    assert!(live.status.success());
    assert_eq!(String::from_utf8_lossy(&live.stdout).trim(), "ok");

    // Without a certificate there is nothing to ask with: the port takes mutual TLS only.
    let bare = crate::harness::rampart()
        .args(["probe", "livez", "--endpoint", &endpoint])
        .env_remove("RAMPART_PKI_DIR")
        .output()
        .unwrap();
    assert!(!bare.status.success());
    member.terminate();
}

/// In a StatefulSet every member starts at once and a peer's DNS name appears only once its
/// pod runs. A member must wait for its peers, not exit: `.invalid` never resolves.
#[test]
fn a_member_whose_peers_do_not_resolve_keeps_running() {
    let pki = TestPki::init(&["--member", "rampart-0", "--member", "rampart-3"]);
    let peers = "rampart-1=https://rampart-1.rampart.test.invalid:2380,\
                 rampart-2=https://rampart-2.rampart.test.invalid:2380";

    let mut forming = Member::prepare(&pki, "rampart-0", &[]);
    let cluster = format!("rampart-0={},{peers}", forming.peer_url);
    forming.add_flags(&["--initial-cluster".into(), cluster]);
    forming.launch();

    // A member joining (after `member add`) asks its peers who they are until one answers.
    let mut joining = Member::prepare(&pki, "rampart-3", &[]);
    let cluster = format!("rampart-3={},{peers}", joining.peer_url);
    joining.add_flags(&[
        "--initial-cluster".into(),
        cluster,
        "--initial-cluster-state".into(),
        "existing".into(),
    ]);
    joining.launch();

    let peer_port: u16 = forming
        .peer_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(
        crate::harness::wait_until(Duration::from_secs(20), || is_listening(peer_port)),
        "the peer port opens while the peers are unknown:\n{}",
        forming.log_text()
    );
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        assert!(forming.is_running(), "exited:\n{}", forming.log_text());
        assert!(joining.is_running(), "exited:\n{}", joining.log_text());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", peer_port)).is_ok());
    assert!(is_listening(peer_port));
    let log = forming.log_text();
    assert!(log.contains("rampart.test.invalid"), "{log}");
    assert!(log.contains("peers not reachable yet"), "{log}");
    let log = joining.log_text();
    assert!(log.contains("retry_in"), "{log}");
    assert!(log.contains("rampart-1.rampart.test.invalid"), "{log}");

    // Waiting for peers is no reason to ignore a stop request.
    let stopping = Instant::now();
    joining.stop();
    forming.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert!(!joining.is_running() && !forming.is_running());
}

#[test]
fn the_committed_example_is_what_the_command_prints() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes/rampart-3.yaml");
    let committed = std::fs::read_to_string(&path).expect("the example manifests");
    let printed = run_ok(&[
        "k8s",
        "manifests",
        "--name",
        "rampart",
        "--namespace",
        "default",
        "--replicas",
        "3",
    ]);
    assert!(
        committed == printed,
        "{} is stale: regenerate it with the command on its second line",
        path.display()
    );
    assert!(!committed.contains("PRIVATE KEY"));
}
