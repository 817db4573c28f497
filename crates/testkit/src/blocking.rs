//! One request per connection from synchronous tests (the binary's tests): hyper's HTTP/1.1
//! client on a private current-thread runtime, `Connection: close`, the body read to its end
//! and decoded (chunked or not) by hyper.

use crate::client::{tls_connect, H1, H2};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// A response as text: status, headers in order (names as hyper gives them, lowercase), body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn from(r: crate::client::Resp) -> Resp {
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Resp { status: r.status, headers, body: String::from_utf8_lossy(&r.body).into_owned() }
    }
}

/// Run `f` to completion on a fresh runtime (on its own thread when called inside a runtime).
fn block_on<T: Send>(f: impl Future<Output = T> + Send) -> T {
    let run = move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f);
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join().unwrap())
    } else {
        run()
    }
}

fn request_of(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Request<Full<Bytes>>> {
    let mut b = crate::client::req(method, host, path).header("connection", "close");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// One HTTP/1.1 request to 127.0.0.1:`port` on a new connection (10 s at most).
pub fn request(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let req = request_of(method, host, path, headers, body)?;
    block_on(async move {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let mut c = H1::over(tcp).await.map_err(io_err)?;
            c.try_send(req).await.map_err(io_err)
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(r) => r.map(Resp::from),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response within 10 s")),
        }
    })
}

/// `GET path` with `Host: host` and `headers`.
pub fn get(port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Resp> {
    request(port, "GET", host, path, headers, b"")
}

/// One TLS connection with `sni`, one HTTP/1.1 GET (`Host: sni`); `Err` if the handshake or the
/// exchange fails (the server refused us).
pub fn https_get(port: u16, sni: &str, path: &str, cfg: rustls::ClientConfig) -> Result<Resp, String> {
    let req = request_of("GET", sni, path, &[], b"").map_err(|e| e.to_string())?;
    block_on(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = tls_connect(addr, Some(sni), cfg).await.map_err(|e| format!("handshake: {e}"))?;
        let mut c = H1::over(s).await.map_err(|e| format!("h1: {e}"))?;
        // TLS 1.3: a refused client certificate is only seen here, after the client's Finished.
        c.try_send(req).await.map(Resp::from).map_err(|e| format!("request: {e}"))
    })
}

/// One h2c (prior knowledge) GET to 127.0.0.1:`port` on a new connection (10 s at most).
pub fn h2c_get(port: u16, host: &str, path: &str) -> std::io::Result<Resp> {
    let req = crate::client::req("GET", host, path).body(Full::default()).map_err(io_err)?;
    block_on(async move {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let mut c = H2::over(tcp).await.map_err(io_err)?;
            let resp = c.sender.send_request(req).await.map_err(io_err)?;
            crate::client::try_read(resp).await.map_err(io_err)
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(r) => r.map(Resp::from),
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response within 10 s")),
        }
    })
}
