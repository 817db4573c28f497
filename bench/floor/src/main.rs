//! The least a tokio-based HTTP/1.1 keep-alive reverse proxy can do per request, to measure the
//! user CPU time such a design cannot go below (`bench/floor.sh`). It is not the gateway: one
//! upstream, GET requests without bodies, responses framed by `Content-Length`, no routing, no
//! telemetry, no timeouts. What it does do is what any proxy on this path must: parse the
//! request head, copy it upstream with the `X-Forwarded-For` an Istio gateway adds, parse the
//! response head, copy it back with a `Server` of its own, over pooled upstream connections, on
//! one tokio worker (as Portico runs in the harness).
//!
//! usage: portico-floor LISTEN_ADDR UPSTREAM_ADDR

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Idle upstream connections (one worker: never contended).
static POOL: Mutex<Vec<TcpStream>> = Mutex::new(Vec::new());

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || io::Error::new(io::ErrorKind::InvalidInput, "usage: portico-floor LISTEN UPSTREAM");
    let listen: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let upstream: SocketAddr = args.next().ok_or_else(usage)?.parse().map_err(|_| usage())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_io().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, peer) = listener.accept().await?;
            client.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = serve(client, peer, upstream).await;
            });
        }
    })
}

async fn serve(mut client: TcpStream, peer: SocketAddr, upstream: SocketAddr) -> io::Result<()> {
    let mut req = Vec::with_capacity(4096);
    let mut resp = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let xff = format!("x-forwarded-for: {}\r\n", peer.ip());
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
                for h in r.headers.iter() {
                    if h.name.eq_ignore_ascii_case("connection") {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(xff.as_bytes());
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
        up.write_all(&out).await?;
        resp.clear();
        let (head_len, body_len) = loop {
            if read_more(&mut up, &mut resp).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = r.parse(&resp).map_err(invalid)? {
                let mut len = None;
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(r.code.unwrap_or(502).to_string().as_bytes());
                out.push(b' ');
                out.extend_from_slice(r.reason.unwrap_or("").as_bytes());
                out.extend_from_slice(b"\r\n");
                for h in r.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                    }
                    if h.name.eq_ignore_ascii_case("server") || h.name.eq_ignore_ascii_case("connection") {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"server: istio-envoy\r\n\r\n");
                break (n, len.ok_or_else(|| invalid("no content-length"))?);
            }
        };
        while resp.len() < head_len + body_len {
            if read_more(&mut up, &mut resp).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        POOL.lock().map_err(|_| invalid("pool"))?.push(up);
        out.extend_from_slice(&resp[head_len..head_len + body_len]);
        client.write_all(&out).await?;
    }
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
