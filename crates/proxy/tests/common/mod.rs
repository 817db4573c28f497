//! Test helpers: hand-built snapshots, a recording access-log sink; echo backends, clients and
//! certificates from `portico-testkit`.
#![allow(dead_code)]
// Each test binary uses some of the re-exports below.
#![allow(unused_imports)]

use portico_model::matcher::{RequestMatch, StrMatch};
use portico_model::snapshot::*;
use portico_proxy::{AccessLogSink, Proxy, ProxyOptions, RequestRecord};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ───────────────────────────── snapshots ─────────────────────────────

pub fn cluster(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster {
        name: name.into(),
        host: name.to_string(),
        namespace: "default".into(),
        port: 80,
        subset: None,
        protocol: UpstreamProtocol::Http1,
        discovery: Discovery::Static,
        endpoints: addrs
            .iter()
            .map(|a| Endpoint { address: a.ip().to_string(), port: a.port(), weight: 1, ..Default::default() })
            .collect(),
        lb: LbPolicy::LeastRequest,
        connect_timeout: Duration::from_secs(2),
        idle_timeout: None,
        tcp_idle_timeout: None,
        limits: Limits::default(),
        outlier: None,
        tls: None,
        warmup: None,
        version: None,
        conn: ConnectionOptions::default(),
    }
}

pub fn cluster_h2(name: &str, addrs: &[SocketAddr]) -> Cluster {
    Cluster { protocol: UpstreamProtocol::Http2, ..cluster(name, addrs) }
}

pub fn dest(cluster: &str, weight: u32) -> WeightedDestination {
    WeightedDestination {
        cluster: cluster.into(),
        host: cluster.to_string(),
        subset: None,
        port: 80,
        weight,
        headers: HeaderRules::default(),
    }
}

pub fn forward(cluster: &str) -> RouteAction {
    weighted(&[(cluster, 100)])
}

pub fn weighted(dests: &[(&str, u32)]) -> RouteAction {
    RouteAction::Forward(WeightedClusters {
        destinations: dests.iter().map(|(c, w)| dest(c, *w)).collect(),
        total_weight: dests.iter().map(|(_, w)| w).sum(),
    })
}

pub fn route(matches: Vec<RequestMatch>, action: RouteAction) -> Route {
    Route {
        virtual_service: "default/vs".into(),
        index: 0,
        name: None,
        matches,
        action,
        timeout: None,
        retry: RetryPolicy::default(),
        fault: None,
        mirrors: vec![],
        rewrite: None,
        headers: HeaderRules::default(),
        cors: None,
    }
}

pub fn uri_prefix(p: &str) -> RequestMatch {
    RequestMatch { uri: Some(StrMatch::Prefix(p.into())), ..Default::default() }
}

pub fn vhost(name: &str, routes: Vec<Route>) -> VirtualHost {
    VirtualHost { name: name.into(), routes: routes.into_iter().map(Arc::new).collect(), https_redirect: false }
}

pub fn listener(port: u32, vhosts: Vec<VirtualHost>) -> Listener {
    Listener {
        port,
        kind: ListenerKind::Http,
        bind: None,
        servers: vec![],
        http: Some(Arc::new(RouteTable::new(vhosts))),
        tcp_routes: vec![],
        sni: Default::default(),
    }
}

pub fn snapshot(listeners: Vec<Listener>, clusters: Vec<Cluster>) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        listeners,
        clusters: clusters.into_iter().map(|c| (c.name.clone(), Arc::new(c))).collect(),
        secrets: BTreeMap::new(),
        ..Default::default()
    })
}

/// One port (80), one `*` virtual host routing everything to cluster `c` at `addr`.
pub fn simple(addr: SocketAddr) -> Arc<Snapshot> {
    snapshot(vec![listener(80, vec![vhost("*", vec![route(vec![], forward("c"))])])], vec![cluster("c", &[addr])])
}

// ───────────────────────────── proxy ─────────────────────────────

pub fn opts(ports: &[u32]) -> ProxyOptions {
    ProxyOptions {
        bind: "127.0.0.1".parse().unwrap(),
        port_map: ports.iter().map(|p| (*p, 0u16)).collect::<HashMap<_, _>>(),
        rng_seed: Some(42),
        drain_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Start a proxy serving `snap` on port 80 (mapped to an ephemeral port).
pub async fn start(snap: Arc<Snapshot>) -> (Proxy, SocketAddr) {
    start_with(opts(&[80]), snap).await
}

pub async fn start_with(o: ProxyOptions, snap: Arc<Snapshot>) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(o);
    proxy.apply(snap).await.unwrap();
    let addr = addr_of(&proxy, 80);
    (proxy, addr)
}

pub fn addr_of(proxy: &Proxy, port: u32) -> SocketAddr {
    proxy.local_addrs().into_iter().find(|(p, _)| *p == port).map(|(_, a)| a).expect("port bound")
}

#[derive(Default)]
pub struct RecordingSink(pub Mutex<Vec<RequestRecord>>);

impl AccessLogSink for RecordingSink {
    fn log(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

impl RecordingSink {
    pub fn records(&self) -> Vec<RequestRecord> {
        self.0.lock().unwrap().clone()
    }

    /// Wait (bounded) until `n` records arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<RequestRecord> {
        for _ in 0..200 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.records()
    }
}

// ───────────────────────────── backends and clients ─────────────────────────────

// Shared with the binary's tests (crates/testkit); re-exported so test files keep `common::*`.
pub use portico_testkit::backend::{backend, Backend};
pub use portico_testkit::certs::{client_config, provider, Ca, Leaf};
pub use portico_testkit::client::{get, read, req, tls_connect, try_read, Resp, H1, H2};
pub use portico_testkit::net::{free_port, wait_port};

// ───────────────────────────── sockets ─────────────────────────────

/// Everything the proxy sends on `s` until it closes it (or 5 s pass in silence), and whether
/// it closed it.
pub async fn read_all(s: &mut tokio::net::TcpStream) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// `bytes` on a new connection, then [`read_all`].
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    read_all(&mut s).await
}

/// Whether a new connection gets a 200 within a second (a freed `max_connections` place is
/// given back by the connection's task or the parking lot a moment after its client closed).
pub async fn served_on_a_new_connection(addr: SocketAddr) -> bool {
    for _ in 0..50 {
        let (resp, _) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
        if resp.starts_with("HTTP/1.1 200") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Resolves with `true` once the proxy closed `s` (reads and discards until EOF or an error),
/// `false` when `limit` passes with the connection still open.
pub async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}
