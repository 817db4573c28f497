#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! From Istio YAML to traffic: `parse_text` → `compile` → `Proxy::apply`, against real backends.

mod common;

use common::*;
use portico_model::Snapshot;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Compile `yaml`; every `{name}` placeholder is replaced from `vars` first. Fails on errors.
fn compile(yaml: &str, vars: &[(&str, String)]) -> Arc<Snapshot> {
    let mut text = yaml.to_string();
    for (k, v) in vars {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    let parsed = portico_api::parse_text("test.yaml", &text, "default");
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "parse: {:?}", parsed.diagnostics);
    let compiled = portico_model::compile(&parsed.resources, &portico_model::Options::default());
    // IST0101 (a destination host not found) is expected where a test routes to one: → 503 NC.
    let errors: Vec<_> = compiled.diagnostics.iter().filter(|d| d.is_error() && d.code != "IST0101").collect();
    assert!(errors.is_empty(), "compile: {errors:?}");
    Arc::new(compiled.snapshot)
}

const SHOP: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com", "*.shop.example.com"]
  - port: {number: 80, name: http-secure, protocol: HTTP}
    hosts: ["secure.example.com"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: ["shop.example.com", "*.shop.example.com", "secure.example.com"]
  gateways: ["istio-system/shop-gateway"]
  http:
  - name: pinned
    match:
    - uri: {prefix: /reviews}
      headers:
        x-canary: {exact: always}
    route:
    - destination: {host: reviews, subset: v2}
  - name: canary
    match:
    - uri: {prefix: /reviews}
    route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
  - name: ratings
    match:
    - uri: {prefix: /ratings}
    rewrite: {uri: /v1/ratings}
    headers:
      request:
        set: {x-route: ratings}
    route:
    - destination: {host: ratings}
  - name: old
    match:
    - uri: {exact: /old}
    redirect: {uri: /new, redirectCode: 308}
  - name: missing
    match:
    - uri: {prefix: /missing}
    route:
    - destination: {host: nowhere.example.org}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: ["reviews.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: {v1}}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: {v2}}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: ["ratings.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: localhost, ports: {http: {ratings}}}
"#;

#[tokio::test]
async fn shop_from_yaml() {
    let (v1, v2, ratings) = (backend("reviews-v1").await, backend("reviews-v2").await, backend("ratings").await);
    let snap = compile(
        SHOP,
        &[
            ("v1", v1.addr.port().to_string()),
            ("v2", v2.addr.port().to_string()),
            ("ratings", ratings.addr.port().to_string()),
        ],
    );
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;

    for _ in 0..20 {
        let r = c
            .send(
                req("GET", "shop.example.com", "/reviews/1")
                    .header("x-canary", "always")
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.backend(), "reviews-v2");
    }

    // 90/10 canary over 1000 requests; tolerance ±3.5 points (3.7 standard deviations).
    const N: usize = 1000;
    let mut counts = HashMap::<String, usize>::new();
    for _ in 0..N {
        *counts.entry(c.get("api.shop.example.com", "/reviews").await.backend()).or_default() += 1;
    }
    let v2_share = counts.get("reviews-v2").copied().unwrap_or(0) as f64 / N as f64;
    assert!((v2_share - 0.10).abs() < 0.035, "{counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");

    let r = c.get("shop.example.com", "/ratings/5?x=1").await;
    assert_eq!(r.backend(), "ratings");
    assert_eq!(r.seen_path(), "/v1/ratings/5?x=1");
    assert_eq!(r.seen("x-route").as_deref(), Some("ratings"));

    let r = c.get("shop.example.com", "/old?k=v").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location").as_deref(), Some("http://shop.example.com/new?k=v"));

    let r = c.get("secure.example.com", "/reviews").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location").as_deref(), Some("https://secure.example.com/reviews"));

    assert_eq!(c.get("shop.example.com", "/nothing").await.status, 404);
    assert_eq!(c.get("unknown.example.com", "/reviews").await.status, 404);
    let r = c.get("shop.example.com", "/missing").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(v1.connections.load(Ordering::SeqCst), 1);
}

const GRPC: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: grpc, protocol: GRPC}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ["*"]
  gateways: ["istio-system/gw"]
  http:
  - route:
    - destination: {host: api.default.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: ["api.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 127.0.0.1, ports: {grpc: {port}}}
"#;

#[tokio::test]
async fn grpc_port_protocol_means_an_http2_upstream() {
    let be = backend("api").await;
    let snap = compile(GRPC, &[("port", be.addr.port().to_string())]);
    let (_proxy, addr) = start(snap).await;
    let mut h2 = H2::connect(addr).await;
    let r = h2.get("api.example.com", "/pkg.Svc/Call").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["authority"], "api.example.com");
}

const AUTHORITY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: ["*"]
  gateways: ["istio-system/gw"]
  http:
  - match: [{uri: {prefix: /route}}]
    headers:
      request:
        set: {":authority": route.internal}
    route:
    - destination: {host: h2.default.svc.cluster.local}
  - match: [{uri: {prefix: /destination}}]
    route:
    - destination: {host: h1.default.svc.cluster.local}
      headers:
        request:
          set: {Host: destination.internal}
  - match: [{uri: {prefix: /add}}]
    headers:
      request:
        add: {host: rule.internal}
    route:
    - destination: {host: h1.default.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h2}
spec:
  hosts: ["h2.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http2, protocol: HTTP2}]
  endpoints:
  - {address: 127.0.0.1, ports: {http2: {port}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: h1}
spec:
  hosts: ["h1.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: {port}}}
"#;

#[tokio::test]
async fn header_rules_on_the_authority_rewrite_it() {
    let be = backend("api").await;
    let snap = compile(AUTHORITY, &[("port", be.addr.port().to_string())]);
    let (_proxy, addr) = start(snap).await;
    let mut c = H1::connect(addr).await;
    // `:authority` on a route, to an HTTP/2 upstream: the request's authority.
    let r = c.get("api.example.com", "/route").await;
    assert_eq!(
        (r.json()["version"].as_str(), r.json()["authority"].as_str()),
        (Some("HTTP/2.0"), Some("route.internal"))
    );
    // `Host` on a destination, to an HTTP/1.1 upstream: one Host header, the rule's.
    let r = c.get("api.example.com", "/destination").await;
    assert_eq!(r.seen("host").as_deref(), Some("destination.internal"));
    // There is one authority: adding one replaces it.
    let r = c.get("api.example.com", "/add").await;
    assert_eq!(r.seen("host").as_deref(), Some("rule.internal"));
}
