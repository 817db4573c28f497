//! Portico's data plane: listeners, the HTTP server, routing from the compiled
//! [`Snapshot`](portico_model::Snapshot), upstream pools and drain.
//!
//! ```no_run
//! # async fn run(snapshot: std::sync::Arc<portico_model::Snapshot>) -> Result<(), portico_proxy::ProxyError> {
//! use portico_proxy::{Proxy, ProxyOptions};
//! let proxy = Proxy::new(ProxyOptions { port_map: [(80, 8080)].into(), ..Default::default() });
//! proxy.apply(snapshot).await?;          // bind new ports, swap config atomically
//! println!("{:?}", proxy.local_addrs()); // [(80, 0.0.0.0:8080)]
//! assert!(proxy.is_ready());
//! proxy.shutdown().await;                // stop accepting, finish in-flight requests
//! # Ok(()) }
//! ```
//!
//! What it serves (plaintext HTTP family: Gateway servers `HTTP`, `HTTP2`, `GRPC`, `GRPC-WEB`):
//! HTTP/1.1 and h2c prior knowledge on the same port, HTTP/1.1 upgrades (WebSocket) spliced
//! through, gRPC with trailers both ways. Each request loads the snapshot once and keeps it to
//! the end. Failures answer as Envoy does and carry an Envoy response flag
//! ([`ResponseFlags`]), reported with the rest of the request to an [`AccessLogSink`].
//!
//! TLS ports (`HTTPS`, `TLS`): the ClientHello is read without being consumed, the Gateway
//! server is chosen by SNI, then TLS is terminated with rustls (SIMPLE, MUTUAL, OPTIONAL_MUTUAL;
//! HTTP/1.1 or h2 by ALPN, or a TCP relay for `TLS` servers) or the bytes are passed through
//! (PASSTHROUGH by `tls` routes, AUTO_PASSTHROUGH by the SNI). TCP ports relay by `tcp` routes.
//! Each proxied TCP connection is reported as a [`TcpRecord`].
//!
//! Module map: `listener` (bind, accept, h1/h2c detection, connection limit), `downstream`
//! (connection facts, drain phases, graceful drive), `guard` (HTTP/1 head and framing checks,
//! HTTP/2 flood limits, idle timeouts), `server` (request handling in named phases), `reply`
//! (local replies: status, response flag, details, body), `tls` (ClientHello, SNI selection,
//! rustls configs by content hash, client identity), `tcp` (L4 relay), `routing` (matcher glue,
//! redirects, rewrites), `headers` (proxy headers), `path` (normalization), `upstream/` (pools,
//! load balancing incl. consistent hash, DNS, circuit breakers, outlier detection, upstream
//! TLS), `retry` (tries, per-try timeouts, retries), `fault`, `mirror`, `cors`, `varsubst`
//! (`%VAR%` header values), `body`, `log` (the sink hook), `clock` (one clock reading per poll of a
//! connection's task).
#![forbid(unsafe_code)]

mod body;
mod clock;
mod cors;
mod downstream;
mod error;
mod fault;
mod guard;
mod headers;
mod io;
mod listener;
mod log;
mod mirror;
mod options;
mod park;
pub mod path;
mod proxy;
mod refused;
mod reply;
mod retry;
mod rng;
mod routing;
mod server;
mod state;
mod streams;
mod tcp;
mod tls;
mod upstream;
mod varsubst;
mod woken;

pub use error::ProxyError;
pub use log::{AccessLogSink, NoopSink, RequestRecord, TcpRecord};
pub use options::ProxyOptions;
/// Envoy response flags, shared with telemetry (one type across the workspace).
pub use portico_telemetry::ResponseFlags;
pub use proxy::{ClusterInfo, EndpointInfo, Proxy};
/// The TLS ClientHello reader (SNI, ALPN), public for fuzzing.
pub use tls::hello as client_hello;
