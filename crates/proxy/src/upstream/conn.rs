//! Connections to one endpoint: a lock-free queue of idle HTTP/1.1 keep-alive connections, or
//! one shared multiplexed HTTP/2 (prior knowledge, h2c) connection.
//!
//! When the TLS SNI follows the request's host (DestinationRule `tls` without `sni`), a
//! connection opened for one host must not carry another host's requests (the backend chose its
//! certificate and virtual host by SNI): connections are then kept per SNI ("lanes").
//!
//! `connectionPool` shapes the connections: `maxConnectionDuration` retires old ones (they take
//! no new request and close once their requests are done), `idleTimeout` closes ones idle
//! too long (an HTTP/2 connection's task watches its own; idle HTTP/1.1 connections have no
//! task, their lane's sweeper closes them), `maxConcurrentStreams` caps the
//! streams of one HTTP/2 connection (past it another connection opens), `tcpKeepalive` and
//! `http2KeepAlive` probe idle ones.

use super::breaker::{Resource, Slot};
use super::h1::{self, Failed, H1Error};
use super::outlier::OutlierState;
use super::ClusterPool;
use crate::body::{Received, UpstreamBody};
use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_model::snapshot::{Cluster, TcpKeepalive, UpstreamProtocol};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why an upstream exchange failed before response headers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The connection was reset or closed before the response headers.
    #[error("connection reset before response headers: {0}")]
    Reset(hyper::Error),
    /// The exchange on an HTTP/1.1 connection failed before the response headers.
    #[error("{0}")]
    H1(H1Error),
    /// A circuit breaker (`maxConnections` with `http1MaxPendingRequests`) refused the request.
    #[error("upstream overflow")]
    Overflow,
}

impl SendError {
    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(self, SendError::ConnectTimeout | SendError::Connect(_) | SendError::Handshake(_))
    }

    /// The HTTP/2 upstream refused the stream (`REFUSED_STREAM`): it never processed the
    /// request. Read from the h2 error in hyper's source chain, not from the message text.
    pub(crate) fn is_refused_stream(&self) -> bool {
        let SendError::Reset(e) = self else { return false };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(c) = cause {
            if let Some(h2) = c.downcast_ref::<h2::Error>() {
                return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            }
            cause = c.source();
        }
        false
    }
}

/// A shared HTTP/2 connection.
struct H2Conn {
    sender: http2::SendRequest<UpstreamBody>,
    local: Option<SocketAddr>,
    usage: Arc<Usage>,
}

/// How busy a connection is and since when, shared with the task that drives it.
struct Usage {
    /// Requests (HTTP/1.1: 0 or 1) or streams (HTTP/2, `maxConcurrentStreams`) open now.
    streams: AtomicU32,
    /// When it last went idle, in milliseconds since `born` (`idleTimeout`).
    idle_at_ms: AtomicU64,
    /// When it was opened (`maxConnectionDuration`).
    born: Instant,
}

/// How often a busy connection that is due to close is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

impl Usage {
    fn new() -> Arc<Usage> {
        Arc::new(Usage { streams: AtomicU32::new(0), idle_at_ms: AtomicU64::new(0), born: Instant::now() })
    }

    fn mark_idle(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.idle_at_ms.store(ms, Ordering::Release);
    }

    fn idle(&self) -> bool {
        self.streams.load(Ordering::Acquire) == 0
    }

    fn idle_deadline(&self, t: Duration) -> Instant {
        self.born + Duration::from_millis(self.idle_at_ms.load(Ordering::Acquire)) + t
    }

    /// Past `maxConnectionDuration`, or idle for longer than `idleTimeout`: no new requests.
    fn retired(&self, cluster: &Cluster) -> bool {
        expired(self.born, cluster)
            || (self.idle() && idle_timeout(cluster).is_some_and(|t| self.idle_deadline(t) <= crate::clock::now()))
    }

    /// When the connection's task should look again whether it is idle and retired.
    fn next_check(&self, cluster: &Cluster) -> Option<Instant> {
        let now = crate::clock::now();
        let idle =
            idle_timeout(cluster).map(|t| if self.idle() { self.idle_deadline(t) } else { now + t.max(RECHECK) });
        // Past it but busy: look again until its requests are done.
        let age = cluster
            .conn
            .max_connection_duration
            .map(|m| Some(self.born + m).filter(|at| *at > now).unwrap_or(now + RECHECK));
        earliest(idle, age)
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl H2Conn {
    fn usable(&self, cluster: &Cluster) -> bool {
        !self.sender.is_closed() && !self.usage.retired(cluster)
    }

    /// One stream on this connection, if it has room for one more.
    fn reserve(&self, pool: &ClusterPool) -> Option<Stream> {
        let max = pool.def.conn.max_concurrent_streams.unwrap_or(u32::MAX);
        self.usage.streams.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Stream { usage: self.usage.clone(), breaker: pool.breaker.clone() })
    }
}

/// A stream counted against its HTTP/2 connection until the response is done (kept with the
/// response body, like the request's circuit-breaker slot).
pub(crate) struct Stream {
    usage: Arc<Usage>,
    breaker: Arc<super::breaker::Breaker>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.usage.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.usage.mark_idle();
        }
        // A request pending for room on a connection may take it. Waiters count themselves
        // pending before they look for room, so without any there is no one to wake (and
        // `notify_waiters` takes a lock: not on every response).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.breaker.pending.load(Ordering::SeqCst) > 0 {
            self.breaker.freed.notify_waiters();
        }
    }
}

/// The connections of one endpoint for one SNI.
#[derive(Default)]
struct Lane {
    /// Idle HTTP/1.1 connections (lock-free; grows in small blocks, nothing preallocated).
    idle: SegQueue<Box<h1::Conn>>,
    /// Whether a sweeper task watches `idle` for connections to close (`sweep`).
    sweeping: AtomicBool,
    /// HTTP/2 connections in use, oldest first: one unless `maxConcurrentStreams` fills it.
    h2: ArcSwap<Vec<Arc<H2Conn>>>,
    /// Held while an HTTP/2 connection opens, so that concurrent requests wait for its streams
    /// rather than each opening one (connection setup only, never taken on the request path).
    h2_connecting: tokio::sync::Mutex<()>,
}

impl Lane {
    /// A stream on an HTTP/2 connection of this lane with room for it; retired and closed
    /// connections are dropped from the lane on the way (they close once their streams end).
    fn h2_stream(&self, pool: &ClusterPool) -> Option<(Arc<H2Conn>, Stream)> {
        let conns = self.h2.load();
        if conns.iter().any(|c| !c.usable(&pool.def)) {
            self.h2.rcu(|cur| cur.iter().filter(|c| c.usable(&pool.def)).cloned().collect::<Vec<_>>());
        }
        conns.iter().filter(|c| c.usable(&pool.def)).find_map(|c| Some((c.clone(), c.reserve(pool)?)))
    }
}

/// `connectionPool.http.idleTimeout`: Istio's default is 1 h; zero turns it off. A connection
/// idle for longer is not used again and is closed.
fn idle_timeout(cluster: &Cluster) -> Option<Duration> {
    match cluster.idle_timeout {
        None => Some(Duration::from_secs(3600)),
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
    }
}

/// Whether a connection opened at `born` is past `maxConnectionDuration`.
fn expired(born: Instant, cluster: &Cluster) -> bool {
    cluster.conn.max_connection_duration.is_some_and(|max| born.elapsed() >= max)
}

/// Most SNI lanes kept per endpoint: the host comes from the client, so past this many,
/// connections for new names are used once and closed rather than pooled.
const MAX_LANES: usize = 64;

/// An upstream response, the local address of the connection it came on, and what it holds of
/// that connection until the response is done.
pub(crate) type Sent = (Response<Received>, Option<SocketAddr>, Option<Lease>);

type RequestHead = http::request::Parts;

/// The request head a try sends, lent by the one who owns the tries. HTTP/1.1 writes it from
/// the loan; hyper's HTTP/2 client and upgrades take a request of their own: a copy, or the head
/// itself on the `last` possible try.
pub(crate) struct Head<'a> {
    pub(crate) parts: &'a mut RequestHead,
    pub(crate) last: bool,
}

impl Head<'_> {
    fn into_request(self, body: UpstreamBody) -> Request<UpstreamBody> {
        if self.last {
            let blank = Request::new(()).into_parts().0;
            return Request::from_parts(std::mem::replace(self.parts, blank), body);
        }
        let p = &*self.parts;
        let mut r = Request::new(body);
        *r.method_mut() = p.method.clone();
        *r.uri_mut() = p.uri.clone();
        *r.version_mut() = p.version;
        *r.headers_mut() = p.headers.clone();
        r
    }
}

/// What a response holds of its upstream connection while its body streams.
pub(crate) enum Lease {
    /// A stream counted against a shared HTTP/2 connection (released on drop).
    Stream(#[allow(dead_code)] Stream), // held for its `Drop`
}

/// Where an HTTP/1.1 connection goes back to once its response has been read to the end (the
/// response body puts it back: no task waits for that).
pub(crate) struct Recycle {
    lane: Arc<Lane>,
    max_idle: usize,
    def: Arc<Cluster>,
    breaker: Arc<super::breaker::Breaker>,
}

impl Recycle {
    /// Back to the idle queue, unless the queue is full, or the connection is past
    /// `maxConnectionDuration` or `maxRequestsPerConnection` (then it is dropped, which closes it).
    pub(crate) fn put_back(self, mut conn: Box<h1::Conn>) {
        let Recycle { lane, max_idle, def, breaker } = self;
        let max = def.limits.max_requests_per_connection;
        if lane.idle.len() >= max_idle || expired(conn.born, &def) || (max != 0 && conn.uses >= max) {
            return;
        }
        conn.idle_since = crate::clock::now();
        lane.idle.push(conn);
        if needs_sweeper(&def) && !lane.sweeping.swap(true, Ordering::AcqRel) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(sweep(lane, def));
            } else {
                lane.sweeping.store(false, Ordering::Release);
            }
        }
        // A request pending on `maxConnections` may take it (see `Stream::drop` for the fence).
        std::sync::atomic::fence(Ordering::SeqCst);
        if breaker.pending.load(Ordering::SeqCst) > 0 {
            breaker.freed.notify_waiters();
        }
    }
}

/// Whether idle HTTP/1.1 connections of `cluster` ever need closing on a clock.
fn needs_sweeper(cluster: &Cluster) -> bool {
    idle_timeout(cluster).is_some() || cluster.conn.max_connection_duration.is_some()
}

/// Past `maxConnectionDuration`, or idle for longer than `idleTimeout`: not used again.
fn retired(c: &h1::Conn, cluster: &Cluster) -> bool {
    expired(c.born, cluster) || idle_timeout(cluster).is_some_and(|t| c.idle_since + t <= crate::clock::now())
}

/// When an idle connection retires, if ever.
fn retires_at(c: &h1::Conn, cluster: &Cluster) -> Option<Instant> {
    let idle = idle_timeout(cluster).map(|t| c.idle_since + t);
    earliest(idle, cluster.conn.max_connection_duration.map(|m| c.born + m))
}

/// Close a lane's idle HTTP/1.1 connections at their `idleTimeout` or `maxConnectionDuration`,
/// and any the upstream closed meanwhile, as Envoy does without traffic. One task per lane with
/// idle connections, woken only by its clock: requests never wake it.
async fn sweep(lane: Arc<Lane>, def: Arc<Cluster>) {
    loop {
        let mut next: Option<Instant> = None;
        for _ in 0..lane.idle.len() {
            let Some(mut c) = lane.idle.pop() else { break };
            if retired(&c, &def) || c.stale() {
                continue;
            }
            next = earliest(next, retires_at(&c, &def));
            lane.idle.push(c);
        }
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => {
                lane.sweeping.store(false, Ordering::Release);
                // A connection put back meanwhile saw the flag still set: it is ours to watch.
                if lane.idle.is_empty() || lane.sweeping.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        }
    }
}

/// One endpoint of a cluster and its connections.
pub(crate) struct EndpointState {
    pub(crate) addr: SocketAddr,
    pub(crate) active: AtomicUsize,
    /// Connections by SNI (`""` when the SNI does not vary by request), appended only.
    lanes: ArcSwap<Vec<(Arc<str>, Arc<Lane>)>>,
    max_idle: usize,
    pub(crate) outlier: OutlierState,
    /// Connections open to this endpoint (busy or idle), for `/clusters`.
    pub(crate) open: Arc<AtomicU32>,
    /// When the endpoint joined its cluster after the cluster was created (slow start counts
    /// from here); `None` for the cluster's initial endpoints.
    pub(crate) joined: Option<tokio::time::Instant>,
}

impl EndpointState {
    pub(crate) fn new(addr: SocketAddr, max_idle: usize, joined: Option<tokio::time::Instant>) -> EndpointState {
        EndpointState {
            joined,
            addr,
            active: AtomicUsize::new(0),
            lanes: ArcSwap::from_pointee(vec![(Arc::from(""), Arc::new(Lane::default()))]),
            max_idle,
            outlier: OutlierState::default(),
            open: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Idle keep-alive connections pooled now (admin `/clusters`).
    pub(crate) fn idle_connections(&self) -> usize {
        self.lanes.load().iter().map(|(_, l)| l.idle.len()).sum()
    }

    /// The lane for `key`, created if there is room; `None` past `MAX_LANES`.
    fn lane(&self, key: &str) -> Option<Arc<Lane>> {
        if let Some((_, l)) = self.lanes.load().iter().find(|(k, _)| &**k == key) {
            return Some(l.clone());
        }
        let mut found = None;
        self.lanes.rcu(|cur| {
            if let Some((_, l)) = cur.iter().find(|(k, _)| &**k == key) {
                found = Some(l.clone());
                return cur.clone();
            }
            if cur.len() >= MAX_LANES {
                found = None;
                return cur.clone();
            }
            let lane = Arc::new(Lane::default());
            found = Some(lane.clone());
            let mut next = (**cur).clone();
            next.push((Arc::from(key), lane));
            Arc::new(next)
        });
        found
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Send `req` to this endpoint over a pooled (or new) connection; the response and the
    /// local address of the connection that carried it (`%UPSTREAM_LOCAL_ADDRESS%`).
    /// `upgrade`: the connection is handed over to a protocol upgrade and never reused.
    pub(crate) async fn send(
        self: &Arc<Self>,
        pool: &ClusterPool,
        head: Head<'_>,
        body: UpstreamBody,
        upgrade: bool,
    ) -> Result<Sent, SendError> {
        if request_protocol(&pool.def, head.parts.version) == UpstreamProtocol::Http2 {
            self.send_h2(pool, head.into_request(body)).await
        } else if upgrade {
            Box::pin(self.send_upgrade(pool, head.into_request(body))).await
        } else {
            self.send_h1(pool, head.parts, body).await
        }
    }

    /// A connection slot of the cluster (`maxConnections`). Over the limit the request waits as
    /// pending for a connection to close or go idle, unless `http1MaxPendingRequests` are
    /// already waiting: then it overflows (503 `UO`), as Envoy's connection pool does.
    /// `Err(t)`: `free` found room on an existing connection while waiting (an idle HTTP/1.1
    /// connection, a stream on an HTTP/2 one).
    async fn connection_slot<T>(
        &self,
        pool: &ClusterPool,
        free: impl Fn() -> Option<T>,
    ) -> Result<Result<Slot, T>, SendError> {
        let limits = &pool.def.limits;
        if let Some(s) = pool.breaker.try_acquire(Resource::Connection, limits) {
            return Ok(Ok(s));
        }
        let _pending = pool.breaker.try_acquire(Resource::Pending, limits).ok_or(SendError::Overflow)?;
        loop {
            let notified = pool.breaker.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = pool.breaker.try_acquire_quiet(Resource::Connection, limits) {
                return Ok(Ok(s));
            }
            if let Some(c) = free() {
                return Ok(Err(c));
            }
            notified.await;
        }
    }

    /// HTTP/1.1, written from the borrowed head: a retry sends the same head again without a
    /// copy of it having been kept.
    async fn send_h1(
        self: &Arc<Self>,
        pool: &ClusterPool,
        parts: &http::request::Parts,
        mut body: UpstreamBody,
    ) -> Result<Sent, SendError> {
        let cluster = &*pool.def;
        let key = sni_key(pool, &parts.uri, &parts.headers);
        // No lane (too many SNIs): a connection of its own, not pooled.
        let lane = self.lane(&key);
        loop {
            let (conn, reused) = match lane.as_deref().and_then(|l| take_idle(l, cluster)) {
                Some(c) => (c, true),
                // Opening a connection is the rare path: boxed, so its large future (TCP, TLS)
                // is not part of every request's state, moved on every await.
                None => {
                    match Box::pin(self.connection_slot(pool, || lane.as_deref().and_then(|l| take_idle(l, cluster))))
                        .await?
                    {
                        Err(idle) => (idle, true),
                        Ok(slot) => {
                            let host = request_host(&parts.uri, &parts.headers);
                            (Box::pin(self.connect_h1(pool, &host, slot)).await?, false)
                        }
                    }
                }
            };
            let local = conn.local;
            let home = lane.clone().map(|lane| Recycle {
                lane,
                max_idle: self.max_idle,
                def: pool.def.clone(),
                breaker: pool.breaker.clone(),
            });
            match h1::send(conn, parts, body, home).await {
                Ok(resp) => return Ok((resp.map(Received::H1), local, None)),
                // A pooled connection closed under us before the request was written: the
                // request is intact, try again on another connection.
                Err(Failed { unsent: Some(b), .. }) if reused => body = b,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// An upgrade (WebSocket) goes through hyper, on a connection of its own that the tunnel
    /// takes over.
    async fn send_upgrade(&self, pool: &ClusterPool, req: Request<UpstreamBody>) -> Result<Sent, SendError> {
        let lane = self.lane(&sni_key(pool, req.uri(), req.headers()));
        // At `maxConnections`, an idle pooled connection gives up its place.
        let slot = loop {
            match self.connection_slot(pool, || lane.as_deref().and_then(|l| l.idle.pop())).await? {
                Ok(slot) => break slot,
                Err(idle) => drop(idle),
            }
        };
        let slot = slot.also_in(&self.open);
        let (io, local) = self.connect_io(pool, &request_host(req.uri(), req.headers())).await?;
        let mut sender = handshake_h1(TokioIo::new(io), (Usage::new(), pool.def.clone(), slot)).await?;
        let resp = sender.send_request(req).await.map_err(SendError::Reset)?;
        Ok((resp.map(Received::Hyper), local, None))
    }

    async fn connect_h1(&self, pool: &ClusterPool, host: &str, slot: Slot) -> Result<Box<h1::Conn>, SendError> {
        let slot = slot.also_in(&self.open);
        let (io, local) = self.connect_io(pool, host).await?;
        Ok(h1::Conn::new(io, local, slot))
    }

    /// A new socket to this endpoint (TLS when the cluster's `tls` says so, with `host` as the
    /// SNI unless it names one) and its local address.
    async fn connect_io(&self, pool: &ClusterPool, host: &str) -> Result<(h1::Io, Option<SocketAddr>), SendError> {
        let tcp = connect_tcp(self.addr, &pool.def).await?;
        let local = tcp.local_addr().ok();
        let io = match &pool.tls {
            None => h1::Io::Plain(tcp),
            Some(tls) => h1::Io::Tls(Box::new(tls.connect(tcp, host).await.map_err(SendError::Connect)?)),
        };
        Ok((io, local))
    }

    async fn send_h2(self: &Arc<Self>, pool: &ClusterPool, mut req: Request<UpstreamBody>) -> Result<Sent, SendError> {
        let key = sni_key(pool, req.uri(), req.headers());
        let lane = self.lane(&key).unwrap_or_default();
        loop {
            let (conn, stream, reused) = match lane.h2_stream(pool) {
                Some((c, s)) => (c, s, true),
                // Every connection is full (`maxConcurrentStreams`) or there is none: a new one,
                // or, at `maxConnections`, wait as pending for a stream or a connection to end.
                None => match Box::pin(self.connection_slot(pool, || lane.h2_stream(pool))).await? {
                    Err((c, s)) => (c, s, true),
                    Ok(slot) => {
                        let connecting = lane.h2_connecting.lock().await;
                        // A connection opened while we waited may have room (the slot goes back).
                        if let Some((c, s)) = lane.h2_stream(pool) {
                            (c, s, true)
                        } else {
                            let host = request_host(req.uri(), req.headers());
                            let conn = Box::pin(self.connect_h2(pool, &lane, &host, slot)).await?;
                            drop(connecting);
                            // Requests pending at `maxConnections` may fit on it.
                            pool.breaker.freed.notify_waiters();
                            match conn.reserve(pool) {
                                Some(s) => (conn, s, false),
                                // Taken by concurrent requests already: look again.
                                None => continue,
                            }
                        }
                    }
                },
            };
            let mut sender = conn.sender.clone();
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp.map(Received::Hyper), conn.local, Some(Lease::Stream(stream)))),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        let dead = Arc::as_ptr(&conn);
                        lane.h2.rcu(|cur| cur.iter().filter(|c| Arc::as_ptr(c) != dead).cloned().collect::<Vec<_>>());
                        req = r;
                    }
                    _ => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    async fn connect_h2(
        &self,
        pool: &ClusterPool,
        lane: &Lane,
        host: &str,
        slot: Slot,
    ) -> Result<Arc<H2Conn>, SendError> {
        let slot = slot.also_in(&self.open);
        let (io, local) = self.connect_io(pool, host).await?;
        let usage = Usage::new();
        let life = (usage.clone(), pool.def.clone(), slot);
        let sender = handshake_h2(&h2_builder(&pool.def), TokioIo::new(io), life).await?;
        let conn = Arc::new(H2Conn { sender, local, usage });
        lane.h2.rcu(|cur| {
            let mut next = (**cur).clone();
            next.push(conn.clone());
            next
        });
        Ok(conn)
    }
}

/// The protocol toward the cluster for a request of `version` (as `server.rs` shaped it):
/// the request's own with `useClientProtocol`, else the cluster's.
pub(crate) fn request_protocol(cluster: &Cluster, version: http::Version) -> UpstreamProtocol {
    if cluster.conn.use_client_protocol {
        if version == http::Version::HTTP_2 {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        }
    } else {
        cluster.protocol
    }
}

/// The cluster's connect timeout; Istio's default (10 s) should a cluster come without one.
pub(crate) fn connect_timeout(cluster: &Cluster) -> Duration {
    if cluster.connect_timeout.is_zero() {
        Duration::from_secs(10)
    } else {
        cluster.connect_timeout
    }
}

fn take_idle(lane: &Lane, cluster: &Cluster) -> Option<Box<h1::Conn>> {
    while let Some(mut c) = lane.idle.pop() {
        // A retired (`maxConnectionDuration`, `idleTimeout`) connection, or one the upstream
        // closed while it was idle, is dropped here, which closes it.
        if !retired(&c, cluster) && !c.stale() {
            return Some(c);
        }
    }
    None
}

/// The lane of a request: its host when the TLS SNI follows it, else the one shared lane.
fn sni_key(pool: &ClusterPool, uri: &http::Uri, headers: &http::HeaderMap) -> std::borrow::Cow<'static, str> {
    let sni_varies = pool.tls.is_some() && pool.def.tls.as_ref().is_some_and(|t| t.sni.is_none());
    if sni_varies {
        std::borrow::Cow::Owned(request_host(uri, headers).to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed("")
    }
}

/// The request's host (`:authority` or `Host`), for the TLS SNI.
fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> String {
    match uri.authority() {
        Some(a) => a.host().to_string(),
        None => headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| portico_model::snapshot::strip_port(h).to_string())
            .unwrap_or_default(),
    }
}

/// What a connection's task keeps: its usage, its cluster's settings, its connection slot.
type Life = (Arc<Usage>, Arc<Cluster>, Slot);

/// Run a connection until it ends, or until it is idle and retired (`idleTimeout`,
/// `maxConnectionDuration`): then it is dropped, which closes it, as Envoy closes such
/// connections. A request racing the close fails before it was written and is sent again on
/// another connection (`send_h1`/`send_h2` retry a reused connection).
async fn drive<F: std::future::Future>(conn: F, usage: &Usage, cluster: &Cluster) -> Option<F::Output> {
    tokio::pin!(conn);
    loop {
        let Some(at) = usage.next_check(cluster) else { return Some(conn.await) };
        // The check's timer is polled only when it fires, not at each of the connection's
        // wake-ups (several per request).
        tokio::select! {
            biased;
            out = &mut conn => return Some(out),
            () = crate::woken::WokenOnly::new(tokio::time::sleep_until(at)) => {
                if usage.idle() && usage.retired(cluster) {
                    return None;
                }
            }
        }
    }
}

/// HTTP/1.1 over `io`; the connection task holds the cluster's connection slot until it ends.
async fn handshake_h1<I>(io: I, life: Life) -> Result<http1::SendRequest<UpstreamBody>, SendError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        let (usage, cluster, slot) = life;
        if let Some(Err(e)) = drive(conn.with_upgrades(), &usage, &cluster).await {
            tracing::debug!(error = %e, "upstream HTTP/1 connection closed with an error");
        }
        drop(slot);
    });
    Ok(sender)
}

/// The HTTP/2 client settings of a cluster: `http2KeepAlive` as Envoy's `connection_keepalive`
/// (PINGs every `interval` whether or not streams are open; no answer within `timeout`, hyper's
/// 20 s default when unset, closes the connection).
fn h2_builder(cluster: &Cluster) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new());
    if let Some(ka) = &cluster.conn.http2_keepalive {
        b.keep_alive_interval(ka.interval).keep_alive_while_idle(true);
        if let Some(t) = ka.timeout {
            b.keep_alive_timeout(t);
        }
    }
    b
}

async fn handshake_h2<I>(
    builder: &http2::Builder<TokioExecutor>,
    io: I,
    life: Life,
) -> Result<http2::SendRequest<UpstreamBody>, SendError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = builder.handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        let (usage, cluster, slot) = life;
        // Dropping it when retired sends GOAWAY and closes the connection.
        if let Some(Err(e)) = drive(conn, &usage, &cluster).await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection closed with an error");
        }
        drop(slot);
    });
    Ok(sender)
}

async fn connect_tcp(addr: SocketAddr, cluster: &Cluster) -> Result<TcpStream, SendError> {
    let stream = match tokio::time::timeout(connect_timeout(cluster), TcpStream::connect(addr)).await {
        Err(_) => return Err(SendError::ConnectTimeout),
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    tune_socket(&stream, cluster.conn.tcp_keepalive.as_ref());
    Ok(stream)
}

/// Socket options of a new upstream connection (HTTP and TCP routes): TCP_NODELAY, and
/// SO_KEEPALIVE with `connectionPool.tcp.tcpKeepalive` (fields left unset keep the OS defaults).
pub(crate) fn tune_socket(stream: &TcpStream, keepalive: Option<&TcpKeepalive>) {
    let _ = stream.set_nodelay(true);
    if let Some(ka) = keepalive {
        let mut k = socket2::TcpKeepalive::new();
        if let Some(t) = ka.time {
            k = k.with_time(t);
        }
        if let Some(i) = ka.interval {
            k = k.with_interval(i);
        }
        if let Some(p) = ka.probes {
            k = k.with_retries(p);
        }
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&k) {
            tracing::debug!(error = %e, "could not set TCP keepalive on an upstream socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connected() -> (TcpStream, tokio::net::TcpListener) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        (s, l)
    }

    #[tokio::test]
    async fn tcp_keepalive_settings_reach_the_socket() {
        let (s, _l) = connected().await;
        let ka = TcpKeepalive {
            probes: Some(4),
            time: Some(Duration::from_secs(45)),
            interval: Some(Duration::from_secs(7)),
        };
        tune_socket(&s, Some(&ka));
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(45));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
        assert!(sock.nodelay().unwrap());
    }

    #[tokio::test]
    async fn tcp_keepalive_unset_fields_keep_the_os_defaults() {
        let (plain, _l) = connected().await;
        let defaults = socket2::SockRef::from(&plain);
        let (os_time, os_retries) = (defaults.keepalive_time().unwrap(), defaults.keepalive_retries().unwrap());
        tune_socket(&plain, None);
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap(), "off without tcpKeepalive");

        let (s, _l2) = connected().await;
        tune_socket(&s, Some(&TcpKeepalive { interval: Some(Duration::from_secs(3)), ..Default::default() }));
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!((sock.keepalive_time().unwrap(), sock.keepalive_retries().unwrap()), (os_time, os_retries));
    }

    #[test]
    fn use_client_protocol_follows_the_request_version() {
        use portico_model::snapshot::*;
        let mut c = Cluster {
            name: "c".into(),
            host: "c".into(),
            namespace: "default".into(),
            port: 80,
            subset: None,
            protocol: UpstreamProtocol::Http1,
            discovery: Discovery::Static,
            endpoints: Vec::new(),
            lb: LbPolicy::LeastRequest,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: None,
            tcp_idle_timeout: None,
            limits: Limits::default(),
            outlier: None,
            tls: None,
            warmup: None,
            version: None,
            conn: ConnectionOptions::default(),
        };
        assert_eq!(request_protocol(&c, http::Version::HTTP_2), UpstreamProtocol::Http1);
        c.conn.use_client_protocol = true;
        assert_eq!(request_protocol(&c, http::Version::HTTP_2), UpstreamProtocol::Http2);
        assert_eq!(request_protocol(&c, http::Version::HTTP_11), UpstreamProtocol::Http1);
        c.protocol = UpstreamProtocol::Http2;
        assert_eq!(request_protocol(&c, http::Version::HTTP_10), UpstreamProtocol::Http1);
    }
}
