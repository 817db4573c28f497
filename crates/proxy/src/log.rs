//! The hook telemetry plugs into: one [`RequestRecord`] per finished request (and one
//! [`TcpRecord`] per closed TCP connection), handed to an [`AccessLogSink`]. The records are
//! telemetry's own types, filled here and read as they are by the access log, the metrics and
//! the tracer. The proxy builds no metrics or log lines itself.

use crate::upstream::ActiveRequest;
use crate::ResponseFlags;
pub use portico_telemetry::{RequestRecord, TcpRecord};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Receives a record when a request is finished (its response body ended, failed, or the client
/// went away). Called on the data-plane threads: implementations must be quick and must not block
/// (hand the record to a channel or bump atomics).
pub trait AccessLogSink: Send + Sync + 'static {
    fn log(&self, record: &RequestRecord);

    /// One record per proxied TCP connection (TCP servers, TLS passthrough, TLS-terminated TCP),
    /// when the connection is closed.
    fn log_tcp(&self, _record: &TcpRecord) {}

    /// Whether records must carry what only access-log lines and traces read: the URI,
    /// `user-agent`, `x-forwarded-for` and `x-request-id`. A sink that reads none of them spares
    /// every request their copies.
    fn wants_request_details(&self) -> bool {
        true
    }
}

/// The default sink: drops every record.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl AccessLogSink for NoopSink {
    fn log(&self, _record: &RequestRecord) {}

    fn wants_request_details(&self) -> bool {
        false
    }
}

/// The request's lifetime guard: created when the request's head arrives, moved into the
/// response body, dropped when the request is over (body ended, failed, or the client went
/// away). It holds the one [`RequestRecord`] being filled and what must live exactly as long as
/// the request (the least-request counter); on drop it completes the record (`DC` if the
/// response was not delivered, bytes received, duration) and reports it, exactly once.
pub(crate) struct RequestGuard {
    sink: Arc<dyn AccessLogSink>,
    started: tokio::time::Instant,
    pub(crate) record: RequestRecord,
    pub(crate) received: Option<Arc<AtomicU64>>,
    /// The response was fully delivered (or failed upstream): no `DC` on drop.
    pub(crate) finished: bool,
    pub(crate) active: Option<ActiveRequest>,
}

impl RequestGuard {
    pub(crate) fn new(
        sink: Arc<dyn AccessLogSink>,
        started: tokio::time::Instant,
        record: RequestRecord,
    ) -> Box<RequestGuard> {
        Box::new(RequestGuard { sink, started, record, received: None, finished: false, active: None })
    }

    pub(crate) fn flag(&mut self, f: ResponseFlags) {
        self.record.flags.insert(f);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // The least-request counter goes down as soon as the exchange is over.
        self.active = None;
        if !self.finished {
            self.record.flags.insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
        }
        if let Some(r) = &self.received {
            self.record.bytes_received = r.load(Ordering::Relaxed);
        }
        self.record.duration = crate::clock::now().saturating_duration_since(self.started);
        self.sink.log(&self.record);
    }
}
