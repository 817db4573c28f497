//! Helpers for driving the real binaries: free ports, processes that are killed on drop, and a
//! minimal blocking HTTP/1.1 client (real sockets, no mocking).
#![allow(dead_code)]

use prom_text_format_parser::{Scrape, ValueType};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

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

pub fn echo_backend(port: u16, name: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_portico-echo"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--name", name])
        .stderr(Stdio::null())
        .spawn()
        .expect("start portico-echo");
    wait_port(port);
    Proc(child)
}

pub fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Gateway {
    pub proc: Proc,
    pub http_port: u16,
    pub admin_port: u16,
}

/// `portico run` on `config`, with Gateway port 80 mapped to a free local port.
pub fn start_gateway(config: &Path, extra: &[&str]) -> Gateway {
    let http_port = free_port();
    let admin_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--workers", "2"])
        .args(extra)
        .env("PORTICO_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start portico");
    let gw = Gateway { proc: Proc(child), http_port, admin_port };
    let start = Instant::now();
    loop {
        if let Ok(r) = get(admin_port, "localhost", "/healthz/ready", &[]) {
            if r.status == 200 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(15), "gateway never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    gw
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to the end.
pub fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

fn parse(raw: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Some(Resp { status, headers, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `portico run` like [`start_gateway`], with its stdout (the access log) read line by line into
/// the returned channel.
pub fn start_gateway_piped(config: &Path, extra: &[&str]) -> (Gateway, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let http_port = free_port();
    let admin_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--workers", "2"])
        .args(extra)
        .env("PORTICO_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start portico");
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
    let start = Instant::now();
    loop {
        if let Ok(r) = get(admin_port, "localhost", "/healthz/ready", &[]) {
            if r.status == 200 {
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(15), "gateway never became ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    (gw, rx)
}

/// Lines from `rx` until `n` of them satisfy `pred` (or 10 s pass: panics with what was seen).
pub fn wait_lines(rx: &std::sync::mpsc::Receiver<String>, n: usize, pred: impl Fn(&str) -> bool) -> Vec<String> {
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

// ───────────────────────────── config files and metrics ─────────────────────────────

/// Write a file atomically (a watcher never sees it half written).
pub fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub type Labels = BTreeMap<String, String>;

/// Scrape `/stats/prometheus` and parse it strictly; (metric name, labels, value) of every
/// sample, histogram and summary parts named `NAME:Type`.
pub fn scrape(admin_port: u16) -> Vec<(String, Labels, f64)> {
    let r = get(admin_port, "localhost", "/stats/prometheus", &[]).unwrap();
    assert_eq!(r.status, 200);
    let parsed = match Scrape::parse(&r.body) {
        Ok(s) => s,
        Err(e) => panic!("/stats/prometheus is not valid Prometheus text: {e:?}\n{}", r.body),
    };
    let mut out = Vec::new();
    for m in parsed.metrics {
        for s in m.samples {
            let labels: Labels = s.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect();
            let name = match s.value.value_type {
                ValueType::Sample => m.name.clone(),
                other => format!("{}:{other:?}", m.name),
            };
            out.push((name, labels, s.value.value.as_f64()));
        }
    }
    out
}

pub fn find<'a>(
    samples: &'a [(String, Labels, f64)],
    name: &str,
    want: &[(&str, &str)],
) -> Vec<&'a (String, Labels, f64)> {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .collect()
}

pub fn value(samples: &[(String, Labels, f64)], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:#?}");
    found[0].2
}
