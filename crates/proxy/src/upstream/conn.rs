//! Connections to one endpoint: a lock-free queue of idle HTTP/1.1 keep-alive connections, or
//! one shared multiplexed HTTP/2 (prior knowledge, h2c) connection.

use super::breaker::{Resource, Slot};
use super::outlier::OutlierState;
use super::ClusterPool;
use crate::body::UpstreamBody;
use crate::ResponseFlags;
use arc_swap::ArcSwapOption;
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

/// The local address of the upstream connection that carried a response, put in the
/// response's extensions for the access log (`%UPSTREAM_LOCAL_ADDRESS%`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpstreamLocal(pub(crate) SocketAddr);

fn tag_local<B>(mut resp: Response<B>, local: Option<SocketAddr>) -> Response<B> {
    if let Some(a) = local {
        resp.extensions_mut().insert(UpstreamLocal(a));
    }
    resp
}

/// One endpoint of a cluster and its connections.
pub(crate) struct EndpointState {
    pub(crate) addr: SocketAddr,
    pub(crate) active: AtomicUsize,
    /// Idle HTTP/1.1 connections (lock-free; grows in small blocks, nothing preallocated).
    idle: SegQueue<IdleConn>,
    max_idle: usize,
    h2: ArcSwapOption<(http2::SendRequest<UpstreamBody>, Option<SocketAddr>)>,
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
            idle: SegQueue::new(),
            max_idle,
            h2: ArcSwapOption::empty(),
            outlier: OutlierState::default(),
            open: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Idle keep-alive connections pooled now (admin `/clusters`).
    pub(crate) fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Send `req` to this endpoint over a pooled (or new) connection.
    /// `upgrade`: the connection is handed over to a protocol upgrade and never reused.
    pub(crate) async fn send(
        self: &Arc<Self>,
        pool: &ClusterPool,
        req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, SendError> {
        match pool.def.protocol {
            UpstreamProtocol::Http1 => self.send_h1(pool, req, upgrade).await,
            UpstreamProtocol::Http2 => self.send_h2(pool, req).await,
        }
    }

    /// A connection slot of the cluster (`maxConnections`). Over the limit the request waits as
    /// pending for a connection to close or go idle, unless `http1MaxPendingRequests` are
    /// already waiting: then it overflows (503 `UO`), as Envoy's connection pool does.
    /// `Ok(None)`: an idle connection came free while waiting.
    async fn connection_slot(&self, pool: &ClusterPool) -> Result<Result<Slot, IdleConn>, SendError> {
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
            if let Some(c) = self.take_idle() {
                return Ok(Err(c));
            }
            notified.await;
        }
    }

    fn take_idle(&self) -> Option<IdleConn> {
        while let Some(c) = self.idle.pop() {
            if c.sender.is_ready() {
                return Some(c);
            }
        }
        None
    }

    async fn send_h1(
        self: &Arc<Self>,
        pool: &ClusterPool,
        mut req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, SendError> {
        let cluster = &*pool.def;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(c) => (c, true),
                None => match self.connection_slot(pool).await? {
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
                    let resp = tag_local(resp, local);
                    let max = cluster.limits.max_requests_per_connection;
                    if !upgrade && (max == 0 || conn.uses < max) {
                        self.recycle(conn, pool.breaker.clone());
                    }
                    return Ok(resp);
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
    fn recycle(self: &Arc<Self>, mut conn: IdleConn, breaker: Arc<super::breaker::Breaker>) {
        let ep = self.clone();
        tokio::spawn(async move {
            let ready = futures_util::future::poll_fn(|cx| conn.sender.poll_ready(cx)).await.is_ok();
            // Past the limit the connection is dropped, which closes it.
            if ready && ep.idle.len() < ep.max_idle {
                ep.idle.push(conn);
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

    async fn send_h2(
        self: &Arc<Self>,
        pool: &ClusterPool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        loop {
            let current = self.h2.load_full().filter(|s| !s.0.is_closed());
            let ((mut sender, local), reused) = match current {
                Some(s) => ((*s).clone(), true),
                None => {
                    let slot =
                        pool.breaker.try_acquire(Resource::Connection, &pool.def.limits).ok_or(SendError::Overflow)?;
                    let host = request_host(&req);
                    (self.connect_h2(pool, &host, slot).await?, false)
                }
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(tag_local(resp, local)),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => {
                        self.h2.store(None);
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
        self.h2.store(Some(Arc::new((sender.clone(), local))));
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
