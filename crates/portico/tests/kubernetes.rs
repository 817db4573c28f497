#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico run --kubernetes`: the real binary pointed at a fake API server (list, watch, 410,
//! bookmarks) through a kubeconfig, real backends (`portico-echo`), real clients.

mod common;

use common::*;
use portico_fakekube::FakeApi;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Cluster {
    rt: tokio::runtime::Runtime,
    api: FakeApi,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(istio_version: &str) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let api = rt.block_on(FakeApi::start()).unwrap();
        api.install_istio(istio_version);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig()).unwrap();
        Cluster { rt, api, dir }
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn apply(&self, obj: Value) {
        let _g = self.rt.enter();
        self.api.apply(obj);
    }

    fn restart(&self) {
        self.rt.block_on(self.api.restart()).unwrap();
    }
}

/// `portico run --kubernetes` on `kubeconfig`; Gateway port 80 on a free local port. Returns
/// without waiting for readiness.
fn start(kubeconfig: &Path, extra: &[&str]) -> Gateway {
    let http_port = free_port();
    let admin_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "--kubernetes", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--workers", "2"])
        .args(["--gateway-namespace", "istio-system"])
        .args(extra)
        .env("PORTICO_LOG", std::env::var("TEST_PORTICO_LOG").unwrap_or_else(|_| "warn".into()))
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .spawn()
        .expect("start portico");
    wait_port(admin_port);
    Gateway { proc: Proc(child), http_port, admin_port }
}

fn ready(gw: &Gateway) -> bool {
    get(gw.admin_port, "localhost", "/healthz/ready", &[]).is_ok_and(|r| r.status == 200)
}

fn wait_ready(gw: &Gateway) {
    wait_until("gateway ready", || ready(gw));
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config_dump(gw: &Gateway) -> Value {
    serde_json::from_str(&get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap().body).unwrap()
}

// ───────────────────────────── objects ─────────────────────────────

fn gateway(https: bool) -> Value {
    let mut servers =
        vec![json!({"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["dev.example.com"]})];
    if https {
        servers.push(json!({"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*.example.com"],
            "tls": {"mode": "SIMPLE", "credentialName": "my-cert-secret"}}));
    }
    json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "my-gateway", "namespace": "istio-system"},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers}})
}

fn virtual_service(name: &str, http: Value) -> Value {
    json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"hosts": ["dev.example.com"], "gateways": ["istio-system/my-gateway"], "http": http}})
}

/// The seed's route: `/reviews` → reviews:9080.
fn seed_vs() -> Value {
    virtual_service(
        "bookinfo",
        json!([{"match": [{"uri": {"prefix": "/reviews"}}], "route": [{"destination": {"host": "reviews", "port": {"number": 9080}}}]}]),
    )
}

fn service(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "echo"}]}, "status": {"podIP": "127.0.0.1"}})
}

/// One EndpointSlice per pod: every pod is 127.0.0.1, told apart by its port.
fn slice(service: &str, pod: &str, port: u16, conditions: Value) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-{pod}"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": conditions,
            "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}}]})
}

fn ready_cond() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

/// The seed's certificate Secret, as shipped in examples/seed.
fn seed_secret() -> Value {
    let text = std::fs::read_to_string(repo("examples/seed/04-secret.yaml")).unwrap();
    let field =
        |k: &str| text.lines().find_map(|l| l.trim().strip_prefix(&format!("{k}: ")).map(str::to_string)).unwrap();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "my-cert-secret", "namespace": "istio-system"},
        "data": {"tls.crt": field("tls.crt"), "tls.key": field("tls.key")}})
}

fn curl_available() -> bool {
    Command::new("curl").arg("--version").output().is_ok()
}

/// An HTTPS GET with curl trusting only `ca` (a file); (body, ok).
fn curl_https(port: u16, ca: &Path) -> (String, bool) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("dev.example.com:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://dev.example.com:{port}/reviews"))
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("curl: {}", String::from_utf8_lossy(&out.stderr));
    }
    (String::from_utf8_lossy(&out.stdout).to_string(), out.status.success())
}

/// Requests in a loop on other threads until stopped; counts answers by body and failures.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(port: u16, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    // Bounded: at most 20 000 requests per thread.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        total.fetch_add(1, Ordering::Relaxed);
                        match get(port, "dev.example.com", "/reviews", &[]) {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("{} {}", r.status, r.body));
                            }
                            Err(e) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                errors.push(e.to_string());
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load { stop, failures, total, threads }
    }

    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        (self.total.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed), errors)
    }
}

fn body(gw: &Gateway) -> String {
    get(gw.http_port, "dev.example.com", "/reviews", &[]).map(|r| r.body.trim().to_string()).unwrap_or_default()
}

/// Which backends answer `n` requests.
fn answers(gw: &Gateway, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get(gw.http_port, "dev.example.com", "/reviews", headers).unwrap();
        *seen.entry(format!("{} {}", r.status, r.body.trim())).or_default() += 1;
    }
    seen
}

// ───────────────────────────── tests ─────────────────────────────

/// The seed's Gateway + VirtualService + Secret, with a Service and its EndpointSlice instead of
/// the ServiceEntry, applied through the API: dev.example.com is served over HTTP and HTTPS.
#[test]
fn seed_through_the_api_serves_https() {
    let c = Cluster::new("v1");
    let backend = free_port();
    let _b = echo_backend(backend, "reviews");
    c.apply(gateway(true));
    c.apply(seed_vs());
    c.apply(seed_secret());
    c.apply(service("reviews", 9080));
    c.apply(pod("reviews-1", json!({"app": "reviews", "version": "v1"})));
    c.apply(slice("reviews", "reviews-1", backend, ready_cond()));
    let https = free_port();
    let gw = start(&c.kubeconfig(), &["--port-map", &format!("443={https}")]);
    wait_ready(&gw);
    assert_eq!(body(&gw), "reviews");
    if !curl_available() {
        eprintln!("SKIP (https part): curl is not installed");
        return;
    }
    wait_port(https);
    let (text, ok) = curl_https(https, &repo("examples/seed/ca.crt"));
    assert!(ok, "curl failed: {text}");
    assert_eq!(text.trim(), "reviews");
    let dump = config_dump(&gw);
    assert_eq!(dump["sources"]["kubernetes"]["synced"], json!(true));
}

/// Readiness stays false while the API server cannot be reached, and turns true once every
/// watcher has listed.
#[test]
fn not_ready_until_synced() {
    let c = Cluster::new("v1");
    let backend = free_port();
    let _b = echo_backend(backend, "reviews");
    c.apply(gateway(false));
    c.apply(seed_vs());
    c.apply(service("reviews", 9080));
    c.apply(slice("reviews", "reviews-1", backend, ready_cond()));
    c.api.stop();
    let status_port = free_port();
    let gw = start(&c.kubeconfig(), &["--status", &format!("127.0.0.1:{status_port}")]);
    wait_port(status_port);
    for _ in 0..20 {
        let r = get(gw.admin_port, "localhost", "/healthz/ready", &[]).unwrap();
        assert_eq!(r.status, 503, "ready before any list: {}", r.body);
        let r = get(status_port, "localhost", "/healthz/ready", &[]).unwrap();
        assert_eq!(r.status, 503, "the status port says the same: {}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The status port serves readiness only (it faces the load balancer).
    assert_eq!(get(status_port, "localhost", "/config_dump", &[]).unwrap().status, 404);
    let samples = scrape(gw.admin_port);
    assert_eq!(value(&samples, "portico_source_synced", &[("source", "kubernetes")]), 0.0);
    assert_eq!(config_dump(&gw)["ready"], json!(false));
    c.restart();
    wait_ready(&gw);
    assert_eq!(get(status_port, "localhost", "/healthz/ready", &[]).unwrap().status, 200);
    assert_eq!(body(&gw), "reviews");
    let samples = scrape(gw.admin_port);
    assert_eq!(value(&samples, "portico_source_synced", &[("source", "kubernetes")]), 1.0);
    let errors: f64 = find(&samples, "portico_source_watch_errors_total", &[]).iter().map(|s| s.2).sum();
    assert!(errors > 0.0, "the failed calls while the API was away are counted");
}

/// A DestinationRule's subsets select pods by their labels: a header sends to v2, the rest is
/// split 75/25 between v1 and v2.
#[test]
fn subsets_select_pods_by_labels() {
    let c = Cluster::new("v1");
    let (p1, p2) = (free_port(), free_port());
    let _b1 = echo_backend(p1, "reviews-v1");
    let _b2 = echo_backend(p2, "reviews-v2");
    c.apply(gateway(false));
    c.apply(virtual_service(
        "bookinfo",
        json!([
            {"match": [{"headers": {"x-canary": {"exact": "always"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}]},
            {"route": [
                {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 75},
                {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 25}]}
        ]),
    ));
    c.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
    c.apply(service("reviews", 9080));
    c.apply(pod("r1", json!({"app": "reviews", "version": "v1"})));
    c.apply(pod("r2", json!({"app": "reviews", "version": "v2"})));
    c.apply(slice("reviews", "r1", p1, ready_cond()));
    c.apply(slice("reviews", "r2", p2, ready_cond()));
    let gw = start(&c.kubeconfig(), &[]);
    wait_ready(&gw);
    let seen = answers(&gw, 50, &[("x-canary", "always")]);
    assert_eq!(seen.get("200 reviews-v2"), Some(&50), "{seen:?}");
    // 400 requests, expected 300/100; binomial sd ≈ 8.7: ±40 is over 4.5 sd.
    let seen = answers(&gw, 400, &[]);
    let v1 = seen.get("200 reviews-v1").copied().unwrap_or(0);
    let v2 = seen.get("200 reviews-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 400, "{seen:?}");
    assert!((260..=340).contains(&v1), "75/25 split off: {seen:?}");
    // Relabel r2 as v1: the v2 subset has no pods left, v1 has both.
    c.apply(pod("r2", json!({"app": "reviews", "version": "v1"})));
    wait_until("subset v2 empty", || answers(&gw, 10, &[("x-canary", "always")]).keys().all(|k| k.starts_with("503")));
    let seen = answers(&gw, 200, &[]);
    assert!(seen.contains_key("200 reviews-v2"), "pod r2 now serves subset v1: {seen:?}");
}

/// EndpointSlice changes under load: a pod added, a pod not ready, a pod terminating — each
/// changes where requests go, and no request fails.
#[test]
fn endpoint_slice_changes_under_load_lose_nothing() {
    let c = Cluster::new("v1");
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "pod-a");
    let _b = echo_backend(pb, "pod-b");
    c.apply(gateway(false));
    c.apply(seed_vs());
    c.apply(service("reviews", 9080));
    c.apply(pod("a", json!({"app": "reviews"})));
    c.apply(pod("b", json!({"app": "reviews"})));
    c.apply(slice("reviews", "a", pa, ready_cond()));
    let gw = start(&c.kubeconfig(), &[]);
    wait_ready(&gw);
    assert_eq!(body(&gw), "pod-a");
    let load = Load::start(gw.http_port, 3);

    // Pod b added.
    c.apply(slice("reviews", "b", pb, ready_cond()));
    wait_until("pod b gets traffic", || answers(&gw, 20, &[]).contains_key("200 pod-b"));
    // Pod a not ready: only b.
    c.apply(slice("reviews", "a", pa, json!({"ready": false, "serving": false, "terminating": false})));
    wait_until("only pod b", || answers(&gw, 20, &[]).keys().all(|k| k == "200 pod-b"));
    let seen = answers(&gw, 200, &[]);
    assert_eq!(seen.get("200 pod-b"), Some(&200), "a pod that is not ready takes no requests: {seen:?}");
    // Pod a ready again, pod b terminating (still serving what it has): only a.
    c.apply(slice("reviews", "a", pa, ready_cond()));
    c.apply(slice("reviews", "b", pb, json!({"ready": false, "serving": true, "terminating": true})));
    wait_until("only pod a", || answers(&gw, 20, &[]).keys().all(|k| k == "200 pod-a"));
    // Not by chance: it stays so.
    let seen = answers(&gw, 200, &[]);
    assert_eq!(seen.get("200 pod-a"), Some(&200), "a terminating pod takes no new requests: {seen:?}");

    let (total, failures, errors) = load.finish();
    assert!(total > 50, "the load ran: {total}");
    assert_eq!(failures, 0, "{failures} of {total} failed: {errors:?}");
}

/// A new certificate in the Secret is used by the next handshakes.
#[test]
fn secret_rotation_is_used_by_new_handshakes() {
    if !curl_available() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let pki = || {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct subjects: OpenSSL takes a leaf named like its issuer for self-signed.
        ca_params.distinguished_name.push(DnType::CommonName, "rotation test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["dev.example.com".into()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "dev.example.com");
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    };
    let secret = |cert: &str, key: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "my-cert-secret", "namespace": "istio-system"},
            "stringData": {"tls.crt": cert, "tls.key": key}})
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = pki();
    let (ca2, cert2, key2) = pki();
    std::fs::write(dir.path().join("ca1.pem"), ca1).unwrap();
    std::fs::write(dir.path().join("ca2.pem"), ca2).unwrap();

    let c = Cluster::new("v1");
    let backend = free_port();
    let _b = echo_backend(backend, "reviews");
    c.apply(gateway(true));
    c.apply(seed_vs());
    c.apply(secret(&cert1, &key1));
    c.apply(service("reviews", 9080));
    c.apply(slice("reviews", "r1", backend, ready_cond()));
    let https = free_port();
    let gw = start(&c.kubeconfig(), &["--port-map", &format!("443={https}")]);
    wait_ready(&gw);
    wait_port(https);
    assert_eq!(curl_https(https, &dir.path().join("ca1.pem")), ("reviews\n".to_string(), true));
    assert!(!curl_https(https, &dir.path().join("ca2.pem")).1, "the second CA is not trusted yet");

    c.apply(secret(&cert2, &key2));
    wait_until("the rotated certificate is served", || curl_https(https, &dir.path().join("ca2.pem")).1);
    assert!(!curl_https(https, &dir.path().join("ca1.pem")).1, "the old certificate is no longer served");
}

/// A VirtualService that does not decode is reported (`/config_dump`, a metric) with its
/// `k8s://` name, and the rest of the config keeps serving.
#[test]
fn broken_object_is_reported_and_the_rest_serves() {
    let c = Cluster::new("v1");
    let backend = free_port();
    let _b = echo_backend(backend, "reviews");
    c.apply(gateway(false));
    c.apply(seed_vs());
    c.apply(service("reviews", 9080));
    c.apply(slice("reviews", "r1", backend, ready_cond()));
    c.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"hosts": ["other.example.com"], "gateways": ["istio-system/my-gateway"], "htttp": []}}));
    let gw = start(&c.kubeconfig(), &[]);
    wait_ready(&gw);
    assert_eq!(body(&gw), "reviews");
    let dump = config_dump(&gw);
    let diags = dump["diagnostics"].as_array().unwrap();
    let broken: Vec<&Value> =
        diags.iter().filter(|d| d["file"] == json!("k8s://VirtualService/default/broken")).collect();
    assert!(!broken.is_empty(), "no diagnostic for the broken object: {diags:#?}");
    assert!(broken.iter().any(|d| d["severity"] == json!("error") && d["text"].as_str().unwrap().contains("htttp")));
    let samples = scrape(gw.admin_port);
    assert_eq!(
        value(&samples, "portico_source_rejected_objects", &[("source", "kubernetes"), ("kind", "VirtualService")]),
        1.0
    );
    // Fixing it makes the diagnostic go away.
    c.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "broken", "namespace": "default"},
        "spec": {"hosts": ["other.example.com"], "gateways": ["istio-system/my-gateway"], "http": []}}));
    wait_until("the diagnostic clears", || {
        let dump = config_dump(&gw);
        !dump["diagnostics"].as_array().unwrap().iter().any(|d| d["text"].as_str().unwrap().contains("htttp"))
    });
}

/// The API server restarts mid-watch, then forgets its history (a 410 for every resumed watch):
/// the gateway relists, keeps serving all along, and misses no change.
#[test]
fn api_restart_and_410_relist_lose_no_update_and_no_request() {
    let c = Cluster::new("v1");
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "reviews-a");
    let _b = echo_backend(pb, "reviews-b");
    c.apply(gateway(false));
    c.apply(seed_vs());
    c.apply(service("reviews", 9080));
    c.apply(service("other", 9080));
    c.apply(slice("reviews", "a", pa, ready_cond()));
    c.apply(slice("other", "b", pb, ready_cond()));
    let gw = start(&c.kubeconfig(), &[]);
    wait_ready(&gw);
    assert_eq!(body(&gw), "reviews-a");
    let load = Load::start(gw.http_port, 2);

    // Down, a change while down, up: the watch resumes and the change arrives.
    c.api.stop();
    std::thread::sleep(Duration::from_millis(500));
    c.apply(virtual_service(
        "bookinfo",
        json!([{"match": [{"uri": {"prefix": "/reviews"}}], "route": [{"destination": {"host": "other", "port": {"number": 9080}}}]}]),
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(body(&gw), "reviews-a", "the last good config serves while the API is away");
    wait_until("the source says it lost the API server", || {
        value(&scrape(gw.admin_port), "portico_source_connected", &[("source", "kubernetes")]) == 0.0
    });
    assert!(ready(&gw), "still ready: the last good config serves");
    c.restart();
    wait_until("the change made while the API was down", || body(&gw) == "reviews-b");
    wait_until("the source says it is connected again", || {
        value(&scrape(gw.admin_port), "portico_source_connected", &[("source", "kubernetes")]) == 1.0
    });

    // A change, then the history is compacted: resumed watches get 410 and must relist.
    let lists_before =
        c.api.requests().iter().filter(|r| r.contains("virtualservices") && !r.contains("watch=true")).count();
    c.apply(seed_vs());
    c.api.expire_watches();
    wait_until("the change made just before the 410", || body(&gw) == "reviews-a");
    wait_until("a relist after the 410", || {
        c.api.requests().iter().filter(|r| r.contains("virtualservices") && !r.contains("watch=true")).count()
            > lists_before
    });
    wait_until("the relist is counted", || {
        find(&scrape(gw.admin_port), "portico_source_relists_total", &[]).iter().map(|s| s.2).sum::<f64>() > 0.0
    });
    // And one more change on the new watch.
    c.apply(virtual_service(
        "bookinfo",
        json!([{"match": [{"uri": {"prefix": "/reviews"}}], "route": [{"destination": {"host": "other", "port": {"number": 9080}}}]}]),
    ));
    wait_until("a change after the relist", || body(&gw) == "reviews-b");

    let (total, failures, errors) = load.finish();
    assert!(total > 50, "the load ran: {total}");
    assert_eq!(failures, 0, "{failures} of {total} failed: {errors:?}");
}

/// Two replicas on the same API converge to the same snapshot; a cluster that serves only
/// `v1beta1` of the Istio kinds works too.
#[test]
fn two_replicas_converge_on_v1beta1() {
    let c = Cluster::new("v1beta1");
    let backend = free_port();
    let _b = echo_backend(backend, "reviews");
    let beta = |mut v: Value| {
        v["apiVersion"] = json!("networking.istio.io/v1beta1");
        v
    };
    c.apply(beta(gateway(false)));
    c.apply(beta(seed_vs()));
    c.apply(service("reviews", 9080));
    c.apply(service("ratings", 9080));
    c.apply(pod("r1", json!({"app": "reviews", "version": "v1"})));
    c.apply(slice("reviews", "r1", backend, ready_cond()));
    let g1 = start(&c.kubeconfig(), &[]);
    let g2 = start(&c.kubeconfig(), &[]);
    wait_ready(&g1);
    wait_ready(&g2);
    c.apply(beta(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}})));
    c.apply(beta(virtual_service(
        "bookinfo",
        json!([{"route": [{"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}]}]),
    )));
    let mut last = (Value::Null, Value::Null);
    wait_until("both replicas have the DestinationRule's subset and the same snapshot", || {
        let (a, b) = (config_dump(&g1)["snapshot"].clone(), config_dump(&g2)["snapshot"].clone());
        let has_subset = a.to_string().contains("outbound|9080|v1|reviews.default.svc.cluster.local");
        let same = a == b;
        last = (a, b);
        has_subset && same
    });
    assert_ne!(last.0, Value::Null);
    assert_eq!(body(&g1), "reviews");
    assert_eq!(body(&g2), "reviews");
}

/// `--config` files add to what the API has, and `--watch-namespace` limits what is read.
#[test]
fn files_add_to_the_api_and_watch_namespace_limits_it() {
    let c = Cluster::new("v1");
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "from-api");
    let _b = echo_backend(pb, "from-file");
    c.apply(gateway(false));
    c.apply(seed_vs());
    c.apply(service("reviews", 9080));
    c.apply(slice("reviews", "r1", pa, ready_cond()));
    // A VirtualService in a namespace that is not watched: never seen.
    let mut other = virtual_service(
        "elsewhere",
        json!([{"match": [{"uri": {"prefix": "/elsewhere"}}], "route": [{"destination": {"host": "reviews.default.svc.cluster.local", "port": {"number": 9080}}}]}]),
    );
    other["metadata"]["namespace"] = json!("unwatched");
    c.apply(other);
    // The file: a route to a ServiceEntry, on the API's Gateway.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("extra.yaml"),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: files, namespace: default}}\n\
             spec:\n  hosts: [dev.example.com]\n  gateways: [istio-system/my-gateway]\n  http:\n  - match: [{{uri: {{prefix: /file}}}}]\n    route: [{{destination: {{host: legacy.example.internal}}}}]\n\
             ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: legacy, namespace: default}}\n\
             spec:\n  hosts: [legacy.example.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {pb}}}}}]\n"
        ),
    )
    .unwrap();
    let gw = start(
        &c.kubeconfig(),
        &[
            "--config",
            dir.path().to_str().unwrap(),
            "--watch-namespace",
            "default",
            "--watch-namespace",
            "istio-system",
        ],
    );
    wait_ready(&gw);
    assert_eq!(body(&gw), "from-api");
    let r = get(gw.http_port, "dev.example.com", "/file", &[]).unwrap();
    assert_eq!((r.status, r.body.trim()), (200, "from-file"));
    let r = get(gw.http_port, "dev.example.com", "/elsewhere", &[]).unwrap();
    assert_eq!(r.status, 404, "a namespace not watched is not read");
    let watched: Vec<String> = c
        .api
        .requests()
        .iter()
        .filter(|r| r.contains("virtualservices"))
        .map(|r| r.split('?').next().unwrap_or("").to_string())
        .collect();
    assert!(watched.iter().all(|r| r.contains("/namespaces/")), "only namespaced reads: {watched:?}");
}
