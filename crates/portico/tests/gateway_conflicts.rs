#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! What colliding Gateways do to traffic, as Istio's gateway simulation tests pin it down:
//! the real binary, real backends (`portico-echo`), real sockets on 127.0.0.1.

mod common;

use common::*;
use std::net::TcpStream;
use std::process::Command;

fn service_entry(name: &str, port: u16, protocol: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  addresses: [240.0.0.{octet}]
  resolution: STATIC
  ports: [{{number: 80, name: web, protocol: {protocol}}}]
  endpoints: [{{address: 127.0.0.1, ports: {{web: {port}}}}}]
---
"#,
        octet = port % 250 + 1
    )
}

fn tcp_gateway(namespace: &str, created: Option<&str>) -> String {
    let ts = created.map(|t| format!(", creationTimestamp: \"{t}\"")).unwrap_or_default();
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gateway, namespace: {namespace}{ts}}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: tcp, protocol: TCP}}, hosts: [foo.bar]}}]
---
"#
    )
}

const TCP_ROUTE: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["*"]
  gateways: [istio-system/gateway]
  tcp:
  - route: [{destination: {host: productpage.default.svc.cluster.local, port: {number: 80}}}]
"#;

/// Start the gateway on `yaml` and say whether port 80 relays to the productpage backend.
fn tcp_port_relays(yaml: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("config.yaml"), yaml);
    let gw = start_gateway(dir.path(), &[]);
    // The gateway is ready: its listeners are bound (or were left closed on purpose).
    if TcpStream::connect(("127.0.0.1", gw.http_port)).is_err() {
        return false;
    }
    let r = get(gw.http_port, "foo.bar", "/", &[]).unwrap();
    assert_eq!(r.body, "productpage\n");
    true
}

/// Two TCP servers on one port in Gateways of the same name in two namespaces: the one that
/// takes precedence (oldest, then name, then namespace) owns the port. When that is the one no
/// VirtualService binds to, the port stays closed (Istio's "duplicate cross namespace gateway
/// collision" cases, and the same with creation times deciding).
#[test]
fn tcp_port_goes_to_the_gateway_that_takes_precedence() {
    let backend_port = free_port();
    let _pp = echo_backend(backend_port, "productpage");
    let se = service_entry("productpage", backend_port, "TCP");
    let case = |a: String, b: String| format!("{se}{a}{b}{TCP_ROUTE}");

    // Same age, same name: `alpha` sorts before `istio-system` and takes the port.
    assert!(!tcp_port_relays(&case(tcp_gateway("istio-system", None), tcp_gateway("alpha", None))));
    // `zeta` sorts after: istio-system keeps the port and its route.
    assert!(tcp_port_relays(&case(tcp_gateway("istio-system", None), tcp_gateway("zeta", None))));
    // Age beats the namespace order: an older istio-system Gateway wins over alpha.
    assert!(tcp_port_relays(&case(
        tcp_gateway("istio-system", Some("2020-01-01T00:00:00Z")),
        tcp_gateway("alpha", Some("2021-06-01T00:00:00Z")),
    )));
    // And reversed: alpha older.
    assert!(!tcp_port_relays(&case(
        tcp_gateway("istio-system", Some("2021-06-01T00:00:00Z")),
        tcp_gateway("alpha", Some("2020-01-01T00:00:00Z")),
    )));
    // The same instant written in two offsets is a tie, so the namespace decides (alpha):
    // creation times compare as times, not as text.
    assert!(!tcp_port_relays(&case(
        tcp_gateway("istio-system", Some("2020-01-01T00:00:00Z")),
        tcp_gateway("alpha", Some("2020-01-01T01:00:00+01:00")),
    )));
}

/// `httpsRedirect` on a server that no VirtualService binds: requests are still redirected
/// (Istio's "httpsRedirect without routes"), not answered 404.
#[test]
fn https_redirect_without_routes_redirects() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("gw.yaml"),
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [example.com]
    tls: {httpsRedirect: true}
"#,
    );
    let gw = start_gateway(dir.path(), &[]);
    let r = get(gw.http_port, "example.com", "/some/path?q=1", &[]).unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    let location = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.as_str());
    assert_eq!(location, Some("https://example.com/some/path?q=1"));
    let r = get(gw.http_port, "other.com", "/", &[]).unwrap();
    assert_eq!(r.status, 404, "a host the server does not have");
}

/// Plaintext HTTP servers of two Gateways that name the same host on one port share one
/// virtual host: the routes of the VirtualServices bound to either, the older Gateway's first
/// and catch-alls last (Istio merges them; neither Gateway's routes are lost).
#[test]
fn http_servers_sharing_a_host_share_its_routes() {
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "svc-a");
    let _b = echo_backend(pb, "svc-b");
    let dir = tempfile::tempdir().unwrap();
    let gw = |name: &str, created: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: istio-system, creationTimestamp: "{created}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: [shop.example.com]}}]
---
"#
        )
    };
    let yaml = format!(
        r#"{}{}{}{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: on-newer, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/newer]
  http:
  - route: [{{destination: {{host: svc-a.default.svc.cluster.local}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: on-older, namespace: default}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/older]
  http:
  - match: [{{uri: {{prefix: /b}}}}]
    route: [{{destination: {{host: svc-b.default.svc.cluster.local}}}}]
"#,
        service_entry("svc-a", pa, "HTTP"),
        service_entry("svc-b", pb, "HTTP"),
        gw("newer", "2022-01-01T00:00:00Z"),
        gw("older", "2012-01-01T00:00:00Z"),
    );
    write(&dir.path().join("config.yaml"), &yaml);
    let g = start_gateway(dir.path(), &[]);
    let r = get(g.http_port, "shop.example.com", "/b/x", &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "svc-b\n"), "the older Gateway's VirtualService");
    let r = get(g.http_port, "shop.example.com", "/a", &[]).unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "svc-a\n"), "the newer Gateway's catch-all");
}

fn ingress(name: &str, created: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default, creationTimestamp: "{created}"}}
spec:
  ingressClassName: istio
  rules:
  - host: shop.example.com
    http:
      paths:
      - {{pathType: Prefix, path: /{name}, backend: {{service: {{name: {name}, port: {{number: 80}}}}}}}}
  tls:
  - {{hosts: [shop.example.com], secretName: my-cert-secret}}
---
"#
    )
}

fn https_get(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("shop.example.com:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(repo("examples/seed/ca.crt"))
        .args(["-w", "|%{http_code}"])
        .arg(format!("https://shop.example.com:{port}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two Ingresses with the same TLS host and secret (Istio's "ingress shared TLS cert conflict"):
/// each gets a Gateway; on 443 only the first by name (`alpha`) keeps the host; the rules of
/// both are merged into one VirtualService bound to the older Ingress's Gateway. When `alpha` is
/// older, HTTPS serves both paths; when `beta` is older, HTTPS finds no route for either, while
/// plaintext HTTP (whose servers share port 80) serves both in both cases.
#[test]
fn ingresses_sharing_a_tls_host_follow_istio() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let (pa, pb) = (free_port(), free_port());
    let _a = echo_backend(pa, "alpha");
    let _b = echo_backend(pb, "beta");
    let secret = std::fs::read_to_string(repo("examples/seed/04-secret.yaml")).unwrap();
    let base = format!("{}{}{secret}\n---\n", service_entry("alpha", pa, "HTTP"), service_entry("beta", pb, "HTTP"));
    for (alpha_time, beta_time, https_serves) in [
        ("2010-01-01T00:00:00Z", "2020-01-01T00:00:00Z", true),
        ("2020-01-01T00:00:00Z", "2010-01-01T00:00:00Z", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!("{base}{}{}", ingress("alpha", alpha_time), ingress("beta", beta_time));
        write(&dir.path().join("config.yaml"), &yaml);
        let https = free_port();
        let gw = start_gateway(dir.path(), &["--port-map", &format!("443={https}")]);
        wait_port(https);
        for name in ["alpha", "beta"] {
            let r = get(gw.http_port, "shop.example.com", &format!("/{name}"), &[]).unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, format!("{name}\n").as_str()), "http /{name}");
            let body = https_get(https, &format!("/{name}"));
            if https_serves {
                assert_eq!(body, format!("{name}\n|200"), "https /{name}, alpha older");
            } else {
                assert!(body.ends_with("|404"), "https /{name}, beta older: {body}");
            }
        }
    }
}

/// Two HTTPS servers for one host on port 443, in Gateways of two namespaces: the one that
/// takes precedence (older; reversed when the creation times are) terminates TLS for the host
/// and routes with its VirtualServices; the other server is dropped whole, so its
/// VirtualService is never used.
#[test]
fn tls_host_goes_to_the_older_gateway() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let (p1, p2) = (free_port(), free_port());
    let _a = echo_backend(p1, "via-istio-system");
    let _b = echo_backend(p2, "via-alpha");
    let secret = std::fs::read_to_string(repo("examples/seed/04-secret.yaml")).unwrap();
    let gateway = |ns: &str, created: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}, creationTimestamp: "{created}"}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, credentialName: my-cert-secret}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: {ns}}}
spec:
  hosts: [shop.example.com]
  gateways: [{ns}/gw]
  http: [{{route: [{{destination: {{host: via-{ns}.default.svc.cluster.local}}}}]}}]
---
"#
        )
    };
    for (system_time, alpha_time, winner) in [
        ("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z", "via-istio-system"),
        ("2021-01-01T00:00:00Z", "2020-01-01T00:00:00Z", "via-alpha"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "{}{}{secret}\n---\n{}{}",
            service_entry("via-istio-system", p1, "HTTP"),
            service_entry("via-alpha", p2, "HTTP"),
            gateway("istio-system", system_time),
            gateway("alpha", alpha_time),
        );
        write(&dir.path().join("config.yaml"), &yaml);
        let https = free_port();
        let _gw = start_gateway(dir.path(), &["--port-map", &format!("443={https}")]);
        wait_port(https);
        for _ in 0..3 {
            assert_eq!(https_get(https, "/"), format!("{winner}\n|200"));
        }
    }
}
