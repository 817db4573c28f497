//! Distributed tracing as Istio's gateway does it: W3C `traceparent`/`tracestate` and B3 (multi-
//! and single-header) propagation, a server span per request and a client span per upstream try,
//! sampled by percentage (an incoming sampling decision is respected), exported with OTLP
//! HTTP/protobuf (`POST /v1/traces`) in batches.
//!
//! The request path only decides, formats headers and hands finished spans to a bounded queue
//! (`try_send`: a full queue drops the span and counts it). The exporter runs as a background task
//! on a runtime the caller chooses (the binary's control runtime, off the data-plane threads), so a
//! collector that is down or slow never slows traffic: its requests time out, its spans are
//! counted as dropped.
//!
//! Why not the `opentelemetry` SDK: its tracer wants a global provider, a span object per request
//! with its own locks and attribute vectors, and a batch processor on its own thread; what a proxy
//! needs is three ids, two timestamps and an encoder. The wire types come from
//! `opentelemetry-proto` (prost), the transport is the hyper client already in the tree.

use crate::metrics::Counter;
use crate::record::{header_text, RequestRecord};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// How tracing is set up (`--otlp-endpoint`, `--trace-sampling`).
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`. A URL
    /// without a path gets `/v1/traces`. Plain `http` only.
    pub endpoint: http::Uri,
    /// Percentage of requests without an incoming decision that are sampled (Istio's default: 1).
    pub sampling_percent: f64,
    /// `service.name` of the exported resource: the workload (`istio-ingressgateway.istio-system`).
    pub service_name: String,
    /// Spans queued for export before new ones are dropped.
    pub queue_capacity: usize,
    /// Spans per export request at most.
    pub batch_size: usize,
    /// At most this long between looks at the span queue (a partial batch goes out then).
    pub flush_interval: Duration,
    /// Each export request gives up after this long (its spans are counted as dropped).
    pub export_timeout: Duration,
}

impl TraceConfig {
    pub fn new(endpoint: http::Uri, service_name: impl Into<String>) -> TraceConfig {
        TraceConfig {
            endpoint,
            sampling_percent: 1.0,
            service_name: service_name.into(),
            queue_capacity: 4096,
            batch_size: 512,
            flush_interval: Duration::from_millis(500),
            export_timeout: Duration::from_secs(5),
        }
    }
}

/// Which header format the trace context arrived in: the same format is written upstream, next
/// to `traceparent` (Envoy's OpenTelemetry tracer writes W3C; B3 users keep their B3 headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    W3c,
    B3Multi,
    B3Single,
}

/// The trace of one sampled request: kept with the request, finished when it ends.
#[derive(Clone, Debug)]
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The gateway's server span.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a context.
    pub parent_id: Option<[u8; 8]>,
    pub tracestate: Option<HeaderValue>,
    pub propagation: Propagation,
    /// One client span per upstream try, in order.
    pub tries: Vec<UpstreamTry>,
}

/// One upstream try: a client span, child of the server span.
#[derive(Clone, Debug)]
pub struct UpstreamTry {
    pub span_id: [u8; 8],
    pub start: SystemTime,
    /// `None`: the try lasted until the request ended (the last one, streaming the response).
    pub end: Option<SystemTime>,
    pub upstream: Option<SocketAddr>,
    /// Status the try got (0: none, it failed before a response).
    pub status: u16,
}

/// The request-path handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Arc<TracerInner>,
}

#[derive(Debug)]
struct TracerInner {
    /// Sampled when a random `u32` is below this (`u32::MAX` + 1 would be 100 %: see `sample`).
    threshold: u64,
    tx: mpsc::Sender<Span>,
    dropped: Counter,
}

impl Tracer {
    /// The tracer and the exporter future; spawn the future on a runtime that is not the data
    /// plane's. `exported`/`dropped` are the `portico_tracing_spans_total` counters.
    pub fn new(
        config: TraceConfig,
        exported: Counter,
        dropped: Counter,
    ) -> (Tracer, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let pct = if config.sampling_percent.is_finite() { config.sampling_percent.clamp(0.0, 100.0) } else { 0.0 };
        let threshold = (pct / 100.0 * 4_294_967_296.0) as u64;
        let tracer = Tracer { inner: Arc::new(TracerInner { threshold, tx, dropped: dropped.clone() }) };
        (tracer, export_loop(config, rx, exported, dropped))
    }

    fn sample(&self) -> bool {
        u64::from(rand::random::<u32>()) < self.inner.threshold
    }

    /// Start the server span of a request, if it is sampled: the incoming context's decision
    /// when it carries one (`traceparent` flags, `x-b3-sampled`, `b3`), else the percentage.
    /// `None` (not sampled): nothing is recorded; a request that carried a context passes it
    /// upstream as it came, one without gets `traceparent` with the sampled flag off (as Envoy's
    /// OpenTelemetry tracer sends it), so the services behind do not sample it on their own.
    pub fn start(&self, headers: &mut HeaderMap) -> Option<RequestTrace> {
        let incoming = extract(headers);
        let sampled = match &incoming {
            Some(c) => c.sampled.unwrap_or_else(|| self.sample()),
            None => self.sample(),
        };
        if !sampled {
            if incoming.is_none() {
                insert_unsampled(headers);
            }
            return None;
        }
        let (trace_id, parent_id, propagation) = match incoming {
            // A bare sampling decision (`b3: 1`, `x-b3-sampled: 1`) starts a new trace.
            Some(c) if c.trace_id == [0; 16] => (random_nonzero_16(), None, c.propagation),
            Some(c) => (c.trace_id, c.span_id, c.propagation),
            None => (random_nonzero_16(), None, Propagation::W3c),
        };
        Some(RequestTrace {
            trace_id,
            span_id: random_nonzero_8(),
            parent_id,
            tracestate: headers.get(TRACESTATE).cloned(),
            propagation,
            tries: Vec::with_capacity(1),
        })
    }

    /// A new upstream try of a sampled request: opens its client span and writes the context
    /// upstream (`traceparent`, plus B3 in the format the request came with). Call once per try.
    pub fn start_try(&self, trace: &mut RequestTrace, headers: &mut HeaderMap, upstream: Option<SocketAddr>) {
        let span_id = random_nonzero_8();
        trace.tries.push(UpstreamTry { span_id, start: SystemTime::now(), end: None, upstream, status: 0 });
        inject(trace, span_id, headers);
    }

    /// End the current try (a retry follows, or it failed): `status` 0 when there was no response.
    pub fn end_try(trace: &mut RequestTrace, status: u16) {
        if let Some(t) = trace.tries.last_mut() {
            t.end = Some(SystemTime::now());
            t.status = status;
        }
    }

    /// The request is over: queue the spans of its trace for export (dropped and counted when
    /// the queue is full). Nothing to do for a request that was not sampled (no `trace`).
    pub fn finish(&self, r: &RequestRecord) {
        let Some(trace) = r.trace.as_deref() else { return };
        let stop = r.start_time + r.duration;
        let authority = header_text(r.authority.as_ref()).unwrap_or("");
        let path = r.path();
        let method = r.method.as_str();
        let server_name = format!("{authority}{}", path_only(path));
        let mut attrs = vec![
            kv("http.method", method),
            kv("http.url", &format!("http://{authority}{path}")),
            kv("http.protocol", r.protocol_name()),
            kv("http.status_code", &r.status.to_string()),
            kv("response_flags", &r.flags.to_string()),
            kv("component", "proxy"),
            kv("upstream_cluster", r.upstream_cluster.as_deref().unwrap_or("-")),
            kv("request_size", &r.bytes_received.to_string()),
            kv("response_size", &r.bytes_sent.to_string()),
        ];
        if let Some(id) = header_text(r.request_id.as_ref()) {
            attrs.push(kv("guid:x-request-id", id));
        }
        if let Some(ua) = header_text(r.user_agent.as_ref()) {
            attrs.push(kv("user_agent", ua));
        }
        attrs.push(kv("peer.address", &r.downstream_remote.ip().to_string()));
        if let Some(g) = r.grpc_status {
            attrs.push(kv("grpc.status_code", &g.to_string()));
        }
        let error = r.status >= 500 || r.status == 0;
        let tracestate = trace.tracestate.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.queue(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: trace.span_id.to_vec(),
            trace_state: tracestate.clone(),
            parent_span_id: trace.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x100 | u32::from(trace.parent_id.is_some()) << 9,
            name: server_name,
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: nanos(r.start_time),
            end_time_unix_nano: nanos(stop),
            attributes: attrs,
            status: error.then(|| Status { message: String::new(), code: status::StatusCode::Error as i32 }),
            ..Default::default()
        });
        let cluster = r.upstream_cluster.as_deref().unwrap_or("-");
        for t in &trace.tries {
            let mut attrs = vec![
                kv("upstream_cluster", cluster),
                kv("http.method", method),
                kv("component", "proxy"),
                kv("http.status_code", &t.status.to_string()),
            ];
            if let Some(u) = t.upstream {
                attrs.push(kv("upstream_address", &u.to_string()));
            }
            let status_code = if t.end.is_none() { r.status } else { t.status };
            self.queue(Span {
                trace_id: trace.trace_id.to_vec(),
                span_id: t.span_id.to_vec(),
                trace_state: tracestate.clone(),
                parent_span_id: trace.span_id.to_vec(),
                flags: 0x100,
                // Envoy's name for the upstream span.
                name: format!("router {cluster} egress"),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: nanos(t.start),
                end_time_unix_nano: nanos(t.end.unwrap_or(stop)),
                attributes: {
                    if t.end.is_none() {
                        attrs[3] = kv("http.status_code", &status_code.to_string());
                    }
                    attrs
                },
                status: (status_code >= 500 || status_code == 0)
                    .then(|| Status { message: String::new(), code: status::StatusCode::Error as i32 }),
                ..Default::default()
            });
        }
    }

    fn queue(&self, span: Span) {
        if self.inner.tx.try_send(span).is_err() {
            self.inner.dropped.inc();
        }
    }
}

/// A new trace context with the sampled flag off.
fn insert_unsampled(headers: &mut HeaderMap) {
    let mut tp = Vec::with_capacity(55);
    tp.extend_from_slice(b"00-");
    push_hex(&mut tp, &random_nonzero_16());
    tp.push(b'-');
    push_hex(&mut tp, &random_nonzero_8());
    tp.extend_from_slice(b"-00");
    if let Some(v) = header(tp) {
        headers.insert(TRACEPARENT, v);
    }
}

fn path_only(p: &str) -> &str {
    p.split_once('?').map_or(p, |(a, _)| a)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

fn random_nonzero_8() -> [u8; 8] {
    loop {
        let v: u64 = rand::random();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

fn random_nonzero_16() -> [u8; 16] {
    loop {
        let v: u128 = rand::random();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

/// A context read from the request headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Incoming {
    pub trace_id: [u8; 16],
    pub span_id: Option<[u8; 8]>,
    /// `None`: the caller left the decision to us.
    pub sampled: Option<bool>,
    pub propagation: Propagation,
}

/// `traceparent` first (W3C), then `b3`, then `x-b3-*`. Malformed headers are ignored, as if
/// absent (a new trace starts), which is what the W3C spec asks.
pub(crate) fn extract(h: &HeaderMap) -> Option<Incoming> {
    if let Some(v) = h.get(TRACEPARENT) {
        if let Some(c) = parse_traceparent(v.as_bytes()) {
            return Some(c);
        }
    }
    if let Some(v) = h.get(B3) {
        if let Some(c) = parse_b3_single(v.as_bytes()) {
            return Some(c);
        }
    }
    let sampled = match h.get(B3_FLAGS).map(HeaderValue::as_bytes) {
        Some(b"1") => Some(true), // debug
        _ => match h.get(B3_SAMPLED).map(HeaderValue::as_bytes) {
            Some(b"1") | Some(b"true") | Some(b"d") => Some(true),
            Some(b"0") | Some(b"false") => Some(false),
            _ => None,
        },
    };
    match h.get(B3_TRACE_ID).and_then(|v| hex_trace_id(v.as_bytes())) {
        Some(trace_id) => Some(Incoming {
            trace_id,
            span_id: h.get(B3_SPAN_ID).and_then(|v| hex8(v.as_bytes())),
            sampled,
            propagation: Propagation::B3Multi,
        }),
        // `x-b3-sampled` alone is a valid decision without a context.
        None if sampled.is_some() => {
            Some(Incoming { trace_id: [0; 16], span_id: None, sampled, propagation: Propagation::B3Multi })
        }
        None => None,
    }
}

fn parse_traceparent(v: &[u8]) -> Option<Incoming> {
    // version "-" trace-id "-" parent-id "-" flags; future versions may append fields.
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let version = hex_n::<1>(&v[0..2])?;
    if version[0] == 0xff || (version[0] == 0 && v.len() != 55) {
        return None;
    }
    let trace_id = hex_n::<16>(&v[3..35]).filter(|t| *t != [0; 16])?;
    let span_id = hex8(&v[36..52])?;
    let flags = hex_n::<1>(&v[53..55])?[0];
    Some(Incoming { trace_id, span_id: Some(span_id), sampled: Some(flags & 1 == 1), propagation: Propagation::W3c })
}

/// `b3: {TraceId}-{SpanId}[-{Sampled}[-{ParentSpanId}]]`, or just `b3: {Sampled}`.
fn parse_b3_single(v: &[u8]) -> Option<Incoming> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let first = parts.next()?;
    let sampled_of = |p: &str| match p {
        "1" | "d" => Some(Some(true)),
        "0" => Some(Some(false)),
        _ => None,
    };
    if first.len() <= 1 {
        let sampled = sampled_of(first)?;
        return Some(Incoming { trace_id: [0; 16], span_id: None, sampled, propagation: Propagation::B3Single });
    }
    let trace_id = hex_trace_id(first.as_bytes())?;
    let span_id = hex8(parts.next()?.as_bytes())?;
    let sampled = match parts.next() {
        Some(p) => sampled_of(p)?,
        None => None,
    };
    Some(Incoming { trace_id, span_id: Some(span_id), sampled, propagation: Propagation::B3Single })
}

/// B3 trace ids are 64 or 128 bits; a 64-bit id is left-padded with zeros.
fn hex_trace_id(v: &[u8]) -> Option<[u8; 16]> {
    match v.len() {
        32 => hex_n::<16>(v),
        16 => {
            let low = hex8(v)?;
            let mut out = [0; 16];
            out[8..].copy_from_slice(&low);
            Some(out)
        }
        _ => None,
    }
    .filter(|t| *t != [0; 16])
}

fn hex8(v: &[u8]) -> Option<[u8; 8]> {
    hex_n::<8>(v).filter(|s| *s != [0; 8])
}

fn hex_n<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        // W3C requires lowercase; B3 implementations accept either.
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
}

fn header(bytes: Vec<u8>) -> Option<HeaderValue> {
    HeaderValue::from_bytes(&bytes).ok()
}

/// Write the context of `span_id` (a client span) upstream.
fn inject(trace: &RequestTrace, span_id: [u8; 8], h: &mut HeaderMap) {
    let mut tp = Vec::with_capacity(55);
    tp.extend_from_slice(b"00-");
    push_hex(&mut tp, &trace.trace_id);
    tp.push(b'-');
    push_hex(&mut tp, &span_id);
    tp.extend_from_slice(b"-01");
    if let Some(v) = header(tp) {
        h.insert(TRACEPARENT, v);
    }
    match trace.propagation {
        Propagation::W3c => {}
        Propagation::B3Multi => {
            let mut t = Vec::with_capacity(32);
            push_hex(&mut t, &trace.trace_id);
            let mut s = Vec::with_capacity(16);
            push_hex(&mut s, &span_id);
            let mut p = Vec::with_capacity(16);
            push_hex(&mut p, &trace.span_id);
            if let (Some(t), Some(s), Some(p)) = (header(t), header(s), header(p)) {
                h.insert(B3_TRACE_ID, t);
                h.insert(B3_SPAN_ID, s);
                h.insert(B3_PARENT, p);
                h.insert(B3_SAMPLED, HeaderValue::from_static("1"));
            }
        }
        Propagation::B3Single => {
            let mut b = Vec::with_capacity(70);
            push_hex(&mut b, &trace.trace_id);
            b.push(b'-');
            push_hex(&mut b, &span_id);
            b.extend_from_slice(b"-1-");
            push_hex(&mut b, &trace.span_id);
            if let Some(v) = header(b) {
                h.insert(B3, v);
            }
        }
    }
}

/// Batch spans from the queue and POST them; never retries (a collector that is down loses the
/// spans of that moment, counted, rather than holding memory).
/// Export requests in flight at most.
const EXPORTS_IN_FLIGHT: usize = 4;

/// How often the exporter looks at an empty span queue.
const EXPORT_POLL: Duration = Duration::from_millis(20);

async fn export_loop(config: TraceConfig, mut rx: mpsc::Receiver<Span>, exported: Counter, dropped: Counter) {
    let endpoint = if config.endpoint.path() == "/" {
        let mut parts = config.endpoint.clone().into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        http::Uri::from_parts(parts).unwrap_or(config.endpoint.clone())
    } else {
        config.endpoint.clone()
    };
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resource = Resource { attributes: vec![kv("service.name", &config.service_name)], ..Default::default() };
    let scope = InstrumentationScope {
        name: "portico".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let batch_size = config.batch_size.max(1);
    // The queue is polled rather than awaited: a task parked in `recv` would be woken by every
    // span the data plane queues (a cross-thread wake-up per request), which costs more than
    // the span itself. An empty queue is looked at again after `poll`.
    let poll = config.flush_interval.min(EXPORT_POLL);
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(EXPORTS_IN_FLIGHT));
    let mut closed = false;
    loop {
        let mut spans = Vec::new();
        while spans.len() < batch_size {
            match rx.try_recv() {
                Ok(s) => spans.push(s),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if spans.is_empty() {
            if closed {
                // Let the exports in flight finish.
                let _ = in_flight.acquire_many(EXPORTS_IN_FLIGHT as u32).await;
                return;
            }
            tokio::time::sleep(poll).await;
            continue;
        }
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans { scope: Some(scope.clone()), spans, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        let req = http::Request::post(endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else {
            dropped.add(n);
            continue;
        };
        // A few exports in flight at once, so the queue keeps draining while one waits on the
        // collector; past that, wait (the queue, bounded, drops what does not fit).
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let (client, exported, dropped, limit) =
            (client.clone(), exported.clone(), dropped.clone(), config.export_timeout);
        tokio::spawn(async move {
            match tokio::time::timeout(limit, client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => exported.add(n),
                Ok(Ok(resp)) => {
                    tracing_warn(&format!("OTLP export rejected: {}", resp.status()));
                    dropped.add(n);
                }
                Ok(Err(e)) => {
                    tracing_warn(&format!("OTLP export failed: {e}"));
                    dropped.add(n);
                }
                Err(_) => {
                    tracing_warn("OTLP export timed out");
                    dropped.add(n);
                }
            }
            drop(permit);
        });
    }
}

/// The telemetry crate does not depend on `tracing`; export failures go to stderr at most once a
/// minute so a collector that is down does not flood the log.
fn tracing_warn(msg: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = nanos(SystemTime::now()) / 1_000_000_000;
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        eprintln!("portico: {msg} (spans dropped; repeated failures are not logged for a minute)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn traceparent_parsed_and_sampling_flag_respected() {
        let h = headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
        let c = extract(&h).unwrap();
        assert_eq!(c.trace_id[..2], [0x4b, 0xf9]);
        assert_eq!(c.span_id, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        assert_eq!(c.sampled, Some(true));
        let h = headers(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
        assert_eq!(extract(&h).unwrap().sampled, Some(false));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let h = headers(&[("traceparent", bad)]);
            assert_eq!(extract(&h), None, "{bad}");
        }
    }

    #[test]
    fn b3_single_and_multi() {
        let h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]);
        let c = extract(&h).unwrap();
        assert_eq!((c.propagation, c.sampled), (Propagation::B3Single, Some(true)));
        let h = headers(&[("b3", "0")]);
        assert_eq!(extract(&h).unwrap().sampled, Some(false));
        let h = headers(&[("b3", "1")]);
        assert_eq!(extract(&h).unwrap().sampled, Some(true));
        let h = headers(&[("x-b3-traceid", "463ac35c9f6413ad"), ("x-b3-spanid", "a2fb4a1d1a96d312")]);
        let c = extract(&h).unwrap();
        assert_eq!((c.propagation, c.sampled), (Propagation::B3Multi, None));
        assert_eq!(c.trace_id[..8], [0; 8]);
    }

    #[test]
    fn unsampled_requests_without_context_carry_the_decision() {
        let (tracer, _export) = Tracer::new(
            TraceConfig { sampling_percent: 0.0, ..TraceConfig::new(http::Uri::from_static("http://x"), "gw") },
            Counter::new(),
            Counter::new(),
        );
        let mut h = HeaderMap::new();
        assert!(tracer.start(&mut h).is_none());
        let tp = h.get("traceparent").unwrap().to_str().unwrap().to_string();
        assert_eq!(tp.len(), 55);
        assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
        assert_eq!(extract(&h).unwrap().sampled, Some(false));
        // A caller's own context is left alone.
        let mut h = headers(&[("x-b3-traceid", "463ac35c9f6413ad463ac35c9f6413ad"), ("x-b3-sampled", "0")]);
        assert!(tracer.start(&mut h).is_none());
        assert!(h.get("traceparent").is_none());
    }

    #[test]
    fn inject_writes_client_span_as_parent() {
        let (tracer, _export) = Tracer::new(
            TraceConfig { sampling_percent: 0.0, ..TraceConfig::new(http::Uri::from_static("http://x"), "gw") },
            Counter::new(),
            Counter::new(),
        );
        let mut h = headers(&[("x-b3-traceid", "463ac35c9f6413ad463ac35c9f6413ad"), ("x-b3-sampled", "1")]);
        let mut t = tracer.start(&mut h).unwrap();
        tracer.start_try(&mut t, &mut h, None);
        let client = t.tries[0].span_id;
        let mut expect = b"00-463ac35c9f6413ad463ac35c9f6413ad-".to_vec();
        push_hex(&mut expect, &client);
        expect.extend_from_slice(b"-01");
        assert_eq!(h.get("traceparent").unwrap().as_bytes(), &expect[..]);
        let mut parent = Vec::new();
        push_hex(&mut parent, &t.span_id);
        assert_eq!(h.get("x-b3-parentspanid").unwrap().as_bytes(), &parent[..]);
        // 0 %: a request with no context is not sampled; a bare decision starts a new trace.
        assert!(tracer.start(&mut HeaderMap::new()).is_none());
        let t = tracer.start(&mut headers(&[("x-b3-sampled", "1")])).unwrap();
        assert!(t.trace_id != [0; 16] && t.parent_id.is_none());
    }
}
