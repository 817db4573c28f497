#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! DestinationRule `connectionPool` settings that shape upstream connections:
//! `maxConnectionDuration`, `maxConcurrentStreams`, `useClientProtocol`, `http2KeepAlive`.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_model::snapshot::*;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn one_route(clusters: Vec<Cluster>) -> Arc<Snapshot> {
    snapshot(vec![listener(80, vec![vhost("*", vec![route(vec![], forward("c"))])])], clusters)
}

fn with_conn(c: Cluster, conn: ConnectionOptions) -> Cluster {
    Cluster { conn, ..c }
}

#[tokio::test(start_paused = true)]
async fn http1_connections_retire_after_max_connection_duration() {
    let be = backend("be").await;
    let c = with_conn(
        cluster("c", &[be.addr]),
        ConnectionOptions { max_connection_duration: Some(Duration::from_secs(10)), ..Default::default() },
    );
    let (_proxy, addr) = start(one_route(vec![c])).await;
    let mut client = H1::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("h", "/").await.status, 200);
    }
    assert_eq!(be.connections.load(Ordering::SeqCst), 1, "within the limit the connection is reused");
    tokio::time::sleep(Duration::from_secs(11)).await;
    // A new client connection: the old one may have been closed idle by now.
    let mut client = H1::connect(addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("h", "/").await.status, 200);
    }
    assert_eq!(be.connections.load(Ordering::SeqCst), 2, "past the limit a new connection, then reused");
}

#[tokio::test(start_paused = true)]
async fn http2_connection_retires_after_max_connection_duration_and_drains() {
    let be = backend("be").await;
    let c = with_conn(
        cluster_h2("c", &[be.addr]),
        ConnectionOptions { max_connection_duration: Some(Duration::from_secs(10)), ..Default::default() },
    );
    let (_proxy, addr) = start(one_route(vec![c])).await;
    assert_eq!(get(addr, "h", "/").await.status, 200);
    // A slow request on the first connection outlives its duration: it still completes.
    let slow = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.send(req("GET", "h", "/slow").header("x-delay-ms", "20000").body(Full::default()).unwrap()).await
    });
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(be.connections.load(Ordering::SeqCst), 1);
    for _ in 0..3 {
        let r = get(addr, "h", "/").await;
        assert_eq!((r.status, r.json()["version"].as_str()), (200, Some("HTTP/2.0")));
    }
    assert_eq!(be.connections.load(Ordering::SeqCst), 2, "one new connection for the requests after the limit");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200, "the retired connection finished its request");
}

#[tokio::test(start_paused = true)]
async fn connections_idle_past_idle_timeout_are_not_reused() {
    for h2 in [false, true] {
        let be = backend("be").await;
        let c = if h2 { cluster_h2("c", &[be.addr]) } else { cluster("c", &[be.addr]) };
        let c = Cluster { idle_timeout: Some(Duration::from_secs(5)), ..c };
        let (_proxy, addr) = start(one_route(vec![c])).await;
        for _ in 0..2 {
            assert_eq!(get(addr, "h", "/").await.status, 200);
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        assert_eq!(be.connections.load(Ordering::SeqCst), 1, "h2={h2}: reused while used within 5 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(get(addr, "h", "/").await.status, 200);
        assert_eq!(be.connections.load(Ordering::SeqCst), 2, "h2={h2}: a new connection after 6 s idle");
    }
}

/// Waits (on the paused clock) until `n` backend connections have ended; false if they do not
/// within a minute.
async fn closed(be: &Backend, n: usize) -> bool {
    for _ in 0..600 {
        if be.closed.load(Ordering::SeqCst) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn idle_and_retired_connections_are_closed_without_traffic() {
    for h2 in [false, true] {
        // idleTimeout 5 s: closed 5 s after the request, nothing else needed.
        let be = backend("be").await;
        let c = if h2 { cluster_h2("c", &[be.addr]) } else { cluster("c", &[be.addr]) };
        let c = Cluster { idle_timeout: Some(Duration::from_secs(5)), ..c };
        let (_proxy, addr) = start(one_route(vec![c])).await;
        let mut client = H1::connect(addr).await;
        assert_eq!(client.get("h", "/").await.status, 200);
        let t0 = tokio::time::Instant::now();
        assert!(closed(&be, 1).await, "h2={h2}: idle connection closed");
        assert!(t0.elapsed() >= Duration::from_secs(4), "h2={h2}: not before the idle timeout");

        // maxConnectionDuration 30 s, idleTimeout off: an idle connection closes at 30 s.
        let be = backend("be").await;
        let c = if h2 { cluster_h2("c", &[be.addr]) } else { cluster("c", &[be.addr]) };
        let c = Cluster { idle_timeout: Some(Duration::ZERO), ..c };
        let c = with_conn(
            c,
            ConnectionOptions { max_connection_duration: Some(Duration::from_secs(30)), ..Default::default() },
        );
        let (_proxy, addr) = start(one_route(vec![c])).await;
        assert_eq!(get(addr, "h", "/").await.status, 200);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(be.closed.load(Ordering::SeqCst), 0, "h2={h2}: open before its duration");
        assert!(closed(&be, 1).await, "h2={h2}: closed at its duration");
    }
}

/// An h2c backend that holds each request until `hold` requests are in; it counts connections
/// and the most requests it had in hand at once.
struct Holding {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

async fn holding_h2_backend(hold: usize) -> Holding {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let (peak, in_hand) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let arrived = Arc::new(tokio::sync::Barrier::new(hold));
    let (counted, seen) = (conns.clone(), peak.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let (arrived, seen, in_hand) = (arrived.clone(), seen.clone(), in_hand.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<Incoming>| {
                    let (arrived, seen, in_hand) = (arrived.clone(), seen.clone(), in_hand.clone());
                    async move {
                        seen.fetch_max(in_hand.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        arrived.wait().await;
                        in_hand.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Holding { addr, conns, peak }
}

async fn concurrent_gets(addr: SocketAddr, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(async move { get(addr, "h", "/").await.status })).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn max_concurrent_streams_opens_another_http2_connection() {
    // The backend answers only once all three requests are in: with 2 streams a connection,
    // the third must have gone out on a second connection.
    let be = holding_h2_backend(3).await;
    let c = with_conn(
        cluster_h2("c", &[be.addr]),
        ConnectionOptions { max_concurrent_streams: Some(2), ..Default::default() },
    );
    let (_proxy, addr) = start(one_route(vec![c])).await;
    assert_eq!(concurrent_gets(addr, 3).await, [200, 200, 200]);
    assert_eq!(be.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn max_concurrent_streams_waits_at_max_connections() {
    // One connection allowed: requests past its two streams wait (pending) for a stream to
    // end rather than overflow. The backend answers in pairs.
    let be = holding_h2_backend(2).await;
    let mut c = with_conn(
        cluster_h2("c", &[be.addr]),
        ConnectionOptions { max_concurrent_streams: Some(2), ..Default::default() },
    );
    c.limits.max_connections = 1;
    let (_proxy, addr) = start(one_route(vec![c])).await;
    let statuses = concurrent_gets(addr, 4).await;
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert_eq!(be.conns.load(Ordering::SeqCst), 1);
    assert_eq!(be.peak.load(Ordering::SeqCst), 2, "never more than two streams at once");
}

#[tokio::test]
async fn use_client_protocol_keeps_the_downstream_version() {
    let be = backend("be").await;
    let c = with_conn(cluster("c", &[be.addr]), ConnectionOptions { use_client_protocol: true, ..Default::default() });
    let (_proxy, addr) = start(one_route(vec![c])).await;
    let mut h2 = H2::connect(addr).await;
    for _ in 0..2 {
        assert_eq!(h2.get("h", "/").await.json()["version"], "HTTP/2.0");
    }
    let mut h1 = H1::connect(addr).await;
    for _ in 0..2 {
        assert_eq!(h1.get("h", "/").await.json()["version"], "HTTP/1.1");
    }
    // One pooled connection of each kind.
    assert_eq!(be.connections.load(Ordering::SeqCst), 2);
}

/// A backend that accepts connections and reads but never answers (not even HTTP/2 SETTINGS).
async fn silent_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (mut r, w) = s.into_split();
            held.push(w);
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            });
        }
    });
    addr
}

#[tokio::test(start_paused = true)]
async fn http2_keepalive_closes_a_connection_whose_peer_stops_answering() {
    let be = silent_backend().await;
    let ka = Http2Keepalive { interval: Duration::from_secs(2), timeout: Some(Duration::from_secs(1)) };
    let c = with_conn(cluster_h2("c", &[be]), ConnectionOptions { http2_keepalive: Some(ka), ..Default::default() });
    let mut r = route(vec![], forward("c"));
    r.timeout = Some(Duration::from_secs(60));
    let snap = snapshot(vec![listener(80, vec![vhost("*", vec![r])])], vec![c]);
    let (_proxy, addr) = start(snap).await;
    let started = tokio::time::Instant::now();
    let resp = get(addr, "h", "/").await;
    // The unanswered PING ends the connection (503 reset) well before the route timeout (504).
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(started.elapsed() < Duration::from_secs(60));
}
