//! The parking lot: idle plaintext HTTP/1 keep-alive connections wait here as bare sockets.
//!
//! A connection quiet between requests (see `guard`) gives up hyper, its buffers, its task and
//! its registration with the runtime: what is left is the socket in this lot's own epoll set, a
//! deadline and the connection's facts, about a hundred bytes. One task per proxy watches the
//! set. When a parked client sends its next bytes the socket gets a fresh task and a fresh
//! hyper connection; when it closes, stays quiet past its deadline (idle timeout, or the header
//! read timeout between requests), or its listener drains, the socket is closed here. nginx keeps
//! an idle keep-alive connection in about 0.5 KiB the same way: buffers freed, only the socket
//! and its event left.

use crate::downstream::{ConnInfo, Phase};
use crate::state::ConnSlot;
use mio::{Interest, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// An idle connection's socket as the guard let go of it, and when its quiet must end.
pub(crate) struct IdleSocket {
    pub(crate) socket: std::net::TcpStream,
    pub(crate) deadline: Instant,
}

/// What keeps a downstream connection counted while it is open, wherever it waits: its place
/// under `max_connections` and its count in the active-connections gauge.
pub(crate) struct OpenConn {
    pub(crate) slot: ConnSlot,
    pub(crate) _gauge: Option<portico_telemetry::GaugeGuard>,
}

/// A connection waiting in the lot.
struct Parked {
    socket: mio::net::TcpStream,
    deadline: Instant,
    since: Instant,
    conn: Arc<ConnInfo>,
    open: OpenConn,
}

/// A place in the lot. `generation` tells a socket's events from those of an earlier one that
/// had the same place.
#[derive(Default)]
struct Place {
    generation: u32,
    parked: Option<Parked>,
}

#[derive(Default)]
struct Lot {
    places: Vec<Place>,
    free: Vec<u32>,
    /// Deadlines by token; stale ones (of sockets that woke) are skipped, and dropped in a sweep
    /// when they outnumber the parked.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Parked now.
    len: usize,
    /// The epoll set, until the lot's task takes it (at the first park).
    poll: Option<mio::Poll>,
    stop: Option<watch::Receiver<bool>>,
    /// The task ended (shutdown): nothing parks any more.
    closed: bool,
}

fn token(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

fn split(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

impl Lot {
    fn take(&mut self, token: u64) -> Option<Parked> {
        let (index, generation) = split(token);
        let place = self.places.get_mut(index).filter(|p| p.generation == generation)?;
        let parked = place.parked.take()?;
        place.generation = place.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Some(parked)
    }

    /// Every parked connection `pick` chooses, taken out.
    fn take_all(&mut self, mut pick: impl FnMut(&Parked) -> bool) -> Vec<Parked> {
        let tokens: Vec<u64> = (self.places.iter().enumerate())
            .filter(|(_, p)| p.parked.as_ref().is_some_and(&mut pick))
            .map(|(i, p)| token(i as u32, p.generation))
            .collect();
        tokens.into_iter().filter_map(|t| self.take(t)).collect()
    }

    /// The parked connections whose deadline passed, taken out.
    fn expired(&mut self, now: Instant) -> Vec<Parked> {
        let mut out = Vec::new();
        while let Some(Reverse((at, t))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let (index, generation) = split(t);
            let due = self.places.get(index).is_some_and(|p| {
                p.generation == generation && p.parked.as_ref().is_some_and(|parked| parked.deadline <= now)
            });
            if due {
                out.extend(self.take(t));
            }
        }
        out
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        if self.deadlines.len() > 2 * self.len + 64 {
            let places = &self.places;
            self.deadlines.retain(|Reverse((_, t))| {
                let (index, generation) = split(*t);
                places[index].generation == generation && places[index].parked.is_some()
            });
        }
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }
}

/// The lot of one proxy.
pub(crate) struct ParkingLot {
    lot: Arc<Shelter>,
}

/// What the lot's task and the connections that park share.
struct Shelter {
    lot: Mutex<Lot>,
    registry: Option<mio::Registry>,
    /// A deadline earlier than the task's next wake-up arrived.
    sooner: Notify,
}

impl ParkingLot {
    /// `stop` ends the lot's task (closing what is parked). Without an epoll set of its own (the
    /// system refused one) the lot stays closed and connections wait in their own tasks.
    pub(crate) fn new(stop: watch::Receiver<bool>) -> ParkingLot {
        let poll = mio::Poll::new().map_err(|e| tracing::warn!(error = %e, "no parking lot for idle connections"));
        let registry = poll.as_ref().ok().and_then(|p| p.registry().try_clone().ok());
        let lot = Lot {
            closed: registry.is_none(),
            poll: poll.ok().filter(|_| registry.is_some()),
            stop: Some(stop),
            ..Lot::default()
        };
        ParkingLot { lot: Arc::new(Shelter { lot: Mutex::new(lot), registry, sooner: Notify::new() }) }
    }

    /// Connections parked here now.
    pub(crate) fn len(&self) -> usize {
        self.lot.lock().len
    }

    /// Whether a connection can park here now.
    pub(crate) fn is_open(&self) -> bool {
        !self.lot.lock().closed
    }

    /// Park an idle connection until its client's next bytes. Closed at once instead when its
    /// listener is draining or the lot is closed.
    pub(crate) fn park(&self, idle: IdleSocket, conn: Arc<ConnInfo>, open: OpenConn) {
        let mut socket = mio::net::TcpStream::from_std(idle.socket);
        let Some(registry) = self.lot.registry.as_ref() else { return };
        let mut lot = self.lot.lock();
        // Checked under the lock that `evict` takes after the listener's phase changed: a
        // connection either sees the drain here or is found by the eviction.
        if lot.closed || *conn.phase.borrow() != Phase::Running {
            return;
        }
        if let Some(poll) = lot.poll.take() {
            let stop = lot.stop.take().unwrap_or_else(|| watch::channel(true).1);
            tokio::spawn(run(self.lot.clone(), poll, stop));
        }
        let index = lot.free.pop().unwrap_or_else(|| {
            lot.places.push(Place::default());
            (lot.places.len() - 1) as u32
        });
        let place = &mut lot.places[index as usize];
        let t = token(index, place.generation);
        // Registered under the lock: the socket's event is handled only once the lock is let go,
        // when the socket is in its place to be found. Added with data already waiting, epoll
        // reports it at once.
        if let Err(e) = registry.register(&mut socket, Token(t as usize), Interest::READABLE) {
            tracing::debug!(error = %e, "idle connection not parked: closed");
            lot.free.push(index);
            return;
        }
        place.parked = Some(Parked { socket, deadline: idle.deadline, since: crate::clock::now(), conn, open });
        lot.len += 1;
        let sooner = lot.deadlines.peek().is_none_or(|Reverse((at, _))| idle.deadline < *at);
        lot.deadlines.push(Reverse((idle.deadline, t)));
        drop(lot);
        if sooner {
            self.lot.sooner.notify_one();
        }
    }

    /// Close the parked connections of the listener whose phase `phase` follows (it stopped
    /// accepting: they have nothing in flight to finish).
    pub(crate) fn evict(&self, phase: &watch::Receiver<Phase>) {
        let evicted = self.lot.lock().take_all(|p| p.conn.phase.same_channel(phase));
        for p in evicted {
            self.lot.close(p);
        }
    }
}

impl Shelter {
    fn lock(&self) -> MutexGuard<'_, Lot> {
        self.lot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Out of the epoll set and closed (the client sent nothing since its last response, so
    /// nothing is lost).
    fn close(&self, mut p: Parked) {
        if let Some(registry) = &self.registry {
            let _ = registry.deregister(&mut p.socket);
        }
    }

    /// The client sent something (or closed): back to a task of its own, or closed.
    fn wake(&self, token: u64) {
        let Some(mut p) = self.lock().take(token) else { return };
        if let Some(registry) = &self.registry {
            let _ = registry.deregister(&mut p.socket);
        }
        let mut first = [0u8; 1];
        match p.socket.peek(&mut first) {
            // Closed by the client, or broken: nothing to serve.
            Ok(0) => return,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
            _ => {}
        }
        let Parked { socket, conn, open, since, .. } = p;
        conn.park_delay.woke_after(since.elapsed());
        tokio::spawn(crate::clock::per_poll(crate::listener::resume(socket.into(), conn, open)));
    }
}

/// The lot's epoll set, owned by the runtime's registration of it (so its descriptor lives as long
/// as the registration and never changes: what `AsyncFd` needs to be sound).
struct Watched(mio::Poll);

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The lot's task: wakes parked sockets that became readable, closes those past their deadline,
/// and at shutdown closes the rest.
async fn run(lot: Arc<Shelter>, poll: mio::Poll, mut stop: watch::Receiver<bool>) {
    // tokio 1.54 deprecates its safe constructors (a borrowed descriptor could close under it);
    // this one owns its descriptor, and the constructor that says so is `unsafe`, which this
    // crate forbids.
    #[allow(deprecated)]
    let watched = AsyncFd::with_interest(Watched(poll), tokio::io::Interest::READABLE);
    match watched {
        Ok(mut watched) => {
            let mut events = mio::Events::with_capacity(256);
            loop {
                let next = lot.lock().next_deadline();
                let deadline = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    readable = watched.readable_mut() => {
                        let Ok(mut guard) = readable else { break };
                        loop {
                            match guard.get_inner_mut().0.poll(&mut events, Some(Duration::ZERO)) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                Err(e) => {
                                    tracing::warn!(error = %e, "parking lot: epoll failed");
                                    guard.clear_ready();
                                    break;
                                }
                            }
                            if events.is_empty() {
                                guard.clear_ready();
                                break;
                            }
                            for event in events.iter() {
                                lot.wake(event.token().0 as u64);
                            }
                        }
                    }
                    () = deadline => {
                        let expired = lot.lock().expired(Instant::now());
                        for p in expired {
                            lot.close(p);
                        }
                    }
                    () = lot.sooner.notified() => {}
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "parking lot cannot watch its sockets"),
    }
    let rest = {
        let mut l = lot.lock();
        l.closed = true;
        l.take_all(|_| true)
    };
    for p in rest {
        lot.close(p);
    }
}
