//! The data plane's record hook wired to telemetry: Istio's metrics, the access log and trace
//! export, from the proxy's one record per finished request.
//!
//! Destinations (`destination_*` labels) are interned per cluster when a snapshot is applied
//! ([`TelemetrySink::apply`]), not per request; a request finds its cluster's handle with one
//! hash lookup in a map read through an `ArcSwap` (no lock). Keeping the map here rather than in
//! the proxy's cluster pools keeps the proxy free of metric-label policy (which host is which
//! service name) and keeps this wiring out of the files the traffic-policy work edits.

use arc_swap::ArcSwap;
use portico_model::Snapshot;
use portico_proxy::{AccessLogSink, RequestRecord as ProxyRecord, TcpRecord as ProxyTcpRecord};
use portico_telemetry::{
    ClusterStats, Destination, DestinationLabels, HttpProtocol, RequestProtocol, RequestRecord, SpanEnd, TcpRecord,
    Telemetry, Tracer,
};
use std::collections::HashMap;
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
            destinations: ArcSwap::from_pointee(HashMap::new()),
            clusters: ArcSwap::from_pointee(HashMap::new()),
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
        let mut dests = HashMap::with_capacity(snapshot.clusters.len());
        let mut clusters = HashMap::with_capacity(snapshot.clusters.len());
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

fn protocol(v: http::Version) -> HttpProtocol {
    match v {
        http::Version::HTTP_10 | http::Version::HTTP_09 => HttpProtocol::Http10,
        http::Version::HTTP_2 => HttpProtocol::Http2,
        http::Version::HTTP_3 => HttpProtocol::Http3,
        _ => HttpProtocol::Http11,
    }
}

fn text(v: &Option<http::HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

impl AccessLogSink for TelemetrySink {
    /// One TCP (or TLS passthrough) connection: `istio_tcp_*` series and one access-log line.
    fn log_tcp(&self, r: &ProxyTcpRecord) {
        let dests = self.destinations.load();
        let destination = r.upstream_cluster.as_deref().and_then(|c| dests.get(c));
        let rec = TcpRecord {
            start_time: r.start_time,
            duration: r.duration,
            response_flags: r.flags,
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            upstream_host: r.upstream_host,
            upstream_local_address: r.upstream_local,
            upstream_cluster: r.upstream_cluster.as_deref(),
            downstream_local_address: Some(r.downstream_local),
            downstream_remote_address: Some(r.downstream_remote),
            requested_server_name: r.sni.as_deref(),
            destination,
            ..Default::default()
        };
        self.telemetry.record_tcp(&rec);
    }

    fn log(&self, r: &ProxyRecord) {
        let dests = self.destinations.load();
        let destination = r.upstream_cluster.as_deref().and_then(|c| dests.get(c));
        let path = r.uri.path_and_query().map_or_else(|| r.uri.path(), |p| p.as_str());
        let authority = text(&r.authority);
        let request_id = text(&r.request_id);
        let user_agent = text(&r.user_agent);
        let rec = RequestRecord {
            start_time: r.start_time,
            duration: r.duration,
            method: r.method.as_str(),
            path,
            protocol: protocol(r.protocol),
            response_code: r.status,
            response_flags: r.flags,
            response_code_details: Some(r.details).filter(|d| !d.is_empty()),
            bytes_received: r.bytes_received,
            bytes_sent: r.bytes_sent,
            upstream_service_time: r.upstream_service_time,
            x_forwarded_for: text(&r.x_forwarded_for),
            user_agent,
            request_id,
            authority,
            upstream_host: r.upstream_host,
            upstream_local_address: r.upstream_local,
            upstream_cluster: r.upstream_cluster.as_deref(),
            downstream_local_address: Some(r.downstream_local),
            downstream_remote_address: Some(r.downstream_remote),
            requested_server_name: r.sni.as_deref(),
            route_name: r.route.as_ref().and_then(|route| route.name.as_deref()),
            grpc_status: r.grpc_status,
            request_protocol: if r.grpc { RequestProtocol::Grpc } else { RequestProtocol::Http },
            destination,
            ..Default::default()
        };
        self.telemetry.record_request(&rec);
        if let (Some(tracer), Some(trace)) = (&self.tracer, r.trace.as_deref()) {
            let flags = r.flags.to_string();
            tracer.finish(
                trace,
                &SpanEnd {
                    start: Some(r.start_time),
                    duration: r.duration,
                    method: r.method.as_str(),
                    authority: authority.unwrap_or(""),
                    path,
                    protocol: rec.protocol.as_str(),
                    status: r.status,
                    response_flags: &flags,
                    request_id,
                    user_agent,
                    upstream_cluster: r.upstream_cluster.as_deref(),
                    downstream_remote: Some(r.downstream_remote),
                    bytes_received: r.bytes_received,
                    bytes_sent: r.bytes_sent,
                    grpc_status: r.grpc_status,
                },
            );
        }
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
