#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Idle HTTP/1 keep-alive connections. Between requests a quiet connection is parked: hyper, its
//! buffers and (plaintext) its task let go, the socket waits in the parking lot, and the next
//! bytes get a fresh hyper connection. Whatever the client does across that boundary must work
//! as if nothing happened.

mod common;

use common::*;
use http_body_util::Full;
use portico_proxy::{Proxy, ProxyOptions, ResponseFlags};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than the parking delay (5 ms; more for a paced connection, which these are not): the
/// connection is parked by the time the client speaks again. Real time: under tokio's paused clock a socket's readiness and the guard's
/// timers can be observed out of order, which no client can do.
const QUIET: Duration = Duration::from_millis(300);

/// Read one whole response (head, then a `content-length` body) from `s`, leaving what follows.
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, String) {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0usize);
            if pending.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).into_owned();
                pending.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed with {:?} unanswered", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn path_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["path"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_idle_connection_serves_the_next_requests_on_the_same_socket() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    for i in 0..4 {
        let r = c.send(req("GET", "h", &format!("/{i}")).body(Full::default()).unwrap()).await;
        assert_eq!((r.status, r.seen_path()), (200, format!("/{i}")));
        tokio::time::sleep(QUIET).await;
    }
    // Also a body larger than the parked read (1 KiB) right after a pause.
    let big = "b".repeat(200_000);
    let r = c.send(req("POST", "h", "/big").body(Full::new(big.clone().into())).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"].as_str().unwrap().len(), big.len());
    assert_eq!(be.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn idle_connections_are_parked_and_wake_for_their_next_request() {
    let be = backend("be").await;
    let (proxy, addr) = start(simple(be.addr)).await;
    let mut a = H1::connect(addr).await;
    let mut b = H1::connect(addr).await;
    assert_eq!(a.get("h", "/a").await.status, 200);
    assert_eq!(b.get("h", "/b").await.status, 200);
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 2, "two answered, quiet connections are parked");
    // A request in flight is not parked away, however long the backend thinks.
    let slow = tokio::spawn(async move {
        let r = a.send(req("GET", "h", "/slow").header("x-delay-ms", "600").body(Full::default()).unwrap()).await;
        (a, r.status)
    });
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 1, "the connection waiting for its answer is not parked");
    let (a, status) = slow.await.unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 2, "parked again once answered");
    drop((a, b));
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 0, "closed by the clients: nothing left parked");
}

#[tokio::test]
async fn many_parked_connections_all_wake_and_are_served_in_any_order() {
    let be = backend("be").await;
    let (proxy, addr) = start(simple(be.addr)).await;
    let mut conns = Vec::new();
    for i in 0..64 {
        let mut c = H1::connect(addr).await;
        assert_eq!(c.get("h", &format!("/first/{i}")).await.status, 200);
        conns.push(c);
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 64);
    // All at once, last parked first: every one is woken and answered on its own socket.
    let asked = conns.into_iter().enumerate().rev().map(|(i, mut c)| {
        tokio::spawn(async move {
            let r = c.send(req("GET", "h", &format!("/again/{i}")).body(Full::default()).unwrap()).await;
            (r.status, r.seen_path(), i, c)
        })
    });
    let mut kept = Vec::new();
    for task in asked.collect::<Vec<_>>() {
        let (status, path, i, c) = task.await.unwrap();
        assert_eq!((status, path), (200, format!("/again/{i}")));
        kept.push(c);
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 128);
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 64, "parked again after their second requests");
}

#[tokio::test]
async fn a_parked_connection_keeps_its_place_under_max_connections_until_its_client_closes() {
    let be = backend("be").await;
    let o = ProxyOptions { max_connections: Some(2), ..opts(&[80]) };
    let (proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut a = H1::connect(addr).await;
    let mut b = H1::connect(addr).await;
    assert_eq!(a.get("h", "/").await.status, 200);
    assert_eq!(b.get("h", "/").await.status, 200);
    tokio::time::sleep(QUIET).await;
    assert_eq!(proxy.parked_connections(), 2);
    // Parked, both still count: a third connection is closed before a byte is read.
    let (resp, closed) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(resp.is_empty() && closed, "{resp:?}");
    assert_eq!(a.get("h", "/").await.status, 200);
    // A client closing a parked connection gives its place back.
    drop(b);
    assert!(served_on_a_new_connection(addr).await, "the place of a closed parked connection was not given back");
}

#[tokio::test]
async fn a_slow_response_on_a_kept_alive_connection_is_not_cut() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut c = H1::connect(addr).await;
    assert_eq!(c.get("h", "/first").await.status, 200);
    tokio::time::sleep(QUIET).await;
    // The backend thinks longer than the parking delay while the connection has a request in flight.
    let r = c.send(req("GET", "h", "/slow").header("x-delay-ms", "1000").body(Full::default()).unwrap()).await;
    assert_eq!((r.status, r.seen_path()), (200, "/slow".to_string()));
    assert_eq!(c.get("h", "/after").await.status, 200);
}

#[tokio::test]
async fn pipelined_and_split_requests_after_a_pause_are_answered_in_order() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(path_of(&body), "/a");
    tokio::time::sleep(QUIET).await;

    // Three requests in one write, the last with a body.
    s.write_all(
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\nPOST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    for want in ["/b", "/c", "/d"] {
        let (head, body) = read_response(&mut s, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{want}: {head}");
        assert_eq!(path_of(&body), want);
    }
    tokio::time::sleep(QUIET).await;

    // A head that arrives in pieces with pauses between them (the first piece wakes the parked
    // connection; a connection inside a head is never parked).
    for piece in [&b"GET /e HT"[..], b"TP/1.1\r\nHo", b"st: h\r\n", b"\r\n"] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(QUIET).await;
    }
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(path_of(&body), "/e");
    assert_eq!(be.requests.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_bad_request_after_a_pause_is_refused_and_closed() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(QUIET).await;
    // Smuggling attempt on the woken connection: the framer still guards it.
    s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 400"), "{rest}");
    assert_eq!(be.requests.load(Ordering::SeqCst), 1, "nothing after the refused request reached the backend");
}

#[tokio::test]
async fn a_websocket_upgrade_after_a_pause_becomes_a_tunnel() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (_proxy, addr) = start(simple(ws_addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A plain request first (the WebSocket backend answers it 4xx; only the connection matters).
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    tokio::time::sleep(QUIET).await;
    let request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request("ws://h/chat").unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, s).await.unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..2 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), format!("hello {i}"));
        // A quiet tunnel is not a quiet keep-alive connection: it must not be parked.
        tokio::time::sleep(QUIET).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_still_ends_at_the_idle_timeout_and_not_before() {
    let be = backend("be").await;
    let o = ProxyOptions {
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(3600),
        ..opts(&[80])
    };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    assert!(!closed_within(&mut s, Duration::from_secs(20)).await, "closed before the idle timeout");
    // 20 s of quiet: parked, yet still served; the idle timeout counts from this request.
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    assert!(!closed_within(&mut s, Duration::from_secs(20)).await, "closed before the idle timeout");
    assert!(closed_within(&mut s, Duration::from_secs(30)).await, "not closed after the idle timeout");
}

#[tokio::test(start_paused = true)]
async fn a_parked_connection_waits_for_the_next_head_no_longer_than_the_header_read_timeout() {
    let be = backend("be").await;
    let o = ProxyOptions { header_read_timeout: Duration::from_secs(10), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    assert!(!closed_within(&mut s, Duration::from_secs(8)).await, "closed before the header read timeout");
    assert!(closed_within(&mut s, Duration::from_secs(4)).await, "kept open past the header read timeout");
}

/// Nothing arrives on `s` for `d`: no answer, no close.
async fn silent_for(s: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(d, s.read(&mut buf)).await.is_err()
}

/// Read everything until the proxy closes.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut all)).await.unwrap().unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// Envoy's `request_headers_timeout`: the clock starts at a head's first bytes, not at the last
/// exchange, and bytes that keep trickling in do not stop it; the client gets 408, the log says
/// why, and the connection closes.
#[tokio::test(start_paused = true)]
async fn a_head_begun_but_not_finished_within_the_header_read_timeout_gets_408() {
    let be = backend("be").await;
    let sink = Arc::new(RecordingSink::default());
    let o = ProxyOptions { header_read_timeout: Duration::from_secs(10), access_log: sink.clone(), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    // 8 s of quiet, then a head begins and trickles: a byte run every 3 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\nUser-Agent: loris\r\n").await.unwrap();
    for _ in 0..3 {
        assert!(silent_for(&mut s, Duration::from_secs(3)).await, "answered before the head's 10 s were up");
        s.write_all(b"x-more: 1\r\n").await.unwrap();
    }
    // 9 s since the head began (17 s since the last exchange): still waiting for it.
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nrequest header timeout"), "{answer:?}");
    assert_eq!(be.requests.load(Ordering::SeqCst), 1, "the slow head went upstream");

    let rec = sink.wait_for(2).await;
    let slow = rec.iter().find(|r| r.status == 408).unwrap_or_else(|| panic!("{rec:?}"));
    assert_eq!((slow.method.as_str(), slow.uri.path(), slow.details), ("GET", "/slow", "request_header_timeout"));
    assert_eq!(slow.user_agent.as_ref().map(|v| v.to_str().unwrap()), Some("loris"));
    assert_eq!(slow.flags, ResponseFlags::NONE, "{slow:?}");
    // Timed from the head's first bytes, as Envoy's %DURATION%.
    assert!(slow.duration >= Duration::from_secs(10), "{:?}", slow.duration);
}

/// A whole request followed by the start of the next in one write: the first is answered, the
/// second's clock starts with it, and it gets 408 once that runs out.
#[tokio::test(start_paused = true)]
async fn a_pipelined_head_left_unfinished_gets_408_after_the_answered_request() {
    let be = backend("be").await;
    let o = ProxyOptions { header_read_timeout: Duration::from_secs(10), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHo").await.unwrap();
    let (head, body) = read_response(&mut s, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(path_of(&body), "/1");
    assert!(silent_for(&mut s, Duration::from_secs(8)).await, "the unfinished head was cut early");
    let answer = read_to_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert_eq!(be.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn draining_closes_parked_connections_at_once() {
    let be = backend("be").await;
    let mut o = opts(&[80]);
    o.drain_timeout = Duration::from_secs(600);
    let proxy = Proxy::new(o);
    proxy.apply(simple(be.addr)).await.unwrap();
    let addr: SocketAddr = addr_of(&proxy, 80);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    assert!(read_response(&mut s, &mut pending).await.0.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(QUIET).await;
    let start = tokio::time::Instant::now();
    proxy.shutdown().await;
    // Nothing was in flight: the drain does not wait for its timeout.
    assert!(start.elapsed() < Duration::from_secs(60), "drain waited {:?} for an idle connection", start.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(1)).await);
}
