//! hyper clients: HTTP/1.1 keep-alive, h2c (prior knowledge), and either of them over TLS.
//! A response is read to the end: status, headers, the collected body and trailers.

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Which echo backend answered.
    pub fn backend(&self) -> String {
        self.json()["name"].as_str().unwrap_or("").to_string()
    }
    /// A header the echo backend received.
    pub fn seen(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
    /// The path (and query) the echo backend received.
    pub fn seen_path(&self) -> String {
        self.json()["path"].as_str().unwrap_or("").to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
}

pub fn req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder().method(method).uri(path).header("host", host)
}

/// Read a response to its end.
pub async fn read(resp: Response<Incoming>) -> Resp {
    try_read(resp).await.unwrap()
}

pub async fn try_read(resp: Response<Incoming>) -> Result<Resp, hyper::Error> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Resp { status: parts.status.as_u16(), headers: parts.headers, body: collected.to_bytes(), trailers })
}

/// One HTTP/1.1 keep-alive connection.
pub struct H1 {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        H1::over(TcpStream::connect(addr).await.unwrap()).await.unwrap()
    }

    /// HTTP/1.1 over any stream (a TLS one, say).
    pub async fn over<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Result<H1, hyper::Error> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(H1 { sender })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        self.try_send(req).await.unwrap()
    }

    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, hyper::Error> {
        self.sender.ready().await?;
        try_read(self.sender.send_request(req).await?).await
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        self.send(req("GET", host, path).body(Full::default()).unwrap()).await
    }
}

/// One h2c (prior knowledge) connection.
#[derive(Clone)]
pub struct H2 {
    pub sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub async fn connect(addr: SocketAddr) -> H2 {
        H2::over(TcpStream::connect(addr).await.unwrap()).await.unwrap()
    }

    /// HTTP/2 over any stream (TLS with ALPN `h2`, say).
    pub async fn over<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S) -> Result<H2, hyper::Error> {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(H2 { sender })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        let uri = format!("http://{host}{path}");
        let r = Request::builder().uri(uri).body(Full::default()).unwrap();
        read(self.sender.send_request(r).await.unwrap()).await
    }
}

/// GET over a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    H1::connect(addr).await.get(host, path).await
}

/// A TLS connection to `addr` sending `sni` (None: connect by IP, so no SNI is sent).
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    cfg: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_string()).map_err(std::io::Error::other)?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await
}
