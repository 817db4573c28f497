//! What requests read: the shared, immutable-per-request state behind one arc-swap.

use crate::log::AccessLogSink;
use crate::options::ProxyOptions;
use crate::rng::FastRng;
use crate::streams::StreamExec;
use crate::upstream::Upstreams;
use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use portico_model::snapshot::{ListenerKind, RouteTable, Snapshot};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// One applied configuration: the snapshot and the pools built for it.
pub(crate) struct State {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) upstreams: Upstreams,
    /// Route table of each plaintext HTTP listener, by Gateway port.
    http: Vec<(u32, Arc<RouteTable>)>,
    /// TLS configs of this snapshot's terminated servers (swapped when certificate files change).
    pub(crate) tls: ArcSwap<crate::tls::TlsStore>,
}

impl State {
    pub(crate) fn empty() -> State {
        State {
            snapshot: Arc::new(Snapshot::default()),
            upstreams: Upstreams::default(),
            http: Vec::new(),
            tls: ArcSwap::from_pointee(crate::tls::TlsStore::default()),
        }
    }

    pub(crate) fn new(snapshot: Arc<Snapshot>, upstreams: Upstreams) -> State {
        let http = snapshot
            .listeners
            .iter()
            .filter(|l| l.kind == ListenerKind::Http)
            .filter_map(|l| l.http.clone().map(|t| (l.port, t)))
            .collect();
        State { snapshot, upstreams, http, tls: ArcSwap::from_pointee(crate::tls::TlsStore::default()) }
    }

    /// The route table for requests on `conn`: its TLS server's (chosen by SNI), or the port's.
    pub(crate) fn route_table_for(&self, conn: &crate::downstream::ConnInfo) -> Option<&RouteTable> {
        match &conn.tls {
            Some(tls) => crate::tls::route_table(self, conn.gateway_port, tls),
            None => self.route_table(conn.gateway_port),
        }
    }

    pub(crate) fn route_table(&self, port: u32) -> Option<&RouteTable> {
        self.http.iter().find(|(p, _)| *p == port).map(|(_, t)| &**t)
    }
}

/// Shared by the control surface, listeners and every request.
pub(crate) struct Shared {
    pub(crate) opts: ProxyOptions,
    pub(crate) sink: Arc<dyn AccessLogSink>,
    pub(crate) state: ArcSwap<State>,
    pub(crate) rng: FastRng,
    pub(crate) h1: http1::Builder,
    /// The one crypto provider (aws-lc-rs), built once and passed explicitly.
    pub(crate) crypto: Arc<rustls::crypto::CryptoProvider>,
    /// `true` once shutting down (stops background tasks).
    pub(crate) stop: watch::Sender<bool>,
    /// Downstream connections open now (for `max_connections`).
    pub(crate) connections: AtomicUsize,
    /// HTTP/1 connections parked idle in their own tasks now (TLS; plaintext ones wait in `lot`).
    pub(crate) parked: AtomicUsize,
    /// Where idle plaintext HTTP/1 connections wait without a task of their own.
    pub(crate) lot: crate::park::ParkingLot,
    /// Request records carry the URI and the headers only logs and traces read.
    pub(crate) record_details: bool,
}

impl Shared {
    pub(crate) fn new(opts: ProxyOptions) -> Shared {
        let mut h1 = http1::Builder::new();
        // The head read timeout is the guard's (`guard::Timeouts`): hyper's boxed a timer per
        // request and forced an extra read after each, and closed a slow head without a 408.
        h1.header_read_timeout(None).max_header_size(opts.max_request_headers_bytes).keep_alive(true).half_close(false);
        if opts.max_request_headers != 100 {
            // hyper's default is 100 (on the stack); another value allocates per request.
            h1.max_headers(opts.max_request_headers);
        }
        let stop = watch::Sender::new(false);
        Shared {
            lot: crate::park::ParkingLot::new(stop.subscribe()),
            record_details: opts.access_log.wants_request_details() || opts.tracer.is_some(),
            sink: opts.access_log.clone(),
            rng: FastRng::new(opts.rng_seed),
            state: ArcSwap::from_pointee(State::empty()),
            h1,
            stop,
            connections: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            crypto: Arc::new(crate::tls::server_provider()),
            opts,
        }
    }

    /// The HTTP/2 server for one connection, its streams run in the connection's task
    /// (`crate::streams`). Envoy's edge settings: bounded streams and windows; h2's own flood
    /// limits made explicit (streams reset before they were accepted, and streams we reset for
    /// protocol errors).
    pub(crate) fn h2(&self, streams: StreamExec) -> http2::Builder<StreamExec> {
        let mut h2 = http2::Builder::new(streams);
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.opts.max_request_headers_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(self.opts.h2_max_concurrent_streams)
            .initial_stream_window_size(64 * 1024)
            .initial_connection_window_size(1024 * 1024)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024)
            .max_send_buf_size(400 * 1024);
        h2
    }
}

impl Shared {
    /// Limits of the HTTP/1 head check.
    pub(crate) fn h1_limits(&self) -> crate::guard::H1Limits {
        crate::guard::H1Limits {
            max_uri: self.opts.max_uri_length,
            max_head: self.opts.max_request_headers_bytes,
            max_headers: self.opts.max_request_headers,
        }
    }

    pub(crate) fn timeouts(&self) -> crate::guard::Timeouts {
        crate::guard::Timeouts {
            idle: self.opts.idle_timeout,
            stream_idle: self.opts.stream_idle_timeout,
            header_read: self.opts.header_read_timeout,
        }
    }
}

/// One downstream connection counted against `max_connections`, released on drop.
pub(crate) struct ConnSlot(Arc<Shared>);

impl ConnSlot {
    /// `None` when the limit is reached (the caller refuses the connection).
    pub(crate) fn take(shared: &Arc<Shared>) -> Option<ConnSlot> {
        let prev = shared.connections.fetch_add(1, Ordering::AcqRel);
        if shared.opts.max_connections.is_some_and(|max| prev >= max) {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnSlot(shared.clone()))
    }
}

impl ConnSlot {
    /// The proxy the connection belongs to (a parked connection has no task that holds it).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}
