//! Request handling: route a request from the snapshot and answer it (forward, redirect, direct
//! response, or a local error with its response flag).

use crate::body::{ProxyBody, UpstreamBody};
use crate::headers;
use crate::listener::{until, ConnInfo, Phase};
use crate::log::{RequestLog, RequestRecord};
use crate::mirror::{self, MirrorBody};
use crate::path;
use crate::routing::{self, RequestHeaders};
use crate::state::Shared;
use crate::state::State;
use crate::upstream::breaker::Resource;
use crate::upstream::hash;
use crate::varsubst::{Vars, VarsBase};
use crate::ResponseFlags;
use crate::{cors, fault, retry};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portico_model::matcher::RequestView;
use portico_model::snapshot::{Redirect, Route, RouteAction, UpstreamProtocol};
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
        Box::pin(async move {
            let mut resp = handle(&shared, &conn, req).await;
            // Envoy overwrites `server` on every response with Istio's name for it (its default
            // `server_header_transformation: OVERWRITE`), after the route's header rules.
            resp.headers_mut().insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
            Ok(resp)
        })
    }
}

/// What an Istio gateway answers as: clients and checks written against one keep working.
const SERVER_NAME: &str = "istio-envoy";
const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
const OVERFLOW: &str = "upstream connect error or disconnect/reset before headers. reset reason: overflow";
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
    let request_id = headers::ensure_request_id(&mut parts.headers, &shared.rng);
    let trace = shared.opts.tracer.as_ref().and_then(|t| t.start(&mut parts.headers)).map(Box::new);
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
        upstream_local: None,
        sni: conn.tls.as_ref().and_then(|t| t.sni.clone()),
        upstream_service_time: None,
        request_id: Some(request_id),
        x_forwarded_for: None,
        grpc_status: None,
        bytes_received: 0,
        bytes_sent: 0,
        user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        grpc: crate::body::is_grpc(&parts.headers),
        trace,
    };
    let log_start = record.start_time;
    let downstream_version = record.protocol;
    let mut log = RequestLog::new(shared.sink.clone(), started, record);

    let authority = match authority_value.as_ref().and_then(|v| std::str::from_utf8(v.as_bytes()).ok()) {
        Some(a) if !a.is_empty() => a,
        _ => return local_reply(StatusCode::BAD_REQUEST, "missing host header", NONE, "missing_host_header", log),
    };
    // CONNECT needs a connect matcher, which Istio HTTP routes do not have.
    if parts.method == Method::CONNECT {
        return local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found", log);
    }
    let Some(vhost) = state.route_table_for(conn).and_then(|t| t.find(authority)) else {
        return local_reply(StatusCode::NOT_FOUND, "", ResponseFlags::NO_ROUTE_FOUND, "route_not_found", log);
    };
    let raw_path = parts.uri.path();
    let Ok(norm_path) = path::normalize(raw_path, shared.opts.merge_slashes) else {
        return local_reply(StatusCode::BAD_REQUEST, "", NONE, "path_normalization_failed", log);
    };
    let query = parts.uri.query();
    let scheme = conn.scheme();
    if vhost.https_redirect {
        let location =
            routing::redirect_location(&https_redirect(), scheme, authority, &norm_path, query, conn.gateway_port);
        return redirect_reply(StatusCode::MOVED_PERMANENTLY, &location, None, log);
    }

    // Match with borrowed views of the request (kept in this block: they are not `Send`).
    let (route, match_index) = {
        let full_path = parts.uri.path_and_query().map_or(raw_path, PathAndQuery::as_str);
        let lookup = RequestHeaders::new(&parts.headers, authority, parts.method.as_str(), full_path);
        let view = RequestView {
            method: parts.method.as_str(),
            scheme,
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
    // Istio's filter order: CORS, then fault injection, then the router.
    let cors_headers = match route.cors.as_ref().map(|c| cors::check(c, &parts.method, &parts.headers)) {
        Some(cors::Verdict::Preflight(h)) => return preflight_reply(h, log),
        Some(cors::Verdict::Actual(h)) => Some(h),
        _ => None,
    };
    if let Some(f) = &route.fault {
        let (delayed, abort) = fault::apply(f, &shared.rng).await;
        if delayed {
            log.flag(ResponseFlags::DELAY_INJECTED);
        }
        match abort {
            Some(fault::Abort::Http(code)) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return local_reply(
                    status,
                    "fault filter abort",
                    ResponseFlags::FAULT_INJECTED,
                    "fault_filter_abort",
                    log,
                );
            }
            Some(fault::Abort::Grpc(code)) => return grpc_abort_reply(code, log),
            None => {}
        }
    }
    // `%VAR%` values of header rules (start time, addresses, protocol of the downstream request).
    let vars = VarsBase { peer: conn.peer, local: conn.local, start: log_start, protocol: downstream_version };
    let wc = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            log.record.status = *status;
            log.record.details = "direct_response";
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = text_reply(status, Bytes::from_owner(body.clone()), log);
            headers::apply_ops(resp.headers_mut(), &route.headers.response, &vars.with(Some(&parts.headers), None));
            return resp;
        }
        RouteAction::Redirect(r) => {
            let location = routing::redirect_location(r, scheme, authority, &norm_path, query, conn.gateway_port);
            let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let ops = Some((&route.headers.response, &vars.with(Some(&parts.headers), None)));
            return redirect_reply(status, &location, ops, log);
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
    let (hash, set_cookie) = hash::request_key(&pool.def.lb, &parts, conn.peer, &shared.rng);
    let Some(endpoint) = pool.pick(&shared.rng, hash, &[]).await else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            NO_HEALTHY_UPSTREAM,
            ResponseFlags::NO_HEALTHY_UPSTREAM,
            "no_healthy_upstream",
            log,
        );
    };
    // `http2MaxRequests`: active requests to the cluster.
    let Some(slot) = pool.breaker.try_acquire(Resource::Request, &pool.def.limits) else {
        return local_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            OVERFLOW,
            ResponseFlags::UPSTREAM_OVERFLOW,
            "upstream_reset_before_response_started{overflow}",
            log,
        );
    };
    log.record.upstream_host = Some(endpoint.addr);
    let cluster = &pool.def;
    // `useClientProtocol`: the downstream request's version decides, else the cluster's.
    let h2_upstream = crate::upstream::request_protocol(cluster, parts.version) == UpstreamProtocol::Http2;

    // HTTP/1.1 upgrades (WebSocket) go to HTTP/1.1 upstreams; an HTTP/2 upstream gets the request
    // without the upgrade (hop-by-hop headers are dropped) and answers it as a plain request.
    let upgrade =
        if !h2_upstream && parts.version == Version::HTTP_11 { headers::upgrade_of(&parts.headers) } else { None };
    let client_upgrade = if upgrade.is_some() { parts.extensions.remove::<OnUpgrade>() } else { None };
    headers::prepare_request(&mut parts.headers, conn.peer.ip(), upgrade.as_ref());
    crate::tls::downstream_headers(&mut parts.headers, conn);
    {
        // `%REQ(…)%` reads the request as it came in (before these rules).
        let needs = dest.headers.request.uses_request() || route.headers.request.uses_request();
        let before = needs.then(|| parts.headers.clone());
        let v = vars.with(before.as_ref(), Some(endpoint.addr));
        headers::apply_ops(&mut parts.headers, &dest.headers.request, &v);
        headers::apply_ops(&mut parts.headers, &route.headers.request, &v);
    }
    // Response rules reading the request need a copy: the request goes upstream.
    let request_for_response =
        (dest.headers.response.uses_request() || route.headers.response.uses_request()).then(|| parts.headers.clone());
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
    let retrying = retry::may_retry(&route.retry, upgrade.is_some());
    // Upgrades (WebSocket) are not mirrored: a shadow cannot take part in the tunnel.
    let mirrors = if upgrade.is_some() { Vec::new() } else { pick_mirrors(&route, &state, &shared.rng) };
    let (leftover_tx, leftover_rx) = if retrying {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let has_body = !body.is_end_stream();
    let (mirror_tx, mirror_rx) = if !mirrors.is_empty() && has_body {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let upstream_body = if retrying || mirror_tx.is_some() {
        UpstreamBody::capturing(body, received.clone(), leftover_tx, mirror_tx)
    } else {
        UpstreamBody::new(body, received.clone())
    };
    if !mirrors.is_empty() {
        spawn_mirrors(mirrors, &parts, has_body, mirror_rx, route.timeout, &shared.rng);
    }
    let timeout = match (route.timeout.filter(|t| !t.is_zero()), retry::grpc_timeout(&parts.headers)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Envoy's router tells the upstream how long it will wait: the per-try timeout when there
    // is one, else the request's.
    let per_try = route.retry.per_try_timeout.filter(|t| !t.is_zero());
    if let Some(expected) = per_try.map(|p| timeout.map_or(p, |t| p.min(t))).or(timeout) {
        let ms = u64::try_from(expected.as_millis()).unwrap_or(u64::MAX);
        parts.headers.insert("x-envoy-expected-rq-timeout-ms", HeaderValue::from(ms));
    }
    let attempts = retry::Attempts {
        pool,
        policy: &route.retry,
        rng: &shared.rng,
        hash,
        upgrade: upgrade.is_some(),
        received,
        parts,
        slot: Some(slot),
        // A client span per try.
        trace: shared.opts.tracer.as_ref().zip(log.record.trace.as_deref_mut()),
    };
    // The route timeout covers all tries and the response body (Envoy's global route timeout).
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let sent = attempts.run(endpoint, upstream_body, leftover_rx);
    let done = match deadline {
        Some(at) => match tokio::time::timeout_at(at, sent).await {
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
    log.record.upstream_host = Some(done.endpoint.addr);
    log.active = Some(done.active);
    log.flag(done.flags);
    let resp = match done.result {
        Ok(r) => r,
        Err(f) => return local_reply(f.status, f.body, f.flags, f.details, log),
    };
    let service_time = started.elapsed();
    log.record.upstream_service_time = Some(service_time);
    log.record.upstream_local = done.upstream_local;

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
    // Envoy's router adds it (Istio does not suppress Envoy's headers); route rules may remove it.
    let service_ms = u64::try_from(service_time.as_millis()).unwrap_or(u64::MAX);
    rp.headers.insert("x-envoy-upstream-service-time", HeaderValue::from(service_ms));
    let v = vars.with(request_for_response.as_ref(), log.record.upstream_host);
    headers::apply_ops(&mut rp.headers, &dest.headers.response, &v);
    headers::apply_ops(&mut rp.headers, &route.headers.response, &v);
    if let Some(h) = cors_headers {
        rp.headers.extend(h);
    }
    if let Some(c) = set_cookie {
        rp.headers.append(header::SET_COOKIE, c);
    }
    rp.version = Version::HTTP_11;
    rp.extensions = http::Extensions::new();
    log.record.status = rp.status.as_u16();
    log.record.details = "via_upstream";
    if let Some(status) = crate::body::grpc_status(&rp.headers) {
        log.record.grpc_status = Some(status);
    }
    Response::from_parts(rp, ProxyBody::upstream(rbody, log, deadline))
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

/// A response generated here (Envoy's local reply). A gRPC caller gets it as gRPC, as Envoy
/// sends it: HTTP 200, trailers-only, the HTTP status mapped to a `grpc-status` and the text in
/// `grpc-message`.
fn local_reply(
    status: StatusCode,
    body: &'static str,
    flags: ResponseFlags,
    details: &'static str,
    mut log: Box<RequestLog>,
) -> Response<ProxyBody> {
    log.flag(flags);
    log.record.details = details;
    if log.record.grpc {
        return grpc_local_reply(grpc_status_for(status), body, log);
    }
    log.record.status = status.as_u16();
    text_reply(status, Bytes::from_static(body.as_bytes()), log)
}

/// Envoy's HTTP → gRPC status mapping for local replies (and gRPC's own for HTTP errors).
fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// A trailers-only gRPC answer generated here.
fn grpc_local_reply(code: u32, message: &str, mut log: Box<RequestLog>) -> Response<ProxyBody> {
    log.record.status = 200;
    log.record.grpc_status = Some(code);
    let mut resp = text_reply(StatusCode::OK, Bytes::new(), log);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&grpc_percent_encode(message)) {
            h.insert("grpc-message", v);
        }
    }
    resp
}

/// `grpc-message` is percent-encoded outside printable ASCII (and `%` itself).
fn grpc_percent_encode(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

fn redirect_reply(
    status: StatusCode,
    location: &str,
    ops: Option<(&portico_model::snapshot::HeaderOps, &Vars<'_>)>,
    mut log: Box<RequestLog>,
) -> Response<ProxyBody> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return local_reply(StatusCode::INTERNAL_SERVER_ERROR, "", NONE, "invalid_redirect_location", log);
    };
    log.record.status = status.as_u16();
    log.record.details = "redirect";
    let mut resp = text_reply(status, Bytes::new(), log);
    resp.headers_mut().insert(header::LOCATION, location);
    if let Some((ops, vars)) = ops {
        headers::apply_ops(resp.headers_mut(), ops, vars);
    }
    resp
}

/// A CORS preflight answered here (Envoy's CORS filter: 200, the CORS headers, no body).
fn preflight_reply(h: http::HeaderMap, mut log: Box<RequestLog>) -> Response<ProxyBody> {
    log.record.status = 200;
    log.record.details = "cors_response";
    let mut resp = text_reply(StatusCode::OK, Bytes::new(), log);
    resp.headers_mut().extend(h);
    resp
}

/// A gRPC fault abort: HTTP 200, trailers-only `grpc-status` (as Envoy's fault filter).
fn grpc_abort_reply(code: u32, mut log: Box<RequestLog>) -> Response<ProxyBody> {
    log.flag(ResponseFlags::FAULT_INJECTED);
    log.record.details = "fault_filter_abort";
    grpc_local_reply(code, "fault filter abort", log)
}

/// The mirrors this request goes to (each rolls its own percentage), with their pools.
fn pick_mirrors(route: &Route, state: &State, rng: &crate::rng::FastRng) -> Vec<Arc<crate::upstream::ClusterPool>> {
    if route.mirrors.is_empty() {
        return Vec::new();
    }
    route
        .mirrors
        .iter()
        .filter(|m| fault::roll(rng, m.percentage))
        .filter_map(|m| state.upstreams.get(&m.cluster).cloned())
        .collect()
}

/// Fire the mirrors: a copy of the forwarded request (after rewrites and header rules), its
/// authority suffixed `-shadow`. They never hold up this request.
fn spawn_mirrors(
    pools: Vec<Arc<crate::upstream::ClusterPool>>,
    parts: &http::request::Parts,
    has_body: bool,
    body: Option<tokio::sync::oneshot::Receiver<(Bytes, Option<http::HeaderMap>)>>,
    timeout: Option<Duration>,
    rng: &crate::rng::FastRng,
) {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or(""),
    };
    let Some(shadow) = mirror::shadow_authority(authority) else { return };
    // One body copy: it goes to the first mirror; further mirrors of a request with a body
    // are sent only when it had none (a rare configuration; documented limitation).
    let mut body = body;
    for pool in pools {
        let b = match body.take() {
            Some(rx) => MirrorBody::Pending(rx),
            None if has_body => continue,
            None => MirrorBody::Empty,
        };
        let req = mirror::Mirrored {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            authority: shadow.clone(),
        };
        mirror::spawn(pool, crate::rng::FastRng::new(Some(rng.next_u64())), req, b, timeout);
    }
}
