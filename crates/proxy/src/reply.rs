//! Responses the gateway makes itself. [`LocalReply`] is every failure a request can meet before
//! (or instead of) an upstream response — one type with its status, Envoy response flag, response
//! code details and body, so the handler can use `?` and the table lives in one place
//! (ARCHITECTURE.md repeats it). [`LocalAnswer`] is a response made here that is not a failure:
//! a redirect, a direct response, a CORS preflight.

use crate::body::ProxyBody;
use crate::log::RequestGuard;
use crate::upstream::SendError;
use crate::ResponseFlags;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use std::borrow::Cow;
use std::fmt::Write as _;

/// A failure answered locally (Envoy's local reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalReply {
    /// No `Host` / `:authority`.
    MissingHost,
    /// No virtual host or route matched (also CONNECT, which Istio HTTP routes cannot match).
    NoRoute,
    /// The path cannot be normalized (`..` above the root, bad percent-encoding…).
    PathNormalizationFailed,
    /// The rewritten path is not a valid request target.
    InvalidPath,
    /// The route's destination has no cluster in this snapshot.
    NoCluster,
    /// Every endpoint is ejected, or there is none.
    NoHealthyUpstream,
    /// A circuit breaker refused the request (`http2MaxRequests`, pending requests).
    Overflow,
    /// A retry was wanted but `maxRetries` was reached.
    RetryOverflow,
    /// The route's `timeout` fired.
    RouteTimeout,
    /// `retries.perTryTimeout` fired on the last try.
    PerTryTimeout,
    /// The upstream connection could not be set up in `connectTimeout`.
    ConnectTimeout,
    /// The upstream refused the connection, or its TLS/HTTP handshake failed.
    ConnectFailure,
    /// The upstream reset or closed the connection before response headers.
    ConnectionTermination,
    /// The upstream answered with something that is not HTTP (two `Content-Length`s, a bad
    /// status line…): Envoy's `UPE`.
    UpstreamProtocolError,
    /// A retry was wanted but the body was too large to keep for a replay.
    BodyTooLargeToRetry,
    /// The route's `rewrite.authority` is not a valid header value.
    InvalidAuthorityRewrite,
    /// The authority cannot form an HTTP/2 `:authority`.
    InvalidAuthority,
    /// The upstream answered 101 to a request that asked for no upgrade.
    UnexpectedUpgrade,
    /// A redirect's `Location` is not a valid header value.
    InvalidRedirectLocation,
    /// An HTTP/2 `:path` longer than `--max-uri-length` (HTTP/1's is refused below hyper).
    H2UriTooLong,
    /// An HTTP/2 request with more headers than `--max-request-headers`.
    H2TooManyHeaders,
    /// An HTTP/1.0 request while `--accept-http10` is off (Envoy's `accept_http_10: false`).
    Http10NotAccepted,
    /// `fault.abort.httpStatus` (a valid status code: the model checks it).
    FaultAbort(u16),
    /// `fault.abort.grpcStatus`, as a gRPC status code.
    GrpcFaultAbort(u32),
}

const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
const OVERFLOW: &str = "upstream connect error or disconnect/reset before headers. reset reason: overflow";
const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
const FAULT_ABORT: &str = "fault filter abort";

impl LocalReply {
    pub(crate) fn status(self) -> StatusCode {
        use LocalReply::*;
        match self {
            MissingHost | PathNormalizationFailed | InvalidPath | InvalidAuthority => StatusCode::BAD_REQUEST,
            NoRoute => StatusCode::NOT_FOUND,
            NoCluster
            | NoHealthyUpstream
            | Overflow
            | RetryOverflow
            | ConnectTimeout
            | ConnectFailure
            | ConnectionTermination
            | BodyTooLargeToRetry => StatusCode::SERVICE_UNAVAILABLE,
            RouteTimeout | PerTryTimeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamProtocolError | UnexpectedUpgrade => StatusCode::BAD_GATEWAY,
            InvalidAuthorityRewrite | InvalidRedirectLocation => StatusCode::INTERNAL_SERVER_ERROR,
            H2UriTooLong => StatusCode::URI_TOO_LONG,
            H2TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Http10NotAccepted => StatusCode::UPGRADE_REQUIRED,
            FaultAbort(code) => StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            GrpcFaultAbort(_) => StatusCode::OK,
        }
    }

    /// The Envoy response flag this failure sets (`-` for malformed requests, as Envoy logs them).
    pub(crate) fn flags(self) -> ResponseFlags {
        use LocalReply::*;
        match self {
            NoRoute => ResponseFlags::NO_ROUTE_FOUND,
            NoCluster => ResponseFlags::NO_CLUSTER_FOUND,
            NoHealthyUpstream => ResponseFlags::NO_HEALTHY_UPSTREAM,
            Overflow | RetryOverflow => ResponseFlags::UPSTREAM_OVERFLOW,
            RouteTimeout | PerTryTimeout => ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
            ConnectTimeout | ConnectFailure => ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            ConnectionTermination => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            UpstreamProtocolError => ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            BodyTooLargeToRetry => ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            FaultAbort(_) | GrpcFaultAbort(_) => ResponseFlags::FAULT_INJECTED,
            // Logged like the HTTP/1 refusals below hyper.
            H2UriTooLong | H2TooManyHeaders => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            MissingHost
            | PathNormalizationFailed
            | InvalidPath
            | InvalidAuthorityRewrite
            | InvalidAuthority
            | UnexpectedUpgrade
            | InvalidRedirectLocation
            | Http10NotAccepted => ResponseFlags::NONE,
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for it.
    pub(crate) fn details(self) -> &'static str {
        use LocalReply::*;
        match self {
            MissingHost => "missing_host_header",
            NoRoute => "route_not_found",
            PathNormalizationFailed => "path_normalization_failed",
            InvalidPath => "invalid_path",
            NoCluster => "cluster_not_found",
            NoHealthyUpstream => "no_healthy_upstream",
            Overflow => "upstream_reset_before_response_started{overflow}",
            RetryOverflow => "upstream_retry_overflow",
            RouteTimeout => "upstream_response_timeout",
            PerTryTimeout => "upstream_per_try_timeout",
            ConnectTimeout => "upstream_reset_before_response_started{connection_timeout}",
            ConnectFailure => "upstream_reset_before_response_started{connection_failure}",
            ConnectionTermination => "upstream_reset_before_response_started{connection_termination}",
            UpstreamProtocolError => "upstream_reset_before_response_started{protocol_error}",
            BodyTooLargeToRetry => "request_body_too_large_to_retry",
            InvalidAuthorityRewrite => "invalid_authority_rewrite",
            InvalidAuthority => "invalid_authority",
            UnexpectedUpgrade => "unexpected_upgrade",
            InvalidRedirectLocation => "invalid_redirect_location",
            FaultAbort(_) | GrpcFaultAbort(_) => "fault_filter_abort",
            H2UriTooLong => "http2.uri_too_long",
            H2TooManyHeaders => "http2.too_many_headers",
            Http10NotAccepted => "low_version",
        }
    }

    /// The body Envoy sends with it (and `grpc-message` for a gRPC caller).
    pub(crate) fn body(self) -> &'static str {
        use LocalReply::*;
        match self {
            MissingHost => "missing host header",
            InvalidAuthority => "invalid authority",
            NoHealthyUpstream => NO_HEALTHY_UPSTREAM,
            Overflow | RetryOverflow => OVERFLOW,
            RouteTimeout | PerTryTimeout => UPSTREAM_TIMEOUT,
            ConnectTimeout => "upstream connect error or disconnect/reset before headers. reset reason: connection timeout",
            ConnectFailure => "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ConnectionTermination => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            UpstreamProtocolError => "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
            BodyTooLargeToRetry => {
                "upstream connect error or disconnect/reset before headers. reset reason: request body too large to retry"
            }
            UnexpectedUpgrade => "upstream switched protocols without an upgrade request",
            FaultAbort(_) | GrpcFaultAbort(_) => FAULT_ABORT,
            H2UriTooLong => "URI Too Long",
            H2TooManyHeaders => "Request Header Fields Too Large",
            // Envoy sends none; this one says what to do.
            Http10NotAccepted => "HTTP/1.0 is not accepted here: send HTTP/1.1 (or start the gateway with --accept-http10)",
            NoRoute | PathNormalizationFailed | InvalidPath | NoCluster | InvalidAuthorityRewrite
            | InvalidRedirectLocation => "",
        }
    }

    /// The response, with the request's record completed. A gRPC caller gets it as gRPC, as
    /// Envoy sends it: HTTP 200, trailers-only, the HTTP status mapped to a `grpc-status` and the
    /// text in `grpc-message`.
    pub(crate) fn into_response(self, mut log: Box<RequestGuard>) -> Response<ProxyBody> {
        log.flag(self.flags());
        log.record.details = self.details();
        let mut resp = if let LocalReply::GrpcFaultAbort(code) = self {
            grpc_reply(code, self.body(), log)
        } else if log.record.grpc {
            grpc_reply(grpc_status_for(self.status()), self.body(), log)
        } else {
            log.record.status = self.status().as_u16();
            text_reply(self.status(), Bytes::from_static(self.body().as_bytes()), log)
        };
        // Envoy marks a request a circuit breaker dropped, so that a caller (or a proxy in
        // front) does not retry it at once.
        if self == LocalReply::Overflow {
            resp.headers_mut().insert(crate::headers::X_ENVOY_OVERLOADED.clone(), HeaderValue::from_static("true"));
        }
        resp
    }
}

impl From<&SendError> for LocalReply {
    fn from(e: &SendError) -> LocalReply {
        match e {
            SendError::ConnectTimeout => LocalReply::ConnectTimeout,
            SendError::Connect(_) | SendError::Handshake(_) => LocalReply::ConnectFailure,
            SendError::Reset(h) if is_protocol_error(h) => LocalReply::UpstreamProtocolError,
            SendError::Reset(_) => LocalReply::ConnectionTermination,
            SendError::H1(e) if e.is_protocol() => LocalReply::UpstreamProtocolError,
            SendError::H1(_) => LocalReply::ConnectionTermination,
            SendError::Overflow => LocalReply::Overflow,
        }
    }
}

/// The upstream's response could not be parsed (hyper's parse errors: header syntax, two
/// `Content-Length`s, a bad status line, a head too large).
pub(crate) fn is_protocol_error(e: &hyper::Error) -> bool {
    e.is_parse() || e.is_parse_status() || e.is_parse_too_large()
}

/// A response made here that is not a failure: a redirect, a direct response, a CORS preflight.
/// `headers` are all its headers, as sent.
pub(crate) struct LocalAnswer {
    pub(crate) status: StatusCode,
    pub(crate) details: &'static str,
    pub(crate) body: Bytes,
    pub(crate) headers: HeaderMap,
}

impl LocalAnswer {
    pub(crate) fn into_response(self, mut log: Box<RequestGuard>) -> Response<ProxyBody> {
        log.record.status = self.status.as_u16();
        log.record.details = self.details;
        // The answer's headers are complete (content type included, route rules applied).
        let mut resp = Response::new(ProxyBody::full(self.body, Some(log)));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }
}

fn text_reply(status: StatusCode, body: Bytes, log: Box<RequestGuard>) -> Response<ProxyBody> {
    let has_body = !body.is_empty();
    let mut resp = Response::new(ProxyBody::full(body, Some(log)));
    *resp.status_mut() = status;
    if has_body {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

/// Envoy's HTTP → gRPC status mapping for local replies (and gRPC's own for HTTP errors).
fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// A trailers-only gRPC answer generated here.
fn grpc_reply(code: u32, message: &str, mut log: Box<RequestGuard>) -> Response<ProxyBody> {
    log.record.status = 200;
    log.record.grpc_status = Some(code);
    let mut resp = text_reply(StatusCode::OK, Bytes::new(), log);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(message)) {
            h.insert("grpc-message", v);
        }
    }
    resp
}

/// `grpc-message` is percent-encoded outside printable ASCII (and `%` itself).
fn grpc_percent_encode(s: &str) -> Cow<'_, str> {
    let plain = |b: u8| (0x20..=0x7e).contains(&b) && b != b'%';
    if s.bytes().all(plain) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_has_envoy_details_and_a_consistent_status() {
        use LocalReply::*;
        let all = [
            MissingHost,
            NoRoute,
            PathNormalizationFailed,
            InvalidPath,
            NoCluster,
            NoHealthyUpstream,
            Overflow,
            RetryOverflow,
            RouteTimeout,
            PerTryTimeout,
            ConnectTimeout,
            ConnectFailure,
            ConnectionTermination,
            UpstreamProtocolError,
            BodyTooLargeToRetry,
            InvalidAuthorityRewrite,
            InvalidAuthority,
            UnexpectedUpgrade,
            InvalidRedirectLocation,
            FaultAbort(418),
            GrpcFaultAbort(14),
            H2UriTooLong,
            H2TooManyHeaders,
        ];
        for r in all {
            assert!(!r.details().is_empty() && !r.details().contains(' '), "{r:?}");
            // A flag on every upstream-side failure; none on a malformed request.
            if r.status().is_server_error()
                && !matches!(r, InvalidAuthorityRewrite | InvalidRedirectLocation | UnexpectedUpgrade)
            {
                assert_ne!(r.flags(), ResponseFlags::NONE, "{r:?}");
            }
        }
        assert_eq!(FaultAbort(418).status().as_u16(), 418);
        assert_eq!(UpstreamProtocolError.flags().to_string(), "UPE");
        assert_eq!(UpstreamProtocolError.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_percent_encode("no healthy upstream"), "no healthy upstream");
        assert_eq!(grpc_percent_encode("50% é"), "50%25 %C3%A9");
    }
}
