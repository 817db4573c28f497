#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! TLS and L4 doors over real sockets: SNI selection, mutual TLS, passthrough, TCP routes,
//! rotation, HTTP/2 by ALPN with gRPC, plain HTTP to a TLS port. Certificates are made here.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_model::Snapshot;
use portico_proxy::{AccessLogSink, ProxyOptions, RequestRecord, TcpRecord};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

// ───────────────────────────── certificates ─────────────────────────────

// `Ca`, `Leaf`, `client_config`, `tls_connect`: portico-testkit, through `common`.

/// A `kubernetes.io/tls` Secret (JSON strings are valid YAML and escape the PEM).
fn secret(name: &str, leaf: &Leaf, ca: Option<&str>, crl: Option<&str>) -> String {
    let mut data = serde_json::json!({"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem});
    if let Some(ca) = ca {
        data["ca.crt"] = ca.into();
    }
    if let Some(crl) = crl {
        data["ca.crl"] = crl.into();
    }
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData: {data}\n---\n"
    )
}

fn service_entry(name: &str, port: u16, protocol: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: ["{name}.default.svc.cluster.local"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9000, name: p, protocol: {protocol}}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{p: {port}}}}}
---
"#
    )
}

fn compile(yaml: &str) -> Arc<Snapshot> {
    let parsed = portico_api::parse_text("test.yaml", yaml, "default");
    assert!(parsed.diagnostics.iter().all(|d| !d.is_error()), "parse: {:?}", parsed.diagnostics);
    let compiled = portico_model::compile(&parsed.resources, &portico_model::Options::default());
    let errors: Vec<_> = compiled.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "compile: {errors:?}");
    Arc::new(compiled.snapshot)
}

// ───────────────────────────── clients ─────────────────────────────

fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

/// An HTTP/1.1 client over a TLS stream.
async fn h1_over(
    s: TlsStream<TcpStream>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, hyper::Error> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn https_get(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<Resp, hyper::Error> {
    let mut r = req("GET", host, path);
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    sender.ready().await?;
    Ok(read(sender.send_request(r.body(Full::default()).unwrap()).await?).await)
}

/// Handshake and one request; `Err` when the handshake or the request was refused.
async fn try_get(addr: SocketAddr, sni: &str, cfg: rustls::ClientConfig) -> Result<Resp, String> {
    let s = tls_connect(addr, Some(sni), cfg).await.map_err(|e| format!("handshake: {e}"))?;
    let mut c = h1_over(s).await.map_err(|e| format!("h1: {e}"))?;
    https_get(&mut c, sni, "/", &[]).await.map_err(|e| format!("request: {e}"))
}

fn tls_opts(ports: &[u32]) -> ProxyOptions {
    opts(ports)
}

async fn launch(o: ProxyOptions, snap: Arc<Snapshot>) -> portico_proxy::Proxy {
    let proxy = portico_proxy::Proxy::new(o);
    proxy.apply(snap).await.unwrap();
    proxy
}

#[derive(Default)]
struct Sink {
    tcp: Mutex<Vec<TcpRecord>>,
}
impl AccessLogSink for Sink {
    fn log(&self, _r: &RequestRecord) {}
    fn log_tcp(&self, r: &TcpRecord) {
        self.tcp.lock().unwrap().push(r.clone());
    }
}
impl Sink {
    async fn wait_tcp(&self, n: usize) -> Vec<TcpRecord> {
        for _ in 0..300 {
            if self.tcp.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.tcp.lock().unwrap().clone()
    }
}

/// One SIMPLE HTTPS server for `host` (a certificate from a new CA) in front of a `web` backend.
struct OneServer {
    proxy: portico_proxy::Proxy,
    addr: SocketAddr,
    ca: Ca,
    _backend: portico_testkit::backend::Backend,
}

async fn one_https_server(host: &str) -> OneServer {
    let backend = backend("web").await;
    let ca = Ca::new("test ca");
    let leaf = ca.issue("c", &[host], &[], 1);
    let yaml = https_gateway(&[("c", host, "c")], "")
        + &secret("c", &leaf, None, None)
        + &vs_all("web")
        + &service_entry("web", backend.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    OneServer { proxy, addr, ca, _backend: backend }
}

/// A client config trusting `ca`, for the given TLS versions and crypto provider.
fn client_for(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(ca.pem.as_bytes()) {
        store.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth()
}

// ───────────────────────────── SNI ─────────────────────────────

fn https_gateway(servers: &[(&str, &str, &str)], extra_tls: &str) -> String {
    // (port-name, host, secret)
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n",
    );
    for (name, host, sec) in servers {
        s.push_str(&format!(
            "  - port: {{number: 443, name: {name}, protocol: HTTPS}}\n    hosts: [\"{host}\"]\n    tls: {{mode: SIMPLE, credentialName: {sec}{extra_tls}}}\n"
        ));
    }
    s.push_str("---\n");
    s
}

fn vs_all(backend: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: all, namespace: default}}
spec:
  hosts: ["*"]
  gateways: ["istio-system/gw"]
  http:
  - route:
    - destination: {{host: {backend}.default.svc.cluster.local, port: {{number: 9000}}}}
---
"#
    )
}

#[tokio::test]
async fn sni_selects_among_certificates_and_serves_https() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let a = ca.issue("a", &["a.example.com"], &[], 10);
    let b = ca.issue("b", &["b.example.com"], &[], 11);
    let w = ca.issue("wild", &["*.wild.example.com", "*.x.wild.example.com"], &[], 12);
    let d = ca.issue("default", &["127.0.0.1", "default.example.com"], &[], 13);
    let yaml = https_gateway(
        &[("a", "a.example.com", "a"), ("w", "*.wild.example.com", "w"), ("b", "b.example.com", "b"), ("d", "*", "d")],
        "",
    ) + &secret("a", &a, None, None)
        + &secret("b", &b, None, None)
        + &secret("w", &w, None, None)
        + &secret("d", &d, None, None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let cfg = || client_config(&[&ca.pem], None, &[b"http/1.1"]);

    for (sni, want) in [
        (Some("a.example.com"), &a),
        (Some("b.example.com"), &b),
        (Some("x.wild.example.com"), &w),
        (Some("deep.x.wild.example.com"), &w),
        // No SNI: the `*` server.
        (None, &d),
    ] {
        let s = tls_connect(addr, sni, cfg()).await.unwrap_or_else(|e| panic!("{sni:?}: {e}"));
        assert_eq!(peer_cert(&s), want.der, "certificate for {sni:?}");
    }
    // An SNI no server names falls to the `*` server too (Envoy: it has no server_names).
    let s = tls_connect(addr, Some("default.example.com"), cfg()).await.unwrap();
    assert_eq!(peer_cert(&s), d.der);

    // HTTP behind TLS: x-forwarded-proto https, a client's XFCC is dropped, scheme https.
    let s = tls_connect(addr, Some("a.example.com"), cfg()).await.unwrap();
    let mut c = h1_over(s).await.unwrap();
    let r = https_get(
        &mut c,
        "a.example.com",
        "/hello",
        &[("x-forwarded-client-cert", "By=forged"), ("x-forwarded-proto", "http")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "web");
    assert_eq!(r.seen("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(r.seen("x-forwarded-client-cert"), None);
    // Keep-alive on the TLS connection, also after pauses long enough to park it (hyper's
    // buffers let go, TLS state kept).
    assert_eq!(https_get(&mut c, "a.example.com", "/again", &[]).await.unwrap().seen_path(), "/again");
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let path = format!("/after-pause/{i}");
        assert_eq!(https_get(&mut c, "a.example.com", &path, &[]).await.unwrap().seen_path(), path);
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn unknown_sni_and_missing_sni_are_refused_without_a_catch_all() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let a = ca.issue("a", &["a.example.com", "127.0.0.1"], &[], 10);
    let yaml = https_gateway(&[("a", "a.example.com", "a"), ("m", "missing.example.com", "nope")], "")
        + &secret("a", &a, None, None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    // The missing secret is an error diagnostic: compile without the error filter.
    let parsed = portico_api::parse_text("t.yaml", &yaml, "default");
    let snap = Arc::new(portico_model::compile(&parsed.resources, &portico_model::Options::default()).snapshot);
    let proxy = launch(tls_opts(&[443]), snap).await;
    let addr = addr_of(&proxy, 443);
    let cfg = || client_config(&[&ca.pem], None, &[]);
    assert!(tls_connect(addr, Some("other.example.com"), cfg()).await.is_err(), "unknown SNI refused");
    assert!(tls_connect(addr, None, cfg()).await.is_err(), "no SNI refused");
    // The server whose secret is missing refuses; its neighbour on the port still works.
    assert!(tls_connect(addr, Some("missing.example.com"), cfg()).await.is_err());
    assert_eq!(try_get(addr, "a.example.com", cfg()).await.unwrap().status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn plain_http_to_a_tls_port_gets_400_and_a_close() {
    let ca = Ca::new("test ca");
    let a = ca.issue("a", &["a.example.com"], &[], 10);
    let yaml = https_gateway(&[("a", "a.example.com", "a")], "") + &secret("a", &a, None, None);
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    // read_to_end returns only once the proxy closed the connection.
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&out));
    // Garbage that is not HTTP: just closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x16, 0x09, 0, 0, 0]).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.is_empty());
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_client_hello_is_cut_by_the_handshake_timeout() {
    let ca = Ca::new("test ca");
    let a = ca.issue("a", &["a.example.com"], &[], 10);
    let yaml = https_gateway(&[("a", "a.example.com", "a")], "") + &secret("a", &a, None, None);
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The start of a record, then nothing: the paused clock runs to the 10 s timeout.
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut out = Vec::new();
    let n = s.read_to_end(&mut out).await.unwrap_or(0);
    assert_eq!(n, 0);
    proxy.shutdown().await;
}

// ───────────────────────────── mutual TLS ─────────────────────────────

#[tokio::test]
async fn mutual_tls_verifies_clients_and_forwards_their_identity() {
    let be = backend("web").await;
    let ca = Ca::new("client ca");
    let server = ca.issue("server", &["m.example.com"], &[], 1);
    let good = ca.issue("good client", &[], &["spiffe://cluster.local/ns/default/sa/good"], 100);
    let revoked = ca.issue("revoked client", &[], &["spiffe://cluster.local/ns/default/sa/good"], 101);
    let wrong_san = ca.issue("other client", &[], &["spiffe://cluster.local/ns/default/sa/other"], 102);
    let rogue_ca = Ca::new("rogue ca");
    let untrusted = rogue_ca.issue("untrusted", &[], &["spiffe://cluster.local/ns/default/sa/good"], 100);
    let crl = ca.crl(&[101]);
    // A second trusted CA without a CRL: its clients are refused once CRLs are configured.
    let no_crl_ca = Ca::new("trusted ca without crl");
    let no_crl = no_crl_ca.issue("no crl", &[], &["spiffe://cluster.local/ns/default/sa/good"], 103);
    let bundle = format!("{}{}", ca.pem, no_crl_ca.pem);
    let yaml = https_gateway(
        &[("m", "m.example.com", "m")],
        ", mode: MUTUAL, subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/good\"]",
    )
    .replace("mode: SIMPLE, ", "")
        + &secret("m", &server, Some(&bundle), Some(&crl))
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let cfg = |c: Option<&Leaf>| client_config(&[&ca.pem], c, &[b"http/1.1"]);

    let r = try_get(addr, "m.example.com", cfg(Some(&good))).await.unwrap();
    assert_eq!(r.status, 200);
    let xfcc = r.seen("x-forwarded-client-cert").expect("xfcc upstream");
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &good.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        xfcc,
        format!("Hash={hash};Subject=\"O=Portico Tests,CN=good client\";URI=spiffe://cluster.local/ns/default/sa/good")
    );

    for (what, client) in [
        ("no certificate", None),
        ("revoked", Some(&revoked)),
        ("wrong SAN", Some(&wrong_san)),
        ("issuer without CRL", Some(&no_crl)),
    ] {
        assert!(try_get(addr, "m.example.com", cfg(client)).await.is_err(), "{what} must be refused");
    }
    let untrusted_cfg = client_config(&[&ca.pem], Some(&untrusted), &[b"http/1.1"]);
    assert!(try_get(addr, "m.example.com", untrusted_cfg).await.is_err(), "untrusted must be refused");
    proxy.shutdown().await;
}

#[tokio::test]
async fn optional_mutual_works_with_and_without_a_client_certificate() {
    let be = backend("web").await;
    let ca = Ca::new("client ca");
    let server = ca.issue("server", &["o.example.com"], &[], 1);
    let client = ca.issue("client", &["client.example.com"], &[], 2);
    let yaml = https_gateway(&[("o", "o.example.com", "o")], "").replace("mode: SIMPLE", "mode: OPTIONAL_MUTUAL")
        + &secret("o", &server, Some(&ca.pem), None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let r = try_get(addr, "o.example.com", client_config(&[&ca.pem], None, &[])).await.unwrap();
    assert_eq!((r.status, r.seen("x-forwarded-client-cert")), (200, None));
    let r = try_get(addr, "o.example.com", client_config(&[&ca.pem], Some(&client), &[])).await.unwrap();
    let xfcc = r.seen("x-forwarded-client-cert").unwrap();
    assert!(xfcc.contains("Subject=\"O=Portico Tests,CN=client\";DNS=client.example.com"), "{xfcc}");
    proxy.shutdown().await;
}

// ───────────────────────────── rotation ─────────────────────────────

#[tokio::test]
async fn rotation_serves_new_handshakes_and_keeps_open_connections() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let one = ca.issue("one", &["r.example.com"], &[], 1);
    let two = ca.issue("two", &["r.example.com"], &[], 2);
    let three = ca.issue("three", &["f.example.com"], &[], 3);
    let four = ca.issue("four", &["f.example.com"], &[], 4);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("f.crt"), dir.path().join("f.key"));
    std::fs::write(&cert_path, &three.cert_pem).unwrap();
    std::fs::write(&key_path, &three.key_pem).unwrap();
    let config = |leaf: &Leaf| {
        https_gateway(&[("r", "r.example.com", "r")], "")
            + &format!(
                "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: files, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: f, protocol: HTTPS}}\n    hosts: [\"f.example.com\"]\n    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}\n---\n",
                cert_path.display(),
                key_path.display()
            )
            + &secret("r", leaf, None, None)
            + &vs_all("web").replace("gateways: [\"istio-system/gw\"]", "gateways: [\"istio-system/gw\", \"istio-system/files\"]")
            + &service_entry("web", be.addr.port(), "HTTP")
    };
    let proxy = launch(tls_opts(&[443]), compile(&config(&one))).await;
    let addr = addr_of(&proxy, 443);
    let cfg = || client_config(&[&ca.pem], None, &[]);

    // A changed Secret (a new snapshot).
    let old = tls_connect(addr, Some("r.example.com"), cfg()).await.unwrap();
    assert_eq!(peer_cert(&old), one.der);
    let mut old = h1_over(old).await.unwrap();
    assert_eq!(https_get(&mut old, "r.example.com", "/1", &[]).await.unwrap().status, 200);
    proxy.apply(compile(&config(&two))).await.unwrap();
    let fresh = tls_connect(addr, Some("r.example.com"), cfg()).await.unwrap();
    assert_eq!(peer_cert(&fresh), two.der);
    assert_eq!(https_get(&mut old, "r.example.com", "/2", &[]).await.unwrap().seen_path(), "/2");

    // A changed certificate file (re-read as the periodic refresh does).
    let old_f = tls_connect(addr, Some("f.example.com"), cfg()).await.unwrap();
    assert_eq!(peer_cert(&old_f), three.der);
    let mut old_f = h1_over(old_f).await.unwrap();
    std::fs::write(&cert_path, &four.cert_pem).unwrap();
    std::fs::write(&key_path, &four.key_pem).unwrap();
    proxy.reload_tls();
    let fresh = tls_connect(addr, Some("f.example.com"), cfg()).await.unwrap();
    assert_eq!(peer_cert(&fresh), four.der);
    assert_eq!(https_get(&mut old_f, "f.example.com", "/3", &[]).await.unwrap().status, 200);
    // A broken file: that server refuses, the other one on the port keeps working.
    std::fs::write(&key_path, "not a key").unwrap();
    proxy.reload_tls();
    assert!(tls_connect(addr, Some("f.example.com"), cfg()).await.is_err());
    assert_eq!(try_get(addr, "r.example.com", cfg()).await.unwrap().status, 200);
    proxy.shutdown().await;
}

// ───────────────────────────── HTTP/2 + gRPC ─────────────────────────────

/// gRPC messages as raw bytes (no protobuf needed to exercise the framing).
#[derive(Clone, Copy, Default)]
struct Raw;
impl tonic::codec::Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}
impl tonic::codec::Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}
impl tonic::codec::Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

/// A tonic gRPC server (h2c) whose unary method answers `echo:<msg>` (messages are raw bytes).
async fn grpc_backend() -> SocketAddr {
    struct Echo;
    impl tonic::server::UnaryService<Bytes> for Echo {
        type Response = Bytes;
        type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
        fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(req.get_ref());
            std::future::ready(Ok(tonic::Response::new(Bytes::from(out))))
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(tonic::server::Grpc::new(Raw).unary(Echo, req).await)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// tonic's connector: a TLS connection to the gateway, h2 by ALPN.
#[derive(Clone)]
struct TlsConnector {
    addr: SocketAddr,
    sni: &'static str,
    cfg: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(me.addr).await?;
            let name = ServerName::try_from(me.sni).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(me.cfg).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[tokio::test]
async fn http2_by_alpn_carries_a_grpc_call() {
    let be = grpc_backend().await;
    let ca = Ca::new("test ca");
    let g = ca.issue("g", &["grpc.example.com"], &[], 1);
    let yaml = https_gateway(&[("g", "grpc.example.com", "g")], "")
        + &secret("g", &g, None, None)
        + &vs_all("grpc")
        + &service_entry("grpc", be.port(), "GRPC");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let s = tls_connect(addr, Some("grpc.example.com"), client_config(&[&ca.pem], None, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(s);

    // A tonic client whose transport is our TLS connection (tonic's own TLS is not built here).
    let connector =
        TlsConnector { addr, sni: "grpc.example.com", cfg: Arc::new(client_config(&[&ca.pem], None, &[b"h2"])) };
    let channel = tonic::transport::Endpoint::from_static("http://grpc.example.com")
        .connect_with_connector(connector)
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let r = client.unary(tonic::Request::new(Bytes::from_static(b"hi")), path, Raw).await.unwrap();
    assert_eq!(&r.into_inner()[..], b"echo:hi");
    proxy.shutdown().await;
}

// ───────────────────────────── passthrough ─────────────────────────────

/// A TLS server with its own certificate that writes `hello from <name>` and echoes.
async fn tls_backend(name: &'static str, leaf: &Leaf) -> SocketAddr {
    let key: PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else { return };
                let _ = s.write_all(format!("hello from {name}\n").as_bytes()).await;
                let _ = s.flush().await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = s.flush().await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn passthrough_relays_to_the_backend_which_presents_its_own_certificate() {
    let backend_ca = Ca::new("backend ca");
    let db = backend_ca.issue("db", &["db.pass.example.com"], &[], 7);
    let auto = backend_ca.issue("auto", &["outbound_.9000_._.auto.default.svc.cluster.local"], &[], 8);
    let be = tls_backend("db", &db).await;
    let auto_be = tls_backend("auto", &auto).await;
    let yaml = String::from(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15443, name: auto, protocol: TLS}
    hosts: ["*.local"]
    tls: {mode: AUTO_PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: ["*.pass.example.com"]
  gateways: ["istio-system/gw"]
  tls:
  - match:
    - sniHosts: ["db.pass.example.com"]
    route:
    - destination: {host: db.default.svc.cluster.local, port: {number: 9000}}
---
"#,
    ) + &service_entry("db", be.port(), "TLS")
        + &service_entry("auto", auto_be.port(), "TLS");
    let sink = Arc::new(Sink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[443, 15443]) };
    let proxy = launch(o, compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);

    let mut s =
        tls_connect(addr, Some("db.pass.example.com"), client_config(&[&backend_ca.pem], None, &[])).await.unwrap();
    assert_eq!(peer_cert(&s), db.der, "the backend's own certificate");
    let mut line = [0u8; 14];
    s.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"hello from db\n");
    s.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    drop(s);

    // No route for this SNI: closed.
    let cfg = client_config(&[&backend_ca.pem], None, &[]);
    assert!(tls_connect(addr, Some("other.pass.example.com"), cfg).await.is_err());

    // AUTO_PASSTHROUGH: the SNI names the cluster.
    let auto_addr = addr_of(&proxy, 15443);
    let sni = "outbound_.9000_._.auto.default.svc.cluster.local";
    let mut s = tls_connect(auto_addr, Some(sni), client_config(&[&backend_ca.pem], None, &[])).await.unwrap();
    assert_eq!(peer_cert(&s), auto.der);
    let mut line = [0u8; 16];
    s.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"hello from auto\n");
    drop(s);

    let recs = sink.wait_tcp(3).await;
    let db_rec = recs.iter().find(|r| r.sni.as_deref() == Some("db.pass.example.com")).expect("db record");
    assert_eq!(db_rec.upstream_cluster.as_deref(), Some("outbound|9000||db.default.svc.cluster.local"));
    assert!(db_rec.bytes_received > 100 && db_rec.bytes_sent > 100, "{db_rec:?}");
    let nr = recs.iter().find(|r| r.sni.as_deref() == Some("other.pass.example.com")).expect("no-route record");
    assert_eq!(nr.flags, portico_proxy::ResponseFlags::NO_ROUTE_FOUND);
    proxy.shutdown().await;
}

/// OpenSSL clients (wrk, curl by address) send an IP literal as SNI. rustls does not count it as
/// a server name, but routing reads it, as nginx's and HAProxy's SNI routing do: a `*` route
/// passes it through (it once got no route and was closed).
#[tokio::test]
async fn passthrough_routes_a_hello_whose_sni_is_an_ip_literal() {
    let backend_ca = Ca::new("backend ca");
    let db = backend_ca.issue("db", &["db.pass.example.com"], &[], 7);
    let be = tls_backend("db", &db).await;
    let yaml = String::from(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: ["*"]
  gateways: ["istio-system/gw"]
  tls:
  - match:
    - sniHosts: ["*"]
    route:
    - destination: {host: db.default.svc.cluster.local, port: {number: 9000}}
---
"#,
    ) + &service_entry("db", be.port(), "TLS");
    let sink = Arc::new(Sink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[443]) };
    let proxy = launch(o, compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let greeting = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "127.0.0.1", "-quiet", "-ign_eof"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        line
    })
    .await
    .unwrap();
    assert_eq!(greeting, "hello from db\n", "relayed to the backend");
    let recs = sink.wait_tcp(1).await;
    assert_eq!(recs[0].sni.as_deref(), Some("127.0.0.1"));
    proxy.shutdown().await;
}

/// A ClientHello as an old client sends it: TLS 1.0, one RSA suite, SNI and nothing else (no
/// `signature_algorithms`, which rustls requires of a hello it would terminate).
fn old_client_hello(sni: &str) -> Vec<u8> {
    portico_testkit::hello::client_hello([3, 1], &[0x002f], Some(&portico_testkit::hello::sni_ext(sni)))
}

#[tokio::test]
async fn passthrough_carries_a_hello_rustls_would_refuse_and_termination_refuses_it() {
    // The backend answers with the bytes it read, so the test sees what was relayed.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(&all).await;
            });
        }
    });
    let ca = Ca::new("gateway ca");
    let leaf = ca.issue("web", &["web.example.com"], &[], 9);
    // HTTPS on 443 (terminated), PASSTHROUGH on 8443 by a `tls` route for the old client's SNI.
    let passthrough = "  - port: {number: 8443, name: tls, protocol: TLS}\n    hosts: [\"*.pass.example.com\"]\n    tls: {mode: PASSTHROUGH}\n---\n";
    let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: pass, namespace: default}\nspec:\n  hosts: [\"*.pass.example.com\"]\n  gateways: [\"istio-system/gw\"]\n  tls:\n  - match: [{sniHosts: [old.pass.example.com]}]\n    route: [{destination: {host: db.default.svc.cluster.local, port: {number: 9000}}}]\n---\n";
    let yaml = https_gateway(&[("https", "web.example.com", "web")], "").replace("---\n", passthrough)
        + route
        + &service_entry("db", be.port(), "TLS")
        + &secret("web", &leaf, None, None);
    let proxy = launch(tls_opts(&[443, 8443]), compile(&yaml)).await;

    let hello = old_client_hello("old.pass.example.com");
    let mut s = TcpStream::connect(addr_of(&proxy, 8443)).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.shutdown().await.unwrap();
    let mut relayed = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut relayed)).await.unwrap().unwrap();
    assert_eq!(relayed, hello, "the backend got the hello byte for byte");

    // Terminating the same hello: rustls refuses it (with an alert), nothing is served.
    let mut s = TcpStream::connect(addr_of(&proxy, 443)).await.unwrap();
    s.write_all(&old_client_hello("web.example.com")).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer.first(), Some(&21), "a TLS alert record, not a handshake: {answer:?}");
    proxy.shutdown().await;
}

// ───────────────────────────── TCP ─────────────────────────────

/// A TCP server that reads until EOF, then answers `<name>:<bytes read>` and closes.
async fn tcp_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(format!("{name}:{}", all.len()).as_bytes()).await;
            });
        }
    });
    addr
}

fn tcp_config(a: u16, b: u16, extra_servers: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: ["*"]
{extra_servers}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: default}}
spec:
  hosts: ["*"]
  gateways: ["istio-system/gw"]
  tcp:
  - route:
    - destination: {{host: a.default.svc.cluster.local, port: {{number: 9000}}}}
      weight: 80
    - destination: {{host: b.default.svc.cluster.local, port: {{number: 9000}}}}
      weight: 20
---
"#
    ) + &service_entry("a", a, "TCP")
        + &service_entry("b", b, "TCP")
}

async fn tcp_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, payload: &[u8]) -> String {
    s.write_all(payload).await.unwrap();
    // Half-close: the backend sees EOF and still answers on the other half.
    s.shutdown().await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn tcp_routes_split_by_weight_with_half_close() {
    let (a, b) = (tcp_backend("a").await, tcp_backend("b").await);
    let sink = Arc::new(Sink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[9000]) };
    let proxy = launch(o, compile(&tcp_config(a.port(), b.port(), ""))).await;
    let addr = addr_of(&proxy, 9000);

    // 80/20 over 300 connections (seeded): tolerance ±8 points (3.5 standard deviations).
    const N: usize = 300;
    let mut to_a = 0;
    for i in 0..N {
        let out = tcp_exchange(TcpStream::connect(addr).await.unwrap(), format!("hello {i}").as_bytes()).await;
        let (name, n) = out.split_once(':').unwrap();
        assert_eq!(n, format!("hello {i}").len().to_string());
        if name == "a" {
            to_a += 1;
        }
    }
    let share = to_a as f64 / N as f64;
    assert!((0.72..=0.88).contains(&share), "share to a: {share}");

    let recs = sink.wait_tcp(N).await;
    assert_eq!(recs.len(), N);
    assert!(recs.iter().all(|r| r.bytes_received >= 7 && r.bytes_sent >= 3 && r.flags.is_empty()));
    proxy.shutdown().await;
}

#[tokio::test]
async fn tls_terminated_tcp_and_connect_failure_flag() {
    let a = tcp_backend("a").await;
    // `b` points at a closed port: connections routed there fail with UF.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let ca = Ca::new("test ca");
    let t = ca.issue("t", &["t.example.com"], &[], 1);
    let extra = "  - port: {number: 9443, name: tls, protocol: TLS}\n    hosts: [\"t.example.com\"]\n    tls: {mode: SIMPLE, credentialName: t}\n";
    let yaml = tcp_config(a.port(), closed.port(), extra)
        .replace("weight: 80", "weight: 100")
        .replace("weight: 20", "weight: 0")
        + &secret("t", &t, None, None);
    let sink = Arc::new(Sink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[9000, 9443]) };
    let proxy = launch(o, compile(&yaml)).await;
    let s =
        tls_connect(addr_of(&proxy, 9443), Some("t.example.com"), client_config(&[&ca.pem], None, &[])).await.unwrap();
    assert_eq!(tcp_exchange(s, b"over tls").await, "a:8");

    let yaml =
        tcp_config(closed.port(), a.port(), "").replace("weight: 80", "weight: 100").replace("weight: 20", "weight: 0");
    proxy.apply(compile(&yaml)).await.unwrap();
    let mut s = TcpStream::connect(addr_of(&proxy, 9000)).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.is_empty());
    let recs = sink.wait_tcp(2).await;
    assert!(recs.iter().any(|r| r.flags == portico_proxy::ResponseFlags::UPSTREAM_CONNECTION_FAILURE), "{recs:?}");
    proxy.shutdown().await;
}

fn tcp_destination_rule(host: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}, namespace: default}}\nspec:\n  host: {host}.default.svc.cluster.local\n  trafficPolicy: {traffic_policy}\n---\n"
    )
}

#[tokio::test(start_paused = true)]
async fn tcp_idle_timeout_comes_from_the_destination_rule() {
    let a = tcp_backend("a").await;
    let only_a = |extra: &str| {
        tcp_config(a.port(), a.port(), "").replace("weight: 80", "weight: 100").replace("weight: 20", "weight: 0")
            + extra
    };
    // (DestinationRule, the idle time after which the connection closes)
    let cases = [
        (tcp_destination_rule("a", "{connectionPool: {tcp: {idleTimeout: 5s}}}"), Duration::from_secs(5)),
        (String::new(), Duration::from_secs(3600)),
    ];
    for (dr, expected) in cases {
        let sink = Arc::new(Sink::default());
        let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[9000]) };
        let proxy = launch(o, compile(&only_a(&dr))).await;
        let mut s = TcpStream::connect(addr_of(&proxy, 9000)).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        // Nothing more moves: the relay closes both sides once idle (the backend then answers
        // into a closed socket; the client sees EOF).
        let started = tokio::time::Instant::now();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let waited = started.elapsed();
        assert!(waited >= expected && waited < expected + Duration::from_secs(1), "{dr}: closed after {waited:?}");
        let recs = sink.wait_tcp(1).await;
        assert_eq!(recs[0].flags, portico_proxy::ResponseFlags::STREAM_IDLE_TIMEOUT, "{dr}");
        proxy.shutdown().await;
    }
}

/// A TLS server (certificate `leaf`) that reads until EOF, then answers `sni=<SNI>:<bytes read>`.
async fn tls_tcp_backend(leaf: &Leaf) -> SocketAddr {
    let key = <PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let sni = s.get_ref().1.server_name().unwrap_or("").to_string();
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s.write_all(format!("sni={sni}:{}", all.len()).as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_routes_originate_tls_per_the_destination_rule() {
    let ca = Ca::new("backend ca");
    let leaf = ca.issue("a", &["a.default.svc.cluster.local", "a.internal"], &[], 7);
    let be = tls_tcp_backend(&leaf).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let base =
        tcp_config(be.port(), be.port(), "").replace("weight: 80", "weight: 100").replace("weight: 20", "weight: 0");
    // (tls settings, what the backend answers): the service host is the SNI unless `sni` is set.
    let cases = [
        (format!("{{mode: SIMPLE, caCertificates: {}}}", ca_path.display()), "sni=a.default.svc.cluster.local:5"),
        (format!("{{mode: SIMPLE, caCertificates: {}, sni: a.internal}}", ca_path.display()), "sni=a.internal:5"),
    ];
    for (tls, expected) in cases {
        let yaml = base.clone() + &tcp_destination_rule("a", &format!("{{tls: {tls}}}"));
        let proxy = launch(tls_opts(&[9000]), compile(&yaml)).await;
        let out = tcp_exchange(TcpStream::connect(addr_of(&proxy, 9000)).await.unwrap(), b"hello").await;
        assert_eq!(out, expected, "{tls}");
        proxy.shutdown().await;
    }
    // A certificate the CA did not sign: the handshake fails and the connection closes (UF).
    let other = Ca::new("other ca");
    std::fs::write(&ca_path, &other.pem).unwrap();
    let sink = Arc::new(Sink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..tls_opts(&[9000]) };
    let yaml =
        base + &tcp_destination_rule("a", &format!("{{tls: {{mode: SIMPLE, caCertificates: {}}}}}", ca_path.display()));
    let proxy = launch(o, compile(&yaml)).await;
    let mut s = TcpStream::connect(addr_of(&proxy, 9000)).await.unwrap();
    let _ = s.write_all(b"hello").await;
    // Closed unanswered (a reset, as the proxy drops unread bytes, is fine too).
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(sink.wait_tcp(1).await[0].flags, portico_proxy::ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
    proxy.shutdown().await;
}

// ───────────────────────────── real clients ─────────────────────────────

#[tokio::test]
async fn curl_and_openssl_talk_to_an_https_server() {
    let OneServer { proxy, addr, ca, .. } = one_https_server("curl.example.com").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, &ca.pem).unwrap();

    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP curl part: curl is not installed");
    } else {
        let port = addr.port();
        let ca_path = ca_path.clone();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-sS", "--max-time", "20", "--http2", "--resolve"])
                .arg(format!("curl.example.com:{port}:127.0.0.1"))
                .arg("--cacert")
                .arg(&ca_path)
                .args(["-w", "\n%{http_version} %{http_code}"])
                .arg(format!("https://curl.example.com:{port}/via-curl"))
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "curl: {text} {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.ends_with("2 200"), "{text}");
        assert!(text.contains("\"path\":\"/via-curl\""), "{text}");
    }

    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP openssl part: openssl is not installed");
    } else {
        let port = addr.port();
        let out = tokio::task::spawn_blocking(move || {
            let run = |extra: &[&str]| {
                let mut cmd = std::process::Command::new("openssl");
                cmd.args(["s_client", "-connect"])
                    .arg(format!("127.0.0.1:{port}"))
                    .args(["-servername", "curl.example.com", "-CAfile"])
                    .arg(&ca_path)
                    .args(extra)
                    .stdin(std::process::Stdio::null());
                cmd.output().unwrap()
            };
            (run(&["-verify_return_error"]), run(&["-tls1_1"]))
        })
        .await
        .unwrap();
        let good = String::from_utf8_lossy(&out.0.stdout).to_string();
        assert!(good.contains("Verify return code: 0 (ok)"), "{good}");
        assert!(good.contains("CN=c") || good.contains("CN = c"), "{good}");
        assert!(!out.1.status.success(), "TLS 1.1 must be refused");
    }
    proxy.shutdown().await;
}

// ───────────────────────────── more ─────────────────────────────

#[tokio::test]
async fn https_redirect_on_plaintext_then_served_over_tls() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let s = ca.issue("s", &["shop.example.com"], &[], 1);
    let yaml = String::from(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["shop.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["shop.example.com"]
    tls: {mode: SIMPLE, credentialName: s}
---
"#,
    ) + &secret("s", &s, None, None)
        + &vs_all("web").replace("hosts: [\"*\"]", "hosts: [\"shop.example.com\"]")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[80, 443]), compile(&yaml)).await;
    let mut c = H1::connect(addr_of(&proxy, 80)).await;
    // Whatever X-Forwarded-Proto the client claims, plaintext is redirected, before routing.
    for xfp in ["http", "https"] {
        let r = c
            .send(
                req("GET", "shop.example.com", "/cart?item=1")
                    .header("x-forwarded-proto", xfp)
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location").as_deref(), Some("https://shop.example.com/cart?item=1"));
    }
    // Over TLS the same host is served (no redirect loop).
    let r = try_get(addr_of(&proxy, 443), "shop.example.com", client_config(&[&ca.pem], None, &[])).await.unwrap();
    assert_eq!((r.status, r.backend()), (200, "web".to_string()));
    proxy.shutdown().await;
}

/// Issue a client certificate and return it with its SPKI pin and certificate hash.
fn pinned(ca: &Ca, cn: &str, serial: u64) -> (Leaf, String, String) {
    use base64::Engine;
    let leaf = ca.issue(cn, &[], &[], serial);
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf.der).unwrap();
    let spki = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, x509.tbs_certificate.subject_pki.raw);
    let spki = base64::engine::general_purpose::STANDARD.encode(spki.as_ref());
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &leaf.der);
    let hash: Vec<String> = hash.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    (leaf, spki, hash.join(":"))
}

#[tokio::test]
async fn mutual_tls_certificate_pins() {
    let be = backend("web").await;
    let ca = Ca::new("client ca");
    let server = ca.issue("server", &["p.example.com", "h.example.com"], &[], 1);
    let (by_spki, spki, _) = pinned(&ca, "by spki", 2);
    let (by_hash, _, hash) = pinned(&ca, "by hash", 3);
    let (other, _, _) = pinned(&ca, "other", 4);
    let yaml = https_gateway(&[("p", "p.example.com", "p")], &format!(", verifyCertificateSpki: [\"{spki}\"]"))
        .replace("mode: SIMPLE", "mode: MUTUAL")
        + &secret("p", &server, Some(&ca.pem), None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let yaml = yaml.replacen(
        "---\n",
        &format!(
            "  - port: {{number: 443, name: h, protocol: HTTPS}}\n    hosts: [\"h.example.com\"]\n    tls: {{mode: MUTUAL, credentialName: p, verifyCertificateHash: [\"{hash}\"]}}\n---\n"
        ),
        1,
    );
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let cfg = |c: &Leaf| client_config(&[&ca.pem], Some(c), &[]);
    assert_eq!(try_get(addr, "p.example.com", cfg(&by_spki)).await.unwrap().status, 200);
    assert!(try_get(addr, "p.example.com", cfg(&other)).await.is_err());
    assert_eq!(try_get(addr, "h.example.com", cfg(&by_hash)).await.unwrap().status, 200);
    assert!(try_get(addr, "h.example.com", cfg(&by_spki)).await.is_err());
    proxy.shutdown().await;
}

#[tokio::test]
async fn rsa_and_ecdsa_certificates_on_one_server() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP: openssl is not installed");
        return;
    }
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let ecdsa = ca.issue("ecdsa", &["two.example.com"], &[], 1);
    let rsa = {
        let mut p = CertificateParams::new(vec!["two.example.com".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "rsa");
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        ca.sign(&p, &key)
    };
    let yaml = https_gateway(&[("t", "two.example.com", "x")], "")
        .replace("credentialName: x", "credentialNames: [ec, rsa]")
        + &secret("ec", &ecdsa, None, None)
        + &secret("rsa", &rsa, None, None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let port = addr_of(&proxy, 443).port();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let run = |sigalgs: &str| {
            let o = std::process::Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "two.example.com"])
                .arg("-CAfile")
                .arg(&ca_path)
                .args(["-sigalgs", sigalgs])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        (run("ECDSA+SHA256"), run("rsa_pss_rsae_sha256:RSA+SHA256"))
    })
    .await
    .unwrap();
    assert!(out.0.contains("CN=ecdsa") || out.0.contains("CN = ecdsa"), "{}", out.0);
    assert!(out.1.contains("CN=rsa") || out.1.contains("CN = rsa"), "{}", out.1);
    proxy.shutdown().await;
}

#[tokio::test]
async fn protocol_versions_and_cipher_suites_follow_the_server_settings() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let v = ca.issue("v", &["v13.example.com", "c12.example.com"], &[], 1);
    let yaml = https_gateway(&[("v", "v13.example.com", "v")], ", minProtocolVersion: TLSV1_3")
        + &https_gateway(
            &[("c", "c12.example.com", "v")],
            ", maxProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-ECDSA-CHACHA20-POLY1305, NOT-A-SUITE]",
        )
        .replace("name: gw,", "name: gw2,")
        + &secret("v", &v, None, None)
        + &vs_all("web")
            .replace("gateways: [\"istio-system/gw\"]", "gateways: [\"istio-system/gw\", \"istio-system/gw2\"]")
        + &service_entry("web", be.addr.port(), "HTTP");
    // The unknown suite is a warning (dropped), not an error.
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let only = |v: &'static rustls::SupportedProtocolVersion| client_for(&ca, &[v], provider());
    assert!(tls_connect(addr, Some("v13.example.com"), only(&rustls::version::TLS12)).await.is_err());
    let s = tls_connect(addr, Some("v13.example.com"), only(&rustls::version::TLS13)).await.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));

    assert!(tls_connect(addr, Some("c12.example.com"), only(&rustls::version::TLS13)).await.is_err());
    let s = tls_connect(addr, Some("c12.example.com"), client_config(&[&ca.pem], None, &[])).await.unwrap();
    let session = s.get_ref().1;
    assert_eq!(session.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(
        session.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_server_prefers_aes_128_gcm_whatever_the_clients_order() {
    let OneServer { proxy, addr, ca, .. } = one_https_server("p.example.com").await;
    // The client lists AES-256-GCM first (rustls' own order, and OpenSSL's).
    let offering = |v: &'static rustls::SupportedProtocolVersion| {
        let mut provider = (*provider()).clone();
        let aes256 = |s: rustls::CipherSuite| {
            matches!(
                s,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            )
        };
        provider.cipher_suites.sort_by_key(|s| !aes256(s.suite()));
        assert!(aes256(provider.cipher_suites[0].suite()));
        client_for(&ca, &[v], Arc::new(provider))
    };
    for (version, want) in [
        (&rustls::version::TLS13, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
        (&rustls::version::TLS12, rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ] {
        let s = tls_connect(addr, Some("p.example.com"), offering(version)).await.unwrap();
        assert_eq!(s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite()), Some(want));
    }
    // A real OpenSSL client (AES-256-GCM first in its default TLS 1.3 list) is answered the same.
    let out = tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "p.example.com", "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout)
    })
    .await
    .unwrap();
    assert!(out.contains("TLS_AES_128_GCM_SHA256"), "{out}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_client_resumes_its_session_however_many_clients_came_between() {
    let OneServer { proxy, addr, ca, .. } = one_https_server("p.example.com").await;
    let kind = |s: &TlsStream<TcpStream>| s.get_ref().1.handshake_kind();
    // Clones of one client config share its session store.
    let first = client_config(&[&ca.pem], None, &[]);
    let visit = |cfg: rustls::ClientConfig| async move {
        let s = tls_connect(addr, Some("p.example.com"), cfg).await.unwrap();
        let k = kind(&s);
        // The response is read after the tickets, so the client has stored them.
        let mut c = h1_over(s).await.unwrap();
        assert_eq!(https_get(&mut c, "p.example.com", "/", &[]).await.unwrap().status, 200);
        k
    };
    assert_eq!(visit(first.clone()).await, Some(rustls::HandshakeKind::Full));
    assert_eq!(visit(first.clone()).await, Some(rustls::HandshakeKind::Resumed));
    // More clients than a session cache of a few hundred holds, each with a store of its own.
    for _ in 0..300 {
        let s = tls_connect(addr, Some("p.example.com"), client_config(&[&ca.pem], None, &[])).await.unwrap();
        assert_eq!(kind(&s), Some(rustls::HandshakeKind::Full));
    }
    assert_eq!(visit(first.clone()).await, Some(rustls::HandshakeKind::Resumed));
    // TLS 1.2 clients resume by ticket too.
    let v12 = client_for(&ca, &[&rustls::version::TLS12], provider());
    assert_eq!(visit(v12.clone()).await, Some(rustls::HandshakeKind::Full));
    assert_eq!(visit(v12.clone()).await, Some(rustls::HandshakeKind::Resumed));
    proxy.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn certificate_files_are_re_read_periodically() {
    let ca = Ca::new("test ca");
    let (one, two) = (ca.issue("one", &["p.example.com"], &[], 1), ca.issue("two", &["p.example.com"], &[], 2));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("p.crt"), dir.path().join("p.key"));
    std::fs::write(&cert, &one.cert_pem).unwrap();
    std::fs::write(&key, &one.key_pem).unwrap();
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 443, name: p, protocol: HTTPS}}\n    hosts: [\"p.example.com\"]\n    tls: {{mode: SIMPLE, serverCertificate: {}, privateKey: {}}}\n",
        cert.display(),
        key.display()
    );
    // Only handshakes here (no HTTP timers); the handshake timeout is far beyond the test's
    // virtual time, so the paused clock only ever jumps to the refresh ticks.
    let o = ProxyOptions {
        tls_refresh_interval: Duration::from_secs(10),
        tls_handshake_timeout: Duration::from_secs(24 * 3600),
        ..tls_opts(&[443])
    };
    let proxy = launch(o, compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let cfg = || client_config(&[&ca.pem], None, &[]);
    assert_eq!(peer_cert(&tls_connect(addr, Some("p.example.com"), cfg()).await.unwrap()), one.der);
    std::fs::write(&cert, &two.cert_pem).unwrap();
    std::fs::write(&key, &two.key_pem).unwrap();
    // Two refresh periods of virtual time: at least one re-read ran.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        // Let the blocking re-read finish (it runs on real threads).
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }
    let mut seen = peer_cert(&tls_connect(addr, Some("p.example.com"), cfg()).await.unwrap());
    // The re-read runs on the blocking pool, in real time: allow it a moment.
    for _ in 0..100 {
        if seen == two.der {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_secs(10)).await;
        seen = peer_cert(&tls_connect(addr, Some("p.example.com"), cfg()).await.unwrap());
    }
    assert_eq!(seen, two.der);
    proxy.shutdown().await;
}

/// `--max-uri-length` on HTTP/2 over TLS (ALPN `h2`): a longer `:path` gets 414 and is not
/// forwarded; the connection goes on.
#[tokio::test]
async fn h2_over_tls_long_paths_get_414() {
    let be = backend("web").await;
    let ca = Ca::new("test ca");
    let w = ca.issue("w", &["web.example.com"], &[], 1);
    let yaml = https_gateway(&[("w", "web.example.com", "w")], "")
        + &secret("w", &w, None, None)
        + &vs_all("web")
        + &service_entry("web", be.addr.port(), "HTTP");
    let proxy = launch(tls_opts(&[443]), compile(&yaml)).await;
    let addr = addr_of(&proxy, 443);
    let s = tls_connect(addr, Some("web.example.com"), client_config(&[&ca.pem], None, &[b"h2"])).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = H2::over(s).await.unwrap();
    assert_eq!(c.get("web.example.com", &format!("/{}", "a".repeat(17 * 1024))).await.status, 414);
    assert_eq!(c.get("web.example.com", "/ok").await.status, 200);
    assert_eq!(be.requests.load(std::sync::atomic::Ordering::SeqCst), 1, "the long path was forwarded");
    proxy.shutdown().await;
}
