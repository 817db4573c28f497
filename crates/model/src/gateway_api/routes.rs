//! HTTPRoute / GRPCRoute / TLSRoute / TCPRoute rules → Istio VirtualService routes, one
//! VirtualService per listener and hostname with every attached rule sorted by the Gateway API's
//! precedence: exact path, then the longest prefix, then (regex), then a method match, then the
//! most header matches, then the most query matches, then the oldest route, then
//! `namespace/name`, then rule and match order.

use super::status::Condition;
use super::{name_part, resolve_backend, synthetic, Backend, Bound, World};
use portico_api::diag::code;
use portico_api::gateway_api::{BackendRef, HeaderModifier, HttpRouteFilter, PathModifier, ValueMatch};
use portico_api::istio::{
    CorsPolicy, Destination, FaultAbort, HeaderOperations, Headers, HttpBody, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, Percent,
    PortSelector, RegexRewrite, RouteDestination, StringMatch, TcpRoute, TlsMatchAttributes, TlsRoute, VirtualService,
};
use portico_api::{Diagnostic, Resource, Spec};
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Which route goes to which listener and hostname.
#[derive(Default)]
pub(crate) struct Plan<'a> {
    by_host: BTreeMap<(usize, String), Vec<&'a Resource>>,
}

impl<'a> Plan<'a> {
    pub fn add(&mut self, listener: usize, names: Vec<String>, r: &'a Resource) {
        for n in names {
            let v = self.by_host.entry((listener, n)).or_default();
            if !v.iter().any(|x| std::ptr::eq(*x, r)) {
                v.push(r);
            }
        }
    }

    pub fn emit(&self, w: &World<'_>, bound: &[Bound<'_>], out: &mut Vec<Resource>, diags: &mut Vec<Diagnostic>) {
        for ((li, host), routes) in &self.by_host {
            let Some(b) = bound.get(*li) else { continue };
            let Some(first) = routes.first() else { continue };
            let mut http: Vec<(SortKey, HttpRoute)> = Vec::new();
            let mut tls = Vec::new();
            let mut tcp = Vec::new();
            let terminated = b.listener.protocol == "TLS"
                && b.listener.tls.as_ref().and_then(|t| t.mode.as_deref()) != Some("Passthrough");
            let mut sorted = routes.clone();
            sorted.sort_by(|a, b| route_order(a, b));
            for (order, r) in sorted.iter().enumerate() {
                match &*r.spec {
                    Spec::HttpRoute(_) | Spec::GrpcRoute(_) => {
                        http.extend(http_rules(w, r, order, b.listener.port, diags))
                    }
                    Spec::TlsRoute(t) => {
                        for (ri, rule) in t.rules.iter().enumerate() {
                            let route = l4_dests(w, r, &rule.backend_refs, &format!("spec.rules[{ri}]"), diags);
                            if route.is_empty() {
                                continue;
                            }
                            if terminated {
                                // TLS ends at the listener (its hostname chose the certificate):
                                // what follows is a TCP stream.
                                tcp.push(TcpRoute { matches: vec![], route });
                            } else {
                                let m = TlsMatchAttributes { sni_hosts: vec![host.clone()], ..Default::default() };
                                tls.push(TlsRoute { matches: vec![m], route });
                            }
                        }
                    }
                    Spec::TcpRoute(t) => {
                        for (ri, rule) in t.rules.iter().enumerate() {
                            let route = l4_dests(w, r, &rule.backend_refs, &format!("spec.rules[{ri}]"), diags);
                            if !route.is_empty() {
                                tcp.push(TcpRoute { matches: vec![], route });
                            }
                        }
                    }
                    _ => {}
                }
            }
            http.sort_by_key(|a| a.0);
            let name = format!(
                "{}-{}-{}-gwapi",
                name_part(b.gw_res.name()),
                name_part(&b.listener.name),
                name_part(&host.replace('*', "wildcard"))
            );
            let vs = VirtualService {
                hosts: vec![host.clone()],
                gateways: vec![b.istio_gateway.clone()],
                http: http.into_iter().map(|(_, h)| h).collect(),
                tls,
                tcp,
                export_to: vec![],
            };
            out.push(synthetic(first, b.gw_res.namespace(), name, Spec::VirtualService(vs)));
        }
    }
}

/// Oldest first, then `namespace/name` (the spec's tie-break between routes).
fn route_order(a: &Resource, b: &Resource) -> std::cmp::Ordering {
    let ta = a.meta.creation_timestamp.as_deref().unwrap_or("");
    let tb = b.meta.creation_timestamp.as_deref().unwrap_or("");
    ta.cmp(tb).then_with(|| a.namespace().cmp(b.namespace())).then_with(|| a.name().cmp(b.name()))
}

/// (path rank: 0 exact, 1 prefix, 2 regex; longer path first; method first; more headers first;
/// more query params first; route order; rule; match; part).
type SortKey = (u8, Reverse<usize>, u8, Reverse<usize>, Reverse<usize>, usize, usize, usize, usize);

/// The route's `ResolvedRefs` condition: the first backendRef that cannot be used decides it.
pub(crate) fn resolved_refs(w: &World<'_>, r: &Resource) -> Condition {
    let refs: Vec<&BackendRef> = match &*r.spec {
        Spec::HttpRoute(h) => h.rules.iter().flat_map(|x| x.backend_refs.iter()).collect(),
        Spec::GrpcRoute(g) => g.rules.iter().flat_map(|x| x.backend_refs.iter()).collect(),
        Spec::TlsRoute(t) | Spec::TcpRoute(t) => t.rules.iter().flat_map(|x| x.backend_refs.iter()).collect(),
        _ => vec![],
    };
    for b in refs {
        if let Backend::Invalid(reason, msg) = resolve_backend(w, r, b) {
            return Condition::bad("ResolvedRefs", reason, msg);
        }
    }
    Condition::ok("ResolvedRefs", "ResolvedRefs")
}

fn l4_dests(
    w: &World<'_>,
    r: &Resource,
    refs: &[BackendRef],
    path: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<RouteDestination> {
    let mut out = Vec::new();
    for (i, b) in refs.iter().enumerate() {
        let weight = b.weight.unwrap_or(1);
        if weight <= 0 {
            continue;
        }
        match resolve_backend(w, r, b) {
            Backend::Service(host, port) => out.push(RouteDestination {
                destination: Destination { host, subset: None, port: Some(PortSelector { number: port }) },
                weight: Some(i32::try_from(weight).unwrap_or(i32::MAX)),
            }),
            Backend::Invalid(reason, msg) => diags.push(Diagnostic::warning(
                r.origin.locate(&format!("{path}.backendRefs[{i}]")),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                r.key(),
                format!("{path}.backendRefs[{i}]: {reason}: {msg}; connections it would get are refused"),
            )),
        }
    }
    out
}

/// One match of a rule in Gateway API terms, before the Istio split.
struct Match {
    /// (kind, value): `Exact`, `PathPrefix`, `RegularExpression`.
    path: (String, String),
    method: Option<String>,
    headers: Vec<ValueMatch>,
    query: Vec<ValueMatch>,
}

fn value_match(m: &ValueMatch) -> StringMatch {
    if m.type_.as_deref() == Some("RegularExpression") {
        StringMatch { regex: Some(m.value.clone()), ..Default::default() }
    } else {
        StringMatch { exact: Some(m.value.clone()), ..Default::default() }
    }
}

fn http_rules(
    w: &World<'_>,
    r: &Resource,
    order: usize,
    listener_port: i64,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(SortKey, HttpRoute)> {
    struct Rule<'x> {
        matches: Vec<Match>,
        filters: Vec<HttpRouteFilter>,
        backends: &'x [BackendRef],
        timeout: Option<String>,
        retry: Option<HttpRetry>,
    }
    let rules: Vec<Rule<'_>> = match &*r.spec {
        Spec::HttpRoute(h) => h
            .rules
            .iter()
            .map(|rule| Rule {
                matches: rule
                    .matches
                    .iter()
                    .map(|m| Match {
                        path: m.path.as_ref().map_or(("PathPrefix".into(), "/".into()), |p| {
                            (
                                p.type_.clone().unwrap_or_else(|| "PathPrefix".into()),
                                p.value.clone().unwrap_or_else(|| "/".into()),
                            )
                        }),
                        method: m.method.clone(),
                        headers: m.headers.clone(),
                        query: m.query_params.clone(),
                    })
                    .collect(),
                filters: with_lifted(&rule.filters, &rule.backend_refs),
                backends: &rule.backend_refs,
                timeout: rule.timeouts.as_ref().and_then(|t| t.request.clone().or_else(|| t.backend_request.clone())),
                retry: rule.retry.as_ref().map(|rt| HttpRetry {
                    attempts: rt.attempts.and_then(|a| i32::try_from(a).ok()).unwrap_or(1),
                    retry_on: Some(if rt.codes.is_empty() {
                        "connect-failure,refused-stream,5xx".to_string()
                    } else {
                        rt.codes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
                    }),
                    backoff: rt.backoff.clone(),
                    ..Default::default()
                }),
            })
            .collect(),
        Spec::GrpcRoute(g) => g
            .rules
            .iter()
            .map(|rule| Rule {
                matches: rule
                    .matches
                    .iter()
                    .map(|m| {
                        let regex = m.method.as_ref().and_then(|x| x.type_.as_deref()) == Some("RegularExpression");
                        let svc = m.method.as_ref().and_then(|x| x.service.clone());
                        let method = m.method.as_ref().and_then(|x| x.method.clone());
                        let path = match (regex, svc, method) {
                            (_, None, None) => ("PathPrefix".to_string(), "/".to_string()),
                            (false, Some(s), Some(me)) => ("Exact".into(), format!("/{s}/{me}")),
                            (false, Some(s), None) => ("PathPrefix".into(), format!("/{s}")),
                            (false, None, Some(me)) => {
                                ("RegularExpression".into(), format!("/[^/]+/{}", regex::escape(&me)))
                            }
                            (true, s, me) => (
                                "RegularExpression".into(),
                                format!(
                                    "/{}/{}",
                                    s.unwrap_or_else(|| "[^/]+".into()),
                                    me.unwrap_or_else(|| "[^/]+".into())
                                ),
                            ),
                        };
                        Match { path, method: None, headers: m.headers.clone(), query: vec![] }
                    })
                    .collect(),
                filters: with_lifted(&rule.filters, &rule.backend_refs),
                backends: &rule.backend_refs,
                timeout: None,
                retry: None,
            })
            .collect(),
        _ => return vec![],
    };

    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let rpath = format!("spec.rules[{ri}]");
        let mut matches = rule.matches.iter().collect::<Vec<_>>();
        let default = Match { path: ("PathPrefix".into(), "/".into()), method: None, headers: vec![], query: vec![] };
        if matches.is_empty() {
            matches.push(&default);
        }
        // Filters shared by every match of the rule.
        let mut headers = Headers::default();
        let mut redirect: Option<(HttpRedirect, Option<PathModifier>)> = None;
        let mut rewrite: Option<(Option<String>, Option<PathModifier>)> = None;
        let mut mirrors = Vec::new();
        let mut fail: Option<String> = None;
        let mut cors: Option<CorsPolicy> = None;
        for (fi, f) in rule.filters.iter().enumerate() {
            let fpath = format!("{rpath}.filters[{fi}]");
            match f.type_.as_str() {
                "RequestHeaderModifier" => headers.request = f.request_header_modifier.as_ref().map(header_ops),
                "ResponseHeaderModifier" => headers.response = f.response_header_modifier.as_ref().map(header_ops),
                "RequestRedirect" => {
                    if let Some(rr) = &f.request_redirect {
                        let scheme = rr.scheme.clone();
                        // No port: the scheme's well-known port, or with no scheme either the
                        // listener's port (a scheme's default port is left out of Location).
                        let port = rr.port.and_then(|p| u32::try_from(p).ok()).or(match scheme.as_deref() {
                            Some("https") => Some(443),
                            Some("http") => Some(80),
                            _ => u32::try_from(listener_port).ok(),
                        });
                        let red = HttpRedirect {
                            uri: None,
                            authority: rr.hostname.clone(),
                            port,
                            derive_port: None,
                            scheme,
                            redirect_code: Some(rr.status_code.and_then(|c| u32::try_from(c).ok()).unwrap_or(302)),
                        };
                        redirect = Some((red, rr.path.clone()));
                    }
                }
                "URLRewrite" => {
                    if let Some(u) = &f.url_rewrite {
                        rewrite = Some((u.hostname.clone(), u.path.clone()));
                    }
                }
                "RequestMirror" => {
                    if let Some(m) = &f.request_mirror {
                        match resolve_backend(w, r, &m.backend_ref) {
                            Backend::Service(host, port) => {
                                let pct = match (&m.percent, &m.fraction) {
                                    (Some(p), _) => Some(*p as f64),
                                    (None, Some(fr)) => {
                                        Some(fr.numerator as f64 * 100.0 / fr.denominator.unwrap_or(100).max(1) as f64)
                                    }
                                    _ => None,
                                };
                                mirrors.push(HttpMirrorPolicy {
                                    destination: Destination {
                                        host,
                                        subset: None,
                                        port: Some(PortSelector { number: port }),
                                    },
                                    percentage: pct.map(|value| Percent { value }),
                                });
                            }
                            Backend::Invalid(reason, msg) => diags.push(Diagnostic::warning(
                                r.origin.locate(&format!("{fpath}.requestMirror.backendRef")),
                                code::REFERENCED_RESOURCE_NOT_FOUND,
                                r.key(),
                                format!("{fpath}.requestMirror.backendRef: {reason}: {msg}; not mirrored"),
                            )),
                        }
                    }
                }
                "CORS" => cors = f.cors.as_ref().map(cors_policy),
                other => {
                    // ExtensionRef, ExternalAuth…: failing closed is the spec's rule for a filter
                    // the implementation cannot apply (a skipped auth filter would open the route).
                    diags.push(Diagnostic::warning(
                        r.origin.locate(&fpath),
                        code::NOT_SUPPORTED,
                        r.key(),
                        format!("{fpath}: filter type `{other}` is not supported: requests to this rule get 500"),
                    ));
                    fail = Some(other.to_string());
                }
            }
        }
        // Backends.
        let mut dests = Vec::new();
        let mut invalid = Vec::new();
        let mut invalid_weight = 0i64;
        for (bi, b) in rule.backends.iter().enumerate() {
            let weight = b.weight.unwrap_or(1);
            match resolve_backend(w, r, b) {
                Backend::Service(host, port) => {
                    if weight <= 0 {
                        continue;
                    }
                    let mut h = Headers::default();
                    for f in &b.filters {
                        match f.type_.as_str() {
                            "RequestHeaderModifier" => h.request = f.request_header_modifier.as_ref().map(header_ops),
                            "ResponseHeaderModifier" => {
                                h.response = f.response_header_modifier.as_ref().map(header_ops)
                            }
                            // Lifted to the rule when the backend is the only one.
                            t if rule.backends.len() == 1 && LIFTED.contains(&t) => {}
                            other => diags.push(Diagnostic::warning(
                                r.origin.locate(&format!("{rpath}.backendRefs[{bi}].filters")),
                                code::NOT_SUPPORTED,
                                r.key(),
                                format!(
                                    "{rpath}.backendRefs[{bi}]: backend filter `{other}` is not supported; ignored"
                                ),
                            )),
                        }
                    }
                    let has_h = h.request.is_some() || h.response.is_some();
                    dests.push(HttpRouteDestination {
                        destination: Destination { host, subset: None, port: Some(PortSelector { number: port }) },
                        weight: Some(i32::try_from(weight).unwrap_or(i32::MAX)),
                        headers: has_h.then_some(h),
                    });
                }
                Backend::Invalid(reason, msg) => {
                    if weight > 0 {
                        invalid.push(format!("{reason}: {msg}"));
                        invalid_weight += weight;
                    }
                }
            }
        }
        if !invalid.is_empty() {
            let what = if dests.is_empty() {
                "requests to this rule get 500"
            } else {
                "the requests its weight would take get 500, the rest go to the valid backends"
            };
            diags.push(Diagnostic::warning(
                r.origin.locate(&format!("{rpath}.backendRefs")),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                r.key(),
                format!("{rpath}.backendRefs: {}; {what}", invalid.join("; ")),
            ));
        }
        let direct_500 = || {
            Some(HttpDirectResponse { status: 500, body: Some(HttpBody { string: Some(String::new()), bytes: None }) })
        };
        // The spec: requests that would go to an invalid backend get 500, the others are routed
        // by weight. The invalid share becomes a 500 abort of that percentage; the valid
        // destinations keep their relative weights for the rest.
        let valid_weight: i64 = dests.iter().map(|d| i64::from(d.weight.unwrap_or(0))).sum();
        let invalid_share = (invalid_weight > 0 && valid_weight > 0).then(|| {
            #[allow(clippy::cast_precision_loss)]
            let pct = invalid_weight as f64 * 100.0 / (invalid_weight + valid_weight) as f64;
            HttpFaultInjection {
                abort: Some(FaultAbort {
                    http_status: Some(500),
                    percentage: Some(Percent { value: pct }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        });

        for (mi, m) in matches.iter().enumerate() {
            // Istio's split of a segment prefix: `/p` is exactly `/p` or a prefix `/p/`.
            let (kind, value) = (&m.path.0, &m.path.1);
            let parts: Vec<(StringMatch, PartKind)> = match kind.as_str() {
                "Exact" => vec![(StringMatch { exact: Some(value.clone()), ..Default::default() }, PartKind::Exact)],
                "RegularExpression" => {
                    vec![(StringMatch { regex: Some(value.clone()), ..Default::default() }, PartKind::Regex)]
                }
                _ => {
                    let p = value.trim_end_matches('/');
                    if p.is_empty() {
                        vec![(StringMatch { prefix: Some("/".into()), ..Default::default() }, PartKind::Prefix)]
                    } else {
                        vec![
                            (StringMatch { exact: Some(p.to_string()), ..Default::default() }, PartKind::PrefixExact),
                            (StringMatch { prefix: Some(format!("{p}/")), ..Default::default() }, PartKind::Prefix),
                        ]
                    }
                }
            };
            let rank = match kind.as_str() {
                "Exact" => 0,
                "RegularExpression" => 2,
                _ => 1,
            };
            let plen = if rank == 1 { value.trim_end_matches('/').len() } else { value.len() };
            for (pi, (uri, part)) in parts.into_iter().enumerate() {
                let mut hm = HttpMatchRequest { uri: Some(uri), ..Default::default() };
                if let Some(me) = &m.method {
                    hm.method = Some(StringMatch { exact: Some(me.clone()), ..Default::default() });
                }
                for h in &m.headers {
                    hm.headers.insert(h.name.to_ascii_lowercase(), value_match(h));
                }
                for q in &m.query {
                    hm.query_params.insert(q.name.clone(), value_match(q));
                }
                let mut route = HttpRoute {
                    name: Some(format!("{}.{}.{ri}.{mi}", r.namespace(), r.name())),
                    matches: vec![hm],
                    timeout: rule.timeout.clone(),
                    retries: rule.retry.clone(),
                    mirrors: mirrors.clone(),
                    headers: (headers.request.is_some() || headers.response.is_some()).then(|| headers.clone()),
                    cors_policy: cors.clone(),
                    ..Default::default()
                };
                if fail.is_some() {
                    route.direct_response = direct_500();
                    route.mirrors.clear();
                } else if let Some((red, path)) = &redirect {
                    let mut red = red.clone();
                    red.uri = path.as_ref().and_then(|pm| modified_path(pm, value, part, true));
                    route.redirect = Some(red);
                } else if dests.is_empty() {
                    route.direct_response = direct_500();
                } else {
                    route.route = dests.clone();
                    route.fault = invalid_share.clone();
                    if let Some((host, path)) = &rewrite {
                        let mut rw = HttpRewrite { authority: host.clone(), ..Default::default() };
                        if let Some(pm) = path {
                            if pm.type_ == "ReplaceFullPath" {
                                let full = pm.replace_full_path.clone().unwrap_or_else(|| "/".into());
                                rw.uri_regex_rewrite =
                                    Some(RegexRewrite { match_: "^.*$".into(), rewrite: full.replace('\\', "\\\\") });
                            } else {
                                rw.uri = modified_path(pm, value, part, false);
                            }
                        }
                        route.rewrite = Some(rw);
                    }
                }
                let key: SortKey = (
                    rank,
                    Reverse(plen),
                    u8::from(m.method.is_none()),
                    Reverse(m.headers.len()),
                    Reverse(m.query.len()),
                    order,
                    ri,
                    mi,
                    pi,
                );
                out.push((key, route));
            }
        }
    }
    out
}

/// Backend filters that act on the whole request: with a single backend they are the rule's.
const LIFTED: [&str; 4] = ["URLRewrite", "RequestRedirect", "RequestMirror", "CORS"];

fn with_lifted(rule: &[HttpRouteFilter], backends: &[BackendRef]) -> Vec<HttpRouteFilter> {
    let mut out = rule.to_vec();
    if let [b] = backends {
        out.extend(b.filters.iter().filter(|f| LIFTED.contains(&f.type_.as_str())).cloned());
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Exact,
    Regex,
    /// The exact `/p` half of a `PathPrefix /p` match.
    PrefixExact,
    /// The `/p/` half (or `/`).
    Prefix,
}

/// The path a redirect or rewrite gives. Rewrites use Istio's `rewrite.uri`, which replaces the
/// matched prefix of a prefix match and the whole path otherwise; a redirect's `uri` replaces the
/// whole path, except with the `%PREFIX(N)%` marker.
fn modified_path(pm: &PathModifier, value: &str, part: PartKind, redirect: bool) -> Option<String> {
    if pm.type_ == "ReplaceFullPath" {
        return Some(pm.replace_full_path.clone().unwrap_or_else(|| "/".into()));
    }
    let r = pm.replace_prefix_match.clone().unwrap_or_else(|| "/".into());
    match part {
        PartKind::Exact | PartKind::PrefixExact | PartKind::Regex => Some(r),
        // The data plane's `%PREFIX(N)%` marker: replace the matched `/p/` (N bytes).
        PartKind::Prefix if redirect => {
            let p = value.trim_end_matches('/');
            let n = if p.is_empty() { 1 } else { p.len() + 1 };
            Some(format!("%PREFIX({n})%{}/", r.trim_end_matches('/')))
        }
        PartKind::Prefix => Some(format!("{}/", r.trim_end_matches('/'))),
    }
}

/// The Gateway API's CORS filter as Istio's `corsPolicy`: origins with a `*` become anchored
/// regexes (`https://*.bar.com`), `*` alone any origin.
fn cors_policy(v: &serde_json::Value) -> CorsPolicy {
    let list = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let allow_origins = list("allowOrigins")
        .into_iter()
        .map(|o| {
            if o == "*" {
                StringMatch { regex: Some(".*".into()), ..Default::default() }
            } else if o.contains('*') {
                let re = o.split('*').map(regex::escape).collect::<Vec<_>>().join("[^/]*");
                StringMatch { regex: Some(re), ..Default::default() }
            } else {
                StringMatch { exact: Some(o), ..Default::default() }
            }
        })
        .collect();
    CorsPolicy {
        allow_origins,
        allow_methods: list("allowMethods"),
        allow_headers: list("allowHeaders"),
        expose_headers: list("exposeHeaders"),
        max_age: v.get("maxAge").and_then(|m| m.as_i64()).map(|s| format!("{s}s")),
        allow_credentials: v.get("allowCredentials").and_then(|b| b.as_bool()),
        ..Default::default()
    }
}

/// Gateway API header values are literal text: `%` is escaped so Istio's `%VAR%` templates never
/// read one (`100%` stays `100%`).
fn header_ops(m: &HeaderModifier) -> HeaderOperations {
    let lit = |v: &str| v.replace('%', "%%");
    HeaderOperations {
        set: m.set.iter().map(|h| (h.name.to_ascii_lowercase(), lit(&h.value))).collect(),
        add: m.add.iter().map(|h| (h.name.to_ascii_lowercase(), lit(&h.value))).collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}
