#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Load balancing over real sockets: endpoint weights, panic mode, slow-start warmup, locality
//! priorities and weights.

mod common;

use common::*;
use http_body_util::Full;
use portico_model::snapshot::*;
use portico_model::Snapshot;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Endpoints with these weights.
fn weighted_cluster(name: &str, eps: &[(SocketAddr, u32)]) -> Cluster {
    let mut c = cluster(name, &eps.iter().map(|(a, _)| *a).collect::<Vec<_>>());
    for (e, (_, w)) in c.endpoints.iter_mut().zip(eps) {
        e.weight = *w;
    }
    c
}

/// Which backend answered each of `n` requests to `path`, counted by name.
async fn tally(addr: SocketAddr, path: &str, n: usize) -> HashMap<String, usize> {
    let mut client = H1::connect(addr).await;
    let mut counts = HashMap::new();
    for _ in 0..n {
        *counts.entry(client.get("h", path).await.backend()).or_default() += 1;
    }
    counts
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test]
async fn endpoint_weights_3_to_1_for_round_robin_random_and_least_request() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut clusters = Vec::new();
    let mut routes = Vec::new();
    for (name, lb) in [("rr", LbPolicy::RoundRobin), ("random", LbPolicy::Random), ("lr", LbPolicy::LeastRequest)] {
        let mut c = weighted_cluster(name, &[(a.addr, 3), (b.addr, 1)]);
        c.lb = lb;
        clusters.push(c);
        routes.push(route(vec![uri_prefix(&format!("/{name}"))], forward(name)));
    }
    let (_p, addr) = start(snapshot(vec![listener(80, vec![vhost("*", routes)])], clusters)).await;

    // Weighted round robin is a fixed cycle (a a b a): exactly 3:1.
    let rr = tally(addr, "/rr", 2000).await;
    assert_eq!((rr["a"], rr["b"]), (1500, 500), "{rr:?}");
    // Random draws: 2000 samples at p = 0.75 have a standard deviation of ~1 point; allow 4.
    // Least request with no concurrency weighs by weight alone, also drawn at random.
    for path in ["/random", "/lr"] {
        let t = tally(addr, path, 2000).await;
        let s = share(&t, "a");
        assert!((s - 0.75).abs() < 0.04, "{path}: {t:?}");
    }
}

#[tokio::test]
async fn consistent_hash_key_share_follows_weights() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut clusters = Vec::new();
    let mut routes = Vec::new();
    for (name, table) in
        [("ring", HashTable::Ring { minimum_size: 1024 }), ("maglev", HashTable::Maglev { table_size: 65537 })]
    {
        let mut c = weighted_cluster(name, &[(a.addr, 3), (b.addr, 1)]);
        c.lb = LbPolicy::ConsistentHash(HashPolicy::Header("x-key".into()), table);
        clusters.push(c);
        routes.push(route(vec![uri_prefix(&format!("/{name}"))], forward(name)));
    }
    let (_p, addr) = start(snapshot(vec![listener(80, vec![vhost("*", routes)])], clusters)).await;
    let mut client = H1::connect(addr).await;
    for path in ["/ring", "/maglev"] {
        let mut on_a = 0;
        for k in 0..1000 {
            let r = client
                .send(req("GET", "h", path).header("x-key", format!("user-{k}")).body(Full::default()).unwrap())
                .await;
            on_a += usize::from(r.backend() == "a");
        }
        // 1000 keys over a 3:1 table: expect ~750. The tables hash the backends' random ports,
        // which adds variance: over 4,000 simulated port sets the ring gave 680..=810. Allow
        // 11 points; equal weights would give ~500.
        assert!((640..=860).contains(&on_a), "{path}: {on_a} of 1000 keys on the weight-3 endpoint");
    }
}

#[tokio::test]
async fn dns_endpoint_weight_applies_to_the_addresses_it_resolves_to() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut c = cluster("c", &[]);
    c.discovery = Discovery::Dns;
    c.lb = LbPolicy::RoundRobin;
    let ep = |port, weight| Endpoint { address: "localhost".into(), port, weight, ..Default::default() };
    c.endpoints = vec![ep(a.addr.port(), 3), ep(b.addr.port(), 1)];
    let (_p, addr) =
        start(snapshot(vec![listener(80, vec![vhost("*", vec![route(vec![], forward("c"))])])], vec![c])).await;
    let t = tally(addr, "/", 400).await;
    assert_eq!((t["a"], t["b"]), (300, 100), "{t:?}");
}

/// A backend that always answers `status`, counting requests.
async fn fixed(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let h = h.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_r: http::Request<hyper::body::Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut resp = http::Response::new(Full::new(bytes::Bytes::from(addr.to_string())));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn ejecting(min_health_percent: u32) -> OutlierPolicy {
    OutlierPolicy {
        consecutive_5xx: Some(3),
        consecutive_gateway_errors: None,
        consecutive_local_origin_failures: None,
        split_external_local_origin_errors: false,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 100,
        min_health_percent,
    }
}

/// A route without retries to `c`, so each request reaches exactly one endpoint.
fn no_retry(c: Cluster) -> Arc<Snapshot> {
    let mut r = route(vec![], forward(&c.name));
    r.retry = RetryPolicy::default();
    snapshot(vec![listener(80, vec![vhost("*", vec![r])])], vec![c])
}

#[tokio::test]
async fn panic_mode_balances_over_ejected_endpoints_below_min_health_percent() {
    for (min_health, panics) in [(50, true), (0, false)] {
        let ((bad1, hits1), (bad2, hits2), (good, _)) = (fixed(500).await, fixed(500).await, fixed(200).await);
        let mut c = cluster("c", &[bad1, bad2, good]);
        c.lb = LbPolicy::RoundRobin;
        c.outlier = Some(ejecting(min_health));
        let (_p, addr) = start(no_retry(c)).await;
        let mut client = H1::connect(addr).await;
        // Until both failing endpoints have failed 3 times in a row (and were ejected).
        for _ in 0..100 {
            if hits1.load(Ordering::SeqCst) >= 3 && hits2.load(Ordering::SeqCst) >= 3 {
                break;
            }
            client.get("h", "/").await;
        }
        let before = hits1.load(Ordering::SeqCst) + hits2.load(Ordering::SeqCst);
        assert_eq!(before, 6, "each ejected at its 3rd consecutive 5xx");
        let mut ok = 0;
        for _ in 0..30 {
            ok += usize::from(client.get("h", "/").await.status == 200);
        }
        let after = hits1.load(Ordering::SeqCst) + hits2.load(Ordering::SeqCst);
        if panics {
            // 1 of 3 healthy (33 %) < 50 %: round robin over all three again.
            assert_eq!((after - before, ok), (20, 10), "minHealthPercent {min_health}");
        } else {
            // Panic disabled: only the healthy endpoint.
            assert_eq!((after - before, ok), (0, 30), "minHealthPercent {min_health}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn warmup_ramps_up_an_endpoint_added_by_a_reload() {
    let (a, b) = (backend("a").await, backend("b").await);
    // 10 minutes, at least 10 %, aggression 2: weight factor sqrt(t / 600 s).
    let warmup = Warmup { duration: Duration::from_secs(600), minimum_percent: 10.0, aggression: 2.0 };
    let snap = |lb: &LbPolicy, eps: &[SocketAddr]| {
        let mut c = cluster("c", eps);
        c.lb = lb.clone();
        c.warmup = Some(warmup.clone());
        // A cluster created with both endpoints: neither warms up.
        let mut fresh = cluster("fresh", &[a.addr, b.addr]);
        fresh.lb = lb.clone();
        fresh.warmup = Some(warmup.clone());
        let routes = vec![route(vec![uri_prefix("/fresh")], forward("fresh")), route(vec![], forward("c"))];
        snapshot(vec![listener(80, vec![vhost("*", routes)])], vec![c, fresh])
    };
    for lb in [LbPolicy::RoundRobin, LbPolicy::LeastRequest] {
        let (p, addr) = start(snap(&lb, &[a.addr])).await;
        p.apply(snap(&lb, &[a.addr, b.addr])).await.unwrap();
        // 1000 draws per phase: a share's standard deviation is at most 1.6 points; allow 6.5
        // (4 sd, so a correct build fails about once in 15,000 runs).
        let fresh = share(&tally(addr, "/fresh", 1000).await, "b");
        assert!((fresh - 0.5).abs() < 0.065, "{lb:?} initial endpoints: {fresh}");
        // Just added: 10 % of its weight → 0.1 / 1.1 ≈ 9 % of the requests.
        let early = share(&tally(addr, "/", 1000).await, "b");
        assert!((early - 0.091).abs() < 0.065, "{lb:?} at start: {early}");
        // A quarter of the window: sqrt(0.25) = 0.5 → 0.5 / 1.5 ≈ 33 %.
        tokio::time::advance(Duration::from_secs(150)).await;
        let quarter = share(&tally(addr, "/", 1000).await, "b");
        assert!((quarter - 0.333).abs() < 0.065, "{lb:?} at 150 s: {quarter}");
        // Window over: an equal share.
        tokio::time::advance(Duration::from_secs(460)).await;
        let after = share(&tally(addr, "/", 1000).await, "b");
        assert!((after - 0.5).abs() < 0.065, "{lb:?} after the window: {after}");
    }
}

// ───────────────────────────── locality ─────────────────────────────

/// Compile `yaml` for a gateway at `locality`, `{name}` placeholders replaced by backend ports.
fn compile_at(locality: &str, yaml: &str, ports: &[(&str, u16)]) -> Arc<Snapshot> {
    let mut text = yaml.to_string();
    for (k, v) in ports {
        text = text.replace(&format!("{{{k}}}"), &v.to_string());
    }
    let parsed = portico_api::parse_text("test.yaml", &text, "default");
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "parse: {:?}", parsed.diagnostics);
    let opts = portico_model::Options { locality: Some(locality.into()), ..Default::default() };
    let compiled = portico_model::compile(&parsed.resources, &opts);
    assert!(compiled.diagnostics.iter().all(|d| !d.is_error()), "compile: {:?}", compiled.diagnostics);
    Arc::new(compiled.snapshot)
}

/// One service with endpoints in four localities, behind a gateway on port 80; `{dr}` is the
/// DestinationRule's trafficPolicy.
const REGIONS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: svc.example.internal}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.example.internal]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: {local}}, locality: us-east/a}
  - {address: 127.0.0.1, ports: {http: {zone_b}}, locality: us-east/b}
  - {address: 127.0.0.1, ports: {http: {west}}, locality: us-west/a}
  - {address: 127.0.0.1, ports: {http: {eu}}, locality: eu-west/a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.example.internal
  trafficPolicy: {dr}
"#;

const EJECT: &str = "{consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}";

struct Regions {
    bes: Vec<Backend>,
}

impl Regions {
    async fn new() -> Regions {
        let mut bes = Vec::new();
        for n in ["local", "zone_b", "west", "eu"] {
            bes.push(backend(n).await);
        }
        Regions { bes }
    }

    fn snapshot(&self, dr: &str) -> Arc<Snapshot> {
        let ports: Vec<(&str, u16)> = self.bes.iter().map(|b| (b.name.as_str(), b.addr.port())).collect();
        compile_at("us-east/a", &REGIONS.replace("{dr}", dr), &ports)
    }
}

/// Make whichever endpoint answers fail 3 times in a row (it is ejected); returns its name.
async fn eject_next(client: &mut H1) -> String {
    let mut names = Vec::new();
    for _ in 0..3 {
        let r = client.send(req("GET", "h", "/").header("x-status", "500").body(Full::default()).unwrap()).await;
        assert_eq!(r.status, 500);
        names.push(r.backend());
    }
    names.dedup();
    assert_eq!(names.len(), 1, "one priority, one endpoint: {names:?}");
    names.remove(0)
}

async fn only(client: &mut H1, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(client.get("h", "/").await.backend());
    }
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test]
async fn locality_failover_goes_zone_then_region_then_failover_target() {
    let r = Regions::new().await;
    let dr = format!(
        "{{outlierDetection: {EJECT}, loadBalancer: {{simple: ROUND_ROBIN, localityLbSetting: {{failover: [{{from: us-east, to: eu-west}}]}}}}}}"
    );
    let (_p, addr) = start(r.snapshot(&dr)).await;
    let mut client = H1::connect(addr).await;
    // Healthy: everything stays in the proxy's own zone.
    assert_eq!(only(&mut client, 50).await, ["local"]);
    assert_eq!(eject_next(&mut client).await, "local");
    // Then the same region's other zone.
    assert_eq!(only(&mut client, 50).await, ["zone_b"]);
    assert_eq!(eject_next(&mut client).await, "zone_b");
    // Then the failover region (priority 3), before the other region (4).
    assert_eq!(only(&mut client, 50).await, ["eu"]);
    assert_eq!(eject_next(&mut client).await, "eu");
    assert_eq!(only(&mut client, 50).await, ["west"]);
}

#[tokio::test]
async fn locality_is_ignored_without_outlier_detection_or_when_disabled() {
    let r = Regions::new().await;
    for dr in [
        "{loadBalancer: {simple: ROUND_ROBIN}}".to_string(),
        format!("{{outlierDetection: {EJECT}, loadBalancer: {{simple: ROUND_ROBIN, localityLbSetting: {{enabled: false}}}}}}"),
    ] {
        let (_p, addr) = start(r.snapshot(&dr)).await;
        let t = tally(addr, "/", 400).await;
        assert_eq!(t.values().copied().collect::<Vec<_>>(), [100; 4], "{dr}: {t:?}");
    }
    // With outlier detection alone (Istio's default localityLbSetting), locality applies.
    let (_p, addr) = start(r.snapshot(&format!("{{outlierDetection: {EJECT}}}"))).await;
    assert_eq!(only(&mut H1::connect(addr).await, 50).await, ["local"]);
}

#[tokio::test]
async fn locality_distribute_splits_by_weight() {
    let r = Regions::new().await;
    // From us-east: 80 % to the own zone, 20 % to us-west; zone b and eu are not listed, so
    // they get nothing. No outlier detection needed.
    let dr = r#"{loadBalancer: {localityLbSetting: {distribute: [{from: "us-east/*", to: {"us-east/a": 80, "us-west/*": 20}}]}}}"#;
    let (_p, addr) = start(r.snapshot(dr)).await;
    let t = tally(addr, "/", 2000).await;
    assert_eq!(t.len(), 2, "{t:?}");
    // 2000 draws at p = 0.8: standard deviation 0.9 points; allow 4.
    assert!((share(&t, "local") - 0.8).abs() < 0.04, "{t:?}");
}

#[tokio::test]
async fn a_partly_ejected_priority_spills_per_the_overprovisioning_factor() {
    let (bad, _) = fixed(500).await;
    let (good, west) = (backend("good").await, backend("west").await);
    let yaml = REGIONS.replace(
        "  - {address: 127.0.0.1, ports: {http: {local}}, locality: us-east/a}\n",
        "  - {address: 127.0.0.1, ports: {http: {bad}}, locality: us-east/a}\n  - {address: 127.0.0.1, ports: {http: {good}}, locality: us-east/a}\n",
    );
    let yaml = yaml.replace("  - {address: 127.0.0.1, ports: {http: {zone_b}}, locality: us-east/b}\n", "");
    let yaml = yaml.replace("  - {address: 127.0.0.1, ports: {http: {eu}}, locality: eu-west/a}\n", "");
    let yaml = yaml.replace("{dr}", &format!("{{outlierDetection: {EJECT}, loadBalancer: {{simple: ROUND_ROBIN}}}}"));
    let snap =
        compile_at("us-east/a", &yaml, &[("bad", bad.port()), ("good", good.addr.port()), ("west", west.addr.port())]);
    let (_p, addr) = start(snap).await;
    let mut client = H1::connect(addr).await;
    // Round robin in the local zone until `bad` has failed 3 times (ejected).
    let mut failures = 0;
    while failures < 3 {
        failures += usize::from(client.get("h", "/").await.status == 500);
    }
    // Priority 0 has 1 of 2 healthy: health min(100, 1.4 × 50) = 70 % of the traffic, the
    // other 30 % spills to us-west. 1000 draws: standard deviation 1.4 points; allow 5.
    let t = tally(addr, "/", 1000).await;
    assert_eq!(t.get(""), None, "the ejected endpoint got traffic: {t:?}");
    assert!((share(&t, "good") - 0.7).abs() < 0.05, "{t:?}");
    assert!((share(&t, "west") - 0.3).abs() < 0.05, "{t:?}");
}
