//! The admin server: readiness, the config in service, metrics.

use crate::run::SharedState;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use portico_proxy::Proxy;
use std::net::SocketAddr;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn config_dump(state: &SharedState) -> String {
    let st = state.lock().unwrap_or_else(|e| e.into_inner());
    let dump = serde_json::json!({
        "generation": st.generation,
        "last_reload_ok": st.last_reload_ok,
        "last_reload_error": st.last_reload_error,
        "last_good_unix_seconds": st.last_good_unix,
        "files_serving_last_good_version": st.kept_last_good,
        "diagnostics": st.diagnostics.iter().map(|d| serde_json::json!({
            "text": d.to_string(),
            "file": &*d.location.file,
            "line": d.location.line,
            "column": d.location.col,
            "severity": d.severity,
            "code": d.code,
            "resource": d.resource,
            "message": d.message,
        })).collect::<Vec<_>>(),
        "snapshot": st.snapshot.as_deref(),
    });
    serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn handle(req: &Request<hyper::body::Incoming>, proxy: &Proxy, state: &SharedState) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz/ready" => {
            if proxy.is_ready() {
                reply(StatusCode::OK, "text/plain", "LIVE\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "NOT READY\n")
            }
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(state)),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /healthz/ready or /config_dump\n"),
    }
}

/// Bind and serve in the background on the current runtime; returns the bound address.
pub async fn serve(addr: SocketAddr, proxy: Proxy, state: SharedState) -> Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind the admin address {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let proxy = proxy.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = handle(&req, &proxy, &state);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}
