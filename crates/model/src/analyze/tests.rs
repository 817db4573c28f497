//! Table tests, one or more cases per analyzer code: YAML in → exactly these (code, resource,
//! message class) for the codes the case is about. Inputs are shaped after Istio's analyzer
//! test data (`pkg/config/analysis/analyzers/testdata`), written for Portico.

use crate::compile::{compile, timestamp};
use crate::Options;
use portico_api::{parse_text, Diagnostic, Severity};

const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [240.0.0.1]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  addresses: [240.0.0.2]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9443, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.example.com"]}]
"#;

fn diagnostics(yaml: &str) -> Vec<Diagnostic> {
    let text = format!("{SERVICES}---\n{yaml}");
    let parsed = parse_text("case.yaml", &text, "default");
    let mut out = parsed.diagnostics;
    out.extend(compile(&parsed.resources, &Options::default()).diagnostics);
    out
}

/// (code, resource, the start of the message: Istio's template up to its first argument)
type Want = (&'static str, &'static str, &'static str);

/// The findings with one of `codes` must be exactly `want` (in any order).
fn case(name: &str, codes: &[&str], yaml: &str, want: &[Want]) -> Option<String> {
    let diags = diagnostics(yaml);
    let mut got: Vec<&Diagnostic> = diags.iter().filter(|d| codes.contains(&d.code)).collect();
    let mut missing = Vec::new();
    for w in want {
        match got.iter().position(|d| d.code == w.0 && d.resource == w.1 && d.message.starts_with(w.2)) {
            Some(i) => {
                got.remove(i);
            }
            None => missing.push(format!("{w:?}")),
        }
    }
    if missing.is_empty() && got.is_empty() {
        return None;
    }
    let mut m = format!("{name}: missing {missing:?}; unexpected:");
    for d in got {
        m.push_str(&format!("\n    {d}"));
    }
    m.push_str("\n  all findings:");
    for d in &diags {
        m.push_str(&format!("\n    {d}"));
    }
    Some(m)
}

fn run(cases: &[(&str, &[&str], &str, &[Want])]) {
    let failures: Vec<String> = cases.iter().filter_map(|(n, c, y, w)| case(n, c, y, w)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn level(yaml: &str, code: &str) -> Severity {
    diagnostics(yaml).iter().find(|d| d.code == code).map(|d| d.severity).unwrap_or_else(|| panic!("no {code}"))
}

#[test]
fn ist0101_referenced_resource_not_found() {
    run(&[
        (
            "gateway",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-bogus, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [httpbin-gateway-bogus, istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
            &[(
                "IST0101",
                "VirtualService/default/httpbin-bogus",
                "Referenced gateway not found: \"httpbin-gateway-bogus\"",
            )],
        ),
        (
            "host, mirror host, host:port",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bogushost, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews-bogus}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-mirror-bogushost, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], mirror: {host: mirror-bogus}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bogusport, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, port: {number: 7777}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-tcp, namespace: default}
spec:
  hosts: [reviews]
  tcp: [{route: [{destination: {host: tcp-bogus}}]}]
"#,
            &[
                ("IST0101", "VirtualService/default/reviews-bogushost", "Referenced host not found: \"reviews-bogus\""),
                (
                    "IST0101",
                    "VirtualService/default/reviews-mirror-bogushost",
                    "Referenced mirror host not found: \"mirror-bogus\"",
                ),
                (
                    "IST0101",
                    "VirtualService/default/reviews-bogusport",
                    "Referenced host:port not found: \"reviews:7777\"",
                ),
                ("IST0101", "VirtualService/default/reviews-tcp", "Referenced host not found: \"tcp-bogus\""),
            ],
        ),
        (
            "subset in route and mirror",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bogussubset, namespace: default}
spec:
  hosts: [reviews]
  http:
  - {match: [{uri: {prefix: /v1}}], route: [{destination: {host: reviews, subset: v1}}]}
  - route: [{destination: {host: reviews, subset: bogus}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-mirror-bogussubset, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], mirror: {host: reviews, subset: bogus}}]
"#,
            &[
                (
                    "IST0101",
                    "VirtualService/default/reviews-bogussubset",
                    "Referenced host+subset in destinationrule not found: \"reviews+bogus\"",
                ),
                (
                    "IST0101",
                    "VirtualService/default/reviews-mirror-bogussubset",
                    "Referenced mirror+subset in destinationrule not found: \"reviews+bogus\"",
                ),
            ],
        ),
        (
            "delegate",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - {match: [{uri: {prefix: /a}}], delegate: {name: missing}}
  - {match: [{uri: {prefix: /b}}], delegate: {name: leaf, namespace: team}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: leaf, namespace: team}
spec:
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            &[("IST0101", "VirtualService/default/root", "Referenced delegate not found: \"default/missing\"")],
        ),
        (
            "gateway selector matches no workload (this instance)",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway-bogus}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"#,
            &[(
                "IST0101",
                "Gateway/default/httpbin-gateway",
                "Referenced selector not found: \"istio=ingressgateway-bogus\"",
            )],
        ),
        (
            "credentialName",
            &["IST0101"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: defaultgateway-boguscredentialname, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: SIMPLE, credentialName: bogus}
"#,
            &[(
                "IST0101",
                "Gateway/istio-system/defaultgateway-boguscredentialname",
                "Referenced credentialName not found: \"bogus\"",
            )],
        ),
    ]);
    let gw = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [a.example.com]\n  gateways: [nope]\n  http: [{route: [{destination: {host: reviews}}]}]\n";
    assert_eq!(level(gw, "IST0101"), Severity::Error);
}

#[test]
fn ist0107_ist0108_annotations() {
    run(&[(
        "unknown and misplaced",
        &["IST0107", "IST0108"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: annotated
  namespace: default
  annotations:
    networking.istio.io/bogus: "x"
    sidecar.istio.io/inject: "false"
    galley.istio.io/analyze-suppress: IST0999
    example.com/mine: ok
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
        &[
            ("IST0108", "VirtualService/default/annotated", "Unknown annotation: networking.istio.io/bogus"),
            (
                "IST0107",
                "VirtualService/default/annotated",
                "Misplaced annotation: sidecar.istio.io/inject can only be applied to Pod",
            ),
        ],
    )]);
}

#[test]
fn ist0109_conflicting_mesh_gateway_hosts() {
    run(&[
        (
            "same host, both on the mesh",
            &["IST0109"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: team1}
spec:
  hosts: [ratings.default.svc.cluster.local]
  http: [{route: [{destination: {host: ratings.default.svc.cluster.local, port: {number: 9080}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: team2}
spec:
  hosts: [ratings.default.svc.cluster.local]
  gateways: [mesh]
  http: [{route: [{destination: {host: ratings.default.svc.cluster.local, port: {number: 9080}}}]}]
"#,
            &[
                ("IST0109", "VirtualService/team1/ratings", "The VirtualServices team1/ratings,team2/ratings associated with mesh gateway define the same host */ratings.default.svc.cluster.local"),
                ("IST0109", "VirtualService/team2/ratings", "The VirtualServices team1/ratings,team2/ratings associated with mesh gateway define the same host */ratings.default.svc.cluster.local"),
            ],
        ),
        (
            "exported to one namespace and to every namespace",
            &["IST0109"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: foo}
spec:
  hosts: [productpage.default.svc.cluster.local]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: bar}
spec:
  hosts: [productpage.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            &[
                ("IST0109", "VirtualService/foo/productpage", "The VirtualServices foo/productpage,bar/productpage associated with mesh gateway define the same host foo/productpage.default.svc.cluster.local"),
                ("IST0109", "VirtualService/bar/productpage", "The VirtualServices foo/productpage,bar/productpage associated with mesh gateway define the same host foo/productpage.default.svc.cluster.local"),
            ],
        ),
        (
            "exported to different namespaces, or bound to a gateway only: no conflict",
            &["IST0109"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: foo}
spec:
  hosts: [productpage.default.svc.cluster.local]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: bar}
spec:
  hosts: [productpage.default.svc.cluster.local]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-gw, namespace: foo}
spec:
  hosts: [productpage.default.svc.cluster.local]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            &[],
        ),
    ]);
}

#[test]
fn ist0112_destination_port_required() {
    run(&[(
        "two ports, none chosen",
        &["IST0112"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-2port-missing, namespace: default}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}, {route: [{destination: {host: ratings, port: {number: 9080}}}]}]
"#,
        &[(
            "IST0112",
            "VirtualService/default/reviews-2port-missing",
            "This VirtualService routes to a service \"ratings\" that exposes multiple ports [9080 9443].",
        )],
    )]);
}

#[test]
fn ist0128_ist0129_destination_rule_tls_without_ca() {
    run(&[
        (
            "SIMPLE at the destination, MUTUAL at a port",
            &["IST0128", "IST0129"],
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-tls, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: MUTUAL, clientCertificate: /etc/c.pem, privateKey: /etc/k.pem}
"#,
            &[
                ("IST0128", "DestinationRule/default/db-tls", "DestinationRule default/db-tls in namespace default has TLS mode set to SIMPLE but no caCertificates"),
                ("IST0129", "DestinationRule/default/db-tls", "DestinationRule default/db-tls in namespace default has TLS mode set to MUTUAL but no caCertificates"),
            ],
        ),
        (
            "with a CA, a credentialName or an explicit insecureSkipVerify: nothing",
            &["IST0128", "IST0129"],
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-ca, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
    portLevelSettings:
    - {port: {number: 9080}, tls: {mode: SIMPLE, credentialName: db-cred}}
    - {port: {number: 9081}, tls: {mode: SIMPLE, insecureSkipVerify: true}}
"#,
            &[],
        ),
    ]);
}

#[test]
fn ist0130_ist0131_unreachable_rules_and_ineffective_matches() {
    run(&[
        (
            "duplicate matches and rules after a match-less rule",
            &["IST0130", "IST0131"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: duplicate-match, namespace: default}
spec:
  hosts: [reviews]
  http:
  - {match: [{uri: {exact: /a}}], route: [{destination: {host: reviews}}]}
  - {name: second, match: [{uri: {exact: /a}}, {uri: {exact: /b}}], route: [{destination: {host: reviews}}]}
  - {match: [{uri: {exact: /a}}], route: [{destination: {host: reviews}}]}
  - route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: duplicate-empty-tcp, namespace: default}
spec:
  hosts: [reviews]
  tcp:
  - route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"#,
            &[
                ("IST0131", "VirtualService/default/duplicate-match", "VirtualService rule \"second\" match #0 is not used (duplicate/overlapping match in rule #0)."),
                ("IST0131", "VirtualService/default/duplicate-match", "VirtualService rule #2 match #0 is not used"),
                ("IST0130", "VirtualService/default/duplicate-match", "VirtualService rule #2 not used (all matches used by prior rules)."),
                ("IST0130", "VirtualService/default/duplicate-match", "VirtualService rule #4 not used (only the last rule can have no matches)."),
                ("IST0130", "VirtualService/default/duplicate-empty-tcp", "VirtualService rule #1 not used (only the last rule can have no matches)."),
            ],
        ),
        (
            "overlapping prefixes (Istio's overlappingmatches data)",
            &["IST0130", "IST0131"],
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: non-method-get, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: send
    match: [{uri: {prefix: /api/v1/product}}, {uri: {prefix: /api/v1/products}, method: {exact: GET}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: uri-with-prefix-exact, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /}}, {uri: {exact: /}, method: {exact: GET}}]
    route: [{destination: {host: reviews}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: overlapping-mathes-with-different-methods, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api/v1/prod}, method: {exact: GET}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /api/v1/product}, method: {exact: GET}}, {uri: {prefix: /api/v1/products}, method: {exact: POST}}]
    route: [{destination: {host: reviews}}]
"#,
            &[
                ("IST0131", "VirtualService/default/non-method-get", "VirtualService rule \"send\" match #1 of prefix /api/v1/products is not used (duplicate/overlapping match in rule #0 of prefix /api/v1/product on \"send\")."),
                ("IST0131", "VirtualService/default/overlapping-mathes-with-different-methods", "VirtualService rule #1 match #0 of prefix /api/v1/product is not used"),
            ],
        ),
    ]);
    let dup = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [reviews]\n  http:\n  - {match: [{uri: {exact: /a}}], route: [{destination: {host: reviews}}]}\n  - {match: [{uri: {exact: /a}}, {uri: {exact: /b}}], route: [{destination: {host: reviews}}]}\n";
    assert_eq!(level(dup, "IST0131"), Severity::Info);
}

#[test]
fn ist0132_host_not_found_in_gateway() {
    run(&[(
        "hosts the gateway lacks, namespace-restricted gateway hosts",
        &["IST0132"],
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: restricted, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["team/*.example.org", "./own.example.org"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: testing-service-01, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: testing-service-02, namespace: default}
spec:
  hosts: [elsewhere.test]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-namespace, namespace: default}
spec:
  hosts: [a.example.org]
  gateways: [istio-system/restricted]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: right-namespace, namespace: team}
spec:
  hosts: [a.example.org]
  gateways: [istio-system/restricted]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
        &[
            ("IST0132", "VirtualService/default/testing-service-02", "one or more host [elsewhere.test] defined in VirtualService default/testing-service-02 not found in Gateway istio-system/gw."),
            ("IST0132", "VirtualService/default/wrong-namespace", "one or more host [a.example.org] defined in VirtualService default/wrong-namespace not found in Gateway istio-system/restricted."),
        ],
    )]);
}

#[test]
fn ist0133_schema_warning() {
    run(&[(
        "a webhook warning keeps the resource",
        &["IST0133", "IST0106"],
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: no-labels, namespace: default}
spec:
  host: reviews
  workloadSelector: {matchLabels: {}}
"#,
        &[("IST0133", "DestinationRule/default/no-labels", "spec.workloadSelector")],
    )]);
}

#[test]
fn ist0134_service_entry_addresses_required() {
    run(&[(
        "TCP or protocol-less ports without addresses",
        &["IST0134"],
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: service-entry-test-03, namespace: default}
spec:
  hosts: [db.example.internal]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: service-entry-test-04, namespace: default}
spec:
  hosts: [cache.example.internal]
  ports: [{number: 6379, name: redis}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: with-addresses, namespace: default}
spec:
  hosts: [mq.example.internal]
  addresses: [240.0.0.9]
  ports: [{number: 5672, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: http-only, namespace: default}
spec:
  hosts: [web.example.internal]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#,
        &[
            (
                "IST0134",
                "ServiceEntry/default/service-entry-test-03",
                "ServiceEntry addresses are required for this protocol.",
            ),
            (
                "IST0134",
                "ServiceEntry/default/service-entry-test-04",
                "ServiceEntry addresses are required for this protocol.",
            ),
        ],
    )]);
}

#[test]
fn ist0138_gateway_duplicate_certificate() {
    run(&[(
        "one credential on two gateways",
        &["IST0138"],
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-01-test-01, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [a.example.net], tls: {mode: SIMPLE, credentialName: shared}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-02-test-01, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [b.example.net], tls: {mode: SIMPLE, credentialName: shared}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: own-cert, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [c.example.net], tls: {mode: SIMPLE, credentialName: mine}}]
"#,
        &[
            ("IST0138", "Gateway/istio-system/gateway-01-test-01", "Duplicate certificate in multiple gateways [istio-system/gateway-01-test-01 istio-system/gateway-02-test-01]"),
            ("IST0138", "Gateway/istio-system/gateway-02-test-01", "Duplicate certificate in multiple gateways [istio-system/gateway-02-test-01 istio-system/gateway-01-test-01]"),
        ],
    )]);
}

#[test]
fn ist0140_route_rules_not_affecting_ingress() {
    run(&[(
        "the mesh VS splits by subset, the gateway VS does not",
        &["IST0140"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: testing-service-01-test-01, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-split, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
"#,
        &[(
            "IST0140",
            "VirtualService/default/testing-service-01-test-01",
            "Subset in virtual service default/reviews-split has no effect on ingress gateway default/testing-service-01-test-01 requests",
        )],
    )]);
}

#[test]
fn ist0145_conflicting_gateways() {
    run(&[
        (
            "same selector, port and host: both sides",
            &["IST0145"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gamma, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [other.bar]}]
"#,
            &[
                ("IST0145", "Gateway/default/alpha", "Conflict with gateways default/beta (workload selector istio=ingressgateway, port 80, hosts foo.bar)."),
                ("IST0145", "Gateway/default/beta", "Conflict with gateways default/alpha (workload selector istio=ingressgateway, port 80, hosts foo.bar)."),
            ],
        ),
        (
            "a wildcard and a name under it: no conflict (Istio compares hosts as written)",
            &["IST0145"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: wild, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.bar"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: named, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
"#,
            &[],
        ),
        (
            "a selector within another, the narrower one not selecting this instance: no conflict",
            &["IST0145"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [db.example.com], tls: {mode: PASSTHROUGH}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta, namespace: istio-system}
spec:
  selector: {istio: ingressgateway, app: gw}
  servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [db.example.com], tls: {mode: PASSTHROUGH}}]
"#,
            &[],
        ),
        (
            "a selector within another, both selecting this instance",
            &["IST0145"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8443, name: tls, protocol: TLS}, hosts: [db.example.com], tls: {mode: PASSTHROUGH}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta, namespace: istio-system}
spec:
  selector: {}
  servers: [{port: {number: 8443, name: tls, protocol: TLS}, hosts: [db.example.com], tls: {mode: PASSTHROUGH}}]
"#,
            &[
                ("IST0145", "Gateway/istio-system/alpha", "Conflict with gateways istio-system/beta (workload selector istio=ingressgateway, port 8443, hosts db.example.com)."),
                ("IST0145", "Gateway/istio-system/beta", "Conflict with gateways istio-system/alpha (workload selector , port 8443, hosts db.example.com). At run time: port 8443 host `db.example.com` is already served by a TLS server of Gateway istio-system/alpha"),
            ],
        ),
        (
            "different ports: no conflict",
            &["IST0145"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8081, name: http, protocol: HTTP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8082, name: http, protocol: HTTP}, hosts: [foo.bar]}]
"#,
            &[],
        ),
    ]);
}

#[test]
fn ist0161_invalid_gateway_credential() {
    run(&[(
        "the secret holds no certificate",
        &["IST0161"],
        r#"
apiVersion: v1
kind: Secret
metadata: {name: broken, namespace: istio-system}
stringData: {tls.crt: "not a certificate", tls.key: "not a key"}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [s.example.com], tls: {mode: SIMPLE, credentialName: broken}}]
"#,
        &[(
            "IST0161",
            "Gateway/istio-system/secure",
            "The credential referenced by the Gateway secure in namespace istio-system is invalid",
        )],
    )]);
}

#[test]
fn ist0173_ist0174_destination_rule_subsets_and_hosts() {
    run(&[(
        "a subset with no endpoint, a host with no service",
        &["IST0173", "IST0174"],
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v9, labels: {version: v9}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fake, namespace: default}
spec:
  host: fake-host
"#,
        &[
            (
                "IST0173",
                "DestinationRule/default/reviews",
                "The Subset v9 defined in the DestinationRule does not select any pods.",
            ),
            (
                "IST0174",
                "DestinationRule/default/fake",
                "The host fake-host defined in the DestinationRule does not match any services in the mesh.",
            ),
        ],
    )]);
}

#[test]
fn analyze_suppress_annotation_silences_codes() {
    run(&[(
        "galley.istio.io/analyze-suppress",
        &["IST0101", "IST0132"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: quiet
  namespace: default
  annotations: {galley.istio.io/analyze-suppress: "IST0132,IST0101"}
spec:
  hosts: [elsewhere.test]
  gateways: [bogus]
  http: [{route: [{destination: {host: nowhere}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: loud, namespace: default}
spec:
  hosts: [elsewhere.test]
  gateways: [bogus]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
        &[
            ("IST0101", "VirtualService/default/loud", "Referenced gateway not found"),
            ("IST0132", "VirtualService/default/loud", "one or more host"),
        ],
    )]);
}

#[test]
fn timestamps_order_by_instant() {
    assert_eq!(timestamp("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(timestamp("2020-01-01T00:00:00Z"), Some(1_577_836_800));
    assert_eq!(timestamp("2020-01-01T01:00:00+01:00"), Some(1_577_836_800));
    assert_eq!(timestamp("2020-01-01T00:00:00.999Z"), Some(1_577_836_800));
    assert_eq!(timestamp("2019-12-31T19:00:00-05:00"), Some(1_577_836_800));
    assert_eq!(timestamp("yesterday"), None);
    // Written later in another offset, but earlier in time.
    assert!(timestamp("2020-01-01T00:30:00+01:00") < timestamp("2020-01-01T00:00:00Z"));
}

#[test]
fn ist0002_deprecated_fields() {
    run(&[(
        "fault.delay.percent",
        &["IST0002"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: foo}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - fault: {delay: {percent: 50, fixedDelay: 5s}}
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: current, namespace: foo}
spec:
  hosts: [ratings.default.svc.cluster.local]
  http:
  - fault: {delay: {percentage: {value: 50}, fixedDelay: 5s}}
    route: [{destination: {host: ratings.default.svc.cluster.local, port: {number: 9080}}}]
"#,
        &[(
            "IST0002",
            "VirtualService/foo/productpage",
            "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
        )],
    )]);
}

#[test]
fn ist0122_invalid_regexp() {
    run(&[(
        "regexes RE2 refuses, beside the schema error",
        &["IST0122"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad-match, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "[A-Z"}, headers: {x-user: {regex: "(?!admin).*"}}}]
    route: [{destination: {host: reviews}}]
"#,
        &[
            ("IST0122", "VirtualService/default/bad-match", "Field \"uri\" regular expression invalid: \"[A-Z\""),
            (
                "IST0122",
                "VirtualService/default/bad-match",
                "Field \"headers\" regular expression invalid: \"(?!admin).*\"",
            ),
        ],
    )]);
}

#[test]
fn ist0149_jwt_claim_routing_without_request_authentication() {
    run(&[(
        "claims on a gateway that applies here",
        &["IST0149"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: foo, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/gw]
  http:
  - match: [{headers: {"@request.auth.claims.group": {exact: admin}}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"#,
        &[(
            "IST0149",
            "VirtualService/default/foo",
            "The virtual service uses the JWT claim based routing (key: @request.auth.claims.group) but found no request authentication for the gateway (istio-system/gw)",
        )],
    )]);
}

#[test]
fn ist0173_subset_of_an_entry_without_endpoints() {
    run(&[(
        "no endpoint at all to select",
        &["IST0173"],
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.org]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: external, namespace: default}
spec:
  host: api.example.org
  subsets: [{name: v1, labels: {version: v1}}]
"#,
        &[(
            "IST0173",
            "DestinationRule/default/external",
            "The Subset v1 defined in the DestinationRule does not select any pods.",
        )],
    )]);
}

/// Cases of Istio's analyzer test grid (`analyzers_test.go`), with inputs written after its
/// test data: the same objects and the same expected (code, resource) pairs.
#[test]
fn istio_analyzer_grid() {
    run(&[
        (
            "virtualServiceGateways: Gateways without servers still exist for the analyzers",
            &["IST0101", "IST0132"],
            r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: httpbin-gateway}
spec:
  selector: {istio: ingressgateway}
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: crossnamespace-gw, namespace: another}
spec:
  selector: {istio: ingressgateway}
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: httpbin-bogus}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway-bogus]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: httpbin-mesh}
spec:
  hosts: [httpbin-mesh.example.com]
  gateways: [mesh]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: cross-test, namespace: default}
spec:
  hosts: ["*"]
  gateways: [another/crossnamespace-gw]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            &[
                ("IST0101", "VirtualService/default/httpbin-bogus", "Referenced gateway not found: \"httpbin-gateway-bogus\""),
                ("IST0132", "VirtualService/default/cross-test", "one or more host [*] defined in VirtualService default/cross-test not found in Gateway another/crossnamespace-gw."),
                ("IST0132", "VirtualService/default/httpbin-bogus", "one or more host [*] defined in VirtualService default/httpbin-bogus not found in Gateway default/httpbin-gateway-bogus."),
                ("IST0132", "VirtualService/default/httpbin", "one or more host [*] defined in VirtualService default/httpbin not found in Gateway default/httpbin-gateway."),
            ],
        ),
        (
            "missing Addresses and Protocol in Service Entry",
            &["IST0134"],
            r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-01, namespace: default}
spec:
  hosts: [istio.io]
  exportTo: ["."]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-02, namespace: default}
spec:
  hosts: [istio.io]
  addresses: [10.0.0.1]
  exportTo: ["."]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-03, namespace: default}
spec:
  hosts: [istio.io]
  exportTo: ["."]
  ports: [{number: 443, name: https}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-04, namespace: default}
spec:
  hosts: [istio.io]
  exportTo: ["."]
  ports: [{number: 443, name: https, protocol: ""}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-06, namespace: default}
spec:
  hosts: [istio.io]
  addresses: [10.0.0.1]
  exportTo: ["."]
  ports: [{number: 443, name: https, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-test-07, namespace: default}
spec:
  hosts: [istio.io]
  exportTo: ["."]
  ports: [{number: 443, name: https, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: DNS
"#,
            &[
                ("IST0134", "ServiceEntry/default/service-entry-test-03", "ServiceEntry addresses are required for this protocol."),
                ("IST0134", "ServiceEntry/default/service-entry-test-04", "ServiceEntry addresses are required for this protocol."),
                ("IST0134", "ServiceEntry/default/service-entry-test-07", "ServiceEntry addresses are required for this protocol."),
            ],
        ),
        (
            "certificate duplication in Gateway",
            &["IST0138"],
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-01-test-01, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-01-wildcard-cert}, hosts: [01.test-01.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-02-test-01, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-01-wildcard-cert}, hosts: [02.test-01.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-01-test-02, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-02-wildcard-cert}, hosts: [01.test-02.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-02-test-02, namespace: istio-system}
spec:
  selector: {istio: ingressgateway, type: internal}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-02-wildcard-cert}, hosts: [02.test-02.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-01-test-03, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-03-wildcard-cert}, hosts: [01.test-03.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-02-test-03, namespace: istio-system}
spec:
  selector: {istio: ingressgateway, type: internal}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: test-03-wildcard-cert}, hosts: [02.test-03.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-01-test-04, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: 01-test-04-wildcard-cert}, hosts: [01.test-04.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-02-test-04, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, name: https, protocol: HTTPS}, tls: {mode: SIMPLE, credentialName: 02-test-04-wildcard-cert}, hosts: [02.test-04.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-03-test-06, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [03.test-06.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway-04-test-06, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [04.test-06.com]}]
"#,
            &[
                ("IST0138", "Gateway/istio-system/gateway-01-test-01", "Duplicate certificate in multiple gateways"),
                ("IST0138", "Gateway/istio-system/gateway-02-test-01", "Duplicate certificate in multiple gateways"),
                ("IST0138", "Gateway/istio-system/gateway-01-test-02", "Duplicate certificate in multiple gateways"),
                ("IST0138", "Gateway/default/gateway-01-test-03", "Duplicate certificate in multiple gateways"),
            ],
        ),
    ]);
}

#[test]
fn istio_analyzer_grid_destination_hosts() {
    run(&[(
        "virtualServiceDestinationHosts (the ServiceEntry part)",
        &["IST0101", "IST0112"],
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: external-reviews, namespace: default}
spec:
  hosts: [external-reviews.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: eu-wildcard, namespace: default}
spec:
  hosts: ["*.eu.bookinfo.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-ignore, namespace: default-ignore}
spec:
  exportTo: ["."]
  hosts: ["*.example.net"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-other, namespace: other}
spec:
  exportTo: ["."]
  hosts: [other.bookinfo.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: service-entry-exported, namespace: other}
spec:
  exportTo: [default]
  hosts: [abc.bookinfo.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-external, namespace: default}
spec:
  hosts: [a.example.com]
  http: [{route: [{destination: {host: external-reviews.org}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-bookinfo-eu, namespace: default}
spec:
  hosts: [b.example.com]
  http: [{route: [{destination: {host: reviews.eu.bookinfo.com}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-bookinfo-eu-wildcard, namespace: default}
spec:
  hosts: [c.example.com]
  http: [{route: [{destination: {host: "*.eu.bookinfo.com"}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-bookinfo-other, namespace: default}
spec:
  hosts: [d.example.com]
  http: [{route: [{destination: {host: other.bookinfo.com}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: ignored-wildcard, namespace: default}
spec:
  hosts: [e.example.com]
  http: [{route: [{destination: {host: www.example.net}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-mirror-bogushost, namespace: default}
spec:
  hosts: [f.example.com]
  http: [{route: [{destination: {host: external-reviews.org}}], mirror: {host: reviews-bogus}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews-bogusport, namespace: default}
spec:
  hosts: [g.example.com]
  http: [{route: [{destination: {host: external-reviews.org, port: {number: 999}}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: vs-to-exported-serviceentry, namespace: default}
spec:
  hosts: [h.example.com]
  http: [{route: [{destination: {host: abc.bookinfo.com}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: cross-namespace, namespace: istio-system}
spec:
  hosts: [i.example.com]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
        &[
            (
                "IST0101",
                "VirtualService/default/reviews-bookinfo-other",
                "Referenced host not found: \"other.bookinfo.com\"",
            ),
            ("IST0101", "VirtualService/default/ignored-wildcard", "Referenced host not found: \"www.example.net\""),
            (
                "IST0101",
                "VirtualService/default/reviews-mirror-bogushost",
                "Referenced mirror host not found: \"reviews-bogus\"",
            ),
            (
                "IST0101",
                "VirtualService/default/reviews-bogusport",
                "Referenced host:port not found: \"external-reviews.org:999\"",
            ),
        ],
    )]);
}

#[test]
fn istio_analyzer_grid_dupmatches() {
    run(&[(
        "dupmatches (http, tcp and tls rules)",
        &["IST0130", "IST0131"],
        r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: sample-foo-cluster01, namespace: foo}
spec:
  hosts: [sample.foo.svc.cluster.local]
  http:
  - fault: {delay: {fixedDelay: 5s, percentage: {value: 100}}}
    route: [{destination: {host: sample.foo.svc.cluster.local}}]
  - mirror: {host: sample.bar.svc.cluster.local}
    route: [{destination: {host: sample.bar.svc.cluster.local, subset: v1}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: duplicate-match}
spec:
  hosts: [sample.baz.svc.cluster.local]
  http:
  - name: send /api/v1/products to sample.foo
    match: [{name: prefix /api/v1/products, uri: {prefix: /api/v1/products}}]
    route: [{destination: {host: sample.foo.svc.cluster.local}}]
  - name: send /api/v1/products to sample.bar
    match: [{uri: {prefix: /api/v1/products}}]
    route: [{destination: {host: sample.bar.svc.cluster.local, subset: v1}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: almost-duplicate-match}
spec:
  hosts: [sample.bar.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /api/v1/products}}]
    route: [{destination: {host: sample.foo.svc.cluster.local}}]
  - name: send /api/v1/products and /potato to sample.bar
    match: [{name: prefix /api/v1/products, uri: {prefix: /api/v1/products}}, {name: prefix /potato, uri: {prefix: /potato}}]
    route: [{destination: {host: sample.bar.svc.cluster.local, subset: v1}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: duplicate-tcp-match}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: duplicate-empty-tcp}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: almost-duplicate-tcp-match}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
  - match: [{port: 31400}, {port: 31401}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: tls-routing, namespace: none}
spec:
  hosts: [www1.googleapis.com, api1.facebook.com]
  tls:
  - match: [{port: 2443, sniHosts: [www1.googleapis.com]}]
    route: [{destination: {host: www1.googleapis.com}}]
  - match: [{port: 2443, sniHosts: [www1.googleapis.com]}]
    route: [{destination: {host: api1.facebook.com}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: tls-routing-almostmatch, namespace: none}
spec:
  hosts: [www1.example.com]
  tls:
  - match: [{port: 2443, sniHosts: [www1.example.com]}]
    route: [{destination: {host: www1.googleapis.com}}]
  - match: [{port: 2443, sniHosts: [www1.example.com]}, {port: 8443, sniHosts: [www1.example.com]}]
    route: [{destination: {host: api1.facebook.com}}]
"#,
        &[
            ("IST0130", "VirtualService/foo/sample-foo-cluster01", "VirtualService rule #1 not used (only the last rule can have no matches)."),
            ("IST0131", "VirtualService/default/duplicate-match", "VirtualService rule \"send /api/v1/products to sample.bar\" match #0 is not used (duplicate/overlapping match in rule \"send /api/v1/products to sample.foo\")."),
            ("IST0130", "VirtualService/default/duplicate-match", "VirtualService rule \"send /api/v1/products to sample.bar\" not used (all matches used by prior rules)."),
            ("IST0131", "VirtualService/default/almost-duplicate-match", "VirtualService rule \"send /api/v1/products and /potato to sample.bar\" match \"prefix /api/v1/products\" is not used (duplicate/overlapping match in rule #0)."),
            ("IST0131", "VirtualService/default/duplicate-tcp-match", "VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)."),
            ("IST0130", "VirtualService/default/duplicate-tcp-match", "VirtualService rule #1 not used (all matches used by prior rules)."),
            ("IST0130", "VirtualService/default/duplicate-empty-tcp", "VirtualService rule #1 not used (only the last rule can have no matches)."),
            ("IST0131", "VirtualService/default/almost-duplicate-tcp-match", "VirtualService rule #1 match #0 is not used"),
            ("IST0131", "VirtualService/none/tls-routing", "VirtualService rule #1 match #0 is not used"),
            ("IST0130", "VirtualService/none/tls-routing", "VirtualService rule #1 not used (all matches used by prior rules)."),
            ("IST0131", "VirtualService/none/tls-routing-almostmatch", "VirtualService rule #1 match #0 is not used"),
        ],
    )]);
}

#[test]
fn istio_analyzer_grid_conflicting_gateways() {
    // "conflicting gateways detect": same selector, port 80, host foo.bar (TCP and HTTP).
    run(&[(
        "conflicting-gateways",
        &["IST0145"],
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: tcp, protocol: TCP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
"#,
        &[
            ("IST0145", "Gateway/default/alpha", "Conflict with gateways default/beta (workload selector istio=ingressgateway, port 80, hosts foo.bar)."),
            ("IST0145", "Gateway/default/beta", "Conflict with gateways default/alpha (workload selector istio=ingressgateway, port 80, hosts foo.bar)."),
        ],
    )]);
    // "conflicting gateways detect by sub selector": the workload carries both selectors' labels.
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: beta}
spec:
  selector: {istio: ingressgateway, app: istio-ingressgateway, cusKey: cusValue}
  servers: [{port: {number: 80, name: tcp, protocol: TCP}, hosts: [foo.bar]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: alpha}
spec:
  selector: {istio: ingressgateway, cusKey: cusValue}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [foo.bar]}]
"#;
    let parsed = parse_text("case.yaml", yaml, "default");
    let mut opts = Options::default();
    opts.labels.insert("app".into(), "istio-ingressgateway".into());
    opts.labels.insert("cusKey".into(), "cusValue".into());
    let found: Vec<String> = compile(&parsed.resources, &opts)
        .diagnostics
        .iter()
        .filter(|d| d.code == "IST0145" && d.message.starts_with("Conflict with gateways"))
        .map(|d| format!("{} {}", d.resource, d.message))
        .collect();
    assert_eq!(
        found,
        [
            "Gateway/default/beta Conflict with gateways default/alpha (workload selector app=istio-ingressgateway,cusKey=cusValue,istio=ingressgateway, port 80, hosts foo.bar). At run time: port 80: protocol TCP conflicts with the Http server of Gateway default/alpha already on this port; this server is ignored",
            "Gateway/default/alpha Conflict with gateways default/beta (workload selector cusKey=cusValue,istio=ingressgateway, port 80, hosts foo.bar).",
        ]
        .map(String::from)
        .to_vec(),
        "{found:#?}"
    );
}

/// Istio's ingress conversion merges every Ingress's rules per host into one VirtualService,
/// bound to the Gateway of the oldest Ingress naming the host, and ignores `defaultBackend`.
#[test]
fn ingresses_merge_per_host_and_ignore_the_default_backend() {
    let ingress = |name: &str, created: &str, path: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  ingressClassName: istio\n  defaultBackend: {{service: {{name: fallback, port: {{number: 80}}}}}}\n  rules:\n  - host: shop.example.com\n    http:\n      paths: [{{pathType: Prefix, path: {path}, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}]\n---\n"
        )
    };
    let yaml =
        format!("{}{}", ingress("zeta", "2010-01-01T00:00:00Z", "/z"), ingress("alpha", "2020-01-01T00:00:00Z", "/a"));
    let parsed = parse_text("case.yaml", &yaml, "default");
    let compiled = compile(&parsed.resources, &Options::default());
    let routes = crate::render::render(&compiled.snapshot);
    // One virtual host, the paths of both Ingresses, from one VirtualService named after zeta
    // (the older) and bound to zeta's Gateway.
    assert_eq!(routes.matches("\n  shop.example.com").count(), 1, "{routes}");
    assert!(routes.contains("/z") && routes.contains("/a"), "{routes}");
    assert!(
        routes.contains("VirtualService default/shop-example-com-zeta-istio-autogenerated-k8s-ingress"),
        "{routes}"
    );
    assert!(!routes.contains("alpha-istio-autogenerated-k8s-ingress http"), "{routes}");
    assert!(!routes.contains("fallback"), "defaultBackend is not served:\n{routes}");
    let ignored: Vec<&Diagnostic> =
        compiled.diagnostics.iter().filter(|d| d.code == "PTC0008" && d.message.contains("defaultBackend")).collect();
    assert_eq!(ignored.len(), 2, "{:?}", compiled.diagnostics);
}

/// A certificate + key valid from `from` to `until` (y, m, d), as a Secret named `name`.
fn dated_secret(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["s.example.com".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let cert = params.self_signed(&key).unwrap();
    let indent = |pem: String| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\nstringData:\n  tls.crt: |\n{}  \
         tls.key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    )
}

#[test]
fn ist0161_certificate_dates() {
    // Judged at 2026-06-01T00:00:00Z.
    let now = timestamp("2026-06-01T00:00:00Z").unwrap();
    let gateway = |secret: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: secure, namespace: istio-system}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 443, name: https, protocol: \
             HTTPS}}, hosts: [s.example.com], tls: {{mode: SIMPLE, credentialName: {secret}}}}}]\n"
        )
    };
    let cases = [
        ("expired", dated_secret("old", (2020, 1, 1), (2021, 1, 1)), "old", Some("expired at 2021-01-01T00:00:00Z")),
        (
            "not yet valid",
            dated_secret("new", (2030, 1, 1), (2031, 1, 1)),
            "new",
            Some("is not valid before 2030-01-01"),
        ),
        ("valid", dated_secret("good", (2025, 1, 1), (2027, 1, 1)), "good", None),
    ];
    for (name, secret, secret_name, want) in cases {
        let text = format!("{SERVICES}---\n{secret}---\n{}", gateway(secret_name));
        let parsed = parse_text("case.yaml", &text, "default");
        assert!(parsed.diagnostics.is_empty(), "{name}: {:?}", parsed.diagnostics);
        let opts = Options { now: Some(now), ..Options::default() };
        let diags = compile(&parsed.resources, &opts).diagnostics;
        let got: Vec<&Diagnostic> = diags.iter().filter(|d| d.code == "IST0161").collect();
        match want {
            None => assert!(got.is_empty(), "{name}: {got:?}"),
            Some(detail) => {
                assert_eq!(got.len(), 1, "{name}: {diags:?}");
                let d = got[0];
                assert_eq!(d.resource, "Gateway/istio-system/secure", "{name}");
                assert_eq!(d.severity, Severity::Error, "{name}");
                assert!(
                    d.message.starts_with(
                        "The credential referenced by the Gateway secure in namespace istio-system is invalid"
                    ),
                    "{name}: {}",
                    d.message
                );
                assert!(d.message.contains(detail), "{name}: {}", d.message);
            }
        }
        // Without a clock the dates are not judged.
        let diags = compile(&parsed.resources, &Options::default()).diagnostics;
        assert!(!diags.iter().any(|d| d.code == "IST0161"), "{name}: {diags:?}");
    }
    assert_eq!(super::gateway::rfc3339_for_tests(0), "1970-01-01T00:00:00Z");
    assert_eq!(super::gateway::rfc3339_for_tests(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn ist0171_negative_condition_status() {
    run(&[
        (
            "a route a parent did not accept, a gateway not programmed, an entry without its waypoint",
            &["IST0171"],
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
status:
  conditions:
  - {type: Accepted, status: "True", reason: Accepted, message: ok}
  - {type: Programmed, status: "False", reason: Invalid, message: no address}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
status:
  parents:
  - parentRef: {name: web}
    controllerName: example.com/gw
    conditions:
    - {type: Accepted, status: "False", reason: NotAllowedByListeners, message: no listener allows it}
    - {type: ResolvedRefs, status: "True", reason: ResolvedRefs, message: ""}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [ext.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
status:
  conditions:
  - {type: istio.io/WaypointBound, status: "False", reason: WaypointNotFound, message: waypoint missing}
"#,
            &[
                (
                    "IST0171",
                    "Gateway.gateway.networking.k8s.io/default/web",
                    "A condition with a negative status is present: type=Programmed, reason=Invalid, message=no address.",
                ),
                (
                    "IST0171",
                    "HTTPRoute/default/r",
                    "A condition with a negative status is present: type=Accepted, reason=NotAllowedByListeners",
                ),
                (
                    "IST0171",
                    "ServiceEntry/default/ext",
                    "A condition with a negative status is present: type=istio.io/WaypointBound, reason=WaypointNotFound",
                ),
            ],
        ),
        (
            "positive conditions, unknown status and types Istio does not judge are quiet",
            &["IST0171"],
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: web}]
status:
  parents:
  - parentRef: {name: web}
    controllerName: example.com/gw
    conditions:
    - {type: Accepted, status: "True", reason: Accepted}
    - {type: ResolvedRefs, status: Unknown, reason: Pending}
    - {type: PartiallyInvalid, status: "False", reason: Whatever}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
status:
  conditions: [{type: Reconciled, status: "False", reason: Pending}]
"#,
            &[],
        ),
    ]);
}

const GATEWAY_SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  type: LoadBalancer
  selector: {istio: ingressgateway}
  ports:
  - {name: status-port, port: 15021, protocol: TCP, targetPort: 15021}
  - {name: http2, port: 80, protocol: TCP, targetPort: 8080}
  - {name: https, port: 443, protocol: TCP, targetPort: 8443}
"#;

#[test]
fn ist0162_gateway_port_not_defined_on_service() {
    let msg = "The gateway is listening on a target port (port 80) that is not defined in the Service associated \
               with its workload instances (Pod selector istio=ingressgateway).";
    let msg_8004 = "The gateway is listening on a target port (port 8004) that is not defined in the Service";
    let ports = |a: u32, b: u32| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress, namespace: istio-system}}\n\
             spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {a}, name: http, protocol: \
             HTTP}}\n    hosts: [\"*\"]\n  - port: {{number: {b}, name: http2, protocol: HTTP}}\n    hosts: [\"*\"]\n"
        )
    };
    let bogus = format!("{}---{GATEWAY_SERVICE}", ports(80, 8004));
    let fixed = format!("{}---{GATEWAY_SERVICE}", ports(8080, 8443));
    let elsewhere = format!("{}---{}", ports(8080, 8443), GATEWAY_SERVICE.replace("istio-system", "other"));
    let other_pods =
        format!("{}---{}", ports(8080, 8443), GATEWAY_SERVICE.replace("{istio: ingressgateway}", "{app: web}"));
    let unnamed = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: v1
kind: Service
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  ports: [{port: 80}, {port: 9000, protocol: UDP, targetPort: 9000}]
"#;
    run(&[
        (
            "Istio's example: ports the Service does not target",
            &["IST0162"],
            &bogus,
            &[
                ("IST0162", "Gateway/istio-system/ingress", msg),
                ("IST0162", "Gateway/istio-system/ingress", msg_8004),
                // The fixture's own Gateway on port 80 selects the same pods.
                ("IST0162", "Gateway/istio-system/gw", msg),
            ],
        ),
        (
            "the corrected ports (the fixture's own Gateway on port 80 is still off)",
            &["IST0162"],
            &fixed,
            &[("IST0162", "Gateway/istio-system/gw", msg)],
        ),
        ("no Service in the input: nothing known, nothing said", &["IST0162"], &ports(80, 8004), &[]),
        (
            "a Service in another namespace does not front the gateway's pods",
            &["IST0162"],
            &elsewhere,
            &[
                ("IST0162", "Gateway/istio-system/ingress", "The gateway is listening on a target port (port 8080)"),
                ("IST0162", "Gateway/istio-system/ingress", "The gateway is listening on a target port (port 8443)"),
                ("IST0162", "Gateway/istio-system/gw", msg),
            ],
        ),
        (
            "a Service selecting other pods does not either",
            &["IST0162"],
            &other_pods,
            &[
                ("IST0162", "Gateway/istio-system/ingress", "The gateway is listening on a target port (port 8080)"),
                ("IST0162", "Gateway/istio-system/ingress", "The gateway is listening on a target port (port 8443)"),
                ("IST0162", "Gateway/istio-system/gw", msg),
            ],
        ),
        ("targetPort defaults to port; protocol to TCP", &["IST0162"], unnamed, &[]),
    ]);
}

#[test]
fn ist0165_referenced_internal_gateway() {
    run(&[(
        "generated Gateway names, old and new spelling; a real Gateway stays quiet",
        &["IST0165", "IST0101", "IST0132"],
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-headers, namespace: sample-ingress}
spec:
  hosts: [httpbin.example.com]
  gateways:
  - sample-ingress/example-gateway-istio-autogenerated-k8s-gateway-default
  - example-gateway~istio-autogenerated-k8s-gateway~http
  - istio-system/gw
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
        &[
            (
                "IST0165",
                "VirtualService/sample-ingress/httpbin-headers",
                "Gateway reference in VirtualService sample-ingress/httpbin-headers is to an \
                 implementation-generated internal Gateway: \
                 sample-ingress/example-gateway-istio-autogenerated-k8s-gateway-default. (Portico generates no such \
                 Gateway, so this binds to nothing; attach an HTTPRoute to the Gateway API Gateway `example-gateway` \
                 instead)",
            ),
            (
                "IST0165",
                "VirtualService/sample-ingress/httpbin-headers",
                "Gateway reference in VirtualService sample-ingress/httpbin-headers is to an \
                 implementation-generated internal Gateway: example-gateway~istio-autogenerated-k8s-gateway~http.",
            ),
        ],
    )]);
    assert_eq!(
        level(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: default}\n\
             spec:\n  hosts: [a.example.com]\n  gateways: [gw-istio-autogenerated-k8s-gateway-http]\n",
            "IST0165"
        ),
        Severity::Warning
    );
}

/// istioctl's `virtualservice.GatewayAnalyzer` reads Gateway API Gateways too: a `gateways`
/// entry naming one is not IST0101, and IST0132 compares the VirtualService's hosts with the
/// listener hostnames (a listener without a hostname takes every host). An Istio Gateway of
/// the same name is looked up first. Portico adds PTC0008: such a binding serves nothing here.
#[test]
fn vs_gateway_naming_a_gateway_api_gateway() {
    const KUBE_GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: named, namespace: default}
spec:
  gatewayClassName: portico
  listeners: [{name: http, hostname: example.com, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: open, namespace: apps}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, hostname: other.example.org, port: 80, protocol: HTTP}
  - {name: any, port: 8080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  gatewayClassName: portico
  listeners: [{name: http, hostname: nothing.test, port: 80, protocol: HTTP}]
"#;
    let with = |vs: &str| format!("{KUBE_GATEWAYS}---\n{vs}");
    run(&[
        (
            "bare name, full name: found, host matches; no IST0101",
            &["IST0101", "IST0132", "PTC0008"],
            &with(
                r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: my-vs, namespace: default}
spec:
  hosts: [example.com]
  gateways: [named, default/named]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            ),
            &[
                ("PTC0008", "VirtualService/default/my-vs", "gateway `default/named` is a Gateway API Gateway"),
                ("PTC0008", "VirtualService/default/my-vs", "gateway `default/named` is a Gateway API Gateway"),
            ],
        ),
        (
            "host not among the listener hostnames: IST0132 naming the Gateway API Gateway",
            &["IST0101", "IST0132"],
            &with(
                r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere, namespace: default}
spec:
  hosts: [elsewhere.test]
  gateways: [named]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            ),
            &[(
                "IST0132",
                "VirtualService/default/elsewhere",
                "one or more host [elsewhere.test] defined in VirtualService default/elsewhere not found in Gateway \
                 default/named.",
            )],
        ),
        (
            "a listener without hostname takes every host",
            &["IST0101", "IST0132"],
            &with(
                r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: any, namespace: default}
spec:
  hosts: [whatever.test]
  gateways: [apps/open]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            ),
            &[],
        ),
        (
            "the Istio Gateway of the same name wins (its hosts, no PTC0008); a wrong namespace is still not found",
            &["IST0101", "IST0132", "PTC0008"],
            &with(
                r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: istio-first, namespace: default}
spec:
  hosts: [nothing.test]
  gateways: [istio-system/gw, open]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
"#,
            ),
            &[
                (
                    "IST0132",
                    "VirtualService/default/istio-first",
                    "one or more host [nothing.test] defined in VirtualService default/istio-first not found in \
                     Gateway istio-system/gw.",
                ),
                ("IST0101", "VirtualService/default/istio-first", "Referenced gateway not found: \"open\""),
                (
                    "IST0132",
                    "VirtualService/default/istio-first",
                    "one or more host [nothing.test] defined in VirtualService default/istio-first not found in \
                     Gateway default/open.",
                ),
            ],
        ),
    ]);
}

#[test]
fn ist0177_conflicting_service_entry_protocol() {
    run(&[
        (
            "same host and port, HTTP and TLS, both exported everywhere",
            &["IST0177"],
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-http, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-tls, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"#,
            &[
                (
                    "IST0177",
                    "ServiceEntry/default/api-http",
                    "Multiple ServiceEntries (default/api-http, default/api-tls) define the same host \"api.example.com\" \
                     and port 443 with conflicting protocols (HTTP, TLS).",
                ),
                (
                    "IST0177",
                    "ServiceEntry/default/api-tls",
                    "Multiple ServiceEntries (default/api-http, default/api-tls) define the same host \"api.example.com\" \
                     and port 443 with conflicting protocols (HTTP, TLS).",
                ),
            ],
        ),
        (
            "an entry exported to its own namespace meets an exported-everywhere one; two local entries in \
             different namespaces never meet; case of the protocol does not matter",
            &["IST0177"],
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-local, namespace: team-a}
spec:
  hosts: [db.example.com]
  exportTo: ["."]
  addresses: [240.0.0.10]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-global, namespace: team-b}
spec:
  hosts: [db.example.com]
  addresses: [240.0.0.11]
  ports: [{number: 5432, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache-a, namespace: team-a}
spec:
  hosts: [cache.example.com]
  exportTo: ["."]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache-c, namespace: team-c}
spec:
  hosts: [cache.example.com]
  exportTo: ["."]
  ports: [{number: 80, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-1, namespace: default}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web-2, namespace: default}
spec:
  hosts: [web.example.com]
  ports: [{number: 80, name: http, protocol: http}]
  resolution: DNS
"#,
            &[
                (
                    "IST0177",
                    "ServiceEntry/team-b/db-global",
                    "Multiple ServiceEntries (team-a/db-local, team-b/db-global) define the same host \
                     \"db.example.com\" and port 5432 with conflicting protocols (HTTP, TCP).",
                ),
                (
                    "IST0177",
                    "ServiceEntry/team-a/db-local",
                    "Multiple ServiceEntries (team-a/db-local, team-b/db-global) define the same host \
                     \"db.example.com\" and port 5432 with conflicting protocols (HTTP, TCP).",
                ),
            ],
        ),
    ]);
}
