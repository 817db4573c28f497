//! Listening sockets and downstream connections: bind, accept, detect HTTP/1 vs h2c, serve with
//! hyper, and drain (stop accepting, graceful shutdown of open connections, then force-close).

use crate::guard::{Guarded, H2Limits};
use crate::io::{sniff, Prefixed};
use crate::server::ProxyService;
use crate::state::{ConnSlot, Shared};
use crate::tcp::{self, TcpLog};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_model::snapshot::ListenerKind;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Where a listener and its connections are in their life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Not accepting; open connections finish in-flight requests (HTTP/1 `Connection: close`,
    /// HTTP/2 GOAWAY).
    Draining,
    /// The drain timeout passed: remaining connections are closed.
    Closed,
}

/// Bind a listening socket (`SO_REUSEADDR`, not `SO_REUSEPORT`: a port taken by another process
/// is an error, not a silent share).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// A running listener of one Gateway port.
pub(crate) struct ListenerHandle {
    pub(crate) local_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    accept: Option<JoinHandle<()>>,
}

impl ListenerHandle {
    pub(crate) fn start(port: u32, listener: TcpListener, local_addr: SocketAddr, shared: Arc<Shared>) -> Self {
        let (phase, rx) = watch::channel(Phase::Running);
        let accept = tokio::spawn(accept_loop(listener, port, shared, rx));
        ListenerHandle { local_addr, phase, accept: Some(accept) }
    }

    /// Close the listening socket (new connections are refused; the port is free again) and
    /// tell open connections to finish.
    pub(crate) async fn stop_accepting(&mut self) {
        self.phase.send_replace(Phase::Draining);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }

    /// Stop accepting, let open connections finish up to `timeout`, then close what is left.
    pub(crate) async fn drain(mut self, timeout: Duration) {
        self.stop_accepting().await;
        // Every connection (and upgraded tunnel) holds a receiver: closed() = all are done.
        let _ = tokio::time::timeout(timeout, self.phase.closed()).await;
        self.phase.send_replace(Phase::Closed);
    }
}

async fn accept_loop(listener: TcpListener, port: u32, shared: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    loop {
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Envoy's overload manager: over the limit, a new connection is closed at
                    // once (before a byte is read) and counted.
                    let Some(slot) = ConnSlot::take(&shared) else {
                        if let Some(t) = shared.opts.telemetry.as_ref() {
                            t.metrics().gateway().downstream_connections_overflow.inc();
                        }
                        tracing::debug!(port, %peer, "connection refused: max connections reached");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let phase = phase.clone();
                    tokio::spawn(async move {
                        serve(stream, peer, port, shared, phase).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Per-connection facts the request handler needs.
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) gateway_port: u32,
    /// For upgraded tunnels, which outlive the HTTP connection but not the drain.
    pub(crate) phase: watch::Receiver<Phase>,
    /// Set on connections whose TLS we terminated.
    pub(crate) tls: Option<crate::tls::TlsInfo>,
}

impl ConnInfo {
    /// The scheme requests on this connection arrived with (route matching, redirects).
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u32,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    // portico_downstream_connections_{total,active}: counted while this task lives.
    let _counted = shared.opts.telemetry.as_ref().map(|t| t.metrics().gateway().downstream_connection());
    let kind = shared.state.load().snapshot.listener(port).map(|l| l.kind);
    match kind {
        Some(ListenerKind::Tls) => return crate::tls::serve(stream, peer, port, shared, phase).await,
        Some(ListenerKind::Tcp) => return serve_tcp(stream, peer, port, shared, phase).await,
        Some(ListenerKind::Http) | None => {}
    }
    let sniffed = tokio::select! {
        r = tokio::time::timeout(shared.opts.header_read_timeout, sniff(&mut stream)) => r,
        _ = until(&mut phase, Phase::Draining) => return,
    };
    let (is_h2, prefix) = match sniffed {
        Ok(Ok(Some(found))) => found,
        // Timed out, failed, or closed before a byte.
        _ => return,
    };
    let local = stream.local_addr().unwrap_or(peer);
    let io = Prefixed::new(prefix, stream);
    let info = ConnInfo { peer, local, gateway_port: port, phase: phase.clone(), tls: None };
    let svc = ProxyService::new(shared.clone(), Arc::new(info));
    if is_h2 {
        let (io, stop) = Guarded::http2(io, H2Limits::default(), shared.timeouts(), true);
        drive_until(shared.h2.serve_connection(TokioIo::new(io), svc), phase, Some(stop)).await;
    } else {
        let (io, stop) = Guarded::http1(io, shared.h1_limits(), shared.timeouts());
        drive_until(shared.h1.serve_connection(TokioIo::new(io), svc).with_upgrades(), phase, Some(stop)).await;
    }
}

/// A connection on a TCP listener: relayed by the port's first matching TCP route.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, port: u32, shared: Arc<Shared>, phase: watch::Receiver<Phase>) {
    let local = stream.local_addr().unwrap_or(peer);
    let mut log = TcpLog::new(shared.clone(), TcpLog::record(peer, local, port, None));
    let state = shared.state.load_full();
    let dests = state.snapshot.listener(port).and_then(|l| tcp::tcp_route(&l.tcp_routes, port));
    tcp::proxy(&shared, &state, dests, None, stream, bytes::Bytes::new(), &mut log, phase).await;
}

/// Resolve once the phase is at least `at` (never, if the sender is gone).
pub(crate) async fn until(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let reached = |p: &Phase| match at {
        Phase::Running => true,
        Phase::Draining => *p != Phase::Running,
        Phase::Closed => *p == Phase::Closed,
    };
    if phase.wait_for(reached).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// hyper server connections that can shut down gracefully (over plain TCP or TLS).
pub(crate) trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn begin_graceful_shutdown(self: Pin<&mut Self>);
}

impl<S> Graceful for http1::UpgradeableConnection<TokioIo<S>, ProxyService>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<S> Graceful for http2::Connection<TokioIo<S>, ProxyService, TokioExecutor>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serve `conn` until it ends, following the listener's phase (graceful shutdown when draining,
/// closed when the drain times out), and shutting down gracefully when `stop` is notified (the
/// connection's guard refused a request head, found it idle, or saw a flood).
pub(crate) async fn drive_until<C: Graceful>(conn: C, mut phase: watch::Receiver<Phase>, stop: Option<Arc<Notify>>) {
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let p = *phase.borrow_and_update();
        if p == Phase::Closed {
            return;
        }
        if p == Phase::Draining && !shutting_down {
            shutting_down = true;
            conn.as_mut().begin_graceful_shutdown();
        }
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            () = stopped(stop.as_deref()), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().begin_graceful_shutdown();
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    // The proxy is gone without a drain: let the connection finish by itself.
                    let _ = conn.as_mut().await;
                    return;
                }
            }
        }
    }
}

async fn stopped(stop: Option<&Notify>) {
    match stop {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
