//! Benchmark (not a test): `portico run --kubernetes` against the fake API server holding many
//! objects. Reports the time to ready, memory, and the time from one object change to its effect.
//!
//! `kube-scale PORTICO_BIN [VIRTUAL_SERVICES] [SERVICES]` (defaults 10000 and 5000); see
//! bench/kube-scale.sh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark driver: fail loudly

use bytes::Bytes;
use http_body_util::Full;
use portico_fakekube::FakeApi;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Status code of `GET /` with `Host: host`, or 0 when the connection fails.
fn status(port: u16, host: &str, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).expect("usage: kube-scale PORTICO_BIN [VIRTUAL_SERVICES] [SERVICES]").clone();
    let n_vs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let n_svc: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5_000).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();

    // One backend for every endpoint: the change is seen in routing, not in the backend.
    let backend = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    rt.spawn(async move {
        loop {
            let Ok((s, _)) = backend.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });

    let api = rt.block_on(FakeApi::start()).unwrap();
    api.install_istio("v1");
    let seed = Instant::now();
    let _g = rt.enter();
    api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "istio-system"},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*/*.bench.example"]}]}}));
    for i in 0..n_svc {
        let ns = format!("ns{}", i % 50);
        api.apply(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc{i}"), "namespace": ns},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        );
        api.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod{i}"), "namespace": ns,
            "labels": {"app": format!("svc{i}"), "version": "v1"}}}));
        api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc{i}-abc"), "namespace": ns, "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": backend_port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                "targetRef": {"kind": "Pod", "name": format!("pod{i}"), "namespace": ns}}]}));
    }
    let vs = |i: usize, host: &str| {
        let s = i % n_svc;
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": format!("vs{i}"), "namespace": format!("ns{}", s % 50)},
            "spec": {"hosts": [host], "gateways": ["istio-system/gw"],
                "http": [{"route": [{"destination": {"host": format!("svc{s}"), "port": {"number": 80}}}]}]}})
    };
    for i in 0..n_vs {
        api.apply(vs(i, &format!("vs{i}.bench.example")));
    }
    eprintln!("seeded {n_vs} VirtualServices, {n_svc} Services/EndpointSlices/Pods in {:?}", seed.elapsed());

    let dir = std::env::temp_dir().join(format!("kube-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let (http, admin) = (free_port(), free_port());
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .args(["run", "--kubernetes", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http}"), "--admin", &format!("127.0.0.1:{admin}")])
        .args(["--access-log", "off"])
        .env("PORTICO_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start portico");
    while status(admin, "localhost", "/healthz/ready") != 200 {
        if start.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("not ready after 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = start.elapsed();
    let last = n_vs.saturating_sub(1);
    assert_eq!(status(http, &format!("vs{last}.bench.example"), "/"), 200, "the last VirtualService serves");
    let (rss, hwm) = memory(child.id());

    // One object changed, its effect timed: a VirtualService gets a new host.
    let mut changes = Vec::new();
    for round in 0..5 {
        let host = format!("changed{round}.bench.example");
        let t = Instant::now();
        api.apply(vs(0, &host));
        while status(http, &host, "/") != 200 {
            assert!(t.elapsed() < Duration::from_secs(120), "change {round} never took effect");
            std::thread::sleep(Duration::from_millis(2));
        }
        changes.push(t.elapsed());
    }
    changes.sort();
    let (rss_after, hwm_after) = memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!("objects: {n_vs} VirtualServices, {n_svc} Services + {n_svc} EndpointSlices + {n_svc} Pods");
    println!("time to ready:          {:.2} s", ready.as_secs_f64());
    println!("memory when ready:      RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
    println!("memory after changes:   RSS {rss_after:.1} MiB (peak {hwm_after:.1} MiB)");
    println!(
        "change → effect (5 VirtualService updates): min {:.0} ms, median {:.0} ms, max {:.0} ms",
        changes[0].as_secs_f64() * 1000.0,
        changes[2].as_secs_f64() * 1000.0,
        changes[4].as_secs_f64() * 1000.0
    );
}
