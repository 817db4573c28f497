//! A tiny HTTP backend for the quick start and the benchmarks: answers every request with its
//! name (and, with `?echo`, the request it saw; gRPC requests get the `grpc-status` asked for in
//! `x-echo-grpc-status`; with `?delay_ms=N`, after N ms). HTTP/1.1 and h2c
//! on one port.
//!
//! `portico-echo --listen 127.0.0.1:19080 --name reviews-v1`

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

async fn handle(name: Arc<str>, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // gRPC (`content-type: application/grpc`): a trailers-only answer with the status the client
    // asks for in `x-echo-grpc-status` (default 0, OK), as a gRPC server reports an error.
    let grpc = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let status = req.headers().get("x-echo-grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string();
        let _ = req.into_body().collect().await;
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/grpc"));
        if let Ok(v) = status.parse() {
            resp.headers_mut().insert("grpc-status", v);
        }
        resp.headers_mut().insert("grpc-message", hyper::header::HeaderValue::from_static("echo"));
        if let Ok(v) = name.parse() {
            resp.headers_mut().insert("x-backend", v);
        }
        return Ok(resp);
    }
    let query = req.uri().query().unwrap_or("");
    let wants_echo = query.split('&').any(|p| p == "echo");
    // `?delay_ms=N`: answer slowly (drain and timeout demos).
    if let Some(ms) = query.split('&').find_map(|p| p.strip_prefix("delay_ms=")).and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let body = if wants_echo {
        let mut s = format!("{name}\n{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            let _ = writeln!(s, "{k}: {}", v.to_str().unwrap_or("<binary>"));
        }
        let len = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
        let _ = writeln!(s, "body: {len} bytes");
        Bytes::from(s)
    } else {
        Bytes::from(format!("{name}\n"))
    };
    let mut resp = Response::new(Full::new(body));
    if let Ok(v) = name.parse() {
        resp.headers_mut().insert("x-backend", v);
    }
    Ok(resp)
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:8000".into());
    let name: Arc<str> = Arc::from(arg(&args, "--name").unwrap_or_else(|| "echo".into()));
    let workers = arg(&args, "--workers").and_then(|w| w.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("portico-echo {name} listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let name = name.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(name.clone(), req));
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
