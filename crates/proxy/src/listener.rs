//! Listening sockets and downstream connections: bind, accept, detect HTTP/1 vs h2c, serve with
//! hyper, and drain (stop accepting, graceful shutdown of open connections, then force-close).

use crate::downstream::{until, ConnInfo, Phase};
use crate::io::{sniff, Prefixed};
use crate::park::OpenConn;
use crate::server::serve_http;
use crate::state::{ConnSlot, Shared};
use crate::tcp::{self, TcpGuard};
use portico_model::snapshot::ListenerKind;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    shared: Arc<Shared>,
}

impl ListenerHandle {
    pub(crate) fn start(port: u32, listener: TcpListener, local_addr: SocketAddr, shared: Arc<Shared>) -> Self {
        let (phase, rx) = watch::channel(Phase::Running);
        let accept = tokio::spawn(accept_loop(listener, port, shared.clone(), rx));
        ListenerHandle { local_addr, phase, accept: Some(accept), shared }
    }

    /// Close the listening socket (new connections are refused; the port is free again) and
    /// tell open connections to finish.
    pub(crate) async fn stop_accepting(&mut self) {
        self.phase.send_replace(Phase::Draining);
        // Parked connections have nothing in flight: closed now, not at the drain timeout.
        self.shared.lot.evict(&self.phase.subscribe());
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
                    tokio::spawn(crate::clock::per_poll(serve(stream, peer, port, slot, phase.clone())));
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

async fn serve(mut stream: TcpStream, peer: SocketAddr, port: u32, slot: ConnSlot, mut phase: watch::Receiver<Phase>) {
    let shared = slot.shared().clone();
    // portico_downstream_connections_{total,active}: counted while the connection is open.
    let gauge = shared.opts.telemetry.as_ref().map(|t| t.metrics().gateway().downstream_connection());
    let open = OpenConn { slot, _gauge: gauge };
    let kind = shared.state.load().snapshot.listener(port).map(|l| l.kind);
    match kind {
        // Boxed here and below: a spawned task's future is as large as its largest state, and
        // each connection kind's state machine is large (the TLS handshake's most of all).
        Some(ListenerKind::Tls) => {
            // The handshake's box is freed before the HTTP connection's life begins.
            let Some(http) = Box::pin(crate::tls::serve(stream, peer, port, shared.clone(), phase.clone())).await
            else {
                return;
            };
            Box::pin(serve_http(http.stream, http.h2, Arc::new(http.info), shared, phase)).await;
            return;
        }
        Some(ListenerKind::Tcp) => return Box::pin(serve_tcp(stream, peer, port, shared, phase)).await,
        Some(ListenerKind::Http) | None => {}
    }
    let sniffed = tokio::select! {
        r = Box::pin(tokio::time::timeout(shared.opts.header_read_timeout, sniff(&mut stream))) => r,
        _ = until(&mut phase, Phase::Draining) => return,
    };
    let (is_h2, prefix) = match sniffed {
        Ok(Ok(Some(found))) => found,
        // Timed out, failed, or closed before a byte.
        _ => return,
    };
    let local = stream.local_addr().unwrap_or(peer);
    let info = Arc::new(ConnInfo::new(peer, local, port, phase, None));
    serve_plain(Prefixed::new(prefix, stream), is_h2, info, open).await;
}

/// A plaintext HTTP connection, until it closes or parks (then it waits in the lot).
async fn serve_plain(stream: Prefixed<TcpStream>, h2: bool, info: Arc<ConnInfo>, open: OpenConn) {
    let shared = open.slot.shared().clone();
    let phase = info.phase.clone();
    if let Some(idle) = Box::pin(serve_http(stream, h2, info.clone(), shared.clone(), phase)).await {
        shared.lot.park(idle, info, open);
    }
}

/// A parked HTTP/1 connection whose client sent its next bytes: served again in a new task.
pub(crate) async fn resume(socket: std::net::TcpStream, info: Arc<ConnInfo>, open: OpenConn) {
    match TcpStream::from_std(socket) {
        Ok(stream) => serve_plain(Prefixed::new(bytes::Bytes::new(), stream), false, info, open).await,
        Err(e) => tracing::debug!(error = %e, "a parked connection could not resume"),
    }
}

/// A connection on a TCP listener: relayed by the port's first matching TCP route.
async fn serve_tcp(stream: TcpStream, peer: SocketAddr, port: u32, shared: Arc<Shared>, phase: watch::Receiver<Phase>) {
    let local = stream.local_addr().unwrap_or(peer);
    let mut log = TcpGuard::new(shared.clone(), TcpGuard::record(peer, local, port, None));
    let state = shared.state.load_full();
    let dests = state.snapshot.listener(port).and_then(|l| tcp::tcp_route(&l.tcp_routes, port));
    tcp::proxy(&shared, &state, dests, None, stream, bytes::Bytes::new(), &mut log, phase).await;
}
