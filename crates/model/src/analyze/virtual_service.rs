//! VirtualServices: references (gateway, host, host:port, mirror host, subset, delegate →
//! IST0101), the port a multi-port destination needs (IST0112), hosts a gateway does not serve
//! (IST0132), mesh VirtualServices sharing a host (IST0109), subset rules that ingress traffic
//! bypasses (IST0140), and rules or matches that can never be used (IST0130, IST0131).

use super::{full_name, go_list, Ctx};
use crate::compile::gateway_ref_matches;
use crate::host;
use crate::registry;
use portico_api::diag::code;
use portico_api::gateway_api::KubeGateway;
use portico_api::istio::{Destination, HttpMatchRequest, StringMatch, VirtualService};
use portico_api::{Diagnostic, Resource, Spec};
use std::collections::{BTreeMap, HashMap};

const MESH: &str = "mesh";

/// IST0101 for `gateways` entries naming no Gateway, and IST0132 when none of the
/// VirtualService's hosts is a host of the named Gateway (reported for a missing Gateway too,
/// as istioctl does). An entry naming no Istio Gateway but a Gateway API Gateway is not
/// "not found" (istioctl reads both kinds): its hosts are checked against the listeners'
/// hostnames instead (a listener without one takes every host), and Portico says that such a
/// binding serves nothing here.
pub(super) fn gateway_refs(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let gateways: Vec<&Resource> = cx.of_kind(portico_api::Kind::Gateway).collect();
    let kube_gateways: Vec<(&Resource, &KubeGateway)> = cx
        .resources
        .iter()
        .filter_map(|r| match &*r.spec {
            Spec::KubeGateway(g) => Some((*r, g)),
            _ => None,
        })
        .collect();
    for (vs_res, vs) in cx.virtual_services() {
        for (i, g) in vs.gateways.iter().enumerate() {
            if g == MESH {
                continue;
            }
            // Located only for a finding: most references are fine.
            let loc = || vs_res.origin.locate(&format!("spec.gateways[{i}]"));
            if let Some(kube_gw) = internal_gateway(g) {
                // Istio reports only this for such a reference (no IST0101/IST0132): the name is
                // an implementation detail, not a Gateway the user can write.
                out.push(Diagnostic::warning(
                    loc(),
                    code::REFERENCED_INTERNAL_GATEWAY,
                    vs_res.key(),
                    format!(
                        "Gateway reference in VirtualService {} is to an implementation-generated internal \
                         Gateway: {g}. (Portico generates no such Gateway, so this binds to nothing; attach an \
                         HTTPRoute to the Gateway API Gateway `{kube_gw}` instead)",
                        full_name(vs_res)
                    ),
                ));
                continue;
            }
            let found =
                gateways.iter().find(|gw| gateway_ref_matches(g, vs_res.namespace(), gw.namespace(), gw.name()));
            let (ref_ns, ref_name) = g.split_once('/').unwrap_or((vs_res.namespace(), g));
            let kube = if found.is_none() {
                kube_gateways.iter().find(|(r, _)| gateway_ref_matches(g, vs_res.namespace(), r.namespace(), r.name()))
            } else {
                None
            };
            if let Some((kube_res, kube_gw)) = kube {
                kube_gateway_ref(vs_res, vs, loc(), kube_res, kube_gw, out);
                continue;
            }
            if found.is_none() {
                let others: Vec<String> =
                    gateways.iter().filter(|gw| gw.name() == ref_name).map(|gw| full_name(gw)).collect();
                let hint = if others.is_empty() {
                    format!(" (looked for Gateway {ref_ns}/{ref_name})")
                } else {
                    format!(
                        " (looked for Gateway {ref_ns}/{ref_name}); did you mean `{}`? (a bare name refers to the \
                         VirtualService's own namespace)",
                        others.join("` or `")
                    )
                };
                out.push(Diagnostic::error(
                    loc(),
                    code::REFERENCED_RESOURCE_NOT_FOUND,
                    vs_res.key(),
                    format!("Referenced gateway not found: {g:?}{hint}"),
                ));
            }
            let gw_hosts: Vec<String> = match found.map(|r| &*r.spec) {
                Some(Spec::Gateway(gw)) => {
                    gw.servers.iter().flat_map(|s| s.hosts.iter()).map(|h| sanitize(h, found_ns(found))).collect()
                }
                _ => Vec::new(),
            };
            let names = names_for_namespace(&gw_hosts, vs_res.namespace());
            let any = names.iter().any(|gh| vs.hosts.iter().any(|vh| host::intersect(gh, vh).is_some()));
            if !any {
                let gw_full = found.map(|r| full_name(r)).unwrap_or_else(|| format!("{ref_ns}/{ref_name}"));
                out.push(Diagnostic::warning(
                    loc(),
                    code::VS_HOST_NOT_IN_GATEWAY,
                    vs_res.key(),
                    format!(
                        "one or more host {} defined in VirtualService {} not found in Gateway {gw_full}.",
                        go_list(&vs.hosts),
                        full_name(vs_res)
                    ),
                ));
            }
        }
    }
}

/// A `gateways` entry naming a Gateway API Gateway (and no Istio Gateway): istioctl's IST0132
/// against the listener hostnames, and Portico's own note that the VirtualService does not
/// attach there (Portico binds VirtualServices to Istio Gateways only; the Gateway API
/// Gateway serves its HTTPRoutes).
fn kube_gateway_ref(
    vs_res: &Resource,
    vs: &VirtualService,
    loc: portico_api::Location,
    kube_res: &Resource,
    kube_gw: &KubeGateway,
    out: &mut Vec<Diagnostic>,
) {
    let kube_name = full_name(kube_res);
    out.push(Diagnostic::warning(
        loc.clone(),
        code::IGNORED,
        vs_res.key(),
        format!(
            "gateway `{kube_name}` is a Gateway API Gateway: Portico binds VirtualServices to Istio Gateways only, \
             so this VirtualService serves nothing through it; attach an HTTPRoute to `{kube_name}` instead"
        ),
    ));
    let any = kube_gw.listeners.iter().any(|l| match l.hostname.as_deref() {
        None | Some("") => true,
        Some(h) => vs.hosts.iter().any(|vh| host::intersect(h, vh).is_some()),
    });
    if !any {
        out.push(Diagnostic::warning(
            loc,
            code::VS_HOST_NOT_IN_GATEWAY,
            vs_res.key(),
            format!(
                "one or more host {} defined in VirtualService {} not found in Gateway {kube_name}. (the listener \
                 hostnames of that Gateway API Gateway)",
                go_list(&vs.hosts),
                full_name(vs_res)
            ),
        ));
    }
}

/// The name Istio gives the Gateway it generates for a Gateway API Gateway's listener:
/// `GATEWAY-istio-autogenerated-k8s-gateway-LISTENER` (`~` instead of `-` around the marker in
/// newer releases). Returns the Gateway API Gateway's name when `reference` is one.
fn internal_gateway(reference: &str) -> Option<&str> {
    const MARKER: &str = "istio-autogenerated-k8s-gateway";
    let name = reference.split_once('/').map_or(reference, |(_, n)| n);
    [format!("-{MARKER}-"), format!("~{MARKER}~")].iter().find_map(|m| name.find(m.as_str()).map(|at| &name[..at]))
}

fn found_ns<'a>(r: Option<&&'a Resource>) -> &'a str {
    r.map(|r| r.namespace()).unwrap_or("")
}

/// `./host` → `gwns/host`, `*/host` → `host` (Istio's `sanitizeServerHostNamespace`).
fn sanitize(h: &str, gw_ns: &str) -> String {
    match h.split_once('/') {
        Some((".", rest)) => format!("{gw_ns}/{rest}"),
        Some(("*", rest)) => rest.to_string(),
        _ => h.to_string(),
    }
}

/// The server hosts a VirtualService in `ns` may use (Istio's `host.NamesForNamespace`).
fn names_for_namespace(hosts: &[String], ns: &str) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| match h.split_once('/') {
            Some((hns, name)) if hns == ns || hns == "*" => Some(name.to_string()),
            Some(_) => None,
            None => Some(h.clone()),
        })
        .collect()
}

/// A destination with where it is written and what kind of reference it is.
struct Dest<'a> {
    path: DestPath,
    d: &'a Destination,
    mirror: bool,
}

/// Where a destination is written (`spec.http[0].route[1].destination`), spelled out only for
/// a finding: every VirtualService has some, and most have nothing to report.
#[derive(Clone, Copy)]
struct DestPath {
    /// `http`, `tcp` or `tls`.
    list: &'static str,
    rule: usize,
    at: DestAt,
}

#[derive(Clone, Copy)]
enum DestAt {
    Route(usize),
    Mirror,
    Mirrors(usize),
}

impl std::fmt::Display for DestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DestPath { list, rule, at } = self;
        match at {
            DestAt::Route(i) => write!(f, "spec.{list}[{rule}].route[{i}].destination"),
            DestAt::Mirror => write!(f, "spec.{list}[{rule}].mirror"),
            DestAt::Mirrors(i) => write!(f, "spec.{list}[{rule}].mirrors[{i}].destination"),
        }
    }
}

fn destinations_of(vs: &VirtualService) -> Vec<Dest<'_>> {
    let mut out = Vec::new();
    let at = |list, rule, at| DestPath { list, rule, at };
    for (ri, r) in vs.http.iter().enumerate() {
        for (di, d) in r.route.iter().enumerate() {
            out.push(Dest { path: at("http", ri, DestAt::Route(di)), d: &d.destination, mirror: false });
        }
        if let Some(m) = &r.mirror {
            out.push(Dest { path: at("http", ri, DestAt::Mirror), d: m, mirror: true });
        }
        for (mi, m) in r.mirrors.iter().enumerate() {
            out.push(Dest { path: at("http", ri, DestAt::Mirrors(mi)), d: &m.destination, mirror: true });
        }
    }
    for (ri, r) in vs.tcp.iter().enumerate() {
        for (di, d) in r.route.iter().enumerate() {
            out.push(Dest { path: at("tcp", ri, DestAt::Route(di)), d: &d.destination, mirror: false });
        }
    }
    for (ri, r) in vs.tls.iter().enumerate() {
        for (di, d) in r.route.iter().enumerate() {
            out.push(Dest { path: at("tls", ri, DestAt::Route(di)), d: &d.destination, mirror: false });
        }
    }
    out
}

pub(super) fn destinations(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let translated = cx.translated.iter().filter_map(|r| match &*r.spec {
        Spec::VirtualService(v) => Some((*r, v)),
        _ => None,
    });
    for (vs_res, vs) in cx.virtual_services().chain(translated) {
        for Dest { path, d, mirror } in destinations_of(vs) {
            let h = host::resolve_short_name(&d.host, vs_res.namespace(), &cx.opts.domain_suffix);
            let loc = || vs_res.origin.locate(&format!("{path}.host"));
            let Some((_, svc)) = cx.service_entry(&d.host, vs_res.namespace()) else {
                let what = if mirror { "mirror host" } else { "host" };
                out.push(Diagnostic::error(
                    loc(),
                    code::REFERENCED_RESOURCE_NOT_FOUND,
                    vs_res.key(),
                    format!(
                        "Referenced {what} not found: {:?} ({path}: resolved to `{h}`; add a ServiceEntry for it, \
                         exported to this namespace; requests to it get 503 NC)",
                        d.host
                    ),
                ));
                continue;
            };
            match &d.port {
                None if svc.ports.len() > 1 => {
                    let ports: Vec<String> = svc.ports.iter().map(|p| p.number.to_string()).collect();
                    out.push(Diagnostic::error(
                        loc(),
                        code::DESTINATION_PORT_REQUIRED,
                        vs_res.key(),
                        format!(
                            "This VirtualService routes to a service {:?} that exposes multiple ports {}. Specifying \
                             a port in the destination is required to disambiguate.",
                            d.host,
                            go_list(&ports)
                        ),
                    ));
                }
                Some(p) if !svc.ports.iter().any(|sp| sp.number == p.number) => {
                    out.push(Diagnostic::error(
                        vs_res.origin.locate(&format!("{path}.port")),
                        code::REFERENCED_RESOURCE_NOT_FOUND,
                        vs_res.key(),
                        format!("Referenced host:port not found: \"{}:{}\" (requests get 503 NC)", d.host, p.number),
                    ));
                }
                _ => {}
            }
        }
    }
}

/// Subsets (Istio's `virtualservice.DestinationRuleAnalyzer`): a destination's subset must be
/// defined by the DestinationRule that applies to its host.
pub(super) fn subsets(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (vs_res, vs) in cx.virtual_services() {
        for Dest { path, d, mirror } in destinations_of(vs) {
            let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else { continue };
            let what = if mirror { "mirror+subset" } else { "host+subset" };
            let h = host::resolve_short_name(&d.host, vs_res.namespace(), &cx.opts.domain_suffix);
            let svc_ns = cx.registry.lookup(&h).map(|s| s.service_namespace.clone()).unwrap_or_else(|| {
                registry::service_namespace(&h, &cx.opts.domain_suffix).unwrap_or(vs_res.namespace()).to_string()
            });
            let dr = registry::find_destination_rule(
                cx.drs,
                &h,
                &cx.opts.gateway_namespace,
                &svc_ns,
                &cx.opts.domain_suffix,
            );
            if dr.is_some_and(|(_, d)| d.subsets.iter().any(|s| s.name == subset)) {
                continue;
            }
            out.push(Diagnostic::error(
                vs_res.origin.locate(&format!("{path}.subset")),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                vs_res.key(),
                format!(
                    "Referenced {what} in destinationrule not found: \"{}+{subset}\" (no DestinationRule for \
                     `{h}` defines it; requests get 503 NC)",
                    d.host
                ),
            ));
        }
    }
}

/// `delegate` must name an existing VirtualService (IST0101 `delegate`).
pub(super) fn delegates(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let all: Vec<&Resource> = cx.of_kind(portico_api::Kind::VirtualService).collect();
    for (vs_res, vs) in cx.virtual_services() {
        for (i, r) in vs.http.iter().enumerate() {
            let Some(d) = &r.delegate else { continue };
            let ns = d.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(vs_res.namespace());
            if all.iter().any(|v| v.namespace() == ns && v.name() == d.name) {
                continue;
            }
            out.push(Diagnostic::error(
                vs_res.origin.locate(&format!("spec.http[{i}].delegate")),
                code::REFERENCED_RESOURCE_NOT_FOUND,
                vs_res.key(),
                format!("Referenced delegate not found: \"{ns}/{}\" (this route is skipped)", d.name),
            ));
        }
    }
}

/// IST0109: VirtualServices bound to the mesh (no `gateways`, or `mesh` among them) that define
/// the same host in the same export scope. Portico serves no mesh traffic, but a config that
/// istioctl rejects should not pass here either.
pub(super) fn mesh_host_conflicts(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for (res, vs) in cx.virtual_services() {
        if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == MESH)) {
            continue;
        }
        let scopes: Vec<String> = if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
            vec!["*".into()]
        } else {
            let mut s: Vec<String> =
                vs.export_to.iter().map(|e| if e == "." { res.namespace().to_string() } else { e.clone() }).collect();
            s.sort();
            s.dedup();
            s
        };
        for scope in &scopes {
            for h in &vs.hosts {
                let key = format!("{scope}/{}", host::resolve_short_name(h, res.namespace(), &cx.opts.domain_suffix));
                let list = by_host.entry(key).or_default();
                if !list.iter().any(|r| std::ptr::eq(*r, res)) {
                    list.push(res);
                }
            }
        }
    }
    // A VirtualService exported everywhere also collides with one exported to a namespace only
    // (Istio adds the `*` scope's matching hosts to every narrower scope). Each VirtualService is
    // reported once, for the first host (in sorted order) it collides on.
    let everywhere: Vec<(String, Vec<&Resource>)> =
        by_host.iter().filter_map(|(k, v)| k.strip_prefix("*/").map(|h| (h.to_string(), v.clone()))).collect();
    let mut reported: Vec<String> = Vec::new();
    for (scoped, mut list) in by_host {
        let (scope, fqdn) = scoped.split_once('/').unwrap_or(("*", scoped.as_str()));
        if scope != "*" {
            for (h, vss) in &everywhere {
                if host::intersect(h, fqdn).is_some() {
                    list.extend(vss.iter().copied());
                }
            }
        }
        if list.len() < 2 {
            continue;
        }
        let names = list.iter().map(|r| full_name(r)).collect::<Vec<_>>().join(",");
        for r in list {
            if reported.contains(&r.key()) {
                continue;
            }
            reported.push(r.key());
            out.push(Diagnostic::error(
                r.origin.locate("metadata.name"),
                code::CONFLICTING_MESH_GATEWAY_VS_HOSTS,
                r.key(),
                format!(
                    "The VirtualServices {names} associated with mesh gateway define the same host {scoped} which can \
                     lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a \
                     single resource."
                ),
            ));
        }
    }
}

/// IST0140: a gateway VirtualService routes to a host without a subset while another
/// VirtualService routes that host (one of its own hosts) to a subset. Requests entering the
/// gateway follow the gateway's VirtualService only, so the subset split never applies to them.
pub(super) fn ingress_subsets(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    // VirtualService → destinations with a subset whose host is one of its own hosts.
    let mut with_subsets: Vec<(String, Vec<&str>)> = Vec::new();
    for (res, vs) in cx.virtual_services() {
        let hosts: Vec<&str> = vs
            .http
            .iter()
            .flat_map(|r| r.route.iter())
            .map(|d| &d.destination)
            .filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty()) && vs.hosts.contains(&d.host))
            .map(|d| d.host.as_str())
            .collect();
        if !hosts.is_empty() {
            with_subsets.push((full_name(res), hosts));
        }
    }
    for (res, vs) in cx.virtual_services() {
        if vs.gateways.is_empty() {
            continue;
        }
        for (ri, r) in vs.http.iter().enumerate() {
            for (di, d) in r.route.iter().enumerate() {
                if d.destination.subset.as_deref().is_some_and(|s| !s.is_empty()) {
                    continue;
                }
                for (other, hosts) in &with_subsets {
                    for h in hosts {
                        if *h != d.destination.host {
                            continue;
                        }
                        out.push(Diagnostic::warning(
                            res.origin.locate(&format!("spec.http[{ri}].route[{di}].destination.host")),
                            code::INGRESS_ROUTE_RULES_NOT_AFFECTED,
                            res.key(),
                            format!(
                                "Subset in virtual service {other} has no effect on ingress gateway {} requests",
                                full_name(res)
                            ),
                        ));
                    }
                }
            }
        }
    }
}

// ───────────────────────────── unreachable rules ─────────────────────────────

/// Istio's rule name: `"name"` when the http route has one, else `#index`.
fn rule_name(name: Option<&str>, i: usize) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{i}"),
    }
}

/// A match as Istio compares them: its JSON without the `name`.
fn match_key<T: serde::Serialize>(m: &T) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// The key of an HTTP match: every field but its `name` (two matches that differ only by name
/// match the same requests). Written field by field, not through a copy with the name cleared
/// (a copy per match was most of this analyzer's time with thousands of VirtualServices).
fn http_match_key(m: &HttpMatchRequest) -> String {
    let HttpMatchRequest {
        name: _,
        uri,
        scheme,
        method,
        authority,
        headers,
        port,
        source_labels,
        gateways,
        query_params,
        ignore_uri_case,
        without_headers,
        source_namespace,
        stat_prefix,
    } = m;
    match_key(&(
        (uri, scheme, method, authority, headers, port, source_labels),
        (gateways, query_params, ignore_uri_case, without_headers, source_namespace, stat_prefix),
    ))
}

fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch { exact: Some(e), .. }) if !e.is_empty() => format!("exact:{e}"),
        Some(StringMatch { prefix: Some(p), .. }) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

/// What Istio's overlap check compares of a match with a URI prefix.
struct PrefixMatch {
    route: String,
    matchn: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    without: BTreeMap<String, String>,
}

fn prefix_match(route: String, matchn: String, m: &HttpMatchRequest) -> Option<PrefixMatch> {
    let prefix = m.uri.as_ref()?.prefix.clone().filter(|p| !p.is_empty())?;
    let map = |h: &BTreeMap<String, StringMatch>| -> BTreeMap<String, String> {
        h.iter().map(|(k, v)| (k.clone(), exact_or_prefix(Some(v)))).collect()
    };
    let mut method = exact_or_prefix(m.method.as_ref());
    if method.is_empty() {
        // Istio's rule: a match without a method counts as GET.
        method = "exact:GET".into();
    }
    Some(PrefixMatch {
        route,
        matchn,
        prefix,
        port: m.port.unwrap_or(0),
        method,
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: map(&m.headers),
        query: map(&m.query_params),
        without: map(&m.without_headers),
    })
}

/// Does the earlier prefix match `a` cover the later `b` (Istio's `coveredValidation`)?
fn covers(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    let field = |x: &str, y: &str| x == y || x.starts_with(y);
    let maps = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| field(v, w)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && field(&a.method, &b.method)
        && field(&a.authority, &b.authority)
        && maps(&a.headers, &b.headers)
        && maps(&a.query, &b.query)
        && maps(&a.without, &b.without)
}

/// IST0130 / IST0131, Istio's `analyzeUnreachable{HTTP,TCP,TLS}Rules`.
pub(super) fn reachability(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (res, vs) in cx.virtual_services() {
        let mut found = Found { res, out: Vec::new() };
        let http: Vec<(Option<&str>, Vec<String>, String)> = vs
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let keys = r.matches.iter().map(http_match_key).collect();
                (r.name.as_deref(), keys, format!("spec.http[{i}]"))
            })
            .collect();
        let match_names: Vec<Vec<Option<&str>>> =
            vs.http.iter().map(|r| r.matches.iter().map(|m| m.name.as_deref()).collect()).collect();
        let mut prefixes = Vec::new();
        unreachable(
            &http,
            &match_names,
            &mut found,
            |i, k| {
                let r = &vs.http[i];
                prefix_match(rule_name(r.name.as_deref(), i), rule_name(r.matches[k].name.as_deref(), k), &r.matches[k])
                    .map(|p| (p, i, k))
            },
            &mut prefixes,
        );
        // Overlapping prefixes: a later, longer prefix that an earlier match covers.
        for (ai, (a, _, _)) in prefixes.iter().enumerate() {
            for (b, bi, bk) in prefixes.iter().skip(ai + 1) {
                if a.prefix == b.prefix || !covers(a, b) {
                    continue;
                }
                found.ineffective(
                    &format!("spec.http[{bi}].match[{bk}]"),
                    &b.route,
                    &format!("{} of prefix {}", b.matchn, b.prefix),
                    &format!("{} of prefix {} on {}", a.matchn, a.prefix, a.route),
                );
            }
        }
        let tcp: Vec<(Option<&str>, Vec<String>, String)> = vs
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| (None, r.matches.iter().map(match_key).collect(), format!("spec.tcp[{i}]")))
            .collect();
        let none: Vec<Vec<Option<&str>>> = vs.tcp.iter().map(|r| vec![None; r.matches.len()]).collect();
        unreachable(&tcp, &none, &mut found, |_, _| None::<()>, &mut Vec::new());
        let tls: Vec<(Option<&str>, Vec<String>, String)> = vs
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| (None, r.matches.iter().map(match_key).collect(), format!("spec.tls[{i}]")))
            .collect();
        let none: Vec<Vec<Option<&str>>> = vs.tls.iter().map(|r| vec![None; r.matches.len()]).collect();
        unreachable(&tls, &none, &mut found, |_, _| None::<()>, &mut Vec::new());
        out.extend(found.out);
    }
}

struct Found<'a> {
    res: &'a Resource,
    out: Vec<Diagnostic>,
}

impl Found<'_> {
    fn unused(&mut self, path: &str, rule: &str, reason: &str) {
        self.out.push(Diagnostic::warning(
            self.res.origin.locate(path),
            code::UNREACHABLE_RULE,
            self.res.key(),
            format!("VirtualService rule {rule} not used ({reason})."),
        ));
    }

    fn ineffective(&mut self, path: &str, rule: &str, matchn: &str, dup: &str) {
        self.out.push(Diagnostic::info(
            self.res.origin.locate(path),
            code::INEFFECTIVE_MATCH,
            self.res.key(),
            format!(
                "VirtualService rule {rule} match {matchn} is not used (duplicate/overlapping match in rule {dup})."
            ),
        ));
    }
}

type Rule<'a> = (Option<&'a str>, Vec<String>, String);

/// The shared part of Istio's three `analyzeUnreachable*Rules`: a second rule without matches,
/// any rule after a rule without matches, matches identical to an earlier one.
fn unreachable<P>(
    rules: &[Rule<'_>],
    match_names: &[Vec<Option<&str>>],
    found: &mut Found<'_>,
    prefix_of: impl Fn(usize, usize) -> Option<P>,
    prefixes: &mut Vec<P>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut empty: Option<usize> = None;
    for (i, (name, keys, path)) in rules.iter().enumerate() {
        let rname = rule_name(*name, i);
        if keys.is_empty() {
            if empty.is_some() {
                found.unused(path, &rname, "only the last rule can have no matches");
            }
            empty = Some(i);
            continue;
        }
        let mut dups = 0;
        for (k, key) in keys.iter().enumerate() {
            if empty.is_some() {
                found.unused(path, &rname, "route without matches defined before");
                continue;
            }
            if let Some(&j) = seen.get(key.as_str()) {
                let mname = rule_name(match_names.get(i).and_then(|m| m.get(k)).copied().flatten(), k);
                found.ineffective(&format!("{path}.match[{k}]"), &rname, &mname, &rule_name(rules[j].0, j));
                dups += 1;
                continue;
            }
            seen.insert(key, i);
            if let Some(p) = prefix_of(i, k) {
                prefixes.push(p);
            }
        }
        if dups == keys.len() {
            found.unused(path, &rname, "all matches used by prior rules");
        }
    }
}

/// IST0002, Istio's deprecation analyzer for VirtualServices.
pub(super) fn deprecated_fields(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    for (res, vs) in cx.virtual_services() {
        for (i, r) in vs.http.iter().enumerate() {
            if r.fault.as_ref().and_then(|f| f.delay.as_ref()).and_then(|d| d.percent).is_some_and(|p| p > 0) {
                out.push(Diagnostic::warning(
                    res.origin.locate(&format!("spec.http[{i}].fault.delay.percent")),
                    code::DEPRECATED,
                    res.key(),
                    "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage",
                ));
            }
        }
    }
}

/// IST0149: routing on JWT claims needs a RequestAuthentication on the gateway's workload to
/// validate the token; Portico has none (it does not implement RequestAuthentication), so on
/// a Gateway that applies to this instance such a match never sees a claim.
pub(super) fn jwt_claim_routes(cx: &Ctx<'_>, out: &mut Vec<Diagnostic>) {
    let gateways: Vec<&Resource> = cx.of_kind(portico_api::Kind::Gateway).collect();
    let instance = super::selector_string(&cx.opts.labels);
    for (res, vs) in cx.virtual_services() {
        let applied: Vec<String> = vs
            .gateways
            .iter()
            .filter(|g| *g != MESH)
            .filter_map(|g| {
                gateways.iter().find(|gw| gateway_ref_matches(g, res.namespace(), gw.namespace(), gw.name()))
            })
            .filter(|gw| match &*gw.spec {
                Spec::Gateway(g) => g.selector.iter().all(|(k, v)| cx.opts.labels.get(k) == Some(v)),
                _ => false,
            })
            .map(|gw| full_name(gw))
            .collect();
        for (i, r) in vs.http.iter().enumerate() {
            for (j, m) in r.matches.iter().enumerate() {
                for (field, map) in [("headers", &m.headers), ("withoutHeaders", &m.without_headers)] {
                    for key in map.keys().filter(|k| k.starts_with("@request.auth.claims")) {
                        for gw in &applied {
                            out.push(Diagnostic::error(
                                res.origin.locate(&format!("spec.http[{i}].match[{j}].{field}.{key}")),
                                code::JWT_CLAIM_ROUTING_WITHOUT_REQUEST_AUTHN,
                                res.key(),
                                format!(
                                    "The virtual service uses the JWT claim based routing (key: {key}) but found no \
                                     request authentication for the gateway ({gw}) pod (this instance, labels \
                                     {instance}). The request authentication must first be applied for the gateway \
                                     pods to validate the JWT token and make the claims available for routing."
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
}
