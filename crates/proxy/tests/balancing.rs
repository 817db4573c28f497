//! Load balancing over real sockets: endpoint weights, panic mode, slow-start warmup, locality
//! priorities and weights.

mod common;

use common::*;
use http_body_util::Full;
use portico_model::snapshot::*;
use std::collections::HashMap;
use std::net::SocketAddr;

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
        // 1000 keys over a 3:1 table: expect ~750; the ring's point placement adds variance,
        // allow 7 points.
        assert!((680..=820).contains(&on_a), "{path}: {on_a} of 1000 keys on the weight-3 endpoint");
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
