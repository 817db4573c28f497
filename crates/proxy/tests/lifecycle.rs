#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Reloads (`apply`), listener lifecycle, readiness and drain (`shutdown`).

mod common;

use common::*;
use http_body_util::Full;
use portico_model::snapshot::*;
use portico_proxy::{Proxy, ProxyError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

fn to(cluster_name: &str, port: u32, clusters: Vec<Cluster>) -> Arc<Snapshot> {
    snapshot(vec![listener(port, vec![vhost("*", vec![route(vec![], forward(cluster_name))])])], clusters)
}

/// Wait (bounded) until connecting to `addr` is refused.
async fn until_refused(addr: SocketAddr) -> bool {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn reload_keeps_listeners_and_in_flight_requests() {
    let (a, b) = (backend("a").await, backend("b").await);
    let clusters = || vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])];
    let proxy = Proxy::new(opts(&[80, 81]));
    assert!(!proxy.is_ready());
    proxy.apply(to("a", 80, clusters())).await.unwrap();
    assert!(proxy.is_ready());
    let addr80 = addr_of(&proxy, 80);

    // A slow request routed by v1 …
    let slow = tokio::spawn(async move {
        let mut c = H1::connect(addr80).await;
        c.send(req("GET", "h", "/slow").header("x-delay-ms", "500").body(Full::default()).unwrap()).await
    });
    for _ in 0..400 {
        if a.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // … while v2 routes elsewhere.
    proxy.apply(to("b", 80, clusters())).await.unwrap();
    assert_eq!(addr_of(&proxy, 80), addr80, "port 80 must not be rebound");
    assert_eq!(get(addr80, "h", "/").await.backend(), "b");
    let r = slow.await.unwrap();
    assert_eq!((r.status, r.backend().as_str()), (200, "a"), "in-flight request finishes on its snapshot");

    // v3: port 81 opens, port 80 closes.
    proxy.apply(to("a", 81, clusters())).await.unwrap();
    let addr81 = addr_of(&proxy, 81);
    assert_ne!(addr81, addr80);
    assert_eq!(proxy.local_addrs().len(), 1);
    assert_eq!(get(addr81, "h", "/").await.backend(), "a");
    assert!(until_refused(addr80).await, "removed port still accepts connections");
}

#[tokio::test]
async fn failed_bind_keeps_the_old_config() {
    let be = backend("be").await;
    let other = backend("other").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let mut o = opts(&[80]);
    o.port_map.insert(82, taken_port);
    let proxy = Proxy::new(o);
    proxy.apply(simple(be.addr)).await.unwrap();
    let addr = addr_of(&proxy, 80);

    let bad = snapshot(
        vec![
            listener(80, vec![vhost("*", vec![route(vec![], forward("other"))])]),
            listener(82, vec![vhost("*", vec![route(vec![], forward("other"))])]),
        ],
        vec![cluster("other", &[other.addr])],
    );
    let err = proxy.apply(bad).await.unwrap_err();
    assert!(matches!(err, ProxyError::Bind { port: 82, .. }), "{err}");
    assert!(err.to_string().contains("gateway port 82"), "{err}");
    assert_eq!(get(addr, "h", "/").await.backend(), "be", "old config still serves");
    assert_eq!(proxy.local_addrs().len(), 1);
    assert!(proxy.is_ready());

    let mut o = opts(&[]);
    o.port_map.clear();
    let proxy = Proxy::new(o);
    let err = proxy.apply(to("c", 70000, vec![])).await.unwrap_err();
    assert!(matches!(err, ProxyError::PortOutOfRange { port: 70000 }), "{err}");
}

#[tokio::test]
async fn fifty_reloads_under_load_lose_no_request_and_keep_pools() {
    let (a, b) = (backend("a").await, backend("b").await);
    let clusters = || vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])];
    let proxy = Proxy::new(opts(&[80]));
    proxy.apply(to("a", 80, clusters())).await.unwrap();
    let addr = addr_of(&proxy, 80);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            let (mut ok, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) && ok + failed < 100_000 {
                let r = c.get("h", "/").await;
                if r.status == 200 && (r.backend() == "a" || r.backend() == "b") {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            (ok, failed)
        })
    };
    for i in 0..50 {
        let snap = if i % 2 == 0 { to("b", 80, clusters()) } else { to("a", 80, clusters()) };
        proxy.apply(snap).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = client.await.unwrap();
    assert_eq!(failed, 0);
    assert!(ok > 0);
    // Unchanged clusters keep their pools: one sequential client, one connection per backend.
    assert_eq!(a.connections.load(Ordering::SeqCst), 1);
    assert!(b.connections.load(Ordering::SeqCst) <= 1);
}

#[tokio::test]
async fn shutdown_drains_in_flight_and_refuses_new_connections() {
    let be = backend("be").await;
    let proxy = Proxy::new(opts(&[80]));
    proxy.apply(simple(be.addr)).await.unwrap();
    let addr = addr_of(&proxy, 80);

    let slow_h1 = tokio::spawn(async move {
        let mut c = H1::connect(addr).await;
        c.send(req("GET", "h", "/slow").header("x-delay-ms", "800").body(Full::default()).unwrap()).await
    });
    let slow_h2 = tokio::spawn(async move {
        let h2 = H2::connect(addr).await;
        let mut sender = h2.sender.clone();
        let r =
            http::Request::builder().uri("http://h/slow2").header("x-delay-ms", "800").body(Full::default()).unwrap();
        read(sender.send_request(r).await.unwrap()).await
    });
    for _ in 0..400 {
        if be.requests.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 2);

    let p = proxy.clone();
    let shutdown = tokio::spawn(async move { p.shutdown().await });
    assert!(until_refused(addr).await, "new connections must be refused while draining");
    assert!(!proxy.is_ready());

    let r1 = slow_h1.await.unwrap();
    assert_eq!(r1.status, 200);
    assert_eq!(r1.header("connection").as_deref(), Some("close"));
    let r2 = slow_h2.await.unwrap();
    assert_eq!(r2.status, 200);
    shutdown.await.unwrap();
    assert!(proxy.local_addrs().is_empty());
    assert!(matches!(proxy.apply(simple(be.addr)).await, Err(ProxyError::ShuttingDown)));
}

#[tokio::test(start_paused = true)]
async fn drain_timeout_closes_what_is_left() {
    let be = backend("be").await;
    let mut o = opts(&[80]);
    o.drain_timeout = Duration::from_secs(2);
    let proxy = Proxy::new(o);
    proxy.apply(simple(be.addr)).await.unwrap();
    let addr = addr_of(&proxy, 80);
    let mut c = H1::connect(addr).await;
    let stuck =
        c.sender.send_request(req("GET", "h", "/").header("x-delay-ms", "3600000").body(Full::default()).unwrap());
    let stuck = tokio::spawn(stuck);
    for _ in 0..400 {
        if be.requests.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 1);
    // Returns after the (virtual) drain timeout although the request never finishes.
    proxy.shutdown().await;
    assert!(stuck.await.unwrap().is_err(), "the connection is closed after the drain timeout");
}

#[tokio::test]
async fn a_removed_port_can_come_back_at_once() {
    let be = backend("be").await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut o = opts(&[81]);
    o.port_map.insert(80, free);
    let proxy = Proxy::new(o);
    let clusters = || vec![cluster("c", &[be.addr])];
    proxy.apply(to("c", 80, clusters())).await.unwrap();
    let addr = addr_of(&proxy, 80);
    assert_eq!(addr.port(), free);
    // Port 80 goes away (its socket is closed when apply returns) and comes straight back.
    proxy.apply(to("c", 81, clusters())).await.unwrap();
    assert!(TcpStream::connect(addr).await.is_err());
    proxy.apply(to("c", 80, clusters())).await.unwrap();
    assert_eq!(addr_of(&proxy, 80), addr);
    assert_eq!(get(addr, "h", "/").await.backend(), "be");
}
