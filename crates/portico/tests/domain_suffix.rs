#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `--domain-suffix`: on a cluster whose DNS domain is not `cluster.local`, a short host
//! (`reviews`) in a VirtualService or DestinationRule means `reviews.<namespace>.svc.<suffix>`,
//! as Istio's `--domainSuffix` makes it. Real binary, real backends, real clients.

mod common;

use common::*;
use portico_fakekube::FakeApi;
use serde_json::json;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["dev.example.com"]
"#;

/// `/reviews` → short name `reviews`, subset by header; the DestinationRule names the short host too.
const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["dev.example.com"]
  gateways: ["istio-system/gw"]
  http:
  - match: [{headers: {x-version: {exact: v2}}}]
    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
  - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn answers(port: u16, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get(port, "dev.example.com", "/reviews", headers).unwrap();
        *seen.entry(format!("{} {}", r.status, r.body.trim())).or_default() += 1;
    }
    seen
}

/// File mode: the registry names the service `reviews.default.svc.example.internal`; the short
/// names in the VirtualService and DestinationRule reach it and its subsets.
#[test]
fn files_short_names_use_the_domain_suffix() {
    let (p1, p2) = (free_port(), free_port());
    let _b1 = echo_backend(p1, "reviews-v1");
    let _b2 = echo_backend(p2, "reviews-v2");
    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: ["reviews.default.svc.example.internal"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {p1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {p2}}}, labels: {{version: v2}}}}
"#
    );
    std::fs::write(dir.path().join("config.yaml"), format!("{GATEWAY}---{ROUTES}---{entry}")).unwrap();
    let gw = start_gateway(dir.path(), &["--domain-suffix", "example.internal"]);
    assert_eq!(answers(gw.http_port, 10, &[]).get("200 reviews-v1"), Some(&10));
    assert_eq!(answers(gw.http_port, 10, &[("x-version", "v2")]).get("200 reviews-v2"), Some(&10));
    // The cluster carries the full name (metrics and access logs say it).
    let dump = get(gw.admin_port, "localhost", "/config_dump", &[]).unwrap().body;
    assert!(dump.contains("outbound|9080|v2|reviews.default.svc.example.internal"), "{dump}");

    // `validate` resolves the same way: no "Referenced host not found" for the short name.
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["validate", "--domain-suffix", "example.internal"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("IST0101"), "{text}");
    // Under the default suffix the same files name a service nobody defines.
    let out = Command::new(env!("CARGO_BIN_EXE_portico")).arg("validate").arg(dir.path()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("IST0101") && text.contains("reviews.default.svc.cluster.local"), "{text}");
}

/// A malformed suffix is refused at start, not turned into hosts nobody can match.
#[test]
fn bad_domain_suffix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), GATEWAY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["validate", "--domain-suffix", "bad suffix"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--domain-suffix"));
}

/// Kubernetes mode: the Service `reviews` is `reviews.default.svc.example.internal`; the
/// VirtualService's and DestinationRule's short names reach its pods by subset.
#[test]
fn kubernetes_short_names_reach_the_service_under_the_domain_suffix() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let api = rt.block_on(FakeApi::start()).unwrap();
    api.install_istio("v1");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let _b1 = echo_backend(p1, "reviews-v1");
    let _b2 = echo_backend(p2, "reviews-v2");
    {
        let _g = rt.enter();
        api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["dev.example.com"]}]}}));
        api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "bookinfo", "namespace": "default"},
            "spec": {"hosts": ["dev.example.com"], "gateways": ["istio-system/gw"], "http": [
                {"match": [{"headers": {"x-version": {"exact": "v2"}}}],
                 "route": [{"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}}]},
                {"route": [{"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}}]}]}}));
        api.apply(json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"host": "reviews", "subsets": [
                {"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}}));
        api.apply(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"selector": {"app": "reviews"},
                "ports": [{"name": "http", "port": 9080, "targetPort": 8080, "protocol": "TCP"}]}}),
        );
        for (pod, version, port) in [("r1", "v1", p1), ("r2", "v2", p2)] {
            api.apply(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "default", "labels": {"app": "reviews", "version": version}},
                "spec": {"containers": [{"name": "app", "image": "echo"}]}, "status": {"podIP": "127.0.0.1"}}));
            api.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("reviews-{pod}"), "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "reviews"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true, "serving": true},
                    "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}}]}));
        }
    }
    let (http_port, admin_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["run", "--kubernetes", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--bind", "127.0.0.1", "--port-map", &format!("80={http_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin_port}"), "--workers", "2"])
        .args(["--gateway-namespace", "istio-system", "--domain-suffix", "example.internal."])
        .env("PORTICO_LOG", "warn")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _gw = Proc(child);
    let start = Instant::now();
    while !get(admin_port, "localhost", "/healthz/ready", &[]).is_ok_and(|r| r.status == 200) {
        assert!(start.elapsed() < Duration::from_secs(20), "gateway never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(answers(http_port, 10, &[]).get("200 reviews-v1"), Some(&10));
    assert_eq!(answers(http_port, 10, &[("x-version", "v2")]).get("200 reviews-v2"), Some(&10));
}
