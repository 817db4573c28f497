//! How the binary configures the data plane.

use crate::log::{AccessLogSink, NoopSink};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

/// Data-plane options. Build with struct update syntax: `ProxyOptions { bind, ..Default::default() }`.
#[derive(Clone)]
pub struct ProxyOptions {
    /// Address every listener binds (`--bind`, default `0.0.0.0`).
    pub bind: IpAddr,
    /// Gateway port → local port (`--port-map`, Istio's Service port → targetPort). Ports not in
    /// the map bind their own number. Local port `0` asks the OS for one (tests).
    pub port_map: HashMap<u32, u16>,
    /// How long `shutdown()` (and a removed port's drain) waits for in-flight requests.
    pub drain_timeout: Duration,
    /// A client must send a complete request head within this time, or its connection is closed
    /// (slowloris). Also bounds the wait for the first bytes of a connection and, for HTTP/1
    /// keep-alive connections, the idle time between requests.
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) accepted: HTTP/1 → 431, HTTP/2 → the
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` we announce. Envoy's default is 60 KiB.
    pub max_request_headers_bytes: usize,
    /// Most request headers accepted (Envoy's default is 100) → 431 past it, HTTP/1 and HTTP/2.
    pub max_request_headers: usize,
    /// Longest request target (HTTP/2 `:path`) accepted → 414 past it.
    pub max_uri_length: usize,
    /// Serve HTTP/1.0 requests. Off by default, as Istio programs Envoy (`accept_http_10` is
    /// set only with `PILOT_HTTP10` or the proxy's `HTTP10` metadata): they get 426.
    pub accept_http10: bool,
    /// A downstream connection with no bytes either way for this long is shut down gracefully
    /// (HTTP/1 closed when idle, HTTP/2 GOAWAY). Envoy's default connection idle timeout: 1 h.
    pub idle_timeout: Duration,
    /// A downstream connection that makes no progress for this long while the client owes
    /// request body bytes (slow POST) or our writes are blocked (slow reader) is closed.
    /// Envoy's default stream idle timeout: 5 min.
    pub stream_idle_timeout: Duration,
    /// Most downstream connections open at once, over all listeners (Envoy's overload manager
    /// `global_downstream_max_connections`); above it new connections are closed at once and
    /// counted. `None`: no limit.
    pub max_connections: Option<usize>,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` announced to HTTP/2 clients (Envoy's edge advice: 100).
    pub h2_max_concurrent_streams: u32,
    /// Istio's `meshConfig.pathNormalization` (default `BASE`, as Istio's).
    pub path_normalization: crate::path::PathNormalization,
    /// How often DNS endpoints are re-resolved (in the background, off the request path).
    pub dns_refresh: Duration,
    /// Idle keep-alive connections kept per upstream endpoint (HTTP/1).
    pub max_idle_per_endpoint: usize,
    /// Seed for weighted picks, load balancing and generated request ids (tests); random when `None`.
    pub rng_seed: Option<u64>,
    /// A TLS client must complete its ClientHello and handshake within this time.
    pub tls_handshake_timeout: Duration,
    /// How often certificate files are re-read (a changed file is used by new handshakes).
    pub tls_refresh_interval: Duration,
    /// A proxied TCP connection with no bytes either way for this long is closed (Istio's
    /// default TCP idle timeout is 1 h).
    pub tcp_idle_timeout: Duration,
    /// Receives one record per finished request (access log, metrics). No-op by default.
    pub access_log: Arc<dyn AccessLogSink>,
    /// Tracing (server span per request, client span per upstream try); off when `None`. The
    /// finished trace is in [`RequestRecord::trace`](crate::RequestRecord) for the sink to export.
    pub tracer: Option<portico_telemetry::Tracer>,
    /// Portico's own gauges and counters the data plane keeps (downstream connections); `None`
    /// counts nothing. Istio's request metrics go through `access_log`.
    pub telemetry: Option<portico_telemetry::Telemetry>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port_map: HashMap::new(),
            drain_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            max_request_headers_bytes: 60 * 1024,
            max_request_headers: 100,
            max_uri_length: 16 * 1024,
            accept_http10: false,
            idle_timeout: Duration::from_secs(3600),
            stream_idle_timeout: Duration::from_secs(300),
            max_connections: None,
            h2_max_concurrent_streams: 100,
            path_normalization: crate::path::PathNormalization::Base,
            dns_refresh: Duration::from_secs(5),
            max_idle_per_endpoint: 256,
            rng_seed: None,
            tls_handshake_timeout: Duration::from_secs(10),
            tls_refresh_interval: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(3600),
            access_log: Arc::new(NoopSink),
            tracer: None,
            telemetry: None,
        }
    }
}

impl fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("bind", &self.bind)
            .field("port_map", &self.port_map)
            .field("drain_timeout", &self.drain_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_request_headers_bytes", &self.max_request_headers_bytes)
            .field("max_request_headers", &self.max_request_headers)
            .field("max_uri_length", &self.max_uri_length)
            .field("accept_http10", &self.accept_http10)
            .field("idle_timeout", &self.idle_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("h2_max_concurrent_streams", &self.h2_max_concurrent_streams)
            .field("path_normalization", &self.path_normalization)
            .field("dns_refresh", &self.dns_refresh)
            .field("max_idle_per_endpoint", &self.max_idle_per_endpoint)
            .field("rng_seed", &self.rng_seed)
            .field("tls_handshake_timeout", &self.tls_handshake_timeout)
            .field("tls_refresh_interval", &self.tls_refresh_interval)
            .field("tcp_idle_timeout", &self.tcp_idle_timeout)
            .field("tracing", &self.tracer.is_some())
            .finish_non_exhaustive()
    }
}
