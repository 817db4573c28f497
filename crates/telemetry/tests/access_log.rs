#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Access-log lines (text and JSON, HTTP and TCP) for fixed records, dropped-line counting with a
//! full buffer, and `off`.

use http::{HeaderValue, Method, Uri, Version};
use portico_telemetry::{
    AccessLog, AccessLogFormat, Counter, DestinationLabels, MetricsConfig, RequestRecord, ResponseFlags, TcpRecord,
    Telemetry, TelemetryConfig,
};
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// A `Write` the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }
}

fn with_format(format: AccessLogFormat) -> (Telemetry, Sink) {
    let sink = Sink::default();
    let config = TelemetryConfig { access_log: format, metrics: MetricsConfig::default(), ..Default::default() };
    let t = Telemetry::with_writer(config, Box::new(sink.clone())).unwrap_or_else(|e| panic!("{e}"));
    (t, sink)
}

fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// 2024-01-02T03:04:05.678Z
fn start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_164_645_678)
}

fn header(v: &'static str) -> Option<HeaderValue> {
    Some(HeaderValue::from_static(v))
}

fn http_record() -> RequestRecord {
    RequestRecord {
        start_time: start(),
        duration: Duration::from_micros(12_900),
        method: Method::GET,
        uri: Uri::from_static("/productpage?u=normal"),
        protocol: Version::HTTP_11,
        status: 200,
        flags: ResponseFlags::NONE,
        details: "via_upstream",
        bytes_received: 0,
        bytes_sent: 5293,
        upstream_service_time: Some(Duration::from_millis(11)),
        x_forwarded_for: header("10.0.0.9"),
        user_agent: header("curl/8.5.0"),
        request_id: header("7f3b2c1e-2d4a-4b8e-9f00-1a2b3c4d5e6f"),
        authority: header("bookinfo.example.com"),
        upstream_host: Some(addr("10.1.2.3:9080")),
        upstream_cluster: Some("outbound|9080|v1|productpage.default.svc.cluster.local".into()),
        upstream_local: Some(addr("10.0.0.5:43210")),
        downstream_local: addr("10.0.0.5:8080"),
        downstream_remote: addr("10.0.0.9:55000"),
        route_name: Some("bookinfo".into()),
        ..Default::default()
    }
}

fn nr_record() -> RequestRecord {
    RequestRecord {
        start_time: start(),
        duration: Duration::ZERO,
        method: Method::POST,
        uri: Uri::from_static("/nope"),
        protocol: Version::HTTP_2,
        status: 404,
        flags: ResponseFlags::NO_ROUTE_FOUND,
        details: "route_not_found",
        authority: header("unknown.example.com"),
        downstream_local: addr("[::1]:8443"),
        downstream_remote: addr("[::1]:60000"),
        sni: Some("unknown.example.com".into()),
        ..Default::default()
    }
}

fn tcp_record() -> TcpRecord {
    TcpRecord {
        start_time: start(),
        duration: Duration::from_millis(1190),
        flags: ResponseFlags::NONE,
        bytes_received: 7,
        bytes_sent: 14,
        upstream_host: Some(addr("10.244.0.24:9000")),
        upstream_cluster: Some("outbound|9000||tcp-echo.default.svc.cluster.local".into()),
        upstream_local: Some(addr("10.244.0.22:49220")),
        downstream_local: addr("10.104.80.2:9000"),
        downstream_remote: addr("10.244.0.22:49218"),
        ..Default::default()
    }
}

fn lines(t: &Telemetry, sink: &Sink) -> Vec<String> {
    assert!(t.access_log().flush(Duration::from_secs(10)), "flush timed out");
    sink.text().lines().map(str::to_string).collect()
}

#[test]
fn text_lines_are_istios_default_format() {
    let (t, sink) = with_format(AccessLogFormat::Text);
    t.record_request(&http_record(), None);
    t.record_request(&nr_record(), None);
    t.record_request(
        &RequestRecord {
            status: 503,
            flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
            details: "upstream_reset_before_response_started{connection_failure}",
            upstream_transport_failure_reason: Some("TLS error: certificate expired".into()),
            upstream_service_time: None,
            bytes_sent: 91,
            ..http_record()
        },
        None,
    );
    t.record_tcp(&tcp_record(), None, None);
    t.record_tcp(
        &TcpRecord {
            flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            upstream_local: None,
            bytes_sent: 0,
            duration: Duration::from_millis(3),
            sni: Some("db.example.com".into()),
            route_name: Some("tls-passthrough".into()),
            ..tcp_record()
        },
        None,
        None,
    );
    let got = lines(&t, &sink);
    let want = [
        r#"[2024-01-02T03:04:05.678Z] "GET /productpage?u=normal HTTP/1.1" 200 - via_upstream - "-" 0 5293 12 11 "10.0.0.9" "curl/8.5.0" "7f3b2c1e-2d4a-4b8e-9f00-1a2b3c4d5e6f" "bookinfo.example.com" "10.1.2.3:9080" outbound|9080|v1|productpage.default.svc.cluster.local 10.0.0.5:43210 10.0.0.5:8080 10.0.0.9:55000 - bookinfo"#,
        r#"[2024-01-02T03:04:05.678Z] "POST /nope HTTP/2" 404 NR route_not_found - "-" 0 0 0 - "-" "-" "-" "unknown.example.com" "-" - - [::1]:8443 [::1]:60000 unknown.example.com -"#,
        r#"[2024-01-02T03:04:05.678Z] "GET /productpage?u=normal HTTP/1.1" 503 UF,URX upstream_reset_before_response_started{connection_failure} - "TLS error: certificate expired" 0 91 12 - "10.0.0.9" "curl/8.5.0" "7f3b2c1e-2d4a-4b8e-9f00-1a2b3c4d5e6f" "bookinfo.example.com" "10.1.2.3:9080" outbound|9080|v1|productpage.default.svc.cluster.local 10.0.0.5:43210 10.0.0.5:8080 10.0.0.9:55000 - bookinfo"#,
        r#"[2024-01-02T03:04:05.678Z] "- - -" 0 - - - "-" 7 14 1190 - "-" "-" "-" "-" "10.244.0.24:9000" outbound|9000||tcp-echo.default.svc.cluster.local 10.244.0.22:49220 10.104.80.2:9000 10.244.0.22:49218 - -"#,
        r#"[2024-01-02T03:04:05.678Z] "- - -" 0 UF - - "-" 7 0 3 - "-" "-" "-" "-" "10.244.0.24:9000" outbound|9000||tcp-echo.default.svc.cluster.local - 10.104.80.2:9000 10.244.0.22:49218 db.example.com tls-passthrough"#,
    ];
    assert_eq!(got, want);
    // Every line ends with exactly one newline.
    assert!(sink.text().ends_with("tls-passthrough\n"));
}

#[test]
fn json_lines_use_istios_keys() {
    let (t, sink) = with_format(AccessLogFormat::Json);
    t.record_request(
        &RequestRecord { user_agent: header("quote\" back\\slash\ttab"), grpc: true, ..http_record() },
        None,
    );
    t.record_request(&nr_record(), None);
    t.record_tcp(&tcp_record(), None, None);
    let got = lines(&t, &sink);
    assert_eq!(got.len(), 3);
    let want_http = concat!(
        r#"{"start_time":"2024-01-02T03:04:05.678Z","route_name":"bookinfo","method":"GET","path":"/productpage?u=normal","#,
        r#""protocol":"HTTP/1.1","response_code":200,"response_flags":"-","response_code_details":"via_upstream","#,
        r#""connection_termination_details":null,"bytes_received":0,"bytes_sent":5293,"duration":12,"#,
        r#""upstream_service_time":"11","x_forwarded_for":"10.0.0.9","user_agent":"quote\" back\\slash\ttab","#,
        r#""request_id":"7f3b2c1e-2d4a-4b8e-9f00-1a2b3c4d5e6f","authority":"bookinfo.example.com","#,
        r#""upstream_host":"10.1.2.3:9080","upstream_cluster":"outbound|9080|v1|productpage.default.svc.cluster.local","#,
        r#""upstream_local_address":"10.0.0.5:43210","downstream_local_address":"10.0.0.5:8080","#,
        r#""downstream_remote_address":"10.0.0.9:55000","requested_server_name":null,"upstream_transport_failure_reason":null}"#
    );
    assert_eq!(got[0], want_http);
    let want_tcp = concat!(
        r#"{"start_time":"2024-01-02T03:04:05.678Z","route_name":null,"method":null,"path":null,"protocol":null,"#,
        r#""response_code":0,"response_flags":"-","response_code_details":null,"connection_termination_details":null,"#,
        r#""bytes_received":7,"bytes_sent":14,"duration":1190,"upstream_service_time":null,"x_forwarded_for":null,"#,
        r#""user_agent":null,"request_id":null,"authority":null,"upstream_host":"10.244.0.24:9000","#,
        r#""upstream_cluster":"outbound|9000||tcp-echo.default.svc.cluster.local","upstream_local_address":"10.244.0.22:49220","#,
        r#""downstream_local_address":"10.104.80.2:9000","downstream_remote_address":"10.244.0.22:49218","#,
        r#""requested_server_name":null,"upstream_transport_failure_reason":null}"#
    );
    assert_eq!(got[2], want_tcp);

    // Every line is one JSON object with exactly Istio's 24 keys.
    let istio_keys = [
        "start_time",
        "route_name",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "response_code_details",
        "connection_termination_details",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_service_time",
        "x_forwarded_for",
        "user_agent",
        "request_id",
        "authority",
        "upstream_host",
        "upstream_cluster",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "requested_server_name",
        "upstream_transport_failure_reason",
    ];
    let mut want_keys: Vec<&str> = istio_keys.to_vec();
    want_keys.sort();
    for line in &got {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, want_keys);
    }
    let nr: serde_json::Value = serde_json::from_str(&got[1]).unwrap_or_default();
    assert_eq!(nr["response_flags"], "NR");
    assert_eq!(nr["response_code"], 404);
    assert_eq!(nr["protocol"], "HTTP/2");
    assert_eq!(nr["downstream_local_address"], "[::1]:8443");
    assert!(nr["upstream_host"].is_null() && nr["user_agent"].is_null());
    let http: serde_json::Value = serde_json::from_str(&got[0]).unwrap_or_default();
    assert_eq!(http["user_agent"], "quote\" back\\slash\ttab");
}

/// A writer that signals when a write starts and then waits to be released.
struct Gate {
    entered: mpsc::SyncSender<()>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    inner: Sink,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.entered.try_send(());
        let _ = self.release.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(Duration::from_secs(10));
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_buffer_drops_and_counts_lines() {
    let (entered_tx, entered_rx) = mpsc::sync_channel(16);
    let (release_tx, release_rx) = mpsc::channel();
    let sink = Sink::default();
    let gate = Gate { entered: entered_tx, release: Arc::new(Mutex::new(release_rx)), inner: sink.clone() };
    let t = Telemetry::with_writer(
        TelemetryConfig { access_log: AccessLogFormat::Text, access_log_capacity: 2, ..Default::default() },
        Box::new(gate),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The first line is taken by the writer thread, which then blocks in `write`.
    t.record_request(&http_record(), None);
    entered_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("writer never wrote: {e}"));
    // The channel (capacity 2) is empty now: two lines fit, the next five are dropped, and
    // recording never blocks.
    let before = std::time::Instant::now();
    for _ in 0..7 {
        t.record_request(&nr_record(), None);
    }
    assert!(before.elapsed() < Duration::from_secs(5));
    assert_eq!(t.metrics().gateway().access_log_dropped.get(), 5);
    assert!(t.render().contains("\nportico_access_log_dropped_total 5\n"));

    for _ in 0..10 {
        let _ = release_tx.send(());
    }
    assert!(t.access_log().flush(Duration::from_secs(10)));
    let text = sink.text();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(text.lines().filter(|l| l.contains(" 404 NR ")).count(), 2);
}

#[test]
fn failed_writes_count_as_dropped() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let dropped = Counter::new();
    let log =
        AccessLog::new(AccessLogFormat::Json, Box::new(Broken), 16, dropped.clone()).unwrap_or_else(|e| panic!("{e}"));
    log.log_request(&http_record());
    log.log_tcp(&tcp_record());
    assert!(log.flush(Duration::from_secs(10)));
    assert_eq!(dropped.get(), 2);
}

#[test]
fn off_writes_nothing() {
    let (t, sink) = with_format(AccessLogFormat::Off);
    assert_eq!(t.access_log().format(), AccessLogFormat::Off);
    let d = t.metrics().destination(DestinationLabels::service("a.b.svc.cluster.local", "a", "b"));
    t.record_request(&http_record(), Some(&d));
    t.record_tcp(&tcp_record(), None, None);
    assert!(t.access_log().flush(Duration::from_secs(1)));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sink.text(), "");
    // Metrics still count.
    assert_eq!(t.metrics().series_count(), (1, 1));
    assert_eq!(t.metrics().gateway().access_log_dropped.get(), 0);
}

#[test]
fn formats_parse_from_flags() {
    assert_eq!("text".parse::<AccessLogFormat>(), Ok(AccessLogFormat::Text));
    assert_eq!("json".parse::<AccessLogFormat>(), Ok(AccessLogFormat::Json));
    assert_eq!("off".parse::<AccessLogFormat>(), Ok(AccessLogFormat::Off));
    assert!("yaml".parse::<AccessLogFormat>().is_err());
    assert_eq!(AccessLogFormat::Json.to_string(), "json");
}

#[test]
fn dropping_the_last_handle_writes_out_the_buffer() {
    let (t, sink) = with_format(AccessLogFormat::Text);
    for _ in 0..100 {
        t.record_request(&http_record(), None);
    }
    drop(t);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sink.text().lines().count() < 100 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sink.text().lines().count(), 100);
}
