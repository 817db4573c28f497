#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Gateway API → the compiled routes (as `portico routes` prints them, status included) and the
//! diagnostics, one case per rule of the spec. Snapshots live in `snapshots/`.

use portico_model::gateway_api::intersect;
use portico_model::{compile, Options};

fn run_with(yaml: &str, opts: &Options) -> String {
    let parsed = portico_api::parse_text("case.yaml", yaml, "default");
    let compiled = compile(&parsed.resources, opts);
    let mut out = portico_model::render::render(&compiled.snapshot);
    out.push_str("diagnostics\n");
    for d in parsed.diagnostics.iter().chain(compiled.diagnostics.iter()) {
        out.push_str(&format!("  {d}\n"));
    }
    out
}

fn run(yaml: &str) -> String {
    run_with(yaml, &Options::default())
}

const BASE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: apps}
spec:
  hosts: [v1.apps.svc.cluster.local, v2.apps.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: apps}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - name: web
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: apps}}}}
"#;

#[test]
fn hostnames_intersect_as_the_spec_says() {
    let cases = [
        (None, "a.example.com", Some("a.example.com")),
        (Some("*"), "a.example.com", Some("a.example.com")),
        (Some("*.example.com"), "a.b.example.com", Some("a.b.example.com")),
        (Some("*.example.com"), "example.com", None),
        (Some("a.example.com"), "*.example.com", Some("a.example.com")),
        (Some("*.example.com"), "*.b.example.com", Some("*.b.example.com")),
        (Some("*.b.example.com"), "*.example.com", Some("*.b.example.com")),
        (Some("a.example.com"), "b.example.com", None),
        (Some("A.Example.com"), "a.example.com", Some("a.example.com")),
    ];
    for (listener, route, want) in cases {
        assert_eq!(intersect(listener, route).as_deref(), want, "{listener:?} ∩ {route}");
    }
}

/// Precedence across rules and routes: exact path, longest prefix, method, header count, query
/// count, then the oldest route.
#[test]
fn rules_are_ordered_by_gateway_api_precedence() {
    let yaml = format!(
        r#"{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: newer, namespace: apps, creationTimestamp: "2024-02-01T00:00:00Z"}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{{name: v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: X-Env, value: canary}}]}}]
    backendRefs: [{{name: v2, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: older, namespace: apps, creationTimestamp: "2024-01-01T00:00:00Z"}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: v1, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /api/health}}}}]
    backendRefs: [{{name: v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /api}}, method: POST}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}}
    backendRefs: [{{name: v1, port: 8080, weight: 3}}, {{name: v2, port: 8080, weight: 1}}]
"#
    );
    insta::assert_snapshot!(run(&yaml));
}

/// Status: a route from a namespace the listener does not select, a hostname no listener has,
/// a backend in another namespace without a ReferenceGrant, and a Gateway of another class.
#[test]
fn status_reasons() {
    let yaml = format!(
        r#"{BASE}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wrong-namespace, namespace: other}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  rules: [{{backendRefs: [{{name: v1, namespace: apps, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wrong-host, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [shop.example.org]
  rules: [{{backendRefs: [{{name: v1, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ok-but-backend-denied, namespace: apps}}
spec:
  parentRefs: [{{name: gw, namespace: infra, sectionName: web}}]
  rules: [{{backendRefs: [{{name: secret-svc, namespace: infra, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: not-ours, namespace: infra}}
spec:
  gatewayClassName: istio
  listeners: [{{name: web, port: 81, protocol: HTTP}}]
"#
    );
    insta::assert_snapshot!(run(&yaml));
}
