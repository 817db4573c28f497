//! Errors of the control surface (`Proxy::apply`). Request-path failures are never errors here:
//! they become HTTP responses with a response flag.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} for gateway port {port}: {source}")]
    Bind {
        port: u32,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gateway port {port} is not a valid TCP port; map it to a local port with --port-map {port}=LOCAL")]
    PortOutOfRange { port: u32 },
    #[error("the proxy is shutting down; configuration not applied")]
    ShuttingDown,
}
