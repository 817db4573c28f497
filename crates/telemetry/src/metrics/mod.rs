//! Istio's standard metrics and Portico's own, rendered in the Prometheus text format (0.0.4).
//!
//! Why not `prometheus-client` (DESIGN.md §4) for the Istio series: its `Histogram::observe`
//! takes a lock per observation and `Family::get_or_create` a read lock plus a hash of the whole
//! label set — on every request, three histograms of 25 labels each; and it encodes only
//! OpenMetrics (`# TYPE istio_requests counter` … `# EOF`), not the 0.0.4 text Envoy serves.
//! Measured on the 2-core dev machine (release build, 2 M requests per thread, a throwaway
//! harness): this registry's `record_request` costs 43 ns per request on one thread and 41 ns per
//! request per thread on two; prometheus-client 0.24 with cached handles (one counter `inc`, three
//! `observe`, no lookup at all) costs 16 ns on one thread but 257 ns per thread on two (the
//! histograms' locks bounce between cores), and with `Family::get_or_create` on a 25-label set
//! built per request 3.2 µs / 4.4 µs. Here, recording a request is:
//!
//! * a key of a few integers (interned destination id, code, gRPC status, flags, protocol,
//!   security policy) looked up in a map read through an `ArcSwap` (no lock; a miss — a new
//!   series — copies the map under a mutex, which happens once per series);
//! * six relaxed atomic adds (bucket + sum of three histograms) on a cache-line-aligned shard of
//!   the series chosen by the calling thread, so worker threads do not bounce each other's lines.
//!
//! Label strings are built once: the gateway's `source_*` labels at startup, a destination's
//! labels when it is interned. Cardinality is bounded by construction: no path, no address, no
//! header value is ever a label.

mod gateway;
mod labels;

pub use gateway::{BreakerResource, ClusterStats, Counter, GatewayStats, Gauge, GaugeGuard, TlsFailureReason};
pub use labels::{DestinationLabels, SourceLabels};

use crate::record::{ConnectionSecurityPolicy, RequestProtocol, RequestRecord, TcpRecord};
use crate::ResponseFlags;
use arc_swap::ArcSwap;
use labels::{push_escaped, push_label};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Istio's histogram buckets: Envoy's default buckets (`HistogramSettingsImpl::defaultBuckets`),
/// which Istio uses for all three of its histograms (durations in ms, sizes in bytes) unless a
/// workload overrides them with the `sidecar.istio.io/statsHistogramBuckets` annotation.
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];
const NBUCKETS: usize = ISTIO_BUCKETS.len() + 1; // + the +Inf bucket

/// Bucket bounds for durations, in microseconds (a value lands in the first bucket whose bound is
/// ≥ it). Finer than Envoy, which truncates a duration to whole milliseconds before recording.
const DURATION_BOUNDS_US: [u64; 19] = {
    let mut b = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        b[i] = (ISTIO_BUCKETS[i] * 1000.0) as u64;
        i += 1;
    }
    b
};
/// Bucket bounds for sizes, doubled so that the 0.5 bound is an integer (compared with 2·bytes).
const BYTES_BOUNDS_X2: [u64; 19] = {
    let mut b = [0u64; 19];
    let mut i = 0;
    while i < 19 {
        b[i] = (ISTIO_BUCKETS[i] * 2.0) as u64;
        i += 1;
    }
    b
};

/// How the metrics are set up. `Default`: an unknown source (set at least the workload and
/// namespace in a real deployment), version tag of this crate.
#[derive(Clone, Debug, Default)]
pub struct MetricsConfig {
    /// The gateway's identity: the `source_*` labels.
    pub source: SourceLabels,
    /// The `tag` of `istio_build{component="proxy"}`; this crate's version when `None`.
    pub build_tag: Option<String>,
    /// Per-series shards (rounded up to a power of two); the number of CPUs (at most 16) when
    /// `None`. One shard per worker thread avoids cache-line contention on hot series.
    pub shards: Option<usize>,
}

/// An interned set of `destination_*` labels. Cheap to clone (one `Arc`); the data plane keeps
/// one per cluster and puts a reference in each record.
#[derive(Clone)]
pub struct Destination(Arc<DestInner>);

struct DestInner {
    owner: usize,
    id: u32,
    labels: DestinationLabels,
    /// The labels rendered once: `destination_workload="…",…,destination_cluster="…"`.
    rendered: Box<str>,
}

impl Destination {
    pub fn labels(&self) -> &DestinationLabels {
        &self.0.labels
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Destination").field(&self.0.id).field(&self.0.labels).finish()
    }
}

impl PartialEq for Destination {
    fn eq(&self, other: &Destination) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Destination {}

/// The metrics registry. Create one per process (through [`Telemetry`](crate::Telemetry)); every
/// method takes `&self` and is safe to call from any thread.
pub struct Metrics {
    id: usize,
    source: Box<str>,
    shards: usize,
    build_tag: Box<str>,
    unknown: Destination,
    destinations: Mutex<HashMap<DestinationLabels, Destination>>,
    http: ArcSwap<SeriesMap<HttpKey, HttpSeries>>,
    tcp: ArcSwap<SeriesMap<TcpKey, TcpSeries>>,
    /// Serializes the copy-on-write updates of `http` and `tcp`.
    write: Mutex<()>,
    gateway: GatewayStats,
    clusters: Mutex<BTreeMap<Box<str>, Arc<ClusterStats>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("http_series", &self.http.load().len())
            .field("tcp_series", &self.tcp.load().len())
            .finish_non_exhaustive()
    }
}

static NEXT_METRICS_ID: AtomicUsize = AtomicUsize::new(1);
static NEXT_THREAD_SLOT: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard slot: threads are numbered in the order they first record.
fn thread_slot() -> usize {
    thread_local! {
        static SLOT: usize = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

impl Metrics {
    pub fn new(config: MetricsConfig) -> Metrics {
        let id = NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed);
        let shards = config
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(16))
            .clamp(1, 64)
            .next_power_of_two();
        let unknown_labels = DestinationLabels::default();
        let unknown = Destination(Arc::new(DestInner {
            owner: id,
            id: 0,
            rendered: labels::destination_fragment(&unknown_labels).into(),
            labels: unknown_labels.clone(),
        }));
        let mut destinations = HashMap::new();
        destinations.insert(unknown_labels, unknown.clone());
        Metrics {
            id,
            source: labels::source_fragment(&config.source).into(),
            shards,
            build_tag: config.build_tag.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()).into(),
            unknown,
            destinations: Mutex::new(destinations),
            http: ArcSwap::from_pointee(SeriesMap::default()),
            tcp: ArcSwap::from_pointee(SeriesMap::default()),
            write: Mutex::new(()),
            gateway: GatewayStats::default(),
            clusters: Mutex::new(BTreeMap::new()),
        }
    }

    /// Intern a set of destination labels (control plane: call when a cluster is built, not per
    /// request). Equal labels give the same handle for the life of the registry, so a cluster that
    /// survives a reload keeps its series.
    pub fn destination(&self, labels: DestinationLabels) -> Destination {
        let mut map = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(&labels) {
            return d.clone();
        }
        // Ids are never reused: at most one id per distinct label set ever configured.
        let id = u32::try_from(map.len()).unwrap_or(u32::MAX);
        let d = Destination(Arc::new(DestInner {
            owner: self.id,
            id,
            rendered: labels::destination_fragment(&labels).into(),
            labels: labels.clone(),
        }));
        map.insert(labels, d.clone());
        d
    }

    /// The destination Istio reports when there is none (`404 NR`): every label `unknown`.
    pub fn unknown_destination(&self) -> &Destination {
        &self.unknown
    }

    /// The registry's own handle for `d` (a handle from another registry is re-interned here).
    fn own<'a>(&'a self, d: Option<&'a Destination>) -> std::borrow::Cow<'a, Destination> {
        match d {
            None => std::borrow::Cow::Borrowed(&self.unknown),
            Some(d) if d.0.owner == self.id => std::borrow::Cow::Borrowed(d),
            Some(d) => std::borrow::Cow::Owned(self.destination(d.labels().clone())),
        }
    }

    /// Record one finished HTTP request: `istio_requests_total` and the three histograms.
    /// `destination`: the `destination_*` labels, interned by [`Metrics::destination`] when the
    /// cluster was built; `None` is Istio's "no destination" (`unknown`), as for a `404 NR`.
    pub fn record_request(&self, r: &RequestRecord, destination: Option<&Destination>) {
        let dest = self.own(destination);
        let protocol = r.request_protocol();
        let key = HttpKey {
            dest: dest.0.id,
            code: r.status,
            grpc: match protocol {
                RequestProtocol::Grpc => grpc_label(r.grpc_status),
                RequestProtocol::Http => GRPC_NONE,
            },
            protocol,
            security: r.connection_security_policy,
            flags: r.flags,
        };
        let duration_us = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX);
        {
            let map = self.http.load();
            if let Some(series) = map.get(&key) {
                series.observe(duration_us, r.bytes_received, r.bytes_sent);
                return;
            }
        }
        self.http_series(key, &dest).observe(duration_us, r.bytes_received, r.bytes_sent);
    }

    fn http_series(&self, key: HttpKey, dest: &Destination) -> Arc<HttpSeries> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.http.load_full();
        if let Some(series) = current.get(&key) {
            return series.clone();
        }
        let series = Arc::new(HttpSeries { dest: dest.clone(), key, shards: new_shards(self.shards) });
        let mut next = SeriesMap::clone(&current);
        next.insert(key, series.clone());
        self.http.store(Arc::new(next));
        series
    }

    fn tcp_series(&self, key: TcpKey, dest: &Destination) -> Arc<TcpSeries> {
        if let Some(series) = self.tcp.load().get(&key) {
            return series.clone();
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.tcp.load_full();
        if let Some(series) = current.get(&key) {
            return series.clone();
        }
        let series = Arc::new(TcpSeries { dest: dest.clone(), key, shards: new_shards(self.shards) });
        let mut next = SeriesMap::clone(&current);
        next.insert(key, series.clone());
        self.tcp.store(Arc::new(next));
        series
    }

    /// A TCP connection is established to its upstream: counts `istio_tcp_connections_opened_total`
    /// now (flags `-`) and returns the meter that reports its bytes while it runs and is handed to
    /// [`Metrics::record_tcp`] at close. The series' labels are fixed here, as Istio fixes them at its
    /// first report. A connection that fails before this point is simply recorded at close,
    /// without a meter (opened and closed together, with its flags, e.g. `UF`).
    pub fn tcp_open(&self, destination: Option<&Destination>, security: ConnectionSecurityPolicy) -> TcpMeter {
        let dest = self.own(destination);
        let key = TcpKey { dest: dest.0.id, security, flags: ResponseFlags::NONE };
        let series = self.tcp_series(key, &dest);
        series.shard().opened.fetch_add(1, Ordering::Relaxed);
        TcpMeter {
            owner: self.id,
            series,
            reported_received: AtomicU64::new(0),
            reported_sent: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Record one closed TCP connection: bytes and `istio_tcp_connections_closed_total` (and
    /// `…_opened_total` unless a meter already counted it). `destination` as for
    /// [`Metrics::record_request`]. `meter`: the one from [`Metrics::tcp_open`], when the
    /// connection counted itself open (and maybe reported bytes) while it ran; closing then adds
    /// only the bytes not yet reported, on the meter's series. `None`: open, bytes and close are
    /// all counted now, with `destination` and the record's flags.
    pub fn record_tcp(&self, r: &TcpRecord, destination: Option<&Destination>, meter: Option<&TcpMeter>) {
        if let Some(meter) = meter.filter(|m| m.owner == self.id) {
            meter.report(r.bytes_received, r.bytes_sent);
            if !meter.closed.swap(true, Ordering::Relaxed) {
                meter.series.shard().closed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let dest = self.own(destination);
        let key = TcpKey { dest: dest.0.id, security: r.connection_security_policy, flags: r.flags };
        let series = self.tcp_series(key, &dest);
        let shard = series.shard();
        shard.opened.fetch_add(1, Ordering::Relaxed);
        shard.received.fetch_add(r.bytes_received, Ordering::Relaxed);
        shard.sent.fetch_add(r.bytes_sent, Ordering::Relaxed);
        shard.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Keep the Istio series of these destinations (and of the unknown destination); drop the
    /// rest. Call after a reload with the destinations of the clusters still configured. A request
    /// still in flight to a removed destination re-creates its series when it finishes; the next
    /// call drops it again.
    pub fn retain_destinations<'a>(&self, keep: impl IntoIterator<Item = &'a Destination>) {
        let mut ids: HashSet<u32> = keep.into_iter().filter(|d| d.0.owner == self.id).map(|d| d.0.id).collect();
        ids.insert(0);
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let http: SeriesMap<_, _> =
            self.http.load().iter().filter(|(k, _)| ids.contains(&k.dest)).map(|(k, v)| (*k, v.clone())).collect();
        self.http.store(Arc::new(http));
        let tcp: SeriesMap<_, _> =
            self.tcp.load().iter().filter(|(k, _)| ids.contains(&k.dest)).map(|(k, v)| (*k, v.clone())).collect();
        self.tcp.store(Arc::new(tcp));
    }

    /// Gateway-wide `portico_*` metrics.
    pub fn gateway(&self) -> &GatewayStats {
        &self.gateway
    }

    /// A new configuration snapshot went into service.
    pub fn config_reload_succeeded(&self, generation: u64, at: SystemTime) {
        self.gateway.config_reloads_ok.inc();
        self.gateway.config_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        let ms = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.gateway.config_last_success_ms.set(i64::try_from(ms).unwrap_or(i64::MAX));
    }

    /// A configuration change was rejected (the previous snapshot stays in service).
    pub fn config_reload_failed(&self) {
        self.gateway.config_reloads_failed.inc();
    }

    /// The `portico_upstream_*` handle of a cluster, created on first use. Control plane: call
    /// when the cluster is built and keep the handle.
    pub fn cluster(&self, name: &str) -> Arc<ClusterStats> {
        let mut map = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(name) {
            return c.clone();
        }
        let c = Arc::new(ClusterStats::new(name));
        map.insert(name.into(), c.clone());
        c
    }

    /// Drop the `portico_upstream_*` series of every cluster not in `keep`. Handles still held
    /// keep counting, unseen; [`cluster`](Self::cluster) makes a fresh one.
    pub fn remove_clusters(&self, keep: &[&str]) {
        let keep: HashSet<&str> = keep.iter().copied().collect();
        self.clusters.lock().unwrap_or_else(|e| e.into_inner()).retain(|name, _| keep.contains(&**name));
    }

    /// Number of Istio series (HTTP, TCP) currently exported.
    pub fn series_count(&self) -> (usize, usize) {
        (self.http.load().len(), self.tcp.load().len())
    }

    /// Everything, in the Prometheus text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_into(&mut out);
        out
    }

    pub fn render_into(&self, out: &mut String) {
        self.render_http(out);
        self.render_tcp(out);
        self.render_gateway(out);
    }

    fn render_http(&self, out: &mut String) {
        let map = self.http.load_full();
        if map.is_empty() {
            return;
        }
        let mut series: Vec<&Arc<HttpSeries>> = map.values().collect();
        series.sort_by(|a, b| a.dest.0.rendered.cmp(&b.dest.0.rendered).then(a.key.cmp(&b.key)));
        let rows: Vec<(String, HttpTotals)> = series.iter().map(|s| (self.http_labels(s), s.totals())).collect();

        out.push_str("# TYPE istio_requests_total counter\n");
        for (labels, t) in &rows {
            sample(out, "istio_requests_total", labels, None, Value::U(t.duration.count()));
        }
        type Pick = fn(&HttpTotals) -> &Hist;
        let hists: [(&str, Pick, Scale); 3] = [
            ("istio_request_duration_milliseconds", |t| &t.duration, Scale::Micros),
            ("istio_request_bytes", |t| &t.request_bytes, Scale::Unit),
            ("istio_response_bytes", |t| &t.response_bytes, Scale::Unit),
        ];
        for (name, get, scale) in hists {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(" histogram\n");
            for (labels, t) in &rows {
                histogram(out, name, labels, get(t), scale);
            }
        }
    }

    fn http_labels(&self, s: &HttpSeries) -> String {
        let mut l = String::with_capacity(768);
        l.push_str(&self.source);
        l.push(',');
        l.push_str(&s.dest.0.rendered);
        push_label(&mut l, "request_protocol", s.key.protocol.as_str());
        push_label(&mut l, "response_code", itoa::Buffer::new().format(s.key.code));
        match s.key.grpc {
            GRPC_NONE => push_label(&mut l, "grpc_response_status", ""),
            GRPC_INVALID => push_label(&mut l, "grpc_response_status", "-1"),
            n => push_label(&mut l, "grpc_response_status", itoa::Buffer::new().format(n)),
        }
        push_label(&mut l, "response_flags", &s.key.flags.to_string());
        push_label(&mut l, "connection_security_policy", s.key.security.as_str());
        l
    }

    fn render_tcp(&self, out: &mut String) {
        let map = self.tcp.load_full();
        if map.is_empty() {
            return;
        }
        let mut series: Vec<&Arc<TcpSeries>> = map.values().collect();
        series.sort_by(|a, b| a.dest.0.rendered.cmp(&b.dest.0.rendered).then(a.key.cmp(&b.key)));
        let rows: Vec<(String, [u64; 4])> = series
            .iter()
            .map(|s| {
                let mut l = String::with_capacity(768);
                l.push_str(&self.source);
                l.push(',');
                l.push_str(&s.dest.0.rendered);
                push_label(&mut l, "request_protocol", "tcp");
                push_label(&mut l, "response_flags", &s.key.flags.to_string());
                push_label(&mut l, "connection_security_policy", s.key.security.as_str());
                (l, s.totals())
            })
            .collect();
        let names = [
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        ];
        for (i, name) in names.iter().enumerate() {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(" counter\n");
            for (labels, totals) in &rows {
                sample(out, name, labels, None, Value::U(totals[i]));
            }
        }
    }

    fn render_gateway(&self, out: &mut String) {
        let g = &self.gateway;
        family(out, "istio_build", "gauge", "Istio component build (Portico's version as the proxy tag).");
        let mut l = String::new();
        push_label(&mut l, "component", "proxy");
        push_label(&mut l, "tag", &self.build_tag);
        sample(out, "istio_build", &l, None, Value::U(1));

        family(out, "portico_config_reloads_total", "counter", "Configuration reloads by result.");
        sample(out, "portico_config_reloads_total", "result=\"ok\"", None, Value::U(g.config_reloads_ok.get()));
        sample(out, "portico_config_reloads_total", "result=\"failed\"", None, Value::U(g.config_reloads_failed.get()));
        gauge(
            out,
            "portico_config_generation",
            "Generation of the configuration snapshot in service.",
            g.config_generation.get(),
        );
        family(
            out,
            "portico_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration in service was loaded (0: never).",
        );
        let ms = g.config_last_success_ms.get();
        sample(out, "portico_config_last_reload_success_timestamp_seconds", "", None, Value::F(ms as f64 / 1000.0));
        gauge(out, "portico_listeners", "Listening sockets open.", g.listeners.get());
        gauge(
            out,
            "portico_downstream_connections_active",
            "Downstream connections open.",
            g.downstream_connections_active.get(),
        );
        family(out, "portico_downstream_connections_total", "counter", "Downstream connections accepted.");
        sample(out, "portico_downstream_connections_total", "", None, Value::U(g.downstream_connections_total.get()));
        family(
            out,
            "portico_downstream_connections_overflow_total",
            "counter",
            "Downstream connections closed at accept because the connection limit was reached.",
        );
        sample(
            out,
            "portico_downstream_connections_overflow_total",
            "",
            None,
            Value::U(g.downstream_connections_overflow.get()),
        );
        family(
            out,
            "portico_tls_handshake_failures_total",
            "counter",
            "Downstream TLS handshakes that failed, by reason.",
        );
        for reason in TlsFailureReason::ALL {
            let mut l = String::new();
            push_label(&mut l, "reason", reason.as_str());
            sample(out, "portico_tls_handshake_failures_total", &l, None, Value::U(g.tls_handshake_failures(reason)));
        }
        family(
            out,
            "portico_tls_handshakes_total",
            "counter",
            "Downstream TLS handshakes completed, full or resumed (a session ticket).",
        );
        for (session, c) in [("full", &g.tls_handshakes_full), ("resumed", &g.tls_handshakes_resumed)] {
            let mut l = String::new();
            push_label(&mut l, "session", session);
            sample(out, "portico_tls_handshakes_total", &l, None, Value::U(c.get()));
        }
        family(
            out,
            "portico_access_log_dropped_total",
            "counter",
            "Access log lines dropped (buffer full or write error).",
        );
        sample(out, "portico_access_log_dropped_total", "", None, Value::U(g.access_log_dropped.get()));
        family(out, "portico_tracing_spans_total", "counter", "Trace spans by export result.");
        sample(out, "portico_tracing_spans_total", "result=\"exported\"", None, Value::U(g.spans_exported.get()));
        sample(out, "portico_tracing_spans_total", "result=\"dropped\"", None, Value::U(g.spans_dropped.get()));

        let clusters: Vec<Arc<ClusterStats>> =
            self.clusters.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        if clusters.is_empty() {
            return;
        }
        let labels: Vec<String> = clusters
            .iter()
            .map(|c| {
                let mut l = String::new();
                push_label(&mut l, "cluster_name", &c.name);
                l
            })
            .collect();
        type Get = fn(&ClusterStats) -> Value;
        let families: [(&str, &str, &str, Get); 5] = [
            ("portico_upstream_connections_active", "gauge", "Upstream connections open (busy or idle).", |c| {
                Value::I(c.connections_active.get())
            }),
            ("portico_upstream_connections_idle", "gauge", "Upstream connections open and idle in the pool.", |c| {
                Value::I(c.connections_idle.get())
            }),
            ("portico_upstream_connections_total", "counter", "Upstream connections opened.", |c| {
                Value::U(c.connections_total.get())
            }),
            ("portico_upstream_requests_active", "gauge", "Requests in flight to the cluster.", |c| {
                Value::I(c.requests_active.get())
            }),
            (
                "portico_upstream_outlier_ejections_active",
                "gauge",
                "Endpoints ejected by outlier detection now.",
                |c| Value::I(c.outlier_ejections_active.get()),
            ),
        ];
        let counters: [(&str, &str, Get); 3] = [
            ("portico_upstream_outlier_ejections_total", "Outlier ejections made.", |c| {
                Value::U(c.outlier_ejections_total.get())
            }),
            ("portico_upstream_retries_total", "Retries attempted (upstream_rq_retry).", |c| Value::U(c.retries.get())),
            (
                "portico_upstream_retry_successes_total",
                "Requests that succeeded after a retry (upstream_rq_retry_success).",
                |c| Value::U(c.retry_successes.get()),
            ),
        ];
        let families = families.into_iter().chain(counters.map(|(n, h, g)| (n, "counter", h, g)));
        for (name, kind, help, get) in families {
            family(out, name, kind, help);
            for (c, l) in clusters.iter().zip(&labels) {
                sample(out, name, l, None, get(c));
            }
        }
        let name = "portico_upstream_circuit_breaker_overflows_total";
        family(
            out,
            name,
            "counter",
            "Refused by a connection-pool limit (UO), by resource: connections (upstream_cx_overflow), \
             pending (upstream_rq_pending_overflow), requests, retries (upstream_rq_retry_overflow).",
        );
        for (c, l) in clusters.iter().zip(&labels) {
            for r in BreakerResource::ALL {
                let mut l = l.clone();
                push_label(&mut l, "resource", r.as_str());
                sample(out, name, &l, None, Value::U(c.overflows(r)));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Series

const GRPC_NONE: u8 = u8::MAX;
const GRPC_INVALID: u8 = u8::MAX - 1;

/// Envoy reports a status above the last well-known one (16) as `InvalidCode` (-1).
fn grpc_label(status: Option<u32>) -> u8 {
    match status {
        None => GRPC_NONE,
        Some(s) if s <= 16 => s as u8,
        Some(_) => GRPC_INVALID,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct HttpKey {
    dest: u32,
    code: u16,
    grpc: u8,
    protocol: RequestProtocol,
    security: ConnectionSecurityPolicy,
    flags: ResponseFlags,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct TcpKey {
    dest: u32,
    security: ConnectionSecurityPolicy,
    flags: ResponseFlags,
}

/// FxHash (rustc's): the keys are a few small integers, no need for SipHash's DoS resistance
/// (nothing in them is chosen by a client beyond a bounded status code).
type SeriesMap<K, V> = HashMap<K, Arc<V>, rustc_hash::FxBuildHasher>;

fn new_shards<S: Default>(n: usize) -> Box<[S]> {
    (0..n).map(|_| S::default()).collect()
}

/// The per-thread slice of a sharded series (`shards.len()` is a power of two).
fn pick<S>(shards: &[S]) -> &S {
    &shards[thread_slot() & (shards.len() - 1)]
}

#[derive(Default)]
struct HistShard {
    buckets: [AtomicU64; NBUCKETS],
    sum: AtomicU64,
}

impl HistShard {
    #[inline]
    fn observe(&self, scaled: u64, bounds: &[u64; 19], raw: u64) {
        let i = bounds.partition_point(|&b| b < scaled);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(raw, Ordering::Relaxed);
    }

    fn add_to(&self, h: &mut Hist) {
        for (t, b) in h.buckets.iter_mut().zip(&self.buckets) {
            *t = t.wrapping_add(b.load(Ordering::Relaxed));
        }
        h.sum = h.sum.wrapping_add(self.sum.load(Ordering::Relaxed));
    }
}

/// One shard of an HTTP series, alone on its cache lines.
#[derive(Default)]
#[repr(align(128))]
struct HttpShard {
    duration: HistShard,
    request_bytes: HistShard,
    response_bytes: HistShard,
}

struct HttpSeries {
    dest: Destination,
    key: HttpKey,
    shards: Box<[HttpShard]>,
}

impl HttpSeries {
    #[inline]
    fn observe(&self, duration_us: u64, request_bytes: u64, response_bytes: u64) {
        let s = pick(&self.shards);
        s.duration.observe(duration_us, &DURATION_BOUNDS_US, duration_us);
        s.request_bytes.observe(request_bytes.saturating_mul(2), &BYTES_BOUNDS_X2, request_bytes);
        s.response_bytes.observe(response_bytes.saturating_mul(2), &BYTES_BOUNDS_X2, response_bytes);
    }

    fn totals(&self) -> HttpTotals {
        let mut t = HttpTotals::default();
        for s in self.shards.iter() {
            s.duration.add_to(&mut t.duration);
            s.request_bytes.add_to(&mut t.request_bytes);
            s.response_bytes.add_to(&mut t.response_bytes);
        }
        t
    }
}

#[derive(Default)]
struct Hist {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [u64; NBUCKETS],
    sum: u64,
}

impl Hist {
    fn count(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a.wrapping_add(*b))
    }
}

#[derive(Default)]
struct HttpTotals {
    duration: Hist,
    request_bytes: Hist,
    response_bytes: Hist,
}

#[derive(Default)]
#[repr(align(64))]
struct TcpShard {
    sent: AtomicU64,
    received: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
}

struct TcpSeries {
    dest: Destination,
    key: TcpKey,
    shards: Box<[TcpShard]>,
}

impl TcpSeries {
    fn shard(&self) -> &TcpShard {
        pick(&self.shards)
    }

    /// sent, received, opened, closed.
    fn totals(&self) -> [u64; 4] {
        let mut t = [0u64; 4];
        for s in self.shards.iter() {
            for (t, a) in t.iter_mut().zip([&s.sent, &s.received, &s.opened, &s.closed]) {
                *t = t.wrapping_add(a.load(Ordering::Relaxed));
            }
        }
        t
    }
}

/// The metering of one open TCP connection (see [`Metrics::tcp_open`]). Report cumulative byte
/// totals whenever convenient (Istio reports every 5 s); only the growth since the last report is
/// added. Give it to [`Metrics::record_tcp`] with the closing [`TcpRecord`].
pub struct TcpMeter {
    owner: usize,
    series: Arc<TcpSeries>,
    reported_received: AtomicU64,
    reported_sent: AtomicU64,
    closed: AtomicBool,
}

impl fmt::Debug for TcpMeter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpMeter")
            .field("reported_received", &self.reported_received.load(Ordering::Relaxed))
            .field("reported_sent", &self.reported_sent.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TcpMeter {
    /// Bring the byte counters up to these totals (bytes received from / sent to the downstream
    /// since the connection opened).
    pub fn report(&self, total_received: u64, total_sent: u64) {
        let shard = self.series.shard();
        let prev = self.reported_received.fetch_max(total_received, Ordering::Relaxed);
        shard.received.fetch_add(total_received.saturating_sub(prev), Ordering::Relaxed);
        let prev = self.reported_sent.fetch_max(total_sent, Ordering::Relaxed);
        shard.sent.fetch_add(total_sent.saturating_sub(prev), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Text exposition

#[derive(Clone, Copy)]
enum Scale {
    Unit,
    /// Stored in microseconds, exported in milliseconds.
    Micros,
}

enum Value {
    U(u64),
    I(i64),
    F(f64),
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    family(out, name, "gauge", help);
    sample(out, name, "", None, Value::I(v));
}

/// `name{labels,le="…"} value` (`labels` already rendered, without braces).
fn sample(out: &mut String, name: &str, labels: &str, le: Option<&str>, value: Value) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            push_escaped(out, le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    match value {
        Value::U(v) => out.push_str(itoa::Buffer::new().format(v)),
        Value::I(v) => out.push_str(itoa::Buffer::new().format(v)),
        Value::F(v) => push_float(out, v),
    }
    out.push('\n');
}

fn push_float(out: &mut String, v: f64) {
    use fmt::Write;
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v > 0.0 {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Hist, scale: Scale) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    let mut le = String::new();
    for (i, n) in h.buckets.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*n);
        le.clear();
        match ISTIO_BUCKETS.get(i) {
            Some(b) => push_float(&mut le, *b),
            None => le.push_str("+Inf"),
        }
        sample(out, &bucket, labels, Some(&le), Value::U(cumulative));
    }
    let sum = match scale {
        Scale::Unit => Value::U(h.sum),
        Scale::Micros => Value::F(h.sum as f64 / 1000.0),
    };
    sample(out, &format!("{name}_sum"), labels, None, sum);
    sample(out, &format!("{name}_count"), labels, None, Value::U(cumulative));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_place_values_like_prometheus_le() {
        let i = |v: u64| DURATION_BOUNDS_US.partition_point(|&b| b < v);
        assert_eq!(i(0), 0);
        assert_eq!(i(500), 0, "0.5 ms is ≤ 0.5");
        assert_eq!(i(501), 1);
        assert_eq!(i(3_600_000_000), 18);
        assert_eq!(i(3_600_000_001), 19, "+Inf");
        let j = |bytes: u64| BYTES_BOUNDS_X2.partition_point(|&b| b < bytes * 2);
        assert_eq!(j(0), 0, "0 bytes ≤ 0.5");
        assert_eq!(j(1), 1);
        assert_eq!(j(2), 2, "2 ≤ 5");
        assert_eq!(j(5), 2);
        assert_eq!(j(6), 3);
    }

    #[test]
    fn grpc_status_is_bounded() {
        assert_eq!(grpc_label(None), GRPC_NONE);
        assert_eq!(grpc_label(Some(14)), 14);
        assert_eq!(grpc_label(Some(17)), GRPC_INVALID);
        assert_eq!(grpc_label(Some(u32::MAX)), GRPC_INVALID);
    }
}
