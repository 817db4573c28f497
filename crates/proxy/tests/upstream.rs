#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Upstream behaviour: failures and their flags, pooling, HTTP/2 upstreams, load balancing, DNS,
//! timeouts, cancellation, the access-log record.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use portico_model::snapshot::*;
use portico_proxy::{ProxyOptions, ResponseFlags};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn with_sink() -> (Arc<RecordingSink>, ProxyOptions) {
    let sink = Arc::new(RecordingSink::default());
    (sink.clone(), ProxyOptions { access_log: sink, ..opts(&[80]) })
}

fn one_route(action: RouteAction, clusters: Vec<Cluster>) -> Arc<Snapshot> {
    snapshot(vec![listener(80, vec![vhost("*", vec![route(vec![], action)])])], clusters)
}

/// A port nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn missing_cluster_no_endpoint_connect_failure() {
    let dead = closed_port().await;
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost(
                "*",
                vec![
                    route(vec![uri_prefix("/nc")], forward("missing")),
                    route(vec![uri_prefix("/uh")], forward("empty")),
                    route(vec![uri_prefix("/uf")], forward("dead")),
                ],
            )],
        )],
        vec![cluster("empty", &[]), cluster("dead", &[dead])],
    );
    let (sink, o) = with_sink();
    let (_proxy, addr) = start_with(o, snap).await;
    let mut c = H1::connect(addr).await;

    let r = c.get("h", "/nc").await;
    assert_eq!((r.status, r.text().as_str()), (503, ""));
    let r = c.get("h", "/uh").await;
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    let r = c.get("h", "/uf").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect error or disconnect/reset before headers. reset reason: connection failure");

    let recs = sink.wait_for(3).await;
    let flags: Vec<String> = recs.iter().map(|r| r.flags.to_string()).collect();
    assert_eq!(flags, ["NC", "UH", "UF"]);
    let details: Vec<&str> = recs.iter().map(|r| r.details).collect();
    assert_eq!(
        details,
        ["cluster_not_found", "no_healthy_upstream", "upstream_reset_before_response_started{connection_failure}"]
    );
    assert_eq!(recs[2].upstream_host, Some(dead));
    assert_eq!(recs[0].upstream_cluster.as_deref(), Some("missing"));
}

#[tokio::test]
async fn upstream_reset_before_and_after_headers_is_uc() {
    // Reads a request, then: path /before → closes without answering; /after → sends headers
    // promising 100 bytes, 5 of them, and closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.starts_with("GET /after") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello").await;
                }
            });
        }
    });
    let (sink, o) = with_sink();
    let (_proxy, addr) = start_with(o, one_route(forward("c"), vec![cluster("c", &[be])])).await;

    let r = get(addr, "h", "/before").await;
    assert_eq!(r.status, 503);
    assert!(r.text().ends_with("reset reason: connection termination"), "{}", r.text());

    let mut c = H1::connect(addr).await;
    c.sender.ready().await.unwrap();
    let resp = c.sender.send_request(req("GET", "h", "/after").body(Full::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(http_body_util::BodyExt::collect(resp.into_body()).await.is_err(), "truncated body must fail");

    let recs = sink.wait_for(2).await;
    assert_eq!(recs[0].flags, ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
    assert_eq!(recs[1].flags, ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
    assert_eq!(recs[1].status, 200);
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    for _ in 0..20 {
        assert_eq!(c.get("h", "/").await.status, 200);
    }
    // Other client connections share the pool.
    for _ in 0..5 {
        assert_eq!(get(addr, "h", "/").await.status, 200);
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 25);
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http2_upstream_multiplexes() {
    let be = backend("h2").await;
    let snap = one_route(forward("c"), vec![cluster_h2("c", &[be.addr])]);
    let (_proxy, addr) = start(snap).await;
    // First request opens the connection; then 10 concurrent ones share it.
    let r = get(addr, "grpc.example.com", "/x?y=1").await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(r.json()["authority"], "grpc.example.com");
    assert_eq!(r.seen_path(), "/x?y=1");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(async move { get(addr, "grpc.example.com", "/").await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn round_robin_and_least_request() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let mut rr = cluster("rr", &[a.addr, b.addr, c.addr]);
    rr.lb = LbPolicy::RoundRobin;
    let lr = cluster("lr", &[a.addr, b.addr]);
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost(
                "*",
                vec![route(vec![uri_prefix("/rr")], forward("rr")), route(vec![uri_prefix("/lr")], forward("lr"))],
            )],
        )],
        vec![rr, lr],
    );
    let (_proxy, addr) = start(snap).await;
    let mut client = H1::connect(addr).await;
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for _ in 0..30 {
        *counts.entry(client.get("h", "/rr").await.backend()).or_default() += 1;
    }
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), [10, 10, 10], "{counts:?}");

    // Least request: while one endpoint holds a slow request, the other gets every new one.
    let before = a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst);
    let slow = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.send(req("GET", "h", "/lr").header("x-delay-ms", "3000").body(Full::default()).unwrap()).await
    });
    for _ in 0..500 {
        if a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (a0, b0) = (a.requests.load(Ordering::SeqCst), b.requests.load(Ordering::SeqCst));
    let mut names = std::collections::HashSet::new();
    for _ in 0..10 {
        names.insert(client.get("h", "/lr").await.backend());
    }
    assert_eq!(names.len(), 1, "{names:?}");
    let fast = names.into_iter().next().unwrap();
    let slow_name = slow.await.unwrap().backend();
    assert_ne!(fast, slow_name);
    assert_eq!(a.requests.load(Ordering::SeqCst) + b.requests.load(Ordering::SeqCst), a0 + b0 + 10);
}

#[tokio::test]
async fn dns_endpoints_resolve_in_the_background() {
    let be = backend("dns").await;
    let mut c = cluster("c", &[]);
    c.discovery = Discovery::Dns;
    c.endpoints = vec![Endpoint { address: "localhost".into(), port: be.addr.port(), weight: 1, ..Default::default() }];
    let mut bad = cluster("bad", &[]);
    bad.discovery = Discovery::Dns;
    bad.connect_timeout = Duration::from_millis(300);
    bad.endpoints =
        vec![Endpoint { address: "no-such-host.invalid".into(), port: 80, weight: 1, ..Default::default() }];
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost("*", vec![route(vec![uri_prefix("/bad")], forward("bad")), route(vec![], forward("c"))])],
        )],
        vec![c, bad],
    );
    let (_proxy, addr) =
        start_with(ProxyOptions { dns_refresh: Duration::from_millis(100), ..opts(&[80]) }, snap).await;
    let mut client = H1::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("h", "/").await.backend(), "dns");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let r = client.get("h", "/bad").await;
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
}

#[tokio::test(start_paused = true)]
async fn route_timeout_is_504_ut() {
    let be = backend("slow").await;
    let mut r = route(vec![], forward("c"));
    r.timeout = Some(Duration::from_secs(1));
    let snap = snapshot(vec![listener(80, vec![vhost("*", vec![r])])], vec![cluster("c", &[be.addr])]);
    let (sink, o) = with_sink();
    let (_proxy, addr) = start_with(o, snap).await;
    let mut c = H1::connect(addr).await;
    let resp = c.send(req("GET", "h", "/").header("x-delay-ms", "60000").body(Full::default()).unwrap()).await;
    assert_eq!((resp.status, resp.text().as_str()), (504, "upstream request timeout"));
    let fast = c.get("h", "/").await;
    assert_eq!(fast.status, 200);
    let recs = sink.wait_for(2).await;
    assert_eq!(recs[0].flags, ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let be = backend("be").await;
    let (sink, o) = with_sink();
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    let pending =
        c.sender.send_request(req("GET", "h", "/").header("x-delay-ms", "30000").body(Full::default()).unwrap());
    let pending = tokio::spawn(pending);
    for _ in 0..500 {
        if be.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 1);
    // Drop the client connection mid-request.
    pending.abort();
    drop(c);
    for _ in 0..500 {
        if be.cancelled.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(be.cancelled.load(Ordering::SeqCst), 1, "the backend's request was not cancelled");
    let recs = sink.wait_for(1).await;
    assert!(recs[0].flags.contains(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION), "{:?}", recs[0].flags);
}

#[tokio::test]
async fn access_log_record() {
    let be = backend("be").await;
    let (sink, o) = with_sink();
    // The one route, named: the record reports its name (`%ROUTE_NAME%`).
    let named = Route { name: Some("items".into()), ..route(vec![], forward("c")) };
    let snap = snapshot(vec![listener(80, vec![vhost("*", vec![named])])], vec![cluster("c", &[be.addr])]);
    let (_proxy, addr) = start_with(o, snap).await;
    let mut c = H1::connect(addr).await;
    let r = c
        .send(
            req("POST", "api.example.com", "/items?x=1")
                .header("user-agent", "test/1")
                .body(Full::new(Bytes::from_static(b"0123456789")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    let rec = sink.wait_for(1).await.remove(0);
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.uri.to_string(), "/items?x=1");
    assert_eq!(rec.authority.as_ref().unwrap(), "api.example.com");
    assert_eq!(rec.status, 200);
    assert!(rec.flags.is_empty());
    assert_eq!(rec.upstream_cluster.as_deref(), Some("c"));
    assert_eq!(rec.upstream_host, Some(be.addr));
    assert_eq!(rec.bytes_received, 10);
    assert_eq!(rec.bytes_sent, r.body.len() as u64);
    assert_eq!(rec.request_id.as_ref().map(|v| v.to_str().unwrap().to_string()), r.seen("x-request-id"));
    assert_eq!(rec.user_agent.as_ref().unwrap(), "test/1");
    assert_eq!(rec.gateway_port, 80);
    assert_eq!(rec.details, "via_upstream");
    assert_eq!(rec.downstream_local, addr);
    assert_eq!(rec.x_forwarded_for.as_ref().unwrap(), "127.0.0.1");
    assert!(rec.upstream_service_time.is_some_and(|t| t <= rec.duration));
    assert_eq!(rec.route_name.as_deref(), Some("items"));
    assert_eq!(rec.grpc_status, None);
}
