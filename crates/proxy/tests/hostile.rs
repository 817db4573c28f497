//! Hostile clients and broken backends, over real sockets: request smuggling, limits, slow
//! clients, HTTP/2 floods (a raw frame writer below), connection limits, upstream faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use portico_proxy::{ProxyOptions, ResponseFlags};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ───────────────────────────── a raw backend that records bytes ─────────────────────────────

/// An HTTP/1.1 backend on a raw socket: records every byte it receives and answers each
/// request it can frame (Content-Length or chunked) with `200 seen`.
struct RawBackend {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    requests: Arc<AtomicUsize>,
}

impl RawBackend {
    fn seen(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Length of the first complete request in `buf`, if there is one.
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        let body = &buf[head_end..];
        if body.starts_with(b"0\r\n\r\n") {
            return Some(head_end + 5);
        }
        return find(body, b"\r\n0\r\n\r\n").map(|at| head_end + at + 7);
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

async fn raw_backend() -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = RawBackend {
        addr: listener.local_addr().unwrap(),
        bytes: Arc::new(Mutex::new(Vec::new())),
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let (bytes, requests) = (b.bytes.clone(), b.requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (bytes, requests) = (bytes.clone(), requests.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    bytes.lock().unwrap().extend_from_slice(&chunk[..n]);
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(len) = complete_request(&buf) {
                        buf.drain(..len);
                        requests.fetch_add(1, Ordering::SeqCst);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nseen").await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    b
}

/// Everything the proxy sends back until it closes the connection (bounded wait).
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

/// Each payload carries a second request that a desynchronised parser would see.
fn smuggling_cases() -> Vec<(&'static str, String)> {
    let s = SMUGGLED;
    vec![
        ("CL then TE", format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}")),
        ("TE then CL", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{s}")),
        ("two different CL", format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n{s}")),
        ("two equal CL", format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 37\r\nContent-Length: 37\r\n\r\n{s}")),
        ("comma-listed CL", format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 37\r\n\r\n{s}")),
        ("signed CL", format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +0\r\n\r\n{s}")),
        ("TE chunked+space", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n{s}")),
        ("TE xchunked", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{s}")),
        ("TE chunked, identity", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{s}")),
        ("TE identity, chunked", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n{s}")),
        ("two TE", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n{s}")),
        ("space before colon", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{s}")),
        ("tab before colon", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n{s}")),
        ("TE on HTTP/1.0", format!("POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}")),
        ("bare LF", format!("GET / HTTP/1.1\nHost: h\n\n{s}")),
        ("bare LF in one header", format!("GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n{s}")),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n{s}")),
        ("invalid chunk size", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{s}")),
        ("chunk size overflow", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n{s}")),
        ("negative chunk size", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{s}")),
        ("bad chunk extension", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0;a\x01b\r\n\r\n{s}")),
        ("chunk line bare LF", format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n{s}")),
        ("absolute-form to another host", format!("GET http://evil.example/ HTTP/1.1\r\nHost: h\r\n\r\n{s}")),
        ("absolute-form with userinfo", format!("GET http://h@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n{s}")),
        ("two Host", format!("GET / HTTP/1.1\r\nHost: h\r\nHost: evil.example\r\n\r\n{s}")),
        ("NUL in a value", format!("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n{s}")),
        ("CR in a value", format!("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n{s}")),
    ]
}

#[tokio::test]
async fn smuggling_attempts_get_400_and_a_closed_connection_and_reach_no_backend() {
    let be = raw_backend().await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    for (name, payload) in smuggling_cases() {
        let (resp, closed) = send_raw(addr, payload.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{name}: {resp:?}");
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{name}: one answer only: {resp:?}");
        assert!(closed, "{name}: connection left open");
    }
    assert_eq!(be.requests.load(Ordering::SeqCst), 0, "the backend saw: {:?}", be.seen());
    assert!(!be.seen().contains("smuggled"));
}

#[tokio::test]
async fn a_bad_request_behind_good_pipelined_ones_is_refused_after_they_are_answered() {
    let be = raw_backend().await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let payload = format!(
        "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello\
         POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-t: 1\r\n\r\n\
         GET /c HTTP/1.1\r\nHost: h\r\n\r\n\
         POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"
    );
    let (resp, closed) = send_raw(addr, payload.as_bytes()).await;
    let statuses: Vec<&str> = resp.match_indices("HTTP/1.1 ").map(|(i, _)| &resp[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "200", "200", "400"], "{resp:?}");
    assert!(closed);
    assert_eq!(be.requests.load(Ordering::SeqCst), 3);
    let seen = be.seen();
    assert!(seen.contains("POST /a ") && seen.contains("POST /b ") && seen.contains("GET /c "), "{seen:?}");
    assert!(!seen.contains("/d ") && !seen.contains("smuggled"), "{seen:?}");
}

#[tokio::test]
async fn well_formed_requests_pass_the_guard_unchanged() {
    let be = raw_backend().await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Byte by byte: the head check must not depend on how the bytes arrive.
    let req = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    for b in req.iter() {
        s.write_all(&[*b]).await.unwrap();
    }
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Absolute-form agreeing with Host (default port) is fine.
    s.write_all(b"GET http://h:80/y HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(be.seen().contains("abc"));
}

// ───────────────────────────── limits ─────────────────────────────

#[tokio::test]
async fn long_uris_get_414_and_big_heads_431() {
    let be = raw_backend().await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    for len in [17 * 1024, 100 * 1024] {
        let req = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(len));
        let (resp, closed) = send_raw(addr, req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 414 "), "{len}: {resp:?}");
        assert!(closed);
    }
    let ok = format!("GET /{} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "a".repeat(15 * 1024));
    assert!(send_raw(addr, ok.as_bytes()).await.0.starts_with("HTTP/1.1 200"));

    let big = format!("GET / HTTP/1.1\r\nHost: h\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert!(send_raw(addr, big.as_bytes()).await.0.starts_with("HTTP/1.1 431 "));
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..101 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert!(send_raw(addr, many.as_bytes()).await.0.starts_with("HTTP/1.1 431 "));
    assert_eq!(be.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connections_above_the_limit_are_refused_and_freed_slots_are_reused() {
    let be = backend("be").await;
    let o = ProxyOptions { max_connections: Some(2), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut a = H1::connect(addr).await;
    let mut b = H1::connect(addr).await;
    assert_eq!(a.get("h", "/").await.status, 200);
    assert_eq!(b.get("h", "/").await.status, 200);
    // A third connection is accepted by the kernel, then closed before a byte is read.
    let (resp, closed) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(resp.is_empty() && closed, "{resp:?}");
    // The open ones still work; closing one frees its slot.
    assert_eq!(a.get("h", "/").await.status, 200);
    drop(b);
    assert!(served_on_a_new_connection(addr).await, "a freed slot was not reused");
}

// ───────────────────────────── slow clients ─────────────────────────────

fn slow_opts() -> ProxyOptions {
    ProxyOptions {
        stream_idle_timeout: Duration::from_secs(20),
        idle_timeout: Duration::from_secs(600),
        header_read_timeout: Duration::from_secs(30),
        ..opts(&[80])
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_body_is_cut_off_by_the_stream_idle_timeout() {
    let be = backend("be").await;
    let (_proxy, addr) = start_with(slow_opts(), simple(be.addr)).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly a part").await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(60)).await, "slow POST was not cut off");
    assert_eq!(get(addr, "h", "/").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let be = backend("be").await;
    let o = ProxyOptions {
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(3600),
        ..opts(&[80])
    };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more from the client: after the idle timeout the proxy closes its side.
    assert!(closed_within(&mut s, Duration::from_secs(120)).await);
}

/// A backend that answers every request with `size` bytes.
async fn big_backend(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                let mut left = size;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_cut_off_by_the_stream_idle_timeout() {
    let be = big_backend(64 * 1024 * 1024).await;
    let (_proxy, addr) = start_with(slow_opts(), simple(be)).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    // Never read: the proxy's writes stall, and after the stream idle timeout it gives up.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed && total < 64 * 1024 * 1024, "read {total} bytes, closed: {closed}");
}

// ───────────────────────────── HTTP/2 abuse ─────────────────────────────

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://h/` (static table entries, `:authority` literal).
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'h'];
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[derive(Debug, Default)]
struct H2Seen {
    goaway: Option<(u32, u32)>,
    rst: Vec<(u32, u32)>,
    headers: Vec<u32>,
    settings: Vec<(u16, u32)>,
    closed: bool,
}

/// Read frames until GOAWAY and EOF, or until nothing comes for a while.
async fn read_frames(s: &mut TcpStream, quiet: Duration) -> H2Seen {
    let mut seen = H2Seen::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, stream) = (buf[3], u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff);
            let p = &buf[9..9 + len];
            match kind {
                0x1 => seen.headers.push(stream),
                0x3 => seen.rst.push((stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]]))),
                0x4 if buf[4] & 1 == 0 => {
                    for s in p.chunks(6) {
                        seen.settings
                            .push((u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])));
                    }
                }
                0x7 => {
                    let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                    seen.goaway = Some((last, u32::from_be_bytes([p[4], p[5], p[6], p[7]])));
                }
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    seen
}

async fn h2_raw(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    s.write_all(&hello).await.unwrap();
    s
}

/// Write as much of `bytes` as the proxy takes (it may close mid-way).
async fn flood(s: &mut TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(bytes)).await;
}

async fn goaway_then_closed(name: &str, mut s: TcpStream, addr: SocketAddr) {
    let seen = read_frames(&mut s, Duration::from_secs(5)).await;
    assert!(seen.goaway.is_some(), "{name}: no GOAWAY: {seen:?}");
    assert!(seen.closed, "{name}: connection left open");
    // Others are served meanwhile.
    let mut other = H2::connect(addr).await;
    assert_eq!(other.get("h", "/").await.status, 200, "{name}");
}

#[tokio::test]
async fn h2_rapid_reset_gets_goaway() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = h2_raw(addr).await;
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        bytes.extend(frame(0x1, END_HEADERS | END_STREAM, id, GET_BLOCK));
        bytes.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    flood(&mut s, &bytes).await;
    goaway_then_closed("rapid reset", s, addr).await;
    // Work done for the attacker stays far below the streams it opened.
    assert!(be.requests.load(Ordering::SeqCst) < 500, "{}", be.requests.load(Ordering::SeqCst));
}

#[tokio::test]
async fn h2_continuation_flood_gets_goaway() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = h2_raw(addr).await;
    let mut bytes = frame(0x1, 0, 1, GET_BLOCK);
    for _ in 0..20000 {
        bytes.extend(frame(0x9, 0, 1, &[0x40, 0x01, b'x', 0x01, b'y']));
    }
    flood(&mut s, &bytes).await;
    goaway_then_closed("CONTINUATION flood", s, addr).await;
    assert_eq!(be.requests.load(Ordering::SeqCst), 1, "only the check request reached the backend");
}

#[tokio::test]
async fn h2_hpack_bomb_is_refused() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = h2_raw(addr).await;
    // One 4000-byte header stored in the dynamic table, then referenced 200 times: 800 KB of
    // headers from a 4 KB frame.
    let mut block = GET_BLOCK.to_vec();
    block.extend_from_slice(&[0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e]);
    block.extend(std::iter::repeat_n(b'a', 4000));
    block.extend(std::iter::repeat_n(0xbe, 200));
    flood(&mut s, &frame(0x1, END_HEADERS | END_STREAM, 1, &block)).await;
    let seen = read_frames(&mut s, Duration::from_secs(3)).await;
    assert!(seen.goaway.is_some() || !seen.rst.is_empty() || seen.headers.contains(&1), "{seen:?}");
    assert_eq!(be.requests.load(Ordering::SeqCst), 0, "the bomb reached the backend");
    let mut other = H2::connect(addr).await;
    assert_eq!(other.get("h", "/").await.status, 200);
}

#[tokio::test]
async fn h2_settings_and_ping_floods_get_goaway() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    for (name, f) in [
        ("SETTINGS flood", frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])),
        ("PING flood", frame(0x6, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])),
        ("PRIORITY flood", frame(0x2, 0, 3, &[0, 0, 0, 1, 16])),
    ] {
        let mut s = h2_raw(addr).await;
        let bytes: Vec<u8> = std::iter::repeat_n(f, 20000).flatten().collect();
        flood(&mut s, &bytes).await;
        goaway_then_closed(name, s, addr).await;
    }
}

#[tokio::test]
async fn h2_streams_above_the_limit_are_refused() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = h2_raw(addr).await;
    // 150 requests left open (no END_STREAM): the 100 allowed wait for their bodies.
    let mut bytes = Vec::new();
    for i in 0..150u32 {
        bytes.extend(frame(0x1, END_HEADERS, 2 * i + 1, GET_BLOCK));
    }
    s.write_all(&bytes).await.unwrap();
    let seen = read_frames(&mut s, Duration::from_secs(2)).await;
    assert!(seen.settings.contains(&(3, 100)), "MAX_CONCURRENT_STREAMS not announced: {:?}", seen.settings);
    let refused = seen.rst.iter().filter(|(_, code)| *code == 0x7).count();
    assert!(refused >= 50 || seen.goaway.is_some(), "{seen:?}");
}

/// A backend that answers every request with `size` bytes, counting what it managed to write
/// and whether its connection was closed under it.
async fn counting_backend(size: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (written, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (w, c) = (written.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (w, c) = (w.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                s.write_all(head.as_bytes()).await.unwrap();
                let block = vec![b'x'; 16 * 1024];
                let mut left = size;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).await.is_err() {
                        c.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    w.fetch_add(n, Ordering::SeqCst);
                    left -= n;
                }
            });
        }
    });
    (addr, written, closed)
}

/// A client that opens a stream and never gives it window (`SETTINGS_INITIAL_WINDOW_SIZE` 0,
/// no WINDOW_UPDATE) must not hold the stream, its buffers or its upstream connection: after the
/// stream idle timeout the stream is reset, the backend was never read much further than h2's
/// bounded send buffer, and other clients are served meanwhile. (Its first version never
/// finished: once the stream was reset, the guard re-armed its timer at `now` in a loop, which
/// under the paused clock never left the poll.)
#[tokio::test(start_paused = true)]
async fn an_h2_stream_the_client_never_opens_the_window_for_is_reset_after_the_stream_idle_timeout() {
    const SIZE: usize = 64 * 1024 * 1024;
    let (be, written, closed) = counting_backend(SIZE).await;
    let other_be = backend("other").await;
    let routes = vec![route(vec![uri_prefix("/other")], forward("o")), route(vec![], forward("c"))];
    let snap = snapshot(
        vec![listener(80, vec![vhost("*", routes)])],
        vec![cluster("c", &[be]), cluster("o", &[other_be.addr])],
    );
    let (_proxy, addr) = start_with(slow_opts(), snap).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    hello.extend(frame(0x1, END_HEADERS | END_STREAM, 1, GET_BLOCK));
    s.write_all(&hello).await.unwrap();

    // Meanwhile, another client on another connection is served.
    let mut other = H2::connect(addr).await;
    let resp = other.get("h", "/other").await;
    assert_eq!((resp.status, resp.backend()), (200, "other".to_string()));

    // Quiet for longer than the stream idle timeout (20 s) once the response headers are out.
    let seen = read_frames(&mut s, Duration::from_secs(60)).await;
    assert!(seen.headers.contains(&1), "no response headers: {seen:?}");
    assert!(seen.rst.contains(&(1, CANCEL)), "stream 1 was not reset with CANCEL: {seen:?}");
    // The upstream body was dropped with the stream: its connection is closed under it.
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "the upstream connection was kept");
    // The gateway read no more than its bounded buffers hold (kernel socket buffers included),
    // whatever the response's size.
    let w = written.load(Ordering::SeqCst);
    assert!(w < 24 * 1024 * 1024, "the backend wrote {w} bytes of {SIZE}");
    // The connection itself still works.
    let mut more = frame(0x1, END_HEADERS | END_STREAM, 3, GET_BLOCK);
    more.extend(frame(0x8, 0, 3, &(1u32 << 20).to_be_bytes()));
    s.write_all(&more).await.unwrap();
    let seen = read_frames(&mut s, Duration::from_secs(2)).await;
    assert!(seen.headers.contains(&3), "the connection stopped serving: {seen:?}");
}

const CANCEL: u32 = 0x8;
const FLOW_CONTROL_ERROR: u32 = 0x3;

/// A backend that reads whatever comes until its connection is closed, never answering:
/// (address, bytes read, connections closed under it).
async fn silent_backend() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (read, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, c) = (read.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (r, c) = (r.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => r.fetch_add(n, Ordering::SeqCst),
                    };
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, read, closed)
}

/// A client that starts a request body and never finishes it (HTTP/2 slow POST) has the stream
/// reset after the stream idle timeout, and the upstream request is dropped with it.
#[tokio::test(start_paused = true)]
async fn an_h2_request_the_client_never_finishes_is_reset_after_the_stream_idle_timeout() {
    let (be, read, closed) = silent_backend().await;
    let (_proxy, addr) = start_with(slow_opts(), simple(be)).await;
    let mut s = h2_raw(addr).await;
    // POST http://h/ without END_STREAM, a first piece of body, then nothing.
    let mut bytes = frame(0x1, END_HEADERS, 1, &[0x83, 0x86, 0x84, 0x41, 0x01, b'h']);
    bytes.extend(frame(0x0, 0, 1, b"part of a body"));
    s.write_all(&bytes).await.unwrap();
    let seen = read_frames(&mut s, Duration::from_secs(60)).await;
    assert!(seen.rst.contains(&(1, CANCEL)), "stream 1 was not reset with CANCEL: {seen:?}");
    assert!(read.load(Ordering::SeqCst) > 0, "the request never reached the backend");
    for _ in 0..100 {
        if closed.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "the upstream request was kept");
}

/// A client sending more DATA than the stream window it was given (64 KiB) gets
/// FLOW_CONTROL_ERROR (h2's stream reset, or GOAWAY); the connection and the gateway go on.
#[tokio::test]
async fn h2_data_beyond_the_stream_window_gets_flow_control_error() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let mut s = h2_raw(addr).await;
    let mut bytes = frame(0x1, END_HEADERS, 1, &[0x83, 0x86, 0x84, 0x41, 0x01, b'h']);
    for _ in 0..8 {
        bytes.extend(frame(0x0, 0, 1, &[b'x'; 16 * 1024]));
    }
    flood(&mut s, &bytes).await;
    let seen = read_frames(&mut s, Duration::from_secs(3)).await;
    let reset = seen.rst.contains(&(1, FLOW_CONTROL_ERROR));
    assert!(reset || seen.goaway.map(|(_, code)| code) == Some(FLOW_CONTROL_ERROR), "{seen:?}");
    if reset && !seen.closed {
        // Only the stream was reset: the same connection serves the next request.
        s.write_all(&frame(0x1, END_HEADERS | END_STREAM, 3, GET_BLOCK)).await.unwrap();
        let seen = read_frames(&mut s, Duration::from_secs(3)).await;
        assert!(seen.headers.contains(&3), "the connection stopped serving: {seen:?}");
    }
    let mut other = H2::connect(addr).await;
    assert_eq!(other.get("h", "/").await.status, 200);
}

/// `--max-uri-length` holds on HTTP/2 too: a longer `:path` gets 414, is not forwarded, and is
/// logged like HTTP/1's (`DPE`); the connection goes on. More headers than
/// `--max-request-headers` get 431 the same way; a header list above
/// `--max-request-headers-kb` is refused by h2 itself (431, never reaching the handler).
#[tokio::test]
async fn h2_long_paths_get_414_and_too_many_or_too_large_headers_431() {
    let be = backend("be").await;
    let sink = Arc::new(RecordingSink::default());
    let o = ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
    let (_proxy, addr) = start_with(o, simple(be.addr)).await;
    let mut c = H2::connect(addr).await;
    let r = c.get("h", &format!("/{}", "a".repeat(17 * 1024))).await;
    assert_eq!(r.status, 414);
    assert_eq!(c.get("h", &format!("/{}", "a".repeat(15 * 1024))).await.status, 200);

    let mut many = req("GET", "h", "/many");
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = read(c.sender.send_request(many.body(Default::default()).unwrap()).await.unwrap()).await;
    assert_eq!(r.status, 431);
    let big = req("GET", "h", "/big").header("x-big", "b".repeat(70 * 1024)).body(Default::default()).unwrap();
    match c.sender.send_request(big).await {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.is_closed(), "the connection was lost: {e}"),
    }
    assert_eq!(c.get("h", "/after").await.status, 200);
    assert_eq!(be.requests.load(Ordering::SeqCst), 2, "a refused request reached the backend");

    let rec = sink.wait_for(4).await;
    let refused: Vec<_> = rec.iter().filter(|r| r.status >= 400).collect();
    assert_eq!(refused.len(), 2, "{rec:?}");
    for (r, status, details) in [(refused[0], 414, "http2.uri_too_long"), (refused[1], 431, "http2.too_many_headers")] {
        assert_eq!((r.status, r.details), (status, details));
        assert_eq!(r.flags, ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        assert_eq!(r.protocol, http::Version::HTTP_2);
    }
}

// ───────────────────────────── upstream faults ─────────────────────────────

/// A backend that answers every request with `response` (raw bytes), then closes.
async fn scripted_backend(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, conns)
}

/// Envoy answers a response it cannot parse with 502 and `UPE`
/// (`upstream_reset_before_response_started{protocol_error}`), not 503 `UC`.
#[tokio::test]
async fn malformed_upstream_responses_give_502_upe() {
    for (name, response) in [
        ("two content-lengths", &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk"[..]),
        ("a content-length list that disagrees", b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nokk"),
        ("a content-length that is no number", b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok"),
        ("garbage status line", b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok"),
    ] {
        let (be, _) = scripted_backend(response).await;
        let sink = Arc::new(RecordingSink::default());
        let o = ProxyOptions { access_log: sink.clone(), ..opts(&[80]) };
        let (_proxy, addr) = start_with(o, simple(be)).await;
        let r = get(addr, "h", "/").await;
        let rec = sink.wait_for(1).await;
        assert_eq!(r.status, 502, "{name}");
        assert!(rec[0].flags.contains(ResponseFlags::UPSTREAM_PROTOCOL_ERROR), "{name}: {:?}", rec[0].flags);
    }
}

#[tokio::test]
async fn bad_upstream_chunking_is_not_passed_on_as_a_complete_response() {
    let (be, conns) = scripted_backend(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\nHTTP/1.1 200 OK\r\n\r\n",
    )
    .await;
    let (_proxy, addr) = start(simple(be)).await;
    let (resp, closed) = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    // The head went out; the body breaks: the client sees the response cut, never a second
    // response made of the backend's garbage.
    assert!(closed, "{resp:?}");
    assert!(!resp.ends_with("0\r\n\r\n"), "a broken body was completed: {resp:?}");
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 1, "{resp:?}");
    // The broken connection is not reused.
    let _ = send_raw(addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

/// A backend that answers the first request of each connection (keep-alive) and closes the
/// connection when a second one arrives on it: the race of an upstream closing a kept-alive
/// connection just as the proxy reuses it.
async fn closes_at_reuse_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst").await.is_err() {
                    return;
                }
                // The next request on this connection is met with a close.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn an_upstream_closing_at_reuse_is_retried_where_the_route_retries_and_never_sticks() {
    let (be, conns) = closes_at_reuse_backend().await;
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost(
                "*",
                vec![
                    portico_model::snapshot::Route {
                        retry: portico_model::snapshot::RetryPolicy {
                            attempts: 2,
                            per_try_timeout: None,
                            retry_on: portico_model::snapshot::RetryOn::RESET
                                | portico_model::snapshot::RetryOn::CONNECT_FAILURE,
                            retriable_status_codes: vec![],
                        },
                        ..route(vec![uri_prefix("/retry")], forward("c"))
                    },
                    route(vec![], forward("c")),
                ],
            )],
        )],
        vec![cluster("c", &[be])],
    );
    let (_proxy, addr) = start(snap).await;
    let mut client = H1::connect(addr).await;
    for i in 0..5 {
        let r = client.get("h", "/retry").await;
        assert_eq!((r.status, r.text()), (200, "first".to_string()), "request {i}");
    }
    // Without retries the same race is a 503 (reset before headers), never a hang, and the
    // next request gets a fresh connection.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get("h", "/plain").await.status);
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(conns.load(Ordering::SeqCst) >= 5);
}

#[tokio::test]
async fn a_thousand_slowloris_connections_do_not_stop_normal_clients() {
    let be = backend("be").await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    // Each slow connection costs two descriptors here (client and proxy side).
    let soft_limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| l.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(4096usize);
    let n = 1000.min(soft_limit.saturating_sub(512) / 2);
    assert!(n >= 200, "open-files limit {soft_limit} too low for this test");
    let mut slow = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    for i in 0..50 {
        assert_eq!(get(addr, "h", &format!("/n{i}")).await.status, 200);
    }
    let mut h2 = H2::connect(addr).await;
    assert_eq!(h2.get("h", "/h2").await.status, 200);
    // The slow ones never reached the backend.
    assert_eq!(be.requests.load(Ordering::SeqCst), 51);
    drop(slow);
}

// ───────────────────────────── drain ─────────────────────────────

async fn ws_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
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

/// Shutdown under load: an in-flight request finishes, an HTTP/2 client gets GOAWAY, a
/// WebSocket that outlives the drain timeout is closed, new connections are refused.
#[tokio::test]
async fn shutdown_finishes_in_flight_sends_goaway_and_closes_websockets_at_the_drain_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let be = backend("be").await;
    let ws_be = ws_backend().await;
    let snap = snapshot(
        vec![listener(
            80,
            vec![vhost("*", vec![route(vec![uri_prefix("/ws")], forward("ws")), route(vec![], forward("c"))])],
        )],
        vec![cluster("c", &[be.addr]), cluster("ws", &[ws_be])],
    );
    let o = ProxyOptions { drain_timeout: Duration::from_secs(2), ..opts(&[80]) };
    let (proxy, addr) = start_with(o, snap).await;

    let request = "ws://h/ws".into_client_request().unwrap();
    let (mut ws, resp) =
        tokio_tungstenite::client_async(request, TcpStream::connect(addr).await.unwrap()).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "before");

    let mut h2 = h2_raw(addr).await;
    let mut slow = H1::connect(addr).await;
    let in_flight = tokio::spawn(async move {
        let r = req("GET", "h", "/slow").header("x-delay-ms", "500").body(http_body_util::Full::default()).unwrap();
        slow.send(r).await
    });
    while be.requests.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shutdown = tokio::spawn(async move { proxy.shutdown().await });

    // The WebSocket still works while draining.
    ws.send(Message::text("during")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "during");
    assert_eq!(in_flight.await.unwrap().status, 200, "the in-flight request finishes");
    assert!(TcpStream::connect(addr).await.is_err(), "new connections are refused");
    let seen = read_frames(&mut h2, Duration::from_secs(5)).await;
    assert_eq!(seen.goaway.map(|(_, code)| code), Some(0), "{seen:?}");
    // At the drain timeout the WebSocket is closed.
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("WebSocket left open");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.unwrap().unwrap();
}

#[tokio::test]
async fn large_bodies_keep_their_framing_and_the_next_head_is_still_checked() {
    let be = raw_backend().await;
    let (_proxy, addr) = start(simple(be.addr)).await;
    let body = vec![b'z'; 300 * 1024];
    let mut payload = format!("POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    payload.extend_from_slice(&body);
    // A chunked body of two large chunks, then a smuggling attempt.
    payload.extend_from_slice(b"POST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for _ in 0..2 {
        payload.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        payload.extend_from_slice(&body);
        payload.extend_from_slice(b"\r\n");
    }
    payload.extend_from_slice(b"0\r\n\r\n");
    payload.extend_from_slice(format!("GET / HTTP/1.1\nHost: h\n\n{SMUGGLED}").as_bytes());
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.split();
    let (_, (resp, closed)) = tokio::join!(async { wr.write_all(&payload).await.unwrap() }, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&buf).into_owned(), closed)
    });
    let statuses: Vec<&str> = resp.match_indices("HTTP/1.1 ").map(|(i, _)| &resp[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "200", "400"], "{resp:?}");
    assert!(closed);
    assert_eq!(be.requests.load(Ordering::SeqCst), 2);
    let seen = be.seen();
    assert_eq!(seen.matches('z').count(), 3 * body.len());
    assert!(!seen.contains("smuggled"));
}
