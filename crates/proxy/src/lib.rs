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
//! Module map: `listener` (bind, accept, h1/h2c detection, drain), `server` (request handling),
//! `routing` (matcher glue, redirects, rewrites), `headers` (proxy headers), `path`
//! (normalization), `upstream/` (pools, load balancing, DNS), `body`, `log` (the sink hook).
#![forbid(unsafe_code)]

mod body;
mod error;
mod headers;
mod io;
mod listener;
mod log;
mod options;
pub mod path;
mod proxy;
mod rng;
mod routing;
mod server;
mod state;
mod upstream;

pub use error::ProxyError;
pub use log::{AccessLogSink, NoopSink, RequestRecord};
pub use options::ProxyOptions;
/// Envoy response flags, shared with telemetry (one type across the workspace).
pub use portico_telemetry::ResponseFlags;
pub use proxy::{ClusterInfo, EndpointInfo, Proxy};
