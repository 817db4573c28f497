//! L4 proxying: TCP servers (`TCP`, `MONGO`, `MYSQL`, `REDIS` as opaque streams), TCP routes
//! behind terminated TLS, and TLS passthrough. One weighted destination per connection, a
//! connect timeout, an idle timeout, half-close both ways, bytes counted both ways.

use crate::downstream::{until, Phase};
use crate::log::TcpRecord;
use crate::state::{Shared, State};
use crate::woken::WokenOnly;
use crate::ResponseFlags;
use bytes::Bytes;
use portico_model::snapshot::{TcpRoute, WeightedClusters};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The first TCP route for `port` (Istio: first match wins; a route without ports matches all).
pub(crate) fn tcp_route(routes: &[Arc<TcpRoute>], port: u32) -> Option<&WeightedClusters> {
    routes.iter().find(|r| r.ports.is_empty() || r.ports.contains(&port)).map(|r| &r.destinations)
}

/// The TCP connection's lifetime guard: holds its one [`TcpRecord`] being filled and reports it
/// once, when dropped (the connection is closed).
pub(crate) struct TcpGuard {
    shared: Arc<Shared>,
    started: Instant,
    pub(crate) record: TcpRecord,
}

impl TcpGuard {
    pub(crate) fn new(shared: Arc<Shared>, record: TcpRecord) -> TcpGuard {
        TcpGuard { shared, started: Instant::now(), record }
    }

    pub(crate) fn record(
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
        port: u32,
        sni: Option<Arc<str>>,
    ) -> TcpRecord {
        TcpRecord {
            start_time: SystemTime::now(),
            downstream_remote: peer,
            downstream_local: local,
            gateway_port: port,
            sni,
            ..TcpRecord::default()
        }
    }
}

impl Drop for TcpGuard {
    fn drop(&mut self) {
        self.record.duration = self.started.elapsed();
        self.shared.sink.log_tcp(&self.record);
    }
}

/// Relay `down` (whose first bytes `prefix` were already read) to a weighted destination of
/// `dests`, or to `cluster` directly (AUTO_PASSTHROUGH). Failures close the connection and are
/// flagged in the record.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn proxy<S>(
    shared: &Shared,
    state: &State,
    dests: Option<&WeightedClusters>,
    cluster: Option<Arc<str>>,
    down: S,
    prefix: Bytes,
    log: &mut TcpGuard,
    phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cluster = match (cluster, dests) {
        (Some(c), _) => c,
        (None, Some(wc)) => match wc.pick(shared.rng.below(wc.total_weight)) {
            Some(d) => d.cluster.clone(),
            None => {
                log.record.flags.insert(ResponseFlags::NO_CLUSTER_FOUND);
                return;
            }
        },
        (None, None) => {
            log.record.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
            return;
        }
    };
    log.record.upstream_cluster = Some(cluster.clone());
    let Some(pool) = state.upstreams.get(&cluster) else {
        log.record.flags.insert(ResponseFlags::NO_CLUSTER_FOUND);
        return;
    };
    let Some(endpoint) = pool.pick(&shared.rng, None, &[]).await else {
        log.record.flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
        return;
    };
    log.record.upstream_host = Some(endpoint.addr);
    let _active = crate::upstream::ActiveRequest::new(endpoint.clone());
    let timeout = crate::upstream::connect_timeout(&pool.def);
    let up = match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %endpoint.addr, error = %e, "TCP upstream connect failed");
            log.record.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            return;
        }
        Err(_) => {
            tracing::debug!(upstream = %endpoint.addr, "TCP upstream connect timed out");
            log.record.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
            return;
        }
    };
    crate::upstream::tune_socket(&up, pool.def.conn.tcp_keepalive.as_ref());
    log.record.upstream_local = up.local_addr().ok();
    let counters = Counters::default();
    counters.received.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    // DestinationRule connectionPool.tcp.idleTimeout, else the default (1 h); 0 disables it.
    let idle = pool.def.tcp_idle_timeout.unwrap_or(shared.opts.tcp_idle_timeout);
    let idle = (!idle.is_zero()).then_some(idle);
    let outcome = match &pool.tls {
        None => relay(down, up, prefix, idle, &counters, phase).await,
        Some(tls) => {
            // TLS origination (DestinationRule `tls`). There is no request host on a TCP route:
            // the SNI is the DestinationRule's `sni`, else the destination service's host.
            match tokio::time::timeout(timeout, tls.connect(up, &pool.def.host)).await {
                Ok(Ok(up)) => relay(down, up, prefix, idle, &counters, phase).await,
                Ok(Err(e)) => {
                    tracing::debug!(upstream = %endpoint.addr, error = %e, "TCP upstream TLS handshake failed");
                    Outcome::ConnectFailed
                }
                Err(_) => Outcome::ConnectFailed,
            }
        }
    };
    log.record.bytes_received = counters.received.load(Ordering::Relaxed);
    log.record.bytes_sent = counters.sent.load(Ordering::Relaxed);
    match outcome {
        Outcome::Done => {}
        Outcome::Idle => log.record.flags.insert(ResponseFlags::STREAM_IDLE_TIMEOUT),
        Outcome::UpstreamWriteFailed | Outcome::ConnectFailed => {
            log.record.flags.insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE)
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Client → upstream.
    pub(crate) received: AtomicU64,
    /// Upstream → client.
    pub(crate) sent: AtomicU64,
    /// Last activity, in ms since `base` (tokio's clock, so tests can pause it).
    last: AtomicU64,
}

enum Outcome {
    Done,
    Idle,
    UpstreamWriteFailed,
    /// The TLS handshake toward the upstream failed.
    ConnectFailed,
}

/// Copy both ways until both directions ended (each end's EOF becomes a write shutdown on the
/// other side: half-close), nothing moved for `idle` (`None`: no limit), or the drain closes the
/// listener.
async fn relay<D, U>(
    mut down: D,
    mut up: U,
    prefix: Bytes,
    idle: Option<std::time::Duration>,
    counters: &Counters,
    mut phase: watch::Receiver<Phase>,
) -> Outcome
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !prefix.is_empty() && up.write_all(&prefix).await.is_err() {
        return Outcome::UpstreamWriteFailed;
    }
    let base = crate::clock::now();
    // Both directions in one poll over the two whole streams: no split halves (an allocation
    // and a lock taken on every read and write) and no second future polled on every wake-up.
    let mut to_up = Direction::new(&counters.received);
    let mut to_down = Direction::new(&counters.sent);
    let both = std::future::poll_fn(|cx| {
        let a = to_up.poll(cx, &mut down, &mut up, &counters.last, base);
        let b = to_down.poll(cx, &mut up, &mut down, &counters.last, base);
        if a.is_ready() && b.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let watchdog = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            let last = base + std::time::Duration::from_millis(counters.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    // The watches are polled only when their own timer or channel fires, not at every byte.
    let watches = WokenOnly::new(async {
        tokio::select! {
            () = watchdog => Outcome::Idle,
            () = until(&mut phase, Phase::Closed) => Outcome::Done,
        }
    });
    tokio::select! {
        biased;
        () = both => Outcome::Done,
        outcome = watches => outcome,
    }
}

/// One direction of a relay: read until EOF (or an error), write each chunk whole, then shut the
/// writer down so the other side sees the half-close.
struct Direction<'a> {
    buf: Vec<u8>,
    /// What of `buf[..len]` is written already.
    pos: usize,
    len: usize,
    /// The reader ended (or a write failed): what is left is the shutdown.
    ended: bool,
    done: bool,
    count: &'a AtomicU64,
}

impl<'a> Direction<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        Direction { buf: vec![0u8; 16 * 1024], pos: 0, len: 0, ended: false, done: false, count }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        last: &AtomicU64,
        base: tokio::time::Instant,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.done {
                return Poll::Ready(());
            }
            if self.pos < self.len {
                match Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.len]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.pos += n;
                        if self.pos == self.len {
                            // This direction is the count's one writer: no read-modify-write.
                            let total = self.count.load(Ordering::Relaxed).saturating_add(self.len as u64);
                            self.count.store(total, Ordering::Relaxed);
                            let since = crate::clock::now().saturating_duration_since(base);
                            let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
                            last.store(ms, Ordering::Relaxed);
                            (self.pos, self.len) = (0, 0);
                        }
                        continue;
                    }
                    Poll::Ready(_) => {
                        (self.pos, self.len) = (0, 0);
                        self.ended = true;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.ended {
                // Done whether or not the shutdown worked: the peer is gone either way.
                return match Pin::new(&mut *w).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => {
                        self.done = true;
                        Poll::Ready(())
                    }
                };
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *r).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => self.len = read.filled().len(),
                Poll::Ready(_) => self.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_and_half_close_is_passed_on() {
        // client ⇄ (down) relay (up) ⇄ server, over in-memory pipes.
        let (client, down) = tokio::io::duplex(1024);
        let (up, mut server) = tokio::io::duplex(1024);
        let (_tx, phase) = watch::channel(Phase::Running);
        let counters = Counters::default();
        let relay = relay(down, up, Bytes::from_static(b"hello "), Some(Duration::from_secs(3600)), &counters, phase);
        let peers = async {
            let (mut cr, mut cw) = tokio::io::split(client);
            cw.write_all(b"world").await.unwrap();
            // Half-close from the client: the server sees EOF and can still answer.
            cw.shutdown().await.unwrap();
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello world");
            server.write_all(b"bye").await.unwrap();
            let mut back = [0u8; 3];
            cr.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"bye");
            // Then nothing moves; keep both ends open.
            std::future::pending::<()>().await;
        };
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            o = relay => o,
            _ = peers => unreachable!(),
        };
        assert!(matches!(outcome, Outcome::Idle));
        assert!(started.elapsed() >= Duration::from_secs(3600));
        assert_eq!(counters.received.load(Ordering::Relaxed), 5);
        assert_eq!(counters.sent.load(Ordering::Relaxed), 3);
    }
}
