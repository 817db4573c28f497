#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico run` end to end: the real binary, real backends (`portico-echo`), real sockets.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The README's quick start config, as shipped: routing and the 90/10 canary.
#[test]
fn quickstart_config_routes_and_splits_90_10() {
    let _v1 = echo_backend(18081, "reviews-v1");
    let _v2 = echo_backend(18082, "reviews-v2");
    let _ratings = echo_backend(18083, "ratings");
    let gw = start_gateway(&repo("examples/quickstart"), &[]);

    let r = get(gw.http_port, "shop.example.com", "/ratings", &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ratings\n"));
    let r = get(gw.http_port, "shop.example.com", "/reviews", &[("x-canary", "always")]).unwrap();
    assert_eq!(r.body, "reviews-v2\n");
    let r = get(gw.http_port, "unknown.example.com", "/reviews", &[]).unwrap();
    assert_eq!(r.status, 404, "a host no server allows");

    // 1000 requests; expected 900/100. Binomial sd ≈ 9.5: ±50 is over 5 sd.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let r = get(gw.http_port, "shop.example.com", "/reviews", &[]).unwrap();
        assert_eq!(r.status, 200);
        *seen.entry(r.body.trim().to_string()).or_default() += 1;
    }
    let v1 = seen.get("reviews-v1").copied().unwrap_or(0);
    let v2 = seen.get("reviews-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{seen:?}");
    assert!((850..=950).contains(&v1), "v1 share off: {seen:?}");
}

/// The seed example's HTTP server: dev.example.com/reviews reaches the reviews backend.
#[test]
fn seed_example_serves_reviews() {
    let _reviews = echo_backend(19080, "reviews");
    let gw = start_gateway(&repo("examples/seed"), &["--port-map", &format!("443={}", free_port())]);
    let r = get(gw.http_port, "dev.example.com", "/reviews", &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "reviews\n"));
    let r = get(gw.http_port, "dev.example.com", "/other", &[]).unwrap();
    assert_eq!(r.status, 404);
}

/// The seed example's HTTPS server (443, `credentialName: my-cert-secret`), through the binary,
/// with curl as the client and the example's CA as the only trust anchor.
#[test]
fn seed_example_serves_reviews_over_https() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let _reviews = echo_backend(19090, "reviews-tls");
    let seed = tempfile::tempdir().unwrap();
    // The example as shipped, with the backend port moved so this test runs beside the HTTP one.
    for f in std::fs::read_dir(repo("examples/seed")).unwrap() {
        let f = f.unwrap().path();
        let text = std::fs::read_to_string(&f).unwrap().replace("http: 19080", "http: 19090");
        std::fs::write(seed.path().join(f.file_name().unwrap()), text).unwrap();
    }
    let https = free_port();
    let _gw = start_gateway(seed.path(), &["--port-map", &format!("443={https}")]);
    wait_port(https);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("dev.example.com:{https}:127.0.0.1"))
        .arg("--cacert")
        .arg(repo("examples/seed/ca.crt"))
        .args(["-w", "|%{http_code}|%{scheme}"])
        .arg(format!("https://dev.example.com:{https}/reviews"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "curl failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.to_ascii_lowercase(), "reviews-tls\n|200|https");
}

fn write(path: &Path, text: &str) {
    // Write-then-rename, as editors and `kubectl cp` tools do, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(backend_a: u16, backend_b: u16, target: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_a}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: default}}
spec:
  hosts: [b.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {backend_b}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: {target}}}}}]}}]
"#
    )
}

/// 50 reloads that flip the route while a client keeps sending: no request fails, both
/// backends answer, and the listener is never rebound. With two workers and with one (how the
/// benchmarks run it).
#[test]
fn hot_reload_under_load_loses_nothing() {
    reload_under_load("2");
}

#[test]
fn hot_reload_under_load_loses_nothing_with_one_worker() {
    reload_under_load("1");
}

fn reload_under_load(workers: &str) {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "a");
    let _b = echo_backend(pb, "b");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    write(&file, &config(pa, pb, "a.backend"));
    let gw = start_gateway(dir.path(), &["--workers", workers]);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let port = gw.http_port;
    let client = {
        let (stop, failures, total, seen) = (stop.clone(), failures.clone(), total.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(port, "app.example.com", "/", &[]) {
                    Ok(r) if r.status == 200 => {
                        *seen.lock().unwrap().entry(r.body.trim().to_string()).or_default() += 1;
                    }
                    other => {
                        eprintln!("failed request: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..50 {
        let target = if i % 2 == 0 { "b.backend" } else { "a.backend" };
        write(&file, &config(pa, pb, target));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{seen:?}");
    assert!(total.load(Ordering::Relaxed) > 100, "client made too few requests");
    assert!(seen.get("a").is_some() && seen.get("b").is_some(), "both routes served: {seen:?}");
    // Generation counts applied configs: the first plus (most of) the 50 changes.
    let dump = get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    assert!(v["generation"].as_u64().unwrap() >= 10, "reloads were applied: {}", v["generation"]);
}

/// Kubernetes mounts a ConfigMap as `..data -> ..TIMESTAMP/` with visible symlinks through it;
/// an update swaps `..data` atomically. The directory watch must see it.
#[test]
fn configmap_symlink_swap_reloads() {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "a");
    let _b = echo_backend(pb, "b");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let v1 = root.join("..2024_01_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("app.yaml"), config(pa, pb, "a.backend")).unwrap();
    std::os::unix::fs::symlink("..2024_01_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.yaml", root.join("app.yaml")).unwrap();
    let gw = start_gateway(root, &[]);
    assert_eq!(get(gw.http_port, "app.example.com", "/", &[]).unwrap().body, "a\n");

    let v2 = root.join("..2024_01_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("app.yaml"), config(pa, pb, "b.backend")).unwrap();
    std::os::unix::fs::symlink("..2024_01_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(gw.http_port, "app.example.com", "/", &[]).unwrap().body;
        if body == "b\n" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "symlink swap never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A file that stops parsing keeps its last good version; /config_dump says where the mistake is.
#[test]
fn broken_file_keeps_last_good_config() {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "a");
    let _b = echo_backend(pb, "b");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    write(&file, &config(pa, pb, "a.backend"));
    let gw = start_gateway(dir.path(), &[]);
    assert_eq!(get(gw.http_port, "app.example.com", "/", &[]).unwrap().body, "a\n");

    write(&file, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app\n  oops: [\n");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let dump = get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
        if v["files_serving_last_good_version"].as_array().is_some_and(|a| !a.is_empty()) {
            let diags = v["diagnostics"].to_string();
            assert!(diags.contains("PTC0001") && diags.contains("app.yaml:"), "{diags}");
            assert_eq!(v["last_reload_ok"], false);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "broken file never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let r = get(gw.http_port, "app.example.com", "/", &[]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "a\n"), "last good config still served");
    }
}

/// The analyzers run after the new config is served: their findings still reach /config_dump
/// (beside the compiler's), and go away once the mistake is mended.
#[test]
fn analyzer_findings_follow_the_served_config() {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "a");
    let _b = echo_backend(pb, "b");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    // A second VirtualService routes to a host no ServiceEntry names (IST0101).
    let dangling = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: lost, namespace: default}\nspec:\n  hosts: [lost.example.com]\n  gateways: [gw]\n  http: [{route: [{destination: {host: nowhere.backend}}]}]\n";
    write(&file, &format!("{}{dangling}", config(pa, pb, "a.backend")));
    let gw = start_gateway(dir.path(), &[]);
    assert_eq!(get(gw.http_port, "app.example.com", "/", &[]).unwrap().body, "a\n");
    let dump = |gw: &common::Gateway| -> serde_json::Value {
        serde_json::from_str(&get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap().body).unwrap()
    };
    let lost = |v: &serde_json::Value| v["diagnostics"].to_string().contains("nowhere.backend");
    let v = dump(&gw);
    assert!(lost(&v) && v["diagnostics"].to_string().contains("IST0101"), "{}", v["diagnostics"]);
    write(&file, &format!("{}{}", config(pa, pb, "b.backend"), dangling.replace("nowhere.backend", "a.backend")));
    // The findings are recorded just after the new config is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(gw.http_port, "app.example.com", "/", &[]).unwrap().body != "b\n" || lost(&dump(&gw)) {
        assert!(std::time::Instant::now() < deadline, "the change was never served, or IST0101 stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(gw.http_port, "lost.example.com", "/", &[]).unwrap().body, "a\n");
}

/// SIGTERM: the slow in-flight request completes, new connections are refused, the process
/// exits within the drain timeout. With two workers and with one, as above.
#[test]
fn sigterm_drains_in_flight_requests() {
    sigterm_drains("2");
}

#[test]
fn sigterm_drains_in_flight_requests_with_one_worker() {
    sigterm_drains("1");
}

fn sigterm_drains(workers: &str) {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "a");
    let _b = echo_backend(pb, "b");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, pb, "a.backend"));
    let mut gw = start_gateway(dir.path(), &["--drain-timeout", "5s", "--workers", workers]);
    let port = gw.http_port;
    let slow = std::thread::spawn(move || get(port, "app.example.com", "/?delay_ms=1500", &[]));
    std::thread::sleep(Duration::from_millis(300));
    gw.proc.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "new connections are refused while draining");
    let r = slow.join().unwrap().expect("in-flight request completes");
    assert_eq!((r.status, r.body.as_str()), (200, "a\n"));
    let status = gw.proc.wait_exit(Duration::from_secs(6)).expect("exits within the drain timeout");
    assert!(status.success(), "{status:?}");
}
