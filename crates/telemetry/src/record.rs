//! What the data plane reports: one [`RequestRecord`] per HTTP request, one [`TcpRecord`] per TCP
//! connection. The proxy fills the record as the request goes and hands it over by reference
//! once it is finished; the access-log formatter, the Istio metrics and the tracer all read that
//! same record. It holds what the proxy already owns (`Method`, `Uri`, `HeaderValue`, `Arc<str>`
//! names), so building one costs no copy or allocation; header values are read as `&str` only
//! when a line is formatted.
//!
//! What is not the request's data travels beside the record: the `destination_*` labels
//! ([`Destination`](crate::Destination)), which the caller interns per cluster, and the TCP
//! [`TcpMeter`](crate::TcpMeter).

use crate::flags::ResponseFlags;
use crate::trace::RequestTrace;
use http::{HeaderValue, Method, Uri, Version};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The `request_protocol` label of the HTTP metrics (TCP records are always `tcp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RequestProtocol {
    #[default]
    Http,
    /// The request is gRPC: `grpc_response_status` is reported.
    Grpc,
}

impl RequestProtocol {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// The `connection_security_policy` label.
///
/// Istio's stats filter sets `mutual_tls`/`none` only when it reports as the *destination*; a
/// client-side reporter — and an ingress gateway reports as `source` — always says `unknown`
/// (`istio/proxy` `istio_stats.cc`, `populateFlagsAndConnectionSecurity`). `Unknown` is therefore
/// the default and what Istio's gateway shows; `None`/`MutualTls` are there for a proxy that knows
/// the upstream connection's security and wants to say so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionSecurityPolicy {
    #[default]
    Unknown,
    None,
    MutualTls,
}

impl ConnectionSecurityPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionSecurityPolicy::Unknown => "unknown",
            ConnectionSecurityPolicy::None => "none",
            ConnectionSecurityPolicy::MutualTls => "mutual_tls",
        }
    }
}

/// One HTTP request, filled by the proxy from its first byte to its end: the fields of Istio's
/// access log, the labels of its metric series and the attributes of its spans. Absent values
/// (`None`, an empty string, a header value that is not visible ASCII) print as `-` (text) /
/// `null` (JSON).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// `%START_TIME%`: when the request's head was received.
    pub start_time: SystemTime,
    /// `%DURATION%`: start to the end of the response. Also `istio_request_duration_milliseconds`.
    pub duration: Duration,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client.
    pub downstream_remote: SocketAddr,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`: the local address the client connected to.
    pub downstream_local: SocketAddr,
    /// The Gateway port the request arrived on.
    pub gateway_port: u32,
    /// `%REQ(:METHOD)%`.
    pub method: Method,
    /// The request URI as the client sent it (origin-form for HTTP/1, path for HTTP/2), before
    /// any rewrite; `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%` is its [`path`](RequestRecord::path).
    pub uri: Uri,
    /// `%REQ(:AUTHORITY)%`: `:authority` / `Host` as the client sent it.
    pub authority: Option<HeaderValue>,
    /// `%PROTOCOL%`: the downstream HTTP version.
    pub protocol: Version,
    /// `%RESPONSE_CODE%`: 0 when no response was sent (the client went away first).
    pub status: u16,
    /// `%RESPONSE_FLAGS%`.
    pub flags: ResponseFlags,
    /// Envoy's `%RESPONSE_CODE_DETAILS%` (empty: none): `via_upstream`, `route_not_found`,
    /// `cluster_not_found`, `no_healthy_upstream`, `upstream_response_timeout`,
    /// `direct_response`, `redirect`, `upstream_reset_before_response_started{…}`, …
    pub details: &'static str,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<Arc<str>>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` (e.g. the upstream TLS error).
    pub upstream_transport_failure_reason: Option<Arc<str>>,
    /// `%ROUTE_NAME%`: the name of the route that matched.
    pub route_name: Option<Arc<str>>,
    /// `%UPSTREAM_CLUSTER_RAW%`: the cluster the request was routed to, e.g.
    /// `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub upstream_cluster: Option<Arc<str>>,
    /// `%UPSTREAM_HOST%`: the endpoint the (last) try went to.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`: the local address of the upstream connection that carried the
    /// response.
    pub upstream_local: Option<SocketAddr>,
    /// `%REQUESTED_SERVER_NAME%`: the SNI the client sent, on a TLS listener.
    pub sni: Option<Arc<str>>,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`: start of the request to the upstream's response
    /// headers, whole milliseconds in the log.
    pub upstream_service_time: Option<Duration>,
    /// `%REQ(X-REQUEST-ID)%` (as received, or generated).
    pub request_id: Option<HeaderValue>,
    /// `%REQ(X-FORWARDED-FOR)%`, as sent upstream.
    pub x_forwarded_for: Option<HeaderValue>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<HeaderValue>,
    /// The request is gRPC (`content-type: application/grpc…`): Istio's `request_protocol="grpc"`.
    pub grpc: bool,
    /// `grpc-status` of the response: from its trailers, or its headers (trailers-only).
    pub grpc_status: Option<u32>,
    /// `%BYTES_RECEIVED%`: request body bytes. Also `istio_request_bytes`.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes. Also `istio_response_bytes`.
    pub bytes_sent: u64,
    /// `connection_security_policy`.
    pub connection_security_policy: ConnectionSecurityPolicy,
    /// The request's trace when it is sampled ([`Tracer::start`](crate::Tracer::start)); boxed:
    /// rare and large.
    pub trace: Option<Box<RequestTrace>>,
}

/// The address of a record whose connection is not known (tests, builders).
const UNKNOWN_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A record with nothing known yet (`GET /`, addresses `0.0.0.0:0`): fill in what is known with
/// `..Default::default()`.
impl Default for RequestRecord {
    fn default() -> Self {
        RequestRecord {
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            downstream_remote: UNKNOWN_ADDR,
            downstream_local: UNKNOWN_ADDR,
            gateway_port: 0,
            method: Method::GET,
            uri: Uri::from_static("/"),
            authority: None,
            protocol: Version::HTTP_11,
            status: 0,
            flags: ResponseFlags::NONE,
            details: "",
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            route_name: None,
            upstream_cluster: None,
            upstream_host: None,
            upstream_local: None,
            sni: None,
            upstream_service_time: None,
            request_id: None,
            x_forwarded_for: None,
            user_agent: None,
            grpc: false,
            grpc_status: None,
            bytes_received: 0,
            bytes_sent: 0,
            connection_security_policy: ConnectionSecurityPolicy::default(),
            trace: None,
        }
    }
}

impl RequestRecord {
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: the path and query as the client sent them.
    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or_else(|| self.uri.path(), |p| p.as_str())
    }

    /// `%PROTOCOL%` in Envoy's spelling: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            Version::HTTP_09 | Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
    }

    /// The `request_protocol` label.
    pub(crate) fn request_protocol(&self) -> RequestProtocol {
        if self.grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        }
    }
}

/// A header value as text: `None` when absent or not visible ASCII (printed as absent).
pub(crate) fn header_text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// One proxied TCP connection (TCP servers, TLS passthrough, TLS-terminated TCP), filled by the
/// proxy until it closes. Printed in the same formats as HTTP with the HTTP-only fields absent
/// (`"- - -" 0`), as Envoy's TCP proxy access log does.
#[derive(Clone, Debug)]
pub struct TcpRecord {
    /// When the downstream connection was accepted.
    pub start_time: SystemTime,
    /// Accept to close.
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
    /// Bytes received from the client, including a passed-through ClientHello
    /// (`istio_tcp_received_bytes_total`).
    pub bytes_received: u64,
    /// Bytes sent to the client (`istio_tcp_sent_bytes_total`).
    pub bytes_sent: u64,
    /// `NR` no route, `UF` connect failure, `UH` no endpoint, `NC` no cluster, `SI` idle timeout…
    pub flags: ResponseFlags,
    pub connection_termination_details: Option<Arc<str>>,
    pub upstream_transport_failure_reason: Option<Arc<str>>,
    pub route_name: Option<Arc<str>>,
    pub connection_security_policy: ConnectionSecurityPolicy,
}

/// A record with nothing known yet (addresses `0.0.0.0:0`): fill in what is known with
/// `..Default::default()`.
impl Default for TcpRecord {
    fn default() -> Self {
        TcpRecord {
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            downstream_remote: UNKNOWN_ADDR,
            downstream_local: UNKNOWN_ADDR,
            gateway_port: 0,
            sni: None,
            upstream_cluster: None,
            upstream_host: None,
            upstream_local: None,
            bytes_received: 0,
            bytes_sent: 0,
            flags: ResponseFlags::NONE,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            route_name: None,
            connection_security_policy: ConnectionSecurityPolicy::default(),
        }
    }
}
