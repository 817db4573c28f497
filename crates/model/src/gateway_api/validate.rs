//! The Gateway API's own validation: the OpenAPI patterns and CEL rules of its CRDs, which the
//! Kubernetes API server enforces before any controller sees an object. An error here means the
//! API server would refuse the object, so the compiler drops it.

use portico_api::diag::code;
use portico_api::gateway_api::{
    BackendRef, GatewayClass, GrpcRoute, HeaderModifier, HttpRoute, HttpRouteFilter, KubeGateway, L4Route,
    ParentReference, ReferenceGrant, ValueMatch,
};
use portico_api::{Diagnostic, Resource, Spec};
use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

struct Cx<'r> {
    res: &'r Resource,
    key: String,
    out: Vec<Diagnostic>,
}

impl Cx<'_> {
    /// A field that parses but that Portico does not act on yet.
    fn ignored(&mut self, path: &str, set: bool) {
        if set {
            self.out.push(Diagnostic::warning(
                self.res.origin.locate(path),
                code::NOT_SUPPORTED,
                self.key.clone(),
                format!("{path}: not supported yet; ignored"),
            ));
        }
    }

    fn error(&mut self, path: &str, msg: impl fmt::Display) {
        self.out.push(Diagnostic::error(
            self.res.origin.locate(path),
            code::SCHEMA,
            self.key.clone(),
            format!("{path}: {msg}"),
        ));
    }
}

/// Every problem the API server would reject a Gateway API object for.
pub fn validate(res: &Resource) -> Vec<Diagnostic> {
    let mut cx = Cx { res, key: res.key(), out: Vec::new() };
    match &*res.spec {
        Spec::GatewayClass(g) => gateway_class(&mut cx, g),
        Spec::KubeGateway(g) => gateway(&mut cx, g),
        Spec::HttpRoute(h) => http_route(&mut cx, h),
        Spec::GrpcRoute(g) => grpc_route(&mut cx, g),
        Spec::TlsRoute(t) => l4_route(&mut cx, t, true),
        Spec::TcpRoute(t) => l4_route(&mut cx, t, false),
        Spec::ReferenceGrant(g) => reference_grant(&mut cx, g),
        _ => {}
    }
    cx.out
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain (lowercase labels joined by dots).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The Gateway API's `Hostname`: a subdomain, optionally with a leading `*.` label; no IPs.
fn is_hostname(s: &str, wildcard: bool) -> bool {
    let rest = match s.strip_prefix("*.") {
        Some(r) if wildcard => r,
        Some(_) => return false,
        None => s,
    };
    is_dns_subdomain(rest) && rest.parse::<IpAddr>().is_err()
}

fn is_group(s: &str) -> bool {
    s.is_empty() || is_dns_subdomain(s)
}

fn is_kind(s: &str) -> bool {
    let mut b = s.bytes();
    !s.is_empty()
        && s.len() <= 63
        && b.next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !s.ends_with('-')
}

/// `HTTPHeaderName`: an RFC 7230 token.
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// `Duration`: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`.
fn is_duration(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let mut parts = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 5 {
            return false;
        }
        if b[i..].starts_with(b"ms") {
            i += 2;
        } else if i < b.len() && matches!(b[i], b'h' | b'm' | b's') {
            i += 1;
        } else {
            return false;
        }
        parts += 1;
    }
    (1..=4).contains(&parts)
}

/// A path value: absolute, only URI path characters, no `//`, `/./`, `/../` and no trailing `/.`, `/..`.
fn path_error(s: &str) -> Option<&'static str> {
    if !s.starts_with('/') {
        return Some("must be an absolute path (start with `/`)");
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            if !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return Some("has a `%` that is not a percent-encoded byte");
            }
            i += 3;
            continue;
        }
        if !(c.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&c)) {
            return Some("has characters a URI path may not contain");
        }
        i += 1;
    }
    if s.contains("//") || s.contains("/./") || s.contains("/../") || s.ends_with("/.") || s.ends_with("/..") {
        return Some("must not contain `//`, `/./` or `/../` (nor end in `/.` or `/..`)");
    }
    None
}

fn gateway_class(cx: &mut Cx<'_>, g: &GatewayClass) {
    cx.ignored("spec.parametersRef", g.parameters_ref.is_some());
    // `controllerName`: a domain-prefixed path, `example.net/gateway-controller`.
    let ok = g.controller_name.split_once('/').is_some_and(|(d, p)| is_dns_subdomain(d) && !p.is_empty());
    if !ok {
        cx.error(
            "spec.controllerName",
            format!("`{}` is not a domain-prefixed path (like `portico.dev/gateway-controller`)", g.controller_name),
        );
    }
}

fn gateway(cx: &mut Cx<'_>, g: &KubeGateway) {
    cx.ignored("spec.infrastructure", g.infrastructure.is_some());
    cx.ignored("spec.backendTLS", g.backend_tls.is_some());
    cx.ignored("spec.tls", g.tls.is_some());
    cx.ignored("spec.allowedListeners", g.allowed_listeners.is_some());
    cx.ignored("spec.defaultScope", g.default_scope.is_some());
    if g.gateway_class_name.is_empty() {
        cx.error("spec.gatewayClassName", "required");
    }
    if g.listeners.is_empty() {
        cx.error("spec.listeners", "at least one listener is required");
    }
    let mut names = HashSet::new();
    let mut combos = HashSet::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let p = format!("spec.listeners[{i}]");
        if !is_dns_label(&l.name) {
            cx.error(
                &format!("{p}.name"),
                format!("`{}` is not a valid listener name (lowercase letters, digits and `-`)", l.name),
            );
        }
        if !names.insert(l.name.as_str()) {
            cx.error(&format!("{p}.name"), format!("listener name `{}` must be unique within the Gateway", l.name));
        }
        if !(1..=65535).contains(&l.port) {
            cx.error(&format!("{p}.port"), format!("{} is not a port number (1-65535)", l.port));
        }
        // Any token passes the schema (an unknown one is the controller's `UnsupportedProtocol`).
        let token = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
        let proto_ok =
            token(&l.protocol) || l.protocol.split_once('/').is_some_and(|(d, n)| is_dns_subdomain(d) && token(n));
        if !proto_ok {
            cx.error(
                &format!("{p}.protocol"),
                format!("`{}` is not a protocol (HTTP, HTTPS, TLS, TCP, UDP or domain/name)", l.protocol),
            );
        }
        let l4 = matches!(l.protocol.as_str(), "TCP" | "UDP");
        if let Some(h) = &l.hostname {
            if l4 {
                cx.error(&format!("{p}.hostname"), format!("hostname must not be set for protocol {}", l.protocol));
            } else if !is_hostname(h, true) {
                cx.error(&format!("{p}.hostname"), format!("`{h}` is not a valid hostname"));
            }
        }
        if l.tls.is_some() && (l4 || l.protocol == "HTTP") {
            cx.error(&format!("{p}.tls"), format!("tls must not be set for protocol {}", l.protocol));
        }
        if let Some(t) = &l.tls {
            cx.ignored(&format!("{p}.tls.frontendValidation"), t.frontend_validation.is_some());
            cx.ignored(&format!("{p}.tls.options"), !t.options.is_empty());
            match t.mode.as_deref() {
                None | Some("Terminate") => {
                    if t.certificate_refs.is_empty()
                        && t.options.is_empty()
                        && matches!(l.protocol.as_str(), "HTTPS" | "TLS")
                    {
                        cx.error(
                            &format!("{p}.tls.certificateRefs"),
                            "certificateRefs or options must be set when mode is Terminate",
                        );
                    }
                }
                Some("Passthrough") => {
                    if l.protocol == "HTTPS" {
                        cx.error(&format!("{p}.tls.mode"), "tls mode must be Terminate for protocol HTTPS");
                    }
                }
                Some(m) => cx.error(&format!("{p}.tls.mode"), format!("`{m}` is not Terminate or Passthrough")),
            }
        } else if matches!(l.protocol.as_str(), "HTTPS" | "TLS") {
            cx.error(&format!("{p}.tls"), format!("tls must be set for protocol {}", l.protocol));
        }
        if let Some(ar) = &l.allowed_routes {
            if let Some(from) = ar.namespaces.as_ref().and_then(|n| n.from.as_deref()) {
                if !matches!(from, "All" | "Same" | "Selector" | "None") {
                    cx.error(
                        &format!("{p}.allowedRoutes.namespaces.from"),
                        format!("`{from}` is not All, Same, Selector or None"),
                    );
                }
            }
        }
        if !combos.insert((l.port, l.hostname.clone().unwrap_or_default(), l.protocol.clone())) {
            cx.error(&p, "a listener with the same port, protocol and hostname already exists");
        }
    }
    for (i, a) in g.addresses.iter().enumerate() {
        let p = format!("spec.addresses[{i}].value");
        match a.type_.as_deref().unwrap_or("IPAddress") {
            // The value may be left empty for the implementation to choose.
            _ if a.value.is_empty() => {}
            "IPAddress" => {
                if a.value.parse::<IpAddr>().is_err() {
                    cx.error(&p, format!("`{}` is not an IP address", a.value));
                }
            }
            "Hostname" => {
                if !is_hostname(&a.value, false) {
                    cx.error(&p, format!("`{}` is not a hostname", a.value));
                }
            }
            t => {
                if !t.split_once('/').is_some_and(|(d, n)| is_dns_subdomain(d) && !n.is_empty()) {
                    cx.error(
                        &format!("spec.addresses[{i}].type"),
                        format!("`{t}` is not IPAddress, Hostname or a domain-prefixed type"),
                    );
                }
            }
        }
    }
}

fn parent_refs(cx: &mut Cx<'_>, refs: &[ParentReference]) {
    for (i, p) in refs.iter().enumerate() {
        let path = format!("spec.parentRefs[{i}]");
        if p.name.is_empty() {
            cx.error(&format!("{path}.name"), "required");
        }
        if p.port.is_some_and(|x| !(1..=65535).contains(&x)) {
            cx.error(&format!("{path}.port"), "not a port number (1-65535)");
        }
        if let Some(s) = &p.section_name {
            if !is_dns_label(s) {
                cx.error(&format!("{path}.sectionName"), format!("`{s}` is not a valid section name"));
            }
        }
    }
}

fn hostnames(cx: &mut Cx<'_>, hs: &[String]) {
    for (i, h) in hs.iter().enumerate() {
        if !is_hostname(h, true) {
            cx.error(
                &format!("spec.hostnames[{i}]"),
                format!("`{h}` is not a valid hostname (RFC 1123, optionally `*.` first)"),
            );
        }
    }
}

fn backend_ref(cx: &mut Cx<'_>, path: &str, b: &BackendRef) {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    if !is_group(group) {
        cx.error(&format!("{path}.group"), format!("`{group}` is not a valid API group"));
    }
    if !is_kind(kind) {
        cx.error(&format!("{path}.kind"), format!("`{kind}` is not a valid kind"));
    }
    if b.name.is_empty() {
        cx.error(&format!("{path}.name"), "required");
    }
    match b.port {
        Some(p) if !(1..=65535).contains(&p) => {
            cx.error(&format!("{path}.port"), format!("{p} is not a port number (1-65535)"))
        }
        None if group.is_empty() && kind == "Service" => {
            cx.error(path, "must have port for Service reference");
        }
        _ => {}
    }
    if b.weight.is_some_and(|w| !(0..=1_000_000).contains(&w)) {
        cx.error(&format!("{path}.weight"), "must be between 0 and 1000000");
    }
}

fn value_matches(cx: &mut Cx<'_>, path: &str, what: &str, ms: &[ValueMatch], case_insensitive: bool) {
    let mut seen = HashSet::new();
    for (i, m) in ms.iter().enumerate() {
        let p = format!("{path}.{what}[{i}]");
        if what == "headers" && !is_header_name(&m.name) {
            cx.error(&format!("{p}.name"), format!("`{}` is not a valid header name", m.name));
        }
        if what == "queryParams" && !is_header_name(&m.name) {
            cx.error(&format!("{p}.name"), format!("`{}` is not a valid query parameter name", m.name));
        }
        let key = if case_insensitive { m.name.to_ascii_lowercase() } else { m.name.clone() };
        if !seen.insert(key) {
            cx.error(
                &format!("{p}.name"),
                format!("`{}` is matched twice: names must be unique within a match", m.name),
            );
        }
        match m.type_.as_deref() {
            None | Some("Exact") => {}
            Some("RegularExpression") => {
                if regex::Regex::new(&m.value).is_err() {
                    cx.error(&format!("{p}.value"), "not a valid regular expression");
                }
            }
            Some(t) => cx.error(&format!("{p}.type"), format!("`{t}` is not Exact or RegularExpression")),
        }
    }
}

fn header_modifier(cx: &mut Cx<'_>, path: &str, m: &HeaderModifier) {
    let mut seen = HashSet::new();
    for (list, items) in [("set", &m.set), ("add", &m.add)] {
        for (i, h) in items.iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            if !is_header_name(&h.name) {
                cx.error(&format!("{p}.name"), format!("`{}` is not a valid header name", h.name));
            }
            if h.value.contains(['\r', '\n', '\0']) {
                cx.error(&format!("{p}.value"), "a header value must not contain CR, LF or NUL");
            }
            if !seen.insert((list, h.name.to_ascii_lowercase())) {
                cx.error(&format!("{p}.name"), format!("header `{}` appears twice in `{list}`", h.name));
            }
        }
    }
    let mut removed = HashSet::new();
    for (i, h) in m.remove.iter().enumerate() {
        if !removed.insert(h.to_ascii_lowercase()) {
            cx.error(&format!("{path}.remove[{i}]"), format!("header `{h}` is removed twice"));
        }
    }
}

/// Filters of an HTTPRoute/GRPCRoute rule (or backendRef); `http` allows the HTTP-only types.
fn filters(
    cx: &mut Cx<'_>,
    path: &str,
    fs: &[HttpRouteFilter],
    http: bool,
    has_backends: bool,
    prefix_match_only: bool,
) {
    let mut seen = HashSet::new();
    for (i, f) in fs.iter().enumerate() {
        let p = format!("{path}.filters[{i}]");
        let set: Vec<&str> = [
            ("requestHeaderModifier", f.request_header_modifier.is_some()),
            ("responseHeaderModifier", f.response_header_modifier.is_some()),
            ("requestMirror", f.request_mirror.is_some()),
            ("requestRedirect", f.request_redirect.is_some()),
            ("urlRewrite", f.url_rewrite.is_some()),
            ("extensionRef", f.extension_ref.is_some()),
            ("cors", f.cors.is_some()),
            ("externalAuth", f.external_auth.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
        let field = match f.type_.as_str() {
            "RequestHeaderModifier" => "requestHeaderModifier",
            "ResponseHeaderModifier" => "responseHeaderModifier",
            "RequestMirror" => "requestMirror",
            "RequestRedirect" if http => "requestRedirect",
            "URLRewrite" if http => "urlRewrite",
            "ExtensionRef" => "extensionRef",
            "CORS" if http => "cors",
            "ExternalAuth" if http => "externalAuth",
            t => {
                cx.error(&format!("{p}.type"), format!("`{t}` is not a filter type of this route"));
                continue;
            }
        };
        if !set.contains(&field) {
            cx.error(&p, format!("filter.{field} must be specified for {} filter.type", f.type_));
        }
        for other in set.iter().filter(|s| **s != field) {
            cx.error(
                &format!("{p}.{other}"),
                format!("filter.{other} must be nil if the filter.type is not {}", f.type_),
            );
        }
        // Every type but RequestMirror and ExtensionRef may appear once per rule.
        if !matches!(f.type_.as_str(), "RequestMirror" | "ExtensionRef") && !seen.insert(f.type_.as_str()) {
            cx.error(&p, format!("{} filter cannot be repeated", f.type_));
        }
        if let Some(m) = f.request_header_modifier.as_ref().filter(|_| field == "requestHeaderModifier") {
            header_modifier(cx, &format!("{p}.requestHeaderModifier"), m);
        }
        if let Some(m) = f.response_header_modifier.as_ref().filter(|_| field == "responseHeaderModifier") {
            header_modifier(cx, &format!("{p}.responseHeaderModifier"), m);
        }
        if let Some(m) = &f.request_mirror {
            backend_ref(cx, &format!("{p}.requestMirror.backendRef"), &m.backend_ref);
            if m.percent.is_some() && m.fraction.is_some() {
                cx.error(&format!("{p}.requestMirror"), "only one of percent or fraction may be set");
            }
            if m.percent.is_some_and(|x| !(0..=100).contains(&x)) {
                cx.error(&format!("{p}.requestMirror.percent"), "must be between 0 and 100");
            }
            if let Some(fr) = &m.fraction {
                let d = fr.denominator.unwrap_or(100);
                if d < 1 || fr.numerator < 0 || fr.numerator > d {
                    cx.error(
                        &format!("{p}.requestMirror.fraction"),
                        "numerator must be between 0 and the denominator (≥ 1)",
                    );
                }
            }
        }
        if let Some(r) = &f.request_redirect {
            let rp = format!("{p}.requestRedirect");
            if let Some(s) = &r.scheme {
                if !matches!(s.as_str(), "http" | "https") {
                    cx.error(&format!("{rp}.scheme"), format!("`{s}` is not http or https"));
                }
            }
            if let Some(h) = &r.hostname {
                if !is_hostname(h, false) {
                    cx.error(&format!("{rp}.hostname"), format!("`{h}` is not a precise hostname (no wildcards)"));
                }
            }
            if r.port.is_some_and(|x| !(1..=65535).contains(&x)) {
                cx.error(&format!("{rp}.port"), "not a port number (1-65535)");
            }
            if let Some(c) = r.status_code {
                if ![301, 302, 303, 307, 308].contains(&c) {
                    cx.error(&format!("{rp}.statusCode"), format!("{c} is not one of 301, 302, 303, 307, 308"));
                }
            }
            if let Some(pm) = &r.path {
                path_modifier(cx, &format!("{rp}.path"), pm, prefix_match_only);
            }
        }
        if let Some(u) = &f.url_rewrite {
            let up = format!("{p}.urlRewrite");
            if let Some(h) = &u.hostname {
                if !is_hostname(h, false) {
                    cx.error(&format!("{up}.hostname"), format!("`{h}` is not a precise hostname (no wildcards)"));
                }
            }
            if let Some(pm) = &u.path {
                path_modifier(cx, &format!("{up}.path"), pm, prefix_match_only);
            }
        }
        if let Some(ea) = f.external_auth.as_ref().filter(|_| field == "externalAuth") {
            let proto = ea.get("protocol").and_then(|v| v.as_str());
            match proto {
                Some("HTTP") | Some("GRPC") => {}
                Some(other) => {
                    cx.error(&format!("{p}.externalAuth.protocol"), format!("`{other}` is not HTTP or GRPC"))
                }
                None => cx.error(&format!("{p}.externalAuth.protocol"), "required"),
            }
            if let Some(path) = ea.get("http").and_then(|h| h.get("path")).and_then(|v| v.as_str()) {
                if let Some(why) = path_error(path) {
                    cx.error(&format!("{p}.externalAuth.http.path"), format!("`{path}` {why}"));
                }
            }
        }
    }
    if seen.contains("RequestRedirect") && seen.contains("URLRewrite") {
        cx.error(&format!("{path}.filters"), "may specify either RequestRedirect or URLRewrite, but not both");
    }
    if seen.contains("RequestRedirect") && has_backends {
        cx.error(&format!("{path}.filters"), "RequestRedirect filter must not be used together with backendRefs");
    }
}

fn path_modifier(cx: &mut Cx<'_>, path: &str, pm: &portico_api::gateway_api::PathModifier, prefix_match_only: bool) {
    match pm.type_.as_str() {
        "ReplaceFullPath" => {
            if pm.replace_full_path.is_none() || pm.replace_prefix_match.is_some() {
                cx.error(path, "replaceFullPath must be specified (and only it) when type is ReplaceFullPath");
            }
        }
        "ReplacePrefixMatch" => {
            if pm.replace_prefix_match.is_none() || pm.replace_full_path.is_some() {
                cx.error(path, "replacePrefixMatch must be specified (and only it) when type is ReplacePrefixMatch");
            }
            if !prefix_match_only {
                cx.error(path, "ReplacePrefixMatch may only be used with a PathPrefix match");
            }
        }
        t => cx.error(&format!("{path}.type"), format!("`{t}` is not ReplaceFullPath or ReplacePrefixMatch")),
    }
    for v in [&pm.replace_full_path, &pm.replace_prefix_match].into_iter().flatten() {
        if let Some(why) = path_error(v) {
            cx.error(path, format!("`{v}` {why}"));
        }
    }
}

fn http_route(cx: &mut Cx<'_>, h: &HttpRoute) {
    parent_refs(cx, &h.parent_refs);
    hostnames(cx, &h.hostnames);
    for (ri, rule) in h.rules.iter().enumerate() {
        let rp = format!("spec.rules[{ri}]");
        let mut only_prefix = true;
        for (mi, m) in rule.matches.iter().enumerate() {
            let mp = format!("{rp}.matches[{mi}]");
            if let Some(pm) = &m.path {
                let t = pm.type_.as_deref().unwrap_or("PathPrefix");
                let v = pm.value.as_deref().unwrap_or("/");
                match t {
                    "Exact" | "PathPrefix" => {
                        if let Some(why) = path_error(v) {
                            cx.error(&format!("{mp}.path.value"), format!("`{v}` {why}"));
                        }
                    }
                    "RegularExpression" => {
                        if regex::Regex::new(v).is_err() {
                            cx.error(&format!("{mp}.path.value"), "not a valid regular expression");
                        }
                    }
                    _ => cx.error(
                        &format!("{mp}.path.type"),
                        format!("`{t}` is not Exact, PathPrefix or RegularExpression"),
                    ),
                }
                if t != "PathPrefix" {
                    only_prefix = false;
                }
            }
            value_matches(cx, &mp, "headers", &m.headers, true);
            value_matches(cx, &mp, "queryParams", &m.query_params, false);
            if let Some(me) = &m.method {
                if !matches!(
                    me.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
                ) {
                    cx.error(&format!("{mp}.method"), format!("`{me}` is not an HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)"));
                }
            }
        }
        cx.ignored(&format!("{rp}.sessionPersistence"), rule.session_persistence.is_some());
        filters(cx, &rp, &rule.filters, true, !rule.backend_refs.is_empty(), only_prefix);
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            let bp = format!("{rp}.backendRefs[{bi}]");
            backend_ref(cx, &bp, b);
            filters(cx, &bp, &b.filters, true, false, only_prefix);
        }
        if let Some(t) = &rule.timeouts {
            for (n, v) in [("request", &t.request), ("backendRequest", &t.backend_request)] {
                if let Some(v) = v {
                    if !is_duration(v) {
                        cx.error(
                            &format!("{rp}.timeouts.{n}"),
                            format!("`{v}` is not a Gateway API duration (like 10s, 500ms, 1h30m)"),
                        );
                    }
                }
            }
            if let (Some(req), Some(be)) = (&t.request, &t.backend_request) {
                if let (Ok(a), Ok(b)) = (crate::duration::parse(req), crate::duration::parse(be)) {
                    if !a.is_zero() && b > a {
                        cx.error(
                            &format!("{rp}.timeouts.backendRequest"),
                            "backendRequest timeout cannot be longer than request timeout",
                        );
                    }
                }
            }
        }
    }
}

fn grpc_route(cx: &mut Cx<'_>, g: &GrpcRoute) {
    parent_refs(cx, &g.parent_refs);
    hostnames(cx, &g.hostnames);
    for (ri, rule) in g.rules.iter().enumerate() {
        let rp = format!("spec.rules[{ri}]");
        for (mi, m) in rule.matches.iter().enumerate() {
            let mp = format!("{rp}.matches[{mi}]");
            if let Some(me) = &m.method {
                if me.service.is_none() && me.method.is_none() {
                    cx.error(&format!("{mp}.method"), "one or both of service or method must be specified");
                }
                if !matches!(me.type_.as_deref(), None | Some("Exact") | Some("RegularExpression")) {
                    cx.error(&format!("{mp}.method.type"), "not Exact or RegularExpression");
                }
            }
            value_matches(cx, &mp, "headers", &m.headers, true);
        }
        cx.ignored(&format!("{rp}.sessionPersistence"), rule.session_persistence.is_some());
        filters(cx, &rp, &rule.filters, false, !rule.backend_refs.is_empty(), false);
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            backend_ref(cx, &format!("{rp}.backendRefs[{bi}]"), b);
        }
    }
}

fn l4_route(cx: &mut Cx<'_>, t: &L4Route, tls: bool) {
    parent_refs(cx, &t.parent_refs);
    if tls {
        if t.hostnames.is_empty() {
            cx.error("spec.hostnames", "a TLSRoute needs at least one hostname");
        }
        hostnames(cx, &t.hostnames);
    } else if !t.hostnames.is_empty() {
        cx.error("spec.hostnames", "unknown field: a TCPRoute has no hostnames");
    }
    if t.rules.is_empty() {
        cx.error("spec.rules", "at least one rule is required");
    }
    for (ri, rule) in t.rules.iter().enumerate() {
        for (bi, b) in rule.backend_refs.iter().enumerate() {
            backend_ref(cx, &format!("spec.rules[{ri}].backendRefs[{bi}]"), b);
        }
    }
}

fn reference_grant(cx: &mut Cx<'_>, g: &ReferenceGrant) {
    if g.from.is_empty() {
        cx.error("spec.from", "required: at least one `from` entry");
    }
    if g.to.is_empty() {
        cx.error("spec.to", "required: at least one `to` entry");
    }
    for (i, f) in g.from.iter().enumerate() {
        let p = format!("spec.from[{i}]");
        if f.namespace.as_deref().is_none_or(str::is_empty) {
            cx.error(&format!("{p}.namespace"), "required");
        }
        if f.kind.as_deref().is_none_or(str::is_empty) {
            cx.error(&format!("{p}.kind"), "required");
        }
        if f.group.is_none() {
            cx.error(&format!("{p}.group"), "required (\"\" for the core group)");
        }
    }
    for (i, t) in g.to.iter().enumerate() {
        let p = format!("spec.to[{i}]");
        if t.kind.as_deref().is_none_or(str::is_empty) {
            cx.error(&format!("{p}.kind"), "required");
        }
        if t.group.is_none() {
            cx.error(&format!("{p}.group"), "required (\"\" for the core group)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(is_hostname("*.example.com", true));
        assert!(!is_hostname("*.example.com", false));
        assert!(!is_hostname("http://a<", true));
        assert!(is_duration("1h30m") && is_duration("500ms") && !is_duration("1.5s") && !is_duration(""));
        assert!(path_error("/my/path01").is_none());
        assert!(path_error("/[]").is_some() && path_error("/a//b").is_some() && path_error("a").is_some());
        assert!(!is_kind("*") && is_kind("Service") && !is_group("*") && is_group(""));
    }
}
