#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Telemetry end to end: the real binary, real backends, real clients. Istio's metrics scraped
//! from `/stats/prometheus` with a strict text-format parser, access-log lines from the binary's
//! stdout, and spans received by a real OTLP/HTTP receiver decoding the protobuf.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// app → a.backend subset v1; grpc → a gRPC (h2c) backend; dead → a service with no endpoint;
/// `with_b`: also b.example.com → b.backend (removed by a reload in one test).
fn config(pa: u16, with_b: bool) -> String {
    let mut s = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {pa}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: default}}
spec:
  host: a.backend
  subsets: [{{name: v1, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc, namespace: default}}
spec:
  hosts: [grpc.backend]
  resolution: STATIC
  ports: [{{number: 80, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {pa}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dead, namespace: default}}
spec:
  hosts: [dead.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {pa}}}, labels: {{version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: dead, namespace: default}}
spec:
  host: dead.backend
  subsets: [{{name: none, labels: {{version: none}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: a.backend, subset: v1}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc, namespace: default}}
spec:
  hosts: [grpc.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: grpc.backend}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: dead, namespace: default}}
spec:
  hosts: [dead.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: dead.backend, subset: none}}}}]}}]
"#
    );
    if with_b {
        s.push_str(&format!(
            r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: b, namespace: default}}
spec:
  hosts: [b.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {pa}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b, namespace: default}}
spec:
  hosts: [b.example.com]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: b.backend}}}}]}}]
"#
        ));
    }
    s
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// One unary gRPC call over h2c (prior knowledge); the backend answers with `want` as its
/// `grpc-status` (trailers-only). Returns (HTTP status, grpc-status).
fn grpc_call(port: u16, host: &str, want: u32) -> (u16, Option<String>) {
    runtime().block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        // An empty message: no compression flag, zero length.
        let req = hyper::Request::post(format!("http://{host}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-echo-grpc-status", want.to_string())
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let mut grpc = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_string);
        let collected = resp.into_body().collect().await.unwrap();
        if let Some(t) = collected.trailers() {
            if let Some(v) = t.get("grpc-status").and_then(|v| v.to_str().ok()) {
                grpc = Some(v.to_string());
            }
        }
        (status, grpc)
    })
}

/// HTTP 200, 404 NR, 503 UH and a gRPC error: Istio's series with the labels Istio's dashboards
/// query, and one access-log line each with its response flags.
#[test]
fn istio_metrics_and_access_log_after_known_traffic() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, false));
    let (gw, lines) = start_gateway_piped(dir.path(), &[]);

    for _ in 0..3 {
        let r = get(gw.http_port, "app.example.com", "/hello?x=1", &[("x-request-id", "req-ok")]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "a\n"));
    }
    assert_eq!(get(gw.http_port, "nope.example.com", "/", &[]).unwrap().status, 404);
    assert_eq!(get(gw.http_port, "dead.example.com", "/", &[]).unwrap().status, 503);
    assert_eq!(grpc_call(gw.http_port, "grpc.example.com", 5), (200, Some("5".to_string())));

    let s = scrape(gw.admin_port);
    let source = [
        ("reporter", "source"),
        ("source_workload", "istio-ingressgateway"),
        ("source_workload_namespace", "istio-system"),
        ("connection_security_policy", "unknown"),
    ];
    let ok = [
        ("response_code", "200"),
        ("response_flags", "-"),
        ("request_protocol", "http"),
        ("destination_service", "a.backend"),
        ("destination_service_name", "a.backend"),
        ("destination_service_namespace", "default"),
        ("destination_version", "v1"),
        ("grpc_response_status", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        source.iter().chain(extra).copied().collect()
    };
    assert_eq!(value(&s, "istio_requests_total", &with(&ok)), 3.0);
    let nr = [("response_code", "404"), ("response_flags", "NR"), ("destination_service", "unknown")];
    assert_eq!(value(&s, "istio_requests_total", &with(&nr)), 1.0);
    let uh = [("response_code", "503"), ("response_flags", "UH"), ("destination_service", "dead.backend")];
    assert_eq!(value(&s, "istio_requests_total", &with(&uh)), 1.0);
    let grpc = [
        ("response_code", "200"),
        ("request_protocol", "grpc"),
        ("grpc_response_status", "5"),
        ("destination_service", "grpc.backend"),
    ];
    assert_eq!(value(&s, "istio_requests_total", &with(&grpc)), 1.0);
    // The three histograms carry the same series.
    for h in ["istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"] {
        assert_eq!(value(&s, &format!("{h}:Count"), &with(&ok)), 3.0, "{h}");
        assert_eq!(find(&s, h, &with(&ok)).len(), 20, "{h}: Istio's 19 buckets and +Inf");
    }
    // Every Istio series has the full label set, and none has a path or address in it.
    for (name, labels, _) in find(&s, "istio_requests_total", &[]) {
        assert_eq!(labels.len(), 25, "{name} {labels:?}");
        assert!(labels.values().all(|v| !v.contains("/hello") && !v.contains("127.0.0.1")), "{labels:?}");
    }
    // Portico's own.
    assert_eq!(value(&s, "portico_config_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(value(&s, "portico_config_generation", &[]), 1.0);
    assert_eq!(value(&s, "portico_listeners", &[]), 1.0);
    assert!(value(&s, "portico_config_last_reload_success_timestamp_seconds", &[]) > 1.0e9);
    // 5 HTTP/1.1 connections (Connection: close) and one h2c connection.
    assert_eq!(value(&s, "portico_downstream_connections_total", &[]), 6.0);

    // Access log: Istio's default text format, flags included.
    let log = wait_lines(&lines, 6, |l| l.starts_with('['));
    let has = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has(r#""GET /hello?x=1 HTTP/1.1" 200 - via_upstream - "-" 0 2 "#), 3, "{log:#?}");
    assert_eq!(has(r#"" "app.example.com" "127.0.0.1:"#), 3, "{log:#?}");
    assert!(log.iter().any(|l| l.contains("outbound|80|v1|a.backend")), "{log:#?}");
    assert_eq!(has(r#""GET / HTTP/1.1" 404 NR route_not_found"#), 1, "{log:#?}");
    assert_eq!(has(r#""GET / HTTP/1.1" 503 UH no_healthy_upstream"#), 1, "{log:#?}");
    assert_eq!(has(r#""POST /echo.Echo/Say HTTP/2" 200 - via_upstream"#), 1, "{log:#?}");

    // The plain-text views.
    let stats = get(gw.admin_port, "localhost", "/stats", &[]).unwrap().body;
    assert!(stats.lines().any(|l| l.starts_with("istio_requests_total{") && l.ends_with(": 3")), "{stats}");
    let clusters = get(gw.admin_port, "localhost", "/clusters", &[]).unwrap().body;
    assert!(
        clusters.contains(&format!("outbound|80|v1|a.backend::127.0.0.1:{pa}::health_flags::healthy")),
        "{clusters}"
    );
    let listeners = get(gw.admin_port, "localhost", "/listeners", &[]).unwrap().body;
    assert!(listeners.contains(&format!("127.0.0.1:{}", gw.http_port)), "{listeners}");
}

/// `--access-log-format json`: one JSON object per line, with Istio's field names.
#[test]
fn json_access_log_and_metrics_address() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, false));
    let metrics_port = free_port();
    let (gw, lines) = start_gateway_piped(
        dir.path(),
        &["--access-log-format", "json", "--metrics", &format!("127.0.0.1:{metrics_port}")],
    );
    assert_eq!(get(gw.http_port, "nope.example.com", "/x", &[]).unwrap().status, 404);
    assert_eq!(grpc_call(gw.http_port, "grpc.example.com", 14), (200, Some("14".to_string())));
    let log = wait_lines(&lines, 2, |l| l.starts_with('{'));
    let v: Vec<serde_json::Value> = log.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let nr = v.iter().find(|j| j["response_code"] == 404).expect("404 line");
    assert_eq!((nr["response_flags"].as_str(), nr["path"].as_str()), (Some("NR"), Some("/x")));
    let grpc = v.iter().find(|j| j["protocol"] == "HTTP/2").expect("gRPC line");
    assert_eq!(grpc["response_code"], 200);
    assert_eq!(grpc["upstream_cluster"], "outbound|80||grpc.backend");
    // The shared HTTP/2 upstream connection's local address, as for HTTP/1 ones.
    let local = grpc["upstream_local_address"].as_str().unwrap_or_default();
    assert!(local.starts_with("127.0.0.1:") && local != grpc["upstream_host"], "{grpc}");

    // `--metrics`: Istio's 15090 equivalent, metrics only.
    let s = scrape(metrics_port);
    assert_eq!(value(&s, "istio_requests_total", &[("grpc_response_status", "14")]), 1.0);
    assert_eq!(get(metrics_port, "localhost", "/config_dump", &[]).unwrap().status, 404);

    // The log filter changes at run time; a bad one is refused and the old one stays.
    assert_eq!(get(gw.admin_port, "localhost", "/logging?level=debug", &[]).unwrap().status, 200);
    assert_eq!(get(gw.admin_port, "localhost", "/logging?level=not%20a%20level[", &[]).unwrap().status, 400);
    assert_eq!(get(gw.admin_port, "localhost", "/logging?level=warn", &[]).unwrap().status, 200);
    // Pool gauges per cluster, read from the pools at scrape time.
    let s = scrape(gw.admin_port);
    assert_eq!(find(&s, "portico_upstream_requests_active", &[("cluster_name", "outbound|80||grpc.backend")]).len(), 1);
}

/// After a reload removes a cluster, its Istio series are gone from the scrape.
#[test]
fn removed_cluster_series_disappear_after_reload() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    write(&file, &config(pa, true));
    let gw = start_gateway(dir.path(), &["--access-log", "off"]);
    assert_eq!(get(gw.http_port, "b.example.com", "/", &[]).unwrap().status, 200);
    assert_eq!(get(gw.http_port, "app.example.com", "/", &[]).unwrap().status, 200);
    let s = scrape(gw.admin_port);
    assert_eq!(value(&s, "istio_requests_total", &[("destination_service", "b.backend")]), 1.0);

    write(&file, &config(pa, false));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(gw.admin_port);
        if value(&s, "portico_config_generation", &[]) >= 2.0 {
            assert!(find(&s, "istio_requests_total", &[("destination_service", "b.backend")]).is_empty());
            assert!(find(&s, "istio_request_bytes:Count", &[("destination_service", "b.backend")]).is_empty());
            assert_eq!(value(&s, "istio_requests_total", &[("destination_service", "a.backend")]), 1.0);
            assert_eq!(value(&s, "portico_config_reloads_total", &[("result", "ok")]), 2.0);
            break;
        }
        assert!(Instant::now() < deadline, "reload never applied");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An OTLP/HTTP receiver: decodes every `ExportTraceServiceRequest` POSTed to `/v1/traces`.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    _rt: std::thread::JoinHandle<()>,
}

fn collector() -> Collector {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let sink = spans.clone();
    let rt = std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let status = match ExportTraceServiceRequest::decode(body) {
                                Ok(export) if ok => {
                                    for rs in export.resource_spans {
                                        let service = rs
                                            .resource
                                            .iter()
                                            .flat_map(|r| &r.attributes)
                                            .find(|kv| kv.key == "service.name")
                                            .and_then(|kv| kv.value.as_ref())
                                            .map(|v| format!("{:?}", v.value))
                                            .unwrap_or_default();
                                        for ss in rs.scope_spans {
                                            for span in ss.spans {
                                                sink.lock().unwrap().push((service.clone(), span));
                                            }
                                        }
                                    }
                                    200
                                }
                                _ => 400,
                            };
                            let mut r = hyper::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    });
    Collector { port, spans, _rt: rt }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A client's `traceparent`: the gateway's server span is its child, the client span the server
/// span's child, the upstream sees the client span as its parent; all exported over OTLP.
#[test]
fn traces_exported_over_otlp_with_propagated_context() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let otlp = collector();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, false));
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", otlp.port);
    // 0 %: only the request whose caller sampled it is traced.
    let gw = start_gateway(dir.path(), &["--otlp-endpoint", &endpoint, "--trace-sampling", "0"]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace_id}-{parent}-01");
    let r = get(gw.http_port, "app.example.com", "/?echo", &[("traceparent", &tp), ("tracestate", "k=v")]).unwrap();
    assert_eq!(r.status, 200);
    // Unsampled by the caller, and by the 0 % rate: passed through untouched, not exported.
    let unsampled = format!("00-{trace_id}-{parent}-00");
    let r2 = get(gw.http_port, "app.example.com", "/?echo", &[("traceparent", &unsampled)]).unwrap();
    assert!(r2.body.contains(&format!("traceparent: {unsampled}")), "{}", r2.body);
    // No context and not sampled by the gateway: the decision goes upstream (flags 00), so the
    // services behind do not start traces of their own.
    let r3 = get(gw.http_port, "app.example.com", "/?echo", &[]).unwrap();
    let tp = r3.body.lines().find_map(|l| l.strip_prefix("traceparent: ")).expect("traceparent sent upstream");
    assert!(tp.starts_with("00-") && tp.ends_with("-00") && tp.len() == 55, "{tp}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = otlp.spans.lock().unwrap().clone();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(Instant::now() < deadline, "spans never arrived: {spans:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(spans.len(), 2, "one server and one client span: {spans:#?}");
    let server = &spans.iter().find(|(_, s)| s.kind == SpanKind::Server as i32).expect("server span").1;
    let client = &spans.iter().find(|(_, s)| s.kind == SpanKind::Client as i32).expect("client span").1;
    assert!(spans.iter().all(|(svc, _)| svc.contains("istio-ingressgateway.istio-system")), "{spans:?}");
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&client.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), parent);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(server.trace_state, "k=v");
    assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(client.name, "router outbound|80|v1|a.backend egress");
    // The upstream saw the client span as its parent.
    let sent = format!("traceparent: 00-{trace_id}-{}-01", hex(&client.span_id));
    assert!(r.body.contains(&sent), "{sent} in {}", r.body);
    assert!(r.body.contains("tracestate: k=v"), "{}", r.body);

    let s = scrape(gw.admin_port);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut exported = value(&s, "portico_tracing_spans_total", &[("result", "exported")]);
    while exported < 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        exported = value(&scrape(gw.admin_port), "portico_tracing_spans_total", &[("result", "exported")]);
    }
    assert_eq!(exported, 2.0);
}

/// Retries are traced one client span per try: a gRPC backend answering `UNAVAILABLE` is tried
/// three times (Istio's default policy retries `unavailable` twice); each try is a child of the
/// server span, the tries follow each other, and each carried its own span id upstream.
#[test]
fn each_retry_try_is_its_own_client_span() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let otlp = collector();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, false));
    let endpoint = format!("http://127.0.0.1:{}/v1/traces", otlp.port);
    let gw = start_gateway(dir.path(), &["--otlp-endpoint", &endpoint, "--trace-sampling", "100"]);
    assert_eq!(grpc_call(gw.http_port, "grpc.example.com", 14), (200, Some("14".into())));

    let deadline = Instant::now() + Duration::from_secs(10);
    while otlp.spans.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "spans never arrived: {:?}", otlp.spans.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Any extra span would arrive in the same export batch; give a late one a moment anyway.
    std::thread::sleep(Duration::from_millis(200));
    let spans = otlp.spans.lock().unwrap().clone();
    let server: Vec<&Span> = spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Server as i32).collect();
    let mut tries: Vec<&Span> = spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Client as i32).collect();
    assert_eq!((server.len(), tries.len()), (1, 3), "{spans:#?}");
    tries.sort_by_key(|s| s.start_time_unix_nano);
    for pair in tries.windows(2) {
        assert!(pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano, "tries overlap: {pair:#?}");
        assert_ne!(pair[0].span_id, pair[1].span_id);
    }
    for t in &tries {
        assert_eq!(t.parent_span_id, server[0].span_id);
        assert_eq!(t.trace_id, server[0].trace_id);
        assert!(t.end_time_unix_nano <= server[0].end_time_unix_nano);
    }
}

/// B3 in, B3 out (multi-header), 100 % sampling; and a collector that is down costs nothing:
/// every request succeeds, the spans are counted as dropped.
#[test]
fn b3_propagation_and_collector_down() {
    let pa = free_port();
    let _a = echo_backend(pa, "a");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(pa, false));
    let dead = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let gw = start_gateway(dir.path(), &["--otlp-endpoint", &dead, "--trace-sampling", "100", "--access-log", "off"]);
    let r = get(
        gw.http_port,
        "app.example.com",
        "/?echo",
        &[("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"), ("x-b3-spanid", "0020000000000001")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("x-b3-traceid: 463ac35c9f6413ad48485a3953bb6124"), "{}", r.body);
    assert!(r.body.contains("x-b3-sampled: 1"), "{}", r.body);
    assert!(r.body.contains("traceparent: 00-463ac35c9f6413ad48485a3953bb6124-"), "{}", r.body);
    let r = get(
        gw.http_port,
        "app.example.com",
        "/?echo",
        &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")],
    )
    .unwrap();
    assert!(r.body.contains("b3: 80f198ee56343ba864fe8b2a57d3eff7-"), "{}", r.body);
    for _ in 0..50 {
        assert_eq!(get(gw.http_port, "app.example.com", "/", &[]).unwrap().status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = value(&scrape(gw.admin_port), "portico_tracing_spans_total", &[("result", "dropped")]);
        if dropped >= 104.0 {
            break;
        }
        assert!(Instant::now() < deadline, "spans to a dead collector are counted as dropped ({dropped})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP server: bytes relayed both ways show up as `istio_tcp_*` series.
#[test]
fn tcp_connections_are_metered() {
    use std::io::{Read, Write};
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = backend.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in backend.incoming().take(1) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong!!").unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("tcp.yaml"),
        &format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {bport}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp: [{{route: [{{destination: {{host: db}}}}]}}]
"#
        ),
    );
    let gw = start_gateway(dir.path(), &["--access-log", "off"]);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    c.write_all(b"ping!").unwrap();
    let mut got = [0u8; 6];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong!!");
    drop(c);
    let want = [("destination_service", "db.default.svc.cluster.local")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let samples = scrape(gw.admin_port);
        if !find(&samples, "istio_tcp_connections_closed_total", &want).is_empty() {
            assert_eq!(value(&samples, "istio_tcp_connections_closed_total", &want), 1.0);
            assert_eq!(value(&samples, "istio_tcp_received_bytes_total", &want), 5.0);
            assert_eq!(value(&samples, "istio_tcp_sent_bytes_total", &want), 6.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no istio_tcp series after the connection closed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
