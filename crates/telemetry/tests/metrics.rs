#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Scrape `render()` with a strict Prometheus text-format parser and check series, labels and
//! values after known traffic: 200, 404 NR, 503 UH, a gRPC error status, TCP bytes.

use http::{Method, Uri, Version};
use portico_telemetry::{
    BreakerResource, ConnectionSecurityPolicy, DestinationLabels, MetricsConfig, RequestRecord, ResponseFlags,
    SourceLabels, TcpRecord, Telemetry, TlsFailureReason,
};
use prom_text_format_parser::{Metric, Scrape, Type, ValueType};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

fn telemetry() -> Telemetry {
    let mut source = SourceLabels::new("istio-ingressgateway", "istio-system");
    source.app = "istio-ingressgateway".into();
    source.cluster = "Kubernetes".into();
    Telemetry::without_access_log(MetricsConfig { source, build_tag: Some("1.2.3".into()), shards: Some(4) })
}

type Labels = BTreeMap<String, String>;

struct Parsed {
    metrics: Vec<Metric>,
}

fn scrape(t: &Telemetry) -> Parsed {
    let text = t.render();
    let scrape = match Scrape::parse(&text) {
        Ok(s) => s,
        Err(e) => panic!("render() is not valid Prometheus text: {e:?}\n{text}"),
    };
    // Each series appears once per metric (and per `le` for buckets).
    for m in &scrape.metrics {
        let mut seen = HashSet::new();
        for s in &m.samples {
            let key = (format!("{:?}", s.value.value_type), s.labels.to_string());
            assert!(seen.insert(key.clone()), "duplicate series {} {:?}", m.name, key);
        }
    }
    Parsed { metrics: scrape.metrics }
}

fn labels_of(s: &prom_text_format_parser::Sample) -> Labels {
    s.labels.iter().map(|l| (l.key.clone(), l.value.clone())).collect()
}

impl Parsed {
    fn metric(&self, name: &str) -> &Metric {
        let found: Vec<&Metric> = self.metrics.iter().filter(|m| m.name == name).collect();
        assert_eq!(found.len(), 1, "metric {name} appears {} times", found.len());
        found[0]
    }

    fn has(&self, name: &str) -> bool {
        self.metrics.iter().any(|m| m.name == name)
    }

    /// The samples of `name` whose labels include `want`.
    fn matching(&self, name: &str, want: &[(&str, &str)]) -> Vec<(Labels, ValueType, f64)> {
        self.metric(name)
            .samples
            .iter()
            .map(|s| (labels_of(s), s.value.value_type, s.value.value.as_f64()))
            .filter(|(l, _, _)| want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    }

    /// The value of the one plain sample of `name` matching `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.matching(name, want).into_iter().filter(|(_, t, _)| *t == ValueType::Sample).collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0].2
    }

    fn series_count(&self, name: &str, want: &[(&str, &str)]) -> usize {
        self.matching(name, want).into_iter().filter(|(_, t, _)| *t == ValueType::Sample).count()
    }

    /// (le → cumulative count, sum, count) of one histogram series.
    fn histogram(&self, name: &str, want: &[(&str, &str)]) -> (Vec<(String, f64)>, f64, f64) {
        let samples = self.matching(name, want);
        let mut buckets = Vec::new();
        let (mut sum, mut count) = (None, None);
        let mut series = HashSet::new();
        for (mut l, t, v) in samples {
            match t {
                ValueType::Sample => {
                    let le = l.remove("le").unwrap_or_else(|| panic!("{name}: bucket without le"));
                    buckets.push((le, v));
                }
                ValueType::Sum => assert!(sum.replace(v).is_none(), "{name}: two _sum"),
                ValueType::Count => assert!(count.replace(v).is_none(), "{name}: two _count"),
            }
            series.insert(l);
        }
        assert_eq!(series.len(), 1, "{name} {want:?} matches several series: {series:?}");
        (buckets, sum.unwrap_or(f64::NAN), count.unwrap_or(f64::NAN))
    }
}

const LE: [&str; 20] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000", "60000",
    "300000", "600000", "1800000", "3600000", "+Inf",
];

/// Istio's full label set of the HTTP metrics.
const HTTP_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_164_645_678 + ms)
}

fn request(code: u16, flags: ResponseFlags, ms: u64, rx: u64, tx: u64) -> RequestRecord {
    RequestRecord {
        start_time: at(0),
        duration: Duration::from_millis(ms),
        method: Method::GET,
        uri: Uri::from_static("/productpage?u=1"),
        protocol: Version::HTTP_11,
        status: code,
        flags,
        bytes_received: rx,
        bytes_sent: tx,
        ..Default::default()
    }
}

#[test]
fn istio_http_metrics_after_known_traffic() {
    let t = telemetry();
    let m = t.metrics();
    let reviews = m.destination(
        DestinationLabels::service("reviews.default.svc.cluster.local", "reviews", "default").with_version("v1"),
    );
    let grpc = m.destination(DestinationLabels::service("greeter.apps.svc.cluster.local", "greeter", "apps"));

    // 200 ×2 to reviews: 3 ms / 700 ms; 100 B / 0 B in; 2000 B / 1 B out.
    t.record_request(&request(200, ResponseFlags::NONE, 3, 100, 2000), Some(&reviews));
    t.record_request(&request(200, ResponseFlags::NONE, 700, 0, 1), Some(&reviews));
    // 404 NR: no route, so no destination.
    t.record_request(&request(404, ResponseFlags::NO_ROUTE_FOUND, 0, 0, 0), None);
    // 503 UH to reviews.
    t.record_request(&request(503, ResponseFlags::NO_HEALTHY_UPSTREAM, 1, 0, 19), Some(&reviews));
    // gRPC UNAVAILABLE (14) over HTTP/2, 200 OK.
    t.record_request(
        &RequestRecord {
            grpc: true,
            grpc_status: Some(14),
            protocol: Version::HTTP_2,
            ..request(200, ResponseFlags::NONE, 2, 5, 0)
        },
        Some(&grpc),
    );
    // A plain HTTP request carrying a grpc status: Istio reports the status only for gRPC.
    t.record_request(
        &RequestRecord { grpc_status: Some(3), ..request(200, ResponseFlags::NONE, 2, 5, 0) },
        Some(&grpc),
    );

    let p = scrape(&t);
    assert_eq!(p.metric("istio_requests_total").kind, Type::Counter);
    for name in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
        assert_eq!(p.metric(name).kind, Type::Histogram);
    }

    // The 200 series, every label.
    let ok = p.matching("istio_requests_total", &[("destination_service_name", "reviews"), ("response_code", "200")]);
    assert_eq!(ok.len(), 1);
    let (labels, _, value) = &ok[0];
    assert_eq!(*value, 2.0);
    let names: Vec<&str> = labels.keys().map(String::as_str).collect();
    let mut want_names = HTTP_LABELS.to_vec();
    want_names.sort();
    assert_eq!(names, want_names, "exactly Istio's label set");
    let expect: Labels = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("source_canonical_service", "istio-ingressgateway"),
        ("source_canonical_revision", "latest"),
        ("source_workload_namespace", "istio-system"),
        ("source_principal", "unknown"),
        ("source_app", "istio-ingressgateway"),
        ("source_version", "unknown"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "unknown"),
        ("destination_workload_namespace", "unknown"),
        ("destination_principal", "unknown"),
        ("destination_app", "unknown"),
        ("destination_version", "v1"),
        ("destination_service", "reviews.default.svc.cluster.local"),
        ("destination_canonical_service", "unknown"),
        ("destination_canonical_revision", "latest"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "unknown"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(*labels, expect);

    // 404 NR: Istio's "no destination" labels.
    let nr = [("response_code", "404"), ("response_flags", "NR")];
    assert_eq!(p.value("istio_requests_total", &nr), 1.0);
    let (l, _, _) = &p.matching("istio_requests_total", &nr)[0];
    for k in
        ["destination_service", "destination_service_name", "destination_service_namespace", "destination_workload"]
    {
        assert_eq!(l[k], "unknown", "{k}");
    }
    assert_eq!(l["destination_canonical_revision"], "latest");

    // 503 UH.
    let uh = [("destination_service_name", "reviews"), ("response_code", "503"), ("response_flags", "UH")];
    assert_eq!(p.value("istio_requests_total", &uh), 1.0);

    // gRPC status 14 on a 200; the plain-HTTP request to the same service has an empty status.
    let g = [("request_protocol", "grpc"), ("grpc_response_status", "14"), ("response_code", "200")];
    assert_eq!(p.value("istio_requests_total", &g), 1.0);
    let h = [("destination_service_name", "greeter"), ("request_protocol", "http"), ("grpc_response_status", "")];
    assert_eq!(p.value("istio_requests_total", &h), 1.0);
    assert_eq!(p.series_count("istio_requests_total", &[]), 5);

    // Duration histogram of the 200 series: 3 ms and 700 ms.
    let sel = [("destination_service_name", "reviews"), ("response_code", "200")];
    let (buckets, sum, count) = p.histogram("istio_request_duration_milliseconds", &sel);
    let les: Vec<&str> = buckets.iter().map(|(le, _)| le.as_str()).collect();
    assert_eq!(les, LE, "Istio's (Envoy's default) buckets, in order");
    let counts: Vec<f64> = buckets.iter().map(|(_, c)| *c).collect();
    assert_eq!(counts, [0., 0., 1., 1., 1., 1., 1., 1., 1., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2.]);
    assert_eq!((sum, count), (703.0, 2.0));

    // Request bytes 100 and 0; response bytes 2000 and 1.
    let (buckets, sum, count) = p.histogram("istio_request_bytes", &sel);
    let counts: Vec<f64> = buckets.iter().map(|(_, c)| *c).collect();
    assert_eq!(counts, [1., 1., 1., 1., 1., 1., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2.]);
    assert_eq!((sum, count), (100.0, 2.0));
    let (buckets, sum, count) = p.histogram("istio_response_bytes", &sel);
    let counts: Vec<f64> = buckets.iter().map(|(_, c)| *c).collect();
    assert_eq!(counts, [0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 2., 2., 2., 2., 2., 2., 2., 2., 2., 2.]);
    assert_eq!((sum, count), (2001.0, 2.0));

    // Every histogram series: cumulative, +Inf == _count, and as many as the counter's series.
    for name in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
        let mut per_series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for s in &p.metric(name).samples {
            let mut l = labels_of(s);
            let le = l.remove("le");
            let key = format!("{l:?}");
            match s.value.value_type {
                ValueType::Sample => {
                    assert!(le.is_some());
                    per_series.entry(key).or_default().push(s.value.value.as_f64());
                }
                ValueType::Count => {
                    counts.insert(key, s.value.value.as_f64());
                }
                ValueType::Sum => {}
            }
        }
        assert_eq!(per_series.len(), 5, "{name}");
        for (key, b) in &per_series {
            assert_eq!(b.len(), 20);
            assert!(b.windows(2).all(|w| w[0] <= w[1]), "{name} {key}: not cumulative {b:?}");
            assert_eq!(b.last(), counts.get(key), "{name} {key}: +Inf != _count");
        }
    }
    // No TCP traffic: no TCP families at all.
    assert!(!p.has("istio_tcp_sent_bytes_total"));
}

#[test]
fn istio_tcp_metrics() {
    let t = telemetry();
    let m = t.metrics();
    let echo = m.destination(DestinationLabels::service("tcp-echo.default.svc.cluster.local", "tcp-echo", "default"));

    // A connection metered while it runs: open, two periodic reports, close.
    let meter = t.tcp_open(Some(&echo), ConnectionSecurityPolicy::Unknown);
    meter.report(10, 20);
    meter.report(15, 20);
    let mid = scrape(&t);
    let sel = [("destination_service_name", "tcp-echo"), ("response_flags", "-")];
    assert_eq!(mid.value("istio_tcp_connections_opened_total", &sel), 1.0);
    assert_eq!(mid.value("istio_tcp_received_bytes_total", &sel), 15.0);
    assert!(mid.matching("istio_tcp_connections_closed_total", &sel).iter().all(|(_, _, v)| *v == 0.0));
    t.record_tcp(&TcpRecord { bytes_received: 100, bytes_sent: 250, ..Default::default() }, Some(&echo), Some(&meter));
    // Closing twice with the same meter counts once.
    t.record_tcp(&TcpRecord { bytes_received: 100, bytes_sent: 250, ..Default::default() }, Some(&echo), Some(&meter));
    // A connection that failed to reach its upstream: all at close, with its flags.
    t.record_tcp(
        &TcpRecord { flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE, bytes_received: 7, ..Default::default() },
        Some(&echo),
        None,
    );

    let p = scrape(&t);
    for name in [
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    ] {
        assert_eq!(p.metric(name).kind, Type::Counter, "{name}");
        assert_eq!(p.series_count(name, &[]), 2, "{name}");
    }
    assert_eq!(p.value("istio_tcp_received_bytes_total", &sel), 100.0);
    assert_eq!(p.value("istio_tcp_sent_bytes_total", &sel), 250.0);
    assert_eq!(p.value("istio_tcp_connections_opened_total", &sel), 1.0);
    assert_eq!(p.value("istio_tcp_connections_closed_total", &sel), 1.0);
    let uf = [("destination_service_name", "tcp-echo"), ("response_flags", "UF")];
    assert_eq!(p.value("istio_tcp_received_bytes_total", &uf), 7.0);
    assert_eq!(p.value("istio_tcp_connections_opened_total", &uf), 1.0);
    assert_eq!(p.value("istio_tcp_connections_closed_total", &uf), 1.0);

    // TCP series carry request_protocol="tcp" and no response_code / grpc_response_status.
    let (l, _, _) = &p.matching("istio_tcp_sent_bytes_total", &sel)[0];
    assert_eq!(l["request_protocol"], "tcp");
    assert_eq!(l["reporter"], "source");
    assert!(!l.contains_key("response_code") && !l.contains_key("grpc_response_status"));
    assert_eq!(l.len(), HTTP_LABELS.len() - 2);
    // No HTTP traffic: no HTTP families.
    assert!(!p.has("istio_requests_total"));
}

#[test]
fn removed_destinations_and_clusters_drop_their_series() {
    let t = telemetry();
    let m = t.metrics();
    let a = m.destination(DestinationLabels::service("a.default.svc.cluster.local", "a", "default"));
    let b = m.destination(DestinationLabels::service("b.default.svc.cluster.local", "b", "default"));
    assert_eq!(a, m.destination(DestinationLabels::service("a.default.svc.cluster.local", "a", "default")));
    for d in [&a, &b] {
        t.record_request(&request(200, ResponseFlags::NONE, 1, 1, 1), Some(d));
        t.record_tcp(&TcpRecord { bytes_sent: 1, ..Default::default() }, Some(d), None);
    }
    t.record_request(&request(404, ResponseFlags::NO_ROUTE_FOUND, 0, 0, 0), None);
    let ca = m.cluster("outbound|80||a.default.svc.cluster.local");
    let cb = m.cluster("outbound|80||b.default.svc.cluster.local");
    ca.retries.inc();
    cb.retries.add(2);
    assert!(std::sync::Arc::ptr_eq(&ca, &m.cluster("outbound|80||a.default.svc.cluster.local")));

    let p = scrape(&t);
    assert_eq!(p.series_count("istio_requests_total", &[]), 3);
    assert_eq!(
        p.value("portico_upstream_retries_total", &[("cluster_name", "outbound|80||b.default.svc.cluster.local")]),
        2.0
    );

    // Reload: only `a` remains.
    m.retain_destinations([&a]);
    m.remove_clusters(&["outbound|80||a.default.svc.cluster.local"]);
    let p = scrape(&t);
    assert_eq!(p.series_count("istio_requests_total", &[("destination_service_name", "b")]), 0);
    assert_eq!(p.series_count("istio_requests_total", &[("destination_service_name", "a")]), 1);
    assert_eq!(p.series_count("istio_requests_total", &[("response_flags", "NR")]), 1, "unknown destination kept");
    assert_eq!(p.series_count("istio_request_duration_milliseconds", &[("destination_service_name", "b")]), 0);
    assert_eq!(p.series_count("istio_tcp_sent_bytes_total", &[]), 1);
    assert_eq!(p.series_count("portico_upstream_retries_total", &[]), 1);
    assert_eq!(m.series_count(), (2, 1));

    // Everything removed: the families disappear rather than stand empty.
    m.retain_destinations([]);
    m.remove_clusters(&[]);
    let p = scrape(&t);
    assert!(!p.has("istio_tcp_sent_bytes_total") && !p.has("portico_upstream_retries_total"));
    assert_eq!(p.series_count("istio_requests_total", &[]), 1);

    // A destination that comes back gets its old identity: one series, not two.
    t.record_request(&request(200, ResponseFlags::NONE, 1, 1, 1), Some(&b));
    let b2 = m.destination(DestinationLabels::service("b.default.svc.cluster.local", "b", "default"));
    t.record_request(&request(200, ResponseFlags::NONE, 1, 1, 1), Some(&b2));
    let p = scrape(&t);
    assert_eq!(p.value("istio_requests_total", &[("destination_service_name", "b")]), 2.0);
}

#[test]
fn destinations_from_another_registry_are_reinterned() {
    let t = telemetry();
    let other = telemetry();
    let foreign = other.metrics().destination(DestinationLabels::service("x.ns.svc.cluster.local", "x", "ns"));
    t.record_request(&request(200, ResponseFlags::NONE, 1, 1, 1), Some(&foreign));
    let p = scrape(&t);
    assert_eq!(p.value("istio_requests_total", &[("destination_service", "x.ns.svc.cluster.local")]), 1.0);
}

#[test]
fn concurrent_recording_loses_nothing() {
    let t = telemetry();
    let d = t.metrics().destination(DestinationLabels::service("c.default.svc.cluster.local", "c", "default"));
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let (t, d) = (&t, &d);
            s.spawn(move || {
                for j in 0..2500u64 {
                    let code = if j % 2 == 0 { 200 } else { 500 };
                    t.record_request(&request(code, ResponseFlags::NONE, i, j % 7, 1), Some(d));
                }
            });
        }
    });
    let p = scrape(&t);
    assert_eq!(p.value("istio_requests_total", &[("response_code", "200")]), 5000.0);
    assert_eq!(p.value("istio_requests_total", &[("response_code", "500")]), 5000.0);
    let (_, sum, count) = p.histogram("istio_request_duration_milliseconds", &[("response_code", "200")]);
    assert_eq!((sum, count), (6.0 * 1250.0, 5000.0), "threads 0..4 recorded i ms each");
}

#[test]
fn portico_metrics() {
    let t = telemetry();
    let m = t.metrics();
    let g = m.gateway();
    m.config_reload_succeeded(3, SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250));
    m.config_reload_failed();
    m.config_reload_failed();
    g.listeners.set(2);
    let c1 = g.downstream_connection();
    let c2 = g.downstream_connection();
    drop(c1);
    g.tls_handshake_failed(TlsFailureReason::NoCertificate);
    g.tls_handshake_failed(TlsFailureReason::NoCertificate);
    g.tls_handshake_failed(TlsFailureReason::BadCertificate);
    let c = m.cluster("outbound|9080|v1|reviews.default.svc.cluster.local");
    let active = c.requests_active.guard();
    c.connections_active.inc();
    c.connections_total.add(3);
    c.overflow(BreakerResource::Requests);
    c.overflow(BreakerResource::Retries);
    c.overflow(BreakerResource::Retries);
    c.connections_idle.set(4);
    c.retry_successes.inc();
    // Two ejections made, one still in force (the gauge is set from the endpoints at scrape).
    c.outlier_ejections_total.add(2);
    c.outlier_ejections_active.set(1);

    let p = scrape(&t);
    assert_eq!(p.value("portico_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(p.value("portico_config_reloads_total", &[("result", "failed")]), 2.0);
    assert_eq!(p.value("portico_config_generation", &[]), 3.0);
    assert_eq!(p.value("portico_config_last_reload_success_timestamp_seconds", &[]), 1_700_000_000.25);
    assert_eq!(p.value("portico_listeners", &[]), 2.0);
    assert_eq!(p.value("portico_downstream_connections_active", &[]), 1.0);
    assert_eq!(p.value("portico_downstream_connections_total", &[]), 2.0);
    assert_eq!(p.value("portico_tls_handshake_failures_total", &[("reason", "no_certificate")]), 2.0);
    assert_eq!(p.value("portico_tls_handshake_failures_total", &[("reason", "bad_certificate")]), 1.0);
    assert_eq!(p.value("portico_tls_handshake_failures_total", &[("reason", "timeout")]), 0.0);
    assert_eq!(p.value("portico_access_log_dropped_total", &[]), 0.0);
    assert_eq!(p.value("istio_build", &[("component", "proxy")]), 1.0);
    let sel = [("cluster_name", "outbound|9080|v1|reviews.default.svc.cluster.local")];
    assert_eq!(p.value("portico_upstream_requests_active", &sel), 1.0);
    assert_eq!(p.value("portico_upstream_connections_active", &sel), 1.0);
    assert_eq!(p.value("portico_upstream_connections_total", &sel), 3.0);
    let res = |r: &'static str| [sel[0], ("resource", r)];
    assert_eq!(p.value("portico_upstream_circuit_breaker_overflows_total", &res("requests")), 1.0);
    assert_eq!(p.value("portico_upstream_circuit_breaker_overflows_total", &res("retries")), 2.0);
    assert_eq!(p.value("portico_upstream_circuit_breaker_overflows_total", &res("connections")), 0.0);
    assert_eq!(p.value("portico_upstream_circuit_breaker_overflows_total", &res("pending")), 0.0);
    assert_eq!(p.value("portico_upstream_connections_idle", &sel), 4.0);
    assert_eq!(p.value("portico_upstream_retry_successes_total", &sel), 1.0);
    assert_eq!(p.value("portico_upstream_outlier_ejections_active", &sel), 1.0);
    assert_eq!(p.value("portico_upstream_outlier_ejections_total", &sel), 2.0);
    assert_eq!(p.metric("portico_upstream_outlier_ejections_total").kind, Type::Counter);
    assert_eq!(p.metric("portico_upstream_outlier_ejections_active").kind, Type::Gauge);
    drop((c2, active));
    let p = scrape(&t);
    assert_eq!(p.value("portico_downstream_connections_active", &[]), 0.0);
    assert_eq!(p.value("portico_upstream_requests_active", &sel), 0.0);
}

#[test]
fn label_values_are_escaped() {
    let t = telemetry();
    let d = t.metrics().destination(DestinationLabels::service("we\"ird\\host\nx", "n", "ns"));
    t.record_request(&request(200, ResponseFlags::NONE, 1, 1, 1), Some(&d));
    let text = t.render();
    assert!(text.contains(r#"destination_service="we\"ird\\host\nx""#), "{text}");
    scrape(&t);
}
