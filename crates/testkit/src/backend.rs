//! An HTTP/1.1 + h2c echo backend on 127.0.0.1 that answers with what it received.

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// An HTTP/1.1 + h2c echo server. The response body is JSON: its name, and the method, path,
/// version, headers and body it received. Request headers steer it:
/// `x-delay-ms` (sleep first), `x-status` (response status), `x-trailer` (send it as a trailer).
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    /// Connections that have ended.
    pub closed: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// Requests whose handler was dropped before it finished (the proxy went away).
    pub cancelled: Arc<AtomicUsize>,
}

struct CancelGuard(Arc<AtomicUsize>, bool);
impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let b = Backend {
        addr,
        name: name.to_string(),
        connections: Arc::new(AtomicUsize::new(0)),
        closed: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        cancelled: Arc::new(AtomicUsize::new(0)),
    };
    let (name, conns, reqs, cancelled, closed) =
        (b.name.clone(), b.connections.clone(), b.requests.clone(), b.cancelled.clone(), b.closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let (name, reqs, cancelled, closed) = (name.clone(), reqs.clone(), cancelled.clone(), closed.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, reqs, cancelled) = (name.clone(), reqs.clone(), cancelled.clone());
                    async move {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let mut guard = CancelGuard(cancelled, false);
                        let resp = echo(&name, req).await;
                        guard.1 = true;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    b
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn echo(name: &str, req: Request<Incoming>) -> Response<EchoBody> {
    let (parts, body) = req.into_parts();
    if let Some(ms) = parts.headers.get("x-delay-ms").and_then(|v| v.to_str().ok()?.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let (body, req_trailers) = match body.collect().await {
        Ok(c) => {
            let t = c.trailers().map(|t| {
                t.iter()
                    .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(v.to_str().unwrap_or("").into())))
                    .collect::<serde_json::Map<_, _>>()
            });
            (c.to_bytes(), t)
        }
        Err(_) => (Bytes::new(), None),
    };
    let mut headers = serde_json::Map::new();
    for k in parts.headers.keys() {
        let v: Vec<String> =
            parts.headers.get_all(k).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        headers.insert(k.as_str().to_string(), serde_json::Value::String(v.join(", ")));
    }
    let json = serde_json::json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "trailers": req_trailers,
    });
    let status = parts.headers.get("x-status").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(200u16);
    let data = Bytes::from(json.to_string());
    let body: EchoBody = match parts.headers.get("x-trailer") {
        Some(t) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-trailer", t.clone());
            let frames =
                vec![Ok::<_, Infallible>(hyper::body::Frame::data(data)), Ok(hyper::body::Frame::trailers(trailers))];
            BodyExt::boxed(http_body_util::StreamBody::new(futures_util::stream::iter(frames)))
        }
        None => BodyExt::boxed(Full::new(data)),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("x-backend", name.parse().unwrap());
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut().insert("server", "echo-backend".parse().unwrap());
    resp
}
