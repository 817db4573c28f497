#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Golden tests: YAML in → the compiled routes (as `portico routes` prints them) and the
//! diagnostics out, one case per binding or precedence rule. Snapshots live in `snapshots/`.

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

const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9443, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.1.1}]
"#;

fn with_services(yaml: &str) -> String {
    format!("{SERVICES}---\n{yaml}")
}

#[test]
fn gateway_selector_must_be_subset_of_instance_labels() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: applies, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other-instance, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 81, name: http, protocol: HTTP}, hosts: [b.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: no-selector, namespace: istio-system}
spec:
  servers: [{port: {number: 82, name: http, protocol: http}, hosts: [c.example.com]}]
"#;
    insta::assert_snapshot!(run(yaml));
    let opts = Options { labels: [("istio".to_string(), "egressgateway".to_string())].into(), ..Options::default() };
    insta::assert_snapshot!("selector_other_labels", run_with(yaml, &opts));
}

#[test]
fn virtualservice_gateway_references() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bare-name, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: qualified, namespace: other}
spec:
  hosts: [b.example.com]
  gateways: [default/gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: default}
spec:
  hosts: [c.example.com]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-namespace, namespace: other}
spec:
  hosts: [d.example.com]
  gateways: [gw, mesh]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn host_intersection_picks_the_narrower_name() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.example.com", "exact.io"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: narrow, namespace: default}
spec:
  hosts: [a.example.com, example.com, "*.io"]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: deeper-wildcard, namespace: default}
spec:
  hosts: ["*.b.example.com"]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: ratings, port: {number: 9080}}}]}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn server_host_namespace_restricts_binding() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["prod/*.example.com", "./own.example.com"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: in-prod, namespace: prod}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: in-dev, namespace: dev}
spec:
  hosts: [b.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: own, namespace: istio-system}
spec:
  hosts: [own.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn several_virtualservices_for_one_host_concatenate_catch_alls_last() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-newer, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: z-older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {exact: /reviews}}, {uri: {prefix: /}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-same-time, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: reviews}}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn destinations_resolve_short_names_ports_and_subsets() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /canary}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 3}
    - {destination: {host: reviews, subset: v2}, weight: 1}
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings}}]
  - match: [{uri: {prefix: /missing}}]
    route: [{destination: {host: nowhere}, weight: 50}, {destination: {host: reviews, subset: v9}, weight: 50}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn conflicting_gateways_first_created_wins() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: newer, namespace: default, creationTimestamp: "2024-05-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com, b.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [a.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-newer, namespace: default}
spec:
  hosts: [a.example.com, b.example.com]
  gateways: [newer]
  http: [{route: [{destination: {host: ratings, port: {number: 9080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-older, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [older]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn tls_servers_on_one_port_are_keyed_by_sni() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: 443, name: https-b, protocol: HTTPS}
    hosts: ["*.b.example.com"]
    tls: {mode: SIMPLE, credentialName: b-cert}
  - port: {number: 443, name: tls-pass, protocol: TLS}
    hosts: [pass.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [a.example.com, x.b.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: [pass.example.com]
  gateways: [istio-system/gw]
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: ratings, port: {number: 9443}}}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn ingress_translation_orders_exact_then_longest_prefix() {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: istio
  tls: [{hosts: [shop.example.com], secretName: shop-cert}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: front, port: {number: 80}}}}
      - {path: /api/v1, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
      - {path: /api, pathType: Exact, backend: {service: {name: api-root, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: classless, namespace: default}
spec:
  rules: [{host: other.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: x, port: {number: 80}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: nginx-class, namespace: default}
spec:
  ingressClassName: nginx
  rules: [{host: n.example.com, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: x, port: {number: 80}}}}]}}]
"#;
    insta::assert_snapshot!(run(yaml));
}

#[test]
fn invalid_resource_is_dropped_and_the_rest_compiles() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: reviews}, weight: -5}]
    timeout: 10x
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn unreachable_rules_and_ineffective_matches() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shadowed, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /a}}, {uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /never}}]
    route: [{destination: {host: reviews}}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn match_conditions_decided_per_gateway() {
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 8080, name: http-alt, protocol: HTTP}, hosts: ["*"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ports, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{port: 8080, uri: {prefix: /alt}}]
    route: [{destination: {host: reviews}}]
  - match: [{gateways: [istio-system/other], uri: {prefix: /other-gateway}}]
    route: [{destination: {host: reviews}}]
  - match: [{sourceLabels: {istio: ingressgateway}, uri: {prefix: /labelled}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn delegate_routes_merge_with_the_root() {
    // Root `/reviews` (prefix) with a timeout delegates to `reviews-routes` in namespace `prod`;
    // the delegate's `/reviews/v2` fits inside and keeps its own retries, inherits the timeout;
    // its `/ratings` conflicts with the root prefix and is skipped with a warning; a delegate
    // route without match takes the root's match.
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/bookinfo.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [istio-system/gw]
  http:
  - name: reviews
    match: [{uri: {prefix: /reviews}, headers: {x-team: {exact: a}}}]
    timeout: 3s
    delegate: {name: reviews-routes, namespace: prod}
  - name: missing
    match: [{uri: {prefix: /missing}}]
    delegate: {name: nope}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: prod}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /reviews/v2}}]
    retries: {attempts: 5, retryOn: 5xx}
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - name: bad
    match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings.default.svc.cluster.local}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#,
    );
    insta::assert_snapshot!(run(&yaml));
}

#[test]
fn delegate_merge_semantics() {
    use portico_api::istio::{HttpMatchRequest, HttpRoute, StringMatch};
    use portico_model::routes::merge_http_route;
    let prefix = |p: &str| Some(StringMatch { prefix: Some(p.into()), ..Default::default() });
    let exact = |p: &str| Some(StringMatch { exact: Some(p.into()), ..Default::default() });
    let root = HttpRoute {
        name: Some("root".into()),
        matches: vec![HttpMatchRequest { uri: prefix("/api"), port: Some(80), ..Default::default() }],
        timeout: Some("1s".into()),
        ..Default::default()
    };
    let leaf = |uri| HttpRoute {
        name: Some("leaf".into()),
        matches: vec![HttpMatchRequest { uri, ..Default::default() }],
        timeout: Some("9s".into()),
        ..Default::default()
    };
    let m = merge_http_route(&root, &leaf(exact("/api/x"))).expect("exact under prefix");
    assert_eq!(m.name.as_deref(), Some("root-leaf"));
    assert_eq!(m.timeout.as_deref(), Some("9s"), "the delegate's own value wins");
    assert_eq!(m.matches[0].port, Some(80), "root conditions complete the delegate's");
    assert!(merge_http_route(&root, &leaf(prefix("/other"))).is_none());
    let regex = Some(StringMatch { regex: Some("/api/.*".into()), ..Default::default() });
    assert!(merge_http_route(&root, &leaf(regex)).is_none(), "regex under prefix conflicts");
    let no_match = HttpRoute { matches: vec![], ..leaf(None) };
    let m = merge_http_route(&root, &no_match).unwrap();
    assert_eq!(m.matches[0].uri, prefix("/api"));
    let untimed = HttpRoute { timeout: None, ..leaf(prefix("/api/v1")) };
    assert_eq!(merge_http_route(&root, &untimed).unwrap().timeout.as_deref(), Some("1s"));
}

#[test]
fn destination_rule_tls_and_consistent_hash_compile() {
    use portico_model::snapshot::{HashPolicy, HashTable, LbPolicy};
    let yaml = with_services(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: upstream-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: CERT, tls.key: KEY, ca.crt: CA}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: upstream-cert, sni: reviews.internal}
    loadBalancer: {consistentHash: {httpHeaderName: X-User, maglev: {tableSize: 65537}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
      loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 2048}}}
"#,
    );
    let parsed = portico_api::parse_text("case.yaml", &yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let c = compiled.snapshot.cluster("outbound|9080||reviews.default.svc.cluster.local").unwrap();
    let tls = c
        .tls
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", compiled.diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>()));
    assert!(tls.mutual);
    assert_eq!(tls.sni.as_deref(), Some("reviews.internal"));
    assert_eq!(tls.cert_pem.as_deref(), Some(&b"CERT"[..]));
    assert_eq!(tls.ca_pem.as_deref(), Some(&b"CA"[..]));
    assert_eq!(
        c.lb,
        LbPolicy::ConsistentHash(HashPolicy::Header("x-user".into()), HashTable::Maglev { table_size: 65537 })
    );
    let v1 = compiled.snapshot.cluster("outbound|9080|v1|reviews.default.svc.cluster.local").unwrap();
    let tls = v1.tls.as_ref().unwrap();
    assert!(!tls.mutual);
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/ca.pem"));
    assert_eq!(v1.lb, LbPolicy::ConsistentHash(HashPolicy::SourceIp, HashTable::Ring { minimum_size: 2048 }));
    let warned: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(!warned.iter().any(|d| d.contains("not supported")), "{warned:?}");
}

#[test]
fn unknown_header_variables_are_warned() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [a.example.com]
  http:
  - headers:
      request:
        set: {x-ok: "%DOWNSTREAM_REMOTE_ADDRESS%", x-bad: "%NOT_A_VAR%"}
    route: [{destination: {host: a.example.com}}]
"#;
    let parsed = portico_api::parse_text("case.yaml", yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let warned: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(warned.iter().any(|d| d.contains("%NOT_A_VAR%") && d.contains("x-bad")), "{warned:?}");
    assert!(!warned.iter().any(|d| d.contains("DOWNSTREAM_REMOTE_ADDRESS")), "{warned:?}");
}

#[test]
fn warmup_compiles_into_the_cluster() {
    use portico_model::snapshot::Warmup;
    use std::time::Duration;
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 90s, minimumPercent: 25, aggression: 2}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {warmupDurationSecs: 30s}}
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {simple: RANDOM, warmupDurationSecs: 30s}}
"#,
    );
    let parsed = portico_api::parse_text("case.yaml", &yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let warmup = |name: &str| compiled.snapshot.cluster(name).unwrap().warmup.clone();
    assert_eq!(
        warmup("outbound|9080||reviews.default.svc.cluster.local"),
        Some(Warmup { duration: Duration::from_secs(90), minimum_percent: 25.0, aggression: 2.0 })
    );
    // The older field: Istio's defaults for the rest.
    assert_eq!(
        warmup("outbound|9080|v1|reviews.default.svc.cluster.local"),
        Some(Warmup { duration: Duration::from_secs(30), minimum_percent: 10.0, aggression: 1.0 })
    );
    let warned: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    // Only RANDOM (v2) is warned: Envoy's slow start is for ROUND_ROBIN and LEAST_REQUEST.
    assert_eq!(warned.iter().filter(|d| d.contains("PTC0006")).count(), 1, "{warned:?}");
    assert!(warned.iter().any(|d| d.contains("subsets[1]") && d.contains("slow-start")), "{warned:?}");
}

#[test]
fn locality_priorities_follow_failover_priority_labels() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.example.internal]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints:
  - {address: 10.0.0.1, locality: us-east/a, labels: {tier: gold}}
  - {address: 10.0.0.2, locality: us-east/b, labels: {tier: silver}}
  - {address: 10.0.0.3, locality: us-west/a, labels: {tier: gold}}
  - {address: 10.0.0.4, locality: us-east/c, labels: {tier: gold}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.example.internal
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
    loadBalancer:
      localityLbSetting: {failoverPriority: [topology.kubernetes.io/region, tier]}
"#;
    let parsed = portico_api::parse_text("case.yaml", yaml, "default");
    let opts = Options {
        locality: Some("us-east/a".into()),
        labels: [("istio".to_string(), "ingressgateway".to_string()), ("tier".to_string(), "gold".to_string())].into(),
        ..Options::default()
    };
    let compiled = compile(&parsed.resources, &opts);
    let c = compiled.snapshot.cluster("outbound|80||svc.example.internal").unwrap();
    let prio: Vec<(&str, u32)> = c.endpoints.iter().map(|e| (e.address.as_str(), e.priority)).collect();
    // Region and tier match: 0; region only: 1; region differs: 2 (labels after it do not count).
    assert_eq!(prio, [("10.0.0.1", 0), ("10.0.0.2", 1), ("10.0.0.3", 2), ("10.0.0.4", 0)]);
    let warned: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(!warned.iter().any(|d| d.contains("PTC0006")), "{warned:?}");
    // Without a gateway locality, locality load balancing is off.
    let compiled = compile(&parsed.resources, &Options::default());
    let c = compiled.snapshot.cluster("outbound|80||svc.example.internal").unwrap();
    assert!(c.endpoints.iter().all(|e| e.priority == 0));
}

#[test]
fn connection_pool_options_compile_into_the_cluster() {
    use portico_model::snapshot::{ConnectionOptions, Http2Keepalive, TcpKeepalive};
    use std::time::Duration;
    let yaml = with_services(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {tcpKeepalive: {probes: 3, time: 30s, interval: 500ms}, maxConnectionDuration: 5m}
      http:
        maxConcurrentStreams: 2
        useClientProtocol: true
        http2KeepAlive: {interval: 20s, timeout: 5s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {}}, http: {http2KeepAlive: {timeout: 5s}}}}
"#,
    );
    let parsed = portico_api::parse_text("case.yaml", &yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let conn = |name: &str| compiled.snapshot.cluster(name).unwrap().conn.clone();
    assert_eq!(
        conn("outbound|9080||reviews.default.svc.cluster.local"),
        ConnectionOptions {
            // Sub-second becomes 1 s: the socket option takes whole seconds.
            tcp_keepalive: Some(TcpKeepalive {
                probes: Some(3),
                time: Some(Duration::from_secs(30)),
                interval: Some(Duration::from_secs(1)),
            }),
            max_connection_duration: Some(Duration::from_secs(300)),
            max_concurrent_streams: Some(2),
            use_client_protocol: true,
            http2_keepalive: Some(Http2Keepalive {
                interval: Duration::from_secs(20),
                timeout: Some(Duration::from_secs(5)),
            }),
        }
    );
    // The subset's pool replaces the top level's whole: keepalive on with OS defaults, and no
    // HTTP/2 PINGs without an interval.
    assert_eq!(
        conn("outbound|9080|v1|reviews.default.svc.cluster.local"),
        ConnectionOptions { tcp_keepalive: Some(TcpKeepalive::default()), ..ConnectionOptions::default() }
    );
    let warned: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(!warned.iter().any(|d| d.contains("PTC0006")), "{warned:?}");
}

#[test]
fn fields_without_effect_are_warned_by_path() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 31400, name: tcp, protocol: TCP}, hosts: ["*"]}
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: ["*"], tls: {mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.example.internal]
  exportTo: [".", istio-system]
  subjectAltNames: [spiffe://example/svc]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1, network: net-2}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.example.internal
  workloadSelector: {matchLabels: {istio: ingressgateway}}
  trafficPolicy:
    retryBudget: {percent: 20}
    loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 0s, attributes: [{name: SameSite, value: Lax}]}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  exportTo: ["*"]
  http:
  - match: [{uri: {prefix: /a}, statPrefix: a}]
    retries: {attempts: 2, retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 1s}
    route: [{destination: {host: svc.example.internal}}]
  - route: [{destination: {host: svc.example.internal}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: l4, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  tcp:
  - match: [{port: 31400, destinationSubnets: [10.0.0.0/8], sourceSubnet: 192.168.0.0/16}]
    route: [{destination: {host: svc.example.internal, port: {number: 80}}}]
  tls:
  - match: [{port: 443, sniHosts: [a.example.com], destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: svc.example.internal, port: {number: 80}}}]
"#;
    let parsed = portico_api::parse_text("case.yaml", yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let mut warned: Vec<String> = compiled
        .diagnostics
        .iter()
        .filter(|d| d.code == "PTC0006")
        .map(|d| d.message.split(':').next().unwrap_or("").to_string())
        .collect();
    warned.sort();
    let errors: Vec<String> =
        compiled.diagnostics.iter().filter(|d| d.code != "PTC0006").map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // exportTo is applied (tests/golden.rs `export_to_hides_from_other_namespaces`), not warned.
    assert_eq!(
        warned,
        [
            "spec.endpoints[0].network",
            "spec.http[0].match[0].statPrefix",
            "spec.http[0].retries.backoff",
            "spec.http[0].retries.retryIgnorePreviousHosts",
            "spec.http[0].retries.retryRemoteLocalities",
            "spec.subjectAltNames",
            "spec.tcp[0].match[0].destinationSubnets",
            "spec.tcp[0].match[0].sourceSubnet",
            "spec.tls[0].match[0].destinationSubnets",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
            "spec.trafficPolicy.retryBudget",
            "spec.workloadSelector",
        ]
    );
}

/// Istio's exportTo: a VirtualService, DestinationRule or ServiceEntry applies to the gateway only
/// when exported to the gateway's namespace (`--gateway-namespace`, here istio-system).
#[test]
fn export_to_hides_from_other_namespaces() {
    let case = |vs_export: &str, se_export: &str| {
        let yaml = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: default}}
spec:
  hosts: [svc.example.internal]
  exportTo: {se_export}
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 10.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/gw]
  exportTo: {vs_export}
  http: [{{route: [{{destination: {{host: svc.example.internal}}}}]}}]
"#
        );
        let parsed = portico_api::parse_text("case.yaml", &yaml, "default");
        let compiled = compile(&parsed.resources, &Options::default());
        let routed = !compiled.snapshot.listeners.is_empty()
            && serde_json::to_string(&compiled.snapshot).unwrap().contains("a.example.com");
        let has_cluster = serde_json::to_string(&compiled.snapshot).unwrap().contains("10.0.0.1");
        let diags: Vec<String> = compiled.diagnostics.iter().map(|d| d.to_string()).collect();
        (routed, has_cluster, diags)
    };
    for visible in [r#"["*"]"#, r#"[istio-system]"#, r#"[".", istio-system]"#, "[]"] {
        let (routed, cluster, diags) = case(visible, visible);
        assert!(routed && cluster, "exportTo {visible} includes istio-system: {diags:#?}");
    }
    for hidden in [r#"["."]"#, r#"[other]"#] {
        let (routed, _, diags) = case(hidden, "[]");
        assert!(!routed, "VirtualService exportTo {hidden} is not seen by the gateway");
        assert!(diags.iter().any(|d| d.contains("does not include the gateway's namespace")), "{diags:#?}");
    }
    for hidden in [r#"["."]"#, r#"["~"]"#, r#"[other]"#] {
        let (routed, cluster, diags) = case("[]", hidden);
        assert!(routed && !cluster, "ServiceEntry exportTo {hidden} is not seen by the gateway: {diags:#?}");
    }
}
