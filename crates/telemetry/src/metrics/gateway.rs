//! Portico's own metrics (`portico_*`): config reloads, listeners, connections, per-cluster
//! upstream state, TLS handshakes and their failures, access-log drops. Handles are plain atomics behind an
//! `Arc`: the data plane keeps them and bumps them without any lookup.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A monotonic counter. Cheap to clone (one `Arc`); `inc` is one relaxed atomic add.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge (can go up and down). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn new() -> Gauge {
        Gauge::default()
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Increment now, decrement when the guard drops (an open connection, an active request).
    pub fn guard(&self) -> GaugeGuard {
        self.inc();
        GaugeGuard(self.clone())
    }
}

/// Decrements its gauge when dropped. See [`Gauge::guard`].
#[derive(Debug)]
#[must_use = "the gauge is decremented when the guard drops"]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a downstream TLS handshake failed: the `reason` label of
/// `portico_tls_handshake_failures_total` (a closed set, so the label stays bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailureReason {
    /// No server certificate for the SNI (or no SNI and no default).
    NoCertificate,
    /// The client offered no protocol version we accept.
    ProtocolVersion,
    /// No common cipher suite / key exchange, or another handshake_failure alert.
    HandshakeFailure,
    /// The client certificate did not verify (mutual TLS).
    BadCertificate,
    /// Mutual TLS and the client sent no certificate.
    CertificateRequired,
    /// No common ALPN protocol.
    NoApplicationProtocol,
    /// The bytes were not TLS (e.g. plain HTTP on an HTTPS port).
    InvalidMessage,
    /// The handshake did not finish in time.
    Timeout,
    /// The client closed the connection during the handshake.
    ConnectionClosed,
    Other,
}

impl TlsFailureReason {
    pub const ALL: [TlsFailureReason; 10] = [
        TlsFailureReason::NoCertificate,
        TlsFailureReason::ProtocolVersion,
        TlsFailureReason::HandshakeFailure,
        TlsFailureReason::BadCertificate,
        TlsFailureReason::CertificateRequired,
        TlsFailureReason::NoApplicationProtocol,
        TlsFailureReason::InvalidMessage,
        TlsFailureReason::Timeout,
        TlsFailureReason::ConnectionClosed,
        TlsFailureReason::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            TlsFailureReason::NoCertificate => "no_certificate",
            TlsFailureReason::ProtocolVersion => "protocol_version",
            TlsFailureReason::HandshakeFailure => "handshake_failure",
            TlsFailureReason::BadCertificate => "bad_certificate",
            TlsFailureReason::CertificateRequired => "certificate_required",
            TlsFailureReason::NoApplicationProtocol => "no_application_protocol",
            TlsFailureReason::InvalidMessage => "invalid_message",
            TlsFailureReason::Timeout => "timeout",
            TlsFailureReason::ConnectionClosed => "connection_closed",
            TlsFailureReason::Other => "other",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Gateway-wide `portico_*` metrics. Reach them with [`Metrics::gateway`](crate::Metrics::gateway).
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// `portico_config_reloads_total{result="ok"}`.
    pub config_reloads_ok: Counter,
    /// `portico_config_reloads_total{result="failed"}`.
    pub config_reloads_failed: Counter,
    /// `portico_config_generation`: the generation of the snapshot in service.
    pub config_generation: Gauge,
    /// `portico_config_last_reload_success_timestamp_seconds`, kept in milliseconds since the epoch.
    pub config_last_success_ms: Gauge,
    /// `portico_listeners`: listening sockets open.
    pub listeners: Gauge,
    /// `portico_downstream_connections_active`.
    pub downstream_connections_active: Gauge,
    /// `portico_downstream_connections_total`.
    pub downstream_connections_total: Counter,
    /// `portico_downstream_connections_overflow_total`: connections closed at accept because
    /// `--max-connections` were open (Envoy's `downstream_cx_overflow`).
    pub downstream_connections_overflow: Counter,
    /// `portico_access_log_dropped_total`: lines lost because the buffer was full (or the write
    /// failed).
    pub access_log_dropped: Counter,
    /// `portico_tracing_spans_total{result="exported"}`: spans the collector accepted.
    pub spans_exported: Counter,
    /// `portico_tracing_spans_total{result="dropped"}`: spans lost because the export queue was
    /// full or the collector failed (never waited for on the request path).
    pub spans_dropped: Counter,
    pub(crate) tls_failures: [Counter; TlsFailureReason::ALL.len()],
    /// `portico_tls_handshakes_total{session="full"}` (Envoy's `ssl.handshake`, less the reused).
    pub tls_handshakes_full: Counter,
    /// `portico_tls_handshakes_total{session="resumed"}` (Envoy's `ssl.session_reused`).
    pub tls_handshakes_resumed: Counter,
}

impl GatewayStats {
    /// Count one failed downstream TLS handshake.
    pub fn tls_handshake_failed(&self, reason: TlsFailureReason) {
        self.tls_failures[reason.index()].inc();
    }

    /// Count one completed downstream TLS handshake, resumed or full.
    pub fn tls_handshake_done(&self, resumed: bool) {
        if resumed { &self.tls_handshakes_resumed } else { &self.tls_handshakes_full }.inc();
    }

    pub fn tls_handshake_failures(&self, reason: TlsFailureReason) -> u64 {
        self.tls_failures[reason.index()].get()
    }

    /// A downstream connection was accepted: counts it and keeps it in the active gauge until the
    /// guard drops.
    pub fn downstream_connection(&self) -> GaugeGuard {
        self.downstream_connections_total.inc();
        self.downstream_connections_active.guard()
    }
}

/// A circuit-breaker resource (DestinationRule `connectionPool` limit): the `resource` label of
/// `portico_upstream_circuit_breaker_overflows_total`. Envoy's counters for each:
/// `upstream_cx_overflow`, `upstream_rq_pending_overflow`, (HTTP/2 `maxRequests` is also counted
/// as `upstream_rq_pending_overflow` by Envoy; we keep it apart), `upstream_rq_retry_overflow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerResource {
    /// `maxConnections`.
    Connections,
    /// `http1MaxPendingRequests`.
    Pending,
    /// `http2MaxRequests`.
    Requests,
    /// `maxRetries` (active retries).
    Retries,
}

impl BreakerResource {
    pub const ALL: [BreakerResource; 4] =
        [BreakerResource::Connections, BreakerResource::Pending, BreakerResource::Requests, BreakerResource::Retries];

    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerResource::Connections => "connections",
            BreakerResource::Pending => "pending",
            BreakerResource::Requests => "requests",
            BreakerResource::Retries => "retries",
        }
    }
}

/// Per-cluster `portico_upstream_*` metrics (`cluster_name` label). Get the handle once per
/// cluster with [`Metrics::cluster`](crate::Metrics::cluster) and keep it with the cluster's
/// state; drop the series of removed clusters with
/// [`Metrics::remove_clusters`](crate::Metrics::remove_clusters).
#[derive(Debug)]
pub struct ClusterStats {
    pub(crate) name: Box<str>,
    /// `portico_upstream_connections_active`: connections open in the pool (busy or idle).
    pub connections_active: Gauge,
    /// `portico_upstream_connections_idle`: open connections waiting in the pool for a request.
    pub connections_idle: Gauge,
    /// `portico_upstream_connections_total`: connections ever opened (Envoy's
    /// `upstream_cx_total`: counted when the connection is started).
    pub connections_total: Counter,
    /// `portico_upstream_requests_active`: requests in flight to the cluster.
    pub requests_active: Gauge,
    /// `portico_upstream_circuit_breaker_overflows_total{resource}`: requests, connections or
    /// retries refused by a connection-pool limit.
    overflows: [Counter; BreakerResource::ALL.len()],
    /// `portico_upstream_outlier_ejections_active`: endpoints ejected now.
    pub outlier_ejections_active: Gauge,
    /// `portico_upstream_outlier_ejections_total`: ejections ever made.
    pub outlier_ejections_total: Counter,
    /// `portico_upstream_retries_total`: retries attempted (Envoy's `upstream_rq_retry`).
    pub retries: Counter,
    /// `portico_upstream_retry_successes_total`: requests that succeeded after a retry (Envoy's
    /// `upstream_rq_retry_success`).
    pub retry_successes: Counter,
}

impl ClusterStats {
    pub(crate) fn new(name: &str) -> ClusterStats {
        ClusterStats {
            name: name.into(),
            connections_active: Gauge::new(),
            connections_idle: Gauge::new(),
            connections_total: Counter::new(),
            requests_active: Gauge::new(),
            overflows: Default::default(),
            outlier_ejections_active: Gauge::new(),
            outlier_ejections_total: Counter::new(),
            retries: Counter::new(),
            retry_successes: Counter::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection-pool limit refused something.
    pub fn overflow(&self, resource: BreakerResource) {
        self.overflows[resource as usize].inc();
    }

    pub fn overflows(&self, resource: BreakerResource) -> u64 {
        self.overflows[resource as usize].get()
    }
}
