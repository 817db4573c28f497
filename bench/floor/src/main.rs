//! The least a tokio-based HTTP/1.1 keep-alive reverse proxy can do per request, to measure the
//! user CPU time such a design cannot go below (`bench/cpu-split.sh` with `FLOOR=1`). It is not
//! the gateway: one upstream, GET requests without bodies, responses framed by `Content-Length`,
//! no routing, no telemetry, no timeouts. What it does do is what any proxy on this path must:
//! parse the request head, copy it upstream with the `X-Forwarded-For` an Istio gateway adds,
//! parse the response head, copy it back with a `Server` of its own, over pooled upstream
//! connections, on one tokio worker (as Portico runs in the harness).
//!
//! Each of these adds one thing Portico's request path does, to price it on its own:
//!   FLOOR_TIMER=1  a timer per request around the upstream exchange (a route's timeout);
//!   FLOOR_MAP=1    both heads go through `http::HeaderMap` (parsed into one, its values slices
//!                  of the head read, as hyper makes them; written from it);
//!   FLOOR_RID=1    an `x-request-id` (a random UUID) per request.
//!
//! usage: portico-floor LISTEN_ADDR UPSTREAM_ADDR

use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Idle upstream connections (one worker: never contended).
static POOL: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct Extras {
    timer: bool,
    map: bool,
    rid: bool,
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || io::Error::new(io::ErrorKind::InvalidInput, "usage: portico-floor LISTEN UPSTREAM");
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let upstream: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let extras = Extras { timer: on("FLOOR_TIMER"), map: on("FLOOR_MAP"), rid: on("FLOOR_RID") };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            // SIGINT ends it (a background job of a script would otherwise ignore it).
            let (client, peer) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            client.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = serve(client, peer, upstream, extras).await;
            });
        }
    })
}

async fn serve(mut client: TcpStream, peer: SocketAddr, upstream: SocketAddr, extras: Extras) -> io::Result<()> {
    let mut req = Vec::with_capacity(4096);
    let mut resp = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let xff = HeaderValue::try_from(peer.ip().to_string()).map_err(invalid)?;
    let mut rng = u64::from(peer.port()) | 1;
    loop {
        req.clear();
        let head_len = loop {
            if read_more(&mut client, &mut req).await? == 0 {
                return Ok(());
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&req).map_err(invalid)? {
                out.clear();
                out.extend_from_slice(r.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                out.extend_from_slice(r.path.unwrap_or("/").as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                let rid = extras.rid.then(|| request_id(&mut rng));
                if extras.map {
                    let mut map = to_map(&req[..n], r.headers)?;
                    map.remove(http::header::CONNECTION);
                    map.append(HeaderName::from_static("x-forwarded-for"), xff.clone());
                    if let Some(id) = rid {
                        map.insert(
                            HeaderName::from_static("x-request-id"),
                            HeaderValue::from_bytes(&id).map_err(invalid)?,
                        );
                    }
                    write_map(&map, &mut out);
                } else {
                    write_raw(r.headers, "connection", &mut out);
                    put(&mut out, b"x-forwarded-for", xff.as_bytes());
                    if let Some(id) = rid {
                        put(&mut out, b"x-request-id", &id);
                    }
                }
                out.extend_from_slice(b"\r\n");
                break n;
            }
        };
        if head_len != req.len() {
            return Err(invalid("request bodies and pipelining are out of scope"));
        }
        let idle = POOL.lock().map_err(|_| invalid("pool"))?.pop();
        let mut up = match idle {
            Some(c) => c,
            None => {
                let c = TcpStream::connect(upstream).await?;
                c.set_nodelay(true)?;
                c
            }
        };
        let exchange = exchange(&mut up, &mut out, &mut resp, extras);
        let (head_len, body_len) = if extras.timer { within(exchange).await?? } else { exchange.await? };
        POOL.lock().map_err(|_| invalid("pool"))?.push(up);
        out.extend_from_slice(&resp[head_len..head_len + body_len]);
        client.write_all(&out).await?;
    }
}

/// Writes the request in `out` to `up`, reads the whole response into `resp`, and leaves the
/// client's response head in `out`: the head's and the body's lengths.
async fn exchange(
    up: &mut TcpStream,
    out: &mut Vec<u8>,
    resp: &mut Vec<u8>,
    extras: Extras,
) -> io::Result<(usize, usize)> {
    up.write_all(out).await?;
    resp.clear();
    let (head_len, body_len) = loop {
        if read_more(up, resp).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = r.parse(resp).map_err(invalid)? {
            let len = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or_else(|| invalid("no content-length"))?;
            out.clear();
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(r.code.unwrap_or(502).to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(r.reason.unwrap_or("").as_bytes());
            out.extend_from_slice(b"\r\n");
            if extras.map {
                let mut map = to_map(&resp[..n], r.headers)?;
                map.remove(http::header::CONNECTION);
                map.insert(http::header::SERVER, HeaderValue::from_static("istio-envoy"));
                write_map(&map, out);
            } else {
                write_raw(r.headers, "server", out);
                put(out, b"server", b"istio-envoy");
            }
            out.extend_from_slice(b"\r\n");
            break (n, len);
        }
    };
    while resp.len() < head_len + body_len {
        if read_more(up, resp).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok((head_len, body_len))
}

async fn within<T>(f: impl Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(Duration::from_secs(15), f).await.map_err(|_| io::ErrorKind::TimedOut.into())
}

/// The head's bytes are copied once; every value is a slice of that copy.
fn to_map(head: &[u8], headers: &[httparse::Header<'_>]) -> io::Result<HeaderMap> {
    let shared = bytes::Bytes::copy_from_slice(head);
    let mut map = HeaderMap::with_capacity(headers.len() + 2);
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(invalid)?;
        let start = h.value.as_ptr() as usize - head.as_ptr() as usize;
        let value = shared.slice(start..start + h.value.len());
        map.append(name, HeaderValue::from_maybe_shared(value).map_err(invalid)?);
    }
    Ok(map)
}

fn write_map(map: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in map {
        put(out, name.as_str().as_bytes(), value.as_bytes());
    }
}

/// Copies every header line but those named `skip` (and `connection`, hop by hop).
fn write_raw(headers: &[httparse::Header<'_>], skip: &str, out: &mut Vec<u8>) {
    for h in headers {
        if !h.name.eq_ignore_ascii_case(skip) && !h.name.eq_ignore_ascii_case("connection") {
            put(out, h.name.as_bytes(), h.value);
        }
    }
}

fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A version 4 UUID from a xorshift generator, as text.
fn request_id(state: &mut u64) -> [u8; 36] {
    let mut next = || {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next().to_le_bytes());
    bytes[8..].copy_from_slice(&next().to_le_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = [b'-'; 36];
    let mut i = 0;
    for (k, b) in bytes.iter().enumerate() {
        if matches!(k, 4 | 6 | 8 | 10) {
            i += 1;
        }
        s[i] = HEX[usize::from(b >> 4)];
        s[i + 1] = HEX[usize::from(b & 15)];
        i += 2;
    }
    s
}

/// Appends what one read returns; 0 at end of stream.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    s.read_buf(buf).await
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
