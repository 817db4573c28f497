//! HTTP/1.1 toward upstreams, spoken in the request's own task.
//!
//! hyper's client runs each connection in a task of its own: a request crosses to it through a
//! channel, the response comes back through another, and its body through a third, so every
//! exchange costs several task wake-ups besides the codec. Here the request's task writes the
//! head and body itself, reads and parses the response head (httparse, the parser hyper uses),
//! and the response body reads the socket as the client's side pulls it. A connection belongs
//! to no task while idle in its pool: the sweeper (`conn.rs`) closes it at its `idleTimeout` or
//! `maxConnectionDuration`, and a connection the upstream closed is noticed from the readiness
//! tokio has already recorded when it is taken again.
//!
//! Upgrades (WebSocket) still go through hyper on a connection of their own: the tunnel needs
//! hyper's `Upgraded` on both sides.

use super::breaker::Slot;
use super::conn::Recycle;
use super::SendError;
use crate::body::UpstreamBody;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// Envoy's defaults for a message head: 60 KiB and 100 headers; past them the response is a
/// protocol error (502 `UPE`).
const MAX_HEAD: usize = 60 * 1024;
const MAX_HEADERS: usize = 100;
/// Headers a response map has room for: a browser's request headers and the request phase's.
const RESPONSE_MAP_ROOM: usize = 24;
/// Read at most this much at a time (and reserve it when the buffer runs low).
const READ_CHUNK: usize = 16 * 1024;
/// A chunk-size line or a trailer section longer than this is a protocol error.
const MAX_CHUNK_LINE: usize = 4096;

/// An upstream socket, plain or TLS (HTTP/1.1 and HTTP/2 connections alike).
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The most room a connection keeps for writing request heads between requests.
const KEPT_HEAD_ROOM: usize = 4096;

/// An HTTP/1.1 keep-alive connection to one endpoint.
pub(crate) struct Conn {
    io: Io,
    /// Read but not yet consumed.
    buf: BytesMut,
    /// Where a response head's header lines are noted before its bytes are frozen, kept from one
    /// response to the next (an allocation per response otherwise).
    spans: Vec<(HeaderName, usize, usize)>,
    /// The request head being written, kept likewise (unless a large head made it large).
    out: Vec<u8>,
    pub(crate) uses: u32,
    /// The connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`).
    pub(crate) local: Option<SocketAddr>,
    /// When it opened (`maxConnectionDuration`).
    pub(crate) born: Instant,
    /// When its last response ended (`idleTimeout`).
    pub(crate) idle_since: Instant,
    /// Its place under `maxConnections`, given back when the connection is dropped (closed).
    _slot: Slot,
}

impl Conn {
    /// Boxed: a connection moves in and out of its pool and into response bodies.
    pub(crate) fn new(io: Io, local: Option<SocketAddr>, slot: Slot) -> Box<Conn> {
        let now = crate::clock::now();
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            spans: Vec::new(),
            out: Vec::new(),
            uses: 0,
            local,
            born: now,
            idle_since: now,
            _slot: slot,
        })
    }

    /// Whether the upstream closed (or wrote unasked to) this idle connection. Only what tokio
    /// already knows of the socket's readiness is consulted: no system call while it is quiet.
    pub(crate) fn stale(&mut self) -> bool {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut probe = [0u8; 64];
        let mut rb = ReadBuf::new(&mut probe);
        // TLS may read records that carry no data (session tickets): still quiet, still usable.
        Pin::new(&mut self.io).poll_read(&mut cx, &mut rb).is_ready()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = self.io.read_buf(&mut self.buf);
        std::pin::pin!(read).poll(cx)
    }
}

/// Why an exchange on an HTTP/1.1 connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response headers")]
    Closed,
    #[error("connection closed before the end of the response body")]
    BodyCut,
    #[error("upstream protocol error: {0}")]
    Protocol(&'static str),
    #[error("request body error: {0}")]
    RequestBody(hyper::Error),
}

impl H1Error {
    pub(crate) fn is_protocol(&self) -> bool {
        matches!(self, H1Error::Protocol(_))
    }
}

/// A failed exchange; `unsent` gives the request back when not a byte of it was written.
pub(crate) struct Failed {
    pub(crate) error: SendError,
    /// The request's body when nothing of the request was written: it can go on another
    /// connection.
    pub(crate) unsent: Option<UpstreamBody>,
}

/// The request head, with the framing its body needs; `chunked` when its length is unknown.
fn encode_head(out: &mut Vec<u8>, parts: &http::request::Parts, body: &UpstreamBody) -> bool {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.clear();
    out.reserve(256 + parts.headers.len() * 32);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_length = false;
    for (name, value) in &parts.headers {
        has_length |= name == CONTENT_LENGTH;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut chunked = false;
    if !has_length {
        match body.size_hint().exact() {
            // As hyper and Envoy: a body-less request says so only where a body is expected.
            Some(0) => {
                if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
            }
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

/// Send `req` on `conn` and read the response head. The response's body reads the rest and,
/// at its end, puts the connection back through `home` when it can carry another request.
pub(crate) async fn send(
    mut conn: Box<Conn>,
    parts: &http::request::Parts,
    mut body: UpstreamBody,
    home: Option<Recycle>,
) -> Result<Response<ResponseBody>, Failed> {
    let chunked = encode_head(&mut conn.out, parts, &body);
    conn.uses = conn.uses.saturating_add(1);
    let head_only = parts.method == Method::HEAD;
    let written = async {
        conn.io.write_all(&conn.out).await?;
        if body.is_end_stream() {
            conn.io.flush().await?;
        }
        Ok::<(), io::Error>(())
    };
    if let Err(e) = written.await {
        let error = SendError::H1(H1Error::Io(e));
        return Err(Failed { error, unsent: Some(body) });
    }
    if conn.out.capacity() > KEPT_HEAD_ROOM {
        conn.out = Vec::new();
    }
    let fail = |e: H1Error| Failed { error: SendError::H1(e), unsent: None };
    // Streaming the body, an early response ends the upload (the connection is not reused).
    let mut reusable = true;
    if !body.is_end_stream() {
        match upload(&mut conn, &mut body, chunked).await {
            Ok(true) => {}
            Ok(false) => reusable = false,
            Err(e) => return Err(fail(e)),
        }
    }
    drop(body);
    let (resp, framing) =
        std::future::poll_fn(|cx| read_head(&mut conn, head_only, &mut reusable, cx)).await.map_err(fail)?;
    let (mut rp, ()) = resp.into_parts();
    if framing == Framing::Chunked && rp.headers.contains_key(CONTENT_LENGTH) {
        // Both framings: the chunked one wins and the length goes (RFC 9112 §6.3).
        rp.headers.remove(CONTENT_LENGTH);
        reusable = false;
    }
    let mut body = ResponseBody {
        conn: Some(conn),
        framing,
        reusable,
        home,
        chunk: ChunkState::Size,
        trailers: None,
        failed: None,
    };
    body.check_done();
    Ok(Response::from_parts(rp, body))
}

/// What one vectored write of a request body may carry: the body's frames that are ready
/// together go out in one system call, not one each (an HTTP/2 upload arrives in frames of
/// 16 KiB; a chunked frame is three slices).
const UPLOAD_GATHER: usize = 256 * 1024;
const UPLOAD_SLICES: usize = 48;

/// Write the request body; `Ok(false)` when the response began (or the upstream closed) before
/// it was all sent: the rest is not sent and the connection is not reused.
async fn upload(conn: &mut Conn, body: &mut UpstreamBody, chunked: bool) -> Result<bool, H1Error> {
    let mut queue = std::collections::VecDeque::<Bytes>::new();
    let mut queued = 0;
    let mut ended = false;
    std::future::poll_fn(|cx| loop {
        while !ended && queued < UPLOAD_GATHER && queue.len() + 3 <= UPLOAD_SLICES {
            let data = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => {
                    ended = true;
                    Bytes::new()
                }
                // Trailers are not sent on (Envoy's HTTP/1 default).
                Poll::Ready(Some(Ok(f))) => f.into_data().unwrap_or_default(),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(H1Error::RequestBody(e))),
            };
            ended = ended || body.is_end_stream();
            let mut push = |b: Bytes| {
                queued += b.len();
                queue.push_back(b);
            };
            match (chunked, data.is_empty()) {
                (false, false) => push(data),
                (true, false) => {
                    push(Bytes::from(format!("{:x}\r\n", data.len())));
                    push(data);
                    push(Bytes::from_static(b"\r\n"));
                }
                _ => {}
            }
            if ended && chunked {
                push(Bytes::from_static(b"0\r\n\r\n"));
            }
        }
        if queue.is_empty() {
            if !ended {
                // Waiting for the client's body: an upstream answering meanwhile ends the upload.
                return conn.poll_answered(cx).map_ok(|()| false);
            }
            return match Pin::new(&mut conn.io).poll_flush(cx) {
                Poll::Ready(r) => Poll::Ready(Ok(r.is_ok())),
                Poll::Pending => conn.poll_answered(cx).map_ok(|()| false),
            };
        }
        let sent = match queue.len() {
            1 => Pin::new(&mut conn.io).poll_write(cx, &queue[0]),
            n => {
                let mut slices = [io::IoSlice::new(&[]); UPLOAD_SLICES];
                for (slot, b) in slices.iter_mut().zip(queue.iter()) {
                    *slot = io::IoSlice::new(b);
                }
                Pin::new(&mut conn.io).poll_write_vectored(cx, &slices[..n.min(UPLOAD_SLICES)])
            }
        };
        match sent {
            // A write that fails ends the upload but not the exchange: an upstream that answered
            // and closed (a 413, say) is still heard; with no answer, reading the head fails.
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(false)),
            Poll::Ready(Ok(mut written)) => {
                queued -= written;
                while let Some(front) = queue.front_mut() {
                    if written < front.len() {
                        front.advance(written);
                        break;
                    }
                    written -= front.len();
                    queue.pop_front();
                }
            }
            // The upstream is not reading: it may be answering already.
            Poll::Pending => return conn.poll_answered(cx).map_ok(|()| false),
        }
    })
    .await
}

/// Which framing the response body has (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

impl Conn {
    /// Up to `left` bytes of a length-framed stretch of the body, reading when none are buffered;
    /// the connection closing first is an error.
    fn poll_take(&mut self, left: u64, cx: &mut Context<'_>) -> Poll<Result<Bytes, H1Error>> {
        if self.buf.is_empty() {
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Err(H1Error::BodyCut)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.buf.len());
        Poll::Ready(Ok(self.buf.split_to(n).freeze()))
    }

    /// Ready once the upstream has sent something (or closed, or failed) while the request is
    /// still going out.
    fn poll_answered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), H1Error>> {
        if !self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.poll_fill(cx) {
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Read until a whole response head is in, skipping interim (1xx) responses.
fn read_head(
    conn: &mut Conn,
    head_only: bool,
    reusable: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Result<(Response<()>, Framing), H1Error>> {
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, &mut conn.spans, head_only, reusable)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(resp, framing)) => return Poll::Ready(Ok((resp, framing))),
                None if conn.buf.len() > MAX_HEAD => {
                    return Poll::Ready(Err(H1Error::Protocol("response headers too large")))
                }
                None => {}
            }
        }
        match std::task::ready!(conn.poll_fill(cx)) {
            Ok(0) if conn.buf.is_empty() => return Poll::Ready(Err(H1Error::Closed)),
            Ok(0) => return Poll::Ready(Err(H1Error::Protocol("connection closed inside the response headers"))),
            Ok(_) => {}
            Err(e) => return Poll::Ready(Err(e.into())),
        }
    }
}

enum Parsed {
    Interim,
    Final(Response<()>, Framing),
}

fn parse_head(
    buf: &mut BytesMut,
    spans: &mut Vec<(HeaderName, usize, usize)>,
    head_only: bool,
    reusable: &mut bool,
) -> Result<Option<Parsed>, H1Error> {
    // Uninitialised slots, as hyper's own parse takes them: zeroing 100 of them per response
    // cost more than the parse of a short head.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(H1Error::Protocol("response headers too large"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Protocol("too many response headers")),
        Err(_) => return Err(H1Error::Protocol("malformed response headers")),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Protocol("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Upgrades never take this path; a 101 to a plain request is a broken upstream.
        return Err(H1Error::Protocol("unexpected 101 response"));
    }
    if status.is_informational() {
        buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let http10 = parsed.version == Some(0);
    // Header values are slices of the head, not copies. The names that decide the framing and
    // the connection's reuse are read on this one pass, not looked up in the map afterwards,
    // and the ones that only concern this connection stay out of it.
    let base = buf.as_ptr() as usize;
    let mut framing_facts = FramingFacts::new(http10);
    spans.clear();
    for h in parsed.headers.iter() {
        let name = header_name(h.name.as_bytes()).map_err(|_| H1Error::Protocol("invalid header name"))?;
        // The gateway answers as itself whatever the upstream says (`server` is overwritten on
        // every response, Envoy's default): kept, it was inserted here only to be replaced.
        if name == http::header::SERVER {
            continue;
        }
        if framing_facts.see(&name, h.value) {
            let start = h.value.as_ptr() as usize - base;
            spans.push((name, start, start + h.value.len()));
        }
    }
    let head = buf.split_to(len).freeze();
    // hyper's HTTP/1 server keeps a response's emptied map for the next request's headers, to
    // which the request phase adds its own (`x-forwarded-*`, `x-request-id`, …): a map sized
    // only for this response made every next request grow its map (a rehash and a realloc).
    let mut headers = HeaderMap::with_capacity(spans.len().max(RESPONSE_MAP_ROOM));
    for (name, start, end) in spans.drain(..) {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| H1Error::Protocol("invalid header value"))?;
        headers.append(name, value);
    }

    let FramingFacts { mut keep_alive, chunked_last, encoded, length, .. } = framing_facts;
    let framing = if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Length(0)
    } else if encoded {
        if chunked_last && !http10 {
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else if let Some(length) = length {
        Framing::Length(length?)
    } else {
        keep_alive = false;
        Framing::Close
    };
    *reusable &= keep_alive;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = if http10 { Version::HTTP_10 } else { Version::HTTP_11 };
    *resp.headers_mut() = headers;
    Ok(Some(Parsed::Final(resp, framing)))
}

/// A response header's name. Those most responses carry are matched as they are spelled on the
/// wire (Title-Case from nginx, Apache and Node; lowercase from Go and Envoy) before
/// `HeaderName::from_bytes` lowercases the name and looks it up (120 instructions a name).
fn header_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    use http::header as h;
    Ok(match raw {
        b"Date" | b"date" => h::DATE,
        b"Server" | b"server" => h::SERVER,
        b"Content-Type" | b"content-type" => h::CONTENT_TYPE,
        b"Content-Length" | b"content-length" => CONTENT_LENGTH,
        b"Connection" | b"connection" => CONNECTION,
        b"Transfer-Encoding" | b"transfer-encoding" => TRANSFER_ENCODING,
        b"Cache-Control" | b"cache-control" => h::CACHE_CONTROL,
        b"Content-Encoding" | b"content-encoding" => h::CONTENT_ENCODING,
        b"ETag" | b"etag" => h::ETAG,
        b"Last-Modified" | b"last-modified" => h::LAST_MODIFIED,
        b"Vary" | b"vary" => h::VARY,
        b"Set-Cookie" | b"set-cookie" => h::SET_COOKIE,
        _ => return HeaderName::from_bytes(raw),
    })
}

/// What a response head's `Connection`, `Transfer-Encoding` and `Content-Length` say about its
/// framing (RFC 9112 §6.3) and whether the connection may carry another request.
struct FramingFacts {
    http10: bool,
    keep_alive: bool,
    /// A `Transfer-Encoding` was present ...
    encoded: bool,
    /// ... and its last coding is `chunked`.
    chunked_last: bool,
    /// `Content-Length`: every value (and list element) must be the same number. Its error
    /// counts only where the length frames the body.
    length: Option<Result<u64, H1Error>>,
}

/// A length written only in ASCII digits (`parse` alone would take a sign).
fn digits(t: &[u8]) -> Option<u64> {
    if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

impl FramingFacts {
    fn new(http10: bool) -> Self {
        FramingFacts { http10, keep_alive: !http10, encoded: false, chunked_last: false, length: None }
    }

    /// Take in one header line; whether it belongs in the response's headers. The hop-by-hop
    /// ones that concern only this connection (its framing and reuse) do not: the proxy would
    /// strip them anyway (`headers::prepare_response`). A `Connection` that names other headers
    /// stays, so that they are stripped too.
    fn see(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        let tokens = || value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
        if name == CONNECTION {
            let mut names_others = false;
            for t in tokens() {
                if t.eq_ignore_ascii_case(b"close") {
                    self.keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive |= self.http10;
                } else {
                    names_others |= !t.is_empty();
                }
            }
            return names_others;
        } else if name == TRANSFER_ENCODING {
            self.encoded = true;
            if let Some(last) = tokens().rfind(|t| !t.is_empty()) {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
            return false;
        } else if name == UPGRADE || name == crate::headers::KEEP_ALIVE || name == crate::headers::PROXY_CONNECTION {
            return false;
        } else if name == CONTENT_LENGTH {
            // The first error stands.
            for t in tokens() {
                let next = match (digits(t), &self.length) {
                    (_, Some(Err(_))) => return true,
                    (None, _) => Err(H1Error::Protocol("invalid content-length")),
                    (Some(n), Some(Ok(f))) if *f != n => Err(H1Error::Protocol("conflicting content-length")),
                    (Some(n), _) => Ok(n),
                };
                self.length = Some(next);
            }
        }
        true
    }
}

/// A response body read straight from its connection.
pub(crate) struct ResponseBody {
    /// `None` once the body has ended and the connection went back (or was closed).
    conn: Option<Box<Conn>>,
    framing: Framing,
    chunk: ChunkState,
    /// Whether the connection may carry another request after this response.
    reusable: bool,
    home: Option<Recycle>,
    trailers: Option<Box<HeaderMap>>,
    /// A failure found while reading, reported on the next poll.
    failed: Option<H1Error>,
}

impl ResponseBody {
    /// At the body's end the connection goes back to its pool (or is closed).
    fn check_done(&mut self) {
        if self.framing == Framing::Length(0) {
            self.framing = Framing::Done;
        }
        if self.framing != Framing::Done {
            return;
        }
        let Some(conn) = self.conn.take() else { return };
        // Bytes past the response: the upstream is out of step, do not reuse it.
        if self.reusable && conn.buf.is_empty() {
            if let Some(home) = self.home.take() {
                home.put_back(conn);
            }
        }
    }

    fn next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(*t))));
            };
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) => {
                    let data = match std::task::ready!(conn.poll_take(left, cx)) {
                        Ok(d) => d,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    };
                    self.framing = Framing::Length(left - data.len() as u64);
                    self.check_done();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if conn.buf.is_empty() {
                        match std::task::ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                self.reusable = false;
                                self.framing = Framing::Done;
                                self.check_done();
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked => match self.chunk {
                    ChunkState::Data(left) => {
                        let data = match std::task::ready!(conn.poll_take(left, cx)) {
                            Ok(d) => d,
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        let rest = left - data.len() as u64;
                        self.chunk = if rest == 0 { ChunkState::DataEnd } else { ChunkState::Data(rest) };
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    state => {
                        // A line-based step: size line, data CRLF, or a trailer line.
                        let Some(nl) = memchr::memchr(b'\n', &conn.buf) else {
                            if conn.buf.len() > MAX_CHUNK_LINE {
                                return Poll::Ready(Some(Err(H1Error::Protocol("chunk line too long"))));
                            }
                            match std::task::ready!(conn.poll_fill(cx)) {
                                Ok(0) => return Poll::Ready(Some(Err(H1Error::BodyCut))),
                                Ok(_) => continue,
                                Err(e) => return Poll::Ready(Some(Err(e.into()))),
                            }
                        };
                        let line = conn.buf.split_to(nl + 1);
                        let line = line.strip_suffix(b"\n").unwrap_or(&line);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        match state {
                            ChunkState::Size => {
                                let size = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
                                let size = std::str::from_utf8(size)
                                    .ok()
                                    .filter(|s| !s.is_empty() && s.len() <= 16)
                                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                                    .ok_or(H1Error::Protocol("invalid chunk size"));
                                match size {
                                    Err(e) => return Poll::Ready(Some(Err(e))),
                                    Ok(0) => self.chunk = ChunkState::Trailers,
                                    Ok(n) => self.chunk = ChunkState::Data(n),
                                }
                            }
                            ChunkState::DataEnd if line.is_empty() => self.chunk = ChunkState::Size,
                            ChunkState::DataEnd => {
                                return Poll::Ready(Some(Err(H1Error::Protocol("chunk data longer than its size"))))
                            }
                            ChunkState::Trailers if line.is_empty() => {
                                self.framing = Framing::Done;
                                self.check_done();
                                // `next` returns the trailers, if any, on the loop's next turn.
                                continue;
                            }
                            ChunkState::Trailers => {
                                if let Err(e) = self.add_trailer(line) {
                                    return Poll::Ready(Some(Err(e)));
                                }
                            }
                            ChunkState::Data(_) => {}
                        }
                    }
                },
            }
        }
    }

    fn add_trailer(&mut self, line: &[u8]) -> Result<(), H1Error> {
        let bad = || H1Error::Protocol("invalid trailer");
        let colon = memchr::memchr(b':', line).ok_or_else(bad)?;
        let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).map_err(|_| bad())?;
        let trailers = self.trailers.get_or_insert_with(Box::default);
        if trailers.len() >= MAX_HEADERS {
            return Err(H1Error::Protocol("too many trailers"));
        }
        trailers.append(name, value);
        Ok(())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match this.next(cx) {
            Poll::Ready(Some(Err(e))) => {
                // The connection is out of step: closed, never reused. The error waits one turn,
                // so what was read before it (the head, good data) reaches the client first.
                this.conn = None;
                this.framing = Framing::Done;
                this.trailers = None;
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done && self.trailers.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done if self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{header_name, parse_head, Framing, Parsed};
    use bytes::BytesMut;
    use http::{HeaderName, Response, StatusCode};

    /// What `parse_head` makes of `raw`: `Ok(None)` while incomplete, else the final response
    /// (interim ones skipped), its framing and what is left in the buffer.
    #[allow(clippy::type_complexity)]
    fn parse(raw: &[u8]) -> Result<Option<(Response<()>, Framing, Vec<u8>)>, String> {
        let mut buf = BytesMut::from(raw);
        let (mut spans, mut reusable) = (Vec::new(), true);
        loop {
            match parse_head(&mut buf, &mut spans, false, &mut reusable) {
                Ok(Some(Parsed::Interim)) => continue,
                Ok(Some(Parsed::Final(resp, framing))) => return Ok(Some((resp, framing, buf.to_vec()))),
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }

    fn head(lines: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{lines}\r\n").into_bytes()
    }

    #[test]
    fn a_response_head_keeps_what_goes_on_to_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 23:56:36 GMT\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\nX-Spaced: \t v a l \t \r\n\r\nhello world\n";
        let (resp, framing, rest) = parse(raw).unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(framing, Framing::Length(12));
        assert_eq!(rest, b"hello world\n");
        let h = resp.headers();
        assert_eq!(h["date"], "Mon, 07 Dec 2026 23:56:36 GMT");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["content-length"], "12");
        assert_eq!(h["x-spaced"], "v a l");
        // Overwritten by the gateway anyway, and the connection's own.
        assert!(h.get("server").is_none() && h.get("connection").is_none());
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        for raw in [&b""[..], b"H", b"HTTP/1.", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK\r\nContent-Le", b"\r", b"\r\n"] {
            assert!(matches!(parse(raw), Ok(None)), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn what_a_response_head_may_be() {
        // Bare LF line ends, empty lines first, no reason or an empty one, obs-text in a reason
        // and a value, an interim response before the final one.
        for raw in [
            &b"HTTP/1.1 204 No Content\nDate: x\n\n"[..],
            b"\r\n\nHTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 204\r\n\r\n",
            b"HTTP/1.0 204 \r\n\r\n",
            b"HTTP/1.1 204 Sans cont\xc3\xa9nu\r\nX-A: caf\xc3\xa9\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ] {
            let parsed = parse(raw);
            assert!(
                matches!(&parsed, Ok(Some((r, _, _))) if r.status() == StatusCode::NO_CONTENT),
                "{:?}: {:?}",
                String::from_utf8_lossy(raw),
                parsed.map(|p| p.map(|(r, ..)| r.status()))
            );
        }
        let lines: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert!(matches!(parse(&head(&lines)), Ok(Some(_))));
    }

    #[test]
    fn malformed_response_heads_are_refused() {
        for raw in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"XYZ",
            b"\r\rHTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20x OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 200 O\rK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            &head("X-A: a\r\n folded\r\n"),
            &head("X-A : a\r\n"),
            &head("X-A a\r\n"),
            &head(": a\r\n"),
            &head("X-A: a\x01b\r\n"),
            &head("X-A: a\rb\r\n"),
            &head("X-A: a\x7fb\r\n"),
            &head("Server: a\x00b\r\n"),
            &head("Bad Name: a\r\n"),
            &head(&(0..101).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()),
        ] {
            assert!(parse(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn names_matched_as_spelled_are_the_names_from_bytes_gives() {
        for raw in [
            "Date",
            "Server",
            "Content-Type",
            "Content-Length",
            "Connection",
            "Transfer-Encoding",
            "Cache-Control",
            "Content-Encoding",
            "ETag",
            "Last-Modified",
            "Vary",
            "Set-Cookie",
        ] {
            for spelled in [raw.to_string(), raw.to_ascii_lowercase(), raw.to_ascii_uppercase()] {
                let general = HeaderName::from_bytes(spelled.as_bytes()).unwrap();
                assert_eq!(header_name(spelled.as_bytes()).unwrap(), general, "{spelled}");
            }
        }
        assert_eq!(header_name(b"X-Backend").unwrap().as_str(), "x-backend");
        assert!(header_name(b"Bad Name").is_err());
        assert!(header_name(b"").is_err());
    }
}
