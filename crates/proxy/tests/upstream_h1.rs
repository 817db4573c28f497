#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! The HTTP/1.1 exchange with upstreams, against backends that answer with scripted bytes:
//! response framings (chunked with extensions and trailers, interim 1xx, close-delimited
//! HTTP/1.0), connection reuse, an upstream that closes idle connections, an early answer to
//! an upload, and heads past Envoy's limits.

mod common;

use common::*;
use http_body_util::Full;
use portico_model::snapshot::{RetryOn, RetryPolicy};
use portico_proxy::{ProxyOptions, ResponseFlags};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a scripted backend connection behaves after it has written its answer.
#[derive(Clone, Copy)]
enum After {
    /// Keep the connection and answer the next request the same way.
    KeepAlive,
    /// Close the connection right away.
    Close,
    /// Keep it open this long without traffic, then close it.
    CloseWhenIdleFor(Duration),
}

struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Connections the backend has closed.
    closed: Arc<AtomicUsize>,
}

impl Scripted {
    /// Waits until the backend has closed `n` connections (at most 10 s).
    async fn closed(&self, n: usize) {
        for _ in 0..1000 {
            if self.closed.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the backend closed {} connections, not {n}", self.closed.load(Ordering::SeqCst));
    }
}

/// A backend answering every request head with `answer`; it does not read request bodies.
async fn scripted(answer: Vec<u8>, after: After) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let closed = Arc::new(AtomicUsize::new(0));
    let (c, r, done) = (conns.clone(), requests.clone(), closed.clone());
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (r, answer, done) = (r.clone(), answer.clone(), done.clone());
            tokio::spawn(async move {
                serve_script(&mut s, &answer, after, &r).await;
                drop(s);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Scripted { addr, conns, requests, closed }
}

/// Answer each request head on `s` with `answer`, then behave as `after` says.
async fn serve_script(s: &mut TcpStream, answer: &[u8], after: After, r: &AtomicUsize) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            got.drain(..end + 4);
            r.fetch_add(1, Ordering::SeqCst);
            if s.write_all(answer).await.is_err() {
                return;
            }
            match after {
                After::KeepAlive => {}
                After::Close => return,
                After::CloseWhenIdleFor(t) => {
                    match tokio::time::timeout(t, s.read(&mut buf)).await {
                        Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return,
                        Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                    }
                    continue;
                }
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn chunked_responses_with_interim_heads_extensions_and_trailers_are_read_and_reused() {
    let be = scripted(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-from: be\r\n\r\n\
          5\r\nhello\r\n6;name=value\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n"
            .to_vec(),
        After::KeepAlive,
    )
    .await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    // HTTP/2 to the client, so the trailers have somewhere to go.
    let mut client = H2::connect(addr).await;
    for _ in 0..3 {
        let r = client.get("h", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
        assert_eq!(r.header("x-from").as_deref(), Some("be"));
        assert_eq!(r.trailers.as_ref().and_then(|t| t.get("x-checksum")).unwrap(), "42");
    }
    assert_eq!(be.conns.load(Ordering::SeqCst), 1, "the connection is reused after each chunked body");
}

#[tokio::test]
async fn a_close_delimited_http10_response_is_read_to_the_end_and_not_reused() {
    let be = scripted(b"HTTP/1.0 200 OK\r\nx-old: yes\r\n\r\nbody until close".to_vec(), After::Close).await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut client = H1::connect(addr).await;
    for _ in 0..2 {
        let r = client.get("h", "/").await;
        assert_eq!((r.status, r.text().as_str()), (200, "body until close"));
    }
    assert_eq!(be.conns.load(Ordering::SeqCst), 2);
}

/// RFC 9112 §6.3 from the header lines as sent: a `Content-Length` list of equal values frames
/// the body; the last transfer coding decides over `Content-Length`; `Connection` tokens (any
/// case, any line) decide reuse; HTTP/1.0 keeps the connection only when asked.
#[tokio::test]
async fn response_framing_and_reuse_follow_the_header_lines() {
    let cases: [(&str, &[u8], &str, usize); 5] = [
        ("a list of equal lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", "ok", 1),
        (
            "chunked last wins over a length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "ok",
            // Both framings: answered, but the connection is not trusted with another request.
            3,
        ),
        ("close on a second line", b"HTTP/1.1 200 OK\r\nconnection: x-a\r\nConnection: foo, CLOSE\r\ncontent-length: 2\r\n\r\nok", "ok", 3),
        ("HTTP/1.0 asking to keep it", b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok", "ok", 1),
        ("HTTP/1.0 with a length only", b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", "ok", 3),
    ];
    for (name, answer, body, conns) in cases {
        let be = scripted(answer.to_vec(), After::KeepAlive).await;
        let (_proxy, addr) = start(simple(be.addr)).await;
        let mut client = H1::connect(addr).await;
        for _ in 0..3 {
            let r = client.get("h", "/").await;
            assert_eq!((r.status, r.text().as_str()), (200, body), "{name}");
        }
        assert_eq!(be.conns.load(Ordering::SeqCst), conns, "{name}: upstream connections");
    }
}

/// The upstream connection's own headers stay on it: `Connection` and the headers it names,
/// `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade` reach no client, over
/// HTTP/1.1 or HTTP/2; the rest do.
#[tokio::test]
async fn hop_by_hop_response_headers_stay_on_the_upstream_connection() {
    let be = scripted(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nconnection: x-private\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nx-private: 1\r\nx-public: 2\r\n\
          Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            .to_vec(),
        After::KeepAlive,
    )
    .await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let hop = ["connection", "x-private", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding"];
    let r = H1::connect(addr).await.get("h", "/").await;
    assert_eq!((r.status, r.text().as_str(), r.header("x-public").as_deref()), (200, "ok", Some("2")));
    // The downstream connection frames the body its own way (a length or chunks of its own).
    for name in &hop[..5] {
        assert_eq!(r.header(name), None, "HTTP/1.1: {name}");
    }
    let r = H2::connect(addr).await.get("h", "/").await;
    assert_eq!((r.status, r.text().as_str(), r.header("x-public").as_deref()), (200, "ok", Some("2")));
    for name in hop {
        assert_eq!(r.header(name), None, "HTTP/2: {name}");
    }
    assert_eq!(be.conns.load(Ordering::SeqCst), 1, "kept alive for both");
}

/// What an upstream Envoy says about a failure decides its retry, as in Envoy: a response
/// marked `x-envoy-overloaded` is never retried; one marked `x-envoy-ratelimited` only under
/// `envoy-ratelimited`, whatever its status.
#[tokio::test]
async fn an_upstream_envoys_marks_decide_retries() {
    let cases: [(&str, &str, &str, usize); 4] = [
        ("a plain 503 under 5xx", "503 Service Unavailable\r\n", "5xx", 3),
        ("an overloaded 503 under 5xx", "503 Service Unavailable\r\nx-envoy-overloaded: true\r\n", "5xx", 1),
        (
            "a rate-limited 429 under envoy-ratelimited",
            "429 Too Many Requests\r\nx-envoy-ratelimited: true\r\n",
            "envoy-ratelimited",
            3,
        ),
        ("a rate-limited 503 under 5xx", "503 Service Unavailable\r\nx-envoy-ratelimited: true\r\n", "5xx", 1),
    ];
    for (name, head, on, tries) in cases {
        let answer = format!("HTTP/1.1 {head}content-length: 0\r\n\r\n");
        let be = scripted(answer.into_bytes(), After::KeepAlive).await;
        let mut r = route(vec![], forward("c"));
        let retry_on = RetryOn::token(on).expect("a known token");
        r.retry = RetryPolicy { attempts: 2, per_try_timeout: None, retry_on, retriable_status_codes: vec![] };
        let snap = snapshot(vec![listener(80, vec![vhost("*", vec![r])])], vec![cluster("c", &[be.addr])]);
        let (_proxy, addr) = start(snap).await;
        let status = H1::connect(addr).await.get("h", "/").await.status;
        assert!(status == 503 || status == 429, "{name}: {status}");
        assert_eq!(be.requests.load(Ordering::SeqCst), tries, "{name}: tries");
    }
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let be = scripted(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        After::CloseWhenIdleFor(Duration::from_millis(50)),
    )
    .await;
    let sink = Arc::new(RecordingSink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut client = H1::connect(addr).await;
    for i in 0..3 {
        assert_eq!(client.get("h", "/").await.status, 200);
        // The backend closes its side meanwhile; the next request must not be sent into it.
        be.closed(i + 1).await;
    }
    assert_eq!(be.conns.load(Ordering::SeqCst), 3);
    assert_eq!(be.requests.load(Ordering::SeqCst), 3);
    let rec = sink.wait_for(3).await;
    assert!(rec.iter().all(|r| r.status == 200 && r.flags.is_empty()), "{rec:?}");
}

#[tokio::test]
async fn an_upstream_answering_before_the_upload_ends_is_heard() {
    // The backend refuses the body after its head and never reads it; the 16 MiB upload
    // cannot fit in the socket buffers, so the gateway is still sending when the answer comes.
    // The backend then keeps the connection, or closes it at once (the gateway's next write
    // fails, and the answer must still get through).
    for (name, after) in [("kept open", After::CloseWhenIdleFor(Duration::from_secs(30))), ("closed", After::Close)] {
        let be = scripted(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!".to_vec(), after).await;
        let (_proxy, addr) = start(simple(be.addr)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let len = 16 << 20;
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {len}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let upload = tokio::spawn(async move {
            let chunk = vec![b'x'; 65536];
            for _ in 0..(len / chunk.len()) {
                if wr.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            while !String::from_utf8_lossy(&got).contains("too big!") {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&got);
        assert!(answered.is_ok(), "{name}: no answer while the upload was going: {text:?}");
        assert!(text.starts_with("HTTP/1.1 413"), "{name}: {text:?}");
        assert!(text.ends_with("too big!"), "{name}: {text:?}");
        upload.abort();
    }
}

#[tokio::test]
async fn response_heads_past_envoys_limits_are_502_upe() {
    let big_value = "v".repeat(61 * 1024);
    let many: String = (0..101).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    for (name, head) in [("a 61 KiB header", format!("x-big: {big_value}\r\n")), ("101 headers", many)] {
        let answer = format!("HTTP/1.1 200 OK\r\n{head}content-length: 2\r\n\r\nok").into_bytes();
        let be = scripted(answer, After::KeepAlive).await;
        let sink = Arc::new(RecordingSink::default());
        let o = ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
        let (_proxy, addr) = start_with(o, simple(be.addr)).await;
        let r = get(addr, "h", "/").await;
        assert_eq!(r.status, 502, "{name}");
        let rec = sink.wait_for(1).await;
        assert!(rec[0].flags.contains(ResponseFlags::UPSTREAM_PROTOCOL_ERROR), "{name}: {:?}", rec[0].flags);
    }
}

type StreamedBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// An HTTP/2 client connection (prior knowledge) to `addr`, for request bodies sent as streams.
async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<StreamedBody> {
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn request_bodies_of_unknown_length_go_out_chunked_and_known_ones_with_their_length() {
    // The echo backend reports the framing it received.
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    let r = c.send(req("POST", "h", "/known").body(Full::new("abc".into())).unwrap()).await;
    assert_eq!(r.seen("content-length").as_deref(), Some("3"));
    assert_eq!(r.json()["body"], "abc");
    // From HTTP/2 without a content-length, the length is unknown.
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(b"part one, "))),
        Ok(http_body::Frame::data(bytes::Bytes::from_static(b"part two"))),
    ]));
    let mut sender = h2c(addr).await;
    let request = http::Request::post("http://h/unknown").body(http_body_util::BodyExt::boxed(body)).unwrap();
    let r = read(sender.send_request(request).await.unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.json()["body"], "part one, part two");
}

#[tokio::test]
async fn a_large_http2_upload_reaches_an_http1_upstream_whole_and_in_order() {
    // 1.5 MiB in 96 frames of 16 KiB, each frame's bytes its own: faster than h2 reads them,
    // so the guard reads ahead of h2 and the exchange writes several frames at once.
    let frames: Vec<bytes::Bytes> =
        (0..96u8).map(|i| bytes::Bytes::from(vec![b'a' + i % 26; 16 * 1024 - usize::from(i)])).collect();
    let whole: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut sender = h2c(addr).await;
    for known in [false, true] {
        let stream = futures_util::stream::iter(
            frames.clone().into_iter().map(|f| Ok::<_, std::convert::Infallible>(http_body::Frame::data(f))),
        );
        let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
        let mut request = http::Request::post("http://h/upload").body(body).unwrap();
        if known {
            request.headers_mut().insert("content-length", whole.len().to_string().parse().unwrap());
        }
        let r = read(sender.send_request(request).await.unwrap()).await;
        assert_eq!(r.status, 200, "length known: {known}");
        let framing = if known { r.seen("content-length") } else { r.seen("transfer-encoding") };
        let expected = if known { whole.len().to_string() } else { "chunked".to_string() };
        assert_eq!(framing.as_deref(), Some(expected.as_str()), "length known: {known}");
        let body = r.json()["body"].as_str().unwrap().to_string();
        assert_eq!(body.len(), whole.len(), "length known: {known}");
        assert!(body.as_bytes() == whole.as_slice(), "length known: {known}: the body arrived changed");
    }
}

#[tokio::test]
async fn a_body_cut_after_the_head_is_logged_as_envoy_does() {
    for (name, answer, flag, details) in [
        (
            "bad chunk size",
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n"[..],
            ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            "upstream_reset_after_response_started{protocol_error}",
        ),
        (
            "closed before its length",
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
            ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            "upstream_reset_after_response_started{connection_termination}",
        ),
    ] {
        let be = scripted(answer.to_vec(), After::Close).await;
        let sink = Arc::new(RecordingSink::default());
        let o = ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
        let (_proxy, addr) = start_with(o, simple(be.addr)).await;
        let (resp, closed) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200") && closed, "{name}: {resp:?}");
        let rec = sink.wait_for(1).await;
        assert!(rec[0].flags.contains(flag), "{name}: {:?}", rec[0].flags);
        assert_eq!(rec[0].details, details, "{name}");
    }
}
