//! What every integration test needs: temporary PKIs, the rampart binary, external tools,
//! free loopback ports and child processes that are killed when the test ends (also on panic).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The rampart binary under test.
pub fn rampart() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
}

/// Runs rampart with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    rampart().args(args).output().expect("rampart runs")
}

/// Runs rampart and asserts success, returning stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "rampart {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PKI made by `rampart pki init` in a temporary directory, removed on drop.
pub struct TestPki {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl TestPki {
    /// `rampart pki init --dir TMP/pki` plus `extra` arguments.
    pub fn init(extra: &[&str]) -> TestPki {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("pki");
        let mut args = vec!["pki", "init", "--dir", dir.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        run_ok(&args);
        TestPki { tmp, dir }
    }

    /// The PKI directory as a string argument.
    pub fn dir_arg(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// A path inside the PKI directory, as a string.
    pub fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }
}

/// Every file under `dir` with its contents and mode, to prove that nothing changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                out.insert(
                    path.clone(),
                    (std::fs::read(&path).unwrap_or_default(), mode),
                );
            }
        }
    }
    out
}

/// An external tool, or `None` with a notice on stderr. Under `make test`
/// (RAMPART_REQUIRE_INTEROP=1) a missing tool fails the test instead: interop is never
/// skipped silently.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("RAMPART_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{name} is not installed; run `make deps`");
        }
        eprintln!(
            "NOTICE: {name} is not installed: this interop test is SKIPPED (run `make deps`)"
        );
    }
    found
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process that is killed and reaped when dropped.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, log }
    }

    /// The process's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; SIGKILL after 30 s.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retries `check` until it returns true or `limit` passes (only to avoid hanging).
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Whether something listens on 127.0.0.1:`port` (read from /proc, without connecting, so
/// one-shot servers are not disturbed).
pub fn is_listening(port: u16) -> bool {
    let needle = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .map(|table| {
            table.lines().any(|l| {
                l.split_whitespace().nth(1) == Some(&needle)
                    && l.split_whitespace().nth(3) == Some("0A")
            })
        })
        .unwrap_or(false)
}

/// A `rampart serve` process on free loopback ports, with its data in the PKI's temp dir.
pub struct Member {
    /// Member name.
    pub name: String,
    /// `https://127.0.0.1:PORT` of the client port.
    pub client_url: String,
    /// The peer URL.
    pub peer_url: String,
    /// The data directory.
    pub data_dir: PathBuf,
    pki_dir: PathBuf,
    tmp: PathBuf,
    proc: Option<Proc>,
    starts: u32,
    extra: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Member {
    /// Starts member `name` of `pki` and waits until it serves.
    pub fn start(pki: &TestPki, name: &str) -> Member {
        Member::start_with(pki, name, &[])
    }

    /// [`Member::start`] with extra `rampart serve` flags.
    pub fn start_with(pki: &TestPki, name: &str, extra: &[&str]) -> Member {
        let mut m = Member::prepare(pki, name, extra);
        m.spawn();
        m.wait_ready();
        m
    }

    /// `endpoint status` of this member as JSON (`None` when it does not answer).
    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.rampart(&["endpoint", "status", "-w", "json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0).and_then(|e| e.get("Status")).cloned()
    }

    /// A member on fresh loopback ports, not started yet (see [`Member::launch`]).
    pub fn prepare(pki: &TestPki, name: &str, extra: &[&str]) -> Member {
        Member {
            name: name.to_owned(),
            client_url: format!("https://127.0.0.1:{}", free_port()),
            peer_url: format!("https://127.0.0.1:{}", free_port()),
            data_dir: pki.tmp.path().join(format!("{name}.data")),
            pki_dir: pki.dir.clone(),
            tmp: pki.tmp.path().to_owned(),
            proc: None,
            starts: 0,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            envs: Vec::new(),
        }
    }

    /// Sets an environment variable of `rampart serve` for the next starts.
    pub fn add_env(&mut self, key: &str, value: &str) {
        self.envs.push((key.to_owned(), value.to_owned()));
    }

    /// Adds `rampart serve` flags for the next starts.
    pub fn add_flags(&mut self, flags: &[String]) {
        self.extra.extend_from_slice(flags);
    }

    /// Starts the process without waiting for it to serve.
    pub fn launch(&mut self) {
        self.spawn();
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.is_running())
    }

    /// Runs the rampart CLI against this member as client `root`.
    pub fn rampart(&self, args: &[&str]) -> Output {
        rampart()
            .args(args)
            .args(["--endpoints", &self.client_url, "--pki-dir"])
            .arg(&self.pki_dir)
            .output()
            .expect("rampart runs")
    }

    /// The current log file.
    pub fn log_path(&self) -> PathBuf {
        self.tmp.join(format!("{}-{}.log", self.name, self.starts))
    }

    /// The log of the current run.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut cmd = rampart();
        cmd.args([
            "serve",
            "--name",
            &self.name,
            "--listen-client-urls",
            &self.client_url,
            "--listen-peer-urls",
            &self.peer_url,
        ])
        .arg("--data-dir")
        .arg(&self.data_dir)
        .arg("--pki-dir")
        .arg(&self.pki_dir)
        .args(&self.extra)
        .envs(self.envs.iter().map(|(k, v)| (k, v)));
        self.proc = Some(Proc::spawn(&self.name, cmd, self.log_path()));
    }

    /// Waits (bounded, only to avoid hanging) until the member logs that it serves.
    pub fn wait_ready(&mut self) {
        let ready = wait_until(Duration::from_secs(60), || {
            self.log_text().contains("ready to serve client requests")
                || !self.proc.as_mut().is_some_and(|p| p.is_running())
        });
        let log = self.log_text();
        assert!(
            ready && log.contains("ready to serve client requests"),
            "member {} did not become ready:\n{log}",
            self.name
        );
    }

    /// Kills the process with SIGKILL (a crash).
    pub fn kill(&mut self) {
        self.proc = None; // Proc's Drop kills and reaps.
    }

    /// Stops with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.terminate();
        }
        self.proc = None;
    }

    /// Graceful stop, then start again and wait until it serves.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// Starts again after a [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// etcdctl's connection flags for client `user`.
    pub fn etcdctl_args(&self, user: &str) -> Vec<String> {
        vec![
            "--endpoints".into(),
            self.client_url.clone(),
            "--cacert".into(),
            self.pki_dir.join("ca.crt").to_string_lossy().into_owned(),
            "--cert".into(),
            self.pki_dir
                .join(format!("clients/{user}.crt"))
                .to_string_lossy()
                .into_owned(),
            "--key".into(),
            self.pki_dir
                .join(format!("clients/{user}.key"))
                .to_string_lossy()
                .into_owned(),
            "--dial-timeout".into(),
            "3s".into(),
            "--command-timeout".into(),
            "10s".into(),
        ]
    }

    /// Runs etcdctl as client `user` with `input` on its stdin (values too big for argv, txns).
    pub fn etcdctl_with_stdin(&self, user: &str, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(tool("etcdctl").expect("etcdctl is installed"))
            .env("ETCDCTL_API", "3")
            .args(self.etcdctl_args(user))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl runs");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input).expect("etcdctl reads stdin");
        }
        child.wait_with_output().expect("etcdctl finishes")
    }

    /// Runs etcdctl (API v3) as client `user`.
    pub fn etcdctl(&self, user: &str, args: &[&str]) -> Output {
        Command::new(tool("etcdctl").expect("etcdctl is installed"))
            .env("ETCDCTL_API", "3")
            .args(self.etcdctl_args(user))
            .args(args)
            .output()
            .expect("etcdctl runs")
    }
}

/// Members started together with one `--initial-cluster`.
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts members `names` of `pki` (each with `extra` flags) as a new cluster and waits
    /// until every one serves.
    pub fn start(pki: &TestPki, names: &[&str], extra: &[&str]) -> Cluster {
        let mut members: Vec<Member> = names
            .iter()
            .map(|n| Member::prepare(pki, n, extra))
            .collect();
        let initial = initial_cluster(&members);
        for m in &mut members {
            m.add_flags(&["--initial-cluster".into(), initial.clone()]);
            m.launch();
        }
        for m in &mut members {
            m.wait_ready();
        }
        Cluster { members }
    }

    /// Every client URL, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member ID of each member, from its status (0 when it does not answer).
    pub fn ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| {
                m.status()
                    .and_then(|s| s["header"]["member_id"].as_u64())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The index of the member that leads, once every running member agrees (bounded wait).
    pub fn leader(&mut self) -> usize {
        let mut found = None;
        let agreed = wait_until(Duration::from_secs(30), || {
            let mut leaders = std::collections::BTreeSet::new();
            let mut ids = Vec::new();
            for m in self.members.iter_mut() {
                if !m.is_running() {
                    ids.push(0);
                    continue;
                }
                match m.status() {
                    Some(s) => {
                        leaders.insert(s["leader"].as_u64().unwrap_or(0));
                        ids.push(s["header"]["member_id"].as_u64().unwrap_or(0));
                    }
                    None => return false,
                }
            }
            if leaders.len() != 1 {
                return false;
            }
            let leader = leaders.into_iter().next().unwrap_or(0);
            found = ids.iter().position(|id| *id == leader && leader != 0);
            found.is_some()
        });
        assert!(agreed, "the running members did not agree on one leader");
        found.unwrap_or(0)
    }

    /// Waits (bounded) until every running member reports the same HashKV at the same
    /// revision, and returns that hash.
    pub fn agreed_hash(&mut self) -> u64 {
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(30), || {
            last.clear();
            for m in self.members.iter_mut() {
                if !m.is_running() {
                    continue;
                }
                let out = m.rampart(&["endpoint", "hashkv", "-w", "json"]);
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let h = &v[0]["HashKV"];
                last.push((
                    h["hash"].as_u64().unwrap_or(0),
                    h["header"]["revision"].as_i64().unwrap_or(-1),
                ));
            }
            !last.is_empty() && last.iter().all(|x| *x == last[0]) && last[0].1 > 0
        });
        assert!(ok, "members disagree on HashKV (hash, revision): {last:?}");
        last[0].0
    }
}

/// `--initial-cluster` naming `members` at their peer URLs.
pub fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",")
}

impl Proc {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Member {
    /// The process ID while it runs (to read its memory use from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Starts a long-running etcdctl (API v3) as client `user`, e.g. `watch`, whose output
    /// the test reads while it runs.
    pub fn etcdctl_spawn(&self, user: &str, args: &[&str]) -> Streamed {
        let mut cmd = Command::new(tool("etcdctl").expect("etcdctl is installed"));
        cmd.env("ETCDCTL_API", "3")
            .args(self.etcdctl_args(user))
            .args(args);
        Streamed::spawn(cmd)
    }

    /// An `etcd-client` crate client of this member, authenticated as `root`.
    pub async fn etcd_client(&self) -> etcd_client::Client {
        self.etcd_client_as("root").await
    }

    /// An `etcd-client` connected with client `user`'s certificate.
    pub async fn etcd_client_as(&self, user: &str) -> etcd_client::Client {
        let read = |p: &str| std::fs::read(self.pki_dir.join(p)).expect("PKI file");
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
            .identity(etcd_client::Identity::from_pem(
                read(&format!("clients/{user}.crt")),
                read(&format!("clients/{user}.key")),
            ));
        etcd_client::Client::connect(
            [self.client_url.as_str()],
            Some(
                etcd_client::ConnectOptions::new()
                    .with_tls(tls)
                    .with_connect_timeout(Duration::from_secs(5)),
            ),
        )
        .await
        .expect("etcd-client connects over mutual TLS")
    }
}

/// The resident memory of process `pid` in bytes (VmRSS from /proc), if it runs.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A child whose stdout lines and stderr are collected by threads while it runs; killed and
/// reaped on drop (also when the test panics).
pub struct Streamed {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Streamed {
    /// Starts `cmd` with piped stdout and stderr.
    pub fn spawn(mut cmd: Command) -> Streamed {
        use std::io::{BufRead, Read};
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the command starts");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Streamed {
            child,
            lines,
            stderr,
        }
    }

    /// The stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (bounded) until the stdout lines satisfy `check`.
    pub fn wait_for(&self, limit: Duration, check: impl Fn(&[String]) -> bool) -> bool {
        wait_until(limit, || check(&self.lines()))
    }

    /// Waits (bounded) for the process to exit by itself; `None` if it still runs. Output
    /// read threads may lag the exit a little: callers wait for the text they expect.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A certificate signed by the PKI's CA with `tweak` applied; returns (cert, key) paths.
pub fn mint(
    pki: &TestPki,
    file: &str,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> (String, String) {
    let ca_pem = std::fs::read_to_string(pki.dir.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.dir.join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(30);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    tweak(&mut params);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cert_path = pki.tmp.path().join(format!("{file}.crt"));
    let key_path = pki.tmp.path().join(format!("{file}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}
