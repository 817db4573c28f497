//! Request handling, in named phases:
//!
//! 1. **begin** — the request's record (its lifetime guard), `x-request-id`, the trace context;
//! 2. **route** — authority, virtual host, path normalization, `httpsRedirect`, route match;
//! 3. **filters** — in Istio's filter order: CORS, fault injection, then the route's own answer
//!    (direct response, redirect);
//! 4. **forward** — rewrite, destination and endpoint, circuit breaker, request headers,
//!    mirrors, timeouts, the tries (`retry`);
//! 5. **respond** — upgrade splice, response headers, the body streamed back under the route
//!    timeout.
//!
//! A phase stops the request with a [`Stop`]: a failure ([`LocalReply`], so `?` works) or an
//! answer made here ([`LocalAnswer`]). [`serve_http`] runs the phases for every connection,
//! plain or TLS, HTTP/1 or h2.

use crate::body::{ProxyBody, UpstreamBody};
use crate::downstream::{drive_until, until, Answered, ConnInfo, Phase};
use crate::guard::{Guarded, H2Limits};
use crate::headers;
use crate::io::IntoSocket;
use crate::log::{RequestGuard, RequestRecord};
use crate::mirror;
use crate::park::IdleSocket;
use crate::path;
use crate::reply::{LocalAnswer, LocalReply};
use crate::routing::{self, RequestHeaders};
use crate::state::{Shared, State};
use crate::upstream::breaker::Resource;
use crate::upstream::hash;
use crate::varsubst::VarsBase;
use crate::ResponseFlags;
use crate::{cors, fault, retry};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use portico_model::matcher::RequestView;
use portico_model::snapshot::{HeaderOps, Redirect, Route, RouteAction, UpstreamProtocol, WeightedDestination};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Serve HTTP on an accepted connection (plain or TLS-terminated): h2 when the client speaks it
/// (ALPN or the h2c preface), else HTTP/1.1 with upgrades; drained with the listener. A plaintext
/// HTTP/1 connection that goes idle comes back as its bare socket, for the parking lot.
pub(crate) async fn serve_http<I>(
    io: I,
    h2: bool,
    info: Arc<ConnInfo>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Option<IdleSocket>
where
    I: AsyncRead + AsyncWrite + IntoSocket + Unpin + Send + 'static,
{
    let svc = ProxyService { shared: shared.clone(), conn: info, h1: !h2 };
    // Head checks, flood limits and idle timeouts below hyper (crate::guard), for both.
    if h2 {
        // Built in a block: a local moved away still keeps its space in this future while its
        // scope spans an await.
        let (mut conn, stop) = {
            let (io, stop) = Guarded::http2(io, H2Limits::default(), shared.timeouts(), true);
            let streams = crate::streams::StreamExec::default();
            let conn = shared.h2(streams.clone()).serve_connection(TokioIo::new(io), svc);
            (Box::pin(crate::streams::WithStreams::new(conn, streams)), stop)
        };
        Box::pin(drive_until(conn.as_mut(), &mut phase, Some(&stop))).await;
        return None;
    }
    let refusals = crate::refused::Refusals::new(shared.sink.clone(), svc.conn.clone());
    // Boxed (and built in a block, see above): the guard moves between hyper and the parked
    // wait, and each place it passes through would otherwise keep its own copy in this future.
    let (mut io, stop) = {
        let (guarded, stop) = Guarded::http1(io, shared.h1_limits(), shared.timeouts(), refusals, svc.conn.clone());
        (Box::new(guarded), stop)
    };
    loop {
        // Boxed, and the box freed in this block, so that a parked connection holds none of
        // hyper's state.
        let parts = {
            let mut conn = Box::new(shared.h1.serve_connection(TokioIo::new(io), svc.clone()).with_upgrades());
            Box::pin(drive_until(Pin::new(&mut *conn), &mut phase, Some(&stop))).await;
            conn.into_parts()
        };
        // Upgraded (a tunnel now) or closed: done. Parked by the guard (idle between requests):
        // hyper and its buffers go, the connection waits for the client's next bytes on its own
        // and then gets a fresh hyper connection.
        let hyper::server::conn::http1::Parts { io: hyper_io, read_buf, .. } = parts?;
        let mut guarded = hyper_io.into_inner();
        if !guarded.parked() {
            return None;
        }
        guarded.unread(&read_buf);
        // Let go of hyper's read buffer now, not when this iteration ends (after the wait).
        drop(read_buf);
        // A bare socket waits in the parking lot, without this task.
        if guarded.stream().is_some_and(IntoSocket::is_bare) && shared.lot.is_open() {
            match guarded.into_idle() {
                Ok((stream, deadline)) => {
                    return stream
                        .into_socket()
                        .map_err(|e| tracing::debug!(error = %e, "idle connection closed: cannot leave the runtime"))
                        .ok()
                        .map(|socket| IdleSocket { socket, deadline });
                }
                Err(back) => guarded = back,
            }
        }
        tracing::trace!(peer = %svc.conn.peer, "idle connection parked");
        let counted = ParkedCount::new(&shared);
        let woke = tokio::select! {
            // Boxed: only this wait's timer is kept while parked, not the space of every state.
            woke = Box::pin(guarded.wait_parked()) => woke,
            () = until(&mut phase, Phase::Draining) => false,
        };
        drop(counted);
        if !woke {
            return None;
        }
        io = guarded;
    }
}

/// Counts a connection in [`Shared::parked`] while it lives.
struct ParkedCount<'a>(&'a Shared);

impl<'a> ParkedCount<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.parked.fetch_add(1, Ordering::Relaxed);
        ParkedCount(shared)
    }
}

impl Drop for ParkedCount<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hyper service of one downstream connection.
#[derive(Clone)]
pub(crate) struct ProxyService {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    /// HTTP/1: requests are counted in and out so the connection can park when idle.
    h1: bool,
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let conn = self.conn.clone();
        let h1 = self.h1;
        if h1 {
            conn.requests.begin();
        }
        boxed_in_place(move || async move {
            let mut resp = handle(&shared, &conn, req).await;
            // Envoy overwrites `server` on every response with Istio's name for it (its default
            // `server_header_transformation: OVERWRITE`), after the route's header rules.
            resp.headers_mut().insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
            if h1 {
                resp.body_mut().set_answered(Answered(conn));
            }
            Ok(resp)
        })
    }
}

/// Box the future `make` returns, allocated before it is made so that it can be built in its
/// box rather than on the stack and then copied there (a request's future is 7 KB).
fn boxed_in_place<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let room = Box::<F>::new_uninit();
    Box::into_pin(Box::write(room, make()))
}

/// What an Istio gateway answers as: clients and checks written against one keep working.
const SERVER_NAME: &str = "istio-envoy";

/// Why a request stops before an upstream response.
enum Stop {
    Reply(LocalReply),
    /// Boxed: a rare path, and it keeps `Result<_, Stop>` small.
    Answer(Box<LocalAnswer>),
}

impl Stop {
    fn into_response(self, log: Box<RequestGuard>) -> Response<ProxyBody> {
        match self {
            Stop::Reply(r) => r.into_response(log),
            Stop::Answer(a) => a.into_response(log),
        }
    }
}

impl From<LocalReply> for Stop {
    fn from(r: LocalReply) -> Stop {
        Stop::Reply(r)
    }
}

/// What routing decided.
struct Routed {
    route: Arc<Route>,
    /// Which of the route's matches matched (only needed for prefix rewrites).
    match_index: Option<usize>,
    /// `:authority` or `Host`, as the client sent it (not empty, UTF-8).
    authority: HeaderValue,
    /// The normalized path, when normalization changed it.
    normalized: Option<String>,
}

impl Routed {
    fn authority(&self) -> &str {
        std::str::from_utf8(self.authority.as_bytes()).unwrap_or_default()
    }

    fn path<'a>(&'a self, uri: &'a Uri) -> &'a str {
        self.normalized.as_deref().unwrap_or_else(|| uri.path())
    }
}

/// The upstream's answer and what the respond phase needs to finish it.
struct Forwarded {
    resp: Response<crate::body::Received>,
    route: Arc<Route>,
    /// Index of the destination in the route's weighted clusters (its response header rules).
    destination: usize,
    /// The request's headers as received, when a response rule reads them (`%REQ(…)%`).
    request_for_response: Option<HeaderMap>,
    cors: Option<HeaderMap>,
    set_cookie: Option<HeaderValue>,
    client_upgrade: Option<OnUpgrade>,
    deadline: Option<tokio::time::Instant>,
    service_time: Duration,
}

async fn handle(shared: &Shared, conn: &ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = crate::clock::now();
    // The one snapshot load of this request; it stays in use until the request is done.
    let state = shared.state.load_full();
    let (mut parts, body) = req.into_parts();
    // Counted before `begin` adds headers of its own.
    let refused = protocol_limits(shared, &parts);
    let mut log = begin(shared, conn, &mut parts, started);
    if let Some(r) = refused {
        if r == LocalReply::H2UriTooLong {
            // Not repeated in full in the log (as for HTTP/1).
            log.record.uri = Uri::from_static("/");
        }
        return r.into_response(log);
    }
    let vars =
        VarsBase { peer: conn.peer, local: conn.local, start: log.record.start_time, protocol: log.record.protocol };
    // The phases in sequence, not in an inner `async` block: its future was built and then
    // moved into this one's state.
    let mut routed = match route(shared, conn, &state, &parts, log.record.authority.clone()) {
        Ok(r) => r,
        Err(stop) => return stop.into_response(log),
    };
    log.record.route_name = routed.route.name.clone();
    let cors = match filters(shared, conn, &routed, &parts, &mut log, vars).await {
        Ok(c) => c,
        Err(stop) => return stop.into_response(log),
    };
    // The head and the routing decision are lent, not moved: an async fn's arguments are kept
    // twice in its future (as taken, and as its locals) and copied from one to the other.
    match forward(shared, conn, &state, &mut routed, &mut parts, body, cors, vars, &mut log, started).await {
        Ok(f) => respond(f, conn, vars, log),
        Err(stop) => stop.into_response(log),
    }
}

/// What the connection manager refuses before routing. HTTP/1.0 unless accepted (Envoy checks
/// it once the codec took the head, so malformed 1.0 heads still get their 400 below hyper).
/// HTTP/1 heads are checked below hyper (crate::guard); an HTTP/2 request reaches us decoded by
/// h2, which bounds only the header list's size: the URI length and header count limits are
/// checked here, and the request answered without going upstream.
fn protocol_limits(shared: &Shared, parts: &http::request::Parts) -> Option<LocalReply> {
    if parts.version == Version::HTTP_10 && !shared.opts.accept_http10 {
        return Some(LocalReply::Http10NotAccepted);
    }
    if parts.version != Version::HTTP_2 {
        return None;
    }
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > shared.opts.max_uri_length {
        return Some(LocalReply::H2UriTooLong);
    }
    (parts.headers.len() > shared.opts.max_request_headers).then_some(LocalReply::H2TooManyHeaders)
}

/// Phase 1: the request's record, its `x-request-id` (taken now, so local replies are logged and
/// traced with one) and its trace.
fn begin(
    shared: &Shared,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    started: tokio::time::Instant,
) -> Box<RequestGuard> {
    // `:authority` (HTTP/2, or an absolute-form HTTP/1 target) else `Host`.
    let authority = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let request_id = headers::ensure_request_id(&mut parts.headers, &conn.client, &shared.rng);
    let details = shared.record_details;
    let trace = shared.opts.tracer.as_ref().and_then(|t| t.start(&mut parts.headers)).map(Box::new);
    let record = RequestRecord {
        start_time: SystemTime::now(),
        downstream_remote: conn.peer,
        downstream_local: conn.local,
        gateway_port: conn.gateway_port,
        method: parts.method.clone(),
        uri: if details { parts.uri.clone() } else { Uri::default() },
        authority,
        protocol: parts.version,
        sni: conn.tls.as_ref().and_then(|t| t.sni.clone()),
        request_id: details.then_some(request_id),
        user_agent: details.then(|| parts.headers.get(header::USER_AGENT).cloned()).flatten(),
        grpc: crate::body::is_grpc(&parts.headers),
        trace,
        ..RequestRecord::default()
    };
    RequestGuard::new(shared.sink.clone(), started, record)
}

/// Phase 2: the virtual host by authority, the normalized path, `httpsRedirect`, the route.
fn route(
    shared: &Shared,
    conn: &ConnInfo,
    state: &State,
    parts: &http::request::Parts,
    authority: Option<HeaderValue>,
) -> Result<Routed, Stop> {
    let authority = authority.filter(|v| !v.is_empty()).ok_or(LocalReply::MissingHost)?;
    let host = std::str::from_utf8(authority.as_bytes()).map_err(|_| LocalReply::MissingHost)?;
    // CONNECT needs a connect matcher, which Istio HTTP routes do not have.
    if parts.method == Method::CONNECT {
        return Err(LocalReply::NoRoute.into());
    }
    let vhost = state.route_table_for(conn).and_then(|t| t.find(host)).ok_or(LocalReply::NoRoute)?;
    let raw_path = parts.uri.path();
    let norm_path =
        path::normalize(raw_path, shared.opts.path_normalization).map_err(|_| LocalReply::PathNormalizationFailed)?;
    let query = parts.uri.query();
    let scheme = conn.scheme();
    if vhost.https_redirect {
        let location =
            routing::redirect_location(&https_redirect(), scheme, host, &norm_path, query, conn.gateway_port);
        let answer = redirect_answer(StatusCode::MOVED_PERMANENTLY, &location, None)?;
        return Err(Stop::Answer(Box::new(answer)));
    }
    let full_path = parts.uri.path_and_query().map_or(raw_path, PathAndQuery::as_str);
    let lookup = RequestHeaders::new(&parts.headers, host, parts.method.as_str(), full_path);
    let view = RequestView {
        method: parts.method.as_str(),
        scheme,
        authority: host,
        path: &norm_path,
        query,
        port: conn.gateway_port,
        headers: &lookup,
    };
    let route = vhost.select(&view).cloned().ok_or(LocalReply::NoRoute)?;
    let match_index = if route.rewrite.is_some() { route.matching_index(&view) } else { None };
    let normalized = match norm_path {
        std::borrow::Cow::Owned(p) => Some(p),
        std::borrow::Cow::Borrowed(_) => None,
    };
    Ok(Routed { route, match_index, authority, normalized })
}

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

/// Phase 3: Istio's filter order — CORS, then fault injection, then the route's own answer.
/// Returns the CORS headers for the response of a request that goes on upstream.
async fn filters(
    shared: &Shared,
    conn: &ConnInfo,
    routed: &Routed,
    parts: &http::request::Parts,
    log: &mut RequestGuard,
    vars: VarsBase,
) -> Result<Option<HeaderMap>, Stop> {
    let route = &routed.route;
    let cors_headers = match route.cors.as_ref().map(|c| cors::check(c, &parts.method, &parts.headers)) {
        Some(cors::Verdict::Preflight(h)) => {
            let answer =
                LocalAnswer { status: StatusCode::OK, details: "cors_response", body: Bytes::new(), headers: h };
            return Err(Stop::Answer(Box::new(answer)));
        }
        Some(cors::Verdict::Actual(h)) => Some(h),
        _ => None,
    };
    if let Some(f) = &route.fault {
        let (delayed, abort) = fault::apply(f, &shared.rng).await;
        if delayed {
            log.flag(ResponseFlags::DELAY_INJECTED);
        }
        match abort {
            Some(fault::Abort::Http(code)) => return Err(LocalReply::FaultAbort(code).into()),
            Some(fault::Abort::Grpc(code)) => return Err(LocalReply::GrpcFaultAbort(code).into()),
            None => {}
        }
    }
    let ops = &route.headers.response;
    let v = vars.with(Some(&parts.headers), None);
    match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let mut headers = HeaderMap::new();
            if !body.is_empty() {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            headers::apply_ops(&mut headers, ops, &v);
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = Bytes::from_owner(body.clone());
            Err(Stop::Answer(Box::new(LocalAnswer { status, details: "direct_response", body, headers })))
        }
        RouteAction::Redirect(r) => {
            let path = routed.path(&parts.uri);
            let location = routing::redirect_location(
                r,
                conn.scheme(),
                routed.authority(),
                path,
                parts.uri.query(),
                conn.gateway_port,
            );
            let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            Err(Stop::Answer(Box::new(redirect_answer(status, &location, Some((ops, &v)))?)))
        }
        RouteAction::Forward(_) => Ok(cors_headers),
    }
}

fn redirect_answer(
    status: StatusCode,
    location: &str,
    ops: Option<(&HeaderOps, &crate::varsubst::Vars<'_>)>,
) -> Result<LocalAnswer, LocalReply> {
    let location = HeaderValue::from_str(location).map_err(|_| LocalReply::InvalidRedirectLocation)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, location);
    if let Some((ops, vars)) = ops {
        headers::apply_ops(&mut headers, ops, vars);
    }
    Ok(LocalAnswer { status, details: "redirect", body: Bytes::new(), headers })
}

/// The weighted destination `i` of a forwarding route.
fn destination(route: &Route, i: usize) -> Option<&WeightedDestination> {
    match &route.action {
        RouteAction::Forward(wc) => wc.destinations.get(i),
        _ => None,
    }
}

/// Phase 4: rewrite, pick the destination and an endpoint, take a breaker slot, prepare the
/// request's headers, fire the mirrors, and run the tries under the route timeout.
#[allow(clippy::too_many_arguments)] // the request's parts, each used once: a struct would only rename them
async fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    state: &State,
    routed: &mut Routed,
    parts: &mut http::request::Parts,
    body: Incoming,
    cors: Option<HeaderMap>,
    vars: VarsBase,
    log: &mut RequestGuard,
    started: tokio::time::Instant,
) -> Result<Forwarded, Stop> {
    let route = &routed.route;
    let RouteAction::Forward(wc) = &route.action else { return Err(LocalReply::NoRoute.into()) };

    // The forwarded path: normalized, then rewritten; `None` keeps the request's own.
    let rewritten = routing::rewrite_path(route, routed.match_index, routed.path(&parts.uri));
    // Envoy keeps a path it rewrote in `x-envoy-original-path` (Istio leaves Envoy's headers on);
    // the path as routed, i.e. after normalization, with the query.
    let original_path = match (&rewritten, &routed.normalized) {
        (None, _) => None,
        (Some(_), None) => parts.uri.path_and_query().and_then(|pq| HeaderValue::from_str(pq.as_str()).ok()),
        (Some(_), Some(p)) => HeaderValue::try_from(with_query(p.clone(), parts.uri.query())).ok(),
    };
    let new_path_and_query = match rewritten.or_else(|| routed.normalized.take()) {
        None => None,
        Some(p) => Some(PathAndQuery::try_from(with_query(p, parts.uri.query())).map_err(|_| LocalReply::InvalidPath)?),
    };

    let dest_index = wc.pick_index(shared.rng.below(wc.total_weight)).ok_or(LocalReply::NoCluster)?;
    let dest = wc.destinations.get(dest_index).ok_or(LocalReply::NoCluster)?;
    log.record.upstream_cluster = Some(dest.cluster.clone());
    let pool = state.upstreams.get(&dest.cluster).ok_or(LocalReply::NoCluster)?;
    let (hash, set_cookie) = hash::request_key(&pool.def.lb, parts, conn.peer, &shared.rng);
    let endpoint = pool.pick(&shared.rng, hash, &[]).await.ok_or(LocalReply::NoHealthyUpstream)?;
    // `http2MaxRequests`: active requests to the cluster.
    let slot = pool.breaker.try_acquire(Resource::Request, &pool.def.limits).ok_or(LocalReply::Overflow)?;
    log.record.upstream_host = Some(endpoint.addr);
    // `useClientProtocol`: the downstream request's version decides, else the cluster's.
    let h2_upstream = crate::upstream::request_protocol(&pool.def, parts.version) == UpstreamProtocol::Http2;

    // HTTP/1.1 upgrades (WebSocket) go to HTTP/1.1 upstreams; an HTTP/2 upstream gets the request
    // without the upgrade (hop-by-hop headers are dropped) and answers it as a plain request.
    // One pass over the names: most requests have none of those rewritten below, and a lookup
    // of a name that is absent still hashes it.
    let present = headers::Present::scan(&parts.headers);
    let upgrade = if !h2_upstream && parts.version == Version::HTTP_11 {
        headers::upgrade_of(&parts.headers, present)
    } else {
        None
    };
    let client_upgrade = if upgrade.is_some() { parts.extensions.remove::<OnUpgrade>() } else { None };
    headers::prepare_request(&mut parts.headers, present, &conn.client, upgrade.as_ref());
    crate::tls::downstream_headers(&mut parts.headers, conn, present.xfcc);
    {
        // `%REQ(…)%` reads the request as it came in (before these rules).
        let needs = dest.headers.request.uses_request() || route.headers.request.uses_request();
        let before = needs.then(|| parts.headers.clone());
        let v = vars.with(before.as_ref(), Some(endpoint.addr));
        headers::apply_ops(&mut parts.headers, &dest.headers.request, &v);
        headers::apply_ops(&mut parts.headers, &route.headers.request, &v);
    }
    if let Some(original) = original_path {
        parts.headers.insert(headers::X_ENVOY_ORIGINAL_PATH.clone(), original);
    }
    // Response rules reading the request need a copy: the request goes upstream.
    let request_for_response =
        (dest.headers.response.uses_request() || route.headers.response.uses_request()).then(|| parts.headers.clone());
    if shared.record_details {
        log.record.x_forwarded_for = parts.headers.get(&headers::X_FORWARDED_FOR).cloned();
    }

    // Envoy's order: the header rules may set the authority, `rewrite.authority` overrides them.
    let set_by_rule = dest.headers.request.sets_authority() || route.headers.request.sets_authority();
    let upstream_authority = match route.rewrite.as_ref().and_then(|r| r.authority.as_deref()) {
        Some(a) => HeaderValue::from_str(a).map_err(|_| LocalReply::InvalidAuthorityRewrite)?,
        // Looked up only when a rule may have set it (a lookup hashes the name).
        None => match set_by_rule.then(|| parts.headers.get(header::HOST)).flatten() {
            Some(rule) => rule.clone(),
            None => routed.authority.clone(),
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
        parts.uri = uri.map_err(|_| LocalReply::InvalidAuthority)?;
        parts.version = Version::HTTP_2;
    } else {
        // From an HTTP/1 client, most often it is its `Host` as it came: nothing to replace.
        let kept = parts.version != Version::HTTP_2
            && parts.headers.get(header::HOST).map(HeaderValue::as_bytes) == Some(upstream_authority.as_bytes());
        if !kept {
            parts.headers.insert(header::HOST, upstream_authority);
        }
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
    }
    parts.extensions = http::Extensions::new();

    let received = Arc::new(AtomicU64::new(0));
    log.received = Some(received.clone());
    let retrying = retry::may_retry(&route.retry, upgrade.is_some());
    // Upgrades (WebSocket) are not mirrored: a shadow cannot take part in the tunnel.
    let mirrors = if upgrade.is_some() { Vec::new() } else { mirror::pick(route, state, &shared.rng) };
    let has_body = !body.is_end_stream();
    // A request without a body is retried with an empty one: nothing to keep.
    let (leftover_tx, replay) = match (retrying, has_body) {
        (true, true) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), retry::Replay::Kept(rx))
        }
        (true, false) => (None, retry::Replay::Empty),
        (false, _) => (None, retry::Replay::Off),
    };
    let (mirror_tx, mirror_rx) = if !mirrors.is_empty() && has_body {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let upstream_body = if leftover_tx.is_some() || mirror_tx.is_some() {
        UpstreamBody::capturing(body, received.clone(), leftover_tx, mirror_tx)
    } else {
        UpstreamBody::new(body, received.clone())
    };
    if !mirrors.is_empty() {
        mirror::spawn_all(mirrors, parts, has_body, mirror_rx, route.timeout, &shared.rng);
    }

    // Envoy reads `grpc-timeout` of gRPC requests only (`content-type: application/grpc…`).
    let grpc_timeout = if log.record.grpc { retry::grpc_timeout(&parts.headers) } else { None };
    let timeout = match (route.timeout.filter(|t| !t.is_zero()), grpc_timeout) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Envoy's router tells the upstream how long it will wait: the per-try timeout when there
    // is one, else the request's.
    let per_try = route.retry.per_try_timeout.filter(|t| !t.is_zero());
    if let Some(expected) = per_try.map(|p| timeout.map_or(p, |t| p.min(t))).or(timeout) {
        let ms = u64::try_from(expected.as_millis()).unwrap_or(u64::MAX);
        parts.headers.insert(headers::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), headers::number(ms));
        // And a gRPC server learns it in its own terms (Envoy, with Istio's `max_grpc_timeout`).
        if log.record.grpc {
            parts.headers.insert(headers::GRPC_TIMEOUT.clone(), retry::grpc_timeout_value(ms));
        }
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
    let deadline = timeout.map(|t| crate::clock::now() + t);
    let done = {
        // Pinned in place: the tries' future is not moved into the timeout wrapper.
        let sent = attempts.run(endpoint, upstream_body, replay);
        tokio::pin!(sent);
        match deadline {
            Some(at) => tokio::time::timeout_at(at, &mut sent).await.map_err(|_| LocalReply::RouteTimeout)?,
            None => (&mut sent).await,
        }
    };
    log.record.upstream_host = Some(done.endpoint.addr);
    log.active = Some(done.active);
    log.flag(done.flags);
    let resp = done.result?;
    log.record.upstream_local = done.upstream_local;
    Ok(Forwarded {
        resp,
        route: routed.route.clone(),
        destination: dest_index,
        request_for_response,
        cors,
        set_cookie,
        client_upgrade,
        deadline,
        service_time: crate::clock::now().saturating_duration_since(started),
    })
}

/// `path`, with `?query` when there is one.
fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// Phase 5: the upstream's response to the client — upgrade splice, response headers, and the
/// body, streamed under the route's deadline.
fn respond(f: Forwarded, conn: &ConnInfo, vars: VarsBase, mut log: Box<RequestGuard>) -> Response<ProxyBody> {
    log.record.upstream_service_time = Some(f.service_time);
    let (mut rp, rbody) = f.resp.into_parts();
    let upgraded = rp.status == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded {
        match (f.client_upgrade, rp.extensions.remove::<OnUpgrade>()) {
            (Some(client), Some(upstream)) => spawn_tunnel(client, upstream, conn.phase.clone()),
            _ => return LocalReply::UnexpectedUpgrade.into_response(log),
        }
    }
    headers::prepare_response(&mut rp.headers, upgraded);
    // Envoy's router adds it (Istio does not suppress Envoy's headers); route rules may remove it.
    let service_ms = u64::try_from(f.service_time.as_millis()).unwrap_or(u64::MAX);
    rp.headers.insert(headers::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(), headers::number(service_ms));
    let v = vars.with(f.request_for_response.as_ref(), log.record.upstream_host);
    if let Some(dest) = destination(&f.route, f.destination) {
        headers::apply_ops(&mut rp.headers, &dest.headers.response, &v);
    }
    headers::apply_ops(&mut rp.headers, &f.route.headers.response, &v);
    if let Some(h) = f.cors {
        rp.headers.extend(h);
    }
    if let Some(c) = f.set_cookie {
        rp.headers.append(header::SET_COOKIE, c);
    }
    rp.version = Version::HTTP_11;
    rp.extensions = http::Extensions::new();
    log.record.status = rp.status.as_u16();
    log.record.details = "via_upstream";
    // Read by the gRPC request metrics and by spans only: most responses skip the lookup.
    if log.record.grpc || log.record.trace.is_some() {
        if let Some(status) = crate::body::grpc_status(&rp.headers) {
            log.record.grpc_status = Some(status);
        }
    }
    Response::from_parts(rp, ProxyBody::upstream(rbody, log, f.deadline))
}

/// Splice the two upgraded streams until either side closes or the drain times out.
fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, mut phase: watch::Receiver<Phase>) {
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
