//! Hostile input and overload against the real binary: `--max-connections`, request smuggling
//! over a raw socket, SIGTERM drain (HTTP/2 GOAWAY, TCP sessions closed at the drain timeout).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

fn config(echo: u16, tcp_backend: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - {{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}
  - {{port: {{number: 90, name: tcp, protocol: TCP}}, hosts: ["*"]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: a, namespace: default}}
spec:
  hosts: [a.backend]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: t, namespace: default}}
spec:
  hosts: [t.backend]
  resolution: STATIC
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {tcp_backend}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: a.backend}}}}]}}]
  tcp: [{{match: [{{port: 90}}], route: [{{destination: {{host: t.backend, port: {{number: 9000}}}}}}]}}]
"#
    )
}

/// A TCP echo backend (one thread per connection), alive for the test.
fn tcp_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn setup(extra: &[&str]) -> (Gateway, u16, Proc, tempfile::TempDir) {
    let echo_port = free_port();
    let echo = echo_backend(echo_port, "a");
    let tcp_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(echo_port, tcp_echo()));
    let mut args = vec!["--port-map".to_string(), format!("90={tcp_port}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = start_gateway(Path::new(dir.path()), &args);
    wait_port(tcp_port);
    (gw, tcp_port, echo, dir)
}

/// Send `bytes`, read until the gateway closes (bounded): what came back, and whether it closed.
fn exchange(port: u16, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[test]
fn smuggling_gets_400_and_a_closed_connection_from_the_binary() {
    let (gw, _, _echo, _dir) = setup(&[]);
    for payload in [
        &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET http://evil.example/ HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        let (resp, closed) = exchange(gw.http_port, payload);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp:?}");
        assert!(closed, "left open: {:?}", String::from_utf8_lossy(payload));
    }
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(20_000));
    assert!(exchange(gw.http_port, long.as_bytes()).0.starts_with("HTTP/1.1 414 "));
    let r = get(gw.http_port, "h", "/", &[]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn max_connections_refuses_new_connections_and_counts_them() {
    let (gw, _, _echo, _dir) = setup(&["--max-connections", "2"]);
    // Two connections held open (keep-alive, one request answered on each). The probes that
    // waited for the port may still hold their slots for a moment: a refused try is retried.
    let mut held = Vec::new();
    let mut refused_while_settling = 0.0;
    while held.len() < 2 {
        let mut s = TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            refused_while_settling += 1.0;
            assert!(refused_while_settling < 50.0, "the first two connections were never accepted");
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    for _ in 0..3 {
        let (resp, closed) = exchange(gw.http_port, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(resp.is_empty() && closed, "{resp:?}");
    }
    let samples = scrape(gw.admin_port);
    assert_eq!(value(&samples, "portico_downstream_connections_overflow_total", &[]), 3.0 + refused_while_settling);
    // Freed slots are served again.
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if get(gw.http_port, "h", "/", &[]).is_ok_and(|r| r.status == 200) {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok);
}

/// Read HTTP/2 frames until GOAWAY (its error code) or the connection ends.
fn wait_goaway(s: &mut TcpStream) -> Option<u32> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 {
                return Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn sigterm_sends_goaway_closes_tcp_sessions_at_the_drain_timeout_and_exits_0() {
    let (mut gw, tcp_port, _echo, _dir) = setup(&["--drain-timeout", "1s"]);
    // An h2c connection (prior knowledge) with its SETTINGS exchanged.
    let mut h2 = TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
    let mut first = [0u8; 9];
    h2.read_exact(&mut first).unwrap();
    assert_eq!(first[3], 0x4, "server SETTINGS first");
    let mut payload = vec![0u8; (usize::from(first[0]) << 16) | (usize::from(first[1]) << 8) | usize::from(first[2])];
    h2.read_exact(&mut payload).unwrap();
    // A TCP session through the TCP port, working.
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    tcp.write_all(b"ping").unwrap();
    let mut four = [0u8; 4];
    tcp.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");

    gw.proc.sigterm();
    assert_eq!(wait_goaway(&mut h2), Some(0), "graceful GOAWAY (NO_ERROR)");
    // The TCP session lasts until the drain timeout, then is closed.
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let ended = match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(ended, "TCP session not closed by the drain");
    let status = gw.proc.wait_exit(Duration::from_secs(10)).expect("exits after the drain");
    assert!(status.success(), "{status:?}");
}

/// Requests the guard refuses below hyper are logged and counted like any other: one access-log
/// line each with its code and `DPE`, and `istio_requests_total` by code and flag.
#[test]
fn refused_requests_get_an_access_log_line_and_count_in_istio_requests_total() {
    let echo_port = free_port();
    let _echo = echo_backend(echo_port, "a");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(echo_port, tcp_echo()));
    let tcp_port = free_port();
    let (gw, lines) = start_gateway_piped(dir.path(), &["--port-map", &format!("90={tcp_port}")]);

    let smuggle = b"POST /s HTTP/1.1\r\nHost: h\r\nUser-Agent: attacker\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (resp, closed) = exchange(gw.http_port, smuggle);
    assert!(resp.starts_with("HTTP/1.1 400 ") && closed, "{resp:?}");
    assert!(exchange(gw.http_port, b"GET / HTTP/1.1\nHost: h\n\n").0.starts_with("HTTP/1.1 400 "));
    let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(20_000));
    assert!(exchange(gw.http_port, long.as_bytes()).0.starts_with("HTTP/1.1 414 "));
    let big = format!("GET / HTTP/1.1\r\nHost: h\r\nx: {}\r\n\r\n", "b".repeat(70_000));
    assert!(exchange(gw.http_port, big.as_bytes()).0.starts_with("HTTP/1.1 431 "));
    assert_eq!(get(gw.http_port, "h", "/", &[]).unwrap().status, 200);

    let log = wait_lines(&lines, 5, |l| l.starts_with('['));
    let has = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(has(r#""POST /s HTTP/1.1" 400 DPE http1.codec_error"#), 1, "{log:#?}");
    assert_eq!(has(r#""attacker" "#), 1, "{log:#?}");
    assert_eq!(has(r#""GET / HTTP/1.1" 400 DPE http1.codec_error"#), 1, "{log:#?}");
    assert_eq!(has(r#" 414 DPE http1.uri_too_long"#), 1, "{log:#?}");
    assert_eq!(has(r#" 431 DPE http1.headers_too_large"#), 1, "{log:#?}");
    assert_eq!(has(r#""GET / HTTP/1.1" 200 - via_upstream"#), 1, "{log:#?}");

    let s = scrape(gw.admin_port);
    let count = |code: &str| {
        value(&s, "istio_requests_total", &[("reporter", "source"), ("response_code", code), ("response_flags", "DPE")])
    };
    assert_eq!(count("400"), 2.0);
    assert_eq!(count("414"), 1.0);
    assert_eq!(count("431"), 1.0);
}

/// An HTTP/2 request refused by the handler's limits is logged and counted like HTTP/1's: its
/// access-log line with `414 DPE http2.uri_too_long`, and `istio_requests_total` by code and flag.
#[test]
fn an_h2_uri_too_long_is_logged_and_counted_like_http1() {
    let echo_port = free_port();
    let _echo = echo_backend(echo_port, "a");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("app.yaml"), &config(echo_port, tcp_echo()));
    let tcp_port = free_port();
    let (gw, lines) =
        start_gateway_piped(dir.path(), &["--port-map", &format!("90={tcp_port}"), "--max-uri-length", "100"]);
    let long = format!("/{}", "a".repeat(200));
    assert_eq!(portico_testkit::blocking::h2c_get(gw.http_port, "h", &long).unwrap().status, 414);
    let log = wait_lines(&lines, 1, |l| l.starts_with('['));
    assert_eq!(log.iter().filter(|l| l.contains(r#" HTTP/2" 414 DPE http2.uri_too_long"#)).count(), 1, "{log:#?}");
    let s = scrape(gw.admin_port);
    let code = [("reporter", "source"), ("response_code", "414"), ("response_flags", "DPE")];
    assert_eq!(value(&s, "istio_requests_total", &code), 1.0);
}
