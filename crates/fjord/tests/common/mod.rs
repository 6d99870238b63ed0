//! Harness for end-to-end tests: real `fjord` broker processes on free loopback ports with temporary data
//! directories, driven by real third-party clients (kcat, confluent-kafka, kafka-python, kafkajs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a broker may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A broker child process. Killed (SIGKILL) on drop; its log is printed if the test is failing.
pub struct BrokerProc {
    child: Option<Child>,
    pub bootstrap: String,
    pub http: Option<String>,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    overrides: Vec<(String, String)>,
    /// An open-file limit for the process (run under util-linux's `prlimit`).
    nofile: Option<u64>,
    /// The Kafka listener's address when it must not change (`restart_on_same_port`); else an OS-chosen port.
    listener: Option<String>,
}

impl BrokerProc {
    /// Starts a broker on 127.0.0.1 with an OS-chosen port, data in `data_dir`.
    pub fn start(data_dir: &Path, overrides: &[(&str, &str)]) -> BrokerProc {
        BrokerProc::start_with_nofile(data_dir, overrides, None)
    }

    /// [`BrokerProc::start`] with the process's open-file limit set to `nofile`.
    pub fn start_with_nofile(
        data_dir: &Path,
        overrides: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> BrokerProc {
        let overrides: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut b = BrokerProc {
            child: None,
            bootstrap: String::new(),
            http: None,
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("broker.log"),
            overrides,
            nofile,
            listener: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        let mut cmd = match self.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_fjord"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_fjord")),
        };
        let listener = self.listener.as_deref().unwrap_or("127.0.0.1:0");
        cmd.arg("broker")
            .args(["--override", &format!("listeners=PLAINTEXT://{listener}")])
            .args([
                "--override",
                &format!("log.dirs={}", self.data_dir.display()),
            ])
            .args(["--override", "metrics.listener=127.0.0.1:0"]);
        for (k, v) in &self.overrides {
            cmd.args(["--override", &format!("{k}={v}")]);
        }
        let mut child = cmd
            .env("FJORD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn fjord broker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("fjord ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "broker did not become ready in {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
        };
        for field in line.split_whitespace() {
            // A controller-only node names its controller listener instead of a Kafka one.
            if let Some(v) = field
                .strip_prefix("kafka=")
                .or_else(|| field.strip_prefix("controller="))
            {
                self.bootstrap = v.to_string();
            } else if let Some(v) = field.strip_prefix("http=") {
                self.http = Some(v.to_string());
            }
        }
        assert!(
            !self.bootstrap.is_empty(),
            "no kafka address in ready line `{line}`"
        );
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no flush, no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..200 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("broker did not stop within 10 s of SIGTERM");
        }
    }

    /// Starts the broker again on the same data directory (new port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.spawn();
    }

    /// Starts the broker again on the same data directory and the same Kafka port, so that running clients
    /// reconnect to it as to a restarted Kafka broker.
    pub fn restart_on_same_port(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.listener = Some(self.bootstrap.clone());
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits (bounded) for the broker to exit on its own; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- broker log (last 60 lines) ----");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// The Python interpreter with confluent-kafka and kafka-python (the venv `./test.sh` creates).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("FJORD_PYTHON") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./test.sh (or set FJORD_PYTHON) so the client libraries are installed",
        p.display()
    );
    p
}

/// Runs `tests/clients/<script>` with `args`, bounded by `timeout`; panics with its output if it fails.
pub fn run_client(script: &str, args: &[&str], timeout: Duration) -> String {
    let path = workspace_root().join("tests/clients").join(script);
    ok(&run_bounded(
        Command::new(python()).arg(path).args(args),
        timeout,
    ))
}

/// Runs a command with a deadline; kills it when the deadline passes.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_stdin(cmd, None, timeout)
}

pub fn kcat(args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
    run_with_stdin(Command::new("kcat").args(args), stdin, timeout)
}

/// A fresh temporary directory for one broker's data.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("fjord-e2e-")
        .tempdir()
        .expect("tempdir")
}

/// Starts a broker with `overrides`, runs `tests/clients/<script>` against it and checks it printed `ok`.
/// Returns the broker (and its directory) for further checks.
pub fn run_client_against_new_broker(
    script: &str,
    overrides: &[(&str, &str)],
) -> (tempfile::TempDir, BrokerProc) {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), overrides);
    let out = run_client(script, &[&broker.bootstrap], Duration::from_secs(180));
    assert!(
        out.lines().any(|l| l.starts_with("ok")),
        "{script} did not report ok:\n{out}"
    );
    (dir, broker)
}

/// Runs `fjord ARGS` against `bootstrap` (via $FJORD_BOOTSTRAP_SERVER), feeding `stdin`, bounded in time.
pub fn fjord(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord"));
    cmd.args(args).env("FJORD_BOOTSTRAP_SERVER", bootstrap);
    run_with_stdin(&mut cmd, stdin, Duration::from_secs(120))
}

/// Runs a command with `stdin` written from a thread (so a full pipe cannot deadlock), killed at `timeout`.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let writer = stdin.map(|input| {
        let mut sin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = sin.write_all(&input);
        })
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().expect("wait for child");
    if let Some(w) = writer {
        let _ = w.join();
    }
    let _ = tx.send(());
    out
}

/// Asserts success and returns stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plain HTTP/1.1 GET (bounded by a 10 s read timeout); returns the whole response, headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// One HTTP/1.1 request on a fresh connection (bounded by a 30 s read timeout) with `headers` (lines each ending
/// in `\r\n`; a `Host` line unless given, and `Content-Length` when there is a body, are added): (status,
/// header lines, body). Write and read errors are ignored, as a server may answer (413, say) and close before
/// reading all of an oversized body; the status line must be there.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&[u8]>,
) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n{headers}");
    if !headers.to_ascii_lowercase().contains("host:") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    if let Some(b) = body {
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{method} {path}: no HTTP response: {}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status in `{head}`"));
    (status, head, raw[split + 4..].to_vec())
}

/// `fjord start --brokers N` on free ports, with `overrides` (`key=value`) for every broker and no Schema
/// Registry; returns the child, the per-broker lines and the ready line (whose `bootstrap=` lists every broker).
pub fn start_cluster(data: &Path, n: usize, overrides: &[&str]) -> (Child, Vec<String>, String) {
    start_cluster_with_registry(data, n, overrides, "none")
}

/// [`start_cluster`] with the Schema Registry on `registry` (`127.0.0.1:0`: a free port, in the ready line's
/// `registry=`; `none`: no registry).
pub fn start_cluster_with_registry(
    data: &Path,
    n: usize,
    overrides: &[&str],
    registry: &str,
) -> (Child, Vec<String>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord"));
    cmd.args(["start", "--brokers", &n.to_string(), "--data-dir"])
        .arg(data)
        .args([
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            "metrics.listener=127.0.0.1:0",
            "--registry-listener",
            registry,
        ]);
    for o in overrides {
        cmd.args(["--override", o]);
    }
    let mut child = cmd
        .env("FJORD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut brokers = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fjord start --brokers {n} did not become ready; lines: {brokers:?}");
            }
        };
        if line.starts_with("fjord broker ") {
            brokers.push(line);
        } else if line.starts_with("fjord ready ") {
            return (child, brokers, line);
        }
    }
}

pub fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in `{line}`"))
}

/// Ctrl-C: the process must stop cleanly (exit 0) within 30 s.
pub fn interrupt(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "fjord start exited with {status} on Ctrl-C"
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fjord start did not stop within 30 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fjord start --brokers N` process for one test: killed when dropped, unless [`LocalCluster::stop`] stopped
/// it cleanly first.
pub struct LocalCluster {
    child: Option<Child>,
    /// The per-broker `fjord broker ...` lines and the `fjord ready ...` line.
    pub brokers: Vec<String>,
    pub ready: String,
    /// Every broker's client address, comma-separated.
    pub bootstrap: String,
}

impl LocalCluster {
    pub fn start(data: &Path, n: usize, overrides: &[&str]) -> LocalCluster {
        let (child, brokers, ready) = start_cluster(data, n, overrides);
        let bootstrap = field(&ready, "bootstrap=").to_string();
        LocalCluster {
            child: Some(child),
            brokers,
            ready,
            bootstrap,
        }
    }

    /// Ctrl-C, and the process must exit 0 within 30 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            interrupt(&mut child);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `fjord ARGS` against `bootstrap`; returns (exit code, stdout, stderr).
pub fn run_fjord(bootstrap: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = fjord(bootstrap, args, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `fjord ARGS` (which must succeed) and parses its standard output as JSON.
pub fn fjord_json(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let text = ok(&fjord(bootstrap, args, None));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `fjord start` with data in `data` on free loopback ports (broker and HTTP), the registry on `registry` and the
/// Connect worker on `connect` (`"127.0.0.1:0"` or `"none"`), no SQL server, stderr to `stderr`. Returns the child
/// and its ready line (fields `kafka=`, `http=`, `registry=`, `connect=`; read them with [`field`]); stdout keeps
/// being drained.
pub fn start_platform(
    data: &Path,
    registry: &str,
    connect: &str,
    stderr: Stdio,
) -> (Child, String) {
    start_platform_with_sql(data, registry, connect, "none", stderr)
}

/// [`start_platform`] with the SQL server on `sql` (`"127.0.0.1:0"` or `"none"`; the ready line's `sql=`).
pub fn start_platform_with_sql(
    data: &Path,
    registry: &str,
    connect: &str,
    sql: &str,
    stderr: Stdio,
) -> (Child, String) {
    start_platform_with_overrides(data, registry, connect, sql, &[], stderr)
}

/// [`start_platform_with_sql`] with more `--override KEY=VALUE`s.
pub fn start_platform_with_overrides(
    data: &Path,
    registry: &str,
    connect: &str,
    sql: &str,
    overrides: &[&str],
    stderr: Stdio,
) -> (Child, String) {
    start_platform_with_args(data, registry, connect, sql, overrides, &[], stderr)
}

/// [`start_platform_with_overrides`] with more arguments of `fjord start` (`args`).
pub fn start_platform_with_args(
    data: &Path,
    registry: &str,
    connect: &str,
    sql: &str,
    overrides: &[&str],
    args: &[&str],
    stderr: Stdio,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["start", "--data-dir"])
        .arg(data)
        .args([
            "--override",
            "listeners=PLAINTEXT://127.0.0.1:0",
            "--override",
            "metrics.listener=127.0.0.1:0",
            "--registry-listener",
            registry,
            "--connect-listener",
            connect,
            "--sql-listener",
            sql,
        ])
        .args(overrides.iter().flat_map(|o| ["--override", o]))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("fjord ready") => return (child, l),
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fjord start did not print its ready line within {START_TIMEOUT:?}");
            }
        }
    }
}

pub mod connect;
