#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Protocols and the request itself: HTTP/1.1 + h2c on one port, gRPC (tonic), WebSocket,
//! proxy headers, path normalization, malformed / oversized / slow requests.

mod common;

use bytes::{Buf, BufMut, Bytes};
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_model::matcher::{RequestMatch, StrMatch};
use portico_model::snapshot::*;
use portico_proxy::path::PathNormalization;
use portico_proxy::ProxyOptions;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

#[tokio::test]
async fn http1_and_h2c_on_the_same_port() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let r1 = get(addr, "a.example.com", "/one").await;
    assert_eq!((r1.status, r1.json()["version"].as_str()), (200, Some("HTTP/1.1")));
    let mut h2 = H2::connect(addr).await;
    let r2 = h2.get("a.example.com", "/two").await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.seen_path(), "/two");
    // :authority becomes Host for the HTTP/1.1 upstream.
    assert_eq!(r2.seen("host").as_deref(), Some("a.example.com"));
    // Many streams on one client connection.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut c = h2.clone();
        tasks.push(tokio::spawn(async move { c.get("a.example.com", &format!("/s/{i}")).await.seen_path() }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), format!("/s/{i}"));
    }
}

/// The streams of one HTTP/2 connection run in that connection's task: a stream waiting on a
/// slow upstream must not hold up the others.
#[tokio::test]
async fn a_slow_h2_stream_does_not_hold_up_the_others_on_its_connection() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let h2 = H2::connect(addr).await;
    let mut slow_client = h2.clone();
    let slow = tokio::spawn(async move {
        let r = http::Request::builder().uri("http://h/slow").header("x-delay-ms", "10000").body(Default::default());
        read(slow_client.sender.send_request(r.unwrap()).await.unwrap()).await
    });
    // Let the slow stream reach the backend first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        let r = h2.clone().get("h", &format!("/fast/{i}")).await;
        assert_eq!(r.status, 200);
    }
    // Had they waited for it, it would be done by now (its 10 s leave a loaded machine room).
    assert!(!slow.is_finished(), "the fast streams were held up by the slow one");
    slow.abort();
}

#[tokio::test]
async fn h2c_request_trailers_reach_an_h2_upstream() {
    let be = backend("be").await;
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", vec![route(vec![], forward("c"))])])],
        vec![cluster_h2("c", &[be.addr])],
    );
    let (_proxy, addr) = start(snap).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    type B = http_body_util::combinators::BoxBody<Bytes, Infallible>;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, B>(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"payload"))), Ok(Frame::trailers(trailers))];
    let body: B = BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let req = http::Request::builder()
        .method("POST")
        .uri("http://t.example.com/up")
        .header("te", "trailers")
        .header("x-trailer", "resp-trailer")
        .body(body)
        .unwrap();
    let r = read(sender.send_request(req).await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "payload");
    assert_eq!(r.json()["trailers"]["x-checksum"], "abc");
    assert_eq!(r.seen("te").as_deref(), Some("trailers"));
    assert_eq!(r.trailers.unwrap().get("x-trailer").unwrap(), "resp-trailer");
}

// ───────────────────────────── gRPC ─────────────────────────────

/// Messages are plain UTF-8 strings (no protobuf needed to exercise the framing).
#[derive(Clone, Copy, Default)]
struct StrCodec;

impl Codec for StrCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StrCodec;
    type Decoder = StrCodec;
    fn encoder(&mut self) -> StrCodec {
        StrCodec
    }
    fn decoder(&mut self) -> StrCodec {
        StrCodec
    }
}

impl Encoder for StrCodec {
    type Item = String;
    type Error = Status;
    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StrCodec {
    type Item = String;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let b = src.copy_to_bytes(src.remaining());
        String::from_utf8(b.to_vec()).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

type MsgStream = Pin<Box<dyn futures_util::Stream<Item = Result<String, Status>> + Send>>;

/// `/test.Echo/Stream`: two messages, then an error status (in the trailers, after data).
struct StreamSvc;
impl tonic::server::ServerStreamingService<String> for StreamSvc {
    type Response = String;
    type ResponseStream = MsgStream;
    type Future = std::future::Ready<Result<tonic::Response<MsgStream>, Status>>;
    fn call(&mut self, req: tonic::Request<String>) -> Self::Future {
        let te = req.metadata().get("te").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let msg = req.into_inner();
        let items =
            vec![Ok(format!("{msg}-1")), Ok(format!("{msg}-2 te={te}")), Err(Status::data_loss("boom after data"))];
        std::future::ready(Ok(tonic::Response::new(Box::pin(futures_util::stream::iter(items)))))
    }
}

/// `/test.Echo/Unary`: echoes, or fails with NOT_FOUND for "missing".
struct UnarySvc;
impl tonic::server::UnaryService<String> for UnarySvc {
    type Response = String;
    type Future = std::future::Ready<Result<tonic::Response<String>, Status>>;
    fn call(&mut self, req: tonic::Request<String>) -> Self::Future {
        let msg = req.into_inner();
        std::future::ready(if msg == "missing" {
            Err(Status::not_found("no such thing"))
        } else {
            Ok(tonic::Response::new(format!("echo:{msg}")))
        })
    }
}

async fn grpc_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let mut grpc = tonic::server::Grpc::new(StrCodec);
                let resp = match req.uri().path() {
                    "/test.Echo/Stream" => grpc.server_streaming(StreamSvc, req).await,
                    _ => grpc.unary(UnarySvc, req).await,
                };
                Ok::<_, Infallible>(resp)
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

#[tokio::test]
async fn grpc_end_to_end_with_trailers() {
    let be = grpc_backend().await;
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", vec![route(vec![uri_prefix("/test.Echo/")], forward("grpc"))])])],
        vec![cluster_h2("grpc", &[be])],
    );
    let sink = Arc::new(RecordingSink::default());
    let (_proxy, addr) =
        start_with(portico_proxy::ProxyOptions { access_log: sink.clone(), ..opts(&[80]) }, snap).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);

    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let r = client.unary(tonic::Request::new("hi".to_string()), path.clone(), StrCodec).await.unwrap();
    assert_eq!(r.into_inner(), "echo:hi");

    client.ready().await.unwrap();
    let err = client.unary(tonic::Request::new("missing".to_string()), path, StrCodec).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "no such thing"));

    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Stream");
    let mut stream =
        client.server_streaming(tonic::Request::new("s".to_string()), path, StrCodec).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().as_deref(), Some("s-1"));
    assert_eq!(stream.message().await.unwrap().as_deref(), Some("s-2 te=trailers"));
    let status = stream.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (tonic::Code::DataLoss, "boom after data"));
    drop(stream);

    let recs = sink.wait_for(3).await;
    let grpc: Vec<Option<u32>> = recs.iter().map(|r| r.grpc_status).collect();
    assert_eq!(grpc, [Some(0), Some(5), Some(15)]);
    assert!(recs.iter().all(|r| r.status == 200 && r.flags.is_empty()), "{recs:?}");
}

/// Errors generated at the gateway reach a gRPC client as gRPC (Envoy's local replies to gRPC
/// requests): HTTP 200, trailers-only, the HTTP status mapped to a gRPC code — no route → 404 →
/// UNIMPLEMENTED, no endpoint → 503 → UNAVAILABLE with its text as `grpc-message`.
#[tokio::test]
async fn local_replies_to_grpc_callers_are_grpc_statuses() {
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", vec![route(vec![uri_prefix("/test.Echo/")], forward("empty"))])])],
        vec![cluster_h2("empty", &[])],
    );
    let sink = Arc::new(RecordingSink::default());
    let (_proxy, addr) =
        start_with(portico_proxy::ProxyOptions { access_log: sink.clone(), ..opts(&[80]) }, snap).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = tonic::client::Grpc::new(channel);

    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Unary");
    let err = client.unary(tonic::Request::new("hi".to_string()), path, StrCodec).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::Unavailable, "no healthy upstream"));

    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/other.Svc/Call");
    let err = client.unary(tonic::Request::new("hi".to_string()), path, StrCodec).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let recs = sink.wait_for(2).await;
    let seen: Vec<(u16, Option<u32>, String)> =
        recs.iter().map(|r| (r.status, r.grpc_status, r.flags.to_string())).collect();
    assert_eq!(seen, [(200, Some(14), "UH".to_string()), (200, Some(12), "NR".to_string())]);
}

// ───────────────────────────── WebSocket ─────────────────────────────

async fn ws_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let be = ws_backend().await;
    let (_proxy, addr) = start(simple(be)).await;

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let request = "ws://ws.example.com/chat".into_client_request().unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(got.into_text().unwrap().as_str(), format!("hello {i}"));
    }
    ws.close(None).await.unwrap();

    // Tokens compared case-insensitively, `Connection` with several tokens.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: WebSocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
}

/// Read until the end of a response head (bounded).
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

// ───────────────────────────── headers and paths ─────────────────────────────

#[tokio::test]
async fn proxy_headers() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    let r = c
        .send(
            req("GET", "Api.Example.com:8080", "/h")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-proto", "https")
                .header("x-envoy-upstream-rq-timeout-ms", "1")
                .header("x-envoy-internal", "true")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "trailers, deflate")
                .header("x-custom", "kept")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.seen("x-forwarded-for").as_deref(), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(r.seen("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(r.seen("host").as_deref(), Some("Api.Example.com:8080"));
    assert_eq!(r.seen("x-custom").as_deref(), Some("kept"));
    assert_eq!(r.seen("te").as_deref(), Some("trailers"));
    // A loopback client is internal (Envoy's verdict, not the client's claim), with one try.
    assert_eq!(r.seen("x-envoy-internal").as_deref(), Some("true"));
    assert_eq!(r.seen("x-envoy-external-address"), None);
    assert_eq!(r.seen("x-envoy-attempt-count").as_deref(), Some("1"));
    for gone in ["x-envoy-upstream-rq-timeout-ms", "x-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(r.seen(gone), None, "{gone} must not be forwarded");
    }
    let id = r.seen("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "UUID v4: {id}");

    let r2 = c.get("a", "/").await;
    assert_ne!(r2.seen("x-request-id").unwrap(), id, "a new id per request");
    assert_eq!(r2.seen("x-forwarded-for").as_deref(), Some("127.0.0.1"));

    let r3 = c.send(req("GET", "a", "/").header("x-request-id", "given-id").body(Default::default()).unwrap()).await;
    assert_eq!(r3.seen("x-request-id").as_deref(), Some("given-id"));
}

#[tokio::test]
async fn paths_are_normalized_before_matching_and_forwarding() {
    let be = backend("be").await;
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost(
                "*",
                vec![
                    route(
                        vec![RequestMatch { uri: Some(StrMatch::Exact("/b".into())), ..Default::default() }],
                        forward("c"),
                    ),
                    route(vec![uri_prefix("/x/")], forward("c")),
                    route(vec![], RouteAction::DirectResponse { status: 404, body: Arc::from(&b"other"[..]) }),
                ],
            )],
        )],
        vec![cluster("c", &[be.addr])],
    );
    let (_proxy, addr) = start(snap.clone()).await;
    let mut c = H1::connect(addr).await;
    for (sent, seen) in [
        ("/a/../b", "/b"),
        ("/a/./../b", "/b"),
        ("/%61/%2E%2e/b", "/b"),
        // Istio's default (BASE) keeps `//` and escaped slashes.
        ("/x//y/./z?q=1", "/x//y/z?q=1"),
        ("/x/a%2fb", "/x/a%2Fb"),
    ] {
        let r = c.get("h", sent).await;
        assert_eq!((r.status, r.seen_path()), (200, seen.to_string()), "{sent}");
    }
    assert_eq!(c.get("h", "/a/../c").await.text(), "other");
    for (mode, seen) in
        [(PathNormalization::MergeSlashes, "/x/y/a%2Fb"), (PathNormalization::DecodeAndMergeSlashes, "/x/y/a/b")]
    {
        let (_proxy, addr) = start_with(ProxyOptions { path_normalization: mode, ..opts(&[80]) }, snap.clone()).await;
        let r = H1::connect(addr).await.get("h", "/x//y/a%2fb").await;
        assert_eq!((r.status, r.seen_path()), (200, seen.to_string()), "{mode:?}");
    }

    // A NUL byte (%00) cannot be normalized: 400.
    let r = get(addr, "h", "/a%00b").await;
    assert_eq!(r.status, 400);
}

// ───────────────────────────── bad clients ─────────────────────────────

#[tokio::test]
async fn malformed_and_oversized_requests() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GARBAGE\x01 WHAT\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head:?}");

    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let _ = s.write_all(&big).await;
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head:?}");

    // Too many headers also → 431.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let _ = s.write_all(&many).await;
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head:?}");

    // Others are unaffected.
    assert_eq!(get(addr, "h", "/").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn slowloris_is_cut_off_by_the_header_read_timeout() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut good = H1::connect(addr).await;
    assert_eq!(good.get("h", "/").await.status, 200);

    // Part of an HTTP/1 head, and part of the HTTP/2 preface: both stall.
    for partial in [&b"GET / HTTP/1.1\r\nHost: h\r\nx-slow: "[..], &b"PRI * HTTP/2"[..]] {
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(partial).await.unwrap();
        let mut buf = [0u8; 256];
        // The paused clock runs forward to the timeout; the proxy closes the connection.
        let n = tokio::time::timeout(Duration::from_secs(60), slow.read(&mut buf)).await;
        match n {
            // An HTTP/1 head is answered (Envoy's request_headers_timeout); a preface not yet
            // known to be HTTP/2 is closed.
            Ok(Ok(n)) if partial.starts_with(b"GET") => {
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"), "{n}");
            }
            Ok(Ok(n)) => assert_eq!(n, 0),
            Ok(Err(_)) if !partial.starts_with(b"GET") => {}
            Ok(Err(e)) => panic!("no 408 for a slow head: {e}"),
            Err(_) => panic!("slow connection was not closed"),
        }
    }
    // A fresh connection is served.
    assert_eq!(get(addr, "h", "/").await.status, 200);
}

/// Istio's gateways refuse HTTP/1.0 with 426 unless told to accept it (`PILOT_HTTP10`, or the
/// gateway's `HTTP10` metadata; here `--accept-http10`).
#[tokio::test]
async fn http10_gets_426_unless_accepted() {
    use std::sync::atomic::Ordering;
    let be = backend("be").await;
    let sink = Arc::new(RecordingSink::default());
    let o = portico_proxy::ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
    let (_p, addr) = start_with(o, simple(be.addr)).await;
    let (resp, closed) = send_raw(addr, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 426 Upgrade Required\r\n"), "{resp}");
    assert!(resp.contains("send HTTP/1.1"), "the body says what to do: {resp}");
    assert!(closed);
    assert_eq!(be.requests.load(Ordering::SeqCst), 0, "nothing was forwarded");
    let recs = sink.wait_for(1).await;
    assert_eq!((recs[0].status, recs[0].details), (426, "low_version"));
    // HTTP/1.1 on the same gateway is served.
    let (resp, _) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    let o = portico_proxy::ProxyOptions { accept_http10: true, ..opts(&[80]) };
    let (_p, addr) = start_with(o, simple(be.addr)).await;
    let (resp, closed) = send_raw(addr, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(closed, "HTTP/1.0 without keep-alive closes after the response");
}
