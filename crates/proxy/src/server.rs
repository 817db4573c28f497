//! Request handling: route a request from the snapshot and answer it (forward, redirect, direct
//! response, or a local error with its response flag).

use crate::body::{ProxyBody, UpstreamBody};
use crate::headers;
use crate::listener::{until, ConnInfo, Phase};
use crate::log::{RequestLog, RequestRecord};
use crate::path;
use crate::routing::{self, RequestHeaders};
use crate::state::Shared;
use crate::upstream::ActiveRequest;
use crate::ResponseFlags;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portico_model::matcher::RequestView;
use portico_model::snapshot::{Redirect, RouteAction, UpstreamProtocol};
use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The hyper service of one downstream connection.
#[derive(Clone)]
pub(crate) struct ProxyService {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
}

impl ProxyService {
    pub(crate) fn new(shared: Arc<Shared>, conn: Arc<ConnInfo>) -> ProxyService {
        ProxyService { shared, conn }
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let conn = self.conn.clone();
        Box::pin(async move { Ok(handle(&shared, &conn, req).await) })
    }
}

const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
const UPSTREAM_TIMEOUT: &str = "upstream request timeout";

/// `https_redirect` of a virtual host.
fn https_redirect() -> Redirect {
    Redirect {
        uri: None,
        authority: None,
        port: None,
        port_from_request: false,
        scheme: Some("https".into()),
        code: 301,
    }
}

async fn handle(shared: &Shared, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    // The one snapshot load of this request; it stays in use until the request is done.
    let state = shared.state.load_full();
    let (mut parts, body) = req.into_parts();

    // `:authority` (HTTP/2, or an absolute-form HTTP/1 target) else `Host`.
    let authority_value = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let record = RequestRecord {
        start_time: SystemTime::now(),
        duration: Duration::ZERO,
        downstream_remote: conn.peer,
        downstream_local: conn.local,
        gateway_port: conn.gateway_port,
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        authority: authority_value.clone(),
        protocol: parts.version,
        status: 0,
        flags: ResponseFlags::empty(),
        details: "",
        route: None,
        upstream_cluster: None,
        upstream_host: None,
        upstream_service_time: None,
        request_id: None,
        x_forwarded_for: None,
        grpc_status: None,
        bytes_received: 0,
        bytes_sent: 0,
        user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        grpc: crate::body::is_grpc(&parts.headers),
        trace: shared.opts.tracer.as_ref().and_then(|t| t.start(&parts.headers)).map(Box::new),
    };
    let mut log = RequestLog::new(shared.sink.clone(), started, record);

    let authority = match authority_value.as_ref().and_then(|v| std::str::from_utf8(v.as_bytes()).ok()) {
        Some(a) if !a.is_empty() => a,
        _ => return local_reply(StatusCode::BAD_REQUEST, "missing host header", NONE, "missing_host_header", log),
    };
    // CONNECT needs a connect matcher, which Istio HTTP routes do not have.
    if parts.method == Method::CONNECT {
        return local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found", log);
    }
    let Some(vhost) = state.route_table(conn.gateway_port).and_then(|t| t.find(authority)) else {
        return local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found", log);
    };
    let raw_path = parts.uri.path();
    let Ok(norm_path) = path::normalize(raw_path, shared.opts.merge_slashes) else {
        return local_reply(StatusCode::BAD_REQUEST, "", NONE, "path_normalization_failed", log);
    };
    let query = parts.uri.query();
    if vhost.https_redirect {
        let location =
            routing::redirect_location(&https_redirect(), "http", authority, &norm_path, query, conn.gateway_port);
        return redirect_reply(StatusCode::MOVED_PERMANENTLY, &location, None, log);
    }

    // Match with borrowed views of the request (kept in this block: they are not `Send`).
    let (route, match_index) = {
        let full_path = parts.uri.path_and_query().map_or(raw_path, PathAndQuery::as_str);
        let lookup = RequestHeaders::new(&parts.headers, authority, parts.method.as_str(), full_path);
        let view = RequestView {
            method: parts.method.as_str(),
            scheme: "http",
            authority,
            path: &norm_path,
            query,
            port: conn.gateway_port,
            headers: &lookup,
        };
        let Some(route) = vhost.select(&view).cloned() else {
            return local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found", log);
        };
        let match_index = if route.rewrite.is_some() { route.matching_index(&view) } else { None };
        (route, match_index)
    };

    log.record.route = Some(route.clone());
    let wc = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            log.record.status = *status;
            log.record.details = "direct_response";
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = text_reply(status, Bytes::from_owner(body.clone()), log);
            headers::apply_ops(resp.headers_mut(), &route.headers.response);
            return resp;
        }
        RouteAction::Redirect(r) => {
            let location = routing::redirect_location(r, "http", authority, &norm_path, query, conn.gateway_port);
            let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            return redirect_reply(status, &location, Some(&route.headers.response), log);
        }
        RouteAction::Forward(wc) => wc,
    };

    // The forwarded path: normalized, then rewritten; `None` keeps the request's own.
    let rewritten = routing::rewrite_path(&route, match_index, &norm_path);
    let new_path_and_query = match (rewritten, norm_path) {
        (None, Cow::Borrowed(_)) => None,
        (Some(p), _) | (None, Cow::Owned(p)) => {
            let pq = match query {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            match PathAndQuery::try_from(pq) {
                Ok(pq) => Some(pq),
                Err(_) => return local_reply(StatusCode::BAD_REQUEST, "", NONE, "invalid_path", log),
            }
        }
    };

    let Some(dest) = wc.pick(shared.rng.below(wc.total_weight)) else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            ResponseFlags::NO_CLUSTER_FOUND,
            "cluster_not_found",
            log,
        );
    };
    log.record.upstream_cluster = Some(dest.cluster.clone());
    let Some(pool) = state.upstreams.get(&dest.cluster) else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            ResponseFlags::NO_CLUSTER_FOUND,
            "cluster_not_found",
            log,
        );
    };
    let Some(endpoint) = pool.pick(&shared.rng).await else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            NO_HEALTHY_UPSTREAM,
            ResponseFlags::NO_HEALTHY_UPSTREAM,
            "no_healthy_upstream",
            log,
        );
    };
    log.record.upstream_host = Some(endpoint.addr);
    log.active = Some(ActiveRequest::new(endpoint.clone()));
    let cluster = &pool.def;
    let h2_upstream = cluster.protocol == UpstreamProtocol::Http2;

    // HTTP/1.1 upgrades (WebSocket) go to HTTP/1.1 upstreams; an HTTP/2 upstream gets the request
    // without the upgrade (hop-by-hop headers are dropped) and answers it as a plain request.
    let upgrade =
        if !h2_upstream && parts.version == Version::HTTP_11 { headers::upgrade_of(&parts.headers) } else { None };
    let client_upgrade = if upgrade.is_some() { parts.extensions.remove::<OnUpgrade>() } else { None };
    let request_id = headers::prepare_request(&mut parts.headers, conn.peer.ip(), upgrade.as_ref(), &shared.rng);
    log.record.request_id = Some(request_id);
    headers::apply_ops(&mut parts.headers, &dest.headers.request);
    headers::apply_ops(&mut parts.headers, &route.headers.request);
    log.record.x_forwarded_for = parts.headers.get("x-forwarded-for").cloned();

    let upstream_authority = match route.rewrite.as_ref().and_then(|r| r.authority.as_deref()) {
        Some(a) => match HeaderValue::from_str(a) {
            Ok(v) => v,
            Err(_) => {
                return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "", NONE, "invalid_authority_rewrite", log)
            }
        },
        None => match authority_value {
            Some(v) => v,
            None => return local_reply(StatusCode::BAD_REQUEST, "", NONE, "missing_host_header", log),
        },
    };
    let path_and_query = new_path_and_query
        .or_else(|| parts.uri.path_and_query().cloned())
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if h2_upstream {
        parts.headers.remove(header::HOST);
        let uri = Uri::builder()
            .scheme("http")
            .authority(upstream_authority.as_bytes())
            .path_and_query(path_and_query)
            .build();
        parts.uri = match uri {
            Ok(u) => u,
            Err(_) => return local_reply(StatusCode::BAD_REQUEST, "invalid authority", NONE, "invalid_authority", log),
        };
        parts.version = Version::HTTP_2;
    } else {
        parts.headers.insert(header::HOST, upstream_authority);
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
    }
    parts.extensions = http::Extensions::new();
    let received = Arc::new(AtomicU64::new(0));
    log.received = Some(received.clone());
    // One client span per upstream try (a retry loop calls this per try, `end_try` on a failed one).
    if let (Some(tracer), Some(trace)) = (&shared.opts.tracer, log.record.trace.as_deref_mut()) {
        tracer.start_try(trace, &mut parts.headers, Some(endpoint.addr));
    }
    let upstream_req = Request::from_parts(parts, UpstreamBody::new(body, received));

    let sent = endpoint.send(cluster, upstream_req, upgrade.is_some());
    let result = match route.timeout.filter(|t| !t.is_zero()) {
        // TODO(timeouts): Envoy's route timeout also covers the response body; this one ends at
        // the response headers.
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(r) => r,
            Err(_) => {
                return local_reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    UPSTREAM_TIMEOUT,
                    ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                    "upstream_response_timeout",
                    log,
                )
            }
        },
        None => sent.await,
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(upstream = %endpoint.addr, error = %e, "upstream request failed");
            return local_reply(StatusCode::SERVICE_UNAVAILABLE, e.body(), e.flag(), e.details(), log);
        }
    };
    log.record.upstream_service_time = Some(started.elapsed());

    let (mut rp, rbody) = resp.into_parts();
    let upgraded = rp.status == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded {
        match (client_upgrade, rp.extensions.remove::<OnUpgrade>()) {
            (Some(client), Some(upstream)) => spawn_tunnel(client, upstream, conn.phase.clone()),
            _ => {
                return local_reply(
                    StatusCode::BAD_GATEWAY,
                    "upstream switched protocols without an upgrade request",
                    NONE,
                    "unexpected_upgrade",
                    log,
                )
            }
        }
    }
    headers::prepare_response(&mut rp.headers, upgraded);
    headers::apply_ops(&mut rp.headers, &dest.headers.response);
    headers::apply_ops(&mut rp.headers, &route.headers.response);
    rp.version = Version::HTTP_11;
    rp.extensions = http::Extensions::new();
    log.record.status = rp.status.as_u16();
    log.record.details = "via_upstream";
    if let Some(status) = crate::body::grpc_status(&rp.headers) {
        log.record.grpc_status = Some(status);
    }
    Response::from_parts(rp, ProxyBody::upstream(rbody, log))
}

/// Splice the two upgraded streams until either side closes or the drain times out.
fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, mut phase: tokio::sync::watch::Receiver<Phase>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            _ = until(&mut phase, Phase::Closed) => {}
        }
    });
}

fn text_reply(status: StatusCode, body: Bytes, log: Box<RequestLog>) -> Response<ProxyBody> {
    let has_body = !body.is_empty();
    let mut resp = Response::new(ProxyBody::full(body, Some(log)));
    *resp.status_mut() = status;
    if has_body {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    resp
}

const NONE: ResponseFlags = ResponseFlags::NONE;

/// A response generated here (Envoy's local reply).
fn local_reply(
    status: StatusCode,
    body: &'static str,
    flags: ResponseFlags,
    details: &'static str,
    mut log: Box<RequestLog>,
) -> Response<ProxyBody> {
    log.flag(flags);
    log.record.details = details;
    log.record.status = status.as_u16();
    text_reply(status, Bytes::from_static(body.as_bytes()), log)
}

fn redirect_reply(
    status: StatusCode,
    location: &str,
    ops: Option<&portico_model::snapshot::HeaderOps>,
    mut log: Box<RequestLog>,
) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "", NONE, "invalid_redirect_location", log);
    };
    log.record.status = status.as_u16();
    log.record.details = "redirect";
    let mut resp = text_reply(status, Bytes::new(), log);
    resp.headers_mut().insert(header::LOCATION, location);
    if let Some(ops) = ops {
        headers::apply_ops(resp.headers_mut(), ops);
    }
    resp
}
