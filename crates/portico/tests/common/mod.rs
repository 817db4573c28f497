//! Helpers for driving the real binaries: free ports, processes that are killed on drop, a
//! blocking HTTP/1.1 client (hyper; real sockets, no mocking), metrics scraping. The generic
//! pieces live in `portico-testkit`; this module keeps the names the test files use.
#![allow(dead_code)]
// Each test binary uses some of the re-exports below.
#![allow(unused_imports)]

use prom_text_format_parser::{Scrape, ValueType};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// Shared with the proxy's tests (crates/testkit); the names test files use stay here.
pub use portico_testkit::blocking::Resp;
pub use portico_testkit::net::{free_port, wait_port};
pub use portico_testkit::process::{wait_lines, Gateway, Proc};

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
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

/// `portico run` on `config`, with Gateway port 80 mapped to a free local port.
pub fn start_gateway(config: &Path, extra: &[&str]) -> Gateway {
    portico_testkit::process::start_gateway(Path::new(env!("CARGO_BIN_EXE_portico")), config, extra)
}

/// `portico run` like [`start_gateway`], with its stdout (the access log) read line by line into
/// the returned channel.
pub fn start_gateway_piped(config: &Path, extra: &[&str]) -> (Gateway, std::sync::mpsc::Receiver<String>) {
    portico_testkit::process::start_gateway_piped(Path::new(env!("CARGO_BIN_EXE_portico")), config, extra)
}

/// One HTTP/1.1 request on a new connection (`Connection: close`), read to the end (hyper's
/// client: chunked bodies are decoded).
pub fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Resp> {
    portico_testkit::blocking::get(port, host, path, headers)
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
