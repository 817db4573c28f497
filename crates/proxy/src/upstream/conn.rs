//! Connections to one endpoint: a lock-free queue of idle HTTP/1.1 keep-alive connections, or
//! one shared multiplexed HTTP/2 (prior knowledge, h2c) connection.
//!
//! When the TLS SNI follows the request's host (DestinationRule `tls` without `sni`), a
//! connection opened for one host must not carry another host's requests (the backend chose its
//! certificate and virtual host by SNI): connections are then kept per SNI ("lanes").

use super::breaker::{Resource, Slot};
use super::outlier::OutlierState;
use super::ClusterPool;
use crate::body::UpstreamBody;
use crate::ResponseFlags;
use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::SegQueue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_model::snapshot::{Cluster, UpstreamProtocol};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

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
    /// A circuit breaker (`maxConnections` with `http1MaxPendingRequests`) refused the request.
    #[error("upstream overflow")]
    Overflow,
}

impl SendError {
    pub(crate) fn flag(&self) -> ResponseFlags {
        match self {
            SendError::Reset(_) => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            SendError::Overflow => ResponseFlags::UPSTREAM_OVERFLOW,
            _ => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        }
    }

    /// Envoy's response code details for the failure.
    pub(crate) fn details(&self) -> &'static str {
        match self {
            SendError::ConnectTimeout => "upstream_reset_before_response_started{connection_timeout}",
            SendError::Connect(_) | SendError::Handshake(_) => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            SendError::Reset(_) => "upstream_reset_before_response_started{connection_termination}",
            SendError::Overflow => "upstream_reset_before_response_started{overflow}",
        }
    }

    /// Envoy's local-reply body for the failure.
    pub(crate) fn body(&self) -> &'static str {
        match self {
            SendError::ConnectTimeout => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
            }
            SendError::Connect(_) | SendError::Handshake(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            SendError::Reset(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            SendError::Overflow => "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        }
    }

    pub(crate) fn is_connect_failure(&self) -> bool {
        matches!(self, SendError::ConnectTimeout | SendError::Connect(_) | SendError::Handshake(_))
    }
}

struct IdleConn {
    sender: http1::SendRequest<UpstreamBody>,
    uses: u32,
    /// The connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`).
    local: Option<SocketAddr>,
}

/// A shared HTTP/2 connection and its local address.
type H2Conn = (http2::SendRequest<UpstreamBody>, Option<SocketAddr>);

/// The connections of one endpoint for one SNI.
#[derive(Default)]
struct Lane {
    /// Idle HTTP/1.1 connections (lock-free; grows in small blocks, nothing preallocated).
    idle: SegQueue<IdleConn>,
    h2: ArcSwapOption<H2Conn>,
}

/// Most SNI lanes kept per endpoint: the host comes from the client, so past this many,
/// connections for new names are used once and closed rather than pooled.
const MAX_LANES: usize = 64;

/// An upstream response and the local address of the connection it came on.
pub(crate) type Sent = (Response<Incoming>, Option<SocketAddr>);

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
        req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Result<Sent, SendError> {
        match pool.def.protocol {
            UpstreamProtocol::Http1 => self.send_h1(pool, req, upgrade).await,
            UpstreamProtocol::Http2 => self.send_h2(pool, req).await,
        }
    }

    /// A connection slot of the cluster (`maxConnections`). Over the limit the request waits as
    /// pending for a connection to close or go idle, unless `http1MaxPendingRequests` are
    /// already waiting: then it overflows (503 `UO`), as Envoy's connection pool does.
    /// `Ok(None)`: an idle connection came free while waiting.
    async fn connection_slot(&self, pool: &ClusterPool, lane: &Lane) -> Result<Result<Slot, IdleConn>, SendError> {
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
            if let Some(c) = take_idle(lane) {
                return Ok(Err(c));
            }
            notified.await;
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        pool: &ClusterPool,
        mut req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Result<Sent, SendError> {
        let cluster = &*pool.def;
        let key = sni_key(pool, &req);
        // No lane (too many SNIs): a connection of its own, not pooled.
        let lane = self.lane(&key);
        let spare = Lane::default();
        let lane_ref = lane.as_deref().unwrap_or(&spare);
        loop {
            let (mut conn, reused) = match take_idle(lane_ref) {
                Some(c) => (c, true),
                None => match self.connection_slot(pool, lane_ref).await? {
                    Err(idle) => (idle, true),
                    Ok(slot) => {
                        let host = request_host(&req);
                        let (sender, local) = self.connect_h1(pool, &host, slot).await?;
                        (IdleConn { sender, uses: 0, local }, false)
                    }
                },
            };
            conn.uses = conn.uses.saturating_add(1);
            let local = conn.local;
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    let max = cluster.limits.max_requests_per_connection;
                    if let Some(lane) = lane.filter(|_| !upgrade && (max == 0 || conn.uses < max)) {
                        self.recycle(conn, lane, pool.breaker.clone());
                    }
                    return Ok((resp, local));
                }
                Err(mut e) => match e.take_message() {
                    // A pooled connection closed under us before the request was written: the
                    // request is intact, try again on another connection.
                    Some(r) if reused => req = r,
                    _ => return Err(SendError::Reset(e.into_error())),
                },
            }
        }
    }

    /// Back to the idle queue once the response body has been read to its end.
    fn recycle(self: &Arc<Self>, mut conn: IdleConn, lane: Arc<Lane>, breaker: Arc<super::breaker::Breaker>) {
        let max_idle = self.max_idle;
        tokio::spawn(async move {
            let ready = futures_util::future::poll_fn(|cx| conn.sender.poll_ready(cx)).await.is_ok();
            // Past the limit the connection is dropped, which closes it.
            if ready && lane.idle.len() < max_idle {
                lane.idle.push(conn);
                // A request pending on `maxConnections` may take it.
                breaker.freed.notify_waiters();
            }
        });
    }

    async fn connect_h1(
        &self,
        pool: &ClusterPool,
        host: &str,
        slot: Slot,
    ) -> Result<(http1::SendRequest<UpstreamBody>, Option<SocketAddr>), SendError> {
        let slot = slot.also_in(&self.open);
        let tcp = connect_tcp(self.addr, &pool.def).await?;
        let local = tcp.local_addr().ok();
        let sender = match &pool.tls {
            None => handshake_h1(TokioIo::new(tcp), slot).await?,
            Some(tls) => {
                let stream = tls.connect(tcp, host).await.map_err(SendError::Connect)?;
                handshake_h1(TokioIo::new(stream), slot).await?
            }
        };
        Ok((sender, local))
    }

    async fn send_h2(self: &Arc<Self>, pool: &ClusterPool, mut req: Request<UpstreamBody>) -> Result<Sent, SendError> {
        let key = sni_key(pool, &req);
        let lane = self.lane(&key).unwrap_or_default();
        loop {
            let current = lane.h2.load_full().filter(|s| !s.0.is_closed());
            let ((mut sender, local), reused) = match current {
                Some(s) => ((*s).clone(), true),
                None => {
                    let slot =
                        pool.breaker.try_acquire(Resource::Connection, &pool.def.limits).ok_or(SendError::Overflow)?;
                    let host = request_host(&req);
                    (self.connect_h2(pool, &lane, &host, slot).await?, false)
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, local)),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        lane.h2.store(None);
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
    ) -> Result<(http2::SendRequest<UpstreamBody>, Option<SocketAddr>), SendError> {
        let slot = slot.also_in(&self.open);
        let tcp = connect_tcp(self.addr, &pool.def).await?;
        let local = tcp.local_addr().ok();
        let sender = match &pool.tls {
            None => handshake_h2(TokioIo::new(tcp), slot).await?,
            Some(tls) => {
                let stream = tls.connect(tcp, host).await.map_err(SendError::Connect)?;
                handshake_h2(TokioIo::new(stream), slot).await?
            }
        };
        // Concurrent first requests may each connect; the last one stored is shared afterwards and
        // the others close once their streams end.
        lane.h2.store(Some(Arc::new((sender.clone(), local))));
        Ok((sender, local))
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

fn take_idle(lane: &Lane) -> Option<IdleConn> {
    while let Some(c) = lane.idle.pop() {
        if c.sender.is_ready() {
            return Some(c);
        }
    }
    None
}

/// The lane of a request: its host when the TLS SNI follows it, else the one shared lane.
fn sni_key(pool: &ClusterPool, req: &Request<UpstreamBody>) -> std::borrow::Cow<'static, str> {
    let sni_varies = pool.tls.is_some() && pool.def.tls.as_ref().is_some_and(|t| t.sni.is_none());
    if sni_varies {
        std::borrow::Cow::Owned(request_host(req).to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed("")
    }
}

/// The request's host (`:authority` or `Host`), for the TLS SNI.
fn request_host(req: &Request<UpstreamBody>) -> String {
    match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| portico_model::snapshot::strip_port(h).to_string())
            .unwrap_or_default(),
    }
}

/// HTTP/1.1 over `io`; the connection task holds the cluster's connection slot until it ends.
async fn handshake_h1<I>(io: I, slot: Slot) -> Result<http1::SendRequest<UpstreamBody>, SendError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream HTTP/1 connection closed with an error");
        }
        drop(slot);
    });
    Ok(sender)
}

async fn handshake_h2<I>(io: I, slot: Slot) -> Result<http2::SendRequest<UpstreamBody>, SendError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
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
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
