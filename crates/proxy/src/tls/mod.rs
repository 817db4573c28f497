//! TLS listeners: read the ClientHello once (rustls' `Acceptor`, keeping the bytes for a
//! passthrough backend; a hello rustls refuses goes to the lenient reader in `hello.rs`), choose
//! the Gateway server by SNI, then terminate (HTTP through the hyper service, or a TCP relay for `TLS` servers) or pass the
//! bytes through (PASSTHROUGH by VirtualService `tls` routes, AUTO_PASSTHROUGH by the SNI).

mod config;
pub mod hello;
mod identity;

pub(crate) use config::{server_provider, TlsStore};

use crate::downstream::{until, ConnInfo, Phase, TlsInfo};
use crate::io::Prefixed;
use crate::state::{Shared, State};
use crate::tcp::{self, TcpGuard};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};
use portico_model::snapshot::{Protocol, TlsRoute};
use portico_model::tls::TlsMode;
use portico_telemetry::TlsFailureReason;
use rustls::server::{Accepted, Acceptor};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::StartHandshake;

/// A Gateway host as an SNI pattern: `ns/host` → `host`.
fn host_pattern(h: &str) -> &str {
    h.rsplit_once('/').map_or(h, |(_, host)| host)
}

/// Envoy's `server_names` rules for passthrough routes: exact, `*.suffix`, or `*`.
fn sni_matches(pattern: &str, sni: &str) -> bool {
    portico_model::host::matches(host_pattern(pattern), sni)
}

fn tls_route<'a>(routes: &'a [Arc<TlsRoute>], sni: Option<&str>, port: u32) -> Option<&'a TlsRoute> {
    let sni = sni?;
    routes
        .iter()
        .find(|r| (r.ports.is_empty() || r.ports.contains(&port)) && r.sni_hosts.iter().any(|p| sni_matches(p, sni)))
        .map(|r| &**r)
}

/// AUTO_PASSTHROUGH: `outbound_.PORT_.SUBSET_.HOST` → `outbound|PORT|SUBSET|HOST` (`_` = no subset).
pub(crate) fn auto_passthrough_cluster(sni: &str) -> Option<String> {
    let rest = sni.strip_prefix("outbound_.")?;
    let (port, rest) = rest.split_once("_.")?;
    let (subset, host) = rest.split_once("_.")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || host.is_empty() {
        return None;
    }
    let subset = if subset == "_" { "" } else { subset };
    Some(format!("outbound|{port}|{subset}|{host}"))
}

/// The route table for requests on a terminated TLS connection: the one of the server its
/// SNI selects in the current snapshot.
pub(crate) fn route_table<'a>(
    state: &'a State,
    port: u32,
    tls: &TlsInfo,
) -> Option<&'a portico_model::snapshot::RouteTable> {
    let l = state.snapshot.listener(port)?;
    l.server_for_sni(tls.sni.as_deref())?.http.as_deref()
}

/// Headers that depend on how the client connected: `x-forwarded-proto`, and
/// `x-forwarded-client-cert`, which a client never sets itself (Istio gateways' SANITIZE_SET).
pub(crate) fn downstream_headers(headers: &mut HeaderMap, conn: &ConnInfo, xfcc_present: bool) {
    if xfcc_present {
        headers.remove(&crate::headers::X_FORWARDED_CLIENT_CERT);
    }
    if let Some(tls) = &conn.tls {
        headers.insert(crate::headers::X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
        if let Some(x) = &tls.xfcc {
            headers.insert(crate::headers::X_FORWARDED_CLIENT_CERT.clone(), x.clone());
        }
    }
}

/// Count a failed downstream handshake (`portico_tls_handshake_failures_total{reason}`).
fn failed(shared: &Shared, reason: TlsFailureReason) {
    if let Some(t) = &shared.opts.telemetry {
        t.metrics().gateway().tls_handshake_failed(reason);
    }
}

/// Why rustls (through tokio-rustls' `io::Error`) refused a handshake, as a bounded label.
fn failure_reason(e: &std::io::Error) -> TlsFailureReason {
    use rustls::{AlertDescription as A, Error as E, PeerIncompatible as P};
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return TlsFailureReason::ConnectionClosed;
    }
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => TlsFailureReason::ConnectionClosed,
            _ => TlsFailureReason::Other,
        };
    };
    match tls {
        E::NoCertificatesPresented => TlsFailureReason::CertificateRequired,
        E::InvalidCertificate(_) => TlsFailureReason::BadCertificate,
        E::NoApplicationProtocol => TlsFailureReason::NoApplicationProtocol,
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            TlsFailureReason::InvalidMessage
        }
        E::PeerIncompatible(
            P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerDoesNotSupportTls12Or13
            | P::ServerTlsVersionIsDisabledByOurConfig,
        ) => TlsFailureReason::ProtocolVersion,
        E::PeerIncompatible(_) => TlsFailureReason::HandshakeFailure,
        // The client refused the handshake with an alert (e.g. it does not trust our certificate).
        E::AlertReceived(A::ProtocolVersion) => TlsFailureReason::ProtocolVersion,
        E::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::CertificateExpired) => {
            TlsFailureReason::BadCertificate
        }
        E::AlertReceived(A::NoApplicationProtocol) => TlsFailureReason::NoApplicationProtocol,
        E::AlertReceived(A::HandshakeFailure) => TlsFailureReason::HandshakeFailure,
        _ => TlsFailureReason::Other,
    }
}

enum Start {
    /// rustls read the ClientHello (the one parse): the handshake goes on from `Accepted`;
    /// the bytes are kept for a passthrough backend.
    Accepted(Box<Accepted>, Option<Arc<str>>, BytesMut),
    /// rustls refused the hello but it is a ClientHello all the same (an old client without
    /// `signature_algorithms`, say): a passthrough backend may still take it, and termination
    /// replays it to rustls, which refuses it with its own alert, as for any bad hello.
    Hello(hello::ClientHello, BytesMut),
    NotTls(BytesMut),
    Closed,
}

/// Feed `bytes` to rustls' acceptor; `Err` when rustls gives up on them. Reads and `accept`
/// alternate because rustls sizes its buffer for a multi-record hello only once it has seen
/// the hello start.
fn feed(acceptor: &mut Acceptor, mut bytes: &[u8]) -> Result<Option<Accepted>, ()> {
    loop {
        if let Some(a) = acceptor.accept().map_err(|_| ())? {
            return Ok(Some(a));
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        match acceptor.read_tls(&mut bytes) {
            Ok(n) if n > 0 => {}
            _ => return Err(()),
        }
    }
}

async fn read_hello(stream: &mut TcpStream) -> std::io::Result<Start> {
    let mut buf = BytesMut::with_capacity(2048);
    let mut acceptor = Some(Acceptor::default());
    loop {
        let before = buf.len();
        if buf.len() > hello::MAX_HELLO + 5 * 8 {
            return Ok(Start::NotTls(buf));
        }
        buf.reserve(4096);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(Start::Closed);
        }
        if let Some(a) = acceptor.as_mut() {
            match feed(a, &buf[before..]) {
                Ok(Some(accepted)) => {
                    // rustls drops a server_name that is not a DNS name (an IP literal, which
                    // clients such as wrk and curl-by-IP send); routing still sees it, as it did
                    // and as nginx's and HAProxy's SNI routing do: read by the lenient reader.
                    let sni = match accepted.client_hello().server_name() {
                        Some(name) => Some(Arc::from(name)),
                        None => match hello::parse(&buf) {
                            hello::Parsed::Hello(h) => h.sni.map(Arc::from),
                            _ => None,
                        },
                    };
                    return Ok(Start::Accepted(Box::new(accepted), sni, buf));
                }
                Ok(None) => continue,
                // From here on only the lenient reader looks at the bytes (the cold path).
                Err(()) => acceptor = None,
            }
        }
        match hello::parse(&buf) {
            hello::Parsed::Hello(h) => return Ok(Start::Hello(h, buf)),
            hello::Parsed::NotTls => return Ok(Start::NotTls(buf)),
            hello::Parsed::NeedMore => {}
        }
    }
}

const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 45\r\nconnection: close\r\n\r\nThe plain HTTP request was sent to TLS port.\n";

/// An HTTP connection whose TLS we terminated, for [`serve_http`]. Returned rather than served
/// here so that the handshake's state is freed before the connection's life begins.
pub(crate) struct TlsHttp {
    pub(crate) stream: Box<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>>,
    pub(crate) h2: bool,
    pub(crate) info: ConnInfo,
}

/// Take one connection on a TLS listener: passthrough and TLS-terminated TCP are relayed here;
/// an HTTP connection is returned once its handshake is done.
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u32,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Option<TlsHttp> {
    let started = tokio::time::Instant::now();
    let limit = shared.opts.tls_handshake_timeout;
    let start = tokio::select! {
        r = tokio::time::timeout(limit, Box::pin(read_hello(&mut stream))) => r,
        _ = until(&mut phase, Phase::Draining) => return None,
    };
    let (accepted, sni, buf) = match start {
        Ok(Ok(Start::Accepted(a, sni, b))) => (Some(a), sni, b),
        Ok(Ok(Start::Hello(h, b))) => (None, h.sni.as_deref().map(Arc::from), b),
        Ok(Ok(Start::NotTls(b))) => {
            // Plain HTTP to a TLS port: say so (as nginx does) and close; anything else: close.
            failed(&shared, TlsFailureReason::InvalidMessage);
            if b.first().is_some_and(u8::is_ascii_uppercase) {
                let _ = tokio::time::timeout(limit, stream.write_all(PLAIN_HTTP_REPLY)).await;
                let _ = stream.shutdown().await;
            }
            tracing::debug!(%peer, port, "not a TLS ClientHello; connection closed");
            return None;
        }
        Ok(Ok(Start::Closed)) | Ok(Err(_)) => return None,
        Err(_) => {
            failed(&shared, TlsFailureReason::Timeout);
            tracing::debug!(%peer, port, "no ClientHello within the handshake timeout; connection closed");
            return None;
        }
    };
    let local = stream.local_addr().unwrap_or(peer);
    let state = shared.state.load_full();
    let listener = state.snapshot.listener(port)?;
    let Some(block) = listener.server_for_sni(sni.as_deref()) else {
        // No server (hence no certificate) for this SNI, as Envoy's "no filter chain match".
        failed(&shared, TlsFailureReason::NoCertificate);
        tracing::debug!(%peer, port, sni = ?sni, "no server for this SNI; handshake refused");
        return None;
    };
    match block.tls.as_ref().map(|t| t.mode) {
        Some(TlsMode::Passthrough) => {
            let mut log = TcpGuard::new(shared.clone(), TcpGuard::record(peer, local, port, sni.clone()));
            let route = tls_route(&block.tls_routes, sni.as_deref(), port);
            let dests = route.map(|r| &r.destinations);
            Box::pin(tcp::proxy(&shared, &state, dests, None, stream, buf.freeze(), &mut log, phase)).await;
            None
        }
        Some(TlsMode::AutoPassthrough) => {
            let mut log = TcpGuard::new(shared.clone(), TcpGuard::record(peer, local, port, sni.clone()));
            let cluster = sni.as_deref().and_then(auto_passthrough_cluster).map(Arc::<str>::from);
            if cluster.is_none() {
                log.record.flags.insert(crate::ResponseFlags::NO_ROUTE_FOUND);
                return None;
            }
            Box::pin(tcp::proxy(&shared, &state, None, cluster, stream, buf.freeze(), &mut log, phase)).await;
            None
        }
        _ => {
            let config = match state.tls.load().get(block) {
                Ok(c) => c,
                Err(why) => {
                    failed(&shared, TlsFailureReason::NoCertificate);
                    tracing::debug!(%peer, port, sni = ?sni, gateway = %block.gateway, reason = %why, "handshake refused");
                    return None;
                }
            };
            // The hello rustls read goes on as it is; one it refused is replayed to it.
            let handshake = match accepted {
                Some(a) => {
                    // The hello's bytes were for a passthrough backend: freed, not kept for the
                    // connection's life.
                    drop(buf);
                    StartHandshake::from_parts(*a, Prefixed::new(Bytes::new(), stream)).into_stream(config)
                }
                None => tokio_rustls::TlsAcceptor::from(config).accept(Prefixed::new(buf.freeze(), stream)),
            };
            let remaining = limit.saturating_sub(started.elapsed());
            let accepted = tokio::select! {
                r = tokio::time::timeout(remaining, Box::pin(handshake)) => r,
                _ = until(&mut phase, Phase::Draining) => return None,
            };
            let tls = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failed(&shared, failure_reason(&e));
                    tracing::debug!(%peer, port, sni = ?sni, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    failed(&shared, TlsFailureReason::Timeout);
                    tracing::debug!(%peer, port, sni = ?sni, "TLS handshake timed out");
                    return None;
                }
            };
            let (_, session) = tls.get_ref();
            if let Some(t) = &shared.opts.telemetry {
                let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                t.metrics().gateway().tls_handshake_done(resumed);
            }
            let h2 = session.alpn_protocol() == Some(b"h2");
            let xfcc = session.peer_certificates().and_then(|c| c.first()).and_then(|c| identity::xfcc(c));
            if block.protocol == Protocol::Tls {
                let mut log = TcpGuard::new(shared.clone(), TcpGuard::record(peer, local, port, sni.clone()));
                let dests = tcp::tcp_route(&block.tcp_routes, port);
                Box::pin(tcp::proxy(&shared, &state, dests, None, tls, Bytes::new(), &mut log, phase)).await;
                return None;
            }
            // The HTTP service loads the snapshot per request; this connection keeps none.
            drop(state);
            let info = ConnInfo::new(peer, local, port, phase.clone(), Some(TlsInfo { sni, xfcc }));
            Some(TlsHttp { stream: Box::new(tls), h2, info })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_passthrough_names() {
        assert_eq!(
            auto_passthrough_cluster("outbound_.8080_.v1_.reviews.default.svc.cluster.local").as_deref(),
            Some("outbound|8080|v1|reviews.default.svc.cluster.local")
        );
        assert_eq!(auto_passthrough_cluster("outbound_.443_._.a.b").as_deref(), Some("outbound|443||a.b"));
        assert_eq!(auto_passthrough_cluster("outbound_.x_._.a.b"), None);
        assert_eq!(auto_passthrough_cluster("a.b"), None);
    }

    #[test]
    fn handshake_failure_reasons() {
        use std::io::{Error, ErrorKind};
        let tls = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
        assert_eq!(failure_reason(&tls(rustls::Error::NoCertificatesPresented)), TlsFailureReason::CertificateRequired);
        assert_eq!(
            failure_reason(&tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))),
            TlsFailureReason::BadCertificate
        );
        assert_eq!(
            failure_reason(&tls(rustls::PeerIncompatible::SupportedVersionsExtensionRequired.into())),
            TlsFailureReason::ProtocolVersion
        );
        assert_eq!(
            failure_reason(&tls(rustls::PeerIncompatible::NoCipherSuitesInCommon.into())),
            TlsFailureReason::HandshakeFailure
        );
        assert_eq!(failure_reason(&Error::from(ErrorKind::UnexpectedEof)), TlsFailureReason::ConnectionClosed);
        assert_eq!(failure_reason(&Error::other("x")), TlsFailureReason::Other);
    }

    #[test]
    fn sni_patterns() {
        assert!(sni_matches("*.example.com", "a.b.example.com"));
        assert!(!sni_matches("*.example.com", "example.com"));
        assert!(sni_matches("*", "x"));
        assert!(sni_matches("ns/a.io", "A.io"));
    }
}
