//! `portico convert`: Kubernetes Ingress (with the common ingress-nginx annotations) → Istio
//! Gateway + VirtualService (+ DestinationRule) YAML, or Gateway API Gateway + HTTPRoute YAML.
//! Every annotation that cannot be carried over is reported with its file:line, so a migration
//! never silently drops behaviour (an IP allow-list most of all).
//!
//! Semantics follow ingress-nginx: `Exact` is exact, `Prefix` matches whole path segments,
//! `ImplementationSpecific` is nginx's plain string prefix (a case-insensitive regex with
//! `use-regex` or a capture-group `rewrite-target`). ssl-redirect defaults to on for hosts with TLS.

use portico_api::k8s::{Ingress, IngressBackend};
use portico_api::{Diagnostic, Resource, Spec};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const NGINX: &str = "nginx.ingress.kubernetes.io/";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Istio,
    GatewayApi,
}

/// What an annotation turned into, or why it did not.
pub struct Finding {
    pub at: String,
    pub message: String,
}

pub struct Output {
    pub yaml: String,
    pub findings: Vec<Finding>,
}

/// One Ingress path, normalized.
#[derive(Clone)]
struct PathRule {
    /// `exact`, `segment` (Prefix), `prefix` (nginx string prefix) or `regex`.
    kind: &'static str,
    path: String,
    service: String,
    port: Option<u32>,
}

/// The annotations of one Ingress, as far as they carry over.
#[derive(Default, Clone)]
struct Nginx {
    rewrite_target: Option<String>,
    use_regex: bool,
    ssl_redirect: Option<bool>,
    force_ssl_redirect: bool,
    backend_protocol: Option<String>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    cors: Option<Value>,
    canary: bool,
    canary_weight: Option<u32>,
    canary_header: Option<String>,
    canary_header_value: Option<String>,
    canary_header_pattern: Option<String>,
    /// `permanent-redirect` / `temporal-redirect`: (scheme, host[:port], path) and status.
    redirect: Option<((String, String, String), u16)>,
    redirect_code: Option<u16>,
}

/// `https://host[:port]/path` → (scheme, authority, path).
fn split_url(v: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = v.trim().split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then(|| (scheme.to_string(), authority.to_string(), path.to_string()))
}

fn seconds(v: &str) -> Option<String> {
    v.trim().parse::<u64>().ok().map(|s| format!("{s}s"))
}

fn read_annotations(res: &Resource, findings: &mut Vec<Finding>) -> Nginx {
    let mut n = Nginx::default();
    let mut cors = Map::new();
    let mut cors_on = false;
    for (k, v) in &res.meta.annotations {
        let Some(name) = k.strip_prefix(NGINX) else { continue };
        let at = res.origin.locate(&format!("metadata.annotations.{k}"));
        let mut report = |msg: String| {
            findings.push(Finding {
                at: format!("{}:{}:{}", at.file, at.line, at.col),
                message: format!("{}: annotation `{k}`: {msg}", res.key()),
            })
        };
        let truthy = v.trim().eq_ignore_ascii_case("true");
        match name {
            "rewrite-target" => n.rewrite_target = Some(v.clone()),
            "use-regex" => n.use_regex = truthy,
            "ssl-redirect" => n.ssl_redirect = Some(truthy),
            "force-ssl-redirect" => n.force_ssl_redirect = truthy,
            "backend-protocol" => {
                let p = v.trim().to_ascii_uppercase();
                match p.as_str() {
                    "HTTP" | "HTTPS" | "GRPC" | "GRPCS" | "H2C" => n.backend_protocol = Some(p),
                    _ => report(format!("backend protocol `{v}` has no equivalent; the backend is called with HTTP/1.1")),
                }
            }
            "proxy-connect-timeout" => match seconds(v) {
                Some(s) => n.connect_timeout = Some(s),
                None => report(format!("`{v}` is not a number of seconds; not carried over")),
            },
            "proxy-read-timeout" | "proxy-send-timeout" => match seconds(v) {
                // nginx times each read; Istio/Gateway API time the whole request: the longer of
                // the two becomes the route timeout, a stricter bound than nginx's.
                Some(s) => {
                    let cur = n.read_timeout.as_deref().and_then(|c| c.trim_end_matches('s').parse::<u64>().ok()).unwrap_or(0);
                    let new = s.trim_end_matches('s').parse::<u64>().unwrap_or(0);
                    if new > cur {
                        n.read_timeout = Some(s);
                    }
                    report("approximated: nginx times each read/write, the converted route times the whole request".into());
                }
                None => report(format!("`{v}` is not a number of seconds; not carried over")),
            },
            "enable-cors" => cors_on = truthy,
            "cors-allow-origin" => {
                cors.insert("allowOrigins".into(), Value::Array(v.split(',').map(|o| o.trim()).filter(|o| !o.is_empty()).map(|o| if o == "*" { json!({"regex": ".*"}) } else { json!({"exact": o}) }).collect()));
            }
            "cors-allow-methods" => {
                cors.insert("allowMethods".into(), json!(v.split(',').map(|m| m.trim().to_string()).collect::<Vec<_>>()));
            }
            "cors-allow-headers" => {
                cors.insert("allowHeaders".into(), json!(v.split(',').map(|m| m.trim().to_string()).collect::<Vec<_>>()));
            }
            "cors-expose-headers" => {
                cors.insert("exposeHeaders".into(), json!(v.split(',').map(|m| m.trim().to_string()).collect::<Vec<_>>()));
            }
            "cors-allow-credentials" => {
                cors.insert("allowCredentials".into(), json!(truthy));
            }
            "cors-max-age" => match seconds(v) {
                Some(s) => {
                    cors.insert("maxAge".into(), json!(s));
                }
                None => report(format!("`{v}` is not a number of seconds; not carried over")),
            },
            "canary" => n.canary = truthy,
            "canary-weight" => match v.trim().parse::<u32>() {
                Ok(w) if w <= 100 => n.canary_weight = Some(w),
                _ => report(format!("`{v}` is not a weight 0-100; not carried over")),
            },
            "canary-by-header" => n.canary_header = Some(v.trim().to_ascii_lowercase()),
            "canary-by-header-value" => n.canary_header_value = Some(v.clone()),
            "canary-by-header-pattern" => n.canary_header_pattern = Some(v.clone()),
            "whitelist-source-range" | "allowlist-source-range" | "denylist-source-range" => report(
                "NOT CARRIED OVER: a source-IP allow/deny list has no VirtualService or HTTPRoute equivalent (use an AuthorizationPolicy or a network policy); without it the converted route is open to every client"
                    .into(),
            ),
            "permanent-redirect" | "temporal-redirect" => match split_url(v) {
                Some(u) => {
                    let code = if name == "permanent-redirect" { 301 } else { 302 };
                    n.redirect = Some((u, n.redirect.as_ref().map_or(code, |r| r.1)));
                }
                None => report(format!("`{v}` is not an absolute http(s) URL; not carried over")),
            },
            "permanent-redirect-code" => match (v.trim().parse::<u16>(), n.redirect.as_mut()) {
                (Ok(c), Some(r)) if (300..400).contains(&c) => r.1 = c,
                (Ok(c), None) if (300..400).contains(&c) => n.redirect_code = Some(c),
                _ => report(format!("`{v}` is not a redirect status; not carried over")),
            },
            a if a.starts_with("auth-") => report(
                "NOT CARRIED OVER: authentication has no VirtualService or HTTPRoute equivalent (use a RequestAuthentication/AuthorizationPolicy or an ext-authz filter); without it the converted route is open to every client"
                    .into(),
            ),
            _ => report("not carried over: no equivalent in the target API".into()),
        }
    }
    if let (Some(r), Some(c)) = (n.redirect.as_mut(), n.redirect_code) {
        r.1 = c;
    }
    if cors_on {
        if !cors.contains_key("allowOrigins") {
            cors.insert("allowOrigins".into(), json!([{"regex": ".*"}]));
        }
        // ingress-nginx's defaults.
        cors.entry("allowMethods").or_insert(json!(["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]));
        cors.entry("allowHeaders").or_insert(json!([
            "DNT",
            "Keep-Alive",
            "User-Agent",
            "X-Requested-With",
            "If-Modified-Since",
            "Cache-Control",
            "Content-Type",
            "Range",
            "Authorization"
        ]));
        cors.entry("maxAge").or_insert(json!("1728000s"));
        n.cors = Some(Value::Object(cors));
    } else if !cors.is_empty() {
        let at = res.origin.locate("metadata.annotations");
        findings.push(Finding {
            at: format!("{}:{}:{}", at.file, at.line, at.col),
            message: format!(
                "{}: cors-* annotations without `enable-cors: \"true\"` do nothing in ingress-nginx; not carried over",
                res.key()
            ),
        });
    }
    n
}

fn backend(b: &IngressBackend) -> Option<(String, Option<u32>)> {
    let s = b.service.as_ref()?;
    Some((s.name.clone(), s.port.as_ref().and_then(|p| p.number)))
}

fn paths(res: &Resource, ing: &Ingress, n: &Nginx, findings: &mut Vec<Finding>) -> BTreeMap<String, Vec<PathRule>> {
    let regex = n.use_regex || n.rewrite_target.as_deref().is_some_and(|t| t.contains('$'));
    let mut out: BTreeMap<String, Vec<PathRule>> = BTreeMap::new();
    for (ri, rule) in ing.rules.iter().enumerate() {
        let host = rule.host.clone().unwrap_or_else(|| "*".into());
        for (pi, p) in rule.http.iter().flat_map(|h| h.paths.iter().enumerate()) {
            let Some((service, port)) = backend(&p.backend) else {
                let at = res.origin.locate(&format!("spec.rules[{ri}].http.paths[{pi}].backend"));
                findings.push(Finding {
                    at: format!("{}:{}:{}", at.file, at.line, at.col),
                    message: format!("{}: resource backends are not carried over", res.key()),
                });
                continue;
            };
            let path = p.path.clone().unwrap_or_else(|| "/".into());
            let kind = match p.path_type.as_deref() {
                Some("Exact") => "exact",
                _ if regex => "regex",
                Some("Prefix") => "segment",
                _ => "prefix",
            };
            out.entry(host.clone()).or_default().push(PathRule { kind, path, service, port });
        }
    }
    if let Some((service, port)) = ing.default_backend.as_ref().and_then(backend) {
        out.entry("*".into()).or_default().push(PathRule { kind: "prefix", path: "/".into(), service, port });
    }
    // nginx picks the longest matching location; exact ones first.
    for rules in out.values_mut() {
        rules.sort_by(|a, b| (b.kind == "exact").cmp(&(a.kind == "exact")).then(b.path.len().cmp(&a.path.len())));
    }
    out
}

/// Istio `match` entries for one path.
fn istio_matches(p: &PathRule) -> Vec<Value> {
    match p.kind {
        "exact" => vec![json!({"uri": {"exact": p.path}})],
        "regex" => vec![json!({"uri": {"regex": format!("(?i){}.*", p.path)}})],
        "segment" => {
            let t = p.path.trim_end_matches('/');
            if t.is_empty() {
                vec![json!({"uri": {"prefix": "/"}})]
            } else {
                vec![json!({"uri": {"exact": t}}), json!({"uri": {"prefix": format!("{t}/")}})]
            }
        }
        _ => vec![json!({"uri": {"prefix": p.path}})],
    }
}

/// A Service's FQDN in the cluster's DNS domain (`--domain-suffix`): written out in full so the
/// output means the same Service whichever namespace it is applied in.
fn host_of(service: &str, ns: &str, domain_suffix: &str) -> String {
    format!("{service}.{ns}.svc.{domain_suffix}")
}

fn dest(service: &str, port: Option<u32>, ns: &str, domain_suffix: &str) -> Value {
    let mut d = json!({"host": host_of(service, ns, domain_suffix)});
    if let Some(p) = port {
        d["port"] = json!({"number": p});
    }
    d
}

fn meta(name: &str, ns: &str) -> Value {
    json!({"name": name, "namespace": ns})
}

fn dns(s: &str) -> String {
    s.replace('*', "wildcard")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect()
}

struct Parsed<'a> {
    res: &'a Resource,
    ing: &'a Ingress,
    n: Nginx,
    paths: BTreeMap<String, Vec<PathRule>>,
}

/// One path of one (main) Ingress, with the annotations of its Ingress and its canary.
struct Entry<'a> {
    ing: &'a Parsed<'a>,
    rule: PathRule,
    canary: Option<&'a (Nginx, String, Option<u32>)>,
}

type Canaries = BTreeMap<(String, String, String), (Nginx, String, Option<u32>)>;

/// Everything the output is built from: paths grouped by (namespace, host), TLS by host.
struct Plan<'a> {
    hosts: BTreeMap<(String, String), Vec<Entry<'a>>>,
    /// (namespace, host) → secret name.
    tls: BTreeMap<(String, String), String>,
    /// Hosts whose plain-HTTP requests are redirected to HTTPS.
    redirect: BTreeMap<(String, String), bool>,
    /// The cluster's DNS domain, for the Service hosts of the Istio output.
    domain_suffix: &'a str,
}

/// `domain_suffix` is the cluster's DNS domain (`cluster.local` unless `--domain-suffix` says
/// otherwise), as in the hosts the other commands expand short names to.
pub fn convert(resources: &[Resource], target: Target, domain_suffix: &str) -> Output {
    let mut findings = Vec::new();
    let mut mains: Vec<Parsed<'_>> = Vec::new();
    let mut canaries: Vec<Parsed<'_>> = Vec::new();
    for res in resources {
        let Spec::Ingress(ing) = &*res.spec else { continue };
        let n = read_annotations(res, &mut findings);
        let paths = paths(res, ing, &n, &mut findings);
        let p = Parsed { res, ing, n, paths };
        if p.n.canary {
            canaries.push(p);
        } else {
            mains.push(p);
        }
    }
    // Canary Ingresses join the main Ingress with the same host and path.
    let mut canary_of: Canaries = BTreeMap::new();
    for c in &canaries {
        for (host, rules) in &c.paths {
            for r in rules {
                let found = mains.iter().any(|m| {
                    m.res.namespace() == c.res.namespace()
                        && m.paths.get(host).is_some_and(|rs| rs.iter().any(|x| x.path == r.path))
                });
                if found {
                    canary_of.insert(
                        (c.res.namespace().to_string(), host.clone(), r.path.clone()),
                        (c.n.clone(), r.service.clone(), r.port),
                    );
                } else {
                    let at = c.res.origin.location();
                    findings.push(Finding {
                        at: format!("{}:{}:{}", at.file, at.line, at.col),
                        message: format!(
                            "{}: canary for {host}{} has no main Ingress with that host and path; not carried over",
                            c.res.key(),
                            r.path
                        ),
                    });
                }
            }
        }
    }
    let mut plan = Plan { hosts: BTreeMap::new(), tls: BTreeMap::new(), redirect: BTreeMap::new(), domain_suffix };
    for m in &mains {
        let ns = m.res.namespace().to_string();
        let mut secured = Vec::new();
        for t in &m.ing.tls {
            let Some(secret) = &t.secret_name else { continue };
            let hosts = if t.hosts.is_empty() { vec!["*".to_string()] } else { t.hosts.clone() };
            for h in hosts {
                plan.tls.insert((ns.clone(), h.clone()), secret.clone());
                secured.push(h);
            }
        }
        for (host, rules) in &m.paths {
            let key = (ns.clone(), host.clone());
            let redirect = m.n.force_ssl_redirect || (secured.contains(host) && m.n.ssl_redirect != Some(false));
            let r = plan.redirect.entry(key.clone()).or_insert(false);
            *r = *r || redirect;
            for rule in rules {
                let canary = canary_of.get(&(ns.clone(), host.clone(), rule.path.clone()));
                plan.hosts.entry(key.clone()).or_default().push(Entry { ing: m, rule: rule.clone(), canary });
            }
        }
    }
    // nginx picks the longest matching location across every Ingress of a host; exact ones first.
    for entries in plan.hosts.values_mut() {
        entries.sort_by(|a, b| {
            (b.rule.kind == "exact").cmp(&(a.rule.kind == "exact")).then(b.rule.path.len().cmp(&a.rule.path.len()))
        });
    }
    let mut docs: Vec<Value> = Vec::new();
    match target {
        Target::Istio => istio(&plan, &mut docs),
        Target::GatewayApi => gateway_api(&plan, &mut docs, &mut findings),
    }
    let mut yaml = String::new();
    for d in &docs {
        yaml.push_str("---\n");
        emit(&mut yaml, &prune(d.clone()), 0);
    }
    Output { yaml, findings }
}

/// The name every generated Gateway gets.
const GATEWAY: &str = "ingress";

fn istio(plan: &Plan<'_>, docs: &mut Vec<Value>) {
    // One Gateway per namespace: plain HTTP (redirecting hosts apart), HTTPS per TLS host.
    let namespaces: Vec<String> = {
        let mut v: Vec<String> = plan.hosts.keys().map(|(ns, _)| ns.clone()).collect();
        v.dedup();
        v
    };
    for ns in &namespaces {
        let hosts: Vec<(&String, bool)> = plan
            .hosts
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|k| (&k.1, plan.redirect.get(k).copied().unwrap_or(false)))
            .collect();
        let mut servers = Vec::new();
        for (redirect, name) in [(false, "http"), (true, "http-redirect")] {
            let hs: Vec<&String> = hosts.iter().filter(|(_, r)| *r == redirect).map(|(h, _)| *h).collect();
            if !hs.is_empty() {
                servers.push(json!({
                    "port": {"number": 80, "name": name, "protocol": "HTTP"},
                    "hosts": hs,
                    "tls": if redirect { json!({"httpsRedirect": true}) } else { Value::Null },
                }));
            }
        }
        for (i, ((_, h), secret)) in plan.tls.iter().filter(|((n, _), _)| n == ns).enumerate() {
            servers.push(json!({
                "port": {"number": 443, "name": format!("https-{i}"), "protocol": "HTTPS"},
                "hosts": [h],
                "tls": {"mode": "SIMPLE", "credentialName": secret},
            }));
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": meta(GATEWAY, ns),
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": servers},
        }));
    }
    let mut rules_by_service: BTreeMap<(String, String), &Nginx> = BTreeMap::new();
    for ((ns, host), entries) in &plan.hosts {
        let mut http = Vec::new();
        for e in entries {
            let (r, n) = (&e.rule, &e.ing.n);
            let mut route = json!({"match": istio_matches(r)});
            let main = json!({"destination": dest(&r.service, r.port, ns, plan.domain_suffix)});
            rules_by_service.insert((ns.clone(), r.service.clone()), n);
            if let Some(t) = &n.rewrite_target {
                if t.contains('$') {
                    // nginx `$1` → RE2 `\1`, on the whole path matched by the location regex.
                    let sub = t.replace('$', "\\");
                    route["rewrite"] =
                        json!({"uriRegexRewrite": {"match": format!("(?i)^{}", r.path), "rewrite": sub}});
                } else {
                    route["rewrite"] = json!({"uriRegexRewrite": {"match": "^.*$", "rewrite": t}});
                }
            }
            if let Some(t) = &n.read_timeout {
                route["timeout"] = json!(t);
            }
            if let Some(c) = &n.cors {
                route["corsPolicy"] = c.clone();
            }
            if let Some(((scheme, authority, path), code)) = &n.redirect {
                // nginx answers every request of the Ingress with this redirect.
                route["redirect"] =
                    json!({"scheme": scheme, "authority": authority, "uri": path, "redirectCode": code});
                http.push(route);
                continue;
            }
            match e.canary {
                Some((cn, svc, port)) => {
                    rules_by_service.insert((ns.clone(), svc.clone()), n);
                    let cdest = json!({"destination": dest(svc, *port, ns, plan.domain_suffix)});
                    if let Some(hname) = &cn.canary_header {
                        // Header routing wins over weight, as in ingress-nginx.
                        let value = match (&cn.canary_header_value, &cn.canary_header_pattern) {
                            (Some(v), _) => json!({"exact": v}),
                            (None, Some(p)) => json!({"regex": p}),
                            _ => json!({"exact": "always"}),
                        };
                        let mut to_canary = route.clone();
                        to_canary["match"] = Value::Array(
                            istio_matches(r)
                                .into_iter()
                                .map(|mut mm| {
                                    mm["headers"] = json!({hname: value.clone()});
                                    mm
                                })
                                .collect(),
                        );
                        to_canary["route"] = json!([cdest.clone()]);
                        http.push(to_canary);
                        if cn.canary_header_value.is_none() && cn.canary_header_pattern.is_none() {
                            let mut to_main = route.clone();
                            to_main["match"] = Value::Array(
                                istio_matches(r)
                                    .into_iter()
                                    .map(|mut mm| {
                                        mm["headers"] = json!({hname: {"exact": "never"}});
                                        mm
                                    })
                                    .collect(),
                            );
                            to_main["route"] = json!([main.clone()]);
                            http.push(to_main);
                        }
                    }
                    let w = cn.canary_weight.unwrap_or(0);
                    if w > 0 {
                        let mut a = main.clone();
                        a["weight"] = json!(100 - w);
                        let mut b = cdest;
                        b["weight"] = json!(w);
                        route["route"] = json!([a, b]);
                    } else {
                        route["route"] = json!([main]);
                    }
                }
                None => route["route"] = json!([main]),
            }
            http.push(route);
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": meta(&format!("ingress-{}", dns(host)), ns),
            "spec": {"hosts": [host], "gateways": [GATEWAY], "http": http},
        }));
    }
    // Backend protocol and connect timeout: a DestinationRule per Service that needs one.
    for ((ns, svc), n) in rules_by_service {
        let mut tp = Map::new();
        match n.backend_protocol.as_deref() {
            Some("HTTPS") => {
                tp.insert("tls".into(), json!({"mode": "SIMPLE"}));
            }
            Some("GRPCS") => {
                tp.insert("tls".into(), json!({"mode": "SIMPLE"}));
                tp.insert("connectionPool".into(), json!({"http": {"h2UpgradePolicy": "UPGRADE"}}));
            }
            Some("GRPC") | Some("H2C") => {
                tp.insert("connectionPool".into(), json!({"http": {"h2UpgradePolicy": "UPGRADE"}}));
            }
            _ => {}
        }
        if let Some(t) = &n.connect_timeout {
            let pool = tp.entry("connectionPool").or_insert(json!({}));
            pool["tcp"] = json!({"connectTimeout": t});
        }
        if tp.is_empty() {
            continue;
        }
        docs.push(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": meta(&format!("ingress-{svc}"), &ns),
            "spec": {"host": host_of(&svc, &ns, plan.domain_suffix), "trafficPolicy": Value::Object(tp)},
        }));
    }
}

fn gateway_api(plan: &Plan<'_>, docs: &mut Vec<Value>, findings: &mut Vec<Finding>) {
    // One Gateway for every namespace (one instance serves them all): HTTP for every host,
    // HTTPS per TLS host; routes from any namespace may attach.
    let Some(gw_ns) = plan.hosts.keys().next().map(|(ns, _)| ns.clone()) else { return };
    let mut listeners =
        vec![json!({"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}})];
    let mut https_of: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, ((ns, h), secret)) in plan.tls.iter().enumerate() {
        let name = format!("https-{i}");
        let mut l = json!({"name": name, "port": 443, "protocol": "HTTPS",
            "tls": {"mode": "Terminate", "certificateRefs": [{"name": secret, "namespace": if *ns == gw_ns { Value::Null } else { json!(ns) }}]},
            "allowedRoutes": {"namespaces": {"from": "All"}}});
        if h != "*" {
            l["hostname"] = json!(h);
        }
        listeners.push(l);
        https_of.insert((ns.clone(), h.clone()), name);
        if *ns != gw_ns {
            docs.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
                "metadata": meta(&format!("ingress-gateway-{}", dns(secret)), ns),
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": gw_ns}],
                         "to": [{"group": "", "kind": "Secret", "name": secret}]},
            }));
        }
    }
    docs.insert(
        0,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": meta(GATEWAY, &gw_ns),
            "spec": {"gatewayClassName": "portico", "listeners": listeners},
        }),
    );
    let mut noted: Vec<String> = Vec::new();
    for ((ns, host), entries) in &plan.hosts {
        let mut out_rules = Vec::new();
        for e in entries {
            let (r, n, res) = (&e.rule, &e.ing.n, e.ing.res);
            let mut note = |msg: &str| {
                let key = format!("{}{msg}", res.key());
                if !noted.contains(&key) {
                    noted.push(key);
                    let at = res.origin.location();
                    findings.push(Finding {
                        at: format!("{}:{}:{}", at.file, at.line, at.col),
                        message: format!("{}: {msg}", res.key()),
                    });
                }
            };
            if n.backend_protocol.as_deref().is_some_and(|p| p != "HTTP") {
                note(
                    "backend-protocol: not carried over (set `appProtocol` on the Service port, or a BackendTLSPolicy)",
                );
            }
            if n.connect_timeout.is_some() {
                note("proxy-connect-timeout: not carried over (the Gateway API has no connect timeout)");
            }
            let regex_rewrite = n.rewrite_target.as_deref().is_some_and(|t| t.contains('$'));
            if regex_rewrite {
                note("rewrite-target with capture groups: not carried over (the Gateway API rewrites a prefix or the full path only)");
            }
            let pm = match r.kind {
                "exact" => json!({"path": {"type": "Exact", "value": r.path}}),
                "regex" => json!({"path": {"type": "RegularExpression", "value": format!("(?i){}.*", r.path)}}),
                "segment" => json!({"path": {"type": "PathPrefix", "value": r.path}}),
                // A string prefix has no Gateway API form: a regex keeps nginx's behaviour.
                _ => json!({"path": {"type": "RegularExpression", "value": format!("{}.*", escape_regex(&r.path))}}),
            };
            let mut filters = Vec::new();
            if let Some(t) = n.rewrite_target.as_deref().filter(|_| !regex_rewrite) {
                filters.push(json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": t}}}));
            }
            if let Some(c) = &n.cors {
                filters.push(json!({"type": "CORS", "cors": gateway_api_cors(c)}));
            }
            if let Some(((scheme, authority, path), code)) = &n.redirect {
                let (host, port) = match authority.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()),
                    None => (authority.clone(), None),
                };
                let code = if [301, 302, 303, 307, 308].contains(code) { *code } else { 302 };
                out_rules.push(
                    json!({"matches": [pm.clone()], "filters": [{"type": "RequestRedirect", "requestRedirect": {
                    "scheme": scheme, "hostname": host, "port": port, "statusCode": code,
                    "path": {"type": "ReplaceFullPath", "replaceFullPath": path}}}]}),
                );
                continue;
            }
            let mut rule = json!({"matches": [pm.clone()], "filters": filters});
            if let Some(t) = &n.read_timeout {
                rule["timeouts"] = json!({"request": t});
            }
            let main = json!({"name": r.service, "port": r.port});
            match e.canary {
                Some((cn, svc, port)) => {
                    let c = json!({"name": svc, "port": port});
                    if let Some(hname) = &cn.canary_header {
                        let hm = match (&cn.canary_header_value, &cn.canary_header_pattern) {
                            (Some(v), _) => json!({"name": hname, "value": v}),
                            (None, Some(p)) => json!({"type": "RegularExpression", "name": hname, "value": p}),
                            _ => json!({"name": hname, "value": "always"}),
                        };
                        let mut m2 = pm.clone();
                        m2["headers"] = json!([hm]);
                        let mut hr = rule.clone();
                        hr["matches"] = json!([m2]);
                        hr["backendRefs"] = json!([c.clone()]);
                        out_rules.push(hr);
                        // ingress-nginx: `never` keeps the request off the canary, weight or not.
                        if cn.canary_header_value.is_none() && cn.canary_header_pattern.is_none() {
                            let mut m3 = pm.clone();
                            m3["headers"] = json!([{"name": hname, "value": "never"}]);
                            let mut nr = rule.clone();
                            nr["matches"] = json!([m3]);
                            nr["backendRefs"] = json!([main.clone()]);
                            out_rules.push(nr);
                        }
                    }
                    let w = cn.canary_weight.unwrap_or(0);
                    let mut a = main.clone();
                    a["weight"] = json!(100 - w);
                    let mut b = c;
                    b["weight"] = json!(w);
                    rule["backendRefs"] = if w > 0 { json!([a, b]) } else { json!([main]) };
                }
                None => rule["backendRefs"] = json!([main]),
            }
            out_rules.push(rule);
        }
        let hostnames = if host == "*" { json!([]) } else { json!([host]) };
        let parent = |section: &str| json!({"name": GATEWAY, "namespace": if *ns == gw_ns { Value::Null } else { json!(gw_ns) }, "sectionName": section});
        let key = (ns.clone(), host.clone());
        let https = https_of.get(&key).or_else(|| https_of.get(&(ns.clone(), "*".to_string())));
        let mut parents = vec![];
        if plan.redirect.get(&key).copied().unwrap_or(false) {
            // Plain HTTP answers with a redirect; the routes serve HTTPS only.
            docs.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": meta(&format!("ingress-{}-redirect", dns(host)), ns),
                "spec": {"parentRefs": [parent("http")], "hostnames": hostnames,
                    "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]},
            }));
        } else {
            parents.push(parent("http"));
        }
        if let Some(l) = https {
            parents.push(parent(l));
        }
        docs.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": meta(&format!("ingress-{}", dns(host)), ns),
            "spec": {"parentRefs": parents, "hostnames": hostnames, "rules": out_rules},
        }));
    }
}

/// The Istio-shaped CORS policy as the Gateway API's CORS filter.
fn gateway_api_cors(c: &Value) -> Value {
    let origins: Vec<Value> = c["allowOrigins"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| match (o["exact"].as_str(), o["regex"].as_str()) {
                    (Some(e), _) => Some(json!(e)),
                    (None, Some(".*")) => Some(json!("*")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let max_age = c["maxAge"].as_str().and_then(|m| m.trim_end_matches('s').parse::<u64>().ok());
    json!({
        "allowOrigins": origins,
        "allowMethods": c["allowMethods"],
        "allowHeaders": c["allowHeaders"],
        "exposeHeaders": c["exposeHeaders"],
        "allowCredentials": c["allowCredentials"],
        "maxAge": max_age,
    })
}

fn escape_regex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Drop nulls and empty lists/maps, so the YAML says only what is set.
fn prune(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v.as_array().is_some_and(Vec::is_empty)
                        || v.as_object().is_some_and(Map::is_empty))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        v => v,
    }
}

/// Block-style YAML; strings are double-quoted (JSON escapes are valid YAML), so no value can
/// change type or meaning on the way.
fn emit(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let key = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    k.clone()
                } else {
                    Value::String(k.clone()).to_string()
                };
                match val {
                    Value::Object(_) => {
                        let _ = writeln!(out, "{pad}{key}:");
                        emit(out, val, indent + 2);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        emit(out, val, indent);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(val));
                    }
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        let mut inner = String::new();
                        emit(&mut inner, item, indent + 2);
                        // First line goes after the dash.
                        let trimmed = inner.trim_start_matches(' ');
                        let _ = write!(out, "{pad}- {trimmed}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(v));
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        v => v.to_string(),
    }
}

/// Diagnostics of loading, as findings (a file that does not parse is worth saying).
pub fn load_findings(diags: &[Diagnostic]) -> Vec<Finding> {
    diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| Finding {
            at: format!("{}:{}:{}", d.location.file, d.location.line, d.location.col),
            message: format!("{} {}: {}", d.code, d.resource, d.message),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ingress with a canary and a backend-protocol annotation: every place the Istio output
    /// names a Service (route, canary route, DestinationRule host).
    const INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}
spec:
  rules:
  - host: api.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8443}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api-canary
  namespace: shop
  annotations: {nginx.ingress.kubernetes.io/canary: "true", nginx.ingress.kubernetes.io/canary-weight: "10"}
spec:
  rules:
  - host: api.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: api-canary, port: {number: 8443}}}}
"#;

    #[test]
    fn service_hosts_use_the_domain_suffix() {
        let parsed = portico_api::parse_text("ingress.yaml", INGRESS, "default");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let out = convert(&parsed.resources, Target::Istio, "corp.internal");
        for want in [
            "host: \"api.shop.svc.corp.internal\"",
            "host: \"api-canary.shop.svc.corp.internal\"",
            "kind: \"DestinationRule\"",
        ] {
            assert!(out.yaml.contains(want), "missing `{want}` in:\n{}", out.yaml);
        }
        assert!(!out.yaml.contains("cluster.local"), "{}", out.yaml);
        // The default stays Kubernetes' default.
        let out = convert(&parsed.resources, Target::Istio, "cluster.local");
        assert!(out.yaml.contains("host: \"api.shop.svc.cluster.local\""), "{}", out.yaml);
    }
}
