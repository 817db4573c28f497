#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Data-plane events in Portico's own metrics, end to end over the real binary: retries,
//! circuit-breaker overflows, outlier ejections (also in `/clusters`), TLS handshake failures
//! by reason, and the upstream local address and SNI in access-log lines. Real backends, real
//! clients, `/stats/prometheus` read with a strict Prometheus text parser.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use portico_testkit::blocking::https_get;
use portico_testkit::certs::{Ca, Leaf};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

// ───────────────────────────── backend ─────────────────────────────

/// A scripted HTTP backend (HTTP/1.1 and h2c): `/peer` answers with the client address it saw;
/// `/status/N` answers N; `/fail-once/KEY` answers 503 the first time per KEY, then 200;
/// `/hold` reports its arrival and answers only once [`Backend::release`] is called.
struct Backend {
    port: u16,
    arrived: mpsc::Receiver<()>,
    release: Arc<tokio::sync::Semaphore>,
    _thread: std::thread::JoinHandle<()>,
}

impl Backend {
    fn release(&self) {
        self.release.add_permits(1);
    }
}

fn backend() -> Backend {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let (tx, arrived) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let rel = release.clone();
    let failed: Arc<Mutex<HashSet<String>>> = Arc::default();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, peer)) = listener.accept().await else { continue };
                let (tx, rel, failed) = (tx.clone(), rel.clone(), failed.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (tx, rel, failed) = (tx.clone(), rel.clone(), failed.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let (status, body) = if path == "/peer" {
                                (200, peer.to_string())
                            } else if let Some(n) = path.strip_prefix("/status/") {
                                (n.parse().unwrap_or(500), String::new())
                            } else if let Some(key) = path.strip_prefix("/fail-once/") {
                                let first = failed.lock().unwrap().insert(key.to_string());
                                (if first { 503 } else { 200 }, String::new())
                            } else if path == "/hold" {
                                let _ = tx.lock().unwrap().send(());
                                let _permit = rel.acquire().await;
                                (200, "held".to_string())
                            } else {
                                (200, "ok".to_string())
                            };
                            let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    });
    Backend { port, arrived, release, _thread: thread }
}

// ───────────────────────────── certificates ─────────────────────────────

/// A client trusting `ca`, presenting `client` if given.
fn client_config(ca: &Ca, client: Option<&Leaf>) -> rustls::ClientConfig {
    portico_testkit::certs::client_config(&[&ca.pem], client, &[])
}

// ───────────────────────────── config, scrape ─────────────────────────────

/// One backend behind four services, one per concern so their counters stay apart:
/// r (retries 1 on 5xx), o (`http2MaxRequests: 1`), e (eject after one 5xx), a (plain).
/// Port 80 is HTTP; port 443 has app.example.com (SIMPLE) and mtls.example.com (MUTUAL).
fn config(dir: &Path, port: u16, ca: &Ca) -> String {
    let server = ca.server(&["app.example.com", "mtls.example.com"]);
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let cas = dir.join("ca.crt");
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    std::fs::write(&cas, &ca.pem).unwrap();
    let (cert, key, cas) = (cert.display(), key.display(), cas.display());
    let mut s = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - {{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [app.example.com]
    tls: {{mode: SIMPLE, serverCertificate: "{cert}", privateKey: "{key}"}}
  - port: {{number: 443, name: mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, serverCertificate: "{cert}", privateKey: "{key}", caCertificates: "{cas}"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: o, namespace: default}}
spec:
  host: o.backend
  trafficPolicy: {{connectionPool: {{http: {{http2MaxRequests: 1}}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: e, namespace: default}}
spec:
  host: e.backend
  trafficPolicy:
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 300s, maxEjectionPercent: 100}}
"#
    );
    for (svc, retries) in
        [("r", "{attempts: 1, retryOn: 5xx}"), ("o", "{attempts: 0}"), ("e", "{attempts: 0}"), ("a", "{attempts: 0}")]
    {
        let host = if svc == "a" { "app".to_string() } else { svc.to_string() };
        s.push_str(&format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {svc}, namespace: default}}
spec:
  hosts: [{svc}.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {svc}, namespace: default}}
spec:
  hosts: [{host}.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: {svc}.backend}}}}], retries: {retries}}}]
"#
        ));
    }
    s
}

/// Scrape until `name{want}` reaches `at_least` (the gateway counts a failed handshake on its
/// own task, after the client has seen the connection close), then return the last value.
fn wait_value(admin_port: u16, name: &str, want: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = value(&scrape(admin_port), name, want);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Scrape until `name{want}` equals `v` (a gauge that settles), then return the last value.
fn wait_value_eq(admin_port: u16, name: &str, want: &[(&str, &str)], v: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = value(&scrape(admin_port), name, want);
        if got == v || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Setup {
    gw: Gateway,
    https: u16,
    lines: mpsc::Receiver<String>,
    backend: Backend,
    ca: Ca,
    dir: tempfile::TempDir,
}

fn setup(log_format: &str) -> Setup {
    let backend = backend();
    let ca = Ca::new("portico test CA");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("gw.yaml"), &config(dir.path(), backend.port, &ca));
    let https = free_port();
    let (gw, lines) = start_gateway_piped(
        &dir.path().join("gw.yaml"),
        &["--port-map", &format!("443={https}"), "--access-log-format", log_format],
    );
    wait_port(https);
    Setup { gw, https, lines, backend, ca, dir }
}

const R: &str = "outbound|80||r.backend";
const O: &str = "outbound|80||o.backend";
const E: &str = "outbound|80||e.backend";

// ───────────────────────────── tests ─────────────────────────────

/// A request whose first try gets a 503 and whose retry (`retryOn: 5xx`) gets a 200: one retry
/// and one retry success for that cluster, none for the others.
#[test]
fn a_retried_request_counts_one_retry() {
    let t = setup("text");
    let r = get(t.gw.http_port, "r.example.com", "/fail-once/k", &[]).unwrap();
    assert_eq!(r.status, 200, "the retry got the backend's second answer");
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, "portico_upstream_retries_total", &[("cluster_name", R)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_retry_successes_total", &[("cluster_name", R)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_retries_total", &[("cluster_name", O)]), 0.0);
    let stats = get(t.gw.admin_port, "localhost", "/stats", &[]).unwrap().body;
    assert!(stats.contains(&format!("cluster.{R}.upstream_rq_retry: 1\n")), "{stats}");
    assert!(stats.contains(&format!("cluster.{R}.upstream_rq_retry_success: 1\n")), "{stats}");
    // A request that fails for good is no retry success.
    assert_eq!(get(t.gw.http_port, "r.example.com", "/status/503", &[]).unwrap().status, 503);
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, "portico_upstream_retries_total", &[("cluster_name", R)]), 2.0);
    assert_eq!(value(&s, "portico_upstream_retry_successes_total", &[("cluster_name", R)]), 1.0);
    // One connection per try to the one endpoint; pooled and idle once the responses are done.
    assert!(value(&s, "portico_upstream_connections_total", &[("cluster_name", R)]) >= 1.0);
}

/// `http2MaxRequests: 1`: while one request is in flight a second one overflows (503 `UO`),
/// counted under `resource="requests"`.
#[test]
fn concurrent_request_past_max_requests_counts_an_overflow() {
    let t = setup("text");
    let port = t.gw.http_port;
    let held = std::thread::spawn(move || get(port, "o.example.com", "/hold", &[]).unwrap());
    t.backend.arrived.recv_timeout(Duration::from_secs(10)).expect("the first request reached the backend");
    // While the first is held: one request and one connection to the cluster, one client
    // connection (others, like the readiness probes, close on their own: wait for them).
    let admin = t.gw.admin_port;
    assert_eq!(wait_value_eq(admin, "portico_downstream_connections_active", &[], 1.0), 1.0);
    let s = scrape(admin);
    assert_eq!(value(&s, "portico_upstream_requests_active", &[("cluster_name", O)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_connections_active", &[("cluster_name", O)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_connections_idle", &[("cluster_name", O)]), 0.0);
    let r = get(port, "o.example.com", "/second", &[]).unwrap();
    assert_eq!(r.status, 503);
    t.backend.release();
    assert_eq!(held.join().unwrap().status, 200);
    // The connection goes back to the pool once the response is done.
    assert_eq!(wait_value_eq(admin, "portico_upstream_connections_idle", &[("cluster_name", O)], 1.0), 1.0);
    assert_eq!(value(&scrape(admin), "portico_upstream_connections_active", &[("cluster_name", O)]), 1.0);
    let s = scrape(t.gw.admin_port);
    let res = |r| [("cluster_name", O), ("resource", r)];
    assert_eq!(value(&s, "portico_upstream_circuit_breaker_overflows_total", &res("requests")), 1.0);
    assert_eq!(value(&s, "portico_upstream_circuit_breaker_overflows_total", &res("connections")), 0.0);
    assert_eq!(value(&s, "portico_upstream_circuit_breaker_overflows_total", &res("retries")), 0.0);
    // Envoy's stat name in `/stats`, the line Istio's circuit-breaking task greps for.
    let stats = get(t.gw.admin_port, "localhost", "/stats", &[]).unwrap().body;
    assert!(stats.contains(&format!("cluster.{O}.upstream_rq_pending_overflow: 1\n")), "{stats}");
    assert!(stats.contains(&format!("cluster.{R}.upstream_rq_pending_overflow: 0\n")), "{stats}");
    let log = wait_lines(&t.lines, 1, |l| l.contains(r#""GET /second HTTP/1.1" 503 UO"#));
    assert_eq!(log.len(), 1);
    // After both: the pool has the connections back, idle.
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, "portico_upstream_requests_active", &[("cluster_name", O)]), 0.0);
}

/// One 5xx with `consecutive5xxErrors: 1` ejects the endpoint: the ejection gauge and counter,
/// and `/clusters` (text and JSON) report it as Envoy spells it.
#[test]
fn outlier_ejection_shows_in_metrics_and_clusters() {
    let t = setup("text");
    let ep = format!("127.0.0.1:{}", t.backend.port);
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, "portico_upstream_outlier_ejections_active", &[("cluster_name", E)]), 0.0);
    let text = get(t.gw.admin_port, "localhost", "/clusters", &[]).unwrap().body;
    assert!(text.contains(&format!("{E}::{ep}::health_flags::healthy\n")), "{text}");

    assert_eq!(get(t.gw.http_port, "e.example.com", "/status/503", &[]).unwrap().status, 503);
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, "portico_upstream_outlier_ejections_active", &[("cluster_name", E)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_outlier_ejections_total", &[("cluster_name", E)]), 1.0);
    assert_eq!(value(&s, "portico_upstream_outlier_ejections_total", &[("cluster_name", R)]), 0.0);
    let stats = get(t.gw.admin_port, "localhost", "/stats", &[]).unwrap().body;
    assert!(stats.contains(&format!("cluster.{E}.outlier_detection.ejections_active: 1\n")), "{stats}");

    let text = get(t.gw.admin_port, "localhost", "/clusters", &[]).unwrap().body;
    assert!(text.contains(&format!("{E}::{ep}::health_flags::/failed_outlier_check\n")), "{text}");
    assert!(text.contains(&format!("{E}::{ep}::times_ejected::1\n")), "{text}");
    assert!(text.contains(&format!("{E}::{ep}::weight::1\n")), "{text}");
    assert!(text.contains(&format!("{R}::{ep}::health_flags::healthy\n")), "other clusters unaffected: {text}");
    let until = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{E}::{ep}::ejected_until::")))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("ejected_until");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(until > now + 200.0 && until < now + 301.0, "300 s ejection: {until} vs now {now}");
    assert!(text.contains(&format!("{O}::default_priority::max_requests::1\n")), "{text}");

    let r = get(t.gw.admin_port, "localhost", "/clusters?format=json", &[]).unwrap();
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let statuses = j["cluster_statuses"].as_array().unwrap();
    let e = statuses.iter().find(|c| c["name"] == E).expect("e cluster");
    let host = &e["host_statuses"][0];
    assert_eq!(host["address"]["socket_address"]["port_value"], t.backend.port);
    assert_eq!(host["health_status"]["failed_outlier_check"], true);
    assert_eq!(host["outlier"]["times_ejected"], 1);
    assert_eq!(host["weight"], 1);
    let o = statuses.iter().find(|c| c["name"] == O).expect("o cluster");
    assert_eq!(o["circuit_breakers"]["thresholds"][0]["max_requests"], 1);
    assert_eq!(o["host_statuses"][0]["health_status"]["failed_outlier_check"], false);
}

/// Refused downstream handshakes are counted by reason: an SNI no server has, a missing client
/// certificate and one from an unknown CA on a MUTUAL server. A good handshake counts nothing.
#[test]
fn tls_handshake_failures_by_reason() {
    let t = setup("text");
    let reason = |r| [("reason", r)];
    let name = "portico_tls_handshake_failures_total";

    assert!(https_get(t.https, "nope.example.com", "/", client_config(&t.ca, None)).is_err());
    assert_eq!(wait_value(t.gw.admin_port, name, &reason("no_certificate"), 1.0), 1.0);

    assert!(https_get(t.https, "mtls.example.com", "/", client_config(&t.ca, None)).is_err());
    assert_eq!(wait_value(t.gw.admin_port, name, &reason("certificate_required"), 1.0), 1.0);

    let stranger = Ca::new("another CA").server(&["client.example.com"]);
    assert!(https_get(t.https, "mtls.example.com", "/", client_config(&t.ca, Some(&stranger))).is_err());
    assert_eq!(wait_value(t.gw.admin_port, name, &reason("bad_certificate"), 1.0), 1.0);

    let good = t.ca.server(&["client.example.com"]);
    let r = https_get(t.https, "mtls.example.com", "/", client_config(&t.ca, Some(&good)));
    // No route for mtls.example.com: a 404 from the gateway, after a good handshake.
    assert_eq!(r.map(|r| r.status), Ok(404));
    let s = scrape(t.gw.admin_port);
    let total: f64 =
        ["no_certificate", "certificate_required", "bad_certificate", "protocol_version", "timeout", "other"]
            .iter()
            .map(|r| value(&s, name, &reason(r)))
            .sum();
    assert_eq!(total, 3.0, "one failure per refused handshake, none for the good one");
}

/// Completed handshakes are counted full or resumed: a client's second connection resumes its
/// session with the ticket of the first; a client with a store of its own starts afresh.
#[test]
fn tls_handshakes_full_and_resumed() {
    let t = setup("text");
    let name = "portico_tls_handshakes_total";
    let session = |s| [("session", s)];
    let returning = client_config(&t.ca, None);
    for _ in 0..3 {
        assert_eq!(https_get(t.https, "app.example.com", "/", returning.clone()).map(|r| r.status), Ok(200));
    }
    assert_eq!(https_get(t.https, "app.example.com", "/", client_config(&t.ca, None)).map(|r| r.status), Ok(200));
    assert_eq!(wait_value(t.gw.admin_port, name, &session("resumed"), 2.0), 2.0);
    assert_eq!(wait_value(t.gw.admin_port, name, &session("full"), 2.0), 2.0);
    // A refused handshake is a failure, not a handshake.
    assert!(https_get(t.https, "nope.example.com", "/", client_config(&t.ca, None)).is_err());
    assert_eq!(
        wait_value(t.gw.admin_port, "portico_tls_handshake_failures_total", &[("reason", "no_certificate")], 1.0),
        1.0
    );
    let s = scrape(t.gw.admin_port);
    assert_eq!(value(&s, name, &session("full")) + value(&s, name, &session("resumed")), 4.0);
}

/// `%UPSTREAM_LOCAL_ADDRESS%` is the address the backend saw the request come from, and
/// `%REQUESTED_SERVER_NAME%` the SNI, in JSON lines; plain HTTP has no SNI.
#[test]
fn access_log_has_upstream_local_address_and_sni() {
    let t = setup("json");
    let over_tls = https_get(t.https, "app.example.com", "/peer", client_config(&t.ca, None)).unwrap();
    assert_eq!(over_tls.status, 200);
    let plain = get(t.gw.http_port, "app.example.com", "/peer", &[]).unwrap();
    assert_eq!(plain.status, 200);
    let lines = wait_lines(&t.lines, 2, |l| l.starts_with('{') && l.contains("/peer"));
    let j: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tls = j.iter().find(|j| j["requested_server_name"] == "app.example.com").expect("a line with the SNI");
    assert_eq!(tls["upstream_local_address"], over_tls.body.as_str(), "{tls}");
    let http = j.iter().find(|j| j["requested_server_name"].is_null()).expect("a line without SNI");
    assert_eq!(http["upstream_local_address"], plain.body.as_str(), "{http}");
    assert_ne!(http["upstream_local_address"], http["upstream_host"]);
}

/// The same two fields in Istio's default text format.
#[test]
fn text_access_log_has_upstream_local_address_and_sni() {
    let t = setup("text");
    let over_tls = https_get(t.https, "app.example.com", "/peer", client_config(&t.ca, None)).unwrap();
    assert_eq!(over_tls.status, 200);
    let line = wait_lines(&t.lines, 1, |l| l.contains("/peer")).remove(0);
    // … "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS%
    // %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
    let want = format!(" outbound|80||a.backend {} ", over_tls.body);
    assert!(line.contains(&want), "{want:?} in {line}");
    assert!(line.contains(" app.example.com "), "{line}");
}

/// The TCP proxy's access-log line carries the upstream connection's local address too.
#[test]
fn tcp_access_log_has_upstream_local_address() {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = backend.local_addr().unwrap().port();
    let (tx, peer) = mpsc::channel();
    std::thread::spawn(move || {
        if let Some(Ok(mut s)) = backend.incoming().next() {
            let _ = tx.send(s.peer_addr().unwrap().to_string());
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("tcp.yaml"),
        &format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.backend]
  resolution: STATIC
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {bport}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{{route: [{{destination: {{host: db.backend}}}}]}}]
"#
        ),
    );
    let (gw, lines) = start_gateway_piped(dir.path(), &["--access-log-format", "json"]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    c.read_exact(&mut got).unwrap();
    drop(c);
    let seen = peer.recv_timeout(Duration::from_secs(10)).unwrap();
    let line = wait_lines(&lines, 1, |l| l.starts_with('{')).remove(0);
    let j: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(j["upstream_local_address"], seen.as_str(), "{line}");
}

/// A change that does not parse is a failed reload: counted, the last good config keeps
/// serving, and the last-good time stays where it was.
#[test]
fn failed_reload_is_counted_and_last_good_time_kept() {
    let t = setup("text");
    let admin = t.gw.admin_port;
    let s = scrape(admin);
    assert_eq!(value(&s, "portico_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(value(&s, "portico_config_reloads_total", &[("result", "failed")]), 0.0);
    assert_eq!(value(&s, "portico_listeners", &[]), 2.0);
    let good = value(&s, "portico_config_last_reload_success_timestamp_seconds", &[]);
    assert!(good > 1.0e9);
    let file = t.dir.path().join("gw.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    write(&file, &format!("{text}\n---\nkind: [unclosed\n"));
    assert_eq!(wait_value(admin, "portico_config_reloads_total", &[("result", "failed")], 1.0), 1.0);
    let s = scrape(admin);
    assert_eq!(value(&s, "portico_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(value(&s, "portico_config_last_reload_success_timestamp_seconds", &[]), good);
    assert_eq!(get(t.gw.http_port, "app.example.com", "/", &[]).unwrap().status, 200, "last good config serves");
}
