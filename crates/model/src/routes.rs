//! VirtualService routes → snapshot routes for one Gateway server.

use crate::duration;
use crate::host;
use crate::matcher::{Re, RequestMatch, StrMatch};
use crate::registry::{cluster_name, Registry};
use crate::snapshot::{
    joined_header_value, CorsPolicy, Fault, FaultAbortKind, GrpcCode, HeaderOps, HeaderRules, Mirror, Redirect,
    RetryOn, RetryPolicy, Rewrite, Route, RouteAction, TcpRoute, TlsRoute, WeightedClusters, WeightedDestination,
};
use portico_api::diag::code;
use portico_api::istio::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, Percent, RedirectPortSelection, StringMatch,
    VirtualService,
};
use portico_api::{Diagnostic, Resource};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The server a VirtualService is being compiled for.
pub struct RouteCtx<'a> {
    pub vs_res: &'a Resource,
    pub gw_ns: &'a str,
    pub gw_name: &'a str,
    pub port: u32,
    pub labels: &'a BTreeMap<String, String>,
    pub gateway_namespace: &'a str,
    /// The cluster's DNS domain, for short destination hosts.
    pub domain_suffix: &'a str,
    /// All VirtualServices (to resolve `delegate`).
    pub vss: &'a [&'a Resource],
}

impl RouteCtx<'_> {
    fn vs_key(&self) -> String {
        [self.vs_res.namespace(), self.vs_res.name()].join("/")
    }

    /// Match-level conditions decided at compile time for this gateway: `gateways`, `port`,
    /// `sourceLabels` (the gateway workload's labels), `sourceNamespace`.
    fn applies(
        &self,
        gateways: &[String],
        port: Option<u32>,
        source_labels: &BTreeMap<String, String>,
        source_ns: Option<&str>,
    ) -> bool {
        if !gateways.is_empty()
            && !crate::compile::vs_names_gateway(self.vs_res.namespace(), gateways, self.gw_ns, self.gw_name)
        {
            return false;
        }
        if port.is_some_and(|p| p != self.port) {
            return false;
        }
        if !source_labels.iter().all(|(k, v)| self.labels.get(k) == Some(v)) {
            return false;
        }
        if source_ns.is_some_and(|ns| ns != self.gateway_namespace) {
            return false;
        }
        true
    }
}

/// Istio's default retry policy when a route has no `retries`.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        per_try_timeout: None,
        retry_on: RetryOn::CONNECT_FAILURE
            | RetryOn::REFUSED_STREAM
            | RetryOn::GRPC_UNAVAILABLE
            | RetryOn::GRPC_CANCELLED
            | RetryOn::RETRIABLE_STATUS_CODES,
        retriable_status_codes: Vec::new(),
    }
}

fn dur(s: Option<&str>) -> Option<Duration> {
    s.and_then(|v| duration::parse(v).ok())
}

fn pct(p: Option<&Percent>) -> Option<f64> {
    p.map(|p| p.value.clamp(0.0, 100.0))
}

pub fn str_match(m: &StringMatch, empty_is_presence: bool) -> Option<StrMatch> {
    if let Some(e) = &m.exact {
        if e.is_empty() && empty_is_presence {
            return Some(StrMatch::Present);
        }
        return Some(StrMatch::Exact(e.clone()));
    }
    if let Some(p) = &m.prefix {
        // Envoy rejects an empty prefix; Istio turns it into a presence match.
        if p.is_empty() {
            return Some(StrMatch::Present);
        }
        return Some(StrMatch::Prefix(p.clone()));
    }
    if let Some(r) = &m.regex {
        return Re::new(r).ok().map(StrMatch::Regex);
    }
    Some(StrMatch::Present)
}

fn header_matches(m: &BTreeMap<String, StringMatch>, query: bool) -> Vec<(String, StrMatch)> {
    m.iter()
        .filter_map(|(k, v)| {
            let name = if query { k.clone() } else { k.to_ascii_lowercase() };
            str_match(v, query).map(|sm| (name, sm))
        })
        .collect()
}

fn request_match(m: &HttpMatchRequest) -> RequestMatch {
    RequestMatch {
        name: m.name.clone(),
        uri: m.uri.as_ref().and_then(|u| str_match(u, false)),
        ignore_uri_case: m.ignore_uri_case,
        scheme: m.scheme.as_ref().and_then(|u| str_match(u, false)),
        method: m.method.as_ref().and_then(|u| str_match(u, false)),
        authority: m.authority.as_ref().and_then(|u| str_match(u, false)),
        headers: header_matches(&m.headers, false),
        without_headers: header_matches(&m.without_headers, false),
        query_params: header_matches(&m.query_params, true),
        // Gateway ports are filtered at compile time; keep it so the data plane agrees.
        port: m.port,
    }
}

/// Header names parsed once (validation reports any that do not parse; they are left out).
/// `:authority` is the request's `Host`, and there is only one: adding it sets it.
fn header_ops(ops: Option<&HeaderOperations>) -> HeaderOps {
    let Some(ops) = ops else { return HeaderOps::default() };
    let name = |k: &str| {
        if k.eq_ignore_ascii_case(":authority") {
            Some(http::header::HOST)
        } else {
            http::HeaderName::from_bytes(k.as_bytes()).ok()
        }
    };
    let mut out = HeaderOps::default();
    for (k, v, add) in ops.set.iter().map(|(k, v)| (k, v, false)).chain(ops.add.iter().map(|(k, v)| (k, v, true))) {
        let Some(n) = name(k) else { continue };
        let list = if add && n != http::header::HOST { &mut out.add } else { &mut out.set };
        list.push((n, v.as_str().into()));
    }
    out.remove = ops.remove.iter().filter_map(|k| name(k)).collect();
    out
}

fn header_rules(h: Option<&Headers>) -> HeaderRules {
    HeaderRules {
        request: header_ops(h.and_then(|h| h.request.as_ref())),
        response: header_ops(h.and_then(|h| h.response.as_ref())),
    }
}

/// Resolve a destination to (host, port, cluster name), with Istio's port defaulting:
/// the destination's port, else the service's only port, else 0 (no such cluster → NC).
fn resolve_destination(ctx: &RouteCtx<'_>, d: &Destination, registry: &Registry<'_>) -> (String, u32, String) {
    let h = host::resolve_short_name(&d.host, ctx.vs_res.namespace(), ctx.domain_suffix);
    let port = match &d.port {
        Some(p) => p.number,
        None => match registry.lookup(&h) {
            Some(svc) if svc.ports.len() == 1 => svc.ports[0].number,
            _ => 0,
        },
    };
    let name = cluster_name(port, d.subset.as_deref(), &h);
    (h, port, name)
}

fn weighted<'d>(
    ctx: &RouteCtx<'_>,
    dests: impl Iterator<Item = (&'d Destination, Option<i32>, HeaderRules)>,
    registry: &Registry<'_>,
) -> Option<WeightedClusters> {
    let dests: Vec<_> = dests.collect();
    let single = dests.len() == 1;
    let mut out = Vec::new();
    for (d, weight, headers) in dests {
        let (h, port, cluster) = resolve_destination(ctx, d, registry);
        // A lone destination gets all traffic whatever its weight (Istio: weight 0 → 100).
        let weight = if single { 1 } else { weight.unwrap_or(0).max(0) as u32 };
        out.push(WeightedDestination {
            cluster: Arc::from(cluster),
            host: h,
            subset: d.subset.clone(),
            port,
            weight,
            headers,
        });
    }
    let total_weight: u32 = out.iter().map(|d| d.weight).sum();
    (total_weight > 0).then_some(WeightedClusters { destinations: out, total_weight })
}

/// Routes of one VirtualService for one server, one snapshot route per match block (as Istio
/// emits one Envoy route per `match` entry).
pub fn compile_http_routes(
    ctx: &RouteCtx<'_>,
    vs: &VirtualService,
    registry: &Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        match &r.delegate {
            Some(d) => compile_delegate(ctx, r, i, d, registry, diags, &mut out),
            None => compile_one(ctx, r, i, registry, &mut out),
        }
    }
    out
}

/// `delegate`: the delegate VirtualService's http routes, each merged with the root route by
/// Istio's `mergeHTTPRoute` (see [`merge_http_route`]) and compiled in the delegate's namespace.
/// One level only (validation rejects a delegate that delegates again).
fn compile_delegate(
    ctx: &RouteCtx<'_>,
    root: &HttpRoute,
    i: usize,
    d: &portico_api::istio::Delegate,
    registry: &Registry<'_>,
    diags: &mut Vec<Diagnostic>,
    out: &mut Vec<Arc<Route>>,
) {
    let ns = d.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(ctx.vs_res.namespace());
    let found = ctx.vss.iter().find_map(|res| match &*res.spec {
        portico_api::Spec::VirtualService(v) if res.namespace() == ns && res.name() == d.name => Some((*res, v)),
        _ => None,
    });
    let warn = |diags: &mut Vec<Diagnostic>, msg: String| {
        diags.push(Diagnostic::warning(
            ctx.vs_res.origin.locate(&format!("spec.http[{i}].delegate")),
            code::NOT_SUPPORTED,
            ctx.vs_res.key(),
            msg,
        ))
    };
    let Some((dres, dvs)) = found else {
        warn(
            diags,
            format!("spec.http[{i}].delegate: VirtualService {ns}/{} not found; this route is skipped", d.name),
        );
        return;
    };
    if !dvs.hosts.is_empty() {
        warn(diags, format!("spec.http[{i}].delegate: {ns}/{} has hosts, so it is not a delegate; skipped", d.name));
        return;
    }
    let dctx = RouteCtx { vs_res: dres, ..*ctx };
    for (j, leaf) in dvs.http.iter().enumerate() {
        if leaf.delegate.is_some() {
            continue;
        }
        match merge_http_route(root, leaf) {
            Some(merged) => compile_one(&dctx, &merged, j, registry, out),
            None => warn(
                diags,
                format!(
                    "spec.http[{i}].delegate: route {j} of {ns}/{} conflicts with this route's match and is skipped",
                    d.name
                ),
            ),
        }
    }
}

/// Istio's `mergeHTTPRoute`: the delegate's matches are merged with the root's (each delegate
/// match must fit inside some root match, else the route conflicts → `None`); the delegate's
/// name is prefixed with the root's; fields the delegate leaves unset are taken from the root
/// (rewrite, timeout, retries, fault, mirror(s), CORS, headers, direct response).
pub fn merge_http_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.matches = merge_match_requests(&root.matches, &leaf.matches)?;
    out.name = join_names(root.name.as_deref(), leaf.name.as_deref());
    macro_rules! inherit {
        ($($f:ident),*) => { $( if out.$f.is_none() { out.$f = root.$f.clone(); } )* };
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some(out)
}

fn join_names(root: Option<&str>, leaf: Option<&str>) -> Option<String> {
    match (root.filter(|s| !s.is_empty()), leaf.filter(|s| !s.is_empty())) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.or(r).map(str::to_string),
    }
}

fn merge_match_requests(root: &[HttpMatchRequest], leaf: &[HttpMatchRequest]) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let before = out.len();
        for r in root {
            if !match_conflict(r, l) {
                out.push(merge_match(r, l));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

/// Istio's `stringMatchConflict`: a regex must be the same regex on both sides; under an exact
/// root the leaf must be the same exact; under a prefix root the leaf must be a longer prefix or
/// an exact value starting with it.
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(r), Some(l)) = (root, leaf) else { return false };
    if (r.regex.is_some() || l.regex.is_some()) && r.regex != l.regex {
        return true;
    }
    if let Some(e) = r.exact.as_deref().filter(|e| !e.is_empty()) {
        if l.exact.as_deref() != Some(e) {
            return true;
        }
    }
    if let Some(p) = r.prefix.as_deref().filter(|p| !p.is_empty()) {
        let ok = l.prefix.as_deref().is_some_and(|lp| lp.starts_with(p))
            || l.exact.as_deref().is_some_and(|le| le.starts_with(p));
        if !ok {
            return true;
        }
    }
    false
}

fn match_conflict(r: &HttpMatchRequest, l: &HttpMatchRequest) -> bool {
    let map_conflict = |a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>| {
        a.iter().any(|(k, v)| string_conflict(Some(v), b.get(k)))
    };
    string_conflict(r.uri.as_ref(), l.uri.as_ref())
        || string_conflict(r.scheme.as_ref(), l.scheme.as_ref())
        || string_conflict(r.method.as_ref(), l.method.as_ref())
        || string_conflict(r.authority.as_ref(), l.authority.as_ref())
        || map_conflict(&r.headers, &l.headers)
        || map_conflict(&r.query_params, &l.query_params)
        || map_conflict(&r.without_headers, &l.without_headers)
        || r.ignore_uri_case != l.ignore_uri_case
        || matches!((r.port, l.port), (Some(a), Some(b)) if a != 0 && b != 0 && a != b)
        || r.source_labels.iter().any(|(k, v)| l.source_labels.get(k).is_some_and(|lv| lv != v))
        || (!r.gateways.is_empty() && !l.gateways.is_empty() && r.gateways != l.gateways)
        || matches!((&r.source_namespace, &l.source_namespace), (Some(a), Some(b)) if a != b)
}

/// Istio's `mergeHTTPMatchRequest`: the leaf's conditions, completed by the root's.
fn merge_match(r: &HttpMatchRequest, l: &HttpMatchRequest) -> HttpMatchRequest {
    let mut m = l.clone();
    m.name = join_names(r.name.as_deref(), l.name.as_deref());
    macro_rules! inherit {
        ($($f:ident),*) => { $( if m.$f.is_none() { m.$f = r.$f.clone(); } )* };
    }
    inherit!(uri, scheme, method, authority, port, source_namespace, stat_prefix);
    for (map_r, map_m) in [
        (&r.headers, &mut m.headers),
        (&r.query_params, &mut m.query_params),
        (&r.without_headers, &mut m.without_headers),
    ] {
        for (k, v) in map_r {
            map_m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, v) in &r.source_labels {
        m.source_labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if m.gateways.is_empty() {
        m.gateways = r.gateways.clone();
    }
    m
}

/// One http route (not a delegate): one snapshot route per applicable match block.
fn compile_one(ctx: &RouteCtx<'_>, r: &HttpRoute, i: usize, registry: &Registry<'_>, out: &mut Vec<Arc<Route>>) {
    {
        let Some(action) = action(ctx, r, registry) else { return };
        let blocks: Vec<Option<&HttpMatchRequest>> = if r.matches.is_empty() {
            vec![None]
        } else {
            r.matches
                .iter()
                .filter(|m| ctx.applies(&m.gateways, m.port, &m.source_labels, m.source_namespace.as_deref()))
                .map(Some)
                .collect()
        };
        let action = Arc::new(action);
        for m in blocks {
            out.push(Arc::new(build_route(ctx, r, i, m.map(request_match), &action)));
        }
    }
}

/// One snapshot route: an http route restricted to one of its match blocks.
fn build_route(
    ctx: &RouteCtx<'_>,
    r: &HttpRoute,
    i: usize,
    m: Option<RequestMatch>,
    action: &Arc<RouteAction>,
) -> Route {
    let retry = match &r.retries {
        None => default_retry(),
        Some(rt) => {
            let mut retry_on = RetryOn::empty();
            let mut codes = Vec::new();
            for tok in rt.retry_on.as_deref().unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match tok.parse::<u16>() {
                    Ok(c) => codes.push(c),
                    // Unknown tokens are diagnosed by validation; Envoy ignores them too.
                    Err(_) => retry_on.insert(RetryOn::token(tok).unwrap_or_default()),
                }
            }
            if !codes.is_empty() {
                retry_on.insert(RetryOn::RETRIABLE_STATUS_CODES);
            }
            if rt.retry_on.is_none() {
                // Istio's default retryOn when `retries` is set without it.
                retry_on = default_retry().retry_on;
            }
            RetryPolicy {
                attempts: rt.attempts.max(0) as u32,
                per_try_timeout: dur(rt.per_try_timeout.as_deref()),
                retry_on,
                retriable_status_codes: codes,
            }
        }
    };
    let fault = r.fault.as_ref().map(|f| Fault {
        delay: f.delay.as_ref().and_then(|d| {
            let p = pct(d.percentage.as_ref()).or(d.percent.map(|p| f64::from(p.clamp(0, 100)))).unwrap_or(0.0);
            dur(d.fixed_delay.as_deref()).map(|t| (t, p))
        }),
        abort: f.abort.as_ref().and_then(|a| {
            let p = pct(a.percentage.as_ref()).unwrap_or(0.0);
            if let Some(code) = a.http_status {
                Some((FaultAbortKind::Http(u16::try_from(code).unwrap_or(503)), p))
            } else {
                a.grpc_status.as_ref().map(|g| (FaultAbortKind::Grpc(GrpcCode::parse(g)), p))
            }
        }),
    });
    let mut mirrors = Vec::new();
    let registry_free = |d: &Destination| {
        let h = host::resolve_short_name(&d.host, ctx.vs_res.namespace(), ctx.domain_suffix);
        let port = d.port.as_ref().map(|p| p.number).unwrap_or(0);
        (h, port)
    };
    if let Some(m) = &r.mirror {
        let (h, port) = registry_free(m);
        let p = pct(r.mirror_percentage.as_ref()).or(r.mirror_percent.map(|p| f64::from(p.min(100)))).unwrap_or(100.0);
        mirrors.push(Mirror {
            cluster: Arc::from(cluster_name(port, m.subset.as_deref(), &h)),
            host: h,
            port,
            percentage: p,
        });
    }
    for mp in &r.mirrors {
        let (h, port) = registry_free(&mp.destination);
        let p = pct(mp.percentage.as_ref()).unwrap_or(100.0);
        mirrors.push(Mirror {
            cluster: Arc::from(cluster_name(port, mp.destination.subset.as_deref(), &h)),
            host: h,
            port,
            percentage: p,
        });
    }
    let rewrite = r.rewrite.as_ref().map(|rw| Rewrite {
        uri: rw.uri.clone(),
        authority: rw.authority.clone(),
        uri_regex: rw.uri_regex_rewrite.as_ref().and_then(|rr| {
            regex::Regex::new(&rr.match_)
                .ok()
                .map(|regex| (Re { source: rr.match_.clone(), regex }, rr.rewrite.clone()))
        }),
    });
    let cors = r.cors_policy.as_ref().map(|c| {
        let mut origins: Vec<StrMatch> = c.allow_origins.iter().filter_map(|o| str_match(o, false)).collect();
        origins.extend(c.allow_origin.iter().map(|o| {
            if o == "*" {
                StrMatch::Present
            } else {
                StrMatch::Exact(o.clone())
            }
        }));
        CorsPolicy {
            allow_origins: origins,
            allow_methods: joined_header_value(&c.allow_methods),
            allow_headers: joined_header_value(&c.allow_headers),
            expose_headers: joined_header_value(&c.expose_headers),
            max_age: dur(c.max_age.as_deref()),
            allow_credentials: c.allow_credentials.unwrap_or(false),
            ignore_unmatched_preflights: c.unmatched_preflights
                == Some(portico_api::istio::UnmatchedPreflights::Ignore),
        }
    });
    Route {
        virtual_service: ctx.vs_key(),
        index: i,
        name: r.name.as_deref().map(Arc::from),
        matches: m.into_iter().collect(),
        action: (**action).clone(),
        timeout: dur(r.timeout.as_deref()).filter(|d| !d.is_zero()),
        retry,
        fault,
        mirrors,
        rewrite,
        headers: header_rules(r.headers.as_ref()),
        cors,
    }
}

fn action(ctx: &RouteCtx<'_>, r: &HttpRoute, registry: &Registry<'_>) -> Option<RouteAction> {
    if let Some(red) = &r.redirect {
        return Some(RouteAction::Redirect(Redirect {
            uri: red.uri.clone(),
            authority: red.authority.clone(),
            port: red.port.and_then(|p| u16::try_from(p).ok()),
            port_from_request: red.derive_port == Some(RedirectPortSelection::FromRequestPort),
            scheme: red.scheme.clone(),
            code: red.redirect_code.and_then(|c| u16::try_from(c).ok()).unwrap_or(301),
        }));
    }
    if let Some(dr) = &r.direct_response {
        use base64::Engine;
        let body: Vec<u8> = match &dr.body {
            Some(b) => match (&b.string, &b.bytes) {
                (Some(s), _) => s.clone().into_bytes(),
                (None, Some(bytes)) => {
                    base64::engine::general_purpose::STANDARD.decode(bytes.as_bytes()).unwrap_or_default()
                }
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        return Some(RouteAction::DirectResponse {
            status: u16::try_from(dr.status).unwrap_or(500),
            body: Arc::from(body),
        });
    }
    let dests = r.route.iter().map(|d| (&d.destination, d.weight, header_rules(d.headers.as_ref())));
    weighted(ctx, dests, registry).map(RouteAction::Forward)
}

pub fn compile_tcp_routes(
    ctx: &RouteCtx<'_>,
    vs: &VirtualService,
    registry: &Registry<'_>,
    _diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<TcpRoute>> {
    let mut out = Vec::new();
    for (i, r) in vs.tcp.iter().enumerate() {
        let applicable: Vec<_> = r
            .matches
            .iter()
            .filter(|m| ctx.applies(&m.gateways, m.port, &m.source_labels, m.source_namespace.as_deref()))
            .collect();
        if !r.matches.is_empty() && applicable.is_empty() {
            continue;
        }
        let dests = r.route.iter().map(|d| (&d.destination, d.weight, HeaderRules::default()));
        let Some(destinations) = weighted(ctx, dests, registry) else { continue };
        out.push(Arc::new(TcpRoute {
            virtual_service: ctx.vs_key(),
            index: i,
            ports: applicable.iter().filter_map(|m| m.port).collect(),
            destinations,
        }));
    }
    out
}

pub fn compile_tls_routes(
    ctx: &RouteCtx<'_>,
    vs: &VirtualService,
    server_hosts: &[String],
    registry: &Registry<'_>,
    _diags: &mut Vec<Diagnostic>,
) -> Vec<Arc<TlsRoute>> {
    let mut out = Vec::new();
    for (i, r) in vs.tls.iter().enumerate() {
        for m in &r.matches {
            if !ctx.applies(&m.gateways, m.port, &m.source_labels, m.source_namespace.as_deref()) {
                continue;
            }
            // Only SNI names the server admits.
            let sni: Vec<String> = m
                .sni_hosts
                .iter()
                .flat_map(|s| server_hosts.iter().filter_map(move |sh| host::intersect(host::split_namespace(sh).1, s)))
                .collect();
            if sni.is_empty() {
                continue;
            }
            let dests = r.route.iter().map(|d| (&d.destination, d.weight, HeaderRules::default()));
            let Some(destinations) = weighted(ctx, dests, registry) else { continue };
            out.push(Arc::new(TlsRoute {
                virtual_service: ctx.vs_key(),
                index: i,
                sni_hosts: sni,
                ports: m.port.into_iter().collect(),
                destinations,
            }));
        }
    }
    out
}
