//! `VirtualService`: Istio's `ValidateVirtualService` and `validateHTTPRoute` with its helpers
//! (route/redirect/directResponse exclusivity, matches, headers, CORS, faults, retries,
//! rewrites, mirrors, destinations, TLS and TCP routes).

use super::{
    dot, dot_ix, export_to, idx, is_dns1123_label, is_ip, is_jwt_claim_route, set, validate_fqdn, validate_header_name,
    validate_header_name_or_claim, validate_ip_subnet, validate_percent_int, validate_percentage, validate_regex,
    validate_wildcard_domain, Cx,
};
use crate::host;
use base64::Engine as _;
use portico_api::istio::{
    CorsPolicy, Destination, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest, HttpRedirect, HttpRetry,
    HttpRewrite, HttpRoute, HttpRouteDestination, L4MatchAttributes, RouteDestination, TcpRoute, TlsMatchAttributes,
    TlsRoute, VirtualService,
};
use std::collections::BTreeMap;
use std::fmt;

/// What a VirtualService applies to, from its `gateways`.
struct Scope {
    /// Bound to gateways only (`gateways` set and `mesh` not among them).
    to_gateway: bool,
    /// Applies to sidecars (`gateways` empty, or `mesh` listed).
    to_mesh: bool,
    /// True when some TLS route matches on SNI hosts (Istio allows `outbound_` SNI names then).
    sni: bool,
}

pub(super) fn validate(cx: &mut Cx<'_>, vs: &VirtualService) {
    let delegate = vs.hosts.is_empty();
    if delegate {
        // No hosts: this can only be a delegate, which carries HTTP routes only.
        if !vs.gateways.is_empty() {
            cx.error(&"spec.gateways", "a delegate VirtualService (one without hosts) must not specify gateways");
        }
        if !vs.tls.is_empty() {
            cx.error(&"spec.tls", "a delegate VirtualService (one without hosts) must not have tls routes");
        }
        if !vs.tcp.is_empty() {
            cx.error(&"spec.tcp", "a delegate VirtualService (one without hosts) must not have tcp routes");
        }
    }
    let to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
    let scope = Scope {
        to_gateway,
        to_mesh: !to_gateway,
        sni: vs.tls.iter().any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty())),
    };
    gateway_names(cx, &"spec.gateways", &vs.gateways);

    if !scope.to_gateway {
        for (i, r) in vs.http.iter().enumerate() {
            for (j, m) in r.matches.iter().enumerate() {
                for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                    for name in map.keys().filter(|n| is_jwt_claim_route(n)) {
                        cx.error(
                            &format!("spec.http[{i}].match[{j}].{field}.{name}"),
                            "JWT claim based routing is only supported on gateways: list the gateways in \
                             spec.gateways (without `mesh`)",
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    for (i, h) in vs.hosts.iter().enumerate() {
        let p = idx(&"spec.hosts", i);
        let r = if scope.to_gateway { gateway_bound_domain(scope.sni, h) } else { validate_wildcard_domain(h) };
        match r {
            Err(e) if !is_ip(h) => {
                all_hosts_valid = false;
                cx.error(&p, e);
            }
            Ok(()) if scope.to_mesh && h == "*" => {
                all_hosts_valid = false;
                cx.error(
                    &p,
                    "wildcard host `*` is not allowed for VirtualServices bound to the mesh: list the gateways in \
                     spec.gateways",
                );
            }
            _ => {}
        }
    }
    if all_hosts_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                let (a, b) = (&vs.hosts[i], &vs.hosts[j]);
                if host::matches(a, b) || host::matches(b, a) {
                    cx.error(
                        &idx(&"spec.hosts", j),
                        format!("duplicate hosts in VirtualService: {a:?} (spec.hosts[{i}]) and {b:?} overlap"),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        cx.error(&"spec", "a VirtualService needs at least one of `http`, `tcp` or `tls` routes");
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(cx, &idx(&"spec.http", i), r, delegate);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        tls_route(cx, &idx(&"spec.tls", i), r, vs, &scope);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        tcp_route(cx, &idx(&"spec.tcp", i), r);
    }
    export_to(cx, &"spec.exportTo", &vs.export_to, false, false);
}

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: like a wildcard domain, plus
/// Istio's auto-generated `outbound_.<port>_._.<host>` SNI names when TLS routes match on SNI.
fn gateway_bound_domain(sni: bool, domain: &str) -> Result<(), String> {
    if sni && domain.split('.').next() == Some("outbound_") {
        let rest = &domain["outbound_".len()..];
        // Istio's regexp `outbound_.([0-8].*).*` (unanchored): a digit 0-8 somewhere after one char.
        let ok = rest.char_indices().skip(1).any(|(_, c)| ('0'..='8').contains(&c));
        if !ok {
            return Err(format!("invalid domain name {domain:?}: label \"outbound_\" invalid"));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

/// Istio's `validateGatewayNames`: `name` (an FQDN-like name, e.g. `mesh` or `my-gateway`) or
/// `namespace/name` (both DNS-1123 labels). Istio stops at the first entry without a `/` (a quirk
/// of its code); later entries are still checked here but reported as warnings, as Istio accepts
/// them.
fn gateway_names(cx: &mut Cx<'_>, path: &dyn fmt::Display, names: &[String]) {
    let mut strict = true;
    for (i, name) in names.iter().enumerate() {
        let p = idx(&path, i);
        let mut problems = Vec::new();
        match name.split_once('/') {
            None => {
                if let Some((first, rest)) = name.split_once('.') {
                    let ns = rest.split('.').next().unwrap_or("");
                    cx.warning(
                        &p,
                        format!(
                            "legacy gateway name format {name:?}: prefer `<namespace>/<name>`, here \"{ns}/{first}\""
                        ),
                    );
                }
                if let Err(e) = validate_fqdn(name) {
                    problems.push(format!("invalid gateway name {name:?}: {e}"));
                }
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    problems.push(format!("invalid gateway {name:?}: namespace and name cannot be empty"));
                }
                if !is_dns1123_label(ns) {
                    problems.push(format!("invalid namespace {ns:?} in gateway {name:?}"));
                }
                if !is_dns1123_label(gw) {
                    problems.push(format!("invalid gateway name {gw:?} in {name:?}: must be a DNS-1123 label"));
                }
            }
        }
        for e in problems {
            if strict {
                cx.error(&p, e);
            } else {
                cx.warning(&p, format!("{e} (Istio does not check this entry; it will match no gateway)"));
            }
        }
        if !name.contains('/') {
            strict = false;
        }
    }
}

// ───────────────────────────── HTTP routes ─────────────────────────────

fn http_route(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRoute, in_delegate: bool) {
    route_conflicts(cx, path, r, in_delegate);
    for (i, m) in r.matches.iter().enumerate() {
        match_request(cx, &dot_ix(&path, "match", i), m);
    }
    cx.headers(&dot(&path, "headers"), &r.headers);
    if let Some(c) = &r.cors_policy {
        cors(cx, &dot(&path, "corsPolicy"), c);
    }
    if let Some(f) = &r.fault {
        fault(cx, &dot(&path, "fault"), f);
    }
    if let Some(pct) = r.mirror_percent {
        if pct > 100 {
            cx.error(&dot(&path, "mirrorPercent"), format!("mirrorPercent must be at most 100, got {pct}"));
        }
        cx.warning(&dot(&path, "mirrorPercent"), "`mirrorPercent` is deprecated: use `mirrorPercentage` instead");
    }
    if let Some(pct) = &r.mirror_percentage {
        let v = pct.value;
        if v.is_nan() || !(0.0..=100.0).contains(&v) {
            cx.error(&dot(&path, "mirrorPercentage.value"), format!("mirrorPercentage must be within 0..100, got {v}"));
        }
    }
    if let Some(m) = &r.mirror {
        destination(cx, &dot(&path, "mirror"), m);
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let p = dot_ix(&path, "mirrors", i);
        destination(cx, &dot(&p, "destination"), &m.destination);
        if let Some(pct) = &m.percentage {
            let v = pct.value;
            if v.is_nan() || !(0.0..=100.0).contains(&v) {
                cx.error(&dot(&p, "percentage.value"), format!("mirror percentage must be within 0..100, got {v}"));
            }
        }
    }
    if let Some(rd) = &r.redirect {
        redirect(cx, &dot(&path, "redirect"), rd);
    }
    if let Some(dr) = &r.direct_response {
        direct_response(cx, &dot(&path, "directResponse"), dr);
    }
    if let Some(rt) = &r.retries {
        retry(cx, &dot(&path, "retries"), rt);
    }
    if let Some(rw) = &r.rewrite {
        rewrite(cx, &dot(&path, "rewrite"), rw);
    }
    authority_rewrite(cx, path, r);
    http_destinations(cx, &dot(&path, "route"), &r.route);
    cx.duration(&dot(&path, "timeout"), &r.timeout);
    if let Some(d) = &r.delegate {
        if d.name.is_empty() {
            cx.warning(&dot(&path, "delegate.name"), "delegate.name is empty: this route delegates to nothing");
        }
        if let Some(ns) = d.namespace.as_deref().filter(|ns| !ns.is_empty() && !is_dns1123_label(ns)) {
            cx.warning(&dot(&path, "delegate.namespace"), format!("{ns:?} is not a valid namespace name"));
        }
    }
}

/// Istio's `validateHTTPRouteConflict`: a root route (with `delegate`) has nothing else; otherwise
/// exactly one of `route`, `redirect`, `directResponse`, and no fault/rewrite beside the latter two.
fn route_conflicts(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRoute, in_delegate: bool) {
    if r.delegate.is_some() && !in_delegate {
        if r.redirect.is_some() {
            cx.error(&dot(&path, "redirect"), "a route with `delegate` must not specify `redirect`");
        }
        if !r.route.is_empty() {
            cx.error(&dot(&path, "route"), "a route with `delegate` must not specify `route`");
        }
        return;
    }
    if in_delegate && r.delegate.is_some() {
        cx.error(&dot(&path, "delegate"), "a delegate VirtualService's route cannot delegate again");
    }
    let also = |cx: &mut Cx<'_>, on: bool, field: &str, other: &str| {
        if on {
            cx.error(&dot(&path, field), format!("an HTTP route cannot have both `{field}` and `{other}`"));
        }
    };
    if r.redirect.is_some() {
        also(cx, !r.route.is_empty(), "route", "redirect");
        also(cx, r.fault.is_some(), "fault", "redirect");
        also(cx, r.rewrite.is_some(), "rewrite", "redirect");
        also(cx, r.direct_response.is_some(), "directResponse", "redirect");
    } else if r.direct_response.is_some() {
        also(cx, !r.route.is_empty(), "route", "directResponse");
        also(cx, r.fault.is_some(), "fault", "directResponse");
        also(cx, r.rewrite.is_some(), "rewrite", "directResponse");
    } else if r.route.is_empty() {
        cx.error(path, "an HTTP route needs one of `route`, `redirect` or `directResponse`");
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        cx.error(&dot(&path, "mirrors"), "an HTTP route cannot have both `mirror` and `mirrors`");
    }
}

fn match_request(cx: &mut Cx<'_>, path: &dyn fmt::Display, m: &HttpMatchRequest) {
    let headers = dot(&path, "headers");
    for (name, sm) in &m.headers {
        let p = dot(&headers, name);
        cx.check(&p, validate_header_name_or_claim(name));
        cx.string_match(&p, sm, false);
    }
    let without_headers = dot(&path, "withoutHeaders");
    for (name, sm) in &m.without_headers {
        let p = dot(&without_headers, name);
        cx.check(&p, validate_header_name_or_claim(name));
        // `regex: "*"` is not RE2: Istio translates it to a presence match.
        if sm.regex.as_deref() != Some("*") {
            cx.string_match(&p, sm, false);
        }
    }
    // Envoy allows an empty path prefix (matches everything), not an empty scheme/method/authority prefix.
    if let Some(u) = &m.uri {
        cx.string_match(&dot(&path, "uri"), u, true);
    }
    for (field, sm) in [("scheme", &m.scheme), ("method", &m.method), ("authority", &m.authority)] {
        if let Some(sm) = sm {
            cx.string_match(&dot(&path, field), sm, false);
        }
    }
    for (name, sm) in &m.query_params {
        cx.string_match(&dot(&dot(&path, "queryParams"), name), sm, false);
    }
    if let Some(port) = m.port.filter(|p| *p != 0) {
        cx.port(&dot(&path, "port"), port);
    }
    cx.labels(&dot(&path, "sourceLabels"), &m.source_labels);
    gateway_names(cx, &dot(&path, "gateways"), &m.gateways);
    if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !ns.is_empty()) {
        if !is_dns1123_label(ns) {
            cx.error(&dot(&path, "sourceNamespace"), format!("sourceNamespace {ns:?} is not a valid namespace name"));
        }
    }
}

/// Istio's `validateAuthorityRewrite`: the authority may be rewritten in one place only.
fn authority_rewrite(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRoute) {
    let mut current = r.rewrite.as_ref().and_then(|rw| rw.authority.clone()).filter(|a| !a.is_empty());
    let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else { return };
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map {
            if !(k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host")) {
                continue;
            }
            if let Some(have) = &current {
                cx.error(
                    &format!("{path}.headers.request.{field}.{k}"),
                    format!("the authority cannot be set more than once: already {have:?}, here {v:?}"),
                );
                return;
            }
            current = Some(v.clone());
        }
    }
}

fn cors(cx: &mut Cx<'_>, path: &dyn fmt::Display, c: &CorsPolicy) {
    if !c.allow_origin.is_empty() {
        cx.warning(&dot(&path, "allowOrigin"), "`allowOrigin` is deprecated: use `allowOrigins` (StringMatch) instead");
    }
    for (i, o) in c.allow_origins.iter().enumerate() {
        let p = dot_ix(&path, "allowOrigins", i);
        let value = o.exact.as_deref().or(o.prefix.as_deref()).or(o.regex.as_deref()).unwrap_or("");
        if value.is_empty() {
            cx.error(&p, "an allowOrigins entry needs a non-empty `exact`, `prefix` or `regex`");
        } else {
            cx.string_match(&p, o, false);
        }
    }
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"];
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            cx.error(
                &dot_ix(&path, "allowMethods", i),
                format!("{m:?} is not a supported HTTP method (use one of {})", METHODS.join(", ")),
            );
        }
    }
    for (field, list) in [("allowHeaders", &c.allow_headers), ("exposeHeaders", &c.expose_headers)] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" {
                cx.check(&format!("{path}.{field}[{i}]"), validate_header_name(h));
            }
        }
    }
    if let Some(max_age) = &c.max_age {
        let p = dot(&path, "maxAge");
        match super::validate_duration(max_age) {
            Err(e) => cx.error(&p, e),
            Ok(d) if d.subsec_nanos() != 0 => cx.error(&p, format!("maxAge `{max_age}` must be whole seconds")),
            Ok(_) => {}
        }
    }
}

fn fault(cx: &mut Cx<'_>, path: &dyn fmt::Display, f: &HttpFaultInjection) {
    if f.abort.is_none() && f.delay.is_none() {
        cx.error(path, "a fault needs an `abort` and/or a `delay`");
    }
    if let Some(a) = &f.abort {
        let p = dot(&path, "abort");
        if let Some(pct) = &a.percentage {
            cx.check(&dot(&p, "percentage.value"), validate_percentage(pct.value));
        }
        let kinds = [a.http_status.is_some(), a.grpc_status.is_some(), a.http2_error.is_some()];
        match kinds.iter().filter(|b| **b).count() {
            0 => cx.warning(&p, "abort is configured, but no error type is set (httpStatus or grpcStatus)"),
            1 => {}
            _ => cx.error(&p, "set only one of `httpStatus`, `grpcStatus` or `http2Error`"),
        }
        if let Some(status) = a.http_status {
            // Istio's check lets 600 through, but Envoy refuses it (200 ≤ status < 600).
            if !(200..600).contains(&status) {
                cx.error(&dot(&p, "httpStatus"), format!("HTTP status {status} is not in range 200-599"));
            }
        }
        if let Some(g) = &a.grpc_status {
            if !crate::snapshot::GRPC_STATUS_NAMES.contains(&g.as_str()) {
                cx.error(
                    &dot(&p, "grpcStatus"),
                    format!(
                        "gRPC status {g:?} is not supported: use a code name such as \"NOT_FOUND\" or \"UNAVAILABLE\""
                    ),
                );
            }
        }
        if a.http2_error.is_some() {
            cx.error(&dot(&p, "http2Error"), "HTTP/2 abort fault injection is not supported");
        }
    }
    if let Some(d) = &f.delay {
        let p = dot(&path, "delay");
        if let Some(pct) = &d.percentage {
            cx.check(&dot(&p, "percentage.value"), validate_percentage(pct.value));
        }
        if let Some(pct) = d.percent {
            cx.check(&dot(&p, "percent"), validate_percent_int(i64::from(pct)));
            cx.warning(&dot(&p, "percent"), "`percent` is deprecated: use `percentage.value` instead");
        }
        match (&d.fixed_delay, &d.exponential_delay) {
            (Some(_), Some(_)) => cx.error(&p, "set only one of `fixedDelay` or `exponentialDelay`"),
            (None, None) => cx.warning(&p, "delay has no `fixedDelay`: Istio ignores this delay"),
            _ => {}
        }
        cx.duration(&dot(&p, "fixedDelay"), &d.fixed_delay);
        if d.exponential_delay.is_some() {
            cx.duration(&dot(&p, "exponentialDelay"), &d.exponential_delay);
            cx.error(&dot(&p, "exponentialDelay"), "exponentialDelay is not supported: use fixedDelay");
        }
    }
}

fn redirect(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRedirect) {
    if !set(&r.uri) && !set(&r.authority) && r.port.is_none() && r.derive_port.is_none() && !set(&r.scheme) {
        cx.error(path, "a redirect must specify at least one of `uri`, `authority`, `scheme`, `port` or `derivePort`");
    }
    if r.port.is_some() && r.derive_port.is_some() {
        cx.error(&dot(&path, "derivePort"), "set only one of `port` or `derivePort`");
    }
    if let Some(code) = r.redirect_code.filter(|c| *c != 0) {
        let p = dot(&path, "redirectCode");
        if !(300..=399).contains(&code) {
            cx.error(&p, format!("{code} is not a valid redirect code: it must be 3xx"));
        } else if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            cx.warning(&p, format!("redirect code {code} is not supported by Envoy (301, 302, 303, 307, 308): Istio drops this redirect"));
        }
    }
    if let Some(s) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
        if s != "http" && s != "https" {
            cx.error(&dot(&path, "scheme"), format!("invalid redirect scheme {s:?}: must be \"http\" or \"https\""));
        }
    }
    if let Some(port) = r.port.filter(|p| *p > 0) {
        cx.port(&dot(&path, "port"), port);
    }
}

fn direct_response(cx: &mut Cx<'_>, path: &dyn fmt::Display, d: &HttpDirectResponse) {
    if let Some(body) = &d.body {
        let p = dot(&path, "body");
        let mut size = 0;
        match (&body.string, &body.bytes) {
            (Some(_), Some(_)) => cx.error(&p, "set only one of `string` or `bytes`"),
            (Some(s), None) => size = s.len(),
            (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                Ok(v) => size = v.len(),
                Err(e) => cx.error(&dot(&p, "bytes"), format!("`bytes` must be base64: {e}")),
            },
            (None, None) => {}
        }
        if size > 1024 * 1024 {
            cx.error(&p, format!("direct response body is {size} bytes: it must be less than 1MB"));
        } else if size > 100 * 1024 {
            cx.warning(&p, format!("large direct response body ({size} bytes) may impact control plane performance"));
        }
    }
    // Istio's check lets 600 through, but Envoy refuses it (200 ≤ status < 600).
    if !(200..600).contains(&d.status) {
        cx.error(&dot(&path, "status"), format!("HTTP status {} is not in range 200-599", d.status));
    }
}

/// Envoy's `x-envoy-retry-on` / `x-envoy-retry-grpc-on` policies.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Status codes Go's `http.StatusText` knows: Istio accepts exactly these as numeric retryOn tokens.
fn is_known_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451
        | 500..=508 | 510 | 511)
}

fn retry(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRetry) {
    if r.attempts < 0 {
        cx.error(&dot(&path, "attempts"), format!("attempts cannot be negative, got {}", r.attempts));
    }
    if r.attempts == 0 && (r.per_try_timeout.is_some() || set(&r.retry_on) || r.retry_remote_localities.is_some()) {
        cx.error(
            &dot(&path, "attempts"),
            "retries are configured but attempts is 0 (retries disabled): set attempts, or remove the other fields",
        );
    }
    cx.duration(&dot(&path, "perTryTimeout"), &r.per_try_timeout);
    cx.duration(&dot(&path, "backoff"), &r.backoff);
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        for token in on.split(',') {
            let numeric = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
            let ok = RETRY_ON.contains(&token) || (numeric && token.parse::<u32>().is_ok_and(is_known_status));
            if !ok {
                cx.error(
                    &dot(&path, "retryOn"),
                    format!(
                        "{token:?} is not a valid retryOn policy: use comma-separated Envoy policies (e.g. \
                         \"5xx,reset,connect-failure\", no spaces) or HTTP status codes"
                    ),
                );
            }
        }
    }
}

fn rewrite(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &HttpRewrite) {
    if set(&r.uri) && r.uri_regex_rewrite.is_some() {
        cx.error(path, "a rewrite may contain only one of `uri` or `uriRegexRewrite`");
    }
    if !set(&r.uri) && r.uri_regex_rewrite.is_none() && !set(&r.authority) {
        cx.error(path, "a rewrite must specify at least one of `uri`, `uriRegexRewrite` or `authority`");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let p = dot(&path, "uriRegexRewrite");
        if rr.match_.is_empty() || rr.rewrite.is_empty() {
            cx.error(&p, "uriRegexRewrite requires both `match` and `rewrite`");
        } else {
            cx.check(&dot(&p, "match"), validate_regex(&rr.match_));
        }
    }
}

/// Istio's `validateDestination`.
fn destination(cx: &mut Cx<'_>, path: &dyn fmt::Display, d: &Destination) {
    let p = dot(&path, "host");
    if d.host == "*" {
        cx.error(&p, "invalid destination host `*`: name a service");
    } else if d.host.is_empty() {
        cx.error(&p, "destination host is required");
    } else {
        cx.check(&p, validate_wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        let p = dot(&path, "subset");
        if subset.is_empty() {
            cx.error(&p, "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            cx.error(&p, format!("invalid subset name {subset:?}: must be a DNS-1123 label"));
        }
    }
    if let Some(port) = &d.port {
        cx.port(&dot(&path, "port.number"), port.number);
    }
}

fn weights(cx: &mut Cx<'_>, path: &dyn fmt::Display, weights: &[Option<i32>]) {
    let mut total: i64 = 0;
    for (i, w) in weights.iter().enumerate() {
        let w = w.unwrap_or(0);
        if w < 0 {
            cx.error(&dot(&idx(&path, i), "weight"), format!("weight {w} must not be negative"));
        }
        total += i64::from(w);
    }
    if weights.len() > 1 && total == 0 {
        cx.error(
            path,
            "the destinations' weights add up to 0: give at least one destination a positive weight (weights are \
             relative, they need not sum to 100)",
        );
    }
}

fn http_destinations(cx: &mut Cx<'_>, path: &dyn fmt::Display, ds: &[HttpRouteDestination]) {
    for (i, d) in ds.iter().enumerate() {
        let p = idx(&path, i);
        cx.headers(&dot(&p, "headers"), &d.headers);
        destination(cx, &dot(&p, "destination"), &d.destination);
    }
    weights(cx, path, &ds.iter().map(|d| d.weight).collect::<Vec<_>>());
}

fn route_destinations(cx: &mut Cx<'_>, path: &dyn fmt::Display, ds: &[RouteDestination]) {
    for (i, d) in ds.iter().enumerate() {
        destination(cx, &dot(&idx(&path, i), "destination"), &d.destination);
    }
    weights(cx, path, &ds.iter().map(|d| d.weight).collect::<Vec<_>>());
}

// ───────────────────────────── TLS and TCP routes ─────────────────────────────

fn tls_route(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &TlsRoute, vs: &VirtualService, scope: &Scope) {
    if r.matches.is_empty() {
        cx.error(&dot(&path, "match"), "a TLS route must have at least one match (with sniHosts)");
    }
    for (i, m) in r.matches.iter().enumerate() {
        tls_match(cx, &dot_ix(&path, "match", i), m, vs, scope);
    }
    if r.route.is_empty() {
        cx.error(&dot(&path, "route"), "a TLS route needs at least one destination in `route`");
    }
    route_destinations(cx, &dot(&path, "route"), &r.route);
}

fn tls_match(cx: &mut Cx<'_>, path: &dyn fmt::Display, m: &TlsMatchAttributes, vs: &VirtualService, scope: &Scope) {
    if m.sni_hosts.is_empty() {
        cx.error(&dot(&path, "sniHosts"), "a TLS match must have at least one SNI host");
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        let p = dot_ix(&path, "sniHosts", i);
        let r = if scope.to_gateway { gateway_bound_domain(true, sni) } else { validate_wildcard_domain(sni) };
        if let Err(e) = r {
            if is_ip(sni) {
                cx.warning(
                    &p,
                    format!("using an IP address ({sni:?}) goes against the SNI spec; most clients do not send one"),
                );
            } else {
                cx.error(&p, e);
            }
            continue;
        }
        if !vs.hosts.iter().any(|h| host::matches(h, sni)) {
            cx.error(
                &p,
                format!(
                    "SNI host {sni:?} is not a compatible subset of any of the VirtualService hosts [{}]",
                    vs.hosts.join(", ")
                ),
            );
        }
    }
    l4_common(cx, path, &m.destination_subnets, m.port, &m.source_labels, &m.gateways);
}

fn tcp_route(cx: &mut Cx<'_>, path: &dyn fmt::Display, r: &TcpRoute) {
    for (i, m) in r.matches.iter().enumerate() {
        tcp_match(cx, &dot_ix(&path, "match", i), m);
    }
    if r.route.is_empty() {
        cx.error(&dot(&path, "route"), "a TCP route needs at least one destination in `route`");
    }
    route_destinations(cx, &dot(&path, "route"), &r.route);
}

fn tcp_match(cx: &mut Cx<'_>, path: &dyn fmt::Display, m: &L4MatchAttributes) {
    l4_common(cx, path, &m.destination_subnets, m.port, &m.source_labels, &m.gateways);
    // Istio does not check sourceSubnet; a bad one matches nothing, so only warn.
    if let Some(s) = m.source_subnet.as_deref().filter(|s| !s.is_empty()) {
        if let Err(e) = validate_ip_subnet(s) {
            cx.warning(&dot(&path, "sourceSubnet"), format!("{e}: this match can never apply"));
        }
    }
}

fn l4_common(
    cx: &mut Cx<'_>,
    path: &dyn fmt::Display,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
) {
    for (i, s) in subnets.iter().enumerate() {
        cx.check(&dot_ix(&path, "destinationSubnets", i), validate_ip_subnet(s));
    }
    if let Some(p) = port.filter(|p| *p != 0) {
        cx.port(&dot(&path, "port"), p);
    }
    cx.labels(&dot(&path, "sourceLabels"), source_labels);
    gateway_names(cx, &dot(&path, "gateways"), gateways);
}
