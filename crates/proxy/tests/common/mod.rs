//! Test helpers: hand-built snapshots, echo backends, clients, a recording access-log sink.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_model::matcher::{RequestMatch, StrMatch};
use portico_model::snapshot::*;
use portico_proxy::{AccessLogSink, Proxy, ProxyOptions, RequestRecord};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

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

// ───────────────────────────── backends ─────────────────────────────

/// An HTTP/1.1 + h2c echo server. The response body is JSON: its name, and the method, path,
/// version, headers and body it received. Request headers steer it:
/// `x-delay-ms` (sleep first), `x-status` (response status), `x-trailer` (send it as a trailer).
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    /// Connections that have ended.
    pub closed: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Requests whose handler was dropped before it finished (the proxy went away).
    pub cancelled: Arc<AtomicUsize>,
}

struct CancelGuard(Arc<AtomicUsize>, bool);
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = Backend {
        addr,
        name: name.to_string(),
        connections: Arc::new(AtomicUsize::new(0)),
        closed: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        cancelled: Arc::new(AtomicUsize::new(0)),
    };
    let (name, conns, reqs, cancelled, closed) =
        (b.name.clone(), b.connections.clone(), b.requests.clone(), b.cancelled.clone(), b.closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let (name, reqs, cancelled, closed) = (name.clone(), reqs.clone(), cancelled.clone(), closed.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, reqs, cancelled) = (name.clone(), reqs.clone(), cancelled.clone());
                    async move {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let mut guard = CancelGuard(cancelled, false);
                        let resp = echo(&name, req).await;
                        guard.1 = true;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    b
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(name: &str, req: Request<Incoming>) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    if let Some(ms) = parts.headers.get("x-delay-ms").and_then(|v| v.to_str().ok()?.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (body, req_trailers) = match body.collect().await {
        Ok(c) => {
            let t = c.trailers().map(|t| {
                t.iter()
                    .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(v.to_str().unwrap_or("").into())))
                    .collect::<serde_json::Map<_, _>>()
            });
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    let mut headers = serde_json::Map::new();
    for k in parts.headers.keys() {
        let v: Vec<String> =
            parts.headers.get_all(k).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        headers.insert(k.as_str().to_string(), serde_json::Value::String(v.join(", ")));
    }
    let json = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "trailers": req_trailers,
    });
    let status = parts.headers.get("x-status").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(200u16);
    let data = Bytes::from(json.to_string());
    let body: EchoBody = match parts.headers.get("x-trailer") {
        Some(t) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", t.clone());
            let frames =
                vec![Ok::<_, Infallible>(hyper::body::Frame::data(data)), Ok(hyper::body::Frame::trailers(trailers))];
            BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
        }
        None => BodyExt::boxed(Full::new(data)),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut().insert("server", "echo-backend".parse().unwrap());
    resp
}

// ───────────────────────────── clients ─────────────────────────────

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Which backend answered.
    pub fn backend(&self) -> String {
        self.json()["name"].as_str().unwrap_or("").to_string()
    }
    /// A header the backend received.
    pub fn seen(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
    pub fn seen_path(&self) -> String {
        self.json()["path"].as_str().unwrap_or("").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

pub fn req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path).header("host", host)
}

pub async fn read(resp: Response<Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Resp { status: parts.status.as_u16(), headers: parts.headers, body: collected.to_bytes(), trailers }
}

/// One HTTP/1.1 keep-alive connection.
pub struct H1 {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        H1 { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        self.sender.ready().await.unwrap();
        read(self.sender.send_request(req).await.unwrap()).await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        self.send(req("GET", host, path).body(Full::default()).unwrap()).await
    }
}

/// One h2c (prior knowledge) connection.
#[derive(Clone)]
pub struct H2 {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        H2 { sender }
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        let uri = format!("http://{host}{path}");
        let r = Request::builder().uri(uri).body(Full::default()).unwrap();
        read(self.sender.send_request(r).await.unwrap()).await
    }
}

/// GET over a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    H1::connect(addr).await.get(host, path).await
}
