#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! HTTPRoute backends over real sockets: a rule mixing valid and invalid backendRefs answers
//! 500 for the invalid share and routes the rest by weight; a RequestMirror's backend really
//! receives the copy (Host suffixed `-shadow`) while the client gets the primary's answer.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BASE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, port: 80, protocol: HTTP}
";

/// A ServiceEntry making `NAME.default.svc.cluster.local:8080` reach local `port`.
fn service(name: &str, port: u16) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  hosts: [{name}.default.svc.cluster.local]\n  resolution: STATIC\n  location: MESH_INTERNAL\n\
         \x20 ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
    )
}

/// `n` GETs of `path`; answers counted as `status body` (a 500 as just `500`).
fn counts(port: u16, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = get(port, "example.com", path, &[]).unwrap();
        let k = if r.status == 500 { "500".to_string() } else { format!("{} {}", r.status, r.body.trim()) };
        *out.entry(k).or_default() += 1;
    }
    out
}

#[test]
fn invalid_backend_refs_get_their_share_of_500s() {
    let (p1, p2) = (free_port(), free_port());
    let _v1 = echo_backend(p1, "v1");
    let _v2 = echo_backend(p2, "v2");
    let dir = tempfile::tempdir().unwrap();
    let route = "\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs:
    - {name: v1, port: 8080, weight: 1}
    - {name: missing, port: 8080, weight: 1}
  - matches: [{path: {type: PathPrefix, value: /weighted}}]
    backendRefs:
    - {name: v1, port: 8080, weight: 3}
    - {name: v2, port: 8080, weight: 1}
    - {name: missing, port: 8080, weight: 4}
    - {name: also-missing, port: 8080, weight: 0}
  - matches: [{path: {type: PathPrefix, value: /none}}]
    backendRefs:
    - {name: missing, port: 8080, weight: 1}
    - {name: also-missing, port: 8080, weight: 2}
  - matches: [{path: {type: PathPrefix, value: /valid}}]
    backendRefs:
    - {name: v1, port: 8080, weight: 1}
    - {name: also-missing, port: 8080, weight: 0}
";
    let text = format!("{BASE}{}{}{route}", service("v1", p1), service("v2", p2));
    std::fs::write(dir.path().join("config.yaml"), text).unwrap();
    let gw = start_gateway(dir.path(), &[]);
    wait_port(gw.http_port);

    // 1:1 with one invalid: half 500. 400 requests, sd = 10: 200 ± 45 is 4.5 sd.
    let seen = counts(gw.http_port, "/half", 400);
    let (e500, v1) = (seen.get("500").copied().unwrap_or(0), seen.get("200 v1").copied().unwrap_or(0));
    assert_eq!(e500 + v1, 400, "only 500s and v1: {seen:?}");
    assert!((155..=245).contains(&e500), "half should be 500: {seen:?}");

    // 3:1:4 (+ a weight-0 invalid one): 50% 500, 37.5% v1, 12.5% v2. 400 requests:
    // 500s 200 ± 45, v2 50 ± 30 (sd ≈ 6.6), v1 150 ± 43 (sd ≈ 9.7).
    let seen = counts(gw.http_port, "/weighted", 400);
    let get = |k: &str| seen.get(k).copied().unwrap_or(0);
    assert_eq!(get("500") + get("200 v1") + get("200 v2"), 400, "{seen:?}");
    assert!((155..=245).contains(&get("500")), "the invalid weight 4 of 8 is 500: {seen:?}");
    assert!((107..=193).contains(&get("200 v1")), "v1 3 of 8: {seen:?}");
    assert!((20..=80).contains(&get("200 v2")), "v2 1 of 8: {seen:?}");

    // Every backend invalid: always 500.
    assert_eq!(counts(gw.http_port, "/none", 50), BTreeMap::from([("500".to_string(), 50)]));
    // An invalid backend with weight 0 takes no share: never 500.
    assert_eq!(counts(gw.http_port, "/valid", 50), BTreeMap::from([("200 v1".to_string(), 50)]));
}

/// A backend that records the Host and path of every request it receives and answers 200
/// `mirror`. Stops with the test process (a thread blocked in accept).
/// (Host, path) of each request received.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

fn recording_backend() -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let rec = rec.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut host = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            match k.trim().to_ascii_lowercase().as_str() {
                                "host" => host = v.trim().to_string(),
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0u8; len];
                    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                        return;
                    }
                    rec.lock().unwrap().push((host, path));
                    let resp = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nmirror";
                    if stream.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn request_mirror_backend_receives_the_shadow_copy() {
    let primary = free_port();
    let _p = echo_backend(primary, "primary");
    let (mirror_port, mirrored) = recording_backend();
    let dir = tempfile::tempdir().unwrap();
    let route = "\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 8080}}
    backendRefs: [{name: primary, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: primary, port: 8080}]
";
    let text = format!("{BASE}{}{}{route}", service("primary", primary), service("shadow", mirror_port));
    std::fs::write(dir.path().join("config.yaml"), text).unwrap();
    let gw = start_gateway(dir.path(), &[]);
    wait_port(gw.http_port);

    for i in 0..5 {
        let r = get(gw.http_port, "example.com", &format!("/mirror/{i}"), &[]).unwrap();
        assert_eq!((r.status, r.body.trim()), (200, "primary"), "the client gets the primary's answer");
    }
    let r = get(gw.http_port, "example.com", "/plain", &[]).unwrap();
    assert_eq!((r.status, r.body.trim()), (200, "primary"));
    // Mirrors are fire-and-forget: wait for them to land.
    let start = Instant::now();
    while mirrored.lock().unwrap().len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(10), "mirrored so far: {:?}", mirrored.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut got = mirrored.lock().unwrap().clone();
    got.sort();
    let want: Vec<(String, String)> =
        (0..5).map(|i| ("example.com-shadow".to_string(), format!("/mirror/{i}"))).collect();
    assert_eq!(got, want, "each mirrored request once, Host suffixed -shadow; /plain not mirrored");
}
