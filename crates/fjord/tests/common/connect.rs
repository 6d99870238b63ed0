//! What the Connect tests share: a `fjord connect` worker process, HTTP requests to its REST API, bounded waits,
//! worker properties.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::field;

/// A `fjord connect standalone` process; killed on drop, its log printed when the test fails.
pub struct WorkerProc {
    /// `standalone` or `distributed`.
    pub mode: &'static str,
    pub child: Option<Child>,
    pub rest: String,
    pub args: Vec<PathBuf>,
    pub log_path: PathBuf,
}

impl WorkerProc {
    pub fn start(args: &[&Path], log_path: &Path) -> WorkerProc {
        Self::start_mode("standalone", args, log_path)
    }

    pub fn start_mode(mode: &'static str, args: &[&Path], log_path: &Path) -> WorkerProc {
        let mut w = WorkerProc {
            mode,
            child: None,
            rest: String::new(),
            args: args.iter().map(|p| p.to_path_buf()).collect(),
            log_path: log_path.to_path_buf(),
        };
        w.spawn();
        w
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["connect", self.mode])
            .args(&self.args)
            .env("FJORD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("fjord connect ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the worker never became ready; log:\n{}", self.log());
            }
        };
        self.rest = field(&line, "rest=").to_string();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the worker to exit on its own.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                assert!(status.success(), "the worker exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("the worker did not stop within 20 s of SIGTERM");
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- connect worker log ----\n{}", self.log());
        }
    }
}

/// An HTTP/1.1 request with a JSON body; returns the status and the body as JSON (Null when empty). A 5xx fails
/// the test (bad input never gets one); `http_any` is for the few server-side failures a test provokes.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, v) = http_any(addr, method, path, body);
    assert!(status < 500, "{method} {path} answered {status}: {v}");
    (status, v)
}

pub fn http_any(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
    };
    (status, v)
}

/// Polls `f` every 100 ms until it returns Some, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn worker_properties(dir: &Path, bootstrap: &str, extra: &str) -> PathBuf {
    let p = dir.join("worker.properties");
    std::fs::write(
        &p,
        format!(
            "bootstrap.servers={bootstrap}\noffset.storage.file.filename={}\nlisteners=http://127.0.0.1:0\n\
             offset.flush.interval.ms=100\n{extra}",
            dir.join("connect.offsets").display()
        ),
    )
    .unwrap();
    p
}

/// Every record of `topic` from the beginning (none when it does not exist): the raw JSON lines of `consume`.
pub fn records_of(bootstrap: &str, topic: &str) -> Vec<Value> {
    let out = super::fjord(
        bootstrap,
        &[
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--format",
            "json",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}
