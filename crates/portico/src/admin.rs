//! The admin server (Envoy's admin paths): readiness, the config in service, metrics, clusters,
//! listeners, the log level. Runs on the control runtime, off the data-plane threads.

use crate::sink::TelemetrySink;
use crate::state::{self, LogControl, SharedState};
use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use portico_proxy::Proxy;
use portico_telemetry::BreakerResource;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the admin handlers read.
pub struct Admin {
    pub proxy: Proxy,
    pub state: SharedState,
    pub sink: Arc<TelemetrySink>,
    pub log_control: LogControl,
    /// The Kubernetes source, when `--kubernetes`: its watchers' state in metrics and `/config_dump`.
    pub kube: Option<portico_kube::KubeSource>,
}

/// Which paths an admin listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything (`--admin`).
    All,
    /// Only `/stats/prometheus` and `/metrics` (`--metrics`).
    Metrics,
    /// Only `/healthz/ready` (`--status`, Istio's status port 15021 that load balancers probe).
    Status,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn config_dump(state: &SharedState, kube: Option<&portico_kube::KubeSource>) -> String {
    let st = state::lock(state);
    let dump = serde_json::json!({
        "ready": st.source_ready,
        "sources": {
            "kubernetes": kube.map(|k| serde_json::json!({"synced": k.synced(), "watchers": k.status().snapshot()})),
        },
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
/// request path (the counters — overflows, retries, ejections — are bumped by the data plane).
fn refresh_pool_gauges(admin: &Admin) {
    let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    for c in admin.proxy.clusters() {
        if let Some(stats) = admin.sink.cluster_stats(&c.name) {
            let idle: usize = c.endpoints.iter().map(|e| e.idle_connections).sum();
            let active: usize = c.endpoints.iter().map(|e| e.active_requests).sum();
            let ejected = c.endpoints.iter().filter(|e| !e.healthy).count();
            stats.connections_active.set(i64::from(c.open_connections));
            stats.connections_idle.set(n(idle));
            stats.requests_active.set(n(active));
            stats.outlier_ejections_active.set(n(ejected));
        }
    }
}

fn prometheus(admin: &Admin) -> String {
    refresh_pool_gauges(admin);
    let mut text = admin.sink.telemetry().render();
    if let Some(k) = &admin.kube {
        text.push_str(&k.status().render());
    }
    text
}

/// Envoy's `/stats` plain text: `name{labels}: value`, one per line, from the same registry,
/// then each cluster's counters under Envoy's own stat names (`cluster.NAME.upstream_rq_retry`,
/// `…upstream_rq_pending_overflow`, `…outlier_detection.ejections_active`), the lines Istio's
/// circuit-breaking and outlier tasks grep for.
fn stats_text(admin: &Admin) -> String {
    let prom = prometheus(admin);
    let mut out = String::with_capacity(prom.len());
    for line in prom.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        if let Some((name, value)) = line.rsplit_once(' ') {
            let _ = writeln!(out, "{name}: {value}");
        }
    }
    let mut names: Vec<_> = admin.proxy.clusters().into_iter().map(|c| c.name).collect();
    names.sort_unstable();
    for name in names {
        let Some(c) = admin.sink.cluster_stats(&name) else { continue };
        let overflow = |r| c.overflows(r);
        let stats: [(&str, u64); 10] = [
            ("outlier_detection.ejections_active", u64::try_from(c.outlier_ejections_active.get()).unwrap_or(0)),
            ("outlier_detection.ejections_enforced_total", c.outlier_ejections_total.get()),
            ("upstream_cx_active", u64::try_from(c.connections_active.get()).unwrap_or(0)),
            ("upstream_cx_overflow", overflow(BreakerResource::Connections)),
            ("upstream_cx_total", c.connections_total.get()),
            ("upstream_rq_active", u64::try_from(c.requests_active.get()).unwrap_or(0)),
            // Envoy counts an HTTP/2 `maxRequests` overflow as a pending overflow too.
            ("upstream_rq_pending_overflow", overflow(BreakerResource::Pending) + overflow(BreakerResource::Requests)),
            ("upstream_rq_retry", c.retries.get()),
            ("upstream_rq_retry_overflow", overflow(BreakerResource::Retries)),
            ("upstream_rq_retry_success", c.retry_successes.get()),
        ];
        for (stat, v) in stats {
            let _ = writeln!(out, "cluster.{name}.{stat}: {v}");
        }
    }
    out
}

/// Envoy's `host_health_flags`: `healthy`, or each failing check prefixed with `/`.
fn health_flags(e: &portico_proxy::EndpointInfo) -> &'static str {
    if e.healthy {
        "healthy"
    } else {
        "/failed_outlier_check"
    }
}

/// When an ejection ends, in Unix seconds (wall clock), for an operator reading `/clusters`.
fn ejected_until(e: &portico_proxy::EndpointInfo) -> Option<f64> {
    let until = std::time::SystemTime::now() + e.ejected_for?;
    until.duration_since(std::time::UNIX_EPOCH).ok().map(|d| (d.as_millis() as f64) / 1000.0)
}

/// Envoy's `/clusters` text: `cluster::default_priority::limit::value`,
/// `cluster::endpoint::field::value` (plus the cluster's service, and Portico's outlier state).
fn clusters(admin: &Admin) -> String {
    let mut out = String::new();
    for c in admin.proxy.clusters() {
        let name = &c.name;
        let _ = writeln!(out, "{name}::service::{}", c.host);
        let _ = writeln!(out, "{name}::namespace::{}", c.namespace);
        let _ = writeln!(out, "{name}::version::{}", c.version.as_deref().unwrap_or("-"));
        let l = &c.limits;
        let _ = writeln!(out, "{name}::default_priority::max_connections::{}", l.max_connections);
        let _ = writeln!(out, "{name}::default_priority::max_pending_requests::{}", l.max_pending_requests);
        let _ = writeln!(out, "{name}::default_priority::max_requests::{}", l.max_requests);
        let _ = writeln!(out, "{name}::default_priority::max_retries::{}", l.max_retries);
        let _ = writeln!(out, "{name}::cx_active::{}", c.open_connections);
        let _ = writeln!(out, "{name}::rq_pending_active::{}", c.pending_requests);
        let _ = writeln!(out, "{name}::rq_retry_active::{}", c.active_retries);
        for e in &c.endpoints {
            let a = e.addr;
            let _ = writeln!(out, "{name}::{a}::cx_active::{}", e.open_connections);
            let _ = writeln!(out, "{name}::{a}::cx_idle::{}", e.idle_connections);
            let _ = writeln!(out, "{name}::{a}::rq_active::{}", e.active_requests);
            let _ = writeln!(out, "{name}::{a}::health_flags::{}", health_flags(e));
            let _ = writeln!(out, "{name}::{a}::weight::{}", e.weight);
            let _ = writeln!(out, "{name}::{a}::times_ejected::{}", e.times_ejected);
            match ejected_until(e) {
                Some(t) => writeln!(out, "{name}::{a}::ejected_until::{t:.3}"),
                None => writeln!(out, "{name}::{a}::ejected_until::-"),
            }
            .ok();
        }
    }
    out
}

/// `/clusters?format=json`: the shape of Envoy's `ClusterStatuses` (`cluster_statuses`,
/// `circuit_breakers.thresholds`, `host_statuses` with `stats`, `health_status`, `weight`), plus
/// an `outlier` object per host (times ejected, ejected until).
fn clusters_json(admin: &Admin) -> String {
    let stat = |name: &str, v: u64| serde_json::json!({"name": name, "value": v.to_string()});
    let statuses: Vec<serde_json::Value> = admin
        .proxy
        .clusters()
        .iter()
        .map(|c| {
            let hosts: Vec<serde_json::Value> = c
                .endpoints
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "address": {"socket_address": {"address": e.addr.ip().to_string(), "port_value": e.addr.port()}},
                        "stats": [
                            stat("cx_active", u64::from(e.open_connections)),
                            stat("cx_idle", e.idle_connections as u64),
                            stat("rq_active", e.active_requests as u64),
                        ],
                        "health_status": {
                            "eds_health_status": "HEALTHY",
                            "failed_outlier_check": !e.healthy,
                        },
                        "health_flags": health_flags(e),
                        "weight": e.weight,
                        "outlier": {
                            "times_ejected": e.times_ejected,
                            "ejected_until_unix_seconds": ejected_until(e),
                        },
                    })
                })
                .collect();
            let l = &c.limits;
            serde_json::json!({
                "name": &*c.name,
                "service": c.host,
                "namespace": c.namespace,
                "version": c.version,
                "circuit_breakers": {"thresholds": [{
                    "priority": "DEFAULT",
                    "max_connections": l.max_connections,
                    "max_pending_requests": l.max_pending_requests,
                    "max_requests": l.max_requests,
                    "max_retries": l.max_retries,
                }]},
                "stats": [
                    stat("cx_active", u64::from(c.open_connections)),
                    stat("rq_pending_active", u64::from(c.pending_requests)),
                    stat("rq_active", u64::from(c.active_requests)),
                    stat("rq_retry_active", u64::from(c.active_retries)),
                ],
                "host_statuses": hosts,
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "cluster_statuses": statuses })).unwrap_or_default()
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

fn handle(req: &Request<hyper::body::Incoming>, admin: &Admin, mode: Mode) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if mode == Mode::Metrics && !matches!(path, "/stats/prometheus" | "/metrics") {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /stats/prometheus\n");
    }
    if mode == Mode::Status && path != "/healthz/ready" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found: try /healthz/ready\n");
    }
    match path {
        "/healthz/ready" => {
            // Ready only once every source has delivered its first full view (the Kubernetes
            // watchers listed once) and that config is in service.
            let source_ready = state::lock(&admin.state).source_ready;
            if admin.proxy.is_ready() && source_ready {
                reply(StatusCode::OK, "text/plain", "LIVE\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "NOT READY\n")
            }
        }
        "/config_dump" => reply(StatusCode::OK, "application/json", config_dump(&admin.state, admin.kube.as_ref())),
        "/stats/prometheus" | "/metrics" => reply(StatusCode::OK, portico_telemetry::CONTENT_TYPE, prometheus(admin)),
        "/stats" => reply(StatusCode::OK, "text/plain", stats_text(admin)),
        "/clusters" => match query_param(req.uri().query(), "format") {
            Some("json") => reply(StatusCode::OK, "application/json", clusters_json(admin)),
            _ => reply(StatusCode::OK, "text/plain", clusters(admin)),
        },
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
/// `mode`: which paths this address serves.
pub async fn serve(addr: SocketAddr, admin: Arc<Admin>, mode: Mode) -> Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot bind the admin address {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let resp = handle(&req, &admin, mode);
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
