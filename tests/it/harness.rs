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
