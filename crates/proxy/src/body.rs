//! Body types: what we send to clients (`ProxyBody`) and to upstreams (`UpstreamBody`). Both
//! stream frames through unchanged (data and trailers), counting bytes on the way.

use crate::log::RequestLog;
use crate::ResponseFlags;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Inner {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

/// A response body sent to a client: a local reply or an upstream response streamed through.
/// It carries the request's log context, emitted when the body is done or dropped.
pub struct ProxyBody {
    inner: Inner,
    log: Option<Box<RequestLog>>,
}

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes, log: Option<Box<RequestLog>>) -> ProxyBody {
        let inner = Inner::Full(if bytes.is_empty() { None } else { Some(bytes) });
        let mut b = ProxyBody { inner, log };
        b.check_end();
        b
    }

    pub(crate) fn upstream(body: Incoming, log: Box<RequestLog>) -> ProxyBody {
        let mut b = ProxyBody { inner: Inner::Upstream(body), log: Some(log) };
        b.check_end();
        b
    }

    fn check_end(&mut self) {
        if self.is_end_stream() {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if let Some(log) = &mut self.log {
            log.finished = true;
        }
        // Emit now rather than whenever hyper drops the body.
        self.log = None;
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(inc) => match Pin::new(inc).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    if let Some(log) = &mut this.log {
                        log.flag(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                        log.record.details = "upstream_reset_after_response_started{connection_termination}";
                        log.finished = true;
                    }
                    this.log = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                other => other.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
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
    std::str::from_utf8(headers.get("grpc-status")?.as_bytes()).ok()?.trim().parse().ok()
}

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
pub struct UpstreamBody {
    inner: Incoming,
    received: Arc<AtomicU64>,
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, received: Arc<AtomicU64>) -> UpstreamBody {
        UpstreamBody { inner, received }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.received.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
