//! Body types: what we send to clients (`ProxyBody`) and to upstreams (`UpstreamBody`). Both
//! stream frames through unchanged (data and trailers), counting bytes on the way.

use crate::downstream::Answered;
use crate::log::RequestGuard;
use crate::ResponseFlags;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Inner {
    Full(Option<Bytes>),
    Upstream(Received),
}

/// An upstream response body: from hyper (HTTP/2, upgrades) or read straight off an HTTP/1.1
/// connection (`upstream::h1`).
pub(crate) enum Received {
    Hyper(Incoming),
    H1(crate::upstream::h1::ResponseBody),
}

impl Body for Received {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Received::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
            Received::H1(b) => Pin::new(b).poll_frame(cx).map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Received::Hyper(b) => b.is_end_stream(),
            Received::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Received::Hyper(b) => b.size_hint(),
            Received::H1(b) => b.size_hint(),
        }
    }
}

/// A response body sent to a client: a local reply or an upstream response streamed through.
/// It carries the request's log context, emitted when the body is done or dropped.
pub struct ProxyBody {
    inner: Inner,
    log: Option<Box<RequestGuard>>,
    /// The route timeout, which (as Envoy's) covers the response body too: when it fires
    /// mid-body the stream is reset (`UT`).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the request answered on its HTTP/1 connection when hyper drops this body.
    answered: Option<Answered>,
}

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes, log: Option<Box<RequestGuard>>) -> ProxyBody {
        let inner = Inner::Full(if bytes.is_empty() { None } else { Some(bytes) });
        let mut b = ProxyBody { inner, log, deadline: None, answered: None };
        b.check_end();
        b
    }

    pub(crate) fn upstream(
        body: Received,
        log: Box<RequestGuard>,
        deadline: Option<tokio::time::Instant>,
    ) -> ProxyBody {
        let deadline = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut b = ProxyBody { inner: Inner::Upstream(body), log: Some(log), deadline, answered: None };
        b.check_end();
        b
    }

    /// Count the request answered on its connection once hyper is done with this body.
    pub(crate) fn set_answered(&mut self, answered: Answered) {
        self.answered = Some(answered);
    }

    fn check_end(&mut self) {
        if self.is_end_stream() {
            self.finish();
        }
    }

    /// The body ended cleanly (every failure path drops the log without this).
    fn finish(&mut self) {
        if let Some(log) = &mut self.log {
            log.finished = true;
        }
        // Emit now rather than whenever hyper drops the body.
        self.log = None;
        self.deadline = None;
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(d) = &mut this.deadline {
            if d.as_mut().poll(cx).is_ready() {
                this.deadline = None;
                if let Some(log) = &mut this.log {
                    log.flag(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                    log.record.details = "upstream_response_timeout";
                    log.finished = true;
                }
                this.log = None;
                // Dropping the upstream body resets that stream/connection too.
                this.inner = Inner::Full(None);
                return Poll::Ready(Some(Err("upstream response timeout".into())));
            }
        }
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(inc) => match Pin::new(inc).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    if let Some(log) = &mut this.log {
                        // A body the upstream framed wrongly (HTTP/1.1) is Envoy's protocol
                        // error; anything else, the connection ending under it.
                        let protocol =
                            e.downcast_ref::<crate::upstream::h1::H1Error>().is_some_and(|e| e.is_protocol());
                        if protocol {
                            log.flag(ResponseFlags::UPSTREAM_PROTOCOL_ERROR);
                            log.record.details = "upstream_reset_after_response_started{protocol_error}";
                        } else {
                            log.flag(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                            log.record.details = "upstream_reset_after_response_started{connection_termination}";
                        }
                        log.finished = true;
                    }
                    this.log = None;
                    return Poll::Ready(Some(Err(e)));
                }
                other => other,
            },
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(log) = &mut this.log {
                    if let Some(data) = frame.data_ref() {
                        log.record.bytes_sent += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        if let Some(status) = grpc_status(trailers) {
                            log.record.grpc_status = Some(status);
                        }
                    }
                }
                if this.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(inc) => inc.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(inc) => inc.size_hint(),
        }
    }
}

/// `grpc-status` of a header block.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    std::str::from_utf8(headers.get(&crate::headers::GRPC_STATUS)?.as_bytes()).ok()?.trim().parse().ok()
}

/// Request bodies up to this size are kept for replay (retries) and mirroring; beyond it the body
/// streams through unkept and the request is not retried or mirrored with its body.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// `content-type: application/grpc` or `application/grpc+…` (gRPC-Web is not gRPC here, as in
/// Istio's stats filter).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && (v.len() == 16 || v[16] == b'+' || v[16] == b';')
    })
}

/// A client's request body on its way upstream, counting bytes for the access log.
///
/// When the request may be retried or mirrored it also keeps a copy of what it forwarded (up to
/// [`REPLAY_LIMIT`]); when hyper drops it (the exchange ended, or failed part-way), it hands the
/// copy and the unread rest of the client's body back through a oneshot channel, so a retry
/// replays the copy and then continues with the rest. No lock: the body is owned by one exchange
/// at a time and ownership moves through the channel.
pub struct UpstreamBody {
    /// Frames of an earlier attempt, sent again first.
    replay: VecDeque<Bytes>,
    replay_trailers: Option<Box<http::HeaderMap>>,
    /// The rest of the client's body (None once it ended).
    inner: Option<Incoming>,
    received: Arc<AtomicU64>,
    /// Boxed: the body travels inside every request's futures, and most requests keep no copy.
    capture: Option<Box<Capture>>,
}

/// The copy kept for replay.
#[derive(Default)]
pub(crate) struct Capture {
    frames: Vec<Bytes>,
    len: usize,
    trailers: Option<http::HeaderMap>,
    /// More than [`REPLAY_LIMIT`] went by: the copy is gone for good.
    overflow: bool,
    /// Where the state goes when this attempt's body is dropped.
    leftover: Option<oneshot::Sender<Option<Leftover>>>,
    /// Told once the whole body (≤ limit) has been read: the mirror's copy.
    complete: Option<oneshot::Sender<(Bytes, Option<http::HeaderMap>)>>,
}

/// What an attempt's body leaves behind for the next attempt.
pub(crate) struct Leftover {
    capture: Box<Capture>,
    inner: Option<Incoming>,
}

impl Leftover {
    /// The body can be sent again in full.
    pub(crate) fn replayable(&self) -> bool {
        !self.capture.overflow
    }
}

impl UpstreamBody {
    /// A streamed body that keeps nothing.
    pub(crate) fn new(inner: Incoming, received: Arc<AtomicU64>) -> UpstreamBody {
        // A body that has already ended is let go now: asking an HTTP/2 body whether it has
        // ended takes the connection's stream lock, and an exchange asks several times.
        let inner = Some(inner).filter(|i| !i.is_end_stream());
        UpstreamBody { replay: VecDeque::new(), replay_trailers: None, inner, received, capture: None }
    }

    /// A body known in full (a mirror's copy).
    pub(crate) fn from_bytes(bytes: Bytes, trailers: Option<http::HeaderMap>) -> UpstreamBody {
        UpstreamBody {
            replay: if bytes.is_empty() { VecDeque::new() } else { VecDeque::from([bytes]) },
            replay_trailers: trailers.map(Box::new),
            inner: None,
            received: Arc::new(AtomicU64::new(0)),
            capture: None,
        }
    }

    /// A body that keeps its copy for a retry (`leftover`) and/or a mirror (`complete`).
    pub(crate) fn capturing(
        inner: Incoming,
        received: Arc<AtomicU64>,
        leftover: Option<oneshot::Sender<Option<Leftover>>>,
        complete: Option<oneshot::Sender<(Bytes, Option<http::HeaderMap>)>>,
    ) -> UpstreamBody {
        let mut b = UpstreamBody::new(inner, received);
        b.capture = Some(Box::new(Capture { leftover, complete, ..Capture::default() }));
        b.check_complete();
        b
    }

    /// The next attempt's body: the kept copy first, then the rest of the client's body.
    pub(crate) fn resume(
        left: Leftover,
        received: Arc<AtomicU64>,
        leftover: Option<oneshot::Sender<Option<Leftover>>>,
    ) -> UpstreamBody {
        let Leftover { mut capture, inner } = left;
        capture.leftover = leftover;
        let mut b = UpstreamBody {
            replay: capture.frames.iter().cloned().collect(),
            replay_trailers: capture.trailers.clone().map(Box::new),
            inner: inner.filter(|i| !i.is_end_stream()),
            received,
            capture: Some(capture),
        };
        b.check_complete();
        b
    }

    fn inner_done(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    /// The client's body has been read to its end: hand the mirror its copy.
    fn check_complete(&mut self) {
        if !self.inner_done() {
            return;
        }
        if let Some(c) = &mut self.capture {
            if let Some(tx) = c.complete.take() {
                if !c.overflow {
                    let mut all = bytes::BytesMut::with_capacity(c.len);
                    for f in &c.frames {
                        all.extend_from_slice(f);
                    }
                    let _ = tx.send((all.freeze(), c.trailers.clone()));
                }
            }
        }
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        let Some(c) = &mut self.capture else { return };
        if c.overflow {
            return;
        }
        if let Some(data) = frame.data_ref() {
            if c.len + data.len() > REPLAY_LIMIT {
                c.overflow = true;
                c.frames = Vec::new();
                c.complete = None;
                // Tell the retry logic now: it need not wait for this body to be dropped.
                if let Some(tx) = c.leftover.take() {
                    let _ = tx.send(None);
                }
            } else {
                c.len += data.len();
                c.frames.push(data.clone());
            }
        } else if let Some(t) = frame.trailers_ref() {
            c.trailers = Some(t.clone());
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(mut capture) = self.capture.take() {
            if let Some(tx) = capture.leftover.take() {
                let _ = tx.send(Some(Leftover { capture, inner: self.inner.take() }));
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(b) = this.replay.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(this.replay_trailers.take().map(|t| Ok(Frame::trailers(*t))));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                this.keep(frame);
                this.check_complete();
            }
            Poll::Ready(None) => {
                this.inner = None;
                this.check_complete();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.replay_trailers.is_none() && self.inner_done()
    }

    fn size_hint(&self) -> SizeHint {
        let kept: u64 = self.replay.iter().map(|b| b.len() as u64).sum();
        let inner = match &self.inner {
            Some(i) => i.size_hint(),
            None => SizeHint::with_exact(0),
        };
        // Built fresh: SizeHint's setters panic when lower would pass upper mid-update.
        let mut hint = SizeHint::new();
        if let Some(u) = inner.upper() {
            hint.set_upper(u.saturating_add(kept));
        }
        hint.set_lower(inner.lower().saturating_add(kept).min(hint.upper().unwrap_or(u64::MAX)));
        hint
    }
}
