//! The real binary: started on a config with its ports mapped to free local ports, ready when
//! its admin server says so, killed when dropped.

use crate::net::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) when dropped, unless it already exited.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Send SIGTERM (the signal Kubernetes sends) with the system's `kill`.
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub http_port: u16,
    pub admin_port: u16,
}

/// `BIN run --config CONFIG`, Gateway port 80 on a free local port, the admin server on another,
/// two workers (unless `extra` says `--workers`), then `extra`. Stdout (the access log) is piped
/// when `piped`.
fn spawn(bin: &Path, config: &Path, extra: &[&str], stdout: Stdio) -> (Child, u16, u16) {
    let http_port = free_port();
    let admin_port = free_port();
    let workers: &[&str] = if extra.contains(&"--workers") { &[] } else { &["--workers", "2"] };
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}")])
        .args(workers)
        .args(extra)
        .env("PORTICO_LOG", "warn")
        .stdout(stdout)
        .spawn()
        .expect("start portico");
    (child, http_port, admin_port)
}

/// Wait (15 s at most) until `/healthz/ready` on the admin port answers 200.
pub fn wait_ready(admin_port: u16) {
    let start = Instant::now();
    loop {
        if let Ok(r) = crate::blocking::get(admin_port, "localhost", "/healthz/ready", &[]) {
            if r.status == 200 {
                return;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(15), "gateway never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// The binary `bin` serving `config` (see [`spawn`]), once it is ready.
pub fn start_gateway(bin: &Path, config: &Path, extra: &[&str]) -> Gateway {
    let (child, http_port, admin_port) = spawn(bin, config, extra, Stdio::null());
    let gw = Gateway { proc: Proc(child), http_port, admin_port };
    wait_ready(admin_port);
    gw
}

/// Like [`start_gateway`], with its stdout (the access log) read line by line into the channel.
pub fn start_gateway_piped(bin: &Path, config: &Path, extra: &[&str]) -> (Gateway, Receiver<String>) {
    use std::io::BufRead;
    let (mut child, http_port, admin_port) = spawn(bin, config, extra, Stdio::piped());
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let gw = Gateway { proc: Proc(child), http_port, admin_port };
    wait_ready(admin_port);
    (gw, rx)
}

/// Lines from `rx` until `n` of them satisfy `pred` (or 10 s pass: panics with what was seen).
pub fn wait_lines(rx: &Receiver<String>, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    let mut hits = Vec::new();
    while hits.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                if pred(&l) {
                    hits.push(l.clone());
                }
                all.push(l);
            }
            Err(_) => panic!("wanted {n} matching lines; saw: {all:#?}"),
        }
    }
    hits
}
