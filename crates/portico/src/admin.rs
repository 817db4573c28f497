//! The admin server (Envoy's admin paths): readiness, the config in service, metrics, clusters,
//! listeners, the log level. Runs on the control runtime, off the data-plane threads.

use crate::run::{LogControl, SharedState};
use crate::sink::TelemetrySink;
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use portico_proxy::Proxy;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the admin handlers read.
pub struct Admin {
    pub proxy: Proxy,
    pub state: SharedState,
    pub sink: Arc<TelemetrySink>,
    pub log_control: LogControl,
}

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

/// Pool gauges are read from the proxy's pools when scraped rather than kept up to date on the
/// request path.
fn refresh_pool_gauges(admin: &Admin) {
    for c in admin.proxy.clusters() {
        if let Some(stats) = admin.sink.cluster_stats(&c.name) {
            let idle: usize = c.endpoints.iter().map(|e| e.idle_connections).sum();
            let active: usize = c.endpoints.iter().map(|e| e.active_requests).sum();
            stats.connections_active.set(i64::try_from(idle + active).unwrap_or(i64::MAX));
            stats.requests_active.set(i64::try_from(active).unwrap_or(i64::MAX));
        }
    }
}

fn prometheus(admin: &Admin) -> String {
    refresh_pool_gauges(admin);
    admin.sink.telemetry().render()
}

/// Envoy's `/stats` plain text: `name{labels}: value`, one per line, from the same registry.
fn stats_text(admin: &Admin) -> String {
    let prom = prometheus(admin);
    let mut out = String::with_capacity(prom.len());
    for line in prom.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if let Some((name, value)) = line.rsplit_once(' ') {
            let _ = writeln!(out, "{name}: {value}");
        }
    }
    out
}

/// Envoy's `/clusters` text: `cluster::endpoint::field::value`, plus the cluster's service.
fn clusters(admin: &Admin) -> String {
    let mut out = String::new();
    for c in admin.proxy.clusters() {
        let name = &c.name;
        let _ = writeln!(out, "{name}::service::{}", c.host);
        let _ = writeln!(out, "{name}::namespace::{}", c.namespace);
        let _ = writeln!(out, "{name}::version::{}", c.version.as_deref().unwrap_or("-"));
        for e in &c.endpoints {
            let a = e.addr;
            let health = if e.healthy { "healthy" } else { "/failed_outlier_check" };
            let _ = writeln!(out, "{name}::{a}::health_flags::{health}");
            let _ = writeln!(out, "{name}::{a}::rq_active::{}", e.active_requests);
            let _ = writeln!(out, "{name}::{a}::cx_idle::{}", e.idle_connections);
        }
    }
    out
}

fn listeners(admin: &Admin) -> String {
    let snapshot = admin.proxy.snapshot();
    let bound = admin.proxy.local_addrs();
    let list: Vec<serde_json::Value> = snapshot
        .listeners
        .iter()
        .map(|l| {
            let addr = bound.iter().find(|(p, _)| *p == l.port).map(|(_, a)| a.to_string());
            serde_json::json!({"port": l.port, "kind": format!("{:?}", l.kind), "address": addr})
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default()
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

fn handle(req: &Request<hyper::body::Incoming>, admin: &Admin, metrics_only: bool) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if metrics_only && !matches!(path, "/stats/prometheus" | "/metrics") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /stats/prometheus\n");
    }
    match path {
        "/healthz/ready" => {
            if admin.proxy.is_ready() {
                reply(StatusCode::OK, "text/plain", "LIVE\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "NOT READY\n")
            }
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(&admin.state)),
        "/stats/prometheus" | "/metrics" => reply(StatusCode::OK, portico_telemetry::CONTENT_TYPE, prometheus(admin)),
        "/stats" => reply(StatusCode::OK, "text/plain", stats_text(admin)),
        "/clusters" => reply(StatusCode::OK, "text/plain", clusters(admin)),
        "/listeners" => reply(StatusCode::OK, "application/json", listeners(admin)),
        "/logging" => {
            // Envoy changes levels with POST; GET is accepted too, for a quick curl.
            if !matches!(*req.method(), Method::POST | Method::GET) {
                return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use POST /logging?level=debug\n");
            }
            match query_param(req.uri().query(), "level") {
                None => {
                    reply(StatusCode::BAD_REQUEST, "text/plain", "usage: /logging?level=trace|debug|info|warn|error\n")
                }
                Some(level) => match (admin.log_control)(level) {
                    Ok(()) => {
                        tracing::warn!("log level set to {level} by /logging");
                        reply(StatusCode::OK, "text/plain", format!("log level: {level}\n"))
                    }
                    Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("bad level `{level}`: {e}\n")),
                },
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz/ready /config_dump /stats/prometheus /stats /clusters /listeners /logging\n",
        ),
    }
}

/// Bind and serve in the background on the current runtime; returns the bound address.
/// `metrics_only`: the `--metrics` address, which serves only the Prometheus endpoint.
pub async fn serve(addr: SocketAddr, admin: Arc<Admin>, metrics_only: bool) -> Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind the admin address {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = handle(&req, &admin, metrics_only);
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
