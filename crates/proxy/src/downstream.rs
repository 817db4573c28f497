//! What every downstream connection shares, whatever its listener: its facts ([`ConnInfo`],
//! [`TlsInfo`]), its place in the drain ([`Phase`], [`until`]) and the graceful drive of a hyper
//! connection ([`drive`]). Kept apart so the listener, TLS, TCP and HTTP modules depend on this
//! one instead of on each other.

use crate::guard::ParkDelay;
use crate::headers::ClientIp;
use crate::server::ProxyService;
use futures_util::task::AtomicWaker;
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

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

/// Per-connection facts the request handler needs.
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// The peer's address with its text (`x-forwarded-for`, `x-envoy-external-address`),
    /// formatted once per connection rather than once per request.
    pub(crate) client: ClientIp,
    pub(crate) local: SocketAddr,
    pub(crate) gateway_port: u32,
    /// For upgraded tunnels, which outlive the HTTP connection but not the drain.
    pub(crate) phase: watch::Receiver<Phase>,
    /// Set on connections whose TLS we terminated (boxed: a plaintext connection, parked most
    /// of its life, keeps this struct and need not keep room for it).
    pub(crate) tls: Option<Box<TlsInfo>>,
    /// HTTP/1 requests in flight, so an idle connection can park without hyper's buffers.
    pub(crate) requests: Requests,
    /// How long this HTTP/1 connection must be quiet to park.
    pub(crate) park_delay: ParkDelay,
}

/// Requests on an HTTP/1 connection that hyper handed to the service, and those whose response
/// body hyper has let go of (all of it is in hyper's write buffer, or the exchange failed). Equal
/// counts and a quiet socket mean hyper is only waiting for the next request head: the guard
/// may then park the connection (see `guard`). Only the connection's own task touches them.
#[derive(Default)]
pub(crate) struct Requests {
    begun: AtomicU32,
    answered: AtomicU32,
    /// The guard's reader, woken when the last request in flight is answered: hyper is then
    /// already waiting on a read, and only the guard's timers can park the connection.
    idle_waker: AtomicWaker,
}

impl Requests {
    pub(crate) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
    }

    /// How many have begun so far.
    pub(crate) fn begun(&self) -> u32 {
        self.begun.load(Ordering::Relaxed)
    }

    /// Nothing is in flight.
    pub(crate) fn settled(&self) -> bool {
        self.begun.load(Ordering::Relaxed) == self.answered.load(Ordering::Relaxed)
    }

    /// Wake `waker` when the requests in flight are answered.
    pub(crate) fn wake_when_settled(&self, waker: &std::task::Waker) {
        self.idle_waker.register(waker);
    }
}

/// Carried by a response body: counts its request answered when hyper drops it.
pub(crate) struct Answered(pub(crate) Arc<ConnInfo>);

impl Drop for Answered {
    fn drop(&mut self) {
        let r = &self.0.requests;
        r.answered.fetch_add(1, Ordering::Relaxed);
        if r.settled() {
            r.idle_waker.wake();
        }
    }
}

impl ConnInfo {
    pub(crate) fn new(
        peer: SocketAddr,
        local: SocketAddr,
        gateway_port: u32,
        phase: watch::Receiver<Phase>,
        tls: Option<TlsInfo>,
    ) -> Self {
        let client = ClientIp::new(peer.ip());
        ConnInfo {
            peer,
            client,
            local,
            gateway_port,
            phase,
            tls: tls.map(Box::new),
            requests: Requests::default(),
            park_delay: ParkDelay::default(),
        }
    }

    /// The scheme requests on this connection arrived with (route matching, redirects).
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// What the HTTP service needs to know about a terminated TLS connection.
pub(crate) struct TlsInfo {
    /// The SNI the client sent (it chose the server block, hence the route table).
    pub(crate) sni: Option<Arc<str>>,
    /// The verified client certificate, in XFCC form (MUTUAL / OPTIONAL_MUTUAL with a cert).
    pub(crate) xfcc: Option<HeaderValue>,
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

impl<S> Graceful for http2::Connection<TokioIo<S>, ProxyService, crate::streams::StreamExec>
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
pub(crate) async fn drive_until<C: Graceful>(
    mut conn: Pin<&mut C>,
    phase: &mut watch::Receiver<Phase>,
    stop: Option<&Notify>,
) {
    enum Signal {
        Stop,
        /// The phase changed (`false`: the proxy is gone without a drain).
        Phase(bool),
    }
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
        // The signals are rare; the connection wakes several times per request.
        let signal = crate::woken::WokenOnly::new(async {
            tokio::select! {
                () = stopped(stop), if !shutting_down => Signal::Stop,
                changed = phase.changed() => Signal::Phase(changed.is_ok()),
            }
        });
        let signal = tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            signal = signal => signal,
        };
        match signal {
            Signal::Stop => {
                shutting_down = true;
                conn.as_mut().begin_graceful_shutdown();
            }
            Signal::Phase(true) => {}
            Signal::Phase(false) => {
                // The proxy is gone without a drain: let the connection finish by itself.
                let _ = conn.as_mut().await;
                return;
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
