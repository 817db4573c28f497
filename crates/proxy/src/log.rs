//! The hook telemetry plugs into: one [`RequestRecord`] per finished request, handed to an
//! [`AccessLogSink`]. The proxy builds no metrics or log lines itself.

use crate::upstream::ActiveRequest;
use crate::ResponseFlags;
use http::{HeaderValue, Method, Uri, Version};
use portico_model::snapshot::Route;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Receives a record when a request is finished (its response body ended, failed, or the client
/// went away). Called on the data-plane threads: implementations must be quick and must not block
/// (hand the record to a channel or bump atomics).
pub trait AccessLogSink: Send + Sync + 'static {
    fn log(&self, record: &RequestRecord);

    /// One record per proxied TCP connection (TCP servers, TLS passthrough, TLS-terminated TCP),
    /// when the connection is closed.
    fn log_tcp(&self, _record: &TcpRecord) {}
}

/// What happened to one proxied TCP connection (Envoy's TCP proxy access-log fields).
#[derive(Clone, Debug)]
pub struct TcpRecord {
    pub start_time: SystemTime,
    pub duration: Duration,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    /// The Gateway port the connection arrived on.
    pub gateway_port: u32,
    /// The SNI the client sent (TLS listeners).
    pub sni: Option<Arc<str>>,
    /// The cluster the connection was routed to.
    pub upstream_cluster: Option<Arc<str>>,
    /// The endpoint address it was relayed to.
    pub upstream_host: Option<SocketAddr>,
    /// The local address of the upstream connection (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub upstream_local: Option<SocketAddr>,
    /// Bytes received from the client (including a passed-through ClientHello).
    pub bytes_received: u64,
    /// Bytes sent to the client.
    pub bytes_sent: u64,
    /// `NR` no route, `UF` connect failure, `UH` no endpoint, `NC` no cluster, `SI` idle timeout…
    pub flags: ResponseFlags,
}

/// The default sink: drops every record.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl AccessLogSink for NoopSink {
    fn log(&self, _record: &RequestRecord) {}
}

/// What happened to one request (Envoy access-log fields).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub start_time: SystemTime,
    pub duration: Duration,
    pub downstream_remote: SocketAddr,
    /// The local address the client connected to.
    pub downstream_local: SocketAddr,
    /// The Gateway port the request arrived on.
    pub gateway_port: u32,
    pub method: Method,
    /// The request URI as the client sent it (origin-form for HTTP/1, path for HTTP/2).
    pub uri: Uri,
    /// `Host` / `:authority` as the client sent it.
    pub authority: Option<HeaderValue>,
    pub protocol: Version,
    /// Response status sent (0 when the client went away before any response).
    pub status: u16,
    pub flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%`: `via_upstream`, `route_not_found`, `cluster_not_found`,
    /// `no_healthy_upstream`, `upstream_response_timeout`, `direct_response`, `redirect`,
    /// `upstream_reset_before_response_started{…}`, `upstream_reset_after_response_started{…}`, …
    pub details: &'static str,
    /// The route that matched (its name, VirtualService and index).
    pub route: Option<Arc<Route>>,
    /// The cluster the request was routed to.
    pub upstream_cluster: Option<Arc<str>>,
    /// The endpoint address the request was sent to.
    pub upstream_host: Option<SocketAddr>,
    /// The local address of the upstream connection that carried the response
    /// (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub upstream_local: Option<SocketAddr>,
    /// The SNI the client sent, on a TLS listener (`%REQUESTED_SERVER_NAME%`).
    pub sni: Option<Arc<str>>,
    /// Time from the start of the request to the upstream's response headers.
    pub upstream_service_time: Option<Duration>,
    /// `x-request-id` (as received, or generated).
    pub request_id: Option<HeaderValue>,
    /// `x-forwarded-for` as sent upstream.
    pub x_forwarded_for: Option<HeaderValue>,
    /// `grpc-status` of the response: from its trailers, or its headers (trailers-only).
    pub grpc_status: Option<u32>,
    /// Request body bytes received from the client.
    pub bytes_received: u64,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    pub user_agent: Option<HeaderValue>,
    /// The request is gRPC (`content-type: application/grpc…`): Istio's `request_protocol="grpc"`.
    pub grpc: bool,
    /// The request's trace when it is sampled (`ProxyOptions::tracer`); boxed: rare and large.
    pub trace: Option<Box<portico_telemetry::RequestTrace>>,
}

/// The per-request context: the record being filled and the guards that must live as long as
/// the response body. Emitted exactly once, when dropped.
pub(crate) struct RequestLog {
    sink: Arc<dyn AccessLogSink>,
    started: Instant,
    pub(crate) record: RequestRecord,
    pub(crate) received: Option<Arc<AtomicU64>>,
    /// The response was fully delivered (or failed upstream): no `DC` on drop.
    pub(crate) finished: bool,
    pub(crate) active: Option<ActiveRequest>,
}

impl RequestLog {
    pub(crate) fn new(sink: Arc<dyn AccessLogSink>, started: Instant, record: RequestRecord) -> Box<RequestLog> {
        Box::new(RequestLog { sink, started, record, received: None, finished: false, active: None })
    }

    pub(crate) fn flag(&mut self, f: ResponseFlags) {
        self.record.flags.insert(f);
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        // The least-request counter goes down as soon as the exchange is over.
        self.active = None;
        if !self.finished {
            self.record.flags.insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        if let Some(r) = &self.received {
            self.record.bytes_received = r.load(Ordering::Relaxed);
        }
        self.record.duration = self.started.elapsed();
        self.sink.log(&self.record);
    }
}
