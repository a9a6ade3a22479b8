//! CA rotation on a 3-member cluster under continuous writes: `rampart pki rotate-ca start`,
//! `reissue`, `finish`, with the members reloading the files by themselves. No write may fail,
//! and at the end the old CA is refused everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, TestPki, run_ok, tool, wait_until};

/// Longer than two polls of the members' file watch (2 s each): every member has loaded the
/// files of the step just taken.
const SETTLE: Duration = Duration::from_secs(5);

/// Runs `rampart kv put` in a loop across the members, each time with the PKI files as they
/// are now (as a client that is handed new files would), and counts the outcomes.
struct Writer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(endpoints: Vec<String>, pki: std::path::PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            // Bounded in count and time, whatever happens.
            while !s.load(Ordering::Relaxed)
                && i < 20_000
                && started.elapsed() < Duration::from_secs(300)
            {
                let endpoint = &endpoints[(i % endpoints.len() as u64) as usize];
                let out = crate::harness::rampart()
                    .args(["kv", "put", &format!("rot/{i}"), &i.to_string()])
                    .args(["--endpoints", endpoint, "--pki-dir"])
                    .arg(&pki)
                    .output()
                    .expect("rampart runs");
                if out.status.success() {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.lock().unwrap().push(format!(
                        "put {i} via {endpoint} at {:?}: {}",
                        started.elapsed(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                i += 1;
            }
        });
        Writer {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer thread");
        }
        (self.ok(), self.failures.lock().unwrap().clone())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The first CA of `ca.crt` alone, in a file of its own.
fn first_ca(pki: &TestPki, name: &str) -> String {
    let text = std::fs::read_to_string(pki.dir.join("ca.crt")).unwrap();
    let end = "-----END CERTIFICATE-----";
    let first = &text[..text.find(end).unwrap() + end.len()];
    let path = pki.tmp.path().join(name);
    std::fs::write(&path, format!("{first}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

fn etcdctl_get(endpoint: &str, cacert: &str, cert: &str, key: &str) -> std::process::Output {
    std::process::Command::new(tool("etcdctl").expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--cacert",
            cacert,
            "--cert",
            cert,
            "--key",
            key,
        ])
        .args([
            "--dial-timeout",
            "3s",
            "--command-timeout",
            "5s",
            "get",
            "rot/0",
        ])
        .output()
        .expect("etcdctl runs")
}

#[test]
fn the_ca_is_replaced_under_load_without_a_failed_write() {
    if tool("etcdctl").is_none() {
        eprintln!("skipped: etcdctl is not installed");
        return;
    }
    let pki = TestPki::init(&[]);
    let mut cluster = Cluster::start(&pki, &["rampart-0", "rampart-1", "rampart-2"], &[]);
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    // The old material, kept aside to prove it is refused at the end.
    let old_ca = first_ca(&pki, "old-ca.crt");
    let old_cert = pki.tmp.path().join("old-root.crt");
    let old_key = pki.tmp.path().join("old-root.key");
    std::fs::copy(pki.dir.join("clients/root.crt"), &old_cert).unwrap();
    std::fs::copy(pki.dir.join("clients/root.key"), &old_key).unwrap();
    let (old_cert, old_key) = (
        old_cert.to_string_lossy().into_owned(),
        old_key.to_string_lossy().into_owned(),
    );

    let writer = Writer::start(endpoints.clone(), pki.dir.clone());
    let progressed = |floor: u64| wait_until(Duration::from_secs(60), || writer.ok() > floor);
    assert!(progressed(10), "writes go through before the rotation");

    let mut phase_writes = Vec::new();
    for step in ["start", "reissue", "finish"] {
        run_ok(&["pki", "rotate-ca", step, "--dir", pki.dir_arg()]);
        std::thread::sleep(SETTLE);
        let before = writer.ok();
        assert!(progressed(before + 5), "writes continue after {step}");
        phase_writes.push((step, writer.ok()));
    }
    let (written, failures) = writer.finish();
    eprintln!("writes: {written}; per step: {phase_writes:?}");
    assert!(
        failures.is_empty(),
        "failed writes during the rotation: {failures:#?}"
    );

    // Every member now presents a certificate of the new CA, and the old CA's client
    // certificate is refused, with the reason in the members' logs.
    let new_ca = first_ca(&pki, "new-ca.crt");
    let root_crt = pki.path("clients/root.crt");
    let root_key = pki.path("clients/root.key");
    for endpoint in &endpoints {
        let out = etcdctl_get(endpoint, &new_ca, &root_crt, &root_key);
        assert!(
            out.status.success(),
            "{endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = etcdctl_get(endpoint, &pki.path("ca.crt"), &old_cert, &old_key);
        assert!(
            !out.status.success(),
            "{endpoint} still accepts the old CA's certificate"
        );
        let out = etcdctl_get(endpoint, &old_ca, &root_crt, &root_key);
        assert!(
            !out.status.success(),
            "{endpoint} still presents an old-CA certificate"
        );
    }
    assert!(
        cluster
            .members
            .iter()
            .any(|m| m.log_text().contains("not signed by this cluster's CA"))
    );
    // The cluster stayed one: every member has every write.
    let hash = cluster.agreed_hash();
    assert_ne!(hash, 0);
}
