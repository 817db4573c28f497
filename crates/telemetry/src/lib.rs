//! Portico's telemetry: Istio's standard metrics (and Portico's own) in the Prometheus text
//! format, and Istio's access log (text or JSON) on a sink that never blocks the data path.
//!
//! The data plane fills one [`RequestRecord`] per request and one [`TcpRecord`] per TCP
//! connection. The binary creates one [`Telemetry`] at startup and hands it each finished record
//! ([`Telemetry::record_request`], [`Telemetry::record_tcp`]: metrics and access log), and a
//! sampled request's record to [`Tracer::finish`]. At config apply, the binary interns one
//! [`Destination`] per cluster ([`Metrics::destination`]) and keeps a [`ClusterStats`] handle per
//! cluster ([`Metrics::cluster`]); after a reload it drops the series of removed clusters
//! ([`Metrics::retain_destinations`], [`Metrics::remove_clusters`]). The admin server serves
//! [`Telemetry::render`] with [`CONTENT_TYPE`].
#![forbid(unsafe_code)]

mod access_log;
mod flags;
pub mod format;
mod metrics;
mod record;
pub mod trace;

pub use access_log::{AccessLog, AccessLogFormat, ParseFormatError, DEFAULT_CAPACITY};
pub use flags::ResponseFlags;
pub use metrics::{
    BreakerResource, ClusterStats, Counter, Destination, DestinationLabels, GatewayStats, Gauge, GaugeGuard, Metrics,
    MetricsConfig, SourceLabels, TcpMeter, TlsFailureReason, CONTENT_TYPE, ISTIO_BUCKETS,
};
pub use record::{ConnectionSecurityPolicy, RequestRecord, TcpRecord};
pub use trace::{Propagation, RequestTrace, TraceConfig, Tracer, UpstreamTry};

use std::io::{self, Write};
use std::sync::Arc;

/// How telemetry is set up at startup.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    pub metrics: MetricsConfig,
    /// `--access-log text|json|off`.
    pub access_log: AccessLogFormat,
    /// Lines buffered before the access log drops ([`DEFAULT_CAPACITY`]).
    pub access_log_capacity: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics: MetricsConfig::default(),
            access_log: AccessLogFormat::Text,
            access_log_capacity: DEFAULT_CAPACITY,
        }
    }
}

/// Metrics and access log together. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    metrics: Metrics,
    access_log: AccessLog,
}

impl Telemetry {
    /// Telemetry with the access log on stdout.
    pub fn new(config: TelemetryConfig) -> io::Result<Telemetry> {
        Telemetry::with_writer(config, Box::new(io::stdout()))
    }

    /// Telemetry with the access log written to `writer` (tests, files).
    pub fn with_writer(config: TelemetryConfig, writer: Box<dyn Write + Send>) -> io::Result<Telemetry> {
        let metrics = Metrics::new(config.metrics);
        let dropped = metrics.gateway().access_log_dropped.clone();
        let access_log = AccessLog::new(config.access_log, writer, config.access_log_capacity, dropped)?;
        Ok(Telemetry { inner: Arc::new(Inner { metrics, access_log }) })
    }

    /// Metrics only, no access log (cannot fail: no thread to start).
    pub fn without_access_log(config: MetricsConfig) -> Telemetry {
        Telemetry { inner: Arc::new(Inner { metrics: Metrics::new(config), access_log: AccessLog::off() }) }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn access_log(&self) -> &AccessLog {
        &self.inner.access_log
    }

    /// One finished HTTP request: Istio's request metrics (on `destination`'s series, see
    /// [`Metrics::record_request`]) and one access-log line.
    pub fn record_request(&self, r: &RequestRecord, destination: Option<&Destination>) {
        self.inner.metrics.record_request(r, destination);
        self.inner.access_log.log_request(r);
    }

    /// One closed TCP connection: Istio's TCP metrics (see [`Metrics::record_tcp`]) and one
    /// access-log line.
    pub fn record_tcp(&self, r: &TcpRecord, destination: Option<&Destination>, meter: Option<&TcpMeter>) {
        self.inner.metrics.record_tcp(r, destination, meter);
        self.inner.access_log.log_tcp(r);
    }

    /// A TCP connection reached its upstream: see [`Metrics::tcp_open`].
    pub fn tcp_open(&self, destination: Option<&Destination>, security: ConnectionSecurityPolicy) -> TcpMeter {
        self.inner.metrics.tcp_open(destination, security)
    }

    /// The Prometheus text exposition of every metric ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        self.inner.metrics.render()
    }
}
