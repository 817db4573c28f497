//! The data plane's record hook wired to telemetry: Istio's metrics, the access log and trace
//! export, all reading the proxy's one record per finished request as it is. What this adds is
//! the request's `destination_*` labels, looked up by its cluster.
//!
//! Destinations (`destination_*` labels) are interned per cluster when a snapshot is applied
//! ([`TelemetrySink::apply`]), not per request; a request finds its cluster's handle with one
//! hash lookup in a map read through an `ArcSwap` (no lock), with FxHash: its keys are the
//! config's cluster names (SipHash cost 230 instructions per request on them). Keeping the map
//! here rather than in the proxy's cluster pools keeps the proxy free of metric-label policy
//! (which host is which service name) and keeps this wiring out of the files the
//! traffic-policy work edits.

use arc_swap::ArcSwap;
use portico_model::Snapshot;
use portico_proxy::AccessLogSink;
use portico_telemetry::{ClusterStats, Destination, DestinationLabels, RequestRecord, TcpRecord, Telemetry, Tracer};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

pub struct TelemetrySink {
    telemetry: Telemetry,
    tracer: Option<Tracer>,
    destinations: ArcSwap<HashMap<Arc<str>, Destination>>,
    /// The `portico_upstream_*` handles of the clusters in service (pool gauges are set from the
    /// proxy's pools at scrape time).
    clusters: ArcSwap<HashMap<Arc<str>, Arc<ClusterStats>>>,
}

/// Istio's `destination_service_name`: a Kubernetes service's short name
/// (`reviews.default.svc.cluster.local` → `reviews`), else the host itself (a ServiceEntry host
/// such as `api.example.com` is its own name, as Istio reports it).
pub fn service_name(host: &str) -> &str {
    match host.split_once('.') {
        Some((name, rest)) if rest.contains(".svc.") || rest.ends_with(".svc") => name,
        _ => host,
    }
}

impl TelemetrySink {
    pub fn new(telemetry: Telemetry, tracer: Option<Tracer>) -> TelemetrySink {
        TelemetrySink {
            telemetry,
            tracer,
            destinations: ArcSwap::from_pointee(HashMap::default()),
            clusters: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn cluster_stats(&self, name: &str) -> Option<Arc<ClusterStats>> {
        self.clusters.load().get(name).cloned()
    }

    /// A snapshot went into service: intern its clusters' destinations and drop the series of
    /// clusters that are gone.
    pub fn apply(&self, snapshot: &Snapshot) {
        let metrics = self.telemetry.metrics();
        let mut dests = HashMap::with_capacity_and_hasher(snapshot.clusters.len(), Default::default());
        let mut clusters = HashMap::with_capacity_and_hasher(snapshot.clusters.len(), Default::default());
        for (name, c) in &snapshot.clusters {
            let labels = DestinationLabels::service(c.host.as_str(), service_name(&c.host), c.namespace.as_str())
                .with_version(c.version.clone().unwrap_or_default());
            dests.insert(name.clone(), metrics.destination(labels));
            clusters.insert(name.clone(), metrics.cluster(name));
        }
        metrics.retain_destinations(dests.values());
        let keep: Vec<&str> = clusters.keys().map(|k| &**k).collect();
        metrics.remove_clusters(&keep);
        self.destinations.store(Arc::new(dests));
        self.clusters.store(Arc::new(clusters));
    }
}

impl AccessLogSink for TelemetrySink {
    /// One TCP (or TLS passthrough) connection: `istio_tcp_*` series and one access-log line.
    fn log_tcp(&self, r: &TcpRecord) {
        let dests = self.destinations.load();
        let destination = r.upstream_cluster.as_deref().and_then(|c| dests.get(c));
        self.telemetry.record_tcp(r, destination, None);
    }

    /// One request: Istio's request metrics on its cluster's destination, one access-log line,
    /// and its spans when it was sampled.
    fn log(&self, r: &RequestRecord) {
        let dests = self.destinations.load();
        let destination = r.upstream_cluster.as_deref().and_then(|c| dests.get(c));
        self.telemetry.record_request(r, destination);
        if let Some(tracer) = &self.tracer {
            tracer.finish(r);
        }
    }

    /// Metrics read none of the details; access-log lines and spans do.
    fn wants_request_details(&self) -> bool {
        self.tracer.is_some() || self.telemetry.access_log().format() != portico_telemetry::AccessLogFormat::Off
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn service_names_as_istio_reports_them() {
        assert_eq!(service_name("reviews.default.svc.cluster.local"), "reviews");
        assert_eq!(service_name("reviews.default.svc"), "reviews");
        assert_eq!(service_name("api.example.com"), "api.example.com");
        assert_eq!(service_name("a.backend"), "a.backend");
    }
}
