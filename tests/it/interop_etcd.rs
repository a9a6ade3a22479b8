//! Real etcd 3.4 (Go's strict x509) runs on rampart's certificates: members on both ports
//! with client-cert auth, etcdctl with rampart's client certificates, CRL enforced.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::harness::{Proc, TestPki, free_port, run_ok, tool, wait_until};

struct EtcdMember {
    client_url: String,
    _proc: Proc,
}

/// etcdctl against `endpoints`, authenticated as client `user` of `pki` (trusting `trust`'s CA).
fn etcdctl_as(
    ctl: &PathBuf,
    trust: &TestPki,
    pki: &TestPki,
    user: &str,
    endpoints: &str,
    args: &[&str],
) -> Output {
    Command::new(ctl)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoints,
            "--cacert",
            &trust.path("ca.crt"),
            "--cert",
            &pki.path(&format!("clients/{user}.crt")),
            "--key",
            &pki.path(&format!("clients/{user}.key")),
            "--dial-timeout",
            "3s",
            "--command-timeout",
            "5s",
        ])
        .args(args)
        .output()
        .expect("etcdctl runs")
}

fn etcdctl(ctl: &PathBuf, pki: &TestPki, endpoints: &str, user: &str, args: &[&str]) -> Output {
    etcdctl_as(ctl, pki, pki, user, endpoints, args)
}

#[test]
fn etcd_cluster_runs_on_rampart_certificates_and_etcdctl_connects_with_a_client_cert() {
    let (Some(etcd), Some(ctl)) = (tool("etcd"), tool("etcdctl")) else {
        return;
    };
    let pki = TestPki::init(&["--client", "root", "--client", "mallory"]);

    let names = ["rampart-0", "rampart-1", "rampart-2"];
    let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
    let initial_cluster = names
        .iter()
        .zip(&ports)
        .map(|(n, (_, peer))| format!("{n}=https://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");

    let members: Vec<EtcdMember> = names
        .iter()
        .zip(&ports)
        .map(|(name, (client, peer))| {
            let client_url = format!("https://127.0.0.1:{client}");
            let peer_url = format!("https://127.0.0.1:{peer}");
            let cert = pki.path(&format!("members/{name}.crt"));
            let key = pki.path(&format!("members/{name}.key"));
            let mut cmd = Command::new(&etcd);
            cmd.args([
                "--name",
                name,
                "--data-dir",
                &pki.tmp
                    .path()
                    .join(format!("{name}.etcd"))
                    .to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &initial_cluster,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "rampart-interop",
                "--cert-file",
                &cert,
                "--key-file",
                &key,
                "--trusted-ca-file",
                &pki.path("ca.crt"),
                "--client-cert-auth",
                "--client-crl-file",
                &pki.path("crl.pem"),
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
                "--peer-trusted-ca-file",
                &pki.path("ca.crt"),
                "--peer-client-cert-auth",
                "--peer-crl-file",
                &pki.path("crl.pem"),
            ]);
            EtcdMember {
                client_url,
                _proc: Proc::spawn(name, cmd, pki.tmp.path().join(format!("{name}.log"))),
            }
        })
        .collect();
    let endpoints = members
        .iter()
        .map(|m| m.client_url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let logs = || {
        names
            .iter()
            .map(|n| {
                std::fs::read_to_string(pki.tmp.path().join(format!("{n}.log"))).unwrap_or_default()
            })
            .map(|l| l.lines().rev().take(15).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };

    let healthy = wait_until(Duration::from_secs(60), || {
        etcdctl(&ctl, &pki, &endpoints, "root", &["endpoint", "health"])
            .status
            .success()
    });
    assert!(
        healthy,
        "etcd cluster never became healthy over rampart certs:\n{}",
        logs()
    );

    // The peers formed a cluster over mutual TLS with member certificates.
    let list = etcdctl(&ctl, &pki, &endpoints, "root", &["member", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(
        list.lines().filter(|l| l.contains("started")).count(),
        3,
        "{list}"
    );

    // etcdctl with rampart's client certificate writes on one member and reads on another.
    let put = etcdctl(
        &ctl,
        &pki,
        &members[0].client_url,
        "root",
        &["put", "greeting", "hello"],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "OK");
    let get = etcdctl(
        &ctl,
        &pki,
        &members[2].client_url,
        "root",
        &["get", "greeting"],
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout), "greeting\nhello\n");

    // A client certificate from another CA is refused at the handshake.
    let other = TestPki::init(&[]);
    let foreign = etcdctl_as(
        &ctl,
        &pki,
        &other,
        "root",
        &members[1].client_url,
        &["get", "greeting"],
    );
    assert!(
        !foreign.status.success(),
        "a client of another CA must be refused"
    );

    // etcd re-reads --client-crl-file on every handshake: a revoked client is refused at once.
    let get_as = |user: &str| {
        etcdctl(
            &ctl,
            &pki,
            &members[1].client_url,
            user,
            &["get", "greeting"],
        )
    };
    let before = get_as("mallory");
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    run_ok(&["pki", "revoke", "mallory", "--dir", pki.dir_arg()]);
    let after = get_as("mallory");
    assert!(
        !after.status.success(),
        "revoked client still served: {}",
        String::from_utf8_lossy(&after.stdout)
    );
    let still = get_as("root");
    assert!(
        still.status.success(),
        "others unaffected: {}",
        String::from_utf8_lossy(&still.stderr)
    );
}
