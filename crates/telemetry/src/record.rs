//! What the data plane reports: one [`RequestRecord`] per HTTP request, one [`TcpRecord`] per TCP
//! connection. Records borrow everything (`&str` of headers the proxy already holds), so building
//! one costs nothing when the access log is off.

use crate::flags::ResponseFlags;
use crate::metrics::{Destination, TcpMeter};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// `%PROTOCOL%`: the downstream HTTP version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HttpProtocol {
    Http10,
    #[default]
    Http11,
    Http2,
    Http3,
}

impl HttpProtocol {
    /// Envoy's spelling: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HttpProtocol::Http10 => "HTTP/1.0",
            HttpProtocol::Http11 => "HTTP/1.1",
            HttpProtocol::Http2 => "HTTP/2",
            HttpProtocol::Http3 => "HTTP/3",
        }
    }
}

/// The `request_protocol` label of the HTTP metrics (TCP records are always `tcp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestProtocol {
    #[default]
    Http,
    /// The request is gRPC (`content-type: application/grpc…`): `grpc_response_status` is reported.
    Grpc,
}

impl RequestProtocol {
    pub const fn as_str(self) -> &'static str {
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

/// One finished HTTP request: the fields of Istio's access log and the identity of its metric
/// series. Absent values (`None`, or an empty string) print as `-` (text) / `null` (JSON).
///
/// Build it with `..Default::default()` and fill what is known.
#[derive(Clone, Debug)]
pub struct RequestRecord<'a> {
    /// `%START_TIME%`: when the first byte of the request was received.
    pub start_time: SystemTime,
    /// `%DURATION%`: start to last byte sent downstream. Also `istio_request_duration_milliseconds`.
    pub duration: Duration,
    /// `%REQ(:METHOD)%`.
    pub method: &'a str,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: the path and query as the client sent them (before any
    /// rewrite).
    pub path: &'a str,
    /// `%PROTOCOL%`.
    pub protocol: HttpProtocol,
    /// `%RESPONSE_CODE%`: 0 when no response was sent (the client went away first).
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`.
    pub response_flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%` (`via_upstream`, `route_not_found`, …; no spaces).
    pub response_code_details: Option<&'a str>,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<&'a str>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%` (e.g. the upstream TLS error).
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// `%BYTES_RECEIVED%`: request body bytes. Also `istio_request_bytes`.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes. Also `istio_response_bytes`.
    pub bytes_sent: u64,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`: time the upstream took (request sent → response
    /// headers), whole milliseconds in the log.
    pub upstream_service_time: Option<Duration>,
    /// `%REQ(X-FORWARDED-FOR)%` as received.
    pub x_forwarded_for: Option<&'a str>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<&'a str>,
    /// `%REQ(X-REQUEST-ID)%` (received or generated).
    pub request_id: Option<&'a str>,
    /// `%REQ(:AUTHORITY)%`.
    pub authority: Option<&'a str>,
    /// `%UPSTREAM_HOST%`: the endpoint the (last) try went to.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER_RAW%`, e.g. `outbound|9080|v1|reviews.default.svc.cluster.local`.
    pub upstream_cluster: Option<&'a str>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    pub downstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    pub downstream_remote_address: Option<SocketAddr>,
    /// `%REQUESTED_SERVER_NAME%`: the TLS SNI.
    pub requested_server_name: Option<&'a str>,
    /// `%ROUTE_NAME%`.
    pub route_name: Option<&'a str>,
    /// The gRPC status (`grpc-status` trailer or trailers-only header) of a gRPC request.
    pub grpc_status: Option<u32>,
    /// `request_protocol`: `http` or `grpc`.
    pub request_protocol: RequestProtocol,
    /// `connection_security_policy`.
    pub connection_security_policy: ConnectionSecurityPolicy,
    /// The `destination_*` labels, interned by [`Metrics::destination`](crate::Metrics::destination)
    /// when the cluster was built. `None`: Istio's labels for "no destination" (`unknown`), as for
    /// a `404 NR`.
    pub destination: Option<&'a Destination>,
}

impl Default for RequestRecord<'_> {
    fn default() -> Self {
        RequestRecord {
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            method: "",
            path: "",
            protocol: HttpProtocol::default(),
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_service_time: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: None,
            grpc_status: None,
            request_protocol: RequestProtocol::default(),
            connection_security_policy: ConnectionSecurityPolicy::default(),
            destination: None,
        }
    }
}

/// One finished TCP (or TLS passthrough) connection. Printed in the same formats as HTTP with the
/// HTTP-only fields absent (`"- - -" 0`), as Envoy's TCP proxy access log does.
#[derive(Clone, Debug)]
pub struct TcpRecord<'a> {
    /// When the downstream connection was accepted.
    pub start_time: SystemTime,
    /// Accept to close.
    pub duration: Duration,
    pub response_flags: ResponseFlags,
    pub connection_termination_details: Option<&'a str>,
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// Bytes received from the downstream (`istio_tcp_received_bytes_total`).
    pub bytes_received: u64,
    /// Bytes sent to the downstream (`istio_tcp_sent_bytes_total`).
    pub bytes_sent: u64,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub upstream_local_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
    pub connection_security_policy: ConnectionSecurityPolicy,
    pub destination: Option<&'a Destination>,
    /// The meter from [`Telemetry::tcp_open`](crate::Telemetry::tcp_open), when the connection
    /// counted itself open (and maybe reported bytes) while it ran. Closing then adds only the
    /// bytes not yet reported, on the meter's series. `None`: open, bytes and close are all counted
    /// now, with this record's labels.
    pub meter: Option<&'a TcpMeter>,
}

impl Default for TcpRecord<'_> {
    fn default() -> Self {
        TcpRecord {
            start_time: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            response_flags: ResponseFlags::NONE,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: None,
            connection_security_policy: ConnectionSecurityPolicy::default(),
            destination: None,
            meter: None,
        }
    }
}
