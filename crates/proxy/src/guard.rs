//! Hostile-input defences below hyper, on the downstream byte stream.
//!
//! HTTP/1: every request head is read and checked here before hyper sees a byte of it, with
//! Envoy's strictness rather than RFC 9112's leniency: CRLF only (no bare LF or CR), no obs-fold,
//! no whitespace before a colon, no control bytes in values, one `Content-Length` of digits only,
//! `Transfer-Encoding: chunked` alone (never with `Content-Length`, never another coding), one
//! `Host`, an absolute-form target agreeing with `Host`, the URI within its limit. The body is
//! framed here too (length or strict chunked syntax), so the next head is found exactly where
//! hyper will look for it: nothing can hide a second request inside the first. A bad head is
//! never handed on: earlier requests finish, then the client gets 400/414/431 and the connection
//! closes.
//!
//! HTTP/2: frames from the client are counted (the h2 crate does the parsing); rapid reset,
//! CONTINUATION floods and control-frame floods (PING, SETTINGS, PRIORITY, empty DATA) end the
//! connection with GOAWAY `ENHANCE_YOUR_CALM`, as Envoy's flood protection does.
//!
//! Both: a connection silent for `idle_timeout` is shut down gracefully (Envoy's connection idle
//! timeout); one that stops moving for `stream_idle_timeout` while a request body is due or a
//! write is blocked (slow POST, slow reader) is closed.

use crate::downstream::ConnInfo;
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long a new HTTP/1 connection stays quiet between requests before it is parked: hyper's
/// read and write buffers (16 KiB), and in plaintext its task and its registration too, are
/// freed and the socket waits alone (see `park`), as nginx frees its buffers on a keep-alive
/// connection. Short, because every connection not yet parked holds all of that: at 10,000 new
/// connections a second, 5 ms is 50 of them. A client that sends its next request right after a
/// response never waits that long; one that keeps coming back soon after parking gets a longer
/// delay ([`ParkDelay`]).
const PARK_AFTER: Duration = Duration::from_millis(5);

/// The longest quiet a connection needs to park.
const PARK_AFTER_MAX: Duration = Duration::from_secs(1);

/// A parked connection that wakes within this many of its delays was not idle, only paced: a
/// park and a wake cost about as much as a request, so its delay doubles.
const WOKE_SOON: u32 = 16;

/// How long an HTTP/1 connection must be quiet to park: [`PARK_AFTER`], doubled (up to
/// [`PARK_AFTER_MAX`]) each time the connection shows it was not idle: it woke soon after
/// parking, or was found busy when its timer went off (each look at whether it went quiet is a
/// wake-up and a poll, so a busy connection is looked at less and less often). Kept with the
/// connection's facts, which outlive each guard and the parking lot's wait.
pub(crate) struct ParkDelay(AtomicU32);

impl Default for ParkDelay {
    fn default() -> Self {
        ParkDelay(AtomicU32::new(PARK_AFTER.as_millis() as u32))
    }
}

impl ParkDelay {
    pub(crate) fn get(&self) -> Duration {
        Duration::from_millis(u64::from(self.0.load(Ordering::Relaxed)))
    }

    fn double(&self) {
        let longer = (self.get() * 2).min(PARK_AFTER_MAX);
        self.0.store(longer.as_millis() as u32, Ordering::Relaxed);
    }

    /// The connection was parked for `parked_for` before its client spoke again.
    pub(crate) fn woke_after(&self, parked_for: Duration) {
        if parked_for < self.get() * WOKE_SOON {
            self.double();
        }
    }
}

/// Why a request head was refused (the answer written before the connection closes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    BadRequest(&'static str),
    UriTooLong,
    HeadersTooLarge,
    /// A head begun but not finished within the header read timeout (Envoy's
    /// `request_headers_timeout`: slowloris).
    HeadTimeout,
}

impl Reject {
    fn response(self) -> &'static [u8] {
        match self {
            Reject::BadRequest(_) => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\nserver: istio-envoy\r\nconnection: close\r\n\r\nBad Request",
            Reject::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 12\r\ncontent-type: text/plain\r\nserver: istio-envoy\r\nconnection: close\r\n\r\nURI Too Long",
            Reject::HeadersTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 31\r\ncontent-type: text/plain\r\nserver: istio-envoy\r\nconnection: close\r\n\r\nRequest Header Fields Too Large",
            Reject::HeadTimeout => b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 22\r\ncontent-type: text/plain\r\nserver: istio-envoy\r\nconnection: close\r\n\r\nrequest header timeout",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Reject::BadRequest(why) => why,
            Reject::UriTooLong => "uri too long",
            Reject::HeadersTooLarge => "headers too large",
            Reject::HeadTimeout => "request header timeout",
        }
    }
}

/// Limits of the HTTP/1 head check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct H1Limits {
    /// Longest request target (→ 414).
    pub(crate) max_uri: usize,
    /// Largest head, request line included (→ 431).
    pub(crate) max_head: usize,
    /// Most header lines (→ 431).
    pub(crate) max_headers: usize,
}

/// Chunked body syntax, one state per place in it.
#[derive(Clone, Copy, Debug)]
enum Chunk {
    Size { n: u64, digits: u8 },
    Ext { n: u64, len: usize },
    SizeLf { n: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { len: usize, cr: bool },
}

#[derive(Clone, Copy, Debug)]
enum St {
    Head,
    Body(u64),
    Chunked(Chunk),
    /// An upgrade (or CONNECT) head was handed on: what follows is held until the response
    /// tells whether the connection switched protocols.
    UpgradeWait,
    /// Switched protocols: bytes pass untouched.
    Opaque,
}

/// The HTTP/1 request framer: takes raw bytes, hands on only checked ones.
pub(crate) struct Framer {
    st: St,
    head: Vec<u8>,
    /// Length of the request line once its CRLF was seen.
    line_end: Option<usize>,
    /// The message being framed asked for an upgrade: after its body, wait for the response.
    upgrade_next: bool,
    /// A checked chunked head, held back until its first chunk-size line is checked too, so a
    /// malformed first chunk is still answered with 400 before anything goes upstream.
    held: Option<Vec<u8>>,
    /// Heads completed so far (wrapping): tells a head begun since the last look from the one
    /// that was being read then.
    heads: u32,
    limits: H1Limits,
}

/// RFC 9110 `tchar`, as a table: it is looked up for every byte of every header name.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        i += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

fn is_ctl(b: u8) -> bool {
    ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
}

/// The lines of a head (without the blank line that ends it), CR stripped: `split` on LF, found
/// with memchr.
struct HeadLines<'a>(Option<&'a [u8]>);

impl<'a> Iterator for HeadLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        let line = match memchr::memchr(b'\n', rest) {
            Some(at) => {
                self.0 = Some(&rest[at + 1..]);
                &rest[..at]
            }
            None => {
                self.0 = None;
                rest
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// `host[:port]` of two authorities, equal ignoring case and a default port.
fn same_authority(a: &[u8], b: &[u8], default_port: &[u8]) -> bool {
    fn strip<'a>(v: &'a [u8], port: &[u8]) -> &'a [u8] {
        match v.len().checked_sub(port.len() + 1) {
            Some(at) if v[at] == b':' && &v[at + 1..] == port && !v.ends_with(b"]") => &v[..at],
            _ => v,
        }
    }
    strip(a, default_port).eq_ignore_ascii_case(strip(b, default_port))
}

impl Framer {
    pub(crate) fn new(limits: H1Limits) -> Framer {
        Framer { st: St::Head, head: Vec::new(), line_end: None, upgrade_next: false, held: None, heads: 0, limits }
    }

    /// Part of a request head read, the rest still due from the client.
    fn mid_head(&self) -> bool {
        matches!(self.st, St::Head) && !self.head.is_empty()
    }

    /// Between messages or inside a head (where a refusal can still be answered).
    fn at_head(&self) -> bool {
        matches!(self.st, St::Head) || self.held.is_some()
    }

    /// Between two messages with nothing of the next one seen.
    fn between_messages(&self) -> bool {
        matches!(self.st, St::Head) && self.head.is_empty() && self.held.is_none() && !self.upgrade_next
    }

    /// Let go of the head buffer's memory (a parked connection).
    fn release(&mut self) {
        self.head = Vec::new();
    }

    /// Inside a request body (the client owes bytes).
    fn in_body(&self) -> bool {
        matches!(self.st, St::Body(_) | St::Chunked(_))
    }

    fn message_done(&mut self) {
        self.st = if std::mem::take(&mut self.upgrade_next) { St::UpgradeWait } else { St::Head };
    }

    /// Bytes that may be read straight into hyper's buffer (a body's or tunnel's remainder):
    /// no framing to check in them, so no copy.
    fn direct_budget(&self) -> Option<u64> {
        match self.st {
            St::Opaque => Some(u64::MAX),
            St::Body(n) | St::Chunked(Chunk::Data(n)) if self.held.is_none() => Some(n),
            _ => None,
        }
    }

    /// `k` bytes (within [`Self::direct_budget`]) went straight through.
    fn advance_direct(&mut self, k: usize) {
        let k = k as u64;
        match self.st {
            St::Body(n) if n <= k => self.message_done(),
            St::Body(n) => self.st = St::Body(n - k),
            St::Chunked(Chunk::Data(n)) => {
                self.st = St::Chunked(if n <= k { Chunk::DataCr } else { Chunk::Data(n - k) });
            }
            _ => {}
        }
    }

    /// The response to an upgrade request started: switch to pass-through on 101, else go on
    /// framing requests.
    fn response_started(&mut self, first: &[u8]) {
        if matches!(self.st, St::UpgradeWait) && first.starts_with(b"HTTP/1.") {
            self.st = if first.get(9..12) == Some(b"101") { St::Opaque } else { St::Head };
        }
    }

    /// Frame `data`, appending what may go on to `out`. Returns how many bytes were used (less
    /// than all only while an upgrade response is awaited).
    pub(crate) fn feed(&mut self, data: &[u8], out: &mut BytesMut) -> Result<usize, Reject> {
        let mut i = 0;
        while i < data.len() {
            match self.st {
                St::Opaque => {
                    out.extend_from_slice(&data[i..]);
                    return Ok(data.len());
                }
                St::UpgradeWait => return Ok(i),
                St::Body(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    out.extend_from_slice(&data[i..i + take]);
                    i += take;
                    let left = n - take as u64;
                    if left == 0 {
                        self.message_done();
                    } else {
                        self.st = St::Body(left);
                    }
                }
                St::Chunked(Chunk::Data(n)) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    out.extend_from_slice(&data[i..i + take]);
                    i += take;
                    let left = n - take as u64;
                    self.st = St::Chunked(if left == 0 { Chunk::DataCr } else { Chunk::Data(left) });
                }
                St::Chunked(c) => {
                    let b = data[i];
                    i += 1;
                    let next = self.chunk_byte(c, b)?;
                    match self.held.as_mut() {
                        Some(held) => held.push(b),
                        None => out.extend_from_slice(&[b]),
                    }
                    if matches!(next, Some(Chunk::Data(_) | Chunk::Trailer { .. }) | None) {
                        if let Some(held) = self.held.take() {
                            out.extend_from_slice(&held);
                        }
                    }
                    match next {
                        Some(next) => self.st = St::Chunked(next),
                        None => self.message_done(),
                    }
                }
                St::Head => {
                    let (used, complete) = self.scan_head(&data[i..])?;
                    i += used;
                    if complete {
                        self.heads = self.heads.wrapping_add(1);
                        let text = &self.head[..self.head.len().saturating_sub(4)];
                        let (next, hold, upgrade) = self.check_head(text)?;
                        self.upgrade_next = upgrade;
                        self.st = next;
                        if hold {
                            self.held = Some(std::mem::take(&mut self.head));
                        } else {
                            out.extend_from_slice(&self.head);
                        }
                        self.head.clear();
                        self.line_end = None;
                        if matches!(self.st, St::Head) {
                            self.message_done();
                        }
                    }
                }
            }
        }
        Ok(i)
    }

    /// Take head bytes up to and including the blank line that ends the head: `(used, complete)`.
    /// Runs between line endings are copied whole (found with `memchr2`); only CR and LF are
    /// looked at one by one. Errors come out exactly as a byte-by-byte scan would give them.
    fn scan_head(&mut self, data: &[u8]) -> Result<(usize, bool), Reject> {
        let mut k = 0;
        while k < data.len() {
            if self.head.last() == Some(&b'\r') && data[k] != b'\n' {
                return Err(Reject::BadRequest("bare CR"));
            }
            let run = memchr::memchr2(b'\r', b'\n', &data[k..]).unwrap_or(data.len() - k);
            if run > 0 {
                self.take_run(&data[k..k + run])?;
                k += run;
                continue;
            }
            let b = data[k];
            k += 1;
            if b == b'\n' && self.head.last() != Some(&b'\r') {
                return Err(Reject::BadRequest("bare LF line ending"));
            }
            self.head.push(b);
            if b == b'\n' {
                if self.head.len() == 2 {
                    // An empty line before the request line (RFC 9112 §2.2 lets servers skip it).
                    self.head.clear();
                    continue;
                }
                if self.line_end.is_none() {
                    self.line_end = Some(self.head.len());
                }
                if self.head.ends_with(b"\r\n\r\n") {
                    return Ok((k, true));
                }
            }
            self.check_head_size()?;
        }
        Ok((data.len(), false))
    }

    /// Append a run of head bytes without CR or LF, refused at the first byte past a limit.
    fn take_run(&mut self, run: &[u8]) -> Result<(), Reject> {
        let cap = self.request_line_cap().min(self.limits.max_head);
        let room = cap.saturating_sub(self.head.len());
        if run.len() <= room {
            self.head.extend_from_slice(run);
            return Ok(());
        }
        // Up to the first byte over the limit, as a byte-by-byte scan stops.
        self.head.extend_from_slice(&run[..room + 1]);
        self.check_head_size()
    }

    /// How long the head may be while its request line is unfinished (the URI limit plus room
    /// for the method and version); no bound of its own after it.
    fn request_line_cap(&self) -> usize {
        match self.line_end {
            None => self.limits.max_uri.saturating_add(32),
            Some(_) => usize::MAX,
        }
    }

    fn check_head_size(&self) -> Result<(), Reject> {
        if self.head.len() > self.request_line_cap() {
            return Err(Reject::UriTooLong);
        }
        if self.head.len() > self.limits.max_head {
            return Err(Reject::HeadersTooLarge);
        }
        Ok(())
    }

    /// Check a complete head (`text`, without the blank line that ends it): the state for what
    /// follows it, whether to hold the head back until the first chunk-size line is checked, and
    /// whether an upgrade is asked for.
    fn check_head(&self, text: &[u8]) -> Result<(St, bool, bool), Reject> {
        let bad = Reject::BadRequest;
        let mut lines = HeadLines(Some(text));
        let line = lines.next().unwrap_or_default();
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("malformed request line"));
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(bad("invalid method"));
        }
        if target.len() > self.limits.max_uri {
            return Err(Reject::UriTooLong);
        }
        if target.is_empty() || target.iter().fold(false, |bad, &b| bad | (b <= b' ') | (b == 0x7f)) {
            return Err(bad("invalid request target"));
        }
        let http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(bad("unsupported HTTP version")),
        };
        let (mut cl, mut cl_count, mut te_count, mut te_chunked) = (0u64, 0, 0, false);
        let (mut host, mut host_count, mut upgrade, mut count) = (None, 0, false, 0usize);
        let mut expect_continue = false;
        for line in lines {
            if line.starts_with(b" ") || line.starts_with(b"\t") {
                return Err(bad("obsolete line folding"));
            }
            count += 1;
            if count > self.limits.max_headers {
                return Err(Reject::HeadersTooLarge);
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                return Err(bad("header line without a colon"));
            };
            let name = &line[..colon];
            if name.is_empty() || !name.iter().fold(true, |ok, &b| ok & is_tchar(b)) {
                return Err(bad("invalid header name"));
            }
            let value = trim_ows(&line[colon + 1..]);
            // Folded rather than short-circuited: the compiler checks many bytes at a time.
            if value.iter().fold(false, |bad, &b| bad | is_ctl(b)) {
                return Err(bad("control character in a header value"));
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                cl_count += 1;
                if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                    return Err(bad("invalid content-length"));
                }
                cl = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_count += 1;
                // Exactly `chunked`: not even trailing whitespace (`chunked ` is a classic
                // obfuscation that some parsers read differently).
                let raw = trim_ows(&line[colon + 1..]).len() == line[colon + 1..].trim_ascii_start().len();
                te_chunked = raw && value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"host") {
                host_count += 1;
                host = Some(value);
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        if cl_count > 1 {
            return Err(bad("more than one content-length"));
        }
        if te_count > 0 && (te_count > 1 || !te_chunked || http10) {
            return Err(bad("unsupported transfer-encoding"));
        }
        if te_count > 0 && cl_count > 0 {
            return Err(bad("both content-length and transfer-encoding"));
        }
        if host_count > 1 {
            return Err(bad("more than one host"));
        }
        for (scheme, port) in [(&b"http://"[..], &b"80"[..]), (b"https://", b"443")] {
            let Some(prefix) = target.get(..scheme.len()) else { continue };
            if !prefix.eq_ignore_ascii_case(scheme) {
                continue;
            }
            let rest = &target[scheme.len()..];
            let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
            let authority = &rest[..end];
            if authority.is_empty() || authority.contains(&b'@') {
                return Err(bad("invalid absolute-form authority"));
            }
            if host.is_some_and(|h| !same_authority(authority, h, port)) {
                return Err(bad("host disagrees with the absolute-form target"));
            }
        }
        let upgrade = (upgrade && !http10) || method == b"CONNECT";
        Ok(if te_count > 0 {
            // A client waiting for `100 Continue` sends no chunk before the head is answered.
            (St::Chunked(Chunk::Size { n: 0, digits: 0 }), !expect_continue, upgrade)
        } else if cl > 0 {
            (St::Body(cl), false, upgrade)
        } else {
            (St::Head, false, upgrade)
        })
    }

    /// The common case checked where the bytes lie, with none of [`Self::feed`]'s copies: `data`
    /// is one whole head, read while between messages, followed by nothing or by part of its
    /// `Content-Length` body. True when it was framed and may be handed on as it is (exactly
    /// what `feed` would have handed on). False leaves the framer untouched, for `feed` to frame
    /// the same bytes and give any refusal: every check here is one `feed` makes too, so a head
    /// it takes is one `feed` would have taken.
    pub(crate) fn pass_whole_head(&mut self, data: &[u8]) -> bool {
        if !self.between_messages() || matches!(data.first(), None | Some(b'\r' | b'\n')) {
            return false;
        }
        // Every CR followed by LF, no bare LF; the head ends at the first empty line.
        let (mut line_start, mut request_line) = (0, None);
        let mut at = 0;
        let end = loop {
            let Some(k) = memchr::memchr2(b'\r', b'\n', &data[at..]) else { return false };
            let cr = at + k;
            if data[cr] != b'\r' || data.get(cr + 1) != Some(&b'\n') {
                return false;
            }
            if cr == line_start {
                break cr + 2;
            }
            request_line.get_or_insert(cr);
            line_start = cr + 2;
            at = line_start;
        };
        // Within the limits `feed` applies while it takes the head byte by byte.
        let within = request_line.is_some_and(|l| l < self.limits.max_uri.saturating_add(32));
        if !within || end > self.limits.max_head {
            return false;
        }
        let Ok((next, false, upgrade)) = self.check_head(&data[..end - 4]) else { return false };
        let rest = (data.len() - end) as u64;
        match next {
            St::Head if rest == 0 => {}
            St::Body(n) if rest <= n => {}
            St::Chunked(_) if rest == 0 => {}
            _ => return false,
        }
        self.upgrade_next = upgrade;
        self.st = next;
        if matches!(next, St::Head) {
            self.message_done();
        } else {
            self.advance_direct(data.len() - end);
        }
        true
    }

    /// One byte of chunk framing: the next state, `None` at the end of the message.
    fn chunk_byte(&self, c: Chunk, b: u8) -> Result<Option<Chunk>, Reject> {
        let bad = Reject::BadRequest;
        Ok(Some(match c {
            Chunk::Size { n, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits >= 15 {
                        return Err(bad("chunk size too large"));
                    }
                    let d = char::from(b).to_digit(16).map_or(0, u64::from);
                    Chunk::Size { n: (n << 4) | d, digits: digits + 1 }
                }
                b';' | b' ' | b'\t' if digits > 0 => Chunk::Ext { n, len: 0 },
                b'\r' if digits > 0 => Chunk::SizeLf { n },
                _ => return Err(bad("invalid chunk size")),
            },
            Chunk::Ext { n, len } => match b {
                b'\r' => Chunk::SizeLf { n },
                _ if is_ctl(b) => return Err(bad("invalid chunk extension")),
                _ if len >= 4096 => return Err(bad("chunk extension too long")),
                _ => Chunk::Ext { n, len: len + 1 },
            },
            Chunk::SizeLf { n } => match b {
                b'\n' if n == 0 => Chunk::Trailer { len: 0, cr: false },
                b'\n' => Chunk::Data(n),
                _ => return Err(bad("bare CR in chunk size line")),
            },
            Chunk::Data(n) => Chunk::Data(n),
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(bad("chunk data longer than its size")),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size { n: 0, digits: 0 },
                _ => return Err(bad("chunk data not followed by CRLF")),
            },
            Chunk::Trailer { len, cr: true } => match b {
                b'\n' if len == 0 => return Ok(None),
                b'\n' => Chunk::Trailer { len: 0, cr: false },
                _ => return Err(bad("bare CR in trailers")),
            },
            Chunk::Trailer { len, cr: false } => match b {
                b'\r' => Chunk::Trailer { len, cr: true },
                _ if is_ctl(b) => return Err(bad("control character in trailers")),
                _ if len >= self.limits.max_head => return Err(Reject::HeadersTooLarge),
                _ => Chunk::Trailer { len: len + 1, cr: false },
            },
        }))
    }
}

/// An HTTP/2 write this large does not wait a turn for others to join it (see `coalesce`).
const GATHER_ENOUGH: usize = 8 * 1024;

/// HTTP/2: how much one read takes from the socket while a client sends faster than h2 asks
/// for it (see [`H2Watch::ahead`]): a stream's whole window.
const READ_AHEAD: usize = 64 * 1024;
/// ... once a read of at least this much filled h2's buffer.
const READ_AHEAD_AFTER: usize = 4 * 1024;

/// HTTP/2 flood limits (Envoy's flood protection, simplified to per-connection budgets).
#[derive(Clone, Copy, Debug)]
pub(crate) struct H2Limits {
    /// CONTINUATION frames allowed in one header block (nghttp2 allows 8; we are lenient).
    pub(crate) max_continuations: u32,
    /// Control frames (PING, SETTINGS, PRIORITY, empty DATA) allowed, plus 100 per stream opened.
    pub(crate) control_budget: u64,
    /// Streams a client may open before its share of RST_STREAM is judged (Envoy: 50 % reset).
    pub(crate) reset_judged_after: u64,
}

impl Default for H2Limits {
    fn default() -> Self {
        // Envoy judges resets once 500 streams were opened (`premature_reset_total_stream_count`).
        H2Limits { max_continuations: 32, control_budget: 1000, reset_judged_after: 500 }
    }
}

/// What [`FrameCursor::walk_pieces`] finds: a frame header, or payload bytes of that frame.
enum Piece<'a> {
    Header { kind: u8, flags: u8, stream: u32, len: usize },
    Payload(&'a [u8]),
}

/// Frame boundaries of one direction of an HTTP/2 connection.
#[derive(Default)]
struct FrameCursor {
    /// Bytes still to skip before the first frame (the client's preface).
    skip: usize,
    hdr: [u8; 9],
    hdr_len: usize,
    payload_left: usize,
}

impl FrameCursor {
    /// Walk `data`; `on_frame(type, flags, stream, length)` for each frame header completed.
    fn walk(&mut self, data: &[u8], mut on_frame: impl FnMut(u8, u8, u32, usize)) {
        self.walk_pieces(data, |p| {
            if let Piece::Header { kind, flags, stream, len } = p {
                on_frame(kind, flags, stream, len);
            }
        });
    }

    /// [`Self::walk`], also handing on each piece of payload (of the frame last announced).
    fn walk_pieces(&mut self, mut data: &[u8], mut on: impl FnMut(Piece<'_>)) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                on(Piece::Payload(&data[..n]));
                data = &data[n..];
            } else {
                let n = (9 - self.hdr_len).min(data.len());
                self.hdr[self.hdr_len..self.hdr_len + n].copy_from_slice(&data[..n]);
                self.hdr_len += n;
                data = &data[n..];
                if self.hdr_len == 9 {
                    self.hdr_len = 0;
                    let h = self.hdr;
                    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    self.payload_left = len;
                    on(Piece::Header { kind: h[3], flags: h[4], stream, len });
                }
            }
        }
    }

    /// Between two frames (a frame of our own may be written here).
    fn at_boundary(&self) -> bool {
        self.skip == 0 && self.payload_left == 0 && self.hdr_len == 0
    }
}

/// Counts of client frames that floods are judged by.
struct H2Watch {
    limits: H2Limits,
    read: FrameCursor,
    written: FrameCursor,
    opened: u64,
    resets: u64,
    control: u64,
    continuations: u32,
    last_stream: u32,
    flow: Flow,
    /// This round of writes waited one turn of the runtime (see [`Guarded::coalesce`]).
    write_waited: bool,
    /// Read ahead of h2, which reads into what is left of its own buffer (8 KiB or so): an
    /// upload took a system call per 7 KB. Once a large read fills h2's buffer, the next reads
    /// take up to [`READ_AHEAD`] here, and h2 is handed the bytes as it asks. The memory is held
    /// only while bytes wait for h2 or the last read filled it: a read that finds the socket
    /// dry, or comes back short and is handed out, gives it back (an idle connection holds none).
    ahead: BytesMut,
    /// The last read filled the space it was given: more is likely waiting.
    read_ahead: bool,
}

impl H2Watch {
    fn new(limits: H2Limits) -> H2Watch {
        H2Watch {
            limits,
            read: FrameCursor { skip: 24, ..FrameCursor::default() },
            written: FrameCursor::default(),
            opened: 0,
            resets: 0,
            control: 0,
            continuations: 0,
            last_stream: 0,
            flow: Flow::default(),
            write_waited: false,
            ahead: BytesMut::new(),
            read_ahead: false,
        }
    }

    /// Account for bytes read; `Some(reason)` when the client is flooding.
    fn on_read(&mut self, data: &[u8], now: Instant) -> Option<&'static str> {
        let mut verdict = None;
        let (limits, cursor, flow) = (self.limits, &mut self.read, &mut self.flow);
        let (opened, resets, control, continuations, last_stream) =
            (&mut self.opened, &mut self.resets, &mut self.control, &mut self.continuations, &mut self.last_stream);
        cursor.walk_pieces(data, |piece| {
            let Piece::Header { kind, flags, stream, len } = piece else {
                if let Piece::Payload(p) = piece {
                    flow.read_payload(p, now);
                }
                return;
            };
            flow.read_header(kind, flags, stream, now);
            const ACK: u8 = 0x1;
            const END_STREAM: u8 = 0x1;
            const END_HEADERS: u8 = 0x4;
            match kind {
                0x0 if len == 0 && flags & END_STREAM == 0 => *control += 1,
                0x1 => {
                    if stream > *last_stream {
                        *opened += 1;
                        *last_stream = stream;
                    }
                    *continuations = 0;
                }
                0x2 => *control += 1,
                0x3 => *resets += 1,
                0x4 | 0x6 if flags & ACK == 0 => *control += 1,
                0x9 => {
                    *continuations += 1;
                    if *continuations > limits.max_continuations {
                        verdict = Some("CONTINUATION flood");
                    }
                    if flags & END_HEADERS != 0 {
                        *continuations = 0;
                    }
                }
                _ => {}
            }
            if *control > limits.control_budget.saturating_add(opened.saturating_mul(100)) {
                verdict = Some("control frame flood");
            }
            if *opened >= limits.reset_judged_after && resets.saturating_mul(2) >= *opened {
                verdict = Some("rapid reset");
            }
        });
        verdict
    }

    /// Account for bytes h2 wrote to the client.
    fn on_written(&mut self, data: &[u8], now: Instant) {
        let flow = &mut self.flow;
        self.written.walk(data, |kind, flags, stream, len| flow.written_header(kind, flags, stream, len, now));
    }

    /// GOAWAY(last client stream, ENHANCE_YOUR_CALM).
    fn goaway(&self) -> [u8; 17] {
        let mut f = [0u8; 17];
        f[2] = 8;
        f[3] = 0x7;
        f[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        f[13..17].copy_from_slice(&0xbu32.to_be_bytes());
        f
    }
}

/// The flow-control view of one HTTP/2 connection, kept from the frames each way, to find the
/// streams a client stalls: a response it never opens the window for (zero-window reader), or a
/// request it never finishes sending. h2 only parks such a stream (its send buffer full), so
/// without this it would hold its buffers and its upstream connection for as long as the
/// connection lives. Envoy's `stream_idle_timeout` resets them; so do we.
struct Flow {
    /// Keyed by the client's stream ids: a seeded hash (foldhash), not SipHash, which cost
    /// about 460 instructions per request here, nor an unseeded one a client could aim
    /// collisions at.
    streams: HashMap<u32, StreamFlow, foldhash::fast::RandomState>,
    /// The client's connection-level receive window, as far as our writes used it.
    conn_window: i64,
    /// The client's `SETTINGS_INITIAL_WINDOW_SIZE`.
    initial_window: i64,
    /// Type and stream of the client frame being read, and the bytes so far of its current
    /// SETTINGS entry or WINDOW_UPDATE increment.
    reading: (u8, u32),
    rec: [u8; 6],
    rec_len: usize,
}

/// One client stream in [`Flow`].
struct StreamFlow {
    /// The client's receive window for it.
    window: i64,
    /// The client ended its request (END_STREAM).
    client_done: bool,
    /// We wrote the response's headers.
    started: bool,
    /// The last frame on it, either way, or window given to it.
    last: Instant,
}

/// Streams tracked per connection (h2 accepts at most `max_concurrent_streams` of them; the
/// rest are refused and end at once). Past it new streams are simply not watched.
const MAX_TRACKED_STREAMS: usize = 4096;

impl Default for Flow {
    fn default() -> Self {
        // RFC 9113 §6.9.2: both windows start at 65,535.
        Flow {
            streams: HashMap::default(),
            conn_window: 65_535,
            initial_window: 65_535,
            reading: (0, 0),
            rec: [0; 6],
            rec_len: 0,
        }
    }
}

impl Flow {
    const END_STREAM: u8 = 0x1;

    fn read_header(&mut self, kind: u8, flags: u8, stream: u32, now: Instant) {
        self.reading = (kind, stream);
        self.rec_len = 0;
        let end = flags & Self::END_STREAM != 0;
        match kind {
            0x0 | 0x1 => {
                let (initial, full) = (self.initial_window, self.streams.len() >= MAX_TRACKED_STREAMS);
                match self.streams.get_mut(&stream) {
                    Some(s) => {
                        s.last = now;
                        s.client_done |= end;
                    }
                    // A new client stream (client streams are odd).
                    None if kind == 0x1 && stream % 2 == 1 && !full => {
                        let s = StreamFlow { window: initial, client_done: end, started: false, last: now };
                        self.streams.insert(stream, s);
                    }
                    None => {}
                }
            }
            0x3 => {
                self.streams.remove(&stream);
            }
            _ => {}
        }
    }

    fn read_payload(&mut self, mut bytes: &[u8], now: Instant) {
        let size = match self.reading.0 {
            0x4 => 6,
            0x8 => 4,
            _ => return,
        };
        while !bytes.is_empty() {
            let n = (size - self.rec_len).min(bytes.len());
            self.rec[self.rec_len..self.rec_len + n].copy_from_slice(&bytes[..n]);
            self.rec_len += n;
            bytes = &bytes[n..];
            if self.rec_len == size {
                self.rec_len = 0;
                self.record(now);
            }
        }
    }

    /// A complete SETTINGS entry or WINDOW_UPDATE increment from the client.
    fn record(&mut self, now: Instant) {
        let r = self.rec;
        if self.reading.0 == 0x4 {
            // SETTINGS_INITIAL_WINDOW_SIZE changes every open stream's window by the difference.
            if u16::from_be_bytes([r[0], r[1]]) == 0x4 {
                let new = i64::from(u32::from_be_bytes([r[2], r[3], r[4], r[5]]));
                let delta = new - self.initial_window;
                self.initial_window = new;
                for s in self.streams.values_mut() {
                    s.window += delta;
                }
            }
        } else {
            let inc = i64::from(u32::from_be_bytes([r[0], r[1], r[2], r[3]]) & 0x7fff_ffff);
            match self.reading.1 {
                0 => self.conn_window += inc,
                id => {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.window += inc;
                        s.last = now;
                    }
                }
            }
        }
    }

    fn written_header(&mut self, kind: u8, flags: u8, stream: u32, len: usize, now: Instant) {
        let end = flags & Self::END_STREAM != 0;
        match kind {
            0x0 | 0x1 => {
                let len = i64::try_from(len).unwrap_or(i64::MAX);
                if kind == 0x0 {
                    self.conn_window -= len;
                }
                if end {
                    self.streams.remove(&stream);
                } else if let Some(s) = self.streams.get_mut(&stream) {
                    s.started = true;
                    s.last = now;
                    if kind == 0x0 {
                        s.window -= len;
                    }
                }
            }
            0x3 => {
                self.streams.remove(&stream);
            }
            _ => {}
        }
    }

    /// The stalled stream that is due first, and when: one whose request the client has not
    /// finished, or whose started response waits for window the client does not give.
    fn next_due(&self, idle: Duration) -> Option<(Instant, u32)> {
        let conn_closed = self.conn_window <= 0;
        self.streams
            .iter()
            .filter(|(_, s)| !s.client_done || (s.started && (conn_closed || s.window <= 0)))
            .map(|(id, s)| (s.last + idle, *id))
            .min()
    }
}

/// RST_STREAM(`stream`, CANCEL).
fn rst_cancel(stream: u32) -> [u8; 13] {
    let mut f = [0u8; 13];
    f[2] = 4;
    f[3] = 0x3;
    f[5..9].copy_from_slice(&stream.to_be_bytes());
    f[9..13].copy_from_slice(&0x8u32.to_be_bytes());
    f
}

/// Timeouts of a guarded connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// No bytes either way for this long: graceful shutdown (Envoy's connection idle timeout).
    pub(crate) idle: Duration,
    /// No progress for this long while the client owes body bytes or a write is blocked.
    pub(crate) stream_idle: Duration,
    /// HTTP/1: the next request head must start within this time after the last exchange
    /// (parked or not), and a head once begun must be complete within it (→ 408).
    pub(crate) header_read: Duration,
}

/// A downstream stream with the checks above. `stop` is notified when the connection should be
/// shut down gracefully (a refused head, idleness, a flood).
pub(crate) struct Guarded<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    /// Always `Some` until dropped (then it may be handed to [`linger`]).
    inner: Option<S>,
    /// The client closed its side (nothing left to drain when we close).
    eof_seen: bool,
    /// Our side is shut (hyper's shutdown went through): [`linger`] need not shut it again.
    shut_down: bool,
    framer: Option<Framer>,
    /// Boxed: HTTP/1 connections (most of them, and the ones that sit idle) need none.
    h2: Option<Box<H2Watch>>,
    raw: BytesMut,
    out: BytesMut,
    reject: Option<Reject>,
    reply_sent: usize,
    /// A flood was detected: GOAWAY sent (when it could be), then every operation fails.
    killed: Option<&'static str>,
    goaway_sent: usize,
    stop: Arc<Notify>,
    stop_sent: bool,
    parked_reader: Option<Waker>,
    timeouts: Timeouts,
    last_progress: Instant,
    write_blocked: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer's own waker (see `woken`).
    timer_woken: crate::woken::OwnWaker,
    /// HTTP/1 requests begun when the timer was last armed: one begun since is a client that
    /// keeps the connection busy, whose parking is then put off (`ParkDelay`).
    timer_begun: u32,
    /// RST_STREAMs for stalled HTTP/2 streams, handed to h2 as if the client had sent them (so
    /// it drops the stream, its buffers and its upstream), at a frame boundary of the input.
    inject_in: Vec<u8>,
    /// The same RST_STREAMs for the client, written between two of h2's frames.
    inject_out: Vec<u8>,
    /// Where a refused request is logged (HTTP/1), taken when it is.
    refusals: Option<crate::refused::Refusals>,
    /// What was read of the refused head, and when it began (or was refused, when it came whole).
    refused_head: Vec<u8>,
    refused_at: Option<Instant>,
    /// HTTP/1: when the head being read began, with the framer's head count then.
    head_wait: Option<(u32, Instant)>,
    /// HTTP/1: the connection's request counts (parking needs none in flight).
    conn: Option<Arc<ConnInfo>>,
    /// hyper was told the client closed so that it lets go of the connection: the caller parks
    /// it ([`Self::wait_parked`]) instead of closing it.
    parked: bool,
}

/// The stream, or an error once it was handed to the lingering close.
macro_rules! inner {
    ($this:expr, $gone:expr) => {
        match $this.inner.as_mut() {
            Some(i) => Pin::new(i),
            None => return $gone,
        }
    };
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Guarded<S> {
    fn new(inner: S, framer: Option<Framer>, h2: Option<H2Watch>, timeouts: Timeouts) -> (Self, Arc<Notify>) {
        let stop = Arc::new(Notify::new());
        let g = Guarded {
            inner: Some(inner),
            eof_seen: false,
            shut_down: false,
            framer,
            h2: h2.map(Box::new),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            reject: None,
            reply_sent: 0,
            killed: None,
            goaway_sent: 0,
            stop: stop.clone(),
            stop_sent: false,
            parked_reader: None,
            timeouts,
            last_progress: crate::clock::now(),
            write_blocked: false,
            timer: None,
            timer_woken: crate::woken::OwnWaker::new(),
            timer_begun: 0,
            inject_in: Vec::new(),
            inject_out: Vec::new(),
            refusals: None,
            refused_head: Vec::new(),
            refused_at: None,
            head_wait: None,
            conn: None,
            parked: false,
        };
        (g, stop)
    }

    /// An HTTP/1 connection: heads checked, bodies framed; a refused head is logged to
    /// `refusals`.
    pub(crate) fn http1(
        inner: S,
        limits: H1Limits,
        timeouts: Timeouts,
        refusals: crate::refused::Refusals,
        conn: Arc<ConnInfo>,
    ) -> (Self, Arc<Notify>) {
        let (mut g, stop) = Self::new(inner, Some(Framer::new(limits)), None, timeouts);
        g.refusals = Some(refusals);
        g.conn = Some(conn);
        (g, stop)
    }

    /// An idle HTTP/1 connection: no request in flight, nothing buffered either way, the framer
    /// between messages, nothing refused or closing. hyper then only waits for the next head.
    fn may_park(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.requests.settled())
            && self.framer.as_ref().is_some_and(Framer::between_messages)
            && self.raw.is_empty()
            && self.out.is_empty()
            && !self.write_blocked
            && self.reject.is_none()
            && self.killed.is_none()
            && !self.stop_sent
    }

    /// hyper let go of the connection because the guard parked it.
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    /// Bytes hyper had read but not used when it let go: handed to the next hyper first.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut out = BytesMut::with_capacity(bytes.len() + self.out.len());
            out.extend_from_slice(bytes);
            out.extend_from_slice(&self.out);
            self.out = out;
        }
    }

    /// A parked connection's stream and when its quiet must end (the idle timeout, or the header
    /// read timeout between requests), for the parking lot. Only when nothing is buffered either
    /// way; else the guard is handed back and waits in its task ([`Self::wait_parked`]).
    pub(crate) fn into_idle(mut self: Box<Self>) -> Result<(S, Instant), Box<Self>> {
        if !self.out.is_empty() || !self.raw.is_empty() {
            return Err(self);
        }
        let deadline = self.parked_deadline();
        match self.inner.take() {
            Some(inner) => Ok((inner, deadline)),
            None => Err(self),
        }
    }

    /// When a parked connection's wait ends: the idle timeout, or the header read timeout
    /// between requests, from its last progress.
    fn parked_deadline(&self) -> Instant {
        self.last_progress + self.timeouts.idle.min(self.timeouts.header_read)
    }

    /// The stream (until it is closed).
    pub(crate) fn stream(&self) -> Option<&S> {
        self.inner.as_ref()
    }

    /// Wait, parked, for the client's next bytes with only a little memory held: `true` when
    /// they came (kept for the framer), `false` when the connection should close (the client
    /// closed, an error, the idle timeout).
    pub(crate) async fn wait_parked(&mut self) -> bool {
        self.parked = false;
        if !self.out.is_empty() {
            return true;
        }
        // Give back what the last requests grew.
        self.raw = BytesMut::new();
        self.out = BytesMut::new();
        self.timer = None;
        if let Some(f) = self.framer.as_mut() {
            f.release();
        }
        let idle = tokio::time::sleep_until(self.parked_deadline());
        let read = std::future::poll_fn(|cx| {
            let mut chunk = [0u8; 1024];
            let mut buf = ReadBuf::new(&mut chunk);
            match inner!(self, Poll::Ready(false)).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.raw.extend_from_slice(buf.filled());
                    self.progress();
                    Poll::Ready(true)
                }
                Poll::Ready(Ok(())) => {
                    self.eof_seen = true;
                    Poll::Ready(false)
                }
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        });
        let since = Instant::now();
        let woke = tokio::select! {
            woke = read => woke,
            () = idle => false,
        };
        if let Some(c) = self.conn.as_ref().filter(|_| woke) {
            c.park_delay.woke_after(since.elapsed());
        }
        woke
    }

    /// Log the refused request once: `answered` when the whole refusal was written.
    fn log_refusal(&mut self, answered: bool) {
        let (Some(r), Some(log)) = (self.reject, self.refusals.take()) else { return };
        let reply = r.response();
        let body = reply.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| reply.len() - at - 4);
        let sent = if answered { body as u64 } else { 0 };
        let took = self.refused_at.map_or(Duration::ZERO, |at| at.elapsed());
        log.log(r, &self.refused_head, sent, took);
    }

    /// An HTTP/2 connection (`preface_seen`: the 24-byte client preface is still to come
    /// through this stream).
    pub(crate) fn http2(inner: S, limits: H2Limits, timeouts: Timeouts, preface_seen: bool) -> (Self, Arc<Notify>) {
        let mut watch = H2Watch::new(limits);
        if !preface_seen {
            watch.read.skip = 0;
        }
        Self::new(inner, None, Some(watch), timeouts)
    }

    /// Refuse the head being read: earlier requests finish, then the client gets the answer and
    /// the connection closes.
    fn refuse_head(&mut self, r: Reject) {
        tracing::debug!(reason = r.reason(), "refused a request head");
        let Some(framer) = self.framer.as_ref() else { return };
        // What the log can tell of it: the head so far (or the chunked head held back), else the
        // bytes it was refused in.
        let head = match (&framer.held, framer.head.is_empty()) {
            (Some(h), _) => h.as_slice(),
            (None, false) => framer.head.as_slice(),
            (None, true) => &self.raw[..],
        };
        self.refused_head = head[..head.len().min(4096)].to_vec();
        // Logged from the head's first bytes, as Envoy times a request (a slow head's whole wait).
        let began = self.head_wait.filter(|_| framer.mid_head()).map(|(_, at)| at);
        self.refused_at = Some(began.unwrap_or_else(Instant::now));
        self.reject = Some(r);
        self.raw.clear();
    }

    /// After framing: note when a head began (its clock runs from its first bytes, never from an
    /// earlier request's), or that none is being read.
    fn watch_head(&mut self) {
        let Some(f) = self.framer.as_ref() else { return };
        self.head_wait = match self.head_wait {
            _ if !f.mid_head() => None,
            Some((n, at)) if n == f.heads => Some((n, at)),
            _ => Some((f.heads, self.last_progress)),
        };
    }

    fn signal_stop(&mut self) {
        if !self.stop_sent {
            self.stop_sent = true;
            self.stop.notify_one();
        }
    }

    fn progress(&mut self) {
        self.last_progress = crate::clock::now();
    }

    /// Poll the idle timers after an operation returned `Pending`: `Err` once the connection must
    /// be closed outright.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let owes = self.write_blocked || self.framer.as_ref().is_some_and(Framer::in_body);
        loop {
            let head_due = (self.head_wait)
                .filter(|_| self.reject.is_none() && self.framer.as_ref().is_some_and(Framer::mid_head))
                .map(|(_, began)| began + self.timeouts.header_read);
            let hard = owes.then(|| self.last_progress + self.timeouts.stream_idle);
            let soft = (!self.stop_sent).then(|| self.last_progress + self.timeouts.idle);
            let stalled = self.h2.as_ref().and_then(|h| h.flow.next_due(self.timeouts.stream_idle));
            let nap = (self.conn.as_ref()).filter(|_| self.may_park()).map(|c| self.last_progress + c.park_delay.get());
            let now = crate::clock::now();
            // A request in flight: the timer is armed for when the connection could park, as if
            // it were idle, so that its answer needs no wake-up and no pass of its own (most
            // answers come well before). Only once that time has come with the answer still
            // pending does the answer wake the connection, to park it then.
            let mut nap_pending = None;
            if nap.is_none() {
                if let Some(c) = self.conn.as_ref().filter(|c| !c.requests.settled()) {
                    let due = self.last_progress + c.park_delay.get();
                    if due > now {
                        nap_pending = Some(due);
                    } else {
                        c.requests.wake_when_settled(cx.waker());
                        if c.requests.settled() {
                            cx.waker().wake_by_ref();
                        }
                    }
                }
            }
            if hard.is_none()
                && soft.is_none()
                && stalled.is_none()
                && nap.is_none()
                && nap_pending.is_none()
                && head_due.is_none()
            {
                return Ok(());
            }
            if nap.is_some_and(|n| n <= now) {
                // The reader sees the end of input: hyper finishes and hands the stream back.
                self.parked = true;
                return Ok(());
            }
            if hard.is_some_and(|h| h <= now) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "stream idle timeout"));
            }
            if head_due.is_some_and(|d| d <= now) {
                // Answered like a malformed head (408): hyper polls again, finds the refusal
                // and shuts down, and the shutdown writes it.
                self.refuse_head(Reject::HeadTimeout);
                cx.waker().wake_by_ref();
                return Ok(());
            }
            if soft.is_some_and(|s| s <= now) {
                self.signal_stop();
                continue;
            }
            if let Some((_, id)) = stalled.filter(|(due, _)| *due <= now) {
                self.reset_stalled(id);
                // Poll again: the reset is handed to h2 by the next read.
                cx.waker().wake_by_ref();
                continue;
            }
            // One timer, moved lazily: armed at the nearer of the two periods after the last
            // progress and re-armed only once it fires (never per request: a reset takes the
            // timer wheel's lock), or when a stalled stream is due before it. Firing early just
            // means looking again.
            let lazy = self.last_progress + self.timeouts.stream_idle.min(self.timeouts.idle);
            // Once that period passed with nothing due (a quiet connection between the stream
            // idle and the idle timeout, or one whose stalled stream was just reset), arm at what
            // can be due next: re-arming at `now` fired at once, again and again, a busy loop
            // (under a paused clock, within this one poll: the reset test never finished).
            let next = if lazy > now { Some(lazy) } else { [hard, soft].into_iter().flatten().min() };
            // Everything here is after `now` (what was due was handled above).
            let Some(at) =
                next.into_iter().chain(stalled.map(|(due, _)| due)).chain(nap).chain(nap_pending).chain(head_due).min()
            else {
                return Ok(());
            };
            let mut moved = self.timer.is_none();
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            // Also re-armed when something is due before it: a stalled stream, the idle parking, or (once armed
            // past a quiet period) the stream idle timeout of a write that blocked since.
            let begun = self.conn.as_ref().map_or(0, |c| c.requests.begun());
            if timer.deadline() <= now {
                // It went off and nothing was due: the connection made progress since it was
                // armed. A new request since then is a busy client; the answer to one that was
                // in flight is not (the timer was armed for its parking, see `nap_pending`).
                if let Some(c) = self.conn.as_ref().filter(|_| begun != self.timer_begun) {
                    c.park_delay.double();
                }
                timer.as_mut().reset(at);
                moved = true;
            } else if at < timer.deadline() {
                timer.as_mut().reset(at);
                moved = true;
            }
            // Polled only when it went off or moved: this runs at every read that waits, several
            // times per request.
            if moved {
                self.timer_begun = begun;
                self.timer_woken.force();
            }
            if !self.timer_woken.due(cx) {
                return Ok(());
            }
            let waker = self.timer_woken.waker();
            if timer.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
                return Ok(());
            }
        }
    }

    /// Reset an HTTP/2 stream the client stalled past the stream idle timeout: for h2 as if the
    /// client reset it, and for the client with RST_STREAM(CANCEL).
    fn reset_stalled(&mut self, id: u32) {
        let Some(h2) = self.h2.as_mut() else { return };
        h2.flow.streams.remove(&id);
        tracing::debug!(stream = id, "resetting an HTTP/2 stream stalled past the stream idle timeout");
        let frame = rst_cancel(id);
        self.inject_in.extend_from_slice(&frame);
        self.inject_out.extend_from_slice(&frame);
        if !h2.read.at_boundary() {
            // The client also stopped mid-frame: no place to hand h2 the reset; end it all.
            self.killed = Some("stream idle timeout");
        }
    }

    /// Write the queued RST_STREAMs for the client if h2's output is between frames.
    fn poll_injected(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let at_boundary = self.h2.as_ref().is_none_or(|h| h.written.at_boundary());
        while !self.inject_out.is_empty() && at_boundary {
            match inner!(self, Poll::Ready(Err(gone()))).poll_write(cx, &self.inject_out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(gone())),
                Poll::Ready(Ok(n)) => {
                    self.inject_out.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn killed_error(why: &'static str) -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, why)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Guarded<S> {
    /// Write our GOAWAY if the outgoing stream is between frames; `Ready` when done (or given up).
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.poll_injected(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        let Some(h2) = &self.h2 else { return Poll::Ready(()) };
        if self.goaway_sent == 0 && !h2.written.at_boundary() {
            return Poll::Ready(());
        }
        let frame = h2.goaway();
        while self.goaway_sent < frame.len() {
            match inner!(self, Poll::Ready(())).poll_write(cx, &frame[self.goaway_sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.goaway_sent += n,
                Poll::Pending => return Poll::Pending,
                _ => return Poll::Ready(()),
            }
        }
        let _ = inner!(self, Poll::Ready(())).poll_flush(cx);
        Poll::Ready(())
    }

    fn kill(&mut self, cx: &mut Context<'_>, why: &'static str) -> Poll<io::Error> {
        if self.killed.is_none() {
            tracing::info!(reason = why, "closing an abusive HTTP/2 connection");
            self.killed = Some(why);
        }
        std::task::ready!(self.poll_goaway(cx));
        Poll::Ready(Self::killed_error(why))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(why) = this.killed {
            return this.kill(cx, why).map(Err);
        }
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.reject.is_some() {
                // hyper has every request before the refused one and asks for more: shut down
                // gracefully once they are answered (the shutdown writes the refusal).
                this.signal_stop();
                return Poll::Pending;
            }
            if let Some(framer) = this.framer.as_mut() {
                if !this.raw.is_empty() {
                    match framer.feed(&this.raw, &mut this.out) {
                        Ok(used) => {
                            this.raw.advance(used);
                            this.watch_head();
                            if this.out.is_empty() && !this.raw.is_empty() {
                                this.parked_reader = Some(cx.waker().clone());
                                return Poll::Pending;
                            }
                            continue;
                        }
                        Err(r) if framer.at_head() => {
                            this.refuse_head(r);
                            continue;
                        }
                        Err(r) => {
                            tracing::debug!(reason = r.reason(), "refused a request body");
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, r.reason())));
                        }
                    }
                }
                if matches!(framer.st, St::UpgradeWait) {
                    this.parked_reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                if let Some(budget) = this.raw.is_empty().then(|| framer.direct_budget()).flatten() {
                    let before = buf.filled().len();
                    match inner!(this, Poll::Ready(Err(gone()))).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) => {
                            let k = buf.filled().len() - before;
                            if k == 0 {
                                this.eof_seen = true;
                            } else {
                                this.progress();
                                // Bytes past the body's end are the next message: taken back
                                // and framed like any others.
                                let body = usize::try_from(budget).unwrap_or(usize::MAX).min(k);
                                if body < k {
                                    this.raw.extend_from_slice(&buf.filled()[before + body..]);
                                    buf.set_filled(before + body);
                                }
                                if let Some(f) = this.framer.as_mut() {
                                    f.advance_direct(body);
                                }
                            }
                            return Poll::Ready(Ok(()));
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if let Err(e) = this.poll_timers(cx) {
                                return Poll::Ready(Err(e));
                            }
                            return Poll::Pending;
                        }
                    }
                }
                // Read into hyper's buffer (no scratch buffer to zero), then take the bytes back
                // to be framed.
                let before = buf.filled().len();
                match inner!(this, Poll::Ready(Err(gone()))).poll_read(cx, buf) {
                    Poll::Ready(Ok(())) if buf.filled().len() == before => {
                        this.eof_seen = true;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(())) => {
                        this.progress();
                        if this.framer.as_mut().is_some_and(|f| f.pass_whole_head(&buf.filled()[before..])) {
                            return Poll::Ready(Ok(()));
                        }
                        this.raw.extend_from_slice(&buf.filled()[before..]);
                        buf.set_filled(before);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if let Err(e) = this.poll_timers(cx) {
                            return Poll::Ready(Err(e));
                        }
                        if this.parked {
                            // An end of input for hyper (it lets go); the socket stays open.
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Pending;
                    }
                }
            } else {
                if !this.inject_out.is_empty() {
                    // Pending here just means later: h2's next write flushes it first.
                    if let Poll::Ready(Err(e)) = this.poll_injected(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                if !this.inject_in.is_empty() && this.h2.as_ref().is_some_and(|h| h.read.at_boundary()) {
                    let n = this.inject_in.len().min(buf.remaining());
                    buf.put_slice(&this.inject_in[..n]);
                    this.inject_in.drain(..n);
                    return Poll::Ready(Ok(()));
                }
                let before = buf.filled().len();
                let (held, more) = this.h2.as_deref().map_or((false, false), |h| (!h.ahead.is_empty(), h.read_ahead));
                if held {
                    this.hand_ahead(buf);
                } else if more && buf.remaining() < READ_AHEAD {
                    match this.poll_read_ahead(cx) {
                        Poll::Ready(Ok(true)) => this.hand_ahead(buf),
                        Poll::Ready(Ok(false)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if let Err(e) = this.poll_timers(cx) {
                                return Poll::Ready(Err(e));
                            }
                            return Poll::Pending;
                        }
                    }
                } else {
                    match inner!(this, Poll::Ready(Err(gone()))).poll_read(cx, buf) {
                        Poll::Ready(Ok(())) if buf.filled().len() == before => this.eof_seen = true,
                        Poll::Ready(Ok(())) => {
                            this.progress();
                            if let Some(h) = this.h2.as_deref_mut() {
                                // A full read of a large space, not a few bytes topping up h2's
                                // buffer: small requests never pay for reading ahead.
                                h.read_ahead = buf.remaining() == 0 && buf.filled().len() - before >= READ_AHEAD_AFTER;
                                if !h.read_ahead {
                                    h.ahead = BytesMut::new();
                                }
                            }
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if let Err(e) = this.poll_timers(cx) {
                                return Poll::Ready(Err(e));
                            }
                            return Poll::Pending;
                        }
                    }
                }
                // The flood checks see the bytes as h2 is handed them.
                if buf.filled().len() > before {
                    let now = this.last_progress;
                    let verdict = this.h2.as_mut().and_then(|h| h.on_read(&buf.filled()[before..], now));
                    if let Some(why) = verdict {
                        buf.set_filled(before);
                        return this.kill(cx, why).map(Err);
                    }
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Guarded<S> {
    /// HTTP/2: read up to [`READ_AHEAD`] ahead of h2. `Ok(false)` at the client's end of input.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(h) = self.h2.as_deref_mut() else { return Poll::Ready(Ok(false)) };
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(Err(gone())) };
        h.ahead.reserve(READ_AHEAD);
        let space = h.ahead.capacity() - h.ahead.len();
        let k = match std::pin::pin!(tokio::io::AsyncReadExt::read_buf(inner, &mut h.ahead)).poll(cx) {
            Poll::Ready(read) => read?,
            Poll::Pending => {
                // The socket is dry: the memory goes back until the client sends again.
                h.ahead = BytesMut::new();
                return Poll::Pending;
            }
        };
        h.read_ahead = k == space;
        if k == 0 {
            h.ahead = BytesMut::new();
            self.eof_seen = true;
            return Poll::Ready(Ok(false));
        }
        self.progress();
        Poll::Ready(Ok(true))
    }

    /// HTTP/2: hand h2 what was read ahead, as much as `buf` takes.
    fn hand_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let Some(h) = self.h2.as_deref_mut() else { return };
        let n = h.ahead.len().min(buf.remaining());
        buf.put_slice(&h.ahead[..n]);
        h.ahead.advance(n);
        if h.ahead.is_empty() && !h.read_ahead {
            // The burst is over: the memory goes back.
            h.ahead = BytesMut::new();
        }
    }

    fn before_write(&mut self, first: &[u8]) {
        if let Some(f) = self.framer.as_mut() {
            if matches!(f.st, St::UpgradeWait) {
                f.response_started(first);
                if let Some(w) = self.parked_reader.take() {
                    w.wake();
                }
            }
        }
    }

    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<io::Result<usize>>,
        bufs: &[&[u8]],
    ) -> Poll<io::Result<usize>> {
        match res {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.write_blocked = false;
                    self.progress();
                    let now = self.last_progress;
                    if let Some(h2) = self.h2.as_mut() {
                        let mut left = n;
                        for b in bufs {
                            let k = left.min(b.len());
                            h2.on_written(&b[..k], now);
                            left -= k;
                            if left == 0 {
                                break;
                            }
                        }
                    }
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.write_blocked = true;
                match self.poll_timers(cx) {
                    Ok(()) => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Guarded<S> {
    /// HTTP/2: the first write of a round waits one turn of the runtime, until it has polled for
    /// I/O. The responses of the connection's other streams whose upstream answered meanwhile
    /// are then framed and go out in the same write: fewer writes, and fewer wake-ups of a
    /// client that sleeps between them (each costs an inter-processor interrupt).
    ///
    /// A write of [`GATHER_ENOUGH`] or more goes at once: it is a frame of a large body (the h2
    /// crate writes each DATA frame it chains on its own, then flushes), and waiting gathers
    /// nothing for it while a turn per frame added up (64 per MiB).
    fn coalesce(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        match self.h2.as_deref_mut() {
            Some(h2) if !h2.write_waited && len < GATHER_ENOUGH => {
                h2.write_waited = true;
                let mut turn = std::pin::pin!(tokio::task::yield_now());
                let _ = turn.as_mut().poll(cx);
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(why) = this.killed {
            return this.kill(cx, why).map(Err);
        }
        std::task::ready!(this.coalesce(cx, buf.len()));
        std::task::ready!(this.poll_injected(cx))?;
        this.before_write(buf);
        let res = inner!(this, Poll::Ready(Err(gone()))).poll_write(cx, buf);
        this.after_write(cx, res, &[buf])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(why) = this.killed {
            return this.kill(cx, why).map(Err);
        }
        std::task::ready!(this.coalesce(cx, bufs.iter().map(|b| b.len()).sum()));
        std::task::ready!(this.poll_injected(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.before_write(first);
        }
        let res = inner!(this, Poll::Ready(Err(gone()))).poll_write_vectored(cx, bufs);
        let slices: Vec<&[u8]> = if this.h2.is_some() { bufs.iter().map(|b| &b[..]).collect() } else { Vec::new() };
        this.after_write(cx, res, &slices)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_injected(cx))?;
        std::task::ready!(inner!(self, Poll::Ready(Err(gone()))).poll_flush(cx))?;
        if let Some(h2) = self.h2.as_deref_mut() {
            h2.write_waited = false;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.parked {
            // hyper closing a parked connection: it stays open for the next request.
            return Poll::Ready(Ok(()));
        }
        if let Some(r) = this.reject {
            let reply = r.response();
            while this.reply_sent < reply.len() {
                match std::task::ready!(inner!(this, Poll::Ready(Err(gone()))).poll_write(cx, &reply[this.reply_sent..]))
                {
                    Ok(n) if n > 0 => this.reply_sent += n,
                    _ => break,
                }
            }
            std::task::ready!(inner!(this, Poll::Ready(Err(gone()))).poll_flush(cx))?;
            let answered = this.reply_sent == reply.len();
            this.log_refusal(answered);
        }
        let shut = std::task::ready!(inner!(this, Poll::Ready(Err(gone()))).poll_shutdown(cx));
        this.shut_down = shut.is_ok();
        Poll::Ready(shut)
    }
}

/// When we close first, the client may still be sending (a refused request's body, the rest of a
/// flood): closing a socket with unread input makes the kernel send RST and drop what we wrote
/// last (the 400, the GOAWAY). So close our side, then read and discard for a moment (nginx's
/// lingering close, Envoy's delayed close) before the socket goes.
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.log_refusal(false);
        if self.eof_seen {
            return;
        }
        let (Some(inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current()) else { return };
        rt.spawn(linger(inner, self.shut_down));
    }
}

async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, shut_down: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LINGER: Duration = Duration::from_secs(2);
    const MAX_DRAINED: usize = 4 << 20;
    let _ = tokio::time::timeout(LINGER, async {
        if !shut_down {
            let _ = s.shutdown().await;
        }
        let mut buf = [0u8; 8192];
        let mut drained = 0;
        while drained < MAX_DRAINED {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_connection_parks_later_and_an_idle_one_stays_quick() {
        let d = ParkDelay::default();
        assert_eq!(d.get(), PARK_AFTER);
        // Parked, then quiet for far longer than its delay: idle, the delay stays.
        d.woke_after(Duration::from_millis(200));
        assert_eq!(d.get(), PARK_AFTER);
        // Back 30 ms after its last request each time: doubled at each wake (5 → 10 → 20 →
        // 40 ms), and then a 30 ms pause no longer parks it at all.
        for _ in 0..10 {
            if d.get() <= Duration::from_millis(30) {
                d.woke_after(Duration::from_millis(30) - d.get());
            }
        }
        assert_eq!(d.get(), Duration::from_millis(40));
        // Found busy at every look: the looks thin out to one a second, no fewer.
        for _ in 0..20 {
            d.double();
        }
        assert_eq!(d.get(), PARK_AFTER_MAX);
    }

    fn limits() -> H1Limits {
        H1Limits { max_uri: 64, max_head: 512, max_headers: 8 }
    }

    fn run(input: &[u8]) -> (Result<usize, Reject>, Vec<u8>) {
        let mut f = Framer::new(limits());
        let mut out = BytesMut::new();
        let r = f.feed(input, &mut out);
        (r, out.to_vec())
    }

    fn refused(input: &[u8]) -> Reject {
        match run(input).0 {
            Err(r) => r,
            Ok(_) => panic!("accepted: {:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn passes_well_formed_messages_byte_by_byte() {
        let msgs = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nt: v\r\n\r\n";
        let mut f = Framer::new(limits());
        let mut out = BytesMut::new();
        for b in msgs.iter() {
            assert_eq!(f.feed(&[*b], &mut out), Ok(1));
        }
        assert_eq!(&out[..], &msgs[..]);
        assert!(f.at_head());
    }

    const SMUGGLING_SHAPES: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        b"GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a@b/ HTTP/1.1\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1111111111111111\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n",
    ];

    #[test]
    fn refuses_smuggling_shapes() {
        for bad in SMUGGLING_SHAPES {
            assert!(matches!(refused(bad), Reject::BadRequest(_)), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Feed `input` in pieces of `piece` bytes: what was passed on, or the refusal.
    fn feed_in_pieces(input: &[u8], piece: usize) -> Result<Vec<u8>, Reject> {
        let mut f = Framer::new(limits());
        let mut out = BytesMut::new();
        for chunk in input.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                match f.feed(rest, &mut out)? {
                    0 => return Ok(out.to_vec()),
                    n => rest = &rest[n..],
                }
            }
        }
        Ok(out.to_vec())
    }

    #[test]
    fn verdicts_do_not_depend_on_how_the_bytes_arrive() {
        let mut long_uri = b"GET /".to_vec();
        long_uri.extend(std::iter::repeat_n(b'a', 200));
        let mut long_header = b"GET / HTTP/1.1\r\nx: ".to_vec();
        long_header.extend(std::iter::repeat_n(b'a', 600));
        let mut cases: Vec<&[u8]> = SMUGGLING_SHAPES.to_vec();
        cases.extend([
            &long_uri[..],
            &long_header[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n",
            b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
        ]);
        for case in cases {
            let whole = feed_in_pieces(case, case.len());
            for piece in [1, 2, 7, 16] {
                assert_eq!(feed_in_pieces(case, piece), whole, "{piece}: {:?}", String::from_utf8_lossy(case));
            }
        }
    }

    /// The in-place check against `feed` on the same bytes: a head it takes is one `feed` hands
    /// on unchanged, leaving the framer in the same state; one it declines leaves the framer as
    /// it was.
    #[test]
    fn the_in_place_head_check_agrees_with_feed() {
        let head_of = |line_len: usize, head_len: usize| {
            // A long method (any token): the target stays within its own limit.
            let mut h = std::iter::repeat_n(b'M', line_len - 11).collect::<Vec<u8>>();
            h.extend_from_slice(b" / HTTP/1.1\r\nx: ");
            h.extend(std::iter::repeat_n(b'b', head_len - h.len() - 4));
            h.extend_from_slice(b"\r\n\r\n");
            assert_eq!(h.len(), head_len);
            h
        };
        let mut cases: Vec<Vec<u8>> = SMUGGLING_SHAPES.iter().map(|c| c.to_vec()).collect();
        // Around the request line's bound (URI limit + 32) and the head's (512).
        for line_len in [95, 96, 97] {
            cases.push(head_of(line_len, 200));
        }
        for head_len in [511, 512, 513] {
            cases.push(head_of(20, head_len));
        }
        cases.extend(
            [
                &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
                b"GET / HTTP/1.1\r\n\r\n",
                b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r",
                b"GET / HTTP/1.1\r\nHost: a\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: a\n\r\n\r\n",
            ]
            .map(<[u8]>::to_vec),
        );
        let mut taken = 0;
        for case in &cases {
            let shown = String::from_utf8_lossy(case);
            let mut fast = Framer::new(limits());
            let mut slow = Framer::new(limits());
            let mut out = BytesMut::new();
            let fed = slow.feed(case, &mut out);
            if fast.pass_whole_head(case) {
                taken += 1;
                assert_eq!(fed, Ok(case.len()), "{shown}");
                assert_eq!(&out[..], &case[..], "{shown}");
                assert_eq!(format!("{:?}", fast.st), format!("{:?}", slow.st), "{shown}");
                assert_eq!(fast.upgrade_next, slow.upgrade_next, "{shown}");
                assert!(fast.head.is_empty() && fast.held.is_none() && fast.line_end.is_none(), "{shown}");
            } else {
                assert!(fast.between_messages() && fast.line_end.is_none(), "{shown}");
            }
        }
        // The plain GETs, the bodies that fit or wait, the upgrades and the in-limit sizes.
        assert_eq!(taken, 11);
    }

    #[test]
    fn accepts_matching_absolute_form_and_default_ports() {
        assert!(run(b"GET http://a:80/x HTTP/1.1\r\nHost: A\r\n\r\n").0.is_ok());
        assert!(run(b"GET https://a/x HTTP/1.1\r\nHost: a:443\r\n\r\n").0.is_ok());
    }

    #[test]
    fn limits_give_414_and_431() {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 200));
        assert_eq!(refused(&long), Reject::UriTooLong);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..9 {
            many.extend_from_slice(format!("x{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(refused(&many), Reject::HeadersTooLarge);
        let mut big = b"GET / HTTP/1.1\r\nx: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 600));
        assert_eq!(refused(&big), Reject::HeadersTooLarge);
    }

    #[test]
    fn waits_for_the_upgrade_answer() {
        let mut f = Framer::new(limits());
        let mut out = BytesMut::new();
        let req = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut all = req.to_vec();
        all.extend_from_slice(b"\x81\x05hello");
        assert_eq!(f.feed(&all, &mut out), Ok(req.len()));
        f.response_started(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(f.feed(&all[req.len()..], &mut out), Ok(7));
        assert_eq!(&out[..], &all[..]);
    }

    /// What the client's side of an HTTP/2 connection has received so far.
    async fn received(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut got = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut got)).await.unwrap().unwrap();
        got.truncate(n);
        got
    }

    /// An HTTP/2 connection's guard over an in-memory stream, and the client's end of it.
    fn h2_guarded(room: usize) -> (tokio::io::DuplexStream, Guarded<tokio::io::DuplexStream>) {
        let timeouts = Timeouts {
            idle: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
            header_read: Duration::from_secs(60),
        };
        let (client, server) = tokio::io::duplex(room);
        (client, Guarded::http2(server, H2Limits::default(), timeouts, false).0)
    }

    #[tokio::test]
    async fn h2_small_writes_wait_a_turn_and_large_ones_go_at_once() {
        let (mut client, mut g) = h2_guarded(256 * 1024);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // A SETTINGS frame: small, the first write of a round waits one turn.
        let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
        assert!(Pin::new(&mut g).poll_write(&mut cx, &settings).is_pending());
        assert!(matches!(Pin::new(&mut g).poll_write(&mut cx, &settings), Poll::Ready(Ok(9))));
        assert!(Pin::new(&mut g).poll_flush(&mut cx).is_ready());
        assert_eq!(received(&mut client).await, settings);
        // A 16 KiB DATA frame (stream 1): a frame of a large body, written at once although a
        // new round began with the flush.
        let mut data = vec![0u8, 0x40, 0, 0, 0, 0, 0, 0, 1];
        data.resize(9 + 16 * 1024, b'x');
        let head = io::IoSlice::new(&data[..9]);
        let payload = io::IoSlice::new(&data[9..]);
        let written = Pin::new(&mut g).poll_write_vectored(&mut cx, &[head, payload]);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == data.len()), "{written:?}");
        assert!(Pin::new(&mut g).poll_flush(&mut cx).is_ready());
        let mut got = Vec::new();
        while got.len() < data.len() {
            got.extend(received(&mut client).await);
        }
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn h2_reads_ahead_of_a_fast_sender_and_gives_the_memory_back_when_dry() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut g) = h2_guarded(512 * 1024);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut pull = |g: &mut Guarded<tokio::io::DuplexStream>, room: usize| {
            let mut space = vec![0u8; room];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(g).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) => Some(buf.filled().to_vec()),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => None,
            }
        };
        // A small frame reads straight into h2's buffer: nothing is read ahead.
        let ping = [0u8, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        client.write_all(&ping).await.unwrap();
        assert_eq!(pull(&mut g, 8192).as_deref(), Some(&ping[..]));
        assert_eq!(g.h2.as_ref().unwrap().ahead.capacity(), 0);
        // Seven 16 KiB DATA frames at once, taken by h2 8 KiB at a time.
        let mut sent = Vec::new();
        for i in 0..7u8 {
            sent.extend_from_slice(&[0, 0x40, 0, 0, 0, 0, 0, 0, 1]);
            sent.extend(std::iter::repeat_n(b'a' + i, 16 * 1024));
        }
        client.write_all(&sent).await.unwrap();
        let (mut got, mut most_ahead) = (Vec::new(), 0);
        while let Some(bytes) = pull(&mut g, 8192) {
            assert!(!bytes.is_empty() && bytes.len() <= 8192);
            got.extend(bytes);
            most_ahead = most_ahead.max(g.h2.as_ref().unwrap().ahead.len());
        }
        assert!(got == sent, "the bytes came out changed");
        assert!(most_ahead > 8192, "nothing was read ahead of h2 ({most_ahead} bytes at most)");
        // The socket is dry: the read-ahead memory went back.
        assert_eq!(g.h2.as_ref().unwrap().ahead.capacity(), 0);
    }

    #[test]
    fn h2_floods_are_judged() {
        let frame = |kind: u8, flags: u8, stream: u32, len: usize| {
            let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            f.extend_from_slice(&stream.to_be_bytes());
            f.extend(std::iter::repeat_n(0u8, len));
            f
        };
        let mut w = H2Watch::new(H2Limits::default());
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, 0));
        assert_eq!(w.on_read(&bytes, Instant::now()), None);
        let mut verdict = None;
        for i in 0..600u32 {
            let mut b = frame(0x1, 0x5, 2 * i + 1, 3);
            b.extend(frame(0x3, 0, 2 * i + 1, 4));
            verdict = verdict.or(w.on_read(&b, Instant::now()));
        }
        assert_eq!(verdict, Some("rapid reset"));

        let mut w = H2Watch::new(H2Limits::default());
        w.read.skip = 0;
        let mut b = frame(0x1, 0x0, 1, 1);
        for _ in 0..40 {
            b.extend(frame(0x9, 0, 1, 1));
        }
        assert_eq!(w.on_read(&b, Instant::now()), Some("CONTINUATION flood"));

        let mut w = H2Watch::new(H2Limits::default());
        w.read.skip = 0;
        let pings: Vec<u8> = (0..1001).flat_map(|_| frame(0x6, 0, 0, 8)).collect();
        assert_eq!(w.on_read(&pings, Instant::now()), Some("control frame flood"));
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;

    #[test]
    fn direct_reads_keep_the_framing() {
        let mut f = Framer::new(H1Limits { max_uri: 64, max_head: 512, max_headers: 8 });
        let mut out = BytesMut::new();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(f.feed(head, &mut out), Ok(head.len()));
        assert_eq!(f.direct_budget(), Some(7));
        f.advance_direct(7);
        assert!(f.at_head());
        assert!(f.feed(b"GET / HTTP/1.1\nHost: a\n\n", &mut out).is_err());
    }

    #[test]
    fn a_chunked_head_waits_for_its_first_chunk_line() {
        let mut f = Framer::new(H1Limits { max_uri: 64, max_head: 512, max_headers: 8 });
        let mut out = BytesMut::new();
        let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(f.feed(head, &mut out), Ok(head.len()));
        assert!(out.is_empty() && f.at_head());
        assert_eq!(f.feed(b"5\r", &mut out), Ok(2));
        assert!(out.is_empty());
        assert_eq!(f.feed(b"\nab", &mut out), Ok(3));
        assert_eq!(out.len(), head.len() + 5);
        assert!(!f.at_head());
        // A bad first chunk line is a head-level refusal.
        let mut f = Framer::new(H1Limits { max_uri: 64, max_head: 512, max_headers: 8 });
        let mut out = BytesMut::new();
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"zz\r\n");
        assert!(f.feed(&bad, &mut out).is_err());
        assert!(out.is_empty() && f.at_head());
    }
}
