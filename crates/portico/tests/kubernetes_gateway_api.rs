#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! `portico run --kubernetes` with the Gateway API kinds served by a fake API server: a
//! GatewayClass, Gateway and HTTPRoute created through the API route real requests to a real
//! backend found through its Service and EndpointSlice; deleting the route stops it; a kind whose
//! CRD is not installed (404 on list) holds nothing back.

mod common;

use common::*;
use portico_fakekube::FakeApi;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    rt: tokio::runtime::Runtime,
    api: FakeApi,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let api = rt.block_on(FakeApi::start()).unwrap();
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
}

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

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_ready(gw: &Gateway) {
    wait_until("gateway ready", || {
        get(gw.admin_port, "localhost", "/healthz/ready", &[]).is_ok_and(|r| r.status == 200)
    });
}

fn answer(gw: &Gateway, path: &str) -> String {
    match get(gw.http_port, "dev.example.com", path, &[]) {
        Ok(r) => format!("{} {}", r.status, r.body.trim()).trim_end().to_string(),
        Err(e) => format!("error {e}"),
    }
}

const GW_API: &str = "gateway.networking.k8s.io";

fn gateway_class(version: &str) -> Value {
    json!({"apiVersion": format!("{GW_API}/{version}"), "kind": "GatewayClass", "metadata": {"name": "portico"},
        "spec": {"controllerName": "portico.dev/gateway-controller"}})
}

fn kube_gateway(version: &str) -> Value {
    json!({"apiVersion": format!("{GW_API}/{version}"), "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"gatewayClassName": "portico", "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}},
            {"name": "team-a", "port": 8080, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}}]}})
}

fn answer_on(port: u16, path: &str) -> String {
    match get(port, "dev.example.com", path, &[]) {
        Ok(r) => format!("{} {}", r.status, r.body.trim()).trim_end().to_string(),
        Err(e) => format!("error {e}"),
    }
}

fn http_route(version: &str, name: &str, prefix: &str, backend: &str) -> Value {
    json!({"apiVersion": format!("{GW_API}/{version}"), "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "web"}], "hostnames": ["dev.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                       "backendRefs": [{"name": backend, "port": 9080}]}]}})
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice(service: &str, port: u16) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}}]})
}

/// The whole cycle at one Gateway API version: create through the API, route, delete, stop.
fn routes_through_the_api(version: &str) {
    let c = Cluster::new();
    // Only the standard bundle: TLSRoute and TCPRoute answer 404, and no Istio CRDs at all.
    c.api.install_gateway_api(version, false);
    let (p1, p2) = (free_port(), free_port());
    let _b1 = echo_backend(p1, "reviews");
    let _b2 = echo_backend(p2, "ratings");
    c.apply(gateway_class(version));
    c.apply(kube_gateway(version));
    c.apply(service("reviews"));
    c.apply(slice("reviews", p1));
    c.apply(service("ratings"));
    c.apply(slice("ratings", p2));
    c.apply(http_route(version, "reviews", "/reviews", "reviews"));
    let sel_port = free_port();
    let gw = start(&c.kubeconfig(), &["--port-map", &format!("8080={sel_port}")]);
    wait_ready(&gw);
    wait_port(gw.http_port);
    assert_eq!(answer(&gw, "/reviews"), "200 reviews");
    assert_eq!(answer(&gw, "/ratings"), "404", "no route for /ratings yet");
    // A route created while running is served without a restart.
    c.apply(http_route(version, "ratings", "/ratings", "ratings"));
    wait_until("the ratings route is served", || answer(&gw, "/ratings") == "200 ratings");
    // Deleting a route through the API stops it; the other one goes on.
    assert!(c.api.delete(&format!("{GW_API}/{version}"), "HTTPRoute", "default", "reviews"));
    wait_until("the reviews route is gone", || answer(&gw, "/reviews") == "404");
    assert_eq!(answer(&gw, "/ratings"), "200 ratings");
    // A listener that takes routes from namespaces labelled `team=a`: the route in `default`
    // is attached once the Namespace object gets the label through the API.
    assert_eq!(answer_on(sel_port, "/ratings"), "404", "default is not labelled yet");
    c.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"team": "a"}}}));
    wait_until("the labelled namespace's route is attached", || answer_on(sel_port, "/ratings") == "200 ratings");
    // The watchers say what they hold; the missing kinds are synced and empty.
    let samples = scrape(gw.admin_port);
    let objects = |w: &str| value(&samples, "portico_source_objects", &[("watcher", w)]);
    assert_eq!(objects("HTTPRoute.gateway.networking.k8s.io"), 1.0);
    assert_eq!(objects("Gateway.gateway.networking.k8s.io"), 1.0);
    assert_eq!(objects("GatewayClass.gateway.networking.k8s.io"), 1.0);
    assert_eq!(objects("TLSRoute.gateway.networking.k8s.io"), 0.0);
    assert_eq!(value(&samples, "portico_source_synced", &[("source", "kubernetes")]), 1.0);
}

#[test]
fn gateway_api_v1_objects_through_the_api_route_requests() {
    routes_through_the_api("v1");
}

/// A cluster with an older Gateway API bundle (v1beta1 only) is read as well.
#[test]
fn gateway_api_v1beta1_objects_through_the_api_route_requests() {
    routes_through_the_api("v1beta1");
}

// ───────────────────────────── status write-back ─────────────────────────────

fn leader_metrics(gw: &Gateway) -> (f64, f64) {
    let samples = scrape(gw.admin_port);
    (
        value(&samples, "portico_status_leader", &[("source", "kubernetes")]),
        value(&samples, "portico_status_writes_total", &[("source", "kubernetes")]),
    )
}

fn condition<'a>(conds: &'a Value, type_: &str) -> Option<&'a Value> {
    conds.as_array()?.iter().find(|c| c["type"] == type_)
}

/// The HTTPRoute's status entry of our controller, if written.
fn route_parent(c: &Cluster) -> Option<Value> {
    let r = c.api.get(&format!("{GW_API}/v1"), "HTTPRoute", "default", "reviews")?;
    r["status"]["parents"].as_array()?.iter().find(|p| p["controllerName"] == "portico.dev/gateway-controller").cloned()
}

fn lease_holder(c: &Cluster) -> String {
    c.api
        .get("coordination.k8s.io/v1", "Lease", "istio-system", "portico-status-leader")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Two replicas: the one holding the Lease writes GatewayClass, Gateway and HTTPRoute status
/// through the status subresource, the other writes nothing; when the holder dies the other
/// takes the lease over once it expires and writes from then on.
#[test]
fn one_replica_writes_status_and_another_takes_over() {
    let c = Cluster::new();
    c.api.install_gateway_api("v1", true);
    let p1 = free_port();
    let _b1 = echo_backend(p1, "reviews");
    c.apply(gateway_class("v1"));
    c.apply(kube_gateway("v1"));
    c.apply(service("reviews"));
    c.apply(slice("reviews", p1));
    c.apply(http_route("v1", "reviews", "/reviews", "reviews"));
    let args =
        || vec!["--lease-duration".to_string(), "2s".into(), "--port-map".into(), format!("8080={}", free_port())];
    let (args_a, args_b) = (args(), args());
    let a = start(&c.kubeconfig(), &args_a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = start(&c.kubeconfig(), &args_b.iter().map(String::as_str).collect::<Vec<_>>());
    wait_ready(&a);
    wait_ready(&b);

    // The route's status: our parent entry, Accepted and ResolvedRefs, at generation 1.
    wait_until("HTTPRoute status written", || route_parent(&c).is_some());
    let parent = route_parent(&c).unwrap();
    assert_eq!(parent["parentRef"], json!({"name": "web"}), "the spec's parentRef, verbatim");
    let accepted = condition(&parent["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["status"], "True", "{parent}");
    assert_eq!(accepted["reason"], "Accepted");
    assert_eq!(accepted["observedGeneration"], 1);
    assert!(accepted["lastTransitionTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{accepted}");
    assert_eq!(condition(&parent["conditions"], "ResolvedRefs").unwrap()["status"], "True");
    wait_until("Gateway and GatewayClass status written", || {
        let gw = c.api.get(&format!("{GW_API}/v1"), "Gateway", "default", "web").unwrap_or_default();
        let gc = c.api.get(&format!("{GW_API}/v1"), "GatewayClass", "", "portico").unwrap_or_default();
        condition(&gw["status"]["conditions"], "Programmed").is_some_and(|c| c["status"] == "True")
            && gw["status"]["listeners"][0]["attachedRoutes"] == 1
            && gw["status"]["listeners"][1]["attachedRoutes"] == 0
            && condition(&gc["status"]["conditions"], "Accepted").is_some_and(|c| c["status"] == "True")
    });
    // A status write must not disturb routing (the object comes back with a status).
    assert_eq!(answer(&a, "/reviews"), "200 reviews");

    // Exactly one replica leads and writes; the lease names it.
    let (la, wa) = leader_metrics(&a);
    let (lb, wb) = leader_metrics(&b);
    assert_eq!(la + lb, 1.0, "exactly one leader: a={la} b={lb}");
    let (leader, follower, follower_writes) = if la == 1.0 { (a, b, wb) } else { (b, a, wa) };
    assert!(leader_metrics(&leader).1 >= 3.0, "the leader wrote class, gateway and route");
    assert_eq!(follower_writes, 0.0, "the follower wrote nothing");
    assert!(lease_holder(&c).ends_with(&format!("-{}", leader.proc.pid())), "holder {}", lease_holder(&c));

    // A spec change (generation 2) is reflected by the leader only.
    c.apply(http_route("v1", "reviews", "/reviews/", "reviews"));
    wait_until("observedGeneration 2", || {
        route_parent(&c).is_some_and(|p| condition(&p["conditions"], "Accepted").unwrap()["observedGeneration"] == 2)
    });
    assert_eq!(leader_metrics(&follower), (0.0, 0.0), "the follower still writes nothing");

    // The leader dies: after the lease expires the follower takes over and writes.
    let old_pid = leader.proc.pid();
    drop(leader);
    wait_until("the follower takes the lease over", || leader_metrics(&follower).0 == 1.0);
    assert!(lease_holder(&c).ends_with(&format!("-{}", follower.proc.pid())));
    assert!(!lease_holder(&c).ends_with(&format!("-{old_pid}")));
    c.apply(http_route("v1", "reviews", "/reviews", "reviews"));
    wait_until("observedGeneration 3 by the new leader", || {
        route_parent(&c).is_some_and(|p| condition(&p["conditions"], "Accepted").unwrap()["observedGeneration"] == 3)
    });
    assert!(leader_metrics(&follower).1 >= 1.0);
    assert_eq!(answer(&follower, "/reviews"), "200 reviews");
}
